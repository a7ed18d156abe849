"""The admin CLI on a stored row that fails its integrity check: one coded line and a non-zero exit, no traceback.

A row of the change log or the conflict log whose ciphertext was altered (disk
corruption or tampering) cannot be decrypted. ``history``, ``conflicts list``
and ``export-user`` say so as ``Error: data_integrity: ...`` and exit 1.
"""

from __future__ import annotations

import asyncio
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


def assert_coded_one_line_error(result: Result) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not an escaped exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: data_integrity: ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("table", "column", "args"),
    [
        ("changes", "payload", ("admin", "--tenant", "acme", "history", "deliveries", "dlv-1")),
        ("conflicts", "details", ("admin", "--tenant", "acme", "conflicts", "list")),
        ("changes", "payload", ("export-user", "--tenant", "acme", "--sub", "d-17")),
    ],
    ids=["history", "conflicts-list", "export-user"],
)
def test_a_row_that_fails_its_integrity_check_is_a_coded_one_line_error(
    env: dict[str, str], tmp_path: Path, table: str, column: str, args: tuple[str, ...]
) -> None:
    assert run(env, *args).exit_code == 0  # intact, the command works
    corrupt(tmp_path / "sync.db", table, column)
    assert_coded_one_line_error(run(env, *args))
