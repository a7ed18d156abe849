"""The key-lifecycle CLI end to end on SQLite: status, rotate, destroy, reencrypt, rotate-master, export, erase."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from litestar.testing import AsyncTestClient

from syncserver.app import create_app
from syncserver.auth.tokens import TokenVerifier
from syncserver.cli import main
from syncserver.settings import Settings
from syncserver.testing import server_env


def run(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


async def seed(env: dict[str, str]) -> Any:
    settings = Settings.from_env(env)
    async with AsyncTestClient(create_app(settings)) as client:
        token = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience).issue(
            "acme", "d-17", "driver", ("depot:dxb",)
        )
        headers = {"Authorization": f"Bearer {token}"}
        ops = [{"op": "set", "field": "depot", "value": "dxb"}, {"op": "set", "field": "note", "value": "ring twice"}]
        change = {"id": "c1", "n": 1, "collection": "deliveries", "entity": "dlv-1", "hlc": [1, 0], "context": {}}
        r = await client.post(
            "/v1/sync/push", json={"replica": "p", "changes": [{**change, "ops": ops}]}, headers=headers
        )
        assert r.json()["results"][0]["status"] == "applied"
        return (await client.post("/v1/sync/pull", json={}, headers=headers)).json()["changes"]


def test_the_key_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")
    assert run(env, "tenant", "create", "acme").exit_code == 0
    before = asyncio.run(seed(env))

    status = run(env, "keys", "status", "--tenant", "acme")
    assert status.exit_code == 0
    assert "active" in status.output
    assert run(env, "keys", "rotate", "--tenant", "acme").output.splitlines()[0] == "2"
    refused = run(env, "keys", "destroy", "--tenant", "acme", "--version", "1")
    assert refused.exit_code == 1
    assert "run reencrypt first" in refused.output
    assert run(env, "keys", "reencrypt", "--tenant", "acme").exit_code == 0
    early = run(env, "keys", "destroy", "--tenant", "acme", "--version", "1")
    assert early.exit_code == 1  # a server may still hold version 1 in its key cache
    assert "SYNC_KEY_CACHE_TTL_S" in early.output
    # No server runs here, so none caches keys: with a cache of 0 s the retired version can go at once.
    no_cache = {**env, "SYNC_KEY_CACHE_TTL_S": "0"}
    assert run(no_cache, "keys", "destroy", "--tenant", "acme", "--version", "1").exit_code == 0

    new_master = base64.b64encode(secrets.token_bytes(32)).decode()
    rotating = {**env, "SYNC_MASTER_KEY": new_master, "SYNC_MASTER_KEY_PREVIOUS": env["SYNC_MASTER_KEY"]}
    rotated = run(rotating, "keys", "rotate-master")
    assert rotated.exit_code == 0, rotated.output
    assert "1 data keys rewrapped" in rotated.output
    only_new = {**env, "SYNC_MASTER_KEY": new_master}
    assert asyncio.run(_pull(only_new)) == before
    missing_old = run(
        {**env, "SYNC_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}, "keys", "rotate-master"
    )
    assert missing_old.exit_code == 1
    assert "SYNC_MASTER_KEY_PREVIOUS" in missing_old.output

    out = tmp_path / "export.json"
    assert run(only_new, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out)).exit_code == 0
    export = json.loads(out.read_text())
    assert export["changes"][0]["ops"][1] == {"op": "set", "field": "note", "value": "ring twice"}
    assert oct(out.stat().st_mode)[-3:] == "600"
    assert "1 entities reindexed" in run(only_new, "channels", "reindex", "--tenant", "acme").output

    kept = run(only_new, "tenant", "erase", "acme", input="acm\n")
    assert kept.exit_code == 1
    assert "nothing was erased" in kept.output
    erased = run(only_new, "tenant", "erase", "acme", "--yes")
    assert erased.exit_code == 0, erased.output
    assert "acme" not in run(only_new, "tenant", "list").output


async def _pull(env: dict[str, str]) -> Any:
    settings = Settings.from_env(env)
    async with AsyncTestClient(create_app(settings)) as client:
        token = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience).issue(
            "acme", "d-17", "driver", ("depot:dxb",)
        )
        r = await client.post("/v1/sync/pull", json={}, headers={"Authorization": f"Bearer {token}"})
        return r.json()["changes"]
