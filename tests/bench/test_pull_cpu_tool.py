"""Smoke test of ``python -m benchmarks.bench_pull_cpu``: it runs end to end and reports a figure.

The tool asserts that every round pulled every seeded entity; this checks it runs (a server's
services in process, SQLite and the memory store) and prints the medians. It asserts no speed.
"""

from __future__ import annotations

import re

import pytest

from tests.bench.tools import run_tool


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_the_pull_cpu_tool_runs_and_reports_microseconds(backend: str) -> None:
    out = run_tool("benchmarks.bench_pull_cpu", "--backend", backend, "--entities", "1500", "--rounds", "2")
    rounds = re.search(r"each round: ([\d.]+), ([\d.]+)$", out, re.MULTILINE)
    wall = re.search(r"^wall-clock median: ([\d.]+) µs$", out, re.MULTILINE)
    median = re.search(r"^CPU median of the rounds: ([\d.]+) µs$", out, re.MULTILINE)
    assert rounds is not None, out
    assert wall is not None, out
    assert median is not None, out
    assert float(median.group(1)) > 0
