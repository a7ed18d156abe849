"""A tenant's trained compression dictionary (ADR 0034), end to end on every backend.

The server trains one once the tenant's log is long enough and installs it with a new key version;
rows sealed after it are compressed against it; everything reads the same before and after, in this
process and in one whose keys were cached before; re-encryption moves old rows to it; rotation carries
it forward; a tampered dictionary costs its own rows only; a downgrade refuses while one exists.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from syncserver.keys.keyring import DecryptionError, TenantKeyring
from syncserver.keys.operations import KeyOps
from syncserver.services import TRAINER
from syncserver.sync import compact, payloads
from syncstore import AdminStore, KeyStore, Store
from syncstore.keystore import SEALED_TABLES
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_compact_migration import downgrade

AFTER = 150
"""``SYNC_DICTIONARY_AFTER_CHANGES`` in these tests."""


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


def delivery(i: int) -> list[dict[str, Any]]:
    return [
        set_("status", ("out_for_delivery", "delivered", "failed")[i % 3]),
        set_("driver_id", f"driver-{i % 20:03d}"),
        set_("address", f"Villa {i % 90}, Street {i % 17}, Al Barsha 1, Dubai, United Arab Emirates"),
        set_("note", f"Customer {i:06d} Al Mansouri, call before arrival"),
        {"op": "inc", "field": "cod_cents", "by": 12_500},
    ]


async def fill(server: Server, tenant: str, start_n: int, count: int, replica: str = "van-1") -> None:
    h = server.headers(tenant, "boss")
    changes = [change(start_n + i, f"dlv-{start_n + i}", delivery(start_n + i)) for i in range(count)]
    await server.push(h, replica, changes)


async def everything(server: Server, tenant: str) -> Any:
    state, _ = await server.pull_all(server.headers(tenant, "boss"))
    conflicts = (await server.client.get("/v1/conflicts", headers=server.headers(tenant, "boss"))).json()
    admin = server.headers(tenant, "root", "admin")
    history = await server.client.get("/v1/admin/entities/deliveries/dlv-1/history", headers=admin)
    letters = await server.client.get("/v1/admin/dead-letters", headers=admin)
    assert history.status_code == 200, history.text
    assert letters.status_code == 200, letters.text
    return state, conflicts, history.json(), letters.json()


def trainings(outcome: str) -> float:
    """``sync_dictionary_trainings_total{outcome=...}`` in this process."""
    return REGISTRY.get_sample_value("sync_dictionary_trainings_total", {"outcome": outcome}) or 0.0


async def dictionary_versions(store: Store, tenant: str) -> dict[int, bool]:
    return {k.version: k.dictionary is not None for k in await store.tenant_keys(tenant)}


async def wait_for_version(store: Store, tenant: str, version: int) -> None:
    for _ in range(400):
        if (await dictionary_versions(store, tenant)).get(version):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"no key version {version} with a dictionary: {await dictionary_versions(store, tenant)}")


async def frames(server: Server, tenant: str) -> dict[int, dict[int, int]]:
    """Per key version, how many sealed cells use each frame format."""
    store, keyring = server.app.state.store, server.app.state.keyring
    assert isinstance(store, KeyStore)
    cipher = await keyring.cipher(tenant)
    found: dict[int, dict[int, int]] = {}
    for table in SEALED_TABLES:
        for row in await store.sealed_rows(tenant, table, not_version=-1, after=None, limit=100_000):
            plaintext = cipher.open(table, payloads.sealed_row_id(table, row.names), row.key_version, row.blob)
            by_format = found.setdefault(row.key_version, {})
            by_format[plaintext[1]] = by_format.get(plaintext[1], 0) + 1
    return found


@pytest.fixture
async def server(backend_url: str, tmp_path: Path) -> Any:
    async for s in start(make_settings(tmp_path, backend_url, dictionary_after_changes=AFTER)):
        yield s


async def test_a_tenant_gets_a_dictionary_and_every_read_stays_the_same(server: Server) -> None:
    store: Store = server.app.state.store
    tenant = await server.tenant()
    other = await server.tenant("globex")
    # A second process's keyring, its keys cached before the dictionary exists.
    elsewhere = TenantKeyring(store, server.app.state.services.key_provider, ttl_s=3600)
    await elsewhere.cipher(tenant)

    await fill(server, tenant, 1, AFTER - 10)
    await fill(server, other, 1, 20)
    assert await dictionary_versions(store, tenant) == {1: False}, "not before the log is long enough"
    await fill(server, tenant, AFTER - 9, 20)
    await wait_for_version(store, tenant, 2)
    assert await dictionary_versions(store, other) == {1: False}, "a tenant's log trains only its own"

    await fill(server, tenant, AFTER + 11, 60)
    # A conflict and a dead letter, sealed under the new version too.
    h = server.headers(tenant, "boss")
    await server.push(h, "van-2", [change(1, "dlv-1", [set_("status", "failed")], {})])
    await server.push(h, "van-2", [change(2, "dlv-2", [{"op": "inc", "field": "status", "by": 1}])])
    found = await frames(server, tenant)
    assert found[2].get(compact.ZSTD_TENANT, 0) >= 60, found
    assert compact.ZSTD_TENANT not in found[1], "rows of version 1 never use a dictionary"

    assert isinstance(store, AdminStore)
    audit = await store.audit_log(tenant, None, 10)
    assert [(a.actor, a.action, a.target) for a in audit if a.action == "key.rotate"] == [
        (TRAINER, "key.rotate", "key/2")
    ]

    before = await everything(server, tenant)
    # The other process reads the new rows at once: a row's version it lacks reloads its keys.
    rows = await store.pull(tenant, 0, 10_000)
    cipher = await elsewhere.cipher(tenant, {r.key_version for r in rows})
    assert cipher.dictionary(2) is not None
    assert [payloads.open_entity(cipher, r) for r in rows] == [
        payloads.open_entity(await server.app.state.keyring.cipher(tenant), r) for r in rows
    ]

    ops: KeyOps = server.app.state.key_ops
    ops.settle_ms = 0  # destroy right after each rotation: no other server writes to this tenant here
    result = await ops.reencrypt(tenant, "root")
    assert result.remaining == 0
    assert result.failed == 0
    assert set(await frames(server, tenant)) == {2}
    await ops.destroy_version(tenant, 1, "root")
    assert await everything(server, tenant) == before

    rotated = await ops.rotate(tenant, "root")
    assert rotated.dictionary, "rotation carries it forward"
    assert (await dictionary_versions(store, tenant))[3]
    await ops.reencrypt(tenant, "root")
    await ops.destroy_version(tenant, 2, "root")
    assert (await frames(server, tenant))[3].get(compact.ZSTD_TENANT, 0) >= 200
    assert await everything(server, tenant) == before

    # To a version without a dictionary: every cell is decompressed and compressed again, or it would not read.
    plain = await ops.rotate(tenant, "root", None)
    assert not plain.dictionary
    await ops.reencrypt(tenant, "root")
    await ops.destroy_version(tenant, 3, "root")
    assert compact.ZSTD_TENANT not in (await frames(server, tenant))[4]
    assert await everything(server, tenant) == before
    report = await server.app.state.integrity_verifier.verify(tenant)
    assert report.ok, report
    assert not report.problems


async def test_training_can_be_turned_off(tmp_path: Path) -> None:
    async for server in start(make_settings(tmp_path, "memory://", dictionary_after_changes=0)):
        tenant = await server.tenant()
        await fill(server, tenant, 1, 300)
        await asyncio.sleep(0.3)
        assert await dictionary_versions(server.app.state.store, tenant) == {1: False}


async def test_too_few_samples_train_nothing_and_the_server_tries_again_later(tmp_path: Path) -> None:
    async for server in start(make_settings(tmp_path, "memory://", dictionary_after_changes=20)):
        store = server.app.state.store
        tenant = await server.tenant()
        installed, too_few = trainings("installed"), trainings("too_few_samples")
        await fill(server, tenant, 1, 25)  # 25 changes and 25 entities: fewer samples than training needs
        await asyncio.sleep(0.3)
        assert await dictionary_versions(store, tenant) == {1: False}
        await fill(server, tenant, 26, 20)  # not yet twice the log of the failed try
        await asyncio.sleep(0.3)
        assert await dictionary_versions(store, tenant) == {1: False}
        await fill(server, tenant, 46, 60)
        await wait_for_version(store, tenant, 2)
        for _ in range(200):  # the counter moves just after the rotation is stored
            if trainings("installed") == installed + 1:
                break
            await asyncio.sleep(0.025)
        assert trainings("installed") == installed + 1
        assert trainings("too_few_samples") == too_few + 1


async def test_a_tampered_dictionary_costs_its_own_rows_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "sync.db"
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{db}", dictionary_after_changes=AFTER)
    async for server in start(settings):
        tenant = await server.tenant()
        await fill(server, tenant, 1, AFTER + 10)
        await wait_for_version(server.app.state.store, tenant, 2)
        await fill(server, tenant, AFTER + 11, 40)
        with pytest.raises(RuntimeError, match="compression dictionary"):
            await downgrade(settings.database_url, "0007_compact_log")

    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT dictionary FROM tenant_keys WHERE version = 2").fetchone()
        tampered = bytearray(blob)
        tampered[40] ^= 1
        conn.execute("UPDATE tenant_keys SET dictionary = ? WHERE version = 2", (bytes(tampered),))

    async for server in start(settings):
        store: Store = server.app.state.store
        keyring: TenantKeyring = server.app.state.keyring
        keys_log = logging.getLogger("syncserver.keys")
        keys_log.addHandler(caplog.handler)  # the app's logging config does not propagate to the root
        try:
            cipher = await keyring.cipher(tenant)
            assert cipher.dictionary(2) is None
            assert "compression dictionary does not open" in caplog.text
            rows = await store.pull(tenant, 0, 10_000)
            opened = failed = 0
            for row in rows:
                try:
                    payloads.open_entity(cipher, row)
                    opened += 1
                except DecryptionError:
                    failed += 1
            assert opened >= AFTER - 10, (opened, failed)  # version 1's rows still read
            assert failed >= 40, (opened, failed)
            # The server answers, setting the unreadable entities aside (quarantine), not failing the tenant.
            state, _ = await server.pull_all(server.headers(tenant, "boss"))
            assert len(state) == opened

        finally:
            keys_log.removeHandler(caplog.handler)
