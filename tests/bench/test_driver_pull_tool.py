"""Smoke test of ``python -m benchmarks.bench_driver_pull``: it runs end to end and reports a figure.

The tool asserts that a driver's pull with nothing new brings no entity; this checks
it runs (a real server process, a seeded tenant, scoped tokens) and prints the
median. It asserts no speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_driver_pull_tool_runs_and_reports_microseconds() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_driver_pull", "--deliveries", "30", "--drivers", "5", "--rounds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = re.search(r"each round: (\d+), (\d+)$", done.stdout, re.MULTILINE)
    median = re.search(r"^median of the rounds: (\d+) µs$", done.stdout, re.MULTILINE)
    assert rounds is not None, done.stdout
    assert median is not None, done.stdout
    assert int(median.group(1)) > 0
