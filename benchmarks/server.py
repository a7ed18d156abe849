"""Our server as a real process (uvicorn + uvloop, one worker) on a free loopback port.

Built on :mod:`syncserver.testing` (fresh secrets, the ``syncserver`` CLI,
readiness polling, SIGTERM-then-SIGKILL by PID), plus what benchmarks need on
top: the process id for peak RSS, and tokens issued in-process so a storm of
1,000 devices does not start 1,000 CLI processes.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.backends import Backend
from syncserver.auth.tokens import Role, TokenVerifier
from syncserver.settings import Settings
from syncserver.testing import ROOT, cli, free_port, server_env, stop, wait_ready

SERVER_ENV = {"SYNC_RATE_LIMIT": "off"}
"""Settings every benchmarked server runs with: the per-token rate limit (default 50 requests/s) would
otherwise measure the limiter, not sync; a bulk importer gets a higher limit in production too."""
READY_TIMEOUT_S = 90.0
"""Startup bound: generous, because the machine is shared and may be busy."""


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (a storm holds one socket per device)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class OurServer:
    base: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    verifier: TokenVerifier

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tenant(self, prefix: str = "bench") -> str:
        """Create a tenant through the CLI (as an operator would) and return its id."""
        return cli(self.env, "tenant", "create", f"{prefix}-{uuid.uuid4().hex[:8]}")

    def token(self, tenant: str, sub: str, role: Role = "dispatcher", channels: tuple[str, ...] = ()) -> str:
        return self.verifier.issue(tenant, sub, role, channels, ttl_s=24 * 3600)

    def headers(
        self, tenant: str, sub: str, role: Role = "dispatcher", channels: tuple[str, ...] = ()
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, sub, role, channels)}"}

    def _status(self, key: str) -> int:
        """A memory figure from ``/proc/<pid>/status``, in bytes (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/{self.pid}/status has no {key}")

    def rss_bytes(self) -> int:
        return self._status("VmRSS")

    def peak_rss_bytes(self) -> int:
        """High-water mark of resident memory over the process's life."""
        return self._status("VmHWM")


@contextmanager
def our_server(backend: Backend, log_name: str = "server.log") -> Iterator[OurServer]:
    """Migrate the backend, start the server, yield it; stop it by PID on the way out."""
    env = {**server_env(backend.tmp, backend.url), **SERVER_ENV}
    cli(env, "db", "upgrade")
    env["SYNC_MIGRATE_ON_START"] = "0"
    settings = Settings.from_env(env)
    assert settings.jwt_secret is not None
    verifier = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience)
    port = free_port()
    log = backend.tmp / log_name
    with log.open("wb") as out:
        proc = subprocess.Popen(
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
                "--backlog",
                "4096",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc, log, timeout=READY_TIMEOUT_S)
            yield OurServer(base, proc, env, verifier)
        finally:
            stop(proc)
