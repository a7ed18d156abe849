"""The admin CLI on a stored row that fails its integrity check: what is intact, then a coded line, exit 1.

A row of the change log or the conflict log whose ciphertext was altered (disk
corruption or tampering) cannot be decrypted. ``history``, ``conflicts list``
and ``export-user`` show every intact row, end with
``Error: data_integrity: ...`` naming the rows that failed, and exit 1; no
traceback. One bad row never hides the others.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from litestar.testing import AsyncTestClient

from syncserver.app import create_app
from syncserver.auth.tokens import TokenVerifier
from syncserver.cli import main
from syncserver.settings import Settings
from syncserver.testing import server_env


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def change(n: int, value: str, hlc: int) -> dict[str, Any]:
    ops = [{"op": "set", "field": "status", "value": value}]
    return {
        "id": f"c{hlc}",
        "n": n,
        "collection": "deliveries",
        "entity": "dlv-1",
        "hlc": [hlc, 0],
        "context": {},
        "ops": ops,
    }


async def seed(env: dict[str, str]) -> None:
    """Two drivers set the same field concurrently: two changes and one conflict."""
    settings = Settings.from_env(env)
    assert settings.jwt_secret is not None
    verifier = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience)
    async with AsyncTestClient(create_app(settings)) as client:
        for sub, replica, value, hlc in (("d-17", "pa", "delivered", 1), ("d-42", "pb", "failed", 2)):
            headers = {"Authorization": f"Bearer {verifier.issue('acme', sub, 'dispatcher')}"}
            body = {"replica": replica, "changes": [change(1, value, hlc)]}
            r = await client.post("/v1/sync/push", json=body, headers=headers)
            assert r.json()["results"][0]["status"] == "applied"


def corrupt(db: Path, table: str, column: str) -> None:
    """Flip one byte in the middle of every row's sealed column."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT rowid, {column} FROM {table}").fetchall()
        assert rows
        for rowid, sealed in rows:
            flipped = bytearray(sealed)
            flipped[len(flipped) // 2] ^= 0x01
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (bytes(flipped), rowid))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")
    assert run(env, "tenant", "create", "acme").exit_code == 0
    asyncio.run(seed(env))
    return env


def assert_coded_error_last(result: Result, names: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not an escaped exception
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: data_integrity: "), result.output
    assert names in last
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("table", "column", "args", "names"),
    [
        ("changes", "payload", ("admin", "--tenant", "acme", "history", "deliveries", "dlv-1"), "changes 1, 2"),
        ("conflicts", "details", ("admin", "--tenant", "acme", "conflicts", "list"), "c2.0"),
        ("changes", "payload", ("export-user", "--tenant", "acme", "--sub", "d-17"), "changes/1"),
    ],
    ids=["history", "conflicts-list", "export-user"],
)
def test_a_row_that_fails_its_integrity_check_is_named_after_what_is_intact(
    env: dict[str, str], tmp_path: Path, table: str, column: str, args: tuple[str, ...], names: str
) -> None:
    assert run(env, *args).exit_code == 0  # intact, the command works
    corrupt(tmp_path / "sync.db", table, column)
    assert_coded_error_last(run(env, *args), names)


def test_history_shows_the_intact_changes_beside_a_damaged_one(env: dict[str, str], tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "sync.db") as conn:
        (sealed,) = conn.execute("SELECT payload FROM changes WHERE seq = 1").fetchone()
        flipped = bytearray(sealed)
        flipped[len(flipped) // 2] ^= 0x01
        conn.execute("UPDATE changes SET payload = ? WHERE seq = 1", (bytes(flipped),))
    result = run(env, "admin", "--tenant", "acme", "--json", "history", "deliveries", "dlv-1")
    assert_coded_error_last(result, "changes 1")
    body = json.loads(result.output.strip().splitlines()[0])
    assert [(c["seq"], c["result"], c["ops"]) for c in body["changes"]] == [
        (1, "unavailable", None),
        (2, "applied", [{"op": "set", "field": "status", "value": "failed"}]),
    ]
    assert body["current"]["fields"]["status"]["siblings"]  # the entity's state itself is intact
