"""Smoke test of ``python -m benchmarks.bench_live_drivers``: it runs end to end and reports its figures.

It checks the run, not speed: driver 0 gets frames for the changes to its delivery,
and the other drivers, whose channels the delivery is not in, get none.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_live_drivers_tool_runs_and_only_driver_0_gets_frames() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_live_drivers", "--drivers", "4", "--changes", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(
        r"^M=4: .* driver 0 got (\d+) frames for 3 changes .* other drivers got (\d+)$", done.stdout, re.M
    )
    assert found is not None, done.stdout
    assert 1 <= int(found.group(1)) <= 3
    assert int(found.group(2)) == 0
