"""Bad input gets a 4xx with a stable code, and nothing already stored changes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from syncserver.settings import Limits
from tests.integration.conftest import Server, change, make_settings, start


@pytest.fixture
async def small_server(backend_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    limits = Limits(max_body_bytes=64 * 1024, max_changes_per_push=50, max_value_bytes=1024, max_ops_per_change=5)
    async for s in start(make_settings(tmp_path, backend_url, limits=limits)):
        yield s


GOOD = change(1, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}])


def bad_bodies() -> list[tuple[str, bytes, int, str]]:
    import json

    def body(**overrides: object) -> bytes:
        c = {**GOOD, "n": 2, **overrides}
        return json.dumps({"replica": "phone-1", "changes": [c]}).encode()

    return [
        ("malformed json", b'{"replica": "phone-1", "changes": [', 400, "malformed_json"),
        ("not an object", b"[1, 2, 3]", 422, "invalid_request"),
        ("n is a string", body(n="2"), 422, "invalid_request"),
        ("hlc has three parts", body(hlc=[1, 2, 3]), 422, "invalid_request"),
        ("negative counter", body(n=-1), 422, "invalid_request"),
        ("unknown op", body(ops=[{"op": "frobnicate", "field": "status"}]), 422, "unknown_op"),
        ("unknown field on a change", body(extra=1), 422, "invalid_request"),
        ("bad entity id", body(entity="../../etc/passwd"), 422, "invalid_request"),
        (
            "oversized body",
            b'{"replica": "phone-1", "changes": [], "pad": "' + b"x" * 70_000 + b'"}',
            413,
            "body_too_large",
        ),
        (
            "too many changes",
            __import__("json").dumps({"replica": "phone-1", "changes": [GOOD] * 51}).encode(),
            413,
            "too_many_changes",
        ),
    ]


async def _snapshot(server: Server, tenant: str) -> object:
    h = server.headers(tenant, "driver-1")
    state, _ = await server.pull_all(h)
    record = await server.app.state.store.get_tenant(tenant)
    conflicts = await server.app.state.store.conflicts(tenant, None, 100)
    dead = await server.app.state.store.dead_letters(tenant, 100)
    return state, record.last_seq, len(conflicts), len(dead)


async def test_bad_bodies_get_stable_codes_and_change_nothing(small_server: Server) -> None:
    server = small_server
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    assert (await server.push(h, "phone-1", [GOOD]))[0]["status"] == "applied"
    before = await _snapshot(server, tenant)
    for name, raw, status, code in bad_bodies():
        r = await server.client.post("/v1/sync/push", content=raw, headers={**h, "Content-Type": "application/json"})
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["code"] == code, name
        assert "Traceback" not in r.text
    assert await _snapshot(server, tenant) == before


async def test_per_change_limits_reject_only_that_change(small_server: Server) -> None:
    server = small_server
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    res = await server.push(
        h,
        "phone-1",
        [
            change(1, "dlv-1", [{"op": "set", "field": "status", "value": "x" * 5000}]),
            change(2, "dlv-1", [{"op": "set", "field": f"f{i}", "value": i} for i in range(6)]),
            change(3, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}]),
        ],
    )
    assert [r["status"] for r in res] == ["rejected", "rejected", "applied"]
    assert [r.get("error", {}).get("code") for r in res] == ["value_too_large", "too_many_ops", None]


@pytest.mark.parametrize("problem", ["missing", "not bearer", "forged", "expired", "wrong audience", "alg none"])
async def test_bad_tokens_are_refused(small_server: Server, problem: str) -> None:
    server = small_server
    tenant = await server.tenant()
    secret = server.settings.jwt_secret
    assert secret is not None
    now = int(time.time())
    claims = {"iss": "syncserver", "aud": "sync", "exp": now + 60, "tid": tenant, "sub": "d", "role": "driver"}
    tokens = {
        "missing": None,
        "not bearer": "Basic abc",
        "forged": "Bearer " + jwt.encode(claims, "another-secret-of-sufficient-length!!", algorithm="HS256"),
        "expired": "Bearer " + jwt.encode({**claims, "exp": now - 3600}, secret, algorithm="HS256"),
        "wrong audience": "Bearer " + jwt.encode({**claims, "aud": "other"}, secret, algorithm="HS256"),
        "alg none": "Bearer " + jwt.encode(claims, None, algorithm="none"),
    }
    header = tokens[problem]
    headers = {"Authorization": header} if header else {}
    r = await server.client.post("/v1/sync/pull", json={"cursor": None}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == ("token_expired" if problem == "expired" else "unauthorized")


async def test_a_token_for_an_unknown_tenant_is_refused(small_server: Server) -> None:
    h = small_server.headers("no-such-tenant", "driver-1")
    r = await small_server.client.post("/v1/sync/pull", json={"cursor": None}, headers=h)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "tenant_unknown"
    r = await small_server.client.post("/v1/sync/push", json={"replica": "p", "changes": [GOOD]}, headers=h)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "tenant_unknown"


async def test_a_replica_id_cannot_be_hijacked_by_another_user(small_server: Server) -> None:
    server = small_server
    tenant = await server.tenant()
    await server.push(server.headers(tenant, "driver-1"), "phone-1", [GOOD])
    r = await server.client.post(
        "/v1/sync/push",
        json={"replica": "phone-1", "changes": [{**GOOD, "n": 2}]},
        headers=server.headers(tenant, "driver-2"),
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "replica_forbidden"


async def test_a_database_outage_answers_503_with_retry_after(small_server: Server) -> None:
    import sqlalchemy.exc

    server = small_server
    tenant = await server.tenant()
    store = server.app.state.store

    async def down(*args: object, **kwargs: object) -> None:
        raise sqlalchemy.exc.TimeoutError("QueuePool limit reached")

    original = store.get_tenant
    store.get_tenant = down
    try:
        r = await server.client.post("/v1/sync/pull", json={"cursor": None}, headers=server.headers(tenant, "d"))
    finally:
        store.get_tenant = original
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "unavailable"
