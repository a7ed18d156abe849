"""Deployment files: nginx config (tested by nginx itself, then proxying a real server), compose, Dockerfile,
and ``syncserver db upgrade`` on an empty PostgreSQL.

No Docker engine runs here: the image is not built. ``docker compose config``
runs when the compose plugin is installed; the file's shape is checked either way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import ROOT, cli, free_port, running_server, server_env
from tests import services

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def require_nginx() -> None:
    if Path(NGINX).exists():
        return
    message = "nginx is not installed (apt-get install nginx)"
    if services.IN_CI:
        pytest.fail(f"{message}; under CI=true this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def local_nginx_conf(tmp: Path, upstream_port: int, listen_port: int) -> Path:
    """deploy/nginx.conf with the compose service names pointed at a local server and a free port."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    for name in ("syncserver-1", "syncserver-2"):
        assert f"server {name}:8000" in text
        text = text.replace(f"server {name}:8000", f"server 127.0.0.1:{upstream_port}")
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp / 'nginx.pid'};")
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    (tmp / "logs").mkdir(exist_ok=True)
    return conf


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    require_nginx()
    conf = local_nginx_conf(tmp_path, 8000, 8080)
    out = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(conf.parent), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    require_nginx()
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_LOG_LEVEL="WARNING")
    cli(env, "tenant", "create", "acme")
    port = free_port()
    with running_server(env, port, tmp_path / "server.log"):
        front = free_port()
        conf = local_nginx_conf(tmp_path, port, front)
        with (tmp_path / "nginx.err").open("wb") as err:
            proc = subprocess.Popen(
                [NGINX, "-c", str(conf), "-p", str(tmp_path), "-e", "stderr", "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            base = f"http://127.0.0.1:{front}"
            for _ in range(100):
                try:
                    httpx.get(f"{base}/health/live", timeout=1)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None:
                        raise RuntimeError((tmp_path / "nginx.err").read_text()) from None
                    time.sleep(0.05)
            yield base, env
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_nginx_proxies_sync_requests_ids_and_websocket_upgrades(behind_nginx: tuple[str, dict[str, str]]) -> None:
    base, env = behind_nginx
    token = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync").issue("acme", "ops", "dispatcher")
    auth = {"Authorization": f"Bearer {token}"}
    change = {"id": "c1", "n": 1, "collection": "deliveries", "entity": "dlv-1", "hlc": [1, 0], "context": {}}
    body = {"replica": "web-1", "changes": [{**change, "ops": [{"op": "set", "field": "status", "value": "pending"}]}]}

    pushed = httpx.post(f"{base}/v1/sync/push", json=body, headers={**auth, "X-Request-ID": "from-client-1"})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["results"][0]["status"] == "applied"
    assert pushed.headers["x-request-id"] == "from-client-1"
    pulled = httpx.post(f"{base}/v1/sync/pull", json={"cursor": None}, headers=auth)
    assert pulled.json()["changes"][0]["fields"]["status"]["value"] == "pending"
    assert len(pulled.headers["x-request-id"]) == 32  # made by nginx ($request_id), passed on
    assert httpx.get(f"{base}/metrics").status_code == 404
    assert httpx.get(f"{base}/health/ready").json()["checks"]["database"] == "ok"

    async def hello() -> Any:
        import websockets

        url = base.replace("http://", "ws://") + "/v1/sync/ws"
        async with websockets.connect(url, additional_headers=auth, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "hello", "versions": [1]}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    welcome = asyncio.run(hello())
    assert welcome["type"] == "welcome"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_runs_postgres_redis_two_replicas_and_nginx() -> None:
    spec = compose()
    services_ = spec["services"]
    assert set(services_) == {"postgres", "redis", "syncserver-1", "syncserver-2", "nginx"}
    assert "pg_isready" in " ".join(services_["postgres"]["healthcheck"]["test"])
    assert "ping" in services_["redis"]["healthcheck"]["test"]
    for name in ("syncserver-1", "syncserver-2"):
        server = services_[name]
        assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert server["environment"]["SYNC_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert server["environment"]["SYNC_REDIS_URL"] == "redis://redis:6379/0"
        assert server["environment"]["SYNC_MASTER_KEY_FILE"] == "/run/secrets/master_key"
        assert "/health/ready" in " ".join(server["healthcheck"]["test"])
    nginx = services_["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert {s: c["condition"] for s, c in nginx["depends_on"].items()} == {
        "syncserver-1": "service_healthy",
        "syncserver-2": "service_healthy",
    }
    for secret in spec["secrets"].values():
        assert secret["file"].startswith("./deploy/secrets/")


def _docker_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose(), reason="the docker compose plugin is not installed (the shape test runs)")
def test_docker_compose_config_validates(tmp_path: Path) -> None:
    for name in ("compose.yaml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "deploy" / "secrets").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "nginx.conf", tmp_path / "deploy" / "nginx.conf")
    for name in ("master.key", "jwt.secret"):
        (tmp_path / "deploy" / "secrets" / name).write_text("test\n")
    out = subprocess.run(
        ["docker", "compose", "--project-directory", str(tmp_path), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "test"},
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_dockerfile_is_slim_and_runs_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert bases
    assert all(base.endswith("-slim") or base.startswith("python:3.11-slim") for base in bases)
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in text
    assert "SYNC_MASTER_KEY=" not in text
    assert "SYNC_JWT_SECRET=" not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "deploy/secrets", ".sync"} <= set(ignored)


@pytest.mark.postgres
def test_db_upgrade_from_two_processes_on_an_empty_postgres(tmp_path: Path) -> None:
    with services.private_database("upgrade") as url:
        env = server_env(tmp_path, url)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "syncserver.cli", "db", "upgrade"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert all("newest schema" in err for _, err in outs)
        assert cli(env, "tenant", "create", "acme") == "acme"
        listed = cli(env, "tenant", "list")
        assert "acme" in listed
