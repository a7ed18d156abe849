"""Re-encryption killed with SIGKILL half-way, then run again: it finishes and no row is lost."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from syncserver.app import create_app
from syncserver.auth.tokens import TokenVerifier
from syncserver.settings import Settings
from syncserver.sync import payloads
from syncserver.testing import ROOT, cli, server_env
from syncstore import SEALED_TABLES, KeyStore

ENTITIES = 300
CELLS = """
SELECT key_version, count(*) FROM (
  SELECT key_version FROM entities UNION ALL SELECT key_version FROM changes
  UNION ALL SELECT key_version FROM conflicts UNION ALL SELECT key_version FROM dead_letters
) GROUP BY key_version
"""


def versions(db: Path) -> dict[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return dict(conn.execute(CELLS).fetchall())


async def snapshot(settings: Settings, *, seed: bool = False) -> Any:
    """Everything a dispatcher pulls (and, with ``seed``, push the data first); then check every cell opens."""
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        token = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience).issue(
            "acme", "boss", "dispatcher"
        )
        headers = {"Authorization": f"Bearer {token}"}
        if seed:
            changes = [
                {
                    "id": f"c{i}",
                    "n": i,
                    "collection": "deliveries",
                    "entity": f"dlv-{i}",
                    "hlc": [1_700_000_000_000 + i, 0],
                    "context": {},
                    "ops": [
                        {"op": "set", "field": "note", "value": f"note {i}"},
                        {"op": "inc", "field": "cod_cents", "by": i},
                    ],
                }
                for i in range(1, ENTITIES + 1)
            ]
            r = await client.post("/v1/sync/push", json={"replica": "web-1", "changes": changes}, headers=headers)
            assert r.status_code == 200, r.text
        r = await client.post("/v1/sync/pull", json={"limit": 10_000}, headers=headers)
        assert r.status_code == 200, r.text
        store = app.state.store
        assert isinstance(store, KeyStore)
        cipher = await app.state.keyring.cipher("acme", [1, 2])
        opened = 0
        for table in SEALED_TABLES:
            for cell in await store.sealed_rows("acme", table, not_version=0, after=None, limit=100_000):
                cipher.open(table, payloads.sealed_row_id(table, cell.names), cell.key_version, cell.blob)
                opened += 1
        return r.json()["changes"], opened


def reencrypt(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # fixed argv: this interpreter and our CLI
            [sys.executable, "-m", "syncserver.cli", "keys", "reencrypt", "--tenant", "acme", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def test_reencryption_killed_half_way_resumes_and_loses_no_row(tmp_path: Path) -> None:
    db = tmp_path / "sync.db"
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{db}")
    cli(env, "tenant", "create", "acme")
    settings = Settings.from_env(env)
    before, cells = await snapshot(settings, seed=True)
    assert len(before) == ENTITIES
    assert cli(env, "keys", "rotate", "--tenant", "acme") == "2"
    assert versions(db) == {1: cells}

    log = tmp_path / "reencrypt.log"
    proc = reencrypt(env, log, "--batch-size", "10", "--pause-ms", "40")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            moved = versions(db).get(2, 0)
            if moved >= cells // 4:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    half = versions(db)
    assert sum(half.values()) == cells
    assert 0 < half.get(2, 0) < cells, half  # really killed half-way
    assert await snapshot(settings) == (before, cells)  # every row still opens, under v1 or v2

    again = reencrypt(env, log)
    assert again.wait(timeout=120) == 0, log.read_text()
    assert "every row is under its tenant's active key version" in log.read_text()
    assert versions(db) == {2: cells}
    assert await snapshot(settings) == (before, cells)
