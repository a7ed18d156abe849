"""Smoke test of ``python -m benchmarks.bench_download_mix``: it runs end to end and reports its figures.

The tool checks every download's SHA-256 and every pull's status; this checks it runs (a real
server process, tus uploads, streamed downloads beside small pulls) and prints the three lines.
It asserts no speed.
"""

from __future__ import annotations

import re

from tests.bench.tools import run_tool


def test_the_download_mix_tool_runs_and_reports_latencies() -> None:
    out = run_tool(
        "benchmarks.bench_download_mix", "--mib", "3", "--downloads", "2", "--requests", "20", "--rounds", "3"
    )
    assert re.search(r"^one 3 MiB download alone: median [\d.]+ ms$", out, re.MULTILINE), out
    quantiles = r"p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms$"
    assert re.search(r"^small pulls, nothing else running: " + quantiles, out, re.MULTILINE), out
    assert re.search(r"^small pulls during 2 looping 3 MiB downloads: " + quantiles, out, re.MULTILINE), out
