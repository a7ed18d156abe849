"""Smoke test of ``python -m benchmarks.bench_driver_pull``: it runs end to end and reports a figure.

The tool asserts that a driver's pull with nothing new brings no entity; this checks
it runs (a real server process, a seeded tenant, scoped tokens) and prints the
median. It asserts no speed.
"""

from __future__ import annotations

import re

from tests.bench.tools import run_tool


def test_the_driver_pull_tool_runs_and_reports_microseconds() -> None:
    out = run_tool("benchmarks.bench_driver_pull", "--deliveries", "30", "--drivers", "5", "--rounds", "2")
    rounds = re.search(r"each round: (\d+), (\d+)$", out, re.MULTILINE)
    median = re.search(r"^median of the rounds: (\d+) µs$", out, re.MULTILINE)
    assert rounds is not None, out
    assert median is not None, out
    assert int(median.group(1)) > 0
