"""Key lifecycle over the admin API and ``KeyOps``: rotate, re-encrypt, rotate the master key, erase, export."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from syncproto.schema import Schema
from syncserver.admin.tenants import TenantRecentlyErased, create_tenant
from syncserver.keys.envelope import DecryptionError, open_sealed, row_aad
from syncserver.keys.keyring import TenantKeyring, wrap_aad
from syncserver.keys.operations import KeyOps
from syncserver.keys.providers import KeyProviderError, LocalKeyProvider
from syncserver.settings import Limits
from syncserver.sync import payloads
from syncserver.sync.pull import PullService
from syncstore import AdminStore, KeyStore, Store, TenantNotFound
from syncstore.keystore import SEALED_COLUMN, SEALED_TABLES
from tests.integration.conftest import Server, change


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


async def fill(server: Server, tenant: str, n: int = 6, replica: str = "web-1", start: int = 1) -> None:
    """``n`` entities, a conflict, and a dead letter."""
    h = server.headers(tenant, "boss")
    changes = [change(start + i, f"dlv-{i}", [set_("status", "pending"), set_("note", f"n{i}")]) for i in range(n)]
    changes.append(change(start + n, "dlv-0", [{"op": "inc", "field": "status", "by": 1}]))  # a dead letter
    await server.push(h, replica, changes)
    await server.push(h, replica + "-b", [change(1, "dlv-0", [set_("status", "failed")], {})])  # a conflict


async def everything(server: Server, tenant: str) -> Any:
    state, _ = await server.pull_all(server.headers(tenant, "boss"))
    conflicts = (await server.client.get("/v1/conflicts", headers=server.headers(tenant, "boss"))).json()
    return state, conflicts


async def usage(server: Server, tenant: str) -> dict[str, dict[int, int]]:
    store = server.app.state.store
    assert isinstance(store, KeyStore)
    return await store.key_usage(tenant)


async def audit(server: Server, tenant: str | None) -> list[tuple[str, dict[str, Any]]]:
    store = server.app.state.store
    assert isinstance(store, AdminStore)
    return [(a.action, msgspec.json.decode(a.details)) for a in reversed(await store.audit_log(tenant, None, 100))]


async def test_rotate_then_reencrypt_in_resumable_steps_then_destroy_the_old_version(server: Server) -> None:
    tenant = await server.tenant()
    admin = server.headers(tenant, "ops", "admin")
    await fill(server, tenant)
    before = await everything(server, tenant)

    r = await server.client.post("/v1/admin/keys/rotate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"tenant": tenant, "version": 2, "previous": 1, "dictionary": False}
    # New writes use version 2 at once; rows under version 1 still decrypt.
    await server.push(server.headers(tenant, "boss"), "web-1", [change(8, "dlv-new", [set_("status", "pending")])])
    assert (await usage(server, tenant))["entities"] == {1: 6, 2: 1}
    state, conflicts = await everything(server, tenant)
    assert conflicts == before[1]
    assert [e for e in state if e["entity"] != "dlv-new"] == before[0]

    status = (await server.client.get("/v1/admin/keys", headers=admin)).json()
    assert [(v["version"], v["state"]) for v in status["versions"]] == [(1, "retired"), (2, "active")]
    counts = await usage(server, tenant)
    assert status["stale_rows"] == sum(counts[t].get(1, 0) for t in SEALED_TABLES)

    # Re-encrypt a few rows per call, as a cautious operator would; every call resumes where the last stopped.
    calls = 0
    while True:
        calls += 1
        r = await server.client.post("/v1/admin/keys/reencrypt?max_rows=4&batch_size=2", headers=admin)
        assert r.status_code == 200, r.text
        if r.json()["remaining"] == 0:
            break
    assert calls > 2
    assert all(set(versions) <= {2} for versions in (await usage(server, tenant)).values())
    state, conflicts = await everything(server, tenant)
    assert conflicts == before[1]
    assert [e for e in state if e["entity"] != "dlv-new"] == before[0]

    assert (await server.client.post("/v1/admin/keys/2/destroy", headers=admin)).status_code == 409
    # Servers that cached version 1 before the rotation may still seal rows under it until their cache
    # expires: destroying it now would make rows they acknowledged unreadable.
    ops = server.app.state.services.key_ops
    assert ops.settle_ms == server.settings.key_cache_ttl_s * 1000 > 0
    early = await server.client.post("/v1/admin/keys/1/destroy", headers=admin)
    assert early.status_code == 409
    assert "SYNC_KEY_CACHE_TTL_S" in early.json()["error"]["message"]
    rotated_at = max(k.created_at for k in await server.app.state.store.tenant_keys(tenant))
    real_clock = ops.clock
    ops.clock = lambda: rotated_at + ops.settle_ms  # every server's cache has expired since the rotation
    try:
        r = await server.client.post("/v1/admin/keys/1/destroy", headers=admin)
    finally:
        ops.clock = real_clock
    assert r.json() == {"destroyed": 1}
    assert (await everything(server, tenant)) == (state, conflicts)
    actions = [a for a, _ in await audit(server, tenant)]
    assert actions == ["key.rotate"] + ["key.reencrypt", "key.reencrypt"] * calls + ["key.destroy"]


async def test_another_process_reads_rows_under_a_new_version_at_once(server: Server) -> None:
    tenant = await server.tenant()
    await fill(server, tenant)
    store: Store = server.app.state.store
    # A second process: its own keyring, its cache warm with version 1 only.
    other = TenantKeyring(store, server.app.state.key_provider, ttl_s=3600)
    assert (await other.cipher(tenant)).current_version == 1
    pull = PullService(store, other, server.app.state.schema, Limits())

    admin = server.headers(tenant, "ops", "admin")
    assert (await server.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
    assert (await server.client.post("/v1/admin/keys/reencrypt", headers=admin)).json()["remaining"] == 0
    view = await pull.entity(_principal(tenant), "deliveries", "dlv-1")
    assert view.fields["note"].value == "n1"
    assert (await other.cipher(tenant)).current_version == 2


def _principal(tenant: str) -> Any:
    from syncserver.auth.tokens import Principal

    return Principal(tenant, "boss", "dispatcher")


async def test_only_admins_reach_key_endpoints_and_only_for_their_own_tenant(server: Server) -> None:
    tenant, other = await server.tenant(), await server.tenant()
    driver = server.headers(tenant, "d", "driver", ("driver:d",))
    for headers in (driver, server.headers(tenant, "boss", "dispatcher")):
        for method, path in (
            ("GET", "/v1/admin/keys"),
            ("POST", "/v1/admin/keys/rotate"),
            ("POST", "/v1/admin/keys/reencrypt"),
            ("POST", "/v1/admin/keys/1/destroy"),
            ("POST", f"/v1/admin/tenant/erase?confirm={tenant}"),
            ("GET", "/v1/admin/users/d/export"),
        ):
            r = await server.client.request(method, path, headers=headers)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "forbidden"
    assert (await server.client.post("/v1/admin/keys/rotate", headers=server.headers(tenant, "a", "admin"))).is_success
    assert [k.version for k in await server.app.state.store.tenant_keys(tenant)] == [1, 2]
    assert [k.version for k in await server.app.state.store.tenant_keys(other)] == [1]
    r = await server.client.post(
        f"/v1/admin/tenant/erase?confirm={other}", headers=server.headers(tenant, "a", "admin")
    )
    assert r.status_code == 409
    assert await server.app.state.store.get_tenant(other) is not None


async def test_export_returns_every_change_of_one_user_decrypted(server: Server) -> None:
    tenant = await server.tenant()
    mine = server.headers(tenant, "d-17")
    await server.push(
        mine,
        "phone-17",
        [
            change(1, "dlv-1", [set_("status", "delivered"), {"op": "inc", "field": "cod_cents", "by": 1250}]),
            change(2, "dlv-1", [{"op": "inc", "field": "status", "by": 1}]),  # rejected: a dead letter
        ],
    )
    await server.push(server.headers(tenant, "d-42"), "phone-42", [change(1, "dlv-1", [set_("status", "failed")])])
    r = await server.client.get("/v1/admin/users/d-17/export", headers=server.headers(tenant, "ops", "admin"))
    assert r.status_code == 200
    export = r.json()
    assert (export["tenant"], export["sub"], export["replicas"]) == (tenant, "d-17", ["phone-17"])
    assert [(c["replica"], c["n"], c["entity"]) for c in export["changes"]] == [("phone-17", 1, "dlv-1")]
    assert export["changes"][0]["ops"] == [
        {"op": "set", "field": "status", "value": "delivered"},
        {"op": "inc", "field": "cod_cents", "by": 1250},
    ]
    assert [(d["n"], d["code"]) for d in export["dead_letters"]] == [(2, "kind_mismatch")]
    assert export["dead_letters"][0]["change"]["ops"] == [{"op": "inc", "field": "status", "by": 1}]
    assert "failed" not in r.text  # d-42's write is not d-17's data
    # Audited before the first byte left (a stream can be cut off), then with the counts after the last.
    entries = await audit(server, tenant)
    assert entries[-2:] == [("user.export", {"phase": "start"}), ("user.export", {"changes": 1, "dead_letters": 1})]
    assert [e for e in entries if e[0] == "user.export"] == entries[-2:]


def _raw(url: str) -> bytes:
    path = Path(url.split(":///", 1)[1])
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


_BY_NUMBER = "tenant_no = (SELECT no FROM tenants WHERE id = ?)"
_TENANT = {t: _BY_NUMBER if t in ("changes", "entities") else "tenant_id = ?" for t in SEALED_TABLES}
"""Each sealed table's rows of one tenant (the log and the entities name it by number, ADR 0033)."""


def _cells(url: str, tenant: str) -> list[bytes]:
    path = url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        return [
            bytes(blob)
            for table in SEALED_TABLES
            for (blob,) in db.execute(f"SELECT {SEALED_COLUMN[table]} FROM {table} WHERE {_TENANT[table]}", (tenant,))
        ]


def _wrapped(url: str, tenant: str) -> list[tuple[int, bytes]]:
    with sqlite3.connect(url.split(":///", 1)[1]) as db:
        return [
            (v, bytes(w))
            for v, w in db.execute("SELECT version, wrapped FROM tenant_keys WHERE tenant_id=?", (tenant,))
        ]


async def test_master_key_rotation_rewraps_every_key_and_touches_no_payload(sqlite_server: Server) -> None:
    server = sqlite_server
    url = server.settings.database_url
    tenants = [await server.tenant(), await server.tenant()]
    for t in tenants:
        await fill(server, t)
    await server.client.post("/v1/admin/keys/rotate", headers=server.headers(tenants[0], "ops", "admin"))
    before_cells = {t: _cells(url, t) for t in tenants}
    before_keys = {t: _wrapped(url, t) for t in tenants}
    before_state = {t: await everything(server, t) for t in tenants}

    old = server.settings.master_key
    assert old is not None
    new = base64.b64encode(secrets.token_bytes(32)).decode()
    rotating = LocalKeyProvider.from_b64(new, [old])
    store: Store = server.app.state.store
    ops = KeyOps(store, TenantKeyring(store, rotating), rotating, Schema())
    result = await ops.rotate_master("test")
    assert (result.rewrapped, result.master_key_id) == (3, rotating.key_id)
    assert (await ops.rotate_master("test")).rewrapped == 0  # resumable: nothing left to do

    for t in tenants:
        assert _cells(url, t) == before_cells[t]  # no payload touched
        after = _wrapped(url, t)
        assert [v for v, _ in after] == [v for v, _ in before_keys[t]]
        assert all(a != b for (_, a), (_, b) in zip(after, before_keys[t], strict=True))
    assert {k.master_key_id for t in tenants for k in await store.tenant_keys(t)} == {rotating.key_id}

    # The new master key alone now serves every tenant; the old one alone serves none.
    only_new = LocalKeyProvider.from_b64(new)
    server.app.state.keyring._provider = only_new
    server.app.state.keyring.forget()
    for t in tenants:
        assert await everything(server, t) == before_state[t]
    only_old = TenantKeyring(store, LocalKeyProvider.from_b64(old))
    with pytest.raises(KeyProviderError):
        await only_old.cipher(tenants[0])
    assert ("master_key.rotate", {"to": rotating.key_id, "tenants": 2, "rewrapped": 3}) in await audit(server, None)


async def test_an_erased_tenants_leftover_bytes_cannot_be_decrypted(sqlite_server: Server, tmp_path: Path) -> None:
    server = sqlite_server
    url = server.settings.database_url
    store: Store = server.app.state.store
    assert isinstance(store, KeyStore)
    doomed, kept = await server.tenant(), await server.tenant()
    for t in (doomed, kept):
        await fill(server, t)
    # Every ciphertext cell of the doomed tenant, with what binds it (table, row, key version).
    cells = [
        r
        for table in SEALED_TABLES
        for r in await store.sealed_rows(doomed, table, not_version=0, after=None, limit=99)
    ]
    assert len(cells) > 10
    ((version, wrapped),) = _wrapped(url, doomed)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(url.split(":///", 1)[1]) as db, sqlite3.connect(backup) as copy:
        db.backup(copy)

    admin = server.headers(doomed, "ops", "admin")
    assert (await server.client.post("/v1/admin/tenant/erase?confirm=wrong", headers=admin)).status_code == 409
    r = await server.client.post(f"/v1/admin/tenant/erase?confirm={doomed}", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["keys_destroyed"] == 1
    assert r.json()["rows_deleted"]["entities"] == 6

    raw = _raw(url)
    assert wrapped not in raw  # the data key is gone from the file and its WAL, not just unlinked
    with pytest.raises(TenantNotFound):
        await server.app.state.keyring.cipher(doomed)
    provider: LocalKeyProvider = server.app.state.key_provider
    with sqlite3.connect(url.split(":///", 1)[1]) as db:
        remaining = [(t, v, bytes(w)) for t, v, w in db.execute("SELECT tenant_id, version, wrapped FROM tenant_keys")]
    assert {t for t, _, _ in remaining} == {kept}
    # No data key the database still holds opens any of those cells, left on disk or not.
    keys = [AESGCM(provider.unwrap(w, wrap_aad(t, v))) for t, v, w in remaining]
    for cell in cells:
        aad = row_aad(doomed, cell.table, payloads.sealed_row_id(cell.table, cell.names), cell.key_version)
        for key in keys:
            with pytest.raises(DecryptionError):
                open_sealed(key, cell.blob, aad)
    # The other tenant is untouched; the erased one is gone from the API.
    assert (await everything(server, kept))[0]
    r = await server.client.post("/v1/sync/pull", json={}, headers=server.headers(doomed, "boss"))
    assert r.json()["error"]["code"] == "tenant_unknown"
    assert [(a, d.get("phase")) for a, d in await audit(server, doomed)] == [
        ("tenant.erase", "start"),
        ("tenant.erase", "done"),
    ]
    # Its id cannot be reused while a server may still hold the destroyed keys in its cache: rows of a new
    # tenant sealed there under them would be acknowledged and unreadable.
    keyring: TenantKeyring = server.app.state.keyring
    assert keyring.ttl_s > 0
    with pytest.raises(TenantRecentlyErased, match="SYNC_KEY_CACHE_TTL_S"):
        await create_tenant(store, keyring, doomed)
    assert await store.get_tenant(doomed) is None
    assert (await create_tenant(store, TenantKeyring(store, provider, ttl_s=0), doomed)).id == doomed  # no cache

    # A backup taken before the erasure still holds the wrapped key, which today's master key opens.
    # Rotating the master key and destroying the old one is what shreds such copies (docs/security.md).
    with sqlite3.connect(backup) as copy:
        (old_wrapped,) = copy.execute("SELECT wrapped FROM tenant_keys WHERE tenant_id=?", (doomed,)).fetchone()
    assert len(provider.unwrap(bytes(old_wrapped), wrap_aad(doomed, version))) == 32
    with pytest.raises(KeyProviderError):
        LocalKeyProvider(secrets.token_bytes(32)).unwrap(bytes(old_wrapped), wrap_aad(doomed, version))
