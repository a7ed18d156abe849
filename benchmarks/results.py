"""What one benchmark run records, and where: ``results/<scenario>-<backend>-<timestamp>.json``.

A :class:`Result` holds per-repetition figures (one value per repetition, in
run order), ratios computed inside each repetition (ours ÷ baseline, so the
two sides of a ratio always ran back to back on the same machine state), the
correctness checks, and what was skipped and why. :meth:`Result.to_json` adds
the median and min-max of every figure and ratio.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = (
    "litestar",
    "msgspec",
    "sqlalchemy",
    "aiosqlite",
    "psycopg",
    "pycrdt",
    "uvicorn",
    "uvloop",
    "httpx",
    "cryptography",
)


class CheckFailed(AssertionError):
    """A correctness check of a benchmark failed: its numbers are not to be trusted."""


@dataclass
class Check:
    ok: bool
    expected: Any
    found: Any
    detail: str = ""


def summary(values: list[float]) -> dict[str, float]:
    """Median and min-max: the numbers a noisy machine can still stand behind."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


@dataclass
class Result:
    scenario: str
    backend: str
    quick: bool
    params: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    figures: dict[str, list[float]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)
    """Raw samples for plots (for example every push latency of a storm)."""
    elapsed_s: float = 0.0

    def add(self, name: str, value: float, unit: str) -> None:
        self.figures.setdefault(name, []).append(value)
        self.units[name] = unit

    def ratio(self, name: str, ours: float, baseline: float) -> None:
        if baseline > 0:
            self.ratios.setdefault(name, []).append(ours / baseline)

    def check(self, name: str, expected: Any, found: Any, detail: str = "") -> None:
        """Record a correctness check; a failure is raised at once, after it is recorded."""
        self.checks[name] = Check(expected == found, expected, found, detail)
        if expected != found:
            raise CheckFailed(f"{self.scenario}: check {name!r} failed: expected {expected!r}, found {found!r}")

    def skip(self, what: str) -> None:
        self.skipped.append(what)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "backend": self.backend,
            "quick": self.quick,
            "ok": self.ok,
            "started": self.started,
            "elapsed_s": round(self.elapsed_s, 3),
            "params": self.params,
            "machine": self.machine,
            "units": self.units,
            "figures": self.figures,
            "summary": {name: summary(v) for name, v in self.figures.items() if v},
            "ratios": {name: {"per_rep": v, **summary(v)} for name, v in self.ratios.items() if v},
            "checks": {name: vars(c) for name, c in self.checks.items()},
            "skipped": self.skipped,
            "notes": self.notes,
            "series": self.series,
        }

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = directory / f"{self.scenario}-{self.backend}-{stamp}.json"
        n = 1
        while path.exists():
            path = directory / f"{self.scenario}-{self.backend}-{stamp}-{n}.json"
            n += 1
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        return path


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    # Read-only look-ups; GIT_OPTIONAL_LOCKS=0 keeps git from refreshing the index as a side effect.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine() -> dict[str, Any]:
    """The machine and software a result came from (read-only look-ups only)."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "load_avg_at_start": list(os.getloadavg()),
    }
    head = _git("rev-parse", "--short", "HEAD")
    diff = _git("diff", "--quiet", "HEAD", "--")
    info["commit"] = head.stdout.strip() if head is not None and head.returncode == 0 else None
    info["dirty_tree"] = diff is not None and diff.returncode == 1
    with contextlib.suppress(ValueError, OSError):
        info["memory_total_mb"] = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    return info


def latest(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest result per (scenario, backend); a full-size run wins over a newer ``--quick`` one."""
    best: dict[tuple[str, str], tuple[tuple[bool, float], dict[str, Any]]] = {}
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "scenario" not in data or "summary" not in data:
            continue
        key = (str(data["scenario"]), str(data["backend"]))
        rank = (not data.get("quick", False), path.stat().st_mtime)
        data["_file"] = path.name
        if key not in best or rank > best[key][0]:
            best[key] = (rank, data)
    return {key: value for key, (_, value) in sorted(best.items())}
