"""Tables: one per result on the console, and the results section of ``benchmarks/README.md``.

``python -m benchmarks run report`` rewrites only what lies between the
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers, from the
newest result file per scenario and backend (a full-size run wins over a newer
``--quick`` one). Everything else in the README is written by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.results import RESULTS_DIR, Result, latest

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
TIMES, DASH = "\u00d7", "\u2013"
"""Typography for the README (written as escapes: the linter flags look-alike characters in source)."""
ORDER = ("ingest", "pull", "storm", "fanout", "conflicts", "text", "idle")
TRACE_CREDIT = (
    "Text trace: `automerge-paper` from Joseph Gentle's editing-traces collection, originally prepared by "
    "Martin Kleppmann in automerge-perf; licence CC BY 4.0."
)


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def print_result(result: Result, console: Console) -> None:
    table = Table(title=f"{result.scenario} on {result.backend}{' (quick)' if result.quick else ''}")
    table.add_column("measure")
    table.add_column("unit")
    table.add_column("median", justify="right")
    table.add_column("min-max", justify="right")
    for name, values in result.figures.items():
        median = statistics.median(values)
        table.add_row(name, result.units.get(name, ""), fmt(median), f"{fmt(min(values))}-{fmt(max(values))}")
    for name, values in result.ratios.items():
        median = statistics.median(values)
        table.add_row(name, "x", f"{median:.3g}", f"{min(values):.3g}-{max(values):.3g}")
    console.print(table)
    for name, check in result.checks.items():
        mark = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
        console.print(f"check {name}: {mark} (expected {check.expected!r}, found {check.found!r}) {check.detail}")


# --- README -------------------------------------------------------------------------------------------------------


def _ratio(data: dict[str, Any], name: str) -> float | None:
    entry = data.get("ratios", {}).get(name)
    return float(entry["median"]) if entry else None


def _figure(data: dict[str, Any], name: str) -> float | None:
    entry = data.get("summary", {}).get(name)
    return float(entry["median"]) if entry else None


def _ratios_matching(data: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v["median"]) for k, v in data.get("ratios", {}).items() if k.startswith(prefix)}


def _target_rows(results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    rows = []

    def row(
        target: str, data: dict[str, Any] | None, measure: Callable[[dict[str, Any]], tuple[str, bool | None]]
    ) -> None:
        if data is None:
            rows.append(f"| {target} | not run yet | — | — |")
            return
        text, met = measure(data)
        status = "—" if met is None else ("met" if met else "**not met**")
        mode = "quick" if data.get("quick") else "full"
        rows.append(f"| {target} | {text} | {status} | `{data['_file']}` ({mode}) |")

    def at_least(prefix: str, goal: float) -> Callable[[dict[str, Any]], tuple[str, bool | None]]:
        def measure(data: dict[str, Any]) -> tuple[str, bool | None]:
            found = _ratios_matching(data, prefix)
            if not found:
                reason = "; ".join(data.get("skipped", [])) or "no ratio recorded"
                return f"not measured: {reason}", None
            text = ", ".join(f"{k.removeprefix(prefix).strip() or 'all'}: {v:.3g}{TIMES}" for k, v in found.items())
            return text, all(v >= goal for v in found.values())

        return measure

    def at_least_not(prefix: str, goal: float) -> Callable[[dict[str, Any]], tuple[str, bool | None]]:
        """A ratio that must stay at or below ``goal`` (bytes on disk against the data)."""

        def measure(data: dict[str, Any]) -> tuple[str, bool | None]:
            found = _ratios_matching(data, prefix)
            if not found:
                return "no ratio recorded", None
            text = ", ".join(f"{v:.3g}{TIMES}" for v in found.values())
            return text, all(v <= goal for v in found.values())

        return measure

    def at_most(
        figure: str, goal: float, unit: str, **params: int
    ) -> Callable[[dict[str, Any]], tuple[str, bool | None]]:
        """A figure judged against ``goal`` only on a run at the target's own size (``params``)."""

        def measure(data: dict[str, Any]) -> tuple[str, bool | None]:
            value = _figure(data, figure)
            if value is None:
                return "no figure", None
            p = data["params"]
            size = ", ".join(f"{k}={p.get(k)}" for k in params)
            at_size = all(p.get(k) == v for k, v in params.items())
            text = f"{fmt(value)} {unit}" + (f" at {size}" if params else "")
            return text, (value <= goal) if at_size else None

        return measure

    storm_size = {"devices": 1000, "changes_per_device": 100}
    sqlite_storm, pg_storm = results.get(("storm", "sqlite")), results.get(("storm", "postgres"))
    ingest = results.get(("ingest", "sqlite"))
    pull = results.get(("pull", "sqlite"))
    footprint = results.get(("footprint", "sqlite"))
    attachments = results.get(("attachments", "sqlite"))
    rows.append("| **Issue 11: sync engine throughput** | | | |")
    row(
        f"Reconnect storm of 1,000 {TIMES} 100 on SQLite, drained and pulled in ≤ 10 s",
        sqlite_storm,
        at_most("drained and pulled to the end", 10.0, "s", **storm_size),
    )
    row("... push p99 ≤ 3 s", sqlite_storm, at_most("push p99", 3000.0, "ms", **storm_size))
    row(
        "... no request failed (none retried)",
        sqlite_storm,
        at_most("requests retried (429, 5xx, network)", 0, "retried", **storm_size),
    )
    row("... peak server RSS ≤ 300 MiB", sqlite_storm, at_most("peak server RSS", 300.0, "MiB", **storm_size))
    row(
        f"Reconnect storm of 1,000 {TIMES} 100 on PostgreSQL in ≤ 15 s",
        pg_storm,
        at_most("drained and pulled to the end", 15.0, "s", **storm_size),
    )
    row(f"Ingest on SQLite ≥ 0.25{TIMES} raw executemany", ingest, at_least("ours ÷ raw executemany", 0.25))
    row(f"Ingest on SQLite ≥ 3{TIMES} PouchDB-server", ingest, at_least("ours ÷ pouchdb", 3.0))
    row(
        f"Ingest on PostgreSQL ≥ 0.25{TIMES} raw executemany",
        results.get(("ingest", "postgres")),
        at_least("ours ÷ raw executemany", 0.25),
    )
    row(f"Pull, fresh device, ≥ 0.25{TIMES} raw select", pull, at_least("ours ÷ raw select", 0.25))
    row(f"Pull ≥ 10{TIMES} PouchDB `_changes`", pull, at_least("ours ÷ pouchdb", 10.0))
    text = results.get(("text", "sqlite"))
    row(f"Text: subscriber edits/s ≥ 1{TIMES} the Yjs server", text, at_least("subscriber edits/s, ours ÷ Yjs", 1.0))
    row(
        "Text: a one-character splice's update ≤ 64 bytes",
        text,
        at_most("largest one-character splice update", 64, "B"),
    )
    rows.append("| **Issue 18: attachments** | | | |")
    row(f"Upload ≥ 0.5{TIMES} raw write", attachments, at_least("upload ÷ raw write", 0.5))
    row(f"Download ≥ 0.5{TIMES} raw read", attachments, at_least("download ÷ raw read", 0.5))
    row(
        f"Server peak RSS, 20 {TIMES} 20 MiB uploads at once, ≤ 100 MiB above idle",
        attachments,
        at_most("server peak RSS above idle, concurrent uploads", 100.0, "MiB"),
    )
    rows.append("| **Issue 20: storage footprint** | | | |")
    row(f"SQLite after 10,000 creates ≤ 2.5{TIMES} the JSON", footprint, at_least_not("ours ÷ JSON @creates", 2.5))
    row(f"SQLite after 10 updates per record ≤ 4{TIMES}", footprint, at_least_not("ours ÷ JSON @10 updates", 4.0))
    row(
        f"PostgreSQL after 10,000 creates ≤ 3{TIMES}",
        results.get(("footprint", "postgres")),
        at_least_not("ours ÷ JSON @creates", 3.0),
    )
    rows.append("| **Fan-out** | | | |")

    def fanout(data: dict[str, Any]) -> tuple[str, bool | None]:
        p99 = _figure(data, "ours p99 M=1000")
        if p99 is None:
            sizes = ", ".join(str(m) for m in data["params"].get("subscribers", []))
            return f"not measured at M = 1,000 (this run: M = {sizes})", None
        return f"p99 {p99:.3g} ms", p99 <= 50.0

    row("Fan-out p99 ≤ 50 ms at 1,000 subscribers", results.get(("fanout", "sqlite")), fanout)
    return rows


def _result_section(data: dict[str, Any]) -> list[str]:
    mode = "quick" if data.get("quick") else "full size"
    m = data.get("machine", {})
    dirty = " (uncommitted changes)" if m.get("dirty_tree") else ""
    load = ", ".join(f"{x:.1f}" for x in m.get("load_avg_at_start", []))
    lines = [
        f"### {data['scenario']} on {data['backend']} ({mode})",
        "",
        f"`{data['_file']}` · {data.get('started', '')} · commit {m.get('commit')}{dirty}"
        f" · {m.get('cpus')} CPUs · {m.get('engine', '')} · load average at start {load}",
        "",
        "Parameters: " + ", ".join(f"{k}={v}" for k, v in data.get("params", {}).items()),
        "",
        f"| measure | unit | median | min{DASH}max | reps |",
        "|---|---|---:|---:|---:|",
    ]
    units = data.get("units", {})
    for name, s in data.get("summary", {}).items():
        lines.append(
            f"| {name} | {units.get(name, '')} | {fmt(s['median'])} | {fmt(s['min'])}{DASH}{fmt(s['max'])} | {s['n']} |"
        )
    for name, s in data.get("ratios", {}).items():
        lines.append(f"| {name} | {TIMES} | {s['median']:.3g} | {s['min']:.3g}{DASH}{s['max']:.3g} | {s['n']} |")
    checks = data.get("checks", {})
    if checks:
        passed = [f"{k} {'ok' if c['ok'] else 'FAILED'}" for k, c in checks.items()]
        lines += ["", "Checks: " + "; ".join(passed) + "."]
    for reason in data.get("skipped", []):
        lines += ["", f"Skipped: {reason}"]
    for note in data.get("notes", []):
        lines += ["", f"Note: {note}"]
    if data["scenario"] == "text" and not any("CC BY" in note for note in data.get("notes", [])):
        lines += ["", TRACE_CREDIT]  # results written before the note carried the credit
    return [*lines, ""]


def render(results: dict[tuple[str, str], dict[str, Any]]) -> str:
    lines = [
        BEGIN,
        "<!-- Generated by `python -m benchmarks run report` from benchmarks/results/*.json; do not edit by hand. -->",
        "",
        "### Targets",
        "",
        "| target | measured (median) | status | from |",
        "|---|---|---|---|",
        *_target_rows(results),
        "",
    ]
    if not results:
        lines += ["No result files yet: run `python -m benchmarks run all`.", ""]
    rank = {name: i for i, name in enumerate(ORDER)}
    for key in sorted(results, key=lambda k: (rank.get(k[0], len(ORDER)), k[1] != "sqlite", k)):
        lines += _result_section(results[key])
    lines.append(END)
    return "\n".join(lines)


def update_readme(results_dir: Path = RESULTS_DIR, readme: Path = README) -> int:
    results = latest(results_dir)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers; add them where the tables belong")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(head + render(results) + tail)
    return len(results)
