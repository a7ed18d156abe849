"""A device learns that a pending attachment became available or refused, with no change to its entity.

Against a real server process over HTTP: device A (a dispatcher's web app)
writes the references, device B (driver ``drv-status``'s phone) pulls them while
they are pending; A uploads later, and B hears it from the status refresh
(PROTOCOL §10.2), not from a pull, within a bounded time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import msgspec

from syncclient import Attachments, AttachmentStatusChanged, Event, RemoteChange, SyncClient
from syncclient.localstore import LocalStore
from syncproto.attachments import AttachmentRef, AttachmentStatus
from syncproto.messages import EntityView, FieldView
from tests.sdk.conftest import SCHEMA, ServerProcess

DRIVER = "drv-status"
BOUND_S = 15.0
"""Longest a status may take to arrive: the refresh starts at 0.2 s and doubles (with jitter) up to 60 s."""


def device(server: ServerProcess, tmp: Path, replica: str, token: str, **kwargs: Any) -> SyncClient:
    return SyncClient(server.url, token, replica, tmp / f"{replica}.db", schema=SCHEMA, live_transports=(), **kwargs)


async def wait_for(heard: dict[str, AttachmentStatus], attachment_id: str, status: str) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    while heard.get(attachment_id) != status:
        assert loop.time() - began < BOUND_S, f"{attachment_id} not {status} after {BOUND_S} s: {heard}"
        await asyncio.sleep(0.05)
    return loop.time() - began


async def test_a_pulled_pending_attachment_becomes_available_or_refused_without_an_entity_change(
    real_server: ServerProcess, tmp_path: Path
) -> None:
    a = device(real_server, tmp_path, f"web-{uuid.uuid4().hex[:6]}", real_server.token("disp-1"))
    # B polls for changes only every 10 minutes: whatever it learns in this test comes from the status refresh.
    b = device(
        real_server,
        tmp_path,
        f"phone-{uuid.uuid4().hex[:6]}",
        real_server.token(DRIVER, "driver"),
        sync_interval=600.0,
        status_refresh_first=0.2,
    )
    files = Attachments(a, tmp_path / "a-files")
    photo = os.urandom(120_000)
    entity, other = f"dlv-{uuid.uuid4().hex[:8]}", f"dlv-{uuid.uuid4().hex[:8]}"
    a.collection("deliveries").set(entity, "driver_id", DRIVER)
    ref = files.attach("deliveries", entity, "pod_photo", photo, "image/jpeg")
    bad = files.attach("deliveries", entity, "note_file", b"not an image", "text/plain")
    a.collection("deliveries").set(other, "driver_id", "someone-else")
    hidden = files.attach("deliveries", other, "pod_photo", b"\xff\xd8 other", "image/jpeg")
    await a.sync()  # the references reach the server before their bytes

    heard: dict[str, AttachmentStatus] = {}
    events: list[Event] = []
    b.on_attachment_status(lambda i, status: heard.__setitem__(i, status))
    b.subscribe(events.append, RemoteChange, AttachmentStatusChanged)
    await b.sync()
    assert b.attachment_status(ref.id) == "pending"
    assert b.attachment_status(bad.id) == "pending"
    assert b.attachment_status(hidden.id) is None  # another driver's entity: never pulled, never asked
    assert [type(e) for e in events] == [RemoteChange]
    seq = b.store.view("deliveries", entity).seq  # type: ignore[union-attr]
    b.start()
    try:
        states = await files.upload_pending()
        assert {s.id: s.state for s in states} == {ref.id: "uploaded", bad.id: "refused", hidden.id: "uploaded"}

        took = await wait_for(heard, ref.id, "available")
        await wait_for(heard, bad.id, "refused")
        assert took < BOUND_S
        assert (b.attachment_status(ref.id), b.attachment_status(bad.id)) == ("available", "refused")
        assert b.attachment_status(hidden.id) is None
        changed = [e for e in events if isinstance(e, AttachmentStatusChanged)]
        assert sorted((e.id, e.previous, e.status) for e in changed) == sorted(
            [(ref.id, "pending", "available"), (bad.id, "pending", "refused")]
        )
        assert [type(e) for e in events].count(RemoteChange) == 1, "no entity changed"
        assert b.store.view("deliveries", entity).seq == seq  # type: ignore[union-attr]
        assert b.store.pending_attachments() == []

        # B can fetch the bytes it was told about.
        b_files = Attachments(b, tmp_path / "b-files")
        path = await b_files.fetch(ref)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256
        await b_files.aclose()
    finally:
        await files.aclose()
        await b.aclose()
        await a.aclose()


async def test_refresh_asks_in_batches_of_500_and_forgets_ids_it_may_not_see(
    real_server: ServerProcess, tmp_path: Path
) -> None:
    b = device(real_server, tmp_path, f"phone-{uuid.uuid4().hex[:6]}", real_server.token(DRIVER, "driver"))
    ids = [f"gone-{i:04d}" for i in range(1100)]
    b.store.set_attachment_statuses(dict.fromkeys(ids, "pending"))
    asked: list[int] = []
    transport = b.transport
    original = transport.attachment_status  # type: ignore[attr-defined]

    async def counting(batch: list[str]) -> dict[str, AttachmentStatus]:
        asked.append(len(batch))
        found: dict[str, AttachmentStatus] = await original(batch)
        return found

    transport.attachment_status = counting  # type: ignore[attr-defined]
    try:
        assert await b.refresh_attachment_statuses() == []
        assert asked == [500, 500, 100]
        assert b.store.pending_attachments() == []  # none visible to this driver: not asked about again
    finally:
        await b.aclose()


def test_a_reference_pulled_without_a_status_counts_as_pending(tmp_path: Path) -> None:
    """A live frame may omit ``attachments`` (PROTOCOL §10.2): the reference is asked about all the same."""
    store = LocalStore(tmp_path / "local.db", "phone-1")
    photo = AttachmentRef(id="p1", size=3, sha256="0" * 64, media_type="image/jpeg")
    known = AttachmentRef(id="p2", size=3, sha256="0" * 64, media_type="image/jpeg")
    fields = {
        "pod_photo": FieldView(kind="register", value=photo.to_value()),
        "pod_signature": FieldView(kind="register", value=known.to_value()),
    }
    bare = EntityView("deliveries", "dlv-1", 1, {"web-1": 1}, False, fields)
    store.apply_page([bare], [], "c1")
    assert store.pending_attachments() == ["p1", "p2"]
    with_status = msgspec.structs.replace(bare, seq=2, attachments={"p2": "available"})
    events = store.apply_page([with_status], [], "c2")
    assert events[-1:] == [AttachmentStatusChanged("p2", "available", "pending")]
    assert store.pending_attachments() == ["p1"]
    store.close()
