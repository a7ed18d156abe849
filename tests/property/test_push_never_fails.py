"""No schema-valid push is ever a request-level error, and nothing accepted is lost.

Random pushes that the JSON Schema accepts (every op kind, odd values: integers far
outside 64 bits, values nested up to 40 deep, unicode, empty strings, negative
increments, removes of absent elements, valid and garbage text updates, deletes,
changes without ops, a driver's channels) go through the real HTTP app on every store
backend, over HTTP, and over the WebSocket in MessagePack frames, whose values can
also be binary, extensions, timestamps, NaN or maps with integer keys. Each push
answers one result per change (HTTP 200, a ``push_result``), each ``applied`` or
``rejected`` with a per-change code of PROTOCOL.md §6, each rejection is kept as a
dead letter the admin API can show, the pulled state holds every applied change,
and a replay is all duplicates.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from litestar.testing import TestClient
from pycrdt import Doc, Text

from syncproto import errors
from syncserver.admin.tenants import create_tenant
from syncserver.app import create_app
from syncserver.settings import Settings
from syncstore import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
REPLICA = "phone-1"
FIELDS = ["status", "recipient", "driver_id", "cod_cents", "scanned", "notes", "trail", "x"]
HUGE = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**70, -(2**70), 2**31, 2**31 - 1])
INTS = st.one_of(st.integers(), HUGE)
HUGE_NATURALS = st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 2**70])
NATURALS = st.integers(min_value=0) | HUGE_NATURALS
CHANGE_IDS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=64)
"""Any text but NUL (the schema's pattern)."""
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=False, allow_infinity=False), TEXT)


def _nested(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


JSON_VALUES = st.one_of(
    st.recursive(
        SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
    ),
    st.builds(_nested, st.integers(0, 40), SCALARS),
)


def _yjs_update(text: str) -> str:
    doc: Doc[Any] = Doc()
    doc["text"] = Text(text)
    return base64.b64encode(doc.get_update()).decode()


TEXT_UPDATES = st.one_of(
    st.builds(_yjs_update, TEXT),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    TEXT,
)
SET_ELEMENTS = st.one_of(st.booleans(), INTS, st.floats(allow_nan=False, allow_infinity=False), TEXT)
FIELD = st.sampled_from(FIELDS)


def ops(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda f, v: {"op": "set", "field": f, "value": v}, FIELD, values),
        st.builds(lambda f, by: {"op": "inc", "field": f, "by": by}, st.sampled_from(["cod_cents", "x"]), INTS),
        st.builds(lambda v: {"op": "add", "field": "scanned", "value": v}, SET_ELEMENTS),
        st.builds(
            lambda f, v: {"op": "remove", "field": f, "value": v}, st.sampled_from(["scanned", "x"]), SET_ELEMENTS
        ),
        st.builds(lambda f, u: {"op": "text", "field": f, "update": u}, st.sampled_from(["notes", "x"]), TEXT_UPDATES),
        st.builds(lambda v: {"op": "append", "field": "trail", "value": v}, values),
        st.builds(
            lambda v: {"op": "set", "field": "driver_id", "value": v},
            st.one_of(st.sampled_from(["d1", "d2", ["d1", "d2"], ""]), TEXT, st.lists(TEXT, max_size=3)),
        ),
    )


DELETE = st.just([{"op": "delete"}])


@st.composite
def change_bodies(draw: st.DrawFn, values: st.SearchStrategy[Any] = JSON_VALUES) -> dict[str, Any]:
    return {
        "id": draw(st.uuids().map(str) | CHANGE_IDS),
        "collection": draw(st.sampled_from(["deliveries", "notes", "a.b:c@d-e"])),
        "entity": draw(st.sampled_from(["e1", "e2", "e3"])),
        "hlc": [
            draw(st.one_of(*[st.integers(0, 2**45)] * 4, NATURALS)),
            draw(st.one_of(*[st.integers(0, 9)] * 4, NATURALS)),
        ],
        "context": draw(
            st.dictionaries(
                st.sampled_from([REPLICA, "web-1", "x"]), st.one_of(*[st.integers(0, 50)] * 4, NATURALS), max_size=3
            )
        ),
        "ops": draw(st.one_of(DELETE, st.lists(ops(values), max_size=4))),
    }


PUSHES = st.lists(st.lists(change_bodies(), min_size=1, max_size=6), min_size=1, max_size=3)
MSGPACK_ONLY = st.one_of(
    st.binary(max_size=6),
    st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=4)),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dictionaries(st.integers(), SCALARS, min_size=1, max_size=2),
    st.floats(),
)
"""What a MessagePack frame can carry in a value and JSON cannot."""
MSGPACK_PUSHES = st.lists(
    st.lists(change_bodies(JSON_VALUES | MSGPACK_ONLY | st.lists(MSGPACK_ONLY, max_size=2)), min_size=1, max_size=6),
    min_size=1,
    max_size=3,
)
ROLES = st.sampled_from([("dispatcher", ()), ("driver", ("driver:d1",))])


class App:
    """One app per backend for the whole module; each example gets a tenant of its own."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self.app = client.app

    def tenant(self) -> str:
        tid = f"prop-{uuid.uuid4().hex[:8]}"
        state = self.app.state
        self.client.blocking_portal.call(create_tenant, state.store, state.keyring, tid)
        return tid

    def headers(self, tenant: str, sub: str, role: str, channels: tuple[str, ...] = ()) -> dict[str, str]:
        token = self.app.state.verifier.issue(tenant, sub, role, channels)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.fixture(scope="module", params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp(f"push-{request.param}")
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'sync.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    config = Settings(
        database_url=url,
        data_dir=tmp / "data",
        master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        jwt_secret=secrets.token_urlsafe(32),
        collections_file=ROOT / "config" / "collections.toml",
    )
    store = MemoryStore() if url == "memory://" else None
    with TestClient(create_app(config, store=store)) as client:
        yield App(client)


def post(app: App, path: str, headers: dict[str, str], body: Any) -> Any:
    content = json.dumps(body, ensure_ascii=False).encode()  # Python's json keeps integers of any size
    r = app.client.post(path, content=content, headers=headers)
    assert r.status_code == 200, f"{path} answered {r.status_code}: {r.text}"
    return r.json()


def pull_all(app: App, headers: dict[str, str]) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = post(app, "/v1/sync/pull", headers, {"cursor": cursor})
        entities += page["changes"]
        cursor = page["cursor"]
        if not page["more"]:
            return entities


class Outcome:
    """What the pushes of one example did, checked result by result."""

    def __init__(self) -> None:
        self.applied: dict[tuple[str, str], int] = {}
        self.seqs: list[int] = []
        self.rejected = 0
        self.results: list[dict[str, Any]] = []

    def record(self, changes: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        assert [(r["id"], r["n"]) for r in results] == [(c["id"], c["n"]) for c in changes]
        self.results.extend(results)
        for c, r in zip(changes, results, strict=True):
            assert r["status"] in ("applied", "rejected"), r
            event(r["status"] if r["status"] == "applied" else r["error"]["code"])
            if r["status"] == "applied":
                self.applied[(c["collection"], c["entity"])] = c["n"]
                self.seqs.append(r["seq"])
            else:
                assert r["error"]["code"] in errors.CHANGE_CODES, r
                self.rejected += 1

    def check_nothing_applied_is_lost(self, app: App, tenant: str) -> None:
        # The sequence has no gap, and each entity a change was applied to shows it.
        assert self.seqs == list(range(1, len(self.seqs) + 1))
        boss = app.headers(tenant, "boss", "dispatcher")
        pulled = {(e["collection"], e["entity"]): e["vv"].get(REPLICA) for e in pull_all(app, boss)}
        assert pulled == self.applied
        # Every rejection is a dead letter, and the admin API can show each one.
        admin = app.headers(tenant, "admin-1", "admin")
        r = app.client.get("/v1/admin/dead-letters", headers=admin, params={"limit": 100})
        assert r.status_code == 200, r.text
        letters = r.json()["dead_letters"]
        assert len(letters) == self.rejected
        for letter in letters:
            shown = app.client.get(f"/v1/admin/dead-letters/{letter['replica']}/{letter['n']}", headers=admin)
            assert shown.status_code == 200, shown.text


def numbered(pushes: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """The pushes with counters 1, 2, 3, ... in order."""
    n = 0
    out = []
    for batch in pushes:
        changes = []
        for body in batch:
            n += 1
            changes.append({**body, "n": n})
        out.append(changes)
    return out


@given(pushes=PUSHES, role=ROLES)
def test_no_schema_valid_push_is_a_request_error_and_nothing_applied_is_lost(
    app: App, pushes: list[list[dict[str, Any]]], role: tuple[str, tuple[str, ...]]
) -> None:
    tenant = app.tenant()
    pusher = app.headers(tenant, "user-1", role[0], role[1])
    outcome = Outcome()
    for changes in numbered(pushes):
        outcome.record(changes, post(app, "/v1/sync/push", pusher, {"replica": REPLICA, "changes": changes})["results"])
    outcome.check_nothing_applied_is_lost(app, tenant)
    # A replay of everything is answered as it was the first time: an applied change is a duplicate, a refused
    # one is refused again with the same code and message (PROTOCOL §4.2).
    sent = [c for batch in numbered(pushes) for c in batch]
    replay = post(app, "/v1/sync/push", pusher, {"replica": REPLICA, "changes": sent})["results"]
    assert replay == [
        {"status": "duplicate", "id": c["id"], "n": c["n"]} if first["status"] == "applied" else first
        for c, first in zip(sent, outcome.results, strict=True)
    ]


def _msgpack_ints(value: Any) -> Any:
    """MessagePack has no integers beyond [-2^63, 2^64 - 1]: clamp to them (still out of int64 above)."""
    if isinstance(value, dict):
        return {_msgpack_ints(k): _msgpack_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_msgpack_ints(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return min(max(value, -(2**63)), 2**64 - 1)
    return value


def _next(ws: Any, kind: str) -> dict[str, Any]:
    """The next server message of ``kind`` on a MessagePack session, past the change stream."""
    while True:
        message: dict[str, Any] = msgspec.msgpack.decode(ws.receive_bytes(timeout=10))
        if message["type"] == kind:
            return message
        assert message["type"] in ("welcome", "changes", "synced", "ping"), message


@given(pushes=MSGPACK_PUSHES, role=ROLES)
def test_no_schema_valid_websocket_push_is_a_request_error_even_with_msgpack_only_values(
    app: App, pushes: list[list[dict[str, Any]]], role: tuple[str, tuple[str, ...]]
) -> None:
    """The same over the WebSocket in MessagePack frames, whose values can be what JSON has no type for."""
    tenant = app.tenant()
    pusher = app.headers(tenant, "user-1", role[0], role[1])
    outcome = Outcome()
    with app.client.websocket_connect("/v1/sync/ws", headers={"Authorization": pusher["Authorization"]}) as ws:
        ws.send_bytes(msgspec.msgpack.encode({"type": "hello", "versions": [1], "encoding": "msgpack"}))
        _next(ws, "synced")
        for i, changes in enumerate(_msgpack_ints(numbered(pushes))):
            message = {"type": "push", "id": f"p-{i}", "replica": REPLICA, "changes": changes}
            ws.send_bytes(msgspec.msgpack.encode(message))
            result = _next(ws, "push_result")
            assert result["id"] == f"p-{i}"
            outcome.record(changes, result["results"])
    outcome.check_nothing_applied_is_lost(app, tenant)
