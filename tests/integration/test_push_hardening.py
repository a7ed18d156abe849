"""A bad change is rejected alone, never the push around it: numbers out of range, values nested
too deep (HTTP, WebSocket JSON and MessagePack), and a driver publishing into a channel it lacks.
Every rejection here is kept as a dead letter, and the changes behind it are applied."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from syncproto.values import MAX_VALUE_DEPTH
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_ws import WS, connected

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


@pytest.fixture
async def memory_server(tmp_path: Path) -> AsyncIterator[Server]:
    """Decoding does not depend on the store: one backend is enough for the nesting tests."""
    async for s in start(make_settings(tmp_path, "memory://")):
        yield s


def inc(by: int) -> dict[str, Any]:
    return {"op": "inc", "field": "cod_cents", "by": by}


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


async def entity(server: Server, headers: dict[str, str], key: str) -> Any:
    r = await server.client.get(f"/v1/entities/deliveries/{key}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def dead_letters(server: Server, tenant: str) -> list[tuple[str, int, str]]:
    admin = server.headers(tenant, "admin-1", "admin")
    r = await server.client.get("/v1/admin/dead-letters", headers=admin, params={"status": "open"})
    assert r.status_code == 200, r.text
    return sorted((d["replica"], d["n"], d["code"]) for d in r.json()["dead_letters"])


def statuses(results: list[dict[str, Any]]) -> list[str]:
    return [r["error"]["code"] if r["status"] == "rejected" else r["status"] for r in results]


# --- counters and numbers -------------------------------------------------------------


async def test_a_counter_overflow_is_rejected_alone_and_the_queue_moves_on(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    # The audit's sequence: inc by 2^63-1 twice; the second would leave int64.
    first = await server.push(
        h, "phone-1", [change(1, "dlv-1", [inc(INT64_MAX)]), change(2, "dlv-1", [inc(INT64_MAX)])]
    )
    assert statuses(first) == ["applied", "value_out_of_range"]
    # The replica's next changes are not stuck behind it, in this push or the next.
    after = await server.push(h, "phone-1", [change(3, "dlv-1", [inc(-5)]), change(4, "dlv-1", [inc(6)])])
    assert statuses(after) == ["applied", "value_out_of_range"]
    assert (await entity(server, h, "dlv-1"))["fields"]["cod_cents"]["value"] == INT64_MAX - 5
    last = await server.push(h, "phone-1", [change(5, "dlv-1", [inc(5)])])
    assert statuses(last) == ["applied"]
    assert (await entity(server, h, "dlv-1"))["fields"]["cod_cents"]["value"] == INT64_MAX
    assert await dead_letters(server, tenant) == [
        ("phone-1", 2, "value_out_of_range"),
        ("phone-1", 4, "value_out_of_range"),
    ]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_counter_overflow_is_rejected_alone_over_websocket_and_the_queue_moves_on(
    server: Server, encoding: str
) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    frames = [
        [change(1, "dlv-1", [inc(INT64_MAX)]), change(2, "dlv-1", [inc(INT64_MAX)])],
        [change(3, "dlv-1", [inc(-5)]), change(4, "dlv-1", [inc(6)])],
        [change(5, "dlv-1", [inc(5)])],
    ]
    with connected(await server.client.websocket_connect(WS, headers=h), encoding) as peer:
        peer.hello()
        peer.catch_up()
        answers = []
        for i, changes in enumerate(frames):
            peer.send({"type": "push", "id": f"p-{i}", "replica": "phone-1", "changes": changes})
            result = peer.recv_type("push_result")
            assert result["id"] == f"p-{i}"
            answers.append(statuses(result["results"]))
        peer.send({"type": "ping", "id": "still-here"})
        assert peer.recv_type("pong") == {"type": "pong", "id": "still-here"}
    assert answers == [["applied", "value_out_of_range"], ["applied", "value_out_of_range"], ["applied"]]
    assert (await entity(server, h, "dlv-1"))["fields"]["cod_cents"]["value"] == INT64_MAX
    assert await dead_letters(server, tenant) == [
        ("phone-1", 2, "value_out_of_range"),
        ("phone-1", 4, "value_out_of_range"),
    ]


async def test_a_counter_stays_within_int64_downwards_and_each_replicas_totals_within_64_bits(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    results = await server.push(
        h,
        "phone-1",
        [
            change(1, "dlv-1", [inc(INT64_MIN)]),
            change(2, "dlv-1", [inc(-1)]),  # below the minimum
            change(3, "dlv-1", [inc(INT64_MAX)]),  # value -1
            change(4, "dlv-1", [inc(INT64_MAX)]),  # value 2^63-2, increments 2^64-2
            change(5, "dlv-1", [inc(-(2**63))]),  # value -2, decrements 2^64
        ],
    )
    assert statuses(results) == ["applied", "value_out_of_range", "applied", "applied", "value_out_of_range"]
    assert (await entity(server, h, "dlv-1"))["fields"]["cod_cents"]["value"] == INT64_MAX - 1


@pytest.mark.parametrize(
    "bad",
    [
        {"ops": [set_("status", 2**64)]},
        {"ops": [set_("recipient", {"phone": [1, -(2**63) - 1]})]},
        {"ops": [{"op": "append", "field": "trail", "value": {"lat": 2**70}}]},
        {"ops": [{"op": "add", "field": "scanned", "value": 2**63}]},
        {"ops": [inc(2**63)]},
        {"context": {"web-1": 2**63}},
        {"hlc": [2**64, 0]},
        {"hlc": [1_700_000_000_000, 2**31]},
    ],
    ids=["set", "nested-set", "append", "add", "inc", "context", "hlc-wall", "hlc-counter"],
)
async def test_a_number_out_of_range_is_a_per_change_rejection(server: Server, bad: dict[str, Any]) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    changes = [
        change(1, "dlv-1", [set_("status", "pending")]) | bad,
        change(2, "dlv-2", [set_("status", "pending")]),
    ]
    body = json.dumps({"replica": "phone-1", "changes": changes})  # Python's json keeps big integers
    r = await server.client.post("/v1/sync/push", content=body, headers=h | {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert statuses(r.json()["results"]) == ["value_out_of_range", "applied"]
    assert await dead_letters(server, tenant) == [("phone-1", 1, "value_out_of_range")]
    # The dead letter keeps the change; integers it cannot store are kept as decimal text.
    admin = server.headers(tenant, "admin-1", "admin")
    shown = await server.client.get("/v1/admin/dead-letters/phone-1/1", headers=admin)
    assert shown.status_code == 200, shown.text
    assert shown.json()["change"]["id"] == changes[0]["id"]


# --- nesting depth ----------------------------------------------------------------------


def push_body(value_json: str, replica: str = "phone-1") -> tuple[bytes, list[dict[str, Any]]]:
    """A push of a deep ``set`` (its value spliced in as JSON text) and a good change behind it."""
    changes = [
        change(1, "dlv-1", [set_("recipient", "PLACEHOLDER")]),
        change(2, "dlv-2", [set_("status", "pending")]),
    ]
    text = json.dumps({"replica": replica, "changes": changes}).replace('"PLACEHOLDER"', value_json, 1)
    return text.encode(), changes


async def test_a_value_of_depth_32_is_applied_and_33_is_too_deep(server: Server) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    results = await server.push(
        h,
        "phone-1",
        [
            change(1, "dlv-1", [set_("recipient", nested(MAX_VALUE_DEPTH))]),
            change(2, "dlv-1", [set_("recipient", nested(MAX_VALUE_DEPTH + 1))]),
            change(3, "dlv-1", [{"op": "append", "field": "trail", "value": {"a": nested(MAX_VALUE_DEPTH)}}]),
        ],
    )
    assert statuses(results) == ["applied", "value_too_deep", "value_too_deep"]
    stored = (await entity(server, h, "dlv-1"))["fields"]["recipient"]["value"]
    assert stored == nested(MAX_VALUE_DEPTH)


@pytest.mark.parametrize("depth", [1_000, 5_000, 1_000_000])
async def test_a_value_too_deep_to_decode_is_rejected_alone_over_http(memory_server: Server, depth: int) -> None:
    server = memory_server
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    body, changes = push_body("[" * depth + "]" * depth)
    r = await server.client.post("/v1/sync/push", content=body, headers=h | {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["id"], x["n"]) for x in results] == [(c["id"], c["n"]) for c in changes]
    assert statuses(results) == ["value_too_deep", "applied"]
    assert await dead_letters(server, tenant) == [("phone-1", 1, "value_too_deep")]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (push_body("[" * 5_000)[0], 400, "malformed_json"),
        (b"[" * 5_000 + b"]" * 5_000, 422, "invalid_request"),
        (
            push_body("0")[0].replace(b'"context": {}', b'"context": ' + b"[" * 5_000 + b"]" * 5_000),
            422,
            "invalid_request",
        ),
    ],
    ids=["unbalanced", "deep-array-as-body", "deep-context"],
)
async def test_deep_nesting_outside_a_value_is_a_request_error_never_a_500(
    memory_server: Server, body: bytes, status: int, code: str
) -> None:
    server = memory_server
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1") | {"Content-Type": "application/json"}
    r = await server.client.post("/v1/sync/push", content=body, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


async def test_a_deep_pull_body_is_a_request_error_never_a_500(memory_server: Server) -> None:
    server = memory_server
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1") | {"Content-Type": "application/json"}
    for extra in (b', "pad": ' + b"[" * 5_000 + b"]" * 5_000, b', "collections": ' + b"[" * 5_000 + b"]" * 5_000):
        r = await server.client.post("/v1/sync/pull", content=b'{"cursor": null' + extra + b"}", headers=h)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def ws_push_frame(encoding: str, depth: int) -> tuple[str | bytes, list[dict[str, Any]]]:
    changes = [
        change(1, "dlv-1", [set_("recipient", None)]),
        change(2, "dlv-2", [set_("status", "pending")]),
    ]
    message = {"type": "push", "id": "p-deep", "replica": "phone-1", "changes": changes}
    if encoding == "json":
        text = msgspec.json.encode(message).replace(b"null", b"[" * depth + b"]" * depth, 1)
        return text.decode(), changes
    # MessagePack: nil (0xc0) occurs once; a fixarray of one (0x91) per level, then an empty one.
    raw = msgspec.msgpack.encode(message)
    assert raw.count(b"\xc0") == 1
    return raw.replace(b"\xc0", b"\x91" * depth + b"\x90"), changes


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 1_000, 100_000])
async def test_a_value_too_deep_is_rejected_alone_over_websocket_and_the_session_stays_open(
    memory_server: Server, encoding: str, depth: int
) -> None:
    server = memory_server
    tenant = await server.tenant()
    headers = server.headers(tenant, "dispatcher-1")
    frame, changes = ws_push_frame(encoding, depth)
    with connected(await server.client.websocket_connect(WS, headers=headers), encoding) as peer:
        peer.hello()
        peer.catch_up()
        if isinstance(frame, str):
            peer.session.send_text(frame)
        else:
            peer.session.send_bytes(frame)
        result = peer.recv_type("push_result")
        assert result["id"] == "p-deep"
        assert [(x["id"], x["n"]) for x in result["results"]] == [(c["id"], c["n"]) for c in changes]
        assert statuses(result["results"]) == ["value_too_deep", "applied"]
        peer.send({"type": "ping", "id": "still-here"})
        assert peer.recv_type("pong") == {"type": "pong", "id": "still-here"}
    assert await dead_letters(server, tenant) == [("phone-1", 1, "value_too_deep")]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_deep_message_that_is_no_push_is_an_error_and_the_session_stays_open(
    memory_server: Server, encoding: str
) -> None:
    server = memory_server
    tenant = await server.tenant()
    headers = server.headers(tenant, "dispatcher-1")
    with connected(await server.client.websocket_connect(WS, headers=headers), encoding) as peer:
        peer.hello()
        peer.catch_up()
        # A deep array where an object belongs; a push whose deep value never ends.
        frame, _ = ws_push_frame(encoding, 50_000)
        if isinstance(frame, str):
            peer.session.send_text("[" * 50_000 + "]" * 50_000)
            peer.session.send_text(frame.replace("]" * 50_000, ""))
        else:
            peer.session.send_bytes(b"\x91" * 50_000 + b"\x90")
            peer.session.send_bytes(frame.replace(b"\x90", b"", 1))
        assert [peer.recv_type("error")["code"] for _ in range(2)] == ["invalid_request", "malformed_json"]
        peer.send({"type": "ping", "id": "still-here"})
        assert peer.recv_type("pong") == {"type": "pong", "id": "still-here"}


# --- channels -----------------------------------------------------------------------------


async def test_a_driver_cannot_publish_an_entity_into_another_drivers_channel(server: Server) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    d1 = server.headers(tenant, "d1", "driver", ("driver:d1",))
    d2 = server.headers(tenant, "d2", "driver", ("driver:d2",))

    results = await server.push(
        d1,
        "phone-d1",
        [
            change(1, "dlv-both", [set_("driver_id", ["d1", "d2"]), set_("status", "pending")]),
            change(2, "dlv-own", [set_("driver_id", "d1"), set_("status", "pending")]),
            # Widening its own entity into d2's channel is publishing too.
            change(3, "dlv-own", [set_("driver_id", ["d1", "d2"])], context={"phone-d1": 2}),
            change(4, "dlv-own", [set_("status", "delivered")], context={"phone-d1": 2}),
        ],
    )
    assert statuses(results) == ["forbidden", "applied", "forbidden", "applied"]
    assert await dead_letters(server, tenant) == [("phone-d1", 1, "forbidden"), ("phone-d1", 3, "forbidden")]
    seen_by_d2, _ = await server.pull_all(d2)
    assert seen_by_d2 == []
    seen_by_boss, _ = await server.pull_all(boss)
    assert [(e["entity"], e["fields"]["driver_id"]["value"]) for e in seen_by_boss] == [("dlv-own", "d1")]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_driver_cannot_publish_into_another_drivers_channel_over_websocket(
    server: Server, encoding: str
) -> None:
    tenant = await server.tenant()
    d1 = server.headers(tenant, "d1", "driver", ("driver:d1",))
    d2 = server.headers(tenant, "d2", "driver", ("driver:d2",))
    changes = [
        change(1, "dlv-both", [set_("driver_id", ["d1", "d2"]), set_("status", "pending")]),
        change(2, "dlv-own", [set_("driver_id", "d1"), set_("status", "pending")]),
    ]
    with connected(await server.client.websocket_connect(WS, headers=d1), encoding) as peer:
        peer.hello()
        peer.catch_up()
        peer.send({"type": "push", "id": "p-1", "replica": "phone-d1", "changes": changes})
        result = peer.recv_type("push_result")
    assert statuses(result["results"]) == ["forbidden", "applied"]
    assert await dead_letters(server, tenant) == [("phone-d1", 1, "forbidden")]
    seen_by_d2, _ = await server.pull_all(d2)
    assert seen_by_d2 == []


async def test_channels_a_driver_holds_or_the_entity_had_may_stay_and_dispatchers_publish_anywhere(
    server: Server,
) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    d1 = server.headers(tenant, "d1", "driver", ("driver:d1", "depot:north"))
    d2 = server.headers(tenant, "d2", "driver", ("driver:d2",))
    # A dispatcher puts an entity in two drivers' channels; d1 may edit it, keeping d2's channel.
    assert statuses(await server.push(boss, "web-1", [change(1, "dlv-1", [set_("driver_id", ["d1", "d2"])])])) == [
        "applied"
    ]
    results = await server.push(
        d1,
        "phone-d1",
        [
            change(1, "dlv-1", [set_("status", "delivered")], context={"web-1": 1}),
            change(2, "dlv-1", [set_("depot", "north")], context={"web-1": 1}),  # a channel d1 holds
            change(3, "dlv-1", [set_("depot", "south")], context={"web-1": 1}),  # one it does not
        ],
    )
    assert statuses(results) == ["applied", "applied", "forbidden"]
    seen_by_d2, _ = await server.pull_all(d2)
    assert [(e["entity"], e["fields"]["status"]["value"]) for e in seen_by_d2] == [("dlv-1", "delivered")]


# --- change ids ----------------------------------------------------------------------------


async def test_a_change_id_is_an_echo_two_counters_with_one_id_are_two_changes(server: Server) -> None:
    """PROTOCOL.md §4.2, docs/adr/0017: the dot is the identity; the id tells duplicates from reused counters."""
    tenant = await server.tenant()
    h = server.headers(tenant, "driver-1")
    first = change(1, "dlv-1", [inc(5)])
    second = change(2, "dlv-1", [inc(7)]) | {"id": first["id"]}
    assert statuses(await server.push(h, "phone-1", [first, second])) == ["applied", "applied"]
    assert (await entity(server, h, "dlv-1"))["fields"]["cod_cents"]["value"] == 12
    # For a counter at or below the high-water mark, the id decides: same id, a duplicate; another, n_reused.
    replay = await server.push(h, "phone-1", [second, change(2, "dlv-1", [inc(7)])])
    assert statuses(replay) == ["duplicate", "n_reused"]
    assert (await entity(server, h, "dlv-1"))["fields"]["cod_cents"]["value"] == 12
    # A NUL cannot be stored as text (PostgreSQL): the schema refuses it in a change id.
    bad = change(3, "dlv-1", [inc(1)]) | {"id": "a\u0000b"}
    r = await server.client.post("/v1/sync/push", json={"replica": "phone-1", "changes": [bad]}, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


@pytest.mark.parametrize(
    "value",
    [
        b"\x01\x02",
        msgspec.msgpack.Ext(5, b"ab"),
        {"when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        {1: "a"},
        float("nan"),
    ],
    ids=["binary", "extension", "timestamp", "int-key", "nan"],
)
async def test_a_msgpack_value_that_is_not_json_is_rejected_alone_and_pull_keeps_working(
    memory_server: Server, value: Any
) -> None:
    """Over MessagePack a value can be what JSON readers cannot take; stored, it would break every pull."""
    server = memory_server
    tenant = await server.tenant()
    headers = server.headers(tenant, "dispatcher-1")
    changes = [change(1, "dlv-1", [set_("recipient", None)]), change(2, "dlv-2", [set_("status", "pending")])]
    message = {"type": "push", "id": "p-bin", "replica": "phone-1", "changes": changes}
    raw = msgspec.msgpack.encode(message)
    assert raw.count(b"\xc0") == 1
    frame = raw.replace(b"\xc0", msgspec.msgpack.encode(value))
    with connected(await server.client.websocket_connect(WS, headers=headers), "msgpack") as peer:
        peer.hello()
        peer.catch_up()
        peer.session.send_bytes(frame)
        result = peer.recv_type("push_result")
        assert statuses(result["results"]) == ["invalid_change", "applied"]
    pulled, _ = await server.pull_all(headers)
    assert [e["entity"] for e in pulled] == ["dlv-2"]
    assert await dead_letters(server, tenant) == [("phone-1", 1, "invalid_change")]
    admin = server.headers(tenant, "admin-1", "admin")
    shown = await server.client.get("/v1/admin/dead-letters/phone-1/1", headers=admin)
    assert shown.status_code == 200, shown.text  # kept with the value as text
