"""CI smoke test of the benchmark suite: ``python -m benchmarks run all --quick`` in a subprocess.

It checks correctness (the scenarios' own checks: convergence, counts,
endContent) and that result files are written. It asserts no speed: the
machine is shared and noisy, and benchmarks, not tests, measure speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios.text import TRACES
from tests import services

ROOT = Path(__file__).resolve().parents[2]
MEASURED = ["ingest", "pull", "storm", "fanout", "conflicts", "idle", "footprint", "scaling", "text"]
TIMEOUT_S = 600


def run_quick(results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", *args, "--quick", "--results-dir", str(results)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def assert_results(results: Path, backend: str, scenarios: list[str]) -> None:
    for name in scenarios:
        files = sorted(results.glob(f"{name}-{backend}-*.json"))
        assert len(files) == 1, f"{name}: expected one result file, found {files}"
        data = json.loads(files[0].read_text())
        assert data["quick"] is True
        assert data["ok"] is True, data["checks"]
        assert data["checks"], f"{name} checked nothing"
        assert all(check["ok"] for check in data["checks"].values())
        assert data["figures"]
        assert all(data["summary"][k]["n"] >= 1 for k in data["figures"])
        assert data["machine"]["cpus"]
        assert data["machine"]["python"]
        assert files[0].with_suffix(".png").stat().st_size > 0


@pytest.mark.slow
def test_quick_suite_checks_correctness_and_writes_results(tmp_path: Path) -> None:
    out = run_quick(tmp_path, "all")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    scenarios = MEASURED if (TRACES / "automerge-paper.json.gz").exists() else MEASURED[:-1]
    assert_results(tmp_path, "sqlite", scenarios)


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_suite_on_postgres(tmp_path: Path) -> None:
    services.require("PostgreSQL", services.PG_HOST, services.PG_PORT)
    # The scenarios whose SQL differs most on PostgreSQL (COPY, row locks under concurrency); all of them
    # run on SQLite above, and `run all --quick --backend postgres` runs the rest by hand.
    out = run_quick(tmp_path, "ingest,storm,conflicts,footprint", "--backend", "postgres", "--no-peers")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert_results(tmp_path, "postgres", ["ingest", "storm", "conflicts", "footprint"])
