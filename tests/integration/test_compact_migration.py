"""A database written before compact payloads (ADR 0029), converted in place, reads exactly as it did.

The "previous release" is reproduced with today's write paths: ``payloads`` seals plaintext as that
release did (plain msgpack, no frame, entity states as named structs), and once every read path is
captured the migrations' own downgrades take the rows back to the revisions before
``0006_footprint``. Three tenants get entities of every field kind, register and delete/update
conflicts, a rejected change (a dead letter) and history. Every read path (pulls of a dispatcher and
a driver, histories, the conflict log, dead letters, raw rows) is captured, the schema is upgraded
and the rows converted, interrupted twice on the way (a stop between batches, and a crash after a
batch committed but before its position was saved), then finished by the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from alembic import command
from alembic.migration import MigrationContext
from click.testing import CliRunner
from pycrdt import Doc, Text
from sqlalchemy.engine import Connection

from syncproto.messages import (
    AddOp,
    AppendOp,
    Applied,
    Change,
    DeleteOp,
    IncOp,
    PullRequest,
    PushRequest,
    Rejected,
    SetOp,
    TextOp,
)
from syncserver.admin.conflicts import ConflictFilters
from syncserver.admin.tenants import create_tenant
from syncserver.auth.tokens import Principal
from syncserver.cli import main
from syncserver.integrity.verify import Verifier
from syncserver.services import Services, open_services
from syncserver.settings import Settings
from syncserver.sync import compact, compaction, payloads
from syncserver.testing import server_env
from syncstore.adminstore import DeadLetterQuery
from syncstore.keystore import SEALED_TABLES
from syncstore.migrate import alembic_config, run_locked, upgrade
from syncstore.records import ConflictFilter
from tests import services as test_services

TENANTS = ("acme", "globex", "initech")
PREVIOUS_HEADS = ("0002_access", "0003_admin", "0004_attachments", "0005_integrity")
ENTITIES = 14


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_MIGRATE_ON_START="0")
    else:
        with test_services.private_database("compact") as url:
            yield server_env(tmp_path, url, SYNC_MIGRATE_ON_START="0")


def test_a_previous_release_database_reads_the_same_after_compaction(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env(env)
    asyncio.run(upgrade(settings.database_url))
    with monkeypatch.context() as legacy:
        legacy.setattr(compact, "frame", lambda body, dictionary=None: body)
        legacy.setattr(payloads, "encode_entity", lambda stored, dictionary=None: msgspec.msgpack.encode(stored))
        asyncio.run(_write_history(settings))
    before = asyncio.run(_read_everything(settings))
    assert before["framed"] == {t: 0 for t in TENANTS}, "the previous release's rows are not framed"
    assert all(before["verify"].values())
    # Today's code writes only today's schema: the rows are taken back to that release's tables (the
    # migrations' own downgrades, 0007_compact_log then 0006_footprint) and brought forward again.
    assert asyncio.run(downgrade(settings.database_url, PREVIOUS_HEADS[0])) == set(PREVIOUS_HEADS)

    asyncio.run(upgrade(settings.database_url))  # 0006_footprint, 0007_compact_log
    assert asyncio.run(_read_everything(settings))["reads"] == before["reads"]

    marks = settings.data_dir / "compact"
    asyncio.run(_compact_partly(settings, marks, max_batches=3))
    assert (marks / "acme.json").exists()
    asyncio.run(_crash_after_a_commit(settings, marks))
    _kill_midway(env, marks / "globex.json")
    midway = asyncio.run(_read_everything(settings))
    assert midway["reads"] == before["reads"]
    assert midway["framed"]["globex"] >= 1  # killed after a committed batch of the second tenant
    assert midway["framed"]["initech"] < before["sealed"]["initech"]  # and before the end

    finished = CliRunner().invoke(main, ["compact", "--batch-size", "7"], env=env, catch_exceptions=False)
    assert finished.exit_code == 0, finished.output
    assert "0 did not open" in finished.output

    after = asyncio.run(_read_everything(settings))
    assert after["reads"] == before["reads"]
    assert after["framed"] == after["sealed"] == before["sealed"]
    assert all(after["verify"].values())
    for t in TENANTS:
        assert after["bytes"][t] < before["bytes"][t] * 0.6, (t, after["bytes"][t], before["bytes"][t])
    verified = CliRunner().invoke(main, ["verify"], env=env, catch_exceptions=False)
    assert verified.exit_code == 0, verified.output

    again = CliRunner().invoke(main, ["compact", "--restart"], env=env, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "0 rows rewritten" in again.output
    assert asyncio.run(_read_everything(settings))["reads"] == before["reads"]


async def downgrade(url: str, revision: str) -> set[str]:
    """Migrate the database at ``url`` down to ``revision``; the revisions it is at afterwards."""
    config = alembic_config()
    heads: set[str] = set()

    def work(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        heads.update(MigrationContext.configure(connection).get_current_heads())

    await run_locked(url, work)
    return heads


async def _compact_partly(settings: Settings, marks: Path, max_batches: int) -> None:
    async with open_services(settings) as s:
        compactor = compaction.PayloadCompactor(s.store, s.keyring, marks)
        result = await compactor.compact("acme", batch_size=5, max_batches=max_batches)
        assert result.rewritten > 0
        assert result.failed == 0


async def _crash_after_a_commit(settings: Settings, marks: Path) -> None:
    """Die like a kill -9 after a batch's transaction committed and before its position was written."""

    class Killed(BaseException):
        pass

    calls = 0

    def save_then_die(self: compaction.PayloadCompactor, tenant: str, mark: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Killed
        original(self, tenant, mark)

    original = compaction.PayloadCompactor._save_mark
    async with open_services(settings) as s:
        compactor = compaction.PayloadCompactor(s.store, s.keyring, marks)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(compaction.PayloadCompactor, "_save_mark", save_then_die)
            with pytest.raises(Killed):
                await compactor.compact("acme", batch_size=5)


def _kill_midway(env: dict[str, str], mark: Path) -> None:
    """``syncserver compact`` in its own process, SIGKILLed once it has committed a batch of a second tenant."""
    argv = [sys.executable, "-m", "syncserver.cli", "compact", "--batch-size", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def _yjs(text: str) -> str:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, text)
    return base64.b64encode(doc.get_update()).decode()


def _change(n: int, entity: str, hlc: int, ops: list[Any], context: dict[str, int] | None = None) -> Change:
    return Change(uuid.uuid4().hex, n, "deliveries", entity, (hlc, 0), context or {}, ops)


async def _write_history(settings: Settings) -> None:
    async with open_services(settings) as s:
        for tenant in TENANTS:
            await create_tenant(s.store, s.keyring, tenant)
            desk = Principal(tenant, "dispatcher-1", "dispatcher")
            driver = Principal(tenant, "driver-1", "driver", ("driver:d1",))
            creates = [
                _change(
                    i + 1,
                    f"dlv-{i}",
                    1_765_000_000_000 + i,
                    [
                        SetOp("status", "out_for_delivery"),
                        SetOp("driver_id", f"d{i % 2 + 1}"),
                        SetOp("depot", "dxb"),
                        SetOp("customer", f"{tenant} customer {i:04d} Al Mansouri, Villa {i}, Al Barsha 1"),
                        IncOp("cod_cents", 12_500 + i),
                        AddOp("scanned", f"PCL-{i:07d}-A"),
                        TextOp("notes", _yjs(f"ring twice, {tenant}")),
                        AppendOp("trail", {"lat": 25.1 + i / 1000, "lon": 55.2}),
                    ],
                )
                for i in range(ENTITIES)
            ]
            assert all(isinstance(r, Applied) for r in (await s.push.push(desk, PushRequest("desk", creates))).results)
            # The driver, offline, saw none of the dispatcher's writes: register and delete/update conflicts.
            mine = [d for d in range(ENTITIES) if d % 2 == 0]
            offline = [
                _change(k + 1, f"dlv-{d}", 1_765_000_100_000 + d, [SetOp("status", "failed")])
                for k, d in enumerate(mine[:4])
            ]
            offline.append(_change(5, f"dlv-{mine[4]}", 1_765_000_100_500, [DeleteOp()]))
            offline.append(_change(6, f"dlv-{mine[5]}", 1_765_000_100_600, [IncOp("status", 1)]))  # a dead letter
            results = (await s.push.push(driver, PushRequest("phone-1", offline))).results
            assert sum(isinstance(r, Rejected) for r in results) == 1
            later = [
                _change(ENTITIES + k + 1, f"dlv-{d}", 1_765_000_200_000 + d, [SetOp("status", "delivered")])
                for k, d in enumerate(range(0, ENTITIES, 3))
            ]
            assert all(isinstance(r, Applied) for r in (await s.push.push(desk, PushRequest("desk", later))).results)


async def _read_everything(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"reads": {}, "framed": {}, "sealed": {}, "bytes": {}, "verify": {}}
    async with open_services(settings) as s:
        for tenant in TENANTS:
            out["reads"][tenant] = await _reads(s, tenant)
            framed = sealed = size = 0
            cipher = await s.keyring.cipher(tenant)
            for table in SEALED_TABLES:
                for row in await s.store.sealed_rows(tenant, table, not_version=-1, after=None, limit=10_000):
                    plaintext = cipher.open(table, payloads.sealed_row_id(table, row.names), row.key_version, row.blob)
                    framed += compact.unframe(plaintext)[0]
                    sealed += 1
                    size += len(row.blob)
            out["framed"][tenant], out["sealed"][tenant], out["bytes"][tenant] = framed, sealed, size
            report = await Verifier(s.store, s.keyring, s.schema).verify(tenant)
            out["verify"][tenant] = report.ok and not report.problems
    return out


async def _reads(s: Services, tenant: str) -> dict[str, Any]:
    admin = Principal(tenant, "root", "admin")
    driver = Principal(tenant, "driver-1", "driver", ("driver:d1",))
    cipher = await s.keyring.cipher(tenant)
    changes = await s.store.changes(tenant, 0, 10_000)
    entity_rows = await s.store.pull(tenant, 0, 10_000)
    letters = await s.dead_letter_admin.list_dead_letters(admin, DeadLetterQuery(), None, 1000)
    reads = {
        "pull": await s.pull.pull(admin, PullRequest(limit=1000)),
        "driver pull": await s.pull.pull(driver, PullRequest(limit=1000)),
        "histories": [
            await s.entity_history.history(admin, "deliveries", f"dlv-{i}", 0, 1000) for i in range(ENTITIES)
        ],
        "conflicts": await s.conflict_admin.list_conflicts(admin, ConflictFilters(), None, 1000),
        "driver conflicts": await s.conflicts.list(driver, ConflictFilter(), None, 1000),
        "dead letters": letters,
        "dead letters shown": [
            await s.dead_letter_admin.get_dead_letter(admin, d.replica, d.n) for d in letters.dead_letters
        ],
        "changes": [
            (
                msgspec.structs.replace(c, payload=b""),
                payloads.open_ops(cipher, c),
                payloads.open_ops_plaintext(cipher, c),
            )
            for c in changes
        ],
        "entities": [(msgspec.structs.replace(e, state=b""), payloads.open_entity(cipher, e)) for e in entity_rows],
    }
    assert len(letters.dead_letters) == 1
    assert len(reads["conflicts"].conflicts) >= 5
    return msgspec.to_builtins(reads, builtin_types=(bytes,))
