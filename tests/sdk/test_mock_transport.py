"""MockTransport and MemoryServer: apps can test sync behaviour with no server at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncclient import (
    Event,
    MemoryServer,
    MockTransport,
    RejectedChange,
    ServerError,
    SyncClient,
    TransportError,
    load_schema,
)
from syncproto import errors
from syncproto.messages import (
    Applied,
    EntityView,
    FieldView,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)
from tests.sdk.conftest import COLLECTIONS

SCHEMA = load_schema(COLLECTIONS)
Handler = Callable[[PushRequest | PullRequest], PushResponse | PullResponse]


def mock_client(tmp: Path, replica: str, handler: object) -> SyncClient:
    return SyncClient(None, None, replica, tmp / f"{replica}.db", transport=MockTransport(handler), schema=SCHEMA)  # type: ignore[arg-type]


async def test_a_plain_function_can_play_the_server(tmp_path: Path) -> None:
    pushed: list[PushRequest] = []

    async def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if isinstance(request, PushRequest):
            pushed.append(request)
            return PushResponse([Applied(c.id, c.n, seq=c.n) for c in request.changes])
        view = EntityView("deliveries", "dlv-9", seq=1, vv={"web-1": 1}, deleted=False)
        view.fields = {"status": FieldView(kind="register", value="pending")}
        return PullResponse([view], cursor="c1")

    client = mock_client(tmp_path, "phone-a", handler)
    change = client.collection("deliveries").set("dlv-1", status="delivered")
    await client.sync()
    assert [c.id for r in pushed for c in r.changes] == [change.id]
    assert pushed[0].replica == "phone-a"
    assert client.collection("deliveries").get("dlv-9") == {"status": "pending"}
    assert client.store.cursor() == "c1"
    await client.aclose()


async def test_a_handler_returning_the_wrong_message_is_an_error(tmp_path: Path) -> None:
    client = mock_client(tmp_path, "phone-a", lambda request: PullResponse())
    client.collection("deliveries").set("dlv-1", status="x")
    with pytest.raises(TypeError, match="expected PushResponse"):
        await client.sync()
    assert client.pending_count() == 1
    await client.aclose()


async def test_two_clients_converge_through_a_memory_server(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    a = mock_client(tmp_path, "phone-a", server.as_user("driver-17"))
    b = mock_client(tmp_path, "web-1", server.as_user("dispatcher-1"))
    a.collection("deliveries").set("dlv-1", status="pending")
    await a.sync()
    await b.sync()
    a.collection("deliveries").set("dlv-1", status="delivered")
    b.collection("deliveries").set("dlv-1", status="failed")
    b.collection("deliveries").inc("dlv-1", "cod_cents", 700)
    for client in (a, b, a):
        await client.sync()
    assert a.collection("deliveries").list() == b.collection("deliveries").list()
    assert a.collection("deliveries").get("dlv-1") == {"status": "delivered", "cod_cents": 700}
    [conflict] = server.conflicts
    assert {(v.value, v.user) for v in conflict.values} == {("delivered", "driver-17"), ("failed", "dispatcher-1")}
    await a.aclose()
    await b.aclose()


async def test_offline_sync_fails_keeps_the_outbox_and_a_lost_answer_is_replayed_once(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    mode = {"state": "offline"}

    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if mode["state"] == "offline":
            raise TransportError("no signal")
        response = server(request)
        if mode["state"] == "lose-answer" and isinstance(request, PushRequest):
            mode["state"] = "online"
            raise TransportError("connection reset after the server committed")
        return response

    client = mock_client(tmp_path, "phone-a", handler)
    changes = [client.collection("deliveries").inc("dlv-1", "cod_cents", 100) for _ in range(3)]
    with pytest.raises(TransportError):
        await client.sync()
    assert client.pending_count() == 3

    mode["state"] = "lose-answer"
    with pytest.raises(TransportError):
        await client.sync()
    assert len(server.log) == 3  # applied, but the phone does not know
    assert client.pending_count() == 3

    stats = await client.sync()
    assert (stats.duplicates, stats.applied) == (3, 0)
    assert [(e.replica, e.n, e.id) for e in server.log] == [("phone-a", i + 1, c.id) for i, c in enumerate(changes)]
    assert client.collection("deliveries").get("dlv-1") == {"cod_cents": 300}
    await client.aclose()


async def test_a_server_that_lost_changes_gets_the_pending_ones_renumbered_into_its_gap(tmp_path: Path) -> None:
    client = mock_client(tmp_path, "phone-a", MemoryServer(SCHEMA))
    for _ in range(3):
        client.collection("deliveries").inc("dlv-1", "cod_cents", 1)
    await client.sync()
    # The server is restored from a backup that predates those three changes.
    fresh = MemoryServer(SCHEMA)
    client.transport = MockTransport(fresh)
    later = [client.collection("deliveries").inc("dlv-2", "cod_cents", 5) for _ in range(2)]
    assert [c.n for c in later] == [4, 5]

    stats = await client.sync()

    assert (stats.renumbered, stats.resets) == (2, 1)
    assert [(e.n, e.id) for e in fresh.log] == [(1, later[0].id), (2, later[1].id)]
    assert client.pending_count() == 0
    assert client.store.counter() == 2
    assert client.collection("deliveries").get("dlv-2") == {"cod_cents": 10}
    await client.aclose()


def refusing_huge_bodies() -> tuple[MemoryServer, Handler]:
    """A server whose body limit a push with entity ``dlv-huge`` is over (413, as a whole)."""
    server = MemoryServer(SCHEMA)

    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if isinstance(request, PushRequest) and any(c.entity == "dlv-huge" for c in request.changes):
            raise ServerError(413, errors.BODY_TOO_LARGE, "the body is over the server's limit")
        return server(request)

    return server, handler


async def test_a_change_too_large_for_any_push_is_rejected_locally_without_blocking(tmp_path: Path) -> None:
    server, handler = refusing_huge_bodies()
    client = mock_client(tmp_path, "phone-a", handler)
    events: list[Event] = []
    client.subscribe(events.append, RejectedChange)
    d = client.collection("deliveries")
    first = d.set("dlv-1", status="pending")
    huge = d.set("dlv-huge", photo="...")
    last = d.set("dlv-2", status="pending")

    stats = await client.sync()

    assert [(e.id, e.code) for e in events if isinstance(e, RejectedChange)] == [(huge.id, errors.BODY_TOO_LARGE)]
    assert [e.id for e in server.log] == [first.id, last.id]
    assert [e.n for e in server.log] == [1, 2]  # the gap was closed by renumbering
    # Closed before the next push: not read as a server that lost changes, so no reset (a full pull again).
    assert (stats.renumbered, stats.resets, stats.pulled) == (1, 0, 2)
    assert client.pending_count() == 0
    assert client.store.counter() == 2
    assert d.set("dlv-3", status="pending").n == 3
    await client.aclose()


async def test_a_last_change_too_large_for_any_push_gives_its_number_back(tmp_path: Path) -> None:
    """The rejected change was the last one written: the next change takes its number, not one past it (a gap)."""
    server, handler = refusing_huge_bodies()
    client = mock_client(tmp_path, "phone-a", handler)
    d = client.collection("deliveries")
    d.set("dlv-1", status="pending")
    await client.sync()
    assert d.set("dlv-huge", photo="...").n == 2
    stats = await client.sync()
    assert (stats.rejected, stats.renumbered, stats.resets) == (1, 0, 0)
    assert client.store.counter() == 1
    after = d.set("dlv-2", status="pending")
    assert after.n == 2
    stats = await client.sync()
    assert (stats.applied, stats.resets) == (1, 0)
    assert [e.n for e in server.log] == [1, 2]
    await client.aclose()


async def test_an_expired_cursor_resets_to_a_full_pull(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    writer = mock_client(tmp_path, "web-1", server)
    reader = mock_client(tmp_path, "phone-a", server)
    writer.collection("deliveries").set("dlv-1", status="pending")
    await writer.sync()
    await reader.sync()
    writer.collection("deliveries").set("dlv-2", status="pending")
    await writer.sync()
    server.expire_cursors()
    stats = await reader.sync()
    assert stats.resets == 1
    assert sorted(reader.collection("deliveries").list()) == ["dlv-1", "dlv-2"]
    await writer.aclose()
    await reader.aclose()


async def test_a_foreign_cursor_starts_over_instead_of_failing_forever(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    client = mock_client(tmp_path, "phone-a", server)
    client.collection("deliveries").set("dlv-1", status="pending")
    await client.sync()
    with client.store.transaction():
        client.store._set_meta("cursor", "from-another-server")
    stats = await client.sync()
    assert stats.resets == 1
    assert client.store.cursor() == f"mem:{server.seq}"
    await client.aclose()


def test_the_memory_server_refuses_a_replica_of_another_user() -> None:
    server = MemoryServer()
    push = PushRequest("phone-a", [])
    server.as_user("driver-1")(push)
    with pytest.raises(ServerError) as info:
        server.as_user("driver-2")(push)
    assert info.value.code == errors.REPLICA_FORBIDDEN


async def test_a_fresh_client_pulling_in_pages_gets_every_field_from_a_memory_server(tmp_path: Path) -> None:
    """Entities created early and changed late are met on later pages and still bring their older fields."""
    server = MemoryServer(SCHEMA)
    server.max_pull_limit = 2
    a = mock_client(tmp_path, "phone-a", server)
    for i in range(6):
        a.collection("deliveries").set(f"dlv-{i}", status="pending")
        a.collection("deliveries").inc(f"dlv-{i}", "cod_cents", 100)
    await a.sync()
    for i in range(3):
        a.collection("deliveries").set(f"dlv-{i}", status="delivered")
    await a.sync()
    b = mock_client(tmp_path, "web-1", server)
    await b.sync()
    assert b.collection("deliveries").list() == a.collection("deliveries").list()
    assert b.collection("deliveries").get("dlv-0") == {"status": "delivered", "cod_cents": 100}
    await a.aclose()
    await b.aclose()
