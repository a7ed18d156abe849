"""Run a standalone benchmark tool (``python -m benchmarks.<name>``) the way its docs say, for smoke tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_tool(module: str, *args: str, timeout_s: float = 300) -> str:
    """The tool's standard output; fails the test with its output if it exits non-zero."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
