"""Profile the push hot path: the real server process (uvicorn + uvloop) under pyinstrument.

    python -m benchmarks profile [--changes 10000] [--batch 500] [--backend sqlite|postgres]

Starts the server as ``python -m pyinstrument -m uvicorn syncserver.asgi:app``
on SQLite (or a private PostgreSQL database, as ``run --backend postgres``),
pushes N creates and N updates in pushes of ``--batch`` (500 shows
the per-change costs; 20 shows the fixed cost of a push), stops the server
with SIGINT so pyinstrument writes its report, and saves the text report to
``results/profile-push-<backend>-<batch>-<timestamp>.txt``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from benchmarks import workload
from benchmarks.backends import BackendName, open_backend
from benchmarks.server import READY_TIMEOUT_S, SERVER_ENV
from benchmarks.wire import SyncClient, push_bodies
from syncserver.auth.tokens import TokenVerifier
from syncserver.settings import Settings
from syncserver.testing import ROOT, cli, free_port, server_env, wait_ready

console = Console()


def _push_workload(base: str, headers: dict[str, str], n: int, batch: int) -> float:
    with SyncClient(base, headers) as client:
        creates = push_bodies("dev-1", workload.creates("p", n), batch)
        updates = push_bodies("dev-1", workload.updates("dev-1", "p", n, n + 1), batch)
        return 2 * n / (client.push_all(creates) + client.push_all(updates))


def profile(n: int, batch: int, results_dir: Path, backend: BackendName = "sqlite") -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    with open_backend(backend, tmp, "profile") as db:
        return _profile(n, batch, results_dir, db.url, tmp)


def _profile(n: int, batch: int, results_dir: Path, url: str, tmp: Path) -> Path:
    env = {**server_env(tmp, url), **SERVER_ENV}
    cli(env, "db", "upgrade")
    env["SYNC_MIGRATE_ON_START"] = "0"
    tenant = cli(env, "tenant", "create", "profile")
    settings = Settings.from_env(env)
    assert settings.jwt_secret is not None
    token = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience).issue(
        tenant, "profiler", "dispatcher"
    )
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kind = "postgres" if url.startswith("postgresql") else "sqlite"
    text_out = results_dir / f"profile-push-{kind}-{batch}-{stamp}.txt"
    port = free_port()
    argv = [sys.executable, "-m", "pyinstrument", "--renderer", "text", "--outfile", str(text_out)]
    argv += ["-m", "uvicorn", "syncserver.asgi:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--loop", "uvloop", "--log-level", "warning"]
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc, log, timeout=READY_TIMEOUT_S)
            console.print(f"profiling {n:,} creates and {n:,} updates in pushes of {batch} ...")
            rate = _push_workload(base, {"Authorization": f"Bearer {token}"}, n, batch)
        finally:
            proc.send_signal(signal.SIGINT)  # pyinstrument writes its report when the program exits
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if text_out.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"{rate:,.0f} changes/s (slowed down by the profiler)")
    if text_out.exists():
        console.print(f"wrote {text_out}")
    else:
        console.print(f"[red]pyinstrument wrote no report; see {log} (kept)[/]")
    return text_out
