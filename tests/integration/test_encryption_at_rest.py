"""Values never appear in plaintext in the database; ciphertext moved to another row fails."""

from __future__ import annotations

import base64
import sqlite3
import uuid
from pathlib import Path

import pytest
from pycrdt import Doc

from syncproto.crdt.text import splice
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.providers import LocalKeyProvider
from tests.integration.conftest import Server, change

TABLES = ["tenants", "tenant_keys", "replicas", "entities", "changes", "conflicts", "dead_letters"]

BY_TENANT = "tenant_no = (SELECT no FROM tenants WHERE id = ?)"
"""A tenant's rows of ``entities``, which names the tenant by number (ADR 0033)."""


def _markers() -> dict[str, str]:
    return {k: f"{k}-{uuid.uuid4().hex}" for k in ("status", "other", "scanned", "notes", "trail", "dead", "log2")}


async def _push_secrets(server: Server, tenant: str, m: dict[str, str]) -> None:
    a = server.headers(tenant, "driver-1")
    b = server.headers(tenant, "driver-2")
    notes = base64.b64encode(splice(Doc(), 0, 0, m["notes"])).decode()
    await server.push(
        a,
        "phone-a",
        [
            change(
                1,
                "dlv-1",
                [
                    {"op": "set", "field": "status", "value": m["status"]},
                    {"op": "add", "field": "scanned", "value": m["scanned"]},
                    {"op": "text", "field": "notes", "update": notes},
                    {"op": "append", "field": "trail", "value": {"label": m["trail"]}},
                ],
            ),
            change(
                2,
                "dlv-1",
                [
                    {"op": "inc", "field": "status", "by": 1},
                ],
            ),  # rejected: a dead letter
        ],
    )
    # A concurrent write: the conflict log holds both values.
    await server.push(b, "phone-b", [change(1, "dlv-1", [{"op": "set", "field": "status", "value": m["other"]}])])
    await server.push(b, "phone-b", [change(2, "dlv-1", [{"op": "append", "field": "status", "value": m["dead"]}])])


@pytest.fixture
def durable(backend_url: str) -> str:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps nothing at rest")
    return backend_url


async def _raw_bytes(server: Server, url: str) -> bytes:
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    out = []
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        for table in TABLES:
            cur = await conn.execute(f"SELECT t::text FROM {table} t")
            out += [row[0].encode() for row in await cur.fetchall()]
    raw = b"\n".join(out)
    # bytea renders as hex in ::text; decode those too so a plaintext payload would show.
    hexes = [bytes.fromhex(h.decode()) for h in __import__("re").findall(rb"\\\\x([0-9a-f]+)", raw)]
    return raw + b"".join(hexes)


async def test_pushed_values_never_appear_in_the_database(server: Server, durable: str) -> None:
    tenant = await server.tenant()
    m = _markers()
    await _push_secrets(server, tenant, m)
    conflicts = (await server.client.get("/v1/conflicts", headers=server.headers(tenant, "d", "dispatcher"))).json()
    assert {v["value"] for v in conflicts["conflicts"][0]["values"]} == {m["status"], m["other"]}
    assert len(await server.app.state.store.dead_letters(tenant, 10)) == 2
    raw = await _raw_bytes(server, durable)
    assert tenant.encode() in raw  # the scan does see the rows
    for name, marker in m.items():
        assert marker.encode() not in raw, f"{name} value found in plaintext at rest"


async def test_ciphertext_moved_to_another_row_or_tenant_fails_to_decrypt(sqlite_server: Server) -> None:
    server = sqlite_server
    t1, t2 = await server.tenant(), await server.tenant()
    for t in (t1, t2):
        h = server.headers(t, "driver-1")
        await server.push(
            h,
            "phone-1",
            [
                change(1, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}]),
                change(2, "dlv-2", [{"op": "set", "field": "status", "value": "failed"}]),
            ],
        )
    path = server.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        (blob,) = db.execute(
            f"SELECT state FROM entities WHERE {BY_TENANT} AND entity_id='dlv-1'",
            (t1,),
        ).fetchone()
        db.execute(f"UPDATE entities SET state=? WHERE {BY_TENANT} AND entity_id='dlv-2'", (blob, t1))
        db.execute(f"UPDATE entities SET state=? WHERE {BY_TENANT} AND entity_id='dlv-1'", (blob, t2))

    for tenant, entity in ((t1, "dlv-2"), (t2, "dlv-1")):
        r = await server.client.get(f"/v1/entities/deliveries/{entity}", headers=server.headers(tenant, "driver-1"))
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "data_integrity"
        assert "pending" not in r.text
    # The untouched row still opens.
    r = await server.client.get("/v1/entities/deliveries/dlv-1", headers=server.headers(t1, "driver-1"))
    assert r.json()["fields"]["status"]["value"] == "pending"

    # Directly: the cipher names what went wrong.
    keyring: TenantKeyring = server.app.state.keyring
    cipher = await keyring.cipher(t1)
    version, sealed = cipher.seal("entities", "deliveries/dlv-1", b"secret")
    with pytest.raises(DecryptionError, match="does not belong to this row"):
        cipher.open("entities", "deliveries/dlv-2", version, sealed)
    with pytest.raises(DecryptionError):
        (await keyring.cipher(t2)).open("entities", "deliveries/dlv-1", version, sealed)


async def test_a_wrong_master_key_cannot_unwrap_tenant_keys(sqlite_server: Server) -> None:
    server = sqlite_server
    tenant = await server.tenant()
    other = TenantKeyring(server.app.state.store, LocalKeyProvider(b"\x01" * 32))
    from syncserver.keys.providers import KeyProviderError

    with pytest.raises(KeyProviderError):
        await other.cipher(tenant)
