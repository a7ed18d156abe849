"""The sync core over HTTP, on every store backend."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.conftest import Server, change

NOW = int(time.time() * 1000)


async def test_two_offline_drivers_converge_and_the_conflict_is_logged(server: Server) -> None:
    tenant = await server.tenant()
    dispatcher = server.headers(tenant, "dispatcher-1", "dispatcher")
    a = server.headers(tenant, "driver-17")
    b = server.headers(tenant, "driver-42")
    created = await server.push(
        dispatcher, "web-1", [change(1, "dlv-123", [{"op": "set", "field": "status", "value": "pending"}])]
    )
    assert created[0]["status"] == "applied"

    # Both drivers sync, then go offline and edit the same delivery.
    seen_a, _ = await server.pull_all(a)
    seen_b, _ = await server.pull_all(b)
    ctx_a, ctx_b = seen_a[0]["vv"], seen_b[0]["vv"]
    ra = await server.push(
        a,
        "phone-a",
        [change(1, "dlv-123", [{"op": "set", "field": "status", "value": "delivered"}], ctx_a, hlc=(NOW, 0))],
    )
    rb = await server.push(
        b,
        "phone-b",
        [change(1, "dlv-123", [{"op": "set", "field": "status", "value": "failed"}], ctx_b, hlc=(NOW + 5, 0))],
    )
    assert ra[0]["status"] == rb[0]["status"] == "applied"

    # Both pull the same merged state: siblings shown, precedence picks "delivered".
    state_a, _ = await server.pull_all(a)
    state_b, _ = await server.pull_all(b)
    assert state_a == state_b
    status = state_a[0]["fields"]["status"]
    assert status["value"] == "delivered"
    assert sorted(s["value"] for s in status["siblings"]) == ["delivered", "failed"]
    assert sorted(s["replica"] for s in status["siblings"]) == ["phone-a", "phone-b"]

    r = await server.client.get("/v1/conflicts", headers=dispatcher)
    assert r.status_code == 200
    conflicts = r.json()["conflicts"]
    assert len(conflicts) == 1
    c = conflicts[0]
    assert (c["entity"], c["field"], c["kind"], c["rule"]) == ("dlv-123", "status", "register", "precedence")
    assert {(v["value"], v["replica"], v["user"]) for v in c["values"]} == {
        ("delivered", "phone-a", "driver-17"),
        ("failed", "phone-b", "driver-42"),
    }
    assert c["winner"]["value"] == "delivered"

    # A write that has seen both siblings collapses them.
    merged_ctx = state_a[0]["vv"]
    await server.push(
        dispatcher,
        "web-1",
        [change(2, "dlv-123", [{"op": "set", "field": "status", "value": "delivered"}], merged_ctx)],
    )
    r = await server.client.get("/v1/entities/deliveries/dlv-123", headers=dispatcher)
    assert r.json()["fields"]["status"] == {"kind": "register", "value": "delivered"}


async def test_replaying_a_push_gives_duplicates_and_changes_nothing(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    batch = [
        change(1, "dlv-1", [{"op": "set", "field": "status", "value": "out_for_delivery"}]),
        change(2, "dlv-1", [{"op": "inc", "field": "cod_cents", "by": 12500}]),
        change(3, "dlv-1", [{"op": "add", "field": "scanned", "value": "parcel-1"}]),
    ]
    first = await server.push(h, "phone-1", batch)
    assert [r["status"] for r in first] == ["applied"] * 3
    before = (await server.client.get("/v1/entities/deliveries/dlv-1", headers=h)).json()
    _, cursor = await server.pull_all(h)

    again = await server.push(h, "phone-1", batch)
    assert [r["status"] for r in again] == ["duplicate"] * 3
    after = (await server.client.get("/v1/entities/deliveries/dlv-1", headers=h)).json()
    assert after == before
    assert after["fields"]["cod_cents"]["value"] == 12500
    nothing_new, _ = await server.pull_all(h, cursor)
    assert nothing_new == []


async def test_a_gap_is_out_of_order_and_names_the_expected_counter(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    res = await server.push(
        h,
        "phone-1",
        [
            change(1, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}]),
            change(3, "dlv-1", [{"op": "set", "field": "status", "value": "failed"}]),
        ],
    )
    assert res[0]["status"] == "applied"
    assert res[1] == {"status": "out_of_order", "id": res[1]["id"], "n": 3, "expected": 2}


async def test_a_rejected_change_is_dead_lettered_and_does_not_block_the_next(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    res = await server.push(
        h,
        "phone-1",
        [
            change(1, "dlv-1", [{"op": "inc", "field": "status", "by": 1}]),  # status is a register
            change(2, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}]),
        ],
    )
    assert res[0]["status"] == "rejected"
    assert res[0]["error"]["code"] == "kind_mismatch"
    assert res[1]["status"] == "applied"
    dead = await server.app.state.store.dead_letters(tenant, 10)
    assert [(d.n, d.code) for d in dead] == [(1, "kind_mismatch")]
    # The rejected counter is consumed: replaying it is a duplicate, not a gap.
    again = await server.push(h, "phone-1", [change(3, "dlv-1", [{"op": "set", "field": "status", "value": "failed"}])])
    assert again[0]["status"] == "applied"


async def test_a_rejected_change_resent_is_rejected_again_not_a_duplicate(server: Server) -> None:
    """The device did not get the answer to a push whose change was refused (a timeout, a dropped connection) and
    sends it again: it is told again that it was refused, with the same code and message, so it shows the
    rejection instead of taking the change for delivered. The same within one push."""
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    refused = change(1, "dlv-1", [{"op": "inc", "field": "status", "by": 1}])  # status is a register
    applied = change(2, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}])
    first = await server.push(h, "phone-1", [refused, applied])
    assert [r["status"] for r in first] == ["rejected", "applied"]

    again = await server.push(h, "phone-1", [refused, applied, refused])
    assert again[0] == first[0]
    assert again[1] == {"status": "duplicate", "id": applied["id"], "n": 2}
    assert again[2] == first[0]
    dead = await server.app.state.store.dead_letters(tenant, 10)
    assert [(d.n, d.code) for d in dead] == [(1, "kind_mismatch")]  # still one dead letter

    within = await server.push(h, "phone-1", [change(3, "dlv-2", [{"op": "inc", "field": "status", "by": 1}])] * 2)
    assert [r["status"] for r in within] == ["rejected", "rejected"]
    assert within[0] == within[1]


async def test_a_reused_counter_with_a_different_change_is_rejected(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    await server.push(h, "phone-1", [change(1, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}])])
    res = await server.push(h, "phone-1", [change(1, "dlv-1", [{"op": "set", "field": "status", "value": "failed"}])])
    assert res[0]["status"] == "rejected"
    assert res[0]["error"]["code"] == "n_reused"


async def test_every_field_kind_merges_and_pull_sends_only_changed_fields(server: Server) -> None:
    from pycrdt import Doc

    from syncproto.crdt.text import splice

    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    doc = Doc()
    import base64

    update = base64.b64encode(splice(doc, 0, 0, "Leave at door 🚪, merci")).decode()
    ops: list[dict[str, Any]] = [
        {"op": "set", "field": "status", "value": "delivered"},
        {"op": "inc", "field": "cod_cents", "by": 12500},
        {"op": "add", "field": "scanned", "value": "parcel-1"},
        {"op": "add", "field": "scanned", "value": "parcel-2"},
        {"op": "text", "field": "notes", "update": update},
        {"op": "append", "field": "trail", "value": {"lat": 25.2, "lon": 55.27}},
    ]
    await server.push(h, "phone-1", [change(1, "dlv-1", ops)])
    full, cursor = await server.pull_all(h)
    fields = full[0]["fields"]
    assert fields["notes"]["value"] == "Leave at door 🚪, merci"
    assert fields["scanned"]["value"] == ["parcel-1", "parcel-2"]
    assert fields["trail"]["value"] == [{"lat": 25.2, "lon": 55.27}]

    await server.push(
        h,
        "phone-1",
        [
            change(2, "dlv-1", [{"op": "remove", "field": "scanned", "value": "parcel-2"}], full[0]["vv"]),
            change(3, "dlv-1", [{"op": "inc", "field": "cod_cents", "by": -500}], full[0]["vv"]),
        ],
    )
    delta, _ = await server.pull_all(h, cursor)
    assert set(delta[0]["fields"]) == {"scanned", "cod_cents"}
    assert delta[0]["fields"]["scanned"]["value"] == ["parcel-1"]
    assert delta[0]["fields"]["cod_cents"]["value"] == 12000


async def test_delete_concurrent_with_update_keeps_the_entity_and_logs_it(server: Server) -> None:
    tenant = await server.tenant()
    dispatcher = server.headers(tenant, "dispatcher-1", "dispatcher")
    driver = server.headers(tenant, "driver-1")
    await server.push(dispatcher, "web-1", [change(1, "dlv-9", [{"op": "set", "field": "status", "value": "pending"}])])
    seen, _ = await server.pull_all(driver)
    ctx = seen[0]["vv"]
    await server.push(dispatcher, "web-1", [change(2, "dlv-9", [{"op": "delete"}], ctx)])
    await server.push(
        driver, "phone-1", [change(1, "dlv-9", [{"op": "set", "field": "status", "value": "failed"}], ctx)]
    )
    entity = (await server.client.get("/v1/entities/deliveries/dlv-9", headers=driver)).json()
    assert entity["deleted"] is False
    kinds = [c["kind"] for c in (await server.client.get("/v1/conflicts", headers=dispatcher)).json()["conflicts"]]
    assert kinds == ["delete_update"]

    # A delete that has seen everything deletes; pull reports the tombstone.
    await server.push(dispatcher, "web-1", [change(3, "dlv-9", [{"op": "delete"}], entity["vv"])])
    after, _ = await server.pull_all(driver)
    assert after[0]["deleted"] is True
    assert "fields" not in after[0]


async def test_pull_pages_with_cursors_and_refuses_another_tenants_cursor(server: Server) -> None:
    t1, t2 = await server.tenant(), await server.tenant()
    h1, h2 = server.headers(t1, "d1"), server.headers(t2, "d2")
    await server.push(
        h1, "p1", [change(i, f"dlv-{i}", [{"op": "set", "field": "status", "value": "pending"}]) for i in range(1, 8)]
    )
    seen, cursor = await server.pull_all(h1, limit=3)
    assert [e["entity"] for e in seen] == [f"dlv-{i}" for i in range(1, 8)]
    assert [e["seq"] for e in seen] == list(range(1, 8))
    r = await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=h2)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_cursor"
    theirs, _ = await server.pull_all(h2)
    assert theirs == []


async def test_a_future_clock_is_clamped_and_cannot_win_forever(server: Server) -> None:
    tenant = await server.tenant()
    liar = server.headers(tenant, "driver-1")
    honest = server.headers(tenant, "driver-2")
    server_now = [NOW]
    server.app.state.push_service.clock = lambda: server_now[0]  # the server's clock, under test control
    bound = server.settings.max_clock_skew_ms
    year = 365 * 24 * 3600 * 1000

    def note(n: int, value: str, hlc: tuple[int, int]) -> list[dict[str, Any]]:
        # Context {}: every write below is concurrent with the others, so LWW by HLC decides.
        return [change(n, "dlv-1", [{"op": "set", "field": "note", "value": value}], {}, hlc=hlc)]

    async def visible() -> tuple[str, dict[str, int]]:
        entity = (await server.client.get("/v1/entities/deliveries/dlv-1", headers=honest)).json()
        stamps = {s["value"]: s["hlc"][0] for s in entity["fields"]["note"].get("siblings", [])}
        return entity["fields"]["note"]["value"], stamps

    await server.push(liar, "phone-liar", note(1, "liar", (NOW + year, 0)))
    skew = (await server.client.get("/v1/conflicts?kind=clock_skew", headers=honest)).json()["conflicts"]
    assert len(skew) == 1
    assert skew[0]["values"][0]["hlc"][0] == NOW + year  # what the device claimed
    assert skew[0]["winner"]["hlc"][0] == NOW + bound  # what the server recorded

    # Real time passes the bound. Unclamped, the liar's stamp would beat this write for a year.
    server_now[0] = NOW + bound + 1
    await server.push(honest, "phone-ok", note(1, "honest", (server_now[0], 0)))
    value, stamps = await visible()
    assert value == "honest"
    assert stamps == {"liar": NOW + bound, "honest": NOW + bound + 1}

    # The liar's clock is still a year ahead: each new write is clamped again, so its lead over
    # the server's time is never more than the bound, and the next honest write after that wins.
    server_now[0] += 1000
    await server.push(liar, "phone-liar", note(2, "liar again", (NOW + year + 1000, 0)))
    assert (await visible())[0] == "liar again"
    server_now[0] += bound + 1
    await server.push(honest, "phone-ok", note(2, "honest again", (server_now[0], 0)))
    value, stamps = await visible()
    assert value == "honest again"
    assert max(stamps.values()) == server_now[0]
    assert all(stamp <= server_now[0] for stamp in stamps.values())
    assert len((await server.client.get("/v1/conflicts?kind=clock_skew", headers=honest)).json()["conflicts"]) == 2


async def test_a_cursor_older_than_collected_tombstones_gets_reset(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "dispatcher-1", "dispatcher")
    await server.push(h, "web-1", [change(1, "dlv-1", [{"op": "set", "field": "status", "value": "pending"}])])
    _, old_cursor = await server.pull_all(h)
    seen, _ = await server.pull_all(h)
    await server.push(h, "web-1", [change(2, "dlv-1", [{"op": "delete"}], seen[0]["vv"])])
    removed = await server.app.state.store.purge_tombstones(tenant, int(time.time() * 1000) + 1)
    assert removed == 1
    r = await server.client.post("/v1/sync/pull", json={"cursor": old_cursor}, headers=h)
    assert r.json()["reset"] is True
    assert r.json()["changes"] == []
    # Starting over works, and the collected entity is simply gone.
    fresh, _ = await server.pull_all(h)
    assert fresh == []
