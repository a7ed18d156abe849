"""Real server processes for tests and benchmarks: started on free loopback ports, stopped by PID.

Usage::

    env = server_env(tmp_dir, "sqlite+aiosqlite:///" + str(tmp_dir / "sync.db"))
    cli(env, "tenant", "create", "acme")
    with running_server(env, free_port(), tmp_dir / "server.log") as base_url:
        ...
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COLLECTIONS = ROOT / "config" / "collections.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(
    tmp: Path, database_url: str, collections: Path | None = DEFAULT_COLLECTIONS, **extra: str
) -> dict[str, str]:
    """Environment for a server with fresh random secrets (generated, never committed)."""
    env = dict(os.environ)
    env.update(
        SYNC_DATABASE_URL=database_url,
        SYNC_DATA_DIR=str(tmp / "data"),
        SYNC_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        SYNC_JWT_SECRET=secrets.token_urlsafe(32),
        # Tests and benchmarks drive one token hard on purpose; tests of the limiter set it.
        SYNC_RATE_LIMIT="off",
    )
    if collections is not None:
        env["SYNC_COLLECTIONS_FILE"] = str(collections)
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    """Run a ``syncserver`` subcommand and return its output."""
    out = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and our CLI
        [sys.executable, "-m", "syncserver.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"syncserver {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


@contextmanager
def running_server(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Run ``uvicorn syncserver.asgi:app`` with uvloop; yield its base URL; SIGTERM then SIGKILL it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter and uvicorn
            [
                sys.executable,
                "-m",
                "uvicorn",
                "syncserver.asgi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc, log)
            yield base
        finally:
            stop(proc)


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text(errors='replace')}")
        try:
            if httpx.get(base + "/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not become ready: {log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
