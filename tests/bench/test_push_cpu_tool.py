"""Smoke test of ``python -m benchmarks.bench_push_cpu``: it runs end to end and reports a figure.

The tool asserts that every change of every round was applied; this checks it runs
(a server's services in process, SQLite and the memory store) and prints the median.
It asserts no speed.
"""

from __future__ import annotations

import re

import pytest

from tests.bench.tools import run_tool


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_the_push_cpu_tool_runs_and_reports_microseconds(backend: str) -> None:
    out = run_tool(
        "benchmarks.bench_push_cpu", "--backend", backend, "--devices", "5", "--changes", "7", "--rounds", "2"
    )
    rounds = re.search(r"each round: ([\d.]+), ([\d.]+)$", out, re.MULTILINE)
    median = re.search(r"^median of the rounds: ([\d.]+) µs$", out, re.MULTILINE)
    assert rounds is not None, out
    assert median is not None, out
    assert float(median.group(1)) > 0
