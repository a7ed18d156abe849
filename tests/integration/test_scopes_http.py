"""Partial replication over HTTP, on every backend: drivers see and change only their channels."""

from __future__ import annotations

from typing import Any

import pytest

from syncproto.messages import PullRequest
from syncserver.sync import cursor as cursors
from syncstore.sqlite_sync import SqliteReader
from tests.integration.conftest import Server, change


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


async def pull(server: Server, headers: dict[str, str], cursor: str | None = None, **extra: Any) -> Any:
    r = await server.client.post("/v1/sync/pull", json={"cursor": cursor, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def actors(server: Server) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """A new tenant's dispatcher (boss) and drivers a and b, each in its own ``driver:`` channel."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    a = server.headers(tenant, "d-a", "driver", ("driver:d-a",))
    b = server.headers(tenant, "d-b", "driver", ("driver:d-b",))
    return tenant, boss, a, b


async def seed(server: Server) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """dlv-a for driver a, dlv-b for driver b, dlv-n for nobody (dispatchers only)."""
    tenant, boss, a, b = await actors(server)
    results = await server.push(
        boss,
        "web-1",
        [
            change(1, "dlv-a", [set_("driver_id", "d-a"), set_("status", "pending"), set_("address", "1 Main St")]),
            change(2, "dlv-b", [set_("driver_id", "d-b"), set_("status", "pending")]),
            change(3, "dlv-n", [set_("status", "pending")]),
        ],
    )
    assert [r["status"] for r in results] == ["applied"] * 3
    return tenant, boss, a, b


async def test_each_driver_pulls_only_its_channel_and_dispatchers_see_everything(server: Server) -> None:
    tenant, boss, a, b = await seed(server)
    assert [e["entity"] for e in (await pull(server, a))["changes"]] == ["dlv-a"]
    assert [e["entity"] for e in (await pull(server, b))["changes"]] == ["dlv-b"]
    assert [e["entity"] for e in (await pull(server, boss))["changes"]] == ["dlv-a", "dlv-b", "dlv-n"]
    # Asking for the collection does not widen the scope.
    assert [e["entity"] for e in (await pull(server, a, collections=["deliveries"]))["changes"]] == ["dlv-a"]
    # A driver's cursor moves past other drivers' changes, so its next pull starts there.
    body = await pull(server, a)
    assert cursors.decode(tenant, body["cursor"]) == 3


async def test_a_reassigned_entity_is_evicted_from_one_driver_and_sent_whole_to_the_other(server: Server) -> None:
    _, boss, a, b = await seed(server)
    first_a, first_b = await pull(server, a), await pull(server, b)
    vv = first_a["changes"][0]["vv"]

    await server.push(boss, "web-1", [change(4, "dlv-a", [set_("driver_id", "d-b")], vv)])

    gone = await pull(server, a, first_a["cursor"])
    assert gone["changes"] == []
    assert gone["evictions"] == [{"collection": "deliveries", "entity": "dlv-a", "seq": 4}]
    arrived = await pull(server, b, first_b["cursor"])
    assert [e["entity"] for e in arrived["changes"]] == ["dlv-a"]
    # Only driver_id changed after b's cursor, but b never had the entity: every field comes.
    assert set(arrived["changes"][0]["fields"]) == {"driver_id", "status", "address"}
    assert arrived["evictions"] == []
    # The eviction is sent once; a fresh device has nothing to evict.
    assert (await pull(server, a, gone["cursor"]))["evictions"] == []
    assert (await pull(server, a))["evictions"] == []

    # Moving it back: a gets it whole again, b an eviction.
    vv = arrived["changes"][0]["vv"]
    await server.push(boss, "web-1", [change(5, "dlv-a", [set_("driver_id", "d-a")], vv)])
    back = await pull(server, a, gone["cursor"])
    assert set(back["changes"][0]["fields"]) == {"driver_id", "status", "address"}
    assert [e["entity"] for e in (await pull(server, b, arrived["cursor"]))["evictions"]] == ["dlv-a"]


async def test_an_entity_in_two_of_a_drivers_channels_comes_once_and_is_not_evicted_by_leaving_one(
    server: Server,
) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    both = server.headers(tenant, "d-a", "driver", ("driver:d-a", "depot:north"))
    await server.push(boss, "web-1", [change(1, "dlv-1", [set_("driver_id", "d-a"), set_("depot", "north")])])
    first = await pull(server, both)
    assert [e["entity"] for e in first["changes"]] == ["dlv-1"]
    await server.push(boss, "web-1", [change(2, "dlv-1", [set_("driver_id", "d-z")], first["changes"][0]["vv"])])
    after = await pull(server, both, first["cursor"])
    assert [e["entity"] for e in after["changes"]] == ["dlv-1"]
    assert set(after["changes"][0]["fields"]) == {"driver_id"}  # still visible: a delta, not a re-send
    assert after["evictions"] == []


async def test_scoped_pulls_page_with_evictions_in_seq_order(server: Server) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    a = server.headers(tenant, "d-a", "driver", ("driver:d-a",))
    await server.push(boss, "web-1", [change(i, f"dlv-{i}", [set_("driver_id", "d-a")]) for i in range(1, 6)])
    start = await pull(server, a)
    vvs = {e["entity"]: e["vv"] for e in start["changes"]}
    await server.push(
        boss, "web-1", [change(n, f"dlv-{i}", [set_("driver_id", "d-b")], vvs[f"dlv-{i}"]) for n, i in ((6, 1), (7, 3))]
    )
    await server.push(boss, "web-1", [change(8, "dlv-2", [set_("status", "x")], vvs["dlv-2"])])
    items: list[tuple[str, str]] = []
    cursor = start["cursor"]
    while True:
        page = await pull(server, a, cursor, limit=1)
        assert len(page["changes"]) + len(page["evictions"]) <= 1
        items += [("evict", e["entity"]) for e in page["evictions"]] + [
            ("change", e["entity"]) for e in page["changes"]
        ]
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert items == [("evict", "dlv-1"), ("evict", "dlv-3"), ("change", "dlv-2")]


async def test_a_driver_creates_and_changes_only_inside_its_channels(server: Server) -> None:
    tenant, boss, a, _ = await seed(server)
    vv_a = (await pull(server, a))["changes"][0]["vv"]
    results = await server.push(
        a,
        "phone-a",
        [
            change(1, "dlv-new", [set_("driver_id", "d-a"), set_("status", "pending")]),
            change(2, "dlv-x", [set_("driver_id", "d-b")]),  # would land in b's channel
            change(3, "dlv-y", [set_("status", "pending")]),  # would be in no channel of a's
            change(4, "dlv-b", [set_("status", "delivered")]),  # b's: a cannot see it
            change(5, "dlv-a", [set_("driver_id", "d-b")], vv_a),  # would move it out of a's channels
            change(6, "dlv-a", [set_("status", "delivered")], vv_a),
            change(7, "dlv-n", [{"op": "delete"}]),  # nobody's: dispatchers only
        ],
    )
    assert [r["status"] for r in results] == ["applied", *["rejected"] * 4, "applied", "rejected"]
    assert {r["error"]["code"] for r in results if r["status"] == "rejected"} == {"forbidden"}
    # Rejected changes are dead letters, never silently applied.
    dead = await server.app.state.store.dead_letters(tenant, 10)
    assert sorted((d.n, d.code, d.entity_id) for d in dead) == [
        (2, "forbidden", "dlv-x"),
        (3, "forbidden", "dlv-y"),
        (4, "forbidden", "dlv-b"),
        (5, "forbidden", "dlv-a"),
        (7, "forbidden", "dlv-n"),
    ]
    everything = {e["entity"]: e for e in (await pull(server, boss))["changes"]}
    assert set(everything) == {"dlv-a", "dlv-b", "dlv-n", "dlv-new"}
    assert everything["dlv-b"]["fields"]["status"]["value"] == "pending"
    assert everything["dlv-a"]["fields"]["driver_id"]["value"] == "d-a"
    assert everything["dlv-a"]["fields"]["status"]["value"] == "delivered"
    assert everything["dlv-n"]["deleted"] is False
    assert [e["entity"] for e in (await pull(server, a))["changes"]] == ["dlv-new", "dlv-a"]


async def test_entity_reads_and_the_conflict_log_are_scoped(server: Server) -> None:
    tenant, boss, a, _ = await seed(server)
    # A concurrent write on each of dlv-a and dlv-b: two conflicts.
    for n, entity in ((1, "dlv-a"), (2, "dlv-b")):
        await server.push(boss, "web-2", [change(n, entity, [set_("status", "failed")], {})])
    all_conflicts = (await server.client.get("/v1/conflicts", headers=boss)).json()["conflicts"]
    by_entity = {c["entity"]: c["id"] for c in all_conflicts}
    assert set(by_entity) == {"dlv-a", "dlv-b"}

    mine = (await server.client.get("/v1/conflicts", headers=a)).json()["conflicts"]
    assert [c["entity"] for c in mine] == ["dlv-a"]
    assert (await server.client.get(f"/v1/conflicts/{by_entity['dlv-a']}", headers=a)).status_code == 200
    hidden = await server.client.get(f"/v1/conflicts/{by_entity['dlv-b']}", headers=a)
    missing = await server.client.get("/v1/conflicts/c999.0", headers=a)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == "not_found"

    assert (await server.client.get("/v1/entities/deliveries/dlv-a", headers=a)).status_code == 200
    other = await server.client.get("/v1/entities/deliveries/dlv-b", headers=a)
    nowhere = await server.client.get("/v1/entities/deliveries/dlv-zzz", headers=a)
    assert other.status_code == nowhere.status_code == 404
    assert other.json()["error"]["code"] == nowhere.json()["error"]["code"] == "not_found"
    assert "pending" not in other.text
    assert (await server.client.get("/v1/entities/deliveries/dlv-b", headers=boss)).status_code == 200
    assert tenant


async def test_channels_follow_every_change_of_one_push_whether_or_not_it_touches_their_fields(
    server: Server,
) -> None:
    """Within one push, a change that leaves the channel templates' fields alone keeps the channels the
    earlier changes computed; one that sets them moves the entity, and the last one decides."""
    _, boss, a, b = await actors(server)
    results = await server.push(
        boss,
        "web-1",
        [
            change(1, "dlv-1", [set_("driver_id", "d-a")]),
            change(2, "dlv-1", [set_("status", "pending")]),  # channels untouched: still driver:d-a
            change(3, "dlv-2", [set_("status", "pending")]),  # in no driver's channel
            change(4, "dlv-2", [set_("driver_id", "d-b")]),  # moved into driver:d-b
            change(5, "dlv-2", [set_("address", "2 High St")]),
            change(6, "dlv-1", [set_("driver_id", "d-b")]),  # moved from d-a to d-b
            change(7, "dlv-1", [set_("address", "1 Main St")]),
        ],
    )
    assert [r["status"] for r in results] == ["applied"] * 7
    assert [e["entity"] for e in (await pull(server, a))["changes"]] == []
    pulled = (await pull(server, b))["changes"]
    assert sorted(e["entity"] for e in pulled) == ["dlv-1", "dlv-2"]
    assert {e["entity"]: e["fields"]["address"]["value"] for e in pulled} == {
        "dlv-1": "1 Main St",
        "dlv-2": "2 High St",
    }
    # Driver b may change both now; driver a may change neither.
    vv = next(e["vv"] for e in pulled if e["entity"] == "dlv-1")
    ok = await server.push(b, "phone-b", [change(1, "dlv-1", [set_("status", "delivered")], vv)])
    assert ok[0]["status"] == "applied"
    refused = await server.push(a, "phone-a", [change(1, "dlv-2", [set_("status", "failed")])])
    assert refused[0]["status"] == "rejected"


async def test_a_reassignment_between_other_changes_of_one_push_moves_the_entity(server: Server) -> None:
    """A push recomputes channels only after a change to a field its templates name (``driver_id``
    here): the changes around the reassignment keep the channels of the state before them."""
    _, boss, a, b = await seed(server)
    first_a, first_b = await pull(server, a), await pull(server, b)
    vv = first_a["changes"][0]["vv"]

    results = await server.push(
        boss,
        "web-1",
        [
            change(4, "dlv-a", [set_("status", "loaded")], vv),
            change(5, "dlv-a", [set_("driver_id", "d-b")], {**vv, "web-1": 4}),
            change(6, "dlv-a", [set_("status", "out_for_delivery")], {**vv, "web-1": 5}),
        ],
    )
    assert [r["status"] for r in results] == ["applied"] * 3

    gone = await pull(server, a, first_a["cursor"])
    assert gone["changes"] == []
    assert gone["evictions"] == [{"collection": "deliveries", "entity": "dlv-a", "seq": 6}]
    arrived = await pull(server, b, first_b["cursor"])
    assert [(e["entity"], e["fields"]["status"]["value"]) for e in arrived["changes"]] == [
        ("dlv-a", "out_for_delivery")
    ]
    # Driver b may now change it, driver a no longer.
    vv = arrived["changes"][0]["vv"]
    assert (await server.push(b, "phone-b", [change(1, "dlv-a", [set_("status", "delivered")], vv)]))[0][
        "status"
    ] == "applied"
    refused = await server.push(a, "phone-a", [change(1, "dlv-a", [set_("status", "failed")], vv)])
    assert refused[0]["status"] == "rejected"


async def test_a_drivers_pull_reads_sqlite_in_one_hop(sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tenant row, the channel page and the evictions: one trip to a reader thread, not three.

    A hop costs about a third of a small scoped pull (benchmarks/README.md, "A driver's pull in one
    read"), and every reconnecting driver and every live session makes such pulls.
    """
    server = sqlite_server
    _, boss, a, _ = await seed(server)
    first = await pull(server, a)
    await server.push(boss, "web-1", [change(4, "dlv-a", [set_("status", "delivered")], {"web-1": 3})])
    reader = server.app.state.store.database.reader
    assert isinstance(reader, SqliteReader)
    trips: list[str] = []
    real_run = reader.run

    async def counted(work: Any) -> Any:
        trips.append(repr(work))
        return await real_run(work)

    monkeypatch.setattr(reader, "run", counted)
    request = PullRequest(cursor=first["cursor"])
    principal = server.verifier.verify(a["Authorization"].removeprefix("Bearer "))
    response = await server.app.state.pull_service.pull(principal, request)

    assert [e.entity for e in response.changes] == ["dlv-a"]
    assert len(trips) == 1, trips
