"""A reset keeps the synced state until the pull from the start has brought the server's back; evictions are told.

The device may lose the network between the ``reset`` answer and the end of the pull
from ``cursor: null``: meanwhile it must still show what it had and write with the
version vectors it had seen (PROTOCOL §2 context), or a ``remove`` removes nothing and
a ``set`` makes a false conflict.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from syncclient import Event, MemoryServer, MockTransport, RemoteChange, SyncClient, TransportError
from syncclient.localstore import SCHEMA_VERSION, LocalStore
from syncproto.messages import EntityView, Eviction, FieldView, PullRequest, PullResponse, PushRequest, PushResponse
from tests.sdk.test_mock_transport import SCHEMA


class Flaky:
    """A ``MemoryServer`` behind a network that can drop pulls from the start, or every pull after ``pulls``."""

    def __init__(self, server: MemoryServer, user: str) -> None:
        self.handle = server.as_user(user)
        self.fail_null_pull = False
        self.pulls_left: int | None = None
        self.requests: list[PullRequest] = []

    def __call__(self, request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if isinstance(request, PullRequest):
            self.requests.append(request)
            if self.fail_null_pull and request.cursor is None:
                raise TransportError("in a tunnel")
            if self.pulls_left is not None:
                if self.pulls_left == 0:
                    raise TransportError("in a tunnel")
                self.pulls_left -= 1
        return self.handle(request)


def client_of(tmp: Path, replica: str, handler: object, **kwargs: object) -> SyncClient:
    return SyncClient(
        None,
        None,
        replica,
        tmp / f"{replica}.db",
        transport=MockTransport(handler),  # type: ignore[arg-type]
        schema=SCHEMA,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_device_offline_after_a_reset_answer_keeps_its_state_and_write_context(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    web = client_of(tmp_path, "web-1", server.as_user("dispatcher-1"))
    net = Flaky(server, "driver-17")
    phone = client_of(tmp_path, "phone-a", net)
    w = web.collection("deliveries")
    w.set("dlv-1", status="out_for_delivery", address="1 Main St")
    w.add("dlv-1", "scanned", "parcel-1", "parcel-2")
    await web.sync()
    await phone.sync()
    d = phone.collection("deliveries")
    seen = d.view("dlv-1")
    assert seen is not None

    w.set("dlv-2", status="pending")
    await web.sync()
    server.expire_cursors()  # the phone's cursor is now older than the tombstone retention
    net.fail_null_pull = True  # the phone gets the reset answer, then loses the network
    try:
        await phone.sync()
        raise AssertionError("the pull from the start should have failed")
    except TransportError:
        pass
    assert phone.store.cursor() is None

    # Offline: still there, and local writes carry the version vector the driver saw.
    assert d.get("dlv-1") == {"status": "out_for_delivery", "address": "1 Main St", "scanned": ["parcel-1", "parcel-2"]}
    assert sorted(d.list()) == ["dlv-1"]  # dlv-2 is not pulled yet
    d.remove("dlv-1", "scanned", "parcel-1")
    d.set("dlv-1", "address", "2 Side St")
    contexts = [r.change.context for r in phone.store.outbox("deliveries")["dlv-1"]]
    assert contexts == [seen.vv, seen.vv]
    now = d.get("dlv-1")
    assert now is not None
    assert now["scanned"] == ["parcel-2"]

    net.fail_null_pull = False
    await phone.sync()
    await web.sync()
    for client in (phone, web):
        view = client.collection("deliveries").view("dlv-1")
        assert view is not None
        assert view.fields["scanned"].value == ["parcel-2"]  # the remove took effect
        assert view.fields["address"].value == "2 Side St"
        assert not view.fields["address"].siblings  # no false conflict with a value the driver had seen
    await phone.aclose()
    await web.aclose()


async def test_an_interrupted_reset_resumes_and_then_drops_what_the_server_no_longer_has(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    web = client_of(tmp_path, "web-1", server.as_user("dispatcher-1"))
    net = Flaky(server, "driver-17")
    phone = client_of(tmp_path, "phone-a", net, pull_limit=2)
    w = web.collection("deliveries")
    for i in range(6):
        w.set(f"dlv-{i}", status="pending")
    await web.sync()
    await phone.sync()
    d = phone.collection("deliveries")
    assert sorted(d.list()) == [f"dlv-{i}" for i in range(6)]
    events: list[Event] = []
    phone.subscribe(events.append)

    # dlv-5 is deleted and its tombstone collected: a device only learns it through the reset.
    del server.entities[("deliveries", "dlv-5")]
    w.set("dlv-0", status="delivered")
    await web.sync()
    server.expire_cursors()
    net.pulls_left = 2  # the reset answer, then one page of the pull from the start
    try:
        await phone.sync()
        raise AssertionError("the pull should have been cut")
    except TransportError:
        pass
    assert phone.store.cursor() is not None  # stored mid-pull, with the page
    assert sorted(d.list()) == [f"dlv-{i}" for i in range(6)]  # nothing dropped yet
    assert not any(isinstance(e, RemoteChange) and e.deleted for e in events)

    # The app restarts: the reset is resumed from the stored cursor, not restarted (the cursor of a pull from the
    # start carries the collection it began after: only a later one would reset it again).
    await phone.aclose()
    phone = client_of(tmp_path, "phone-a", net, pull_limit=2)
    phone.subscribe(events.append)
    net.pulls_left = None
    net.requests.clear()
    stats = await phone.sync()
    assert stats.resets == 0
    assert net.requests[0].cursor is not None
    d = phone.collection("deliveries")
    assert d.list() == {
        "dlv-0": {"status": "delivered"},
        **{f"dlv-{i}": {"status": "pending"} for i in range(1, 5)},
    }
    assert phone.store.view("deliveries", "dlv-5") is None
    assert RemoteChange("deliveries", "dlv-5", (), True) in events
    assert not phone.store.resetting()
    # Nothing of the old generation is left behind.
    rows = phone.store._db.execute("SELECT count(*) FROM entities WHERE epoch < ?", (phone.store._epoch(),))
    assert rows.fetchone()[0] == 0
    await phone.aclose()
    await web.aclose()


def scripted(pages: list[PullResponse]) -> Callable[[PushRequest | PullRequest], PushResponse | PullResponse]:
    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        assert isinstance(request, PullRequest)
        return pages.pop(0)

    return handler


def entity(name: str, n: int) -> EntityView:
    fields = {"status": FieldView("register", "x")}
    return EntityView("deliveries", name, seq=n, vv={"web-1": n}, deleted=False, fields=fields)


async def test_an_eviction_is_told_to_the_app_as_a_deletion(tmp_path: Path) -> None:
    pages = [PullResponse([entity("dlv-1", 1), entity("dlv-2", 2)], cursor="c2")]
    phone = client_of(tmp_path, "phone-a", scripted(pages))
    await phone.sync()
    events: list[Event] = []
    phone.subscribe(events.append)
    # dlv-2 left the driver's scope (reassigned); dlv-9 was never on this device.
    pages.append(
        PullResponse(cursor="c4", evictions=[Eviction("deliveries", "dlv-2", 3), Eviction("deliveries", "dlv-9", 4)])
    )
    await phone.sync()
    assert phone.collection("deliveries").get("dlv-2") is None
    assert events == [RemoteChange("deliveries", "dlv-2", (), True)]
    await phone.aclose()


async def test_an_eviction_during_the_pull_after_a_reset_drops_at_once(tmp_path: Path) -> None:
    pages = [PullResponse([entity("dlv-1", 1), entity("dlv-2", 2)], cursor="c2")]
    phone = client_of(tmp_path, "phone-a", scripted(pages))
    await phone.sync()
    events: list[Event] = []
    phone.subscribe(events.append)
    pages += [
        PullResponse(reset=True),
        PullResponse([entity("dlv-1", 1)], cursor="c3.0", more=True),
        PullResponse(cursor="c4", evictions=[Eviction("deliveries", "dlv-2", 4)], more=True),
    ]
    with pytest.raises(IndexError):  # the network drops before the last page
        await phone.sync()
    assert phone.store.resetting()
    assert sorted(phone.collection("deliveries").list()) == ["dlv-1"]
    assert RemoteChange("deliveries", "dlv-2", (), True) in events
    # dlv-1 came back unchanged from what the device showed: no event for it.
    assert not [e for e in events if isinstance(e, RemoteChange) and e.entity == "dlv-1"]
    pages.append(PullResponse(cursor="c5"))
    await phone.sync()
    assert not phone.store.resetting()
    assert sorted(phone.collection("deliveries").list()) == ["dlv-1"]
    await phone.aclose()


_V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,
    collection TEXT NOT NULL, entity TEXT NOT NULL, size INTEGER NOT NULL, change BLOB NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX outbox_pending ON outbox (n) WHERE acked = 0;
CREATE INDEX outbox_entity ON outbox (collection, entity, n);
CREATE TABLE entities (collection TEXT NOT NULL, entity TEXT NOT NULL, view BLOB NOT NULL,
    PRIMARY KEY (collection, entity)) WITHOUT ROWID;
CREATE TABLE attachment_status (id TEXT PRIMARY KEY, status TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE unavailable (collection TEXT NOT NULL, entity TEXT NOT NULL, seq INTEGER NOT NULL,
    code TEXT NOT NULL, PRIMARY KEY (collection, entity)) WITHOUT ROWID;
CREATE TABLE rejections (id TEXT PRIMARY KEY, n INTEGER NOT NULL, collection TEXT NOT NULL,
    entity TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL, change BLOB NOT NULL);
"""


async def test_a_database_of_the_first_local_schema_opens_and_resets_correctly(tmp_path: Path) -> None:
    server = MemoryServer(SCHEMA)
    web = client_of(tmp_path, "web-1", server.as_user("dispatcher-1"))
    web.collection("deliveries").set("dlv-1", status="pending")
    web.collection("deliveries").set("dlv-2", status="pending")
    await web.sync()
    # A file an SDK of schema 1 wrote: its pulled state and cursor, no epoch anywhere.
    fresh = client_of(tmp_path, "phone-new", server)
    await fresh.sync()
    views = fresh.store._db.execute("SELECT collection, entity, view FROM entities").fetchall()
    cursor = fresh.store.cursor()
    await fresh.aclose()
    path = tmp_path / "phone-a.db"
    db = sqlite3.connect(path)
    db.executescript(_V1_DDL)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("replica", "phone-a"), ("schema", "1"), ("cursor", cursor)])
    db.executemany("INSERT INTO entities VALUES (?, ?, ?)", views)
    db.execute("INSERT INTO attachment_status VALUES ('a-1', 'pending')")
    db.commit()
    db.close()

    phone = client_of(tmp_path, "phone-a", server)
    assert phone.store._meta("schema") == str(SCHEMA_VERSION)
    d = phone.collection("deliveries")
    assert sorted(d.list()) == ["dlv-1", "dlv-2"]
    d.set("dlv-1", status="delivered")
    web.collection("deliveries").set("dlv-3", status="pending")
    await web.sync()
    del server.entities[("deliveries", "dlv-2")]
    server.expire_cursors()
    stats = await phone.sync()
    assert stats.resets == 1
    assert d.list() == {"dlv-1": {"status": "delivered"}, "dlv-3": {"status": "pending"}}
    assert phone.attachment_status("a-1") is None  # not brought back by the pull from the start
    await phone.aclose()
    # And it opens again, already migrated.
    again = LocalStore(path, "phone-a")
    assert again.view("deliveries", "dlv-1") is not None
    again.close()
    await web.aclose()
