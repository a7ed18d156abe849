"""Entities a pull names ``unavailable`` (PROTOCOL §4.4): kept, remembered across restarts, read back with GET.

A scripted server (pages queued by the test, ``GET /v1/entities/...`` answered per
entity) and a clock the test moves. ``tests/integration/test_sdk_unavailable.py``
runs the same story against a real server whose entity row is damaged and repaired.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncclient import EntityUnavailable, Event, MockTransport, RejectedChange, RemoteChange, SyncClient
from syncclient.backoff import Backoff
from syncclient.errors import ServerError, TransportError
from syncclient.localstore import LocalStore
from syncclient.unavailable import UnavailableEntities
from syncproto import errors
from syncproto.messages import (
    Applied,
    EntityView,
    ErrorBody,
    Eviction,
    FieldView,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    Rejected,
    Unavailable,
)


def entity(entity_id: str, vv: dict[str, int], seq: int = 1, **fields: object) -> EntityView:
    views = {
        name: FieldView("counter", value) if isinstance(value, int) else FieldView("register", value)
        for name, value in fields.items()
    }
    return EntityView("deliveries", entity_id, seq, vv, False, views)


def named(entity_id: str, seq: int) -> Unavailable:
    return Unavailable("deliveries", entity_id, seq, errors.DATA_INTEGRITY)


Answer = Callable[[], EntityView | None]


def integrity() -> EntityView | None:
    raise ServerError(500, errors.DATA_INTEGRITY, "stored state failed its check")


def offline() -> EntityView | None:
    raise TransportError("network unreachable")


class ScriptedServer(MockTransport):
    """Serves queued pull pages and answers ``entity()`` per entity id (``None``: 404)."""

    def __init__(self) -> None:
        super().__init__(self.handle)
        self.pages: list[PullResponse] = []
        self.answers: dict[str, Answer] = {}
        self.gets: list[str] = []
        self.reject: set[str] = set()

    def handle(self, request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if isinstance(request, PushRequest):
            return PushResponse(
                [
                    Rejected(c.id, c.n, ErrorBody(errors.DATA_INTEGRITY, "unreadable"))
                    if c.entity in self.reject
                    else Applied(c.id, c.n, seq=c.n)
                    for c in request.changes
                ]
            )
        return self.pages.pop(0) if self.pages else PullResponse(cursor=request.cursor)

    async def entity(self, collection: str, entity: str) -> EntityView | None:
        self.gets.append(entity)
        return self.answers.get(entity, lambda: None)()


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


def client_of(tmp: Path, server: ScriptedServer, clock: Clock) -> tuple[SyncClient, list[Event]]:
    client = SyncClient(None, None, "phone-a", tmp / "phone-a.db", transport=server, wall_clock=clock)
    events: list[Event] = []
    client.subscribe(events.append)
    return client, events


async def pulled_then_named(client: SyncClient, server: ScriptedServer) -> None:
    """dlv-1 and dlv-2 pulled; then a page names dlv-1 unavailable and brings dlv-2's news."""
    server.pages.append(
        PullResponse(
            [
                entity("dlv-1", {"web-1": 1}, status="pending", note="ring twice"),
                entity("dlv-2", {"web-1": 2}, 2, status="pending"),
            ],
            cursor="c2",
        )
    )
    await client.sync()
    page = PullResponse([entity("dlv-2", {"web-1": 4}, 4, status="out_for_delivery")], cursor="c4")
    page.unavailable = [named("dlv-1", 3)]
    server.pages.append(page)
    await client.sync()


@pytest.fixture
def server() -> ScriptedServer:
    return ScriptedServer()


async def test_a_named_entity_keeps_its_copy_is_listed_once_and_survives_a_restart(
    tmp_path: Path, server: ScriptedServer
) -> None:
    client, events = client_of(tmp_path, server, Clock())
    await pulled_then_named(client, server)
    d = client.collection("deliveries")
    assert d.get("dlv-1") == {"status": "pending", "note": "ring twice"}
    assert d.get("dlv-2") == {"status": "out_for_delivery"}  # the rest of the page applied
    assert client.unavailable() == [named("dlv-1", 3)]
    assert [e for e in events if isinstance(e, EntityUnavailable)] == [
        EntityUnavailable("deliveries", "dlv-1", errors.DATA_INTEGRITY)
    ]
    assert server.gets == []  # not read again in the round that named it
    page = PullResponse(cursor="c5")
    page.unavailable = [named("dlv-1", 5)]
    server.pages.append(page)
    server.answers["dlv-1"] = integrity
    await client.sync()
    assert client.unavailable() == [named("dlv-1", 5)]
    assert len([e for e in events if isinstance(e, EntityUnavailable)]) == 1
    await client.aclose()

    store = LocalStore(tmp_path / "phone-a.db", "phone-a")  # committed with the page's cursor
    assert (store.unavailable(), store.cursor()) == ([named("dlv-1", 5)], "c5")
    store.close()


async def test_a_200_replaces_the_whole_state_and_a_404_drops_it(tmp_path: Path, server: ScriptedServer) -> None:
    client, events = client_of(tmp_path, server, Clock())
    await pulled_then_named(client, server)
    page = PullResponse(cursor="c5")
    page.unavailable = [named("dlv-2", 5)]
    server.pages.append(page)
    repaired = entity("dlv-1", {"web-1": 1, "phone-b": 2}, 3, status="delivered", cod_cents=2000)
    server.answers["dlv-1"] = lambda: repaired
    stats = await client.sync()  # dlv-1 is read back; dlv-2 was named in this round: next one
    assert server.gets == ["dlv-1"]
    assert stats.pulled == 1
    assert client.store.view("deliveries", "dlv-1") == repaired  # replaced, not merged: no "note"
    assert events[-1] == RemoteChange("deliveries", "dlv-1", ("cod_cents", "status"), False)
    assert client.unavailable() == [named("dlv-2", 5)]
    await client.sync()  # no answer for dlv-2: 404
    assert server.gets == ["dlv-1", "dlv-2"]
    assert client.collection("deliveries").view("dlv-2") is None
    assert events[-1] == RemoteChange("deliveries", "dlv-2", (), True)
    assert client.unavailable() == []
    await client.sync()
    assert server.gets == ["dlv-1", "dlv-2"]
    await client.aclose()


async def test_a_500_or_the_network_keeps_it_and_the_next_reads_wait_longer(
    tmp_path: Path, server: ScriptedServer
) -> None:
    clock = Clock()
    client, events = client_of(tmp_path, server, clock)
    await pulled_then_named(client, server)
    server.answers["dlv-1"] = integrity
    await client.sync()
    assert server.gets == ["dlv-1"]
    assert client.collection("deliveries").get("dlv-1") == {"status": "pending", "note": "ring twice"}
    assert client.unavailable() == [named("dlv-1", 3)]
    clock.ms += 29_000  # the first wait is 30-60 s
    await client.sync()
    assert len(server.gets) == 1
    clock.ms += 31_000
    server.answers["dlv-1"] = offline
    await client.sync()  # a failed read does not fail the round
    assert (len(server.gets), len(client.unavailable())) == (2, 1)
    clock.ms += 59_000  # the second wait is 60-120 s
    await client.sync()
    assert len(server.gets) == 2
    clock.ms += 61_000
    server.answers["dlv-1"] = lambda: entity("dlv-1", {"web-1": 3}, 3, status="delivered")
    await client.sync()
    assert len(server.gets) == 3
    assert client.unavailable() == []
    assert client.collection("deliveries").get("dlv-1") == {"status": "delivered"}
    assert isinstance(events[-1], RemoteChange)
    await client.aclose()


async def test_a_reset_or_an_eviction_forgets_it(tmp_path: Path, server: ScriptedServer) -> None:
    client, _ = client_of(tmp_path, server, Clock())
    await pulled_then_named(client, server)
    server.pages += [PullResponse(reset=True), PullResponse([entity("dlv-2", {"web-1": 4}, 4, status="x")], "c9")]
    await client.sync()
    assert client.unavailable() == []
    page = PullResponse(cursor="c10")
    page.unavailable = [named("dlv-2", 10)]
    server.pages.append(page)
    await client.sync()
    assert client.unavailable() == [named("dlv-2", 10)]
    server.pages.append(PullResponse(cursor="c11", evictions=[Eviction("deliveries", "dlv-2", 11)]))
    await client.sync()
    assert client.unavailable() == []
    assert server.gets == []
    await client.aclose()


async def test_reads_go_one_at_a_time_at_most_one_batch_per_round(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s.db", "phone-a")
    store.apply_page([], [], "c5", [named(f"dlv-{i}", i + 1) for i in range(5)])
    reads: list[str] = []

    class Reader:
        async def entity(self, collection: str, entity_id: str) -> EntityView | None:
            reads.append(entity_id)
            return entity(entity_id, {"web-1": 1}, status="delivered")

    events: list[Event] = []
    entities = UnavailableEntities(
        store, Reader(), events.append, lambda hlc: None, batch=2, backoff=Backoff(60, 600, rng=lambda: 0.0)
    )
    assert [await entities.after_round() for _ in range(4)] == [0, 2, 2, 1]  # the naming round reads nothing
    assert reads == [f"dlv-{i}" for i in range(5)]
    assert entities.list() == []
    assert sum(isinstance(e, RemoteChange) for e in events) == 5
    store.close()


async def test_a_change_rejected_with_data_integrity_is_a_dead_letter_and_the_rest_go_on(
    tmp_path: Path, server: ScriptedServer
) -> None:
    client, events = client_of(tmp_path, server, Clock())
    server.reject = {"dlv-1"}
    d = client.collection("deliveries")
    d.set("dlv-1", status="delivered")
    d.set("dlv-2", status="delivered")
    stats = await client.sync()
    assert (stats.rejected, stats.applied, client.pending_count()) == (1, 1, 0)
    assert [(r.entity, r.code) for r in client.rejections()] == [("dlv-1", errors.DATA_INTEGRITY)]
    assert [(e.entity, e.code) for e in events if isinstance(e, RejectedChange)] == [("dlv-1", errors.DATA_INTEGRITY)]
    await client.aclose()
