"""Runs scenarios: parameters, a private backend, a time bound, progress, then JSON + PNG.

A scenario is a function ``run(ctx, result)`` that starts what it needs
through ``ctx`` (our server, a peer, a raw table), records figures and checks
in ``result``, and raises :class:`Skip` when it cannot run here. The runner
owns everything around it: the temporary directory, the private database,
the watchdog, writing the result files and the exit status.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import plots
from benchmarks.backends import Backend, BackendName, BackendUnavailable, open_backend
from benchmarks.peers import pouchdb, yjs
from benchmarks.peers.npm import PeerUnavailable
from benchmarks.results import RESULTS_DIR, CheckFailed, Result, machine
from benchmarks.server import SERVER_ENV, raise_fd_limit

console = Console()

Params = dict[str, Any]


class Skip(Exception):
    """The scenario cannot run here (missing feature, service or data); the message says why."""


class ScenarioTimeout(Exception):
    """The scenario ran past its time bound."""


@dataclass(frozen=True)
class Scenario:
    name: str
    number: int
    title: str
    unit: str
    run: Callable[[Context, Result], None]
    defaults: Mapping[str, Any]
    quick: Mapping[str, Any]
    time_limit_s: int = 1800
    quick_time_limit_s: int = 300
    needs: str | None = None
    """Why the scenario cannot run yet (a missing feature); it is skipped with this message."""
    plot: Callable[[Result, Path], Path] = plots.plot
    """Draws the result's PNG; the default is one bar panel per unit (:func:`benchmarks.plots.plot`)."""

    def params(self, quick: bool, overrides: Mapping[str, Any]) -> Params:
        params = {**self.defaults, **(self.quick if quick else {})}
        for key, value in overrides.items():
            if key not in params:
                raise SystemExit(f"{self.name} has no parameter {key!r}; it has {', '.join(sorted(params))}")
            params[key] = value
        return params


@dataclass
class Options:
    backend: BackendName = "sqlite"
    quick: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    pg_url: str | None = None
    peers: bool = True
    install_peers: bool | None = None
    """Install missing peers with npm; ``None``: yes for full runs, no for ``--quick``."""
    results_dir: Path = RESULTS_DIR
    plot: bool = True


@dataclass
class Context:
    scenario: Scenario
    options: Options
    params: Params
    backend: Backend
    progress: Progress
    console: Console

    @property
    def tmp(self) -> Path:
        return self.backend.tmp

    @property
    def quick(self) -> bool:
        return self.options.quick

    @property
    def reps(self) -> int:
        return int(self.params.get("reps", 1))

    def pouchdb_ready(self, result: Result) -> bool:
        """Whether the PouchDB peer can run; when not, the reason is recorded as a skip."""
        return self._peer_ready(result, "PouchDB-server", f"pouchdb-server@{pouchdb.VERSION}", pouchdb)

    def start_pouchdb(self, stack: ExitStack, result: Result) -> pouchdb.PouchDB | None:
        """PouchDB-server on a fresh data directory, stopped with ``stack``; ``None`` (a skip) if it cannot run."""
        if not self.pouchdb_ready(result):
            return None
        try:
            return stack.enter_context(pouchdb.pouchdb_server(self.tmp))
        except PeerUnavailable as exc:
            result.skip(str(exc))
            return None

    def yjs_ready(self, result: Result) -> bool:
        """Whether the Yjs WebSocket server peer can run; when not, the reason is recorded as a skip."""
        return self._peer_ready(result, "Yjs WebSocket server", f"@y/websocket-server@{yjs.VERSION}", yjs)

    def _peer_ready(self, result: Result, name: str, package: str, peer: PeerModule) -> bool:
        if not self.options.peers:
            result.skip(f"{name} skipped: --no-peers")
            return False
        install = self.options.install_peers
        if install is None:
            install = not self.quick
        if not peer.is_installed():
            if not install:
                result.skip(
                    f"{name} skipped: not installed in benchmarks/.peers/ and --quick does not install "
                    "it (run once without --quick, or with --install-peers)"
                )
                return False
            self.console.print(f"[cyan]installing {package} with npm (cached for later runs)...[/]")
            try:
                peer.install()
            except PeerUnavailable as exc:
                result.skip(str(exc))
                return False
        return True


class PeerModule(Protocol):
    """What a peer module (``benchmarks.peers.*``) offers the runner."""

    def is_installed(self) -> bool: ...

    def install(self) -> None: ...


def order(rep: int, sides: list[str]) -> list[str]:
    """A B C, then C B A: alternate which side runs first so drift on a noisy machine cancels out."""
    return sides if rep % 2 == 0 else list(reversed(sides))


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise ScenarioTimeout("time limit reached")


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


Outcome = Literal["passed", "skipped", "failed"]


def run_scenario(scenario: Scenario, options: Options) -> Outcome:
    """Run one scenario, write its result files, and say how it went."""
    if scenario.needs:
        console.print(f"[yellow]SKIP[/] {scenario.number}. {scenario.name}: {scenario.needs}")
        return "skipped"
    params = scenario.params(options.quick, options.overrides)
    limit = scenario.quick_time_limit_s if options.quick else scenario.time_limit_s
    result = Result(scenario.name, options.backend, options.quick, params, machine())
    result.machine["server_env"] = SERVER_ENV
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{scenario.name}-"))
    raise_fd_limit()
    t0 = time.perf_counter()
    status = 0
    console.rule(
        f"[bold]{scenario.number}. {scenario.title}[/] on {options.backend}{' (quick)' if options.quick else ''}"
    )
    try:
        with (
            time_limit(limit),
            open_backend(options.backend, tmp, scenario.name, options.pg_url) as backend,
            _progress() as progress,
        ):
            result.machine["engine"] = backend.version()
            ctx = Context(scenario, options, params, backend, progress, console)
            scenario.run(ctx, result)
    except (Skip, BackendUnavailable) as exc:
        console.print(f"[yellow]SKIP[/] {scenario.name} on {options.backend}: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)
        return "skipped"
    except CheckFailed as exc:
        console.print(f"[red]FAILED[/] {exc}")
        status = 1
    except ScenarioTimeout:
        console.print(f"[red]FAILED[/] {scenario.name}: did not finish within its time limit of {limit} s")
        result.notes.append(f"stopped by its time limit of {limit} s")
        status = 1
    except Exception:
        console.print(f"[red]ERROR[/] {scenario.name} on {options.backend}:\n{traceback.format_exc()}")
        result.notes.append("error: " + traceback.format_exc(limit=3).strip().splitlines()[-1])
        status = 1
    result.elapsed_s = time.perf_counter() - t0
    result.machine["load_avg_at_end"] = list(os.getloadavg())
    _finish(result, options, status, scenario.plot)
    if status == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return "passed"
    console.print(f"kept the run's directory (server logs) for inspection: {tmp}")
    return "failed"


def _shown(path: Path) -> str:
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _finish(result: Result, options: Options, status: int, plot: Callable[[Result, Path], Path]) -> None:
    from benchmarks.report import print_result

    if not result.figures and not result.checks:
        return
    path = result.write(options.results_dir)
    written = [_shown(path)]
    if options.plot and result.figures:
        written.append(_shown(plot(result, path.with_suffix(".png"))))
    console.print("wrote " + ", ".join(written))
    print_result(result, console)
    for reason in result.skipped:
        console.print(f"[yellow]SKIP[/] {reason}")
    if status == 0 and not result.ok:
        console.print("[red]a check failed[/]")
