"""Attachment GC with an entity row that fails its integrity check: that tenant keeps its attachments, the others
are collected, and ``syncserver gc`` says which tenant has damage (exit 1, no traceback).

A row that does not open may reference any attachment: nothing unreferenced in
its tenant is deleted this run. Abandoned uploads do not depend on references
and are still collected there.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncproto.attachments import AttachmentRef
from syncserver.attachments.gc import AttachmentCollector
from syncserver.cli import main
from syncserver.integrity import quarantine
from syncserver.settings import Settings
from syncserver.testing import server_env
from tests.integration.attachment_client import create, patch, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")):
        yield s


def collector(s: Server) -> AttachmentCollector:
    state = s.app.state
    return AttachmentCollector(state.store, state.keyring, state.schema, state.upload_service)


def damage(db: Path, tenant: str, entity_id: str) -> None:
    """Flip the last byte of an entity's sealed state (disk corruption, tampering)."""
    con = sqlite3.connect(db)
    try:
        query = "SELECT e.state FROM entities e JOIN tenants t ON t.no = e.tenant_no WHERE t.id = ? AND e.entity_id = ?"
        (state,) = con.execute(query, (tenant, entity_id)).fetchone()
        state = bytearray(state)
        state[-1] ^= 1
        con.execute(
            "UPDATE entities SET state = ? WHERE entity_id = ? AND tenant_no = (SELECT no FROM tenants WHERE id = ?)",
            (bytes(state), entity_id, tenant),
        )
        con.commit()
    finally:
        con.close()


def set_pod(ref: AttachmentRef) -> list[dict[str, object]]:
    return [{"op": "set", "field": "pod", "value": ref.to_value()}]


async def test_a_damaged_row_keeps_its_tenants_attachments_and_gc_goes_on(fs_server: Server, tmp_path: Path) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    files = {name: os.urandom(40_000 + i) for i, name in enumerate(["kept", "orphan", "behind_damage"])}
    refs = {name: ref_for(data) for name, data in files.items()}
    for name, data in files.items():
        assert (await upload(s.client, h, refs[name], data)).status_code == 204
    partial = ref_for(os.urandom(50_000))
    assert (await create(s.client, h, partial)).status_code == 201
    assert (await patch(s.client, h, partial.id, 0, b"x" * 1000)).status_code == 204
    await s.push(h, "web-1", [change(1, "dlv-ok", set_pod(refs["kept"]))])
    # The only reference to this one is in the row about to be damaged: GC cannot see it.
    await s.push(h, "web-1", [change(2, "dlv-bad", set_pod(refs["behind_damage"]))])
    damage(tmp_path / "sync.db", tenant, "dlv-bad")

    later = int(time.time() * 1000) + s.settings.attachments.retention_s * 1000 + DAY_MS
    result = await collector(s).collect(tenant, later)

    assert result.damaged == ["deliveries/dlv-bad"]
    assert (result.referenced, result.deleted, result.abandoned) == (1, 0, 1)  # the partial upload still goes
    meta = s.app.state.upload_service.meta
    for name in ("kept", "orphan", "behind_damage"):
        assert await meta.get_attachment(tenant, refs[name].id) is not None, name
    assert await meta.get_attachment(tenant, partial.id) is None
    set_aside = quarantine.recent(tenant)
    assert [(f.table, f.row) for f in set_aside] == [("entities", "deliveries/dlv-bad")]


async def test_an_undamaged_tenant_is_collected_as_before(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = os.urandom(30_000)
    orphan = ref_for(data)
    assert (await upload(s.client, h, orphan, data)).status_code == 204
    await s.push(h, "web-1", [change(1, "dlv-ok", [{"op": "set", "field": "status", "value": "pending"}])])

    later = int(time.time() * 1000) + s.settings.attachments.retention_s * 1000 + DAY_MS
    result = await collector(s).collect(tenant, later)

    assert result.damaged == []
    assert (result.referenced, result.deleted, result.abandoned) == (0, 1, 0)
    assert await s.app.state.upload_service.meta.get_attachment(tenant, orphan.id) is None


def test_the_gc_command_collects_every_other_tenant_and_names_the_damaged_one(tmp_path: Path) -> None:
    """Tenants 'aaa' (a damaged row, an orphan) and 'zzz' (an orphan), retention 0: zzz's orphan goes, aaa's stays."""
    db = tmp_path / "sync.db"
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{db}", SYNC_ATTACHMENT_RETENTION_S="0")
    runner = CliRunner()
    for tenant in ("aaa", "zzz"):
        assert runner.invoke(main, ["tenant", "create", tenant], env=env).exit_code == 0

    async def fill() -> dict[str, str]:
        orphans = {}
        async for srv in start(Settings.from_env(env)):
            for tenant in ("aaa", "zzz"):
                h = srv.headers(tenant, "disp")
                await srv.push(h, "web-1", [change(1, "dlv-1", [{"op": "set", "field": "status", "value": "x"}])])
                data = os.urandom(20_000)
                ref = ref_for(data)
                assert (await upload(srv.client, h, ref, data)).status_code == 204
                orphans[tenant] = ref.id
        return orphans

    orphans = asyncio.run(fill())
    damage(db, "aaa", "dlv-1")
    time.sleep(0.01)  # past the (zero) retention

    result = runner.invoke(main, ["gc"], env=env)

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "collected 0 tombstones, 1 attachments, 0 abandoned uploads" in result.output
    assert "aaa" in result.output.splitlines()[-1]
    assert "zzz" not in result.output.splitlines()[-1]
    con = sqlite3.connect(db)
    try:
        left = set(con.execute("SELECT tenant_id, id FROM attachments").fetchall())
    finally:
        con.close()
    assert left == {("aaa", orphans["aaa"])}


def test_a_tenant_whose_gc_fails_does_not_stop_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "sync.db"
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{db}")
    runner = CliRunner()
    for tenant in ("aaa", "mmm", "zzz"):
        assert runner.invoke(main, ["tenant", "create", tenant], env=env).exit_code == 0
    done: list[str] = []
    collect = AttachmentCollector.collect

    async def failing(self: AttachmentCollector, tenant: str, now_ms: int) -> object:
        if tenant == "mmm":
            raise RuntimeError("the [blob] store is unreachable")
        done.append(tenant)
        return await collect(self, tenant, now_ms)

    monkeypatch.setattr(AttachmentCollector, "collect", failing)

    result = runner.invoke(main, ["gc"], env=env)

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert done == ["aaa", "zzz"]
    assert "mmm: gc failed: RuntimeError: the [blob] store is unreachable" in result.output
    assert result.output.splitlines()[-1] == "gc incomplete for: mmm (failed)"
