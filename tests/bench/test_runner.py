"""The benchmark runner's own logic: statistics, alternation, parameters, result files, the README tables."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from benchmarks import report
from benchmarks.results import CheckFailed, Result, latest, summary
from benchmarks.runner import order
from benchmarks.scenarios import SCENARIOS
from benchmarks.scenarios.text import expected_text
from benchmarks.wire import change, push_bodies

ROOT = Path(__file__).resolve().parents[2]


def test_summary_reports_median_and_range() -> None:
    assert summary([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_sides_alternate_between_repetitions() -> None:
    assert [order(rep, ["raw", "ours"]) for rep in range(3)] == [["raw", "ours"], ["ours", "raw"], ["raw", "ours"]]


def test_ratios_pair_the_two_sides_of_one_repetition() -> None:
    result = Result("ingest", "sqlite", True, {})
    result.ratio("ours ÷ raw", 10.0, 40.0)
    result.ratio("ours ÷ raw", 30.0, 60.0)
    assert result.to_json()["ratios"]["ours ÷ raw"] == {
        "per_rep": [0.25, 0.5],
        "median": 0.375,
        "min": 0.25,
        "max": 0.5,
        "n": 2,
    }


def test_a_failed_check_is_recorded_and_raised() -> None:
    result = Result("conflicts", "sqlite", True, {})
    with pytest.raises(CheckFailed, match="register conflicts"):
        result.check("register conflicts", 800, 799)
    assert not result.ok
    assert result.to_json()["checks"]["register conflicts"]["found"] == 799


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(SystemExit, match="no parameter"):
        SCENARIOS["ingest"].params(quick=True, overrides={"entites": 5})


def test_quick_parameters_are_smaller() -> None:
    for scenario in SCENARIOS.values():
        for key, value in scenario.quick.items():
            if isinstance(value, int) and key in ("entities", "devices", "changes_per_device"):
                assert value <= scenario.defaults[key], (scenario.name, key)


def test_a_full_run_wins_over_a_newer_quick_one(tmp_path: Path) -> None:
    full = Result("pull", "sqlite", False, {"entities": 20_000})
    full.add("ours pull", 100.0, "entities/s")
    full.write(tmp_path)
    quick = Result("pull", "sqlite", True, {"entities": 2_000})
    quick.add("ours pull", 50.0, "entities/s")
    quick.write(tmp_path)
    (tmp_path / "not-a-result.json").write_text(json.dumps({"hello": 1}))
    chosen = latest(tmp_path)
    assert list(chosen) == [("pull", "sqlite")]
    assert chosen[("pull", "sqlite")]["quick"] is False


def test_report_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Hand-written\n\nkeep me\n\n{report.BEGIN}\nold tables\n{report.END}\n\n## After\nkeep me too\n"
    )
    result = Result("ingest", "sqlite", False, {"entities": 10})
    result.add("ours ingest @500", 12_345.6, "changes/s")
    result.ratio("ours ÷ pouchdb @500", 3.0, 1.0)
    result.write(tmp_path)
    assert report.update_readme(tmp_path, readme) == 1
    text = readme.read_text()
    assert text.startswith("# Hand-written\n\nkeep me\n")
    assert text.endswith("## After\nkeep me too\n")
    assert "old tables" not in text
    assert "| ours ingest @500 | changes/s | 12,346 |" in text
    assert "Ingest on SQLite ≥ 3\u00d7 PouchDB-server | @500: 3\u00d7 | met" in text
    assert "Ingest on SQLite ≥ 0.25\u00d7 raw executemany | not measured" in text


def test_the_readme_has_its_markers() -> None:
    text = report.README.read_text()
    assert text.count(report.BEGIN) == 1
    assert text.count(report.END) == 1


def test_a_trace_prefix_replays_in_code_points() -> None:
    trace = {"startContent": "", "endContent": "unused", "txns": []}
    edits = [(0, 0, "héllo"), (5, 0, " wörld"), (1, 1, "e"), (11, 0, "!")]
    assert expected_text(trace, edits, complete=False) == "hello wörld!"


def test_push_bodies_respect_both_the_count_and_the_byte_budget() -> None:
    changes = [change(i + 1, "e", [{"op": "set", "field": "x", "value": "y" * 1000}], (1, i)) for i in range(50)]
    by_count = push_bodies("phone-1", changes, batch=20)
    assert [len(msgspec.json.decode(b)["changes"]) for b in by_count] == [20, 20, 10]
    by_bytes = push_bodies("phone-1", changes, batch=500, max_bytes=12_000)
    assert all(len(b) <= 12_000 for b in by_bytes)
    decoded = [msgspec.json.decode(b) for b in by_bytes]
    assert {d["replica"] for d in decoded} == {"phone-1"}
    assert [c["n"] for d in decoded for c in d["changes"]] == list(range(1, 51))


@pytest.mark.parametrize(("p99", "status"), [(42.0, "met"), (61.0, "**not met**")])
def test_the_fanout_target_reads_p99_at_1000_subscribers(tmp_path: Path, p99: float, status: str) -> None:
    result = Result("fanout", "sqlite", False, {"subscribers": [10, 1000]})
    result.add("ours p99 M=10", 5.0, "ms")
    result.add("ours p99 M=1000", p99, "ms")
    result.write(tmp_path)
    rows = report.render(latest(tmp_path))
    assert f"| Fan-out p99 ≤ 50 ms at 1,000 subscribers | p99 {p99:.3g} ms | {status} |" in rows


def test_the_fanout_target_is_not_judged_on_a_quick_run_without_1000_subscribers(tmp_path: Path) -> None:
    result = Result("fanout", "sqlite", True, {"subscribers": [10]})
    result.add("ours p99 M=10", 5.0, "ms")
    result.write(tmp_path)
    rows = report.render(latest(tmp_path))
    assert "| Fan-out p99 ≤ 50 ms at 1,000 subscribers | not measured at M = 1,000 (this run: M = 10) | — |" in rows


@pytest.mark.parametrize(("devices", "status"), [(1000, "met"), (3000, "—")])
def test_the_storm_targets_are_judged_only_at_1000_devices(tmp_path: Path, devices: int, status: str) -> None:
    result = Result("storm", "sqlite", False, {"devices": devices, "changes_per_device": 100})
    result.add("drained and pulled to the end", 6.2, "s")
    result.add("push p99", 5100.0, "ms")
    result.write(tmp_path)
    rows = report.render(latest(tmp_path))
    assert f"drained and pulled in ≤ 10 s | 6.2 s at devices={devices}, changes_per_device=100 | {status} |" in rows
    p99 = "**not met**" if devices == 1000 else "—"
    assert f"| ... push p99 ≤ 3 s | 5,100 ms at devices={devices}, changes_per_device=100 | {p99} |" in rows
