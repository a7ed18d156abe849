"""The admin API on every store backend: conflicts, overrides, history, dead letters, audit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from tests.integration.conftest import Server, change

NOW = int(time.time() * 1000)


DEPOT = {"op": "set", "field": "depot", "value": "dxb"}
"""Puts a delivery in channel ``depot:dxb``, which the drivers' tokens hold."""


def driver(server: Server, tenant: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.verifier.issue(tenant, sub, 'driver', ('depot:dxb',))}"}


async def offline_conflict(server: Server, tenant: str, entity: str = "dlv-123", n: int = 1) -> dict[str, str]:
    """Two drivers edit one delivery offline (their ``n``-th changes); returns the admin's headers."""
    a, b = driver(server, tenant, "driver-17"), driver(server, tenant, "driver-42")
    delivered = [DEPOT, {"op": "set", "field": "status", "value": "delivered"}]
    assert (await server.push(a, "phone-a", [change(n, entity, delivered, hlc=(NOW, 0))]))[0]["status"] == "applied"
    failed = [{"op": "set", "field": "status", "value": "failed"}]
    assert (await server.push(b, "phone-b", [change(n, entity, failed, hlc=(NOW + 5, 0))]))[0]["status"] == "applied"
    return server.headers(tenant, "ops@acme", "admin")


async def get(server: Server, path: str, headers: dict[str, str], expect: int = 200, **params: Any) -> Any:
    r = await server.client.get(path, headers=headers, params=params)
    assert r.status_code == expect, r.text
    return r.json()


async def post(server: Server, path: str, headers: dict[str, str], body: Any = None, expect: int = 200) -> Any:
    r = await server.client.post(path, headers=headers, json=body)
    assert r.status_code == expect, r.text
    return r.json()


async def test_admin_api_needs_the_admin_role(server: Server) -> None:
    tenant = await server.tenant()
    await offline_conflict(server, tenant)
    for role in ("driver", "dispatcher"):
        body = await get(server, "/v1/admin/conflicts", server.headers(tenant, "x", role), 403)  # type: ignore[arg-type]
        assert body["error"]["code"] == "forbidden"
    r = await server.client.get("/v1/admin/conflicts")
    assert r.status_code == 401


async def test_conflict_list_filters_and_shows_every_value_decrypted(server: Server) -> None:
    tenant = await server.tenant()
    admin = await offline_conflict(server, tenant)
    await offline_conflict(server, tenant, "dlv-999", n=2)

    page = await get(server, "/v1/admin/conflicts", admin, entity="dlv-123")
    assert [c["entity"] for c in page["conflicts"]] == ["dlv-123"]
    c = page["conflicts"][0]
    assert (c["field"], c["kind"], c["rule"], c["status"]) == ("status", "register", "precedence", "open")
    assert {(v["value"], v["user"], v["replica"]) for v in c["values"]} == {
        ("delivered", "driver-17", "phone-a"),
        ("failed", "driver-42", "phone-b"),
    }
    assert c["winner"]["value"] == "delivered"

    async def ids(**params: Any) -> list[str]:
        return [c["entity"] for c in (await get(server, "/v1/admin/conflicts", admin, **params))["conflicts"]]

    assert await ids() == ["dlv-123", "dlv-999"]
    assert await ids(user="driver-42") == ["dlv-123", "dlv-999"]
    assert await ids(replica="phone-a", field="status", kind="register", status="open") == ["dlv-123", "dlv-999"]
    assert await ids(user="driver-nobody") == []
    assert await ids(collection="other") == []
    assert await ids(kind="clock_skew") == []
    assert await ids(since="2000-01-01T00:00:00Z", until="2999-01-01T00:00:00") == ["dlv-123", "dlv-999"]
    assert await ids(until="2000-01-01T00:00:00Z") == []

    first = await get(server, "/v1/admin/conflicts", admin, limit=1)
    assert [c["entity"] for c in first["conflicts"]] == ["dlv-123"]
    second = await get(server, "/v1/admin/conflicts", admin, limit=1, after=first["next"])
    assert [c["entity"] for c in second["conflicts"]] == ["dlv-999"]
    assert second["next"] is None

    shown = await get(server, f"/v1/admin/conflicts/{c['id']}", admin)
    assert shown["current"]["value"] == "delivered"
    assert len(shown["current"]["siblings"]) == 2
    assert "override" not in shown
    missing = await get(server, "/v1/admin/conflicts/c999.0", admin, 404)
    assert missing["error"]["code"] == "not_found"


async def test_override_is_a_server_change_that_collapses_siblings_on_the_next_pull(server: Server) -> None:
    tenant = await server.tenant()
    admin = await offline_conflict(server, tenant)
    device = driver(server, tenant, "driver-17")
    before, cursor = await server.pull_all(device)
    assert len(before[0]["fields"]["status"]["siblings"]) == 2
    cid = (await get(server, "/v1/admin/conflicts", admin))["conflicts"][0]["id"]
    failed = next(
        i
        for i, v in enumerate((await get(server, f"/v1/admin/conflicts/{cid}", admin))["values"])
        if v["value"] == "failed"
    )

    result = await post(server, f"/v1/admin/conflicts/{cid}/override", admin, {"pick": failed})

    assert result["change"]["replica"] == "server:admin:ops@acme"
    c = result["conflict"]
    assert c["status"] == "overridden"
    assert c["override"]["actor"] == "ops@acme"
    assert c["override"]["change_seq"] == result["change"]["seq"]
    assert c["current"] == {"kind": "register", "value": "failed"}
    after, _ = await server.pull_all(device, cursor)
    assert after[0]["fields"] == {"status": {"kind": "register", "value": "failed"}}
    assert "server:admin:ops@acme" in after[0]["vv"]
    assert (await get(server, "/v1/admin/conflicts", admin, status="overridden"))["conflicts"][0]["id"] == cid
    audit = await get(server, "/v1/admin/audit", admin, target=cid)
    assert [(e["actor"], e["action"]) for e in audit["entries"]] == [("ops@acme", "conflict.override")]
    assert audit["entries"][0]["details"]["seq"] == result["change"]["seq"]


async def test_override_with_a_written_value_and_bad_choices(server: Server) -> None:
    tenant = await server.tenant()
    admin = await offline_conflict(server, tenant)
    cid = (await get(server, "/v1/admin/conflicts", admin))["conflicts"][0]["id"]

    for body in ({}, {"pick": 5}, {"pick": 0, "value": "x"}, {"value": "x", "field": "other"}):
        error = await post(server, f"/v1/admin/conflicts/{cid}/override", admin, body, 422)
        assert error["error"]["code"] == "invalid_request"
    assert (await post(server, f"/v1/admin/conflicts/{cid}/override", admin, {"colour": 1}, 422))["error"]
    result = await post(server, f"/v1/admin/conflicts/{cid}/override", admin, {"value": "out_for_delivery"})
    assert result["conflict"]["current"] == {"kind": "register", "value": "out_for_delivery"}
    entity = await get(server, "/v1/entities/deliveries/dlv-123", admin)
    assert entity["fields"]["status"] == {"kind": "register", "value": "out_for_delivery"}


async def test_clock_skew_is_a_fact_and_cannot_be_overridden(server: Server) -> None:
    tenant = await server.tenant()
    device, admin = driver(server, tenant, "driver-17"), server.headers(tenant, "ops", "admin")
    future = (NOW + 10 * 24 * 3600 * 1000, 0)
    ops = [DEPOT, {"op": "set", "field": "note", "value": 1}]
    assert (await server.push(device, "phone-a", [change(1, "dlv-1", ops, hlc=future)]))[0]["status"] == "applied"
    c = (await get(server, "/v1/admin/conflicts", admin, kind="clock_skew"))["conflicts"][0]
    assert c["overridable"] is False
    error = await post(server, f"/v1/admin/conflicts/{c['id']}/override", admin, {"pick": 0}, 409)
    assert "cannot be overridden" in error["error"]["message"]


async def test_devices_cannot_push_as_a_server_replica(server: Server) -> None:
    tenant = await server.tenant()
    r = await server.client.post(
        "/v1/sync/push",
        json={
            "replica": "server:admin:ops",
            "changes": [change(1, "dlv-1", [{"op": "set", "field": "a", "value": 1}])],
        },
        headers=server.headers(tenant, "mallory"),
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "replica_forbidden"


async def test_entity_history_is_ordered_decrypted_and_shows_rejections(server: Server) -> None:
    tenant = await server.tenant()
    admin = await offline_conflict(server, tenant)
    bad = change(2, "dlv-123", [{"op": "inc", "field": "status", "by": 1}])
    assert (await server.push(driver(server, tenant, "driver-17"), "phone-a", [bad]))[0]["status"] == "rejected"

    h = await get(server, "/v1/admin/entities/deliveries/dlv-123/history", admin)

    assert [(c["seq"], c["replica"], c["user"], c["result"]) for c in h["changes"]] == [
        (1, "phone-a", "driver-17", "applied"),
        (2, "phone-b", "driver-42", "applied"),
    ]
    assert h["changes"][0]["ops"] == [DEPOT, {"op": "set", "field": "status", "value": "delivered"}]
    assert h["changes"][1]["hlc"] == [NOW + 5, 0]
    assert h["changes"][1]["conflicts"] == ["c2.0"]
    assert [(d["replica"], d["n"], d["code"]) for d in h["rejected"]] == [("phone-a", 2, "kind_mismatch")]
    assert h["rejected"][0]["change"]["ops"] == [{"op": "inc", "field": "status", "by": 1}]
    assert h["current"]["fields"]["status"]["value"] == "delivered"
    assert (await get(server, "/v1/admin/entities/deliveries/dlv-123/history", admin, after=1))["changes"][0][
        "seq"
    ] == 2
    assert (await get(server, "/v1/admin/entities/deliveries/nope/history", admin, 404))["error"]["code"] == "not_found"


BIG = "x" * 100


async def rejected_cod(server: Server, tenant: str) -> dict[str, str]:
    """A driver's change rejected because one value is over the (tiny) limit; returns admin headers."""
    ops = [DEPOT, {"op": "inc", "field": "cod_cents", "by": 500}, {"op": "set", "field": "note", "value": BIG}]
    result = await server.push(driver(server, tenant, "driver-17"), "phone-a", [change(1, "dlv-7", ops)])
    assert result[0]["status"] == "rejected"
    assert result[0]["error"]["code"] == "value_too_large"
    return server.headers(tenant, "ops@acme", "admin")


def raise_limit(server: Server) -> None:
    """The operator fixes the cause (a config change): values up to 64 KiB."""
    push = server.app.state.push_service
    push.limits = replace(push.limits, max_value_bytes=64 * 1024)


@pytest.fixture
def small_values(server: Server) -> Server:
    push = server.app.state.push_service
    push.limits = replace(push.limits, max_value_bytes=64)
    return server


async def test_replay_after_the_cause_is_fixed_applies_once(small_values: Server) -> None:
    server = small_values
    tenant = await server.tenant()
    admin = await rejected_cod(server, tenant)
    letters = await get(server, "/v1/admin/dead-letters", admin, status="open")
    assert [(d["replica"], d["n"], d["code"], d["user"]) for d in letters["dead_letters"]] == [
        ("phone-a", 1, "value_too_large", "driver-17")
    ]
    assert "change" not in letters["dead_letters"][0]
    shown = await get(server, "/v1/admin/dead-letters/phone-a/1", admin)
    assert shown["change"]["ops"][2]["value"] == BIG

    still = await post(server, "/v1/admin/dead-letters/phone-a/1/replay", admin)
    assert still["outcome"] == "rejected"
    assert still["error"]["code"] == "value_too_large"
    assert still["dead_letter"]["status"] == "open"

    raise_limit(server)
    done = await post(server, "/v1/admin/dead-letters/phone-a/1/replay", admin)
    again = await post(server, "/v1/admin/dead-letters/phone-a/1/replay", admin)

    assert done["outcome"] == "applied"
    assert done["dead_letter"]["status"] == "replayed"
    assert again["outcome"] == "already_replayed"
    assert again["change"] == done["change"]
    entity = await get(server, "/v1/entities/deliveries/dlv-7", admin)
    assert entity["fields"]["cod_cents"]["value"] == 500
    assert entity["fields"]["note"]["value"] == BIG
    history = await get(server, "/v1/admin/entities/deliveries/dlv-7/history", admin)
    assert [(c["user"], c["replica"].startswith("server:replay:")) for c in history["changes"]] == [("driver-17", True)]
    # The failed attempt's own dead letter was discarded, so the open list is empty.
    assert (await get(server, "/v1/admin/dead-letters", admin, status="open"))["dead_letters"] == []
    actions = [e["action"] for e in (await get(server, "/v1/admin/audit", admin, target="phone-a/1"))["entries"]]
    assert actions == ["dead_letter.replay", "dead_letter.replay_failed"]
    error = await post(server, "/v1/admin/dead-letters/phone-a/1/discard", admin, expect=409)
    assert "replayed" in error["error"]["message"]


async def test_concurrent_replays_apply_the_change_exactly_once(small_values: Server) -> None:
    server = small_values
    tenant = await server.tenant()
    admin = await rejected_cod(server, tenant)
    raise_limit(server)

    results = await asyncio.gather(
        *(server.client.post("/v1/admin/dead-letters/phone-a/1/replay", headers=admin) for _ in range(3))
    )

    outcomes = [r.json()["outcome"] for r in results if r.status_code == 200]
    assert outcomes.count("applied") == 1
    assert set(outcomes) <= {"applied", "already_replayed"}
    assert all(r.status_code in (200, 409) for r in results)
    entity = await get(server, "/v1/entities/deliveries/dlv-7", admin)
    assert entity["fields"]["cod_cents"]["value"] == 500


async def test_discard_keeps_the_letter_and_blocks_replay(small_values: Server) -> None:
    server = small_values
    tenant = await server.tenant()
    admin = await rejected_cod(server, tenant)

    discarded = await post(server, "/v1/admin/dead-letters/phone-a/1/discard", admin)
    assert discarded["status"] == "discarded"
    error = await post(server, "/v1/admin/dead-letters/phone-a/1/replay", admin, expect=409)
    assert "discarded" in error["error"]["message"]
    assert (await get(server, "/v1/admin/dead-letters", admin, status="discarded"))["dead_letters"][0]["n"] == 1
    assert (await get(server, "/v1/admin/dead-letters/phone-a/9", admin, 404))["error"]["code"] == "not_found"
    entries = (await get(server, "/v1/admin/audit", admin))["entries"]
    assert [(e["action"], e["target"], e["details"]) for e in entries] == [
        ("dead_letter.discard", "phone-a/1", {"code": "value_too_large"})
    ]


async def test_admin_cannot_see_another_tenant(server: Server) -> None:
    mine, theirs = await server.tenant(), await server.tenant("other")
    await offline_conflict(server, theirs)
    admin = server.headers(mine, "ops", "admin")
    assert (await get(server, "/v1/admin/conflicts", admin))["conflicts"] == []
    assert (await get(server, "/v1/admin/conflicts/c2.0", admin, 404))["error"]["code"] == "not_found"
    await get(server, "/v1/admin/entities/deliveries/dlv-123/history", admin, 404)
