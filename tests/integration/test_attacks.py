"""The attack suite: crossing tenants, bad tokens, drivers overreaching. Each must fail loudly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.conftest import Server, change, make_settings, start

BY_TENANT = "tenant_no = (SELECT no FROM tenants WHERE id = ?)"
"""A tenant's rows of ``entities``, which names the tenant by number (ADR 0033)."""


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


async def two_tenants(server: Server) -> tuple[str, str, dict[str, str], dict[str, str], Any]:
    """Tenants A and B, each with dlv-1 (B's has a conflict); returns B's cursor, conflict id and state."""
    a, b = await server.tenant("a"), await server.tenant("b")
    ha, hb = server.headers(a, "boss"), server.headers(b, "boss")
    await server.push(ha, "web-1", [change(1, "dlv-a", [set_("status", "pending")])])
    await server.push(hb, "web-1", [change(1, "dlv-1", [set_("status", "b-secret")])])
    await server.push(hb, "web-2", [change(1, "dlv-1", [set_("status", "b-other")])])
    state, cursor = await server.pull_all(hb)
    conflict = (await server.client.get("/v1/conflicts", headers=hb)).json()["conflicts"][0]["id"]
    return a, b, ha, hb, (cursor, conflict, state)


async def test_a_token_of_tenant_a_never_reaches_tenant_b(server: Server) -> None:
    a, b, ha, hb, (b_cursor, b_conflict, b_state) = await two_tenants(server)

    r = await server.client.get("/v1/entities/deliveries/dlv-1", headers=ha)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = await server.client.post("/v1/sync/pull", json={"cursor": b_cursor}, headers=ha)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor")
    r = await server.client.get(f"/v1/conflicts/{b_conflict}", headers=ha)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert (await server.client.get("/v1/conflicts", headers=ha)).json()["conflicts"] == []
    a_view, _ = await server.pull_all(ha)
    assert [e["entity"] for e in a_view] == ["dlv-a"]
    # Writing to B's entity id with A's token writes A's own entity of that id; B's is untouched.
    await server.push(ha, "web-1", [change(2, "dlv-1", [set_("status", "from-a")])])
    assert (await server.pull_all(hb))[0] == b_state
    # B's user, exported by A's admin: only what that sub did in A.
    export = (await server.client.get("/v1/admin/users/boss/export", headers=server.headers(a, "ops", "admin"))).json()
    assert export["tenant"] == a
    assert "b-secret" not in json.dumps(export)
    assert b != a


async def test_ciphertext_swapped_between_tenants_fails_its_integrity_check(sqlite_server: Server) -> None:
    server = sqlite_server
    a, b, ha, hb, (_, b_conflict, _) = await two_tenants(server)
    await server.push(ha, "web-2", [change(1, "dlv-a", [set_("status", "a-other")])])
    a_conflict = (await server.client.get("/v1/conflicts", headers=ha)).json()["conflicts"][0]["id"]
    path = server.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        (state,) = db.execute(
            f"SELECT state FROM entities WHERE {BY_TENANT} AND entity_id='dlv-1'",
            (b,),
        ).fetchone()
        db.execute(f"UPDATE entities SET state=? WHERE {BY_TENANT} AND entity_id='dlv-a'", (state, a))
        (details,) = db.execute("SELECT details FROM conflicts WHERE tenant_id=?", (b,)).fetchone()
        db.execute("UPDATE conflicts SET details=? WHERE tenant_id=?", (details, a))
    for path_ in ("/v1/entities/deliveries/dlv-a", f"/v1/conflicts/{a_conflict}"):
        r = await server.client.get(path_, headers=ha)
        assert (r.status_code, r.json()["error"]["code"]) == (500, "data_integrity"), path_
        assert "b-secret" not in r.text
    # The pull goes on for the tenant's other entities and names the swapped one; nothing of B leaks.
    r = await server.client.post("/v1/sync/pull", json={}, headers=ha)
    assert r.status_code == 200
    assert [u["entity"] for u in r.json()["unavailable"]] == ["dlv-a"]
    assert "dlv-a" not in [e["entity"] for e in r.json()["changes"]]
    assert "b-secret" not in r.text
    assert (await server.client.get(f"/v1/conflicts/{b_conflict}", headers=hb)).status_code == 200


async def test_drivers_cannot_widen_their_scope_or_reach_admin_endpoints(server: Server) -> None:
    tenant = await server.tenant()
    await server.push(
        server.headers(tenant, "boss"),
        "web-1",
        [change(1, "dlv-a", [set_("driver_id", "d-a")]), change(2, "dlv-b", [set_("driver_id", "d-b")])],
    )
    driver = server.headers(tenant, "d-a", "driver", ("driver:d-a",))
    # A token claiming another driver's channel, not signed by this server's key.
    claims = {
        "iss": "syncserver",
        "aud": "sync",
        "exp": int(time.time()) + 60,
        "tid": tenant,
        "sub": "d-a",
        "role": "driver",
        "ch": ["driver:d-a", "driver:d-b"],
    }
    forged = {"Authorization": "Bearer " + jwt.encode(claims, "a-guessed-secret-of-sufficient-length", "HS256")}
    r = await server.client.post("/v1/sync/pull", json={}, headers=forged)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    pulled, _ = await server.pull_all(driver)
    assert [e["entity"] for e in pulled] == ["dlv-a"]
    for method, path in (
        ("GET", "/v1/admin/keys"),
        ("POST", "/v1/admin/keys/rotate"),
        ("GET", "/v1/admin/conflicts"),
        ("GET", "/v1/admin/dead-letters"),
        ("GET", "/v1/admin/users/d-b/export"),
    ):
        r = await server.client.request(method, path, headers=driver)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), path


# --- a server that verifies RS256 tokens from a public-key file ---------------------------------------


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def rs_server(tmp_path: Path, idp_key: rsa.RSAPrivateKey) -> AsyncIterator[Server]:
    pem = idp_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "idp.pem").write_bytes(pem)
    settings = make_settings(
        tmp_path, "memory://", jwt_secret=None, jwt_public_key_file=tmp_path / "idp.pem", jwt_issuer="https://idp"
    )
    async for s in start(settings):
        yield s


def forge_hs256(key: bytes, claims: dict[str, Any]) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize(
    "problem",
    ["valid", "expired", "wrong audience", "wrong issuer", "alg none", "hs/rs confusion", "other key", "hs256"],
)
async def test_bad_tokens_against_an_rs256_deployment(
    rs_server: Server, idp_key: rsa.RSAPrivateKey, tmp_path: Path, problem: str
) -> None:
    server = rs_server
    tenant = await server.tenant()
    now = int(time.time())
    claims = {"iss": "https://idp", "aud": "sync", "exp": now + 60, "tid": tenant, "sub": "ops", "role": "dispatcher"}
    public_pem = (tmp_path / "idp.pem").read_bytes()
    tokens = {
        "valid": jwt.encode(claims, idp_key, algorithm="RS256"),
        "expired": jwt.encode({**claims, "exp": now - 3600}, idp_key, algorithm="RS256"),
        "wrong audience": jwt.encode({**claims, "aud": "other"}, idp_key, algorithm="RS256"),
        "wrong issuer": jwt.encode({**claims, "iss": "https://evil"}, idp_key, algorithm="RS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "hs/rs confusion": forge_hs256(public_pem, claims),
        "other key": jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        "hs256": jwt.encode(claims, "any-secret-an-attacker-might-try-1234567", algorithm="HS256"),
    }
    r = await server.client.post("/v1/sync/pull", json={}, headers={"Authorization": f"Bearer {tokens[problem]}"})
    if problem == "valid":
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 401
    assert r.json()["error"]["code"] == ("token_expired" if problem == "expired" else "unauthorized")
