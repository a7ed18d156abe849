"""SDK clients against an in-process server over HTTP: writes, reads, results, events, reset."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from syncclient import ConflictDetected, Event, RejectedChange, RemoteChange, SyncClient
from syncproto import errors
from syncserver.settings import Limits, Settings
from tests.sdk.conftest import COLLECTIONS, InProcServer, assert_exactly_once, inproc_server


async def test_offline_writes_are_read_at_once_and_reach_the_other_device(server: InProcServer) -> None:
    phone = server.client("phone-a")
    web = server.client("web-1", role="dispatcher")
    d = phone.collection("deliveries")
    d.set("dlv-1", status="out_for_delivery", address="1 Main St")
    d.inc("dlv-1", "cod_cents", 12500)
    d.add("dlv-1", "scanned", "parcel-1", "parcel-2")
    d.remove("dlv-1", "scanned", "parcel-2")
    d.append("dlv-1", "trail", {"lat": 25.2, "lon": 55.27})
    d.edit_text("dlv-1", "notes", 0, 0, "Leave at door")
    expected = {
        "status": "out_for_delivery",
        "address": "1 Main St",
        "cod_cents": 12500,
        "scanned": ["parcel-1"],
        "trail": [{"lat": 25.2, "lon": 55.27}],
        "notes": "Leave at door",
    }
    assert d.get("dlv-1") == expected  # optimistic, before any sync
    assert phone.pending_count() == 6

    stats = await phone.sync()
    assert (stats.applied, stats.rejected, phone.pending_count()) == (6, 0, 0)
    assert phone.store.outbox_size() == 0  # the pull confirmed every acked change
    assert d.get("dlv-1") == expected

    events: list[Event] = []
    web.subscribe(events.append)
    await web.sync()
    assert web.collection("deliveries").get("dlv-1") == expected
    assert events == [RemoteChange("deliveries", "dlv-1", tuple(sorted(expected)), False)]
    assert server.app.state.store is not None
    await phone.aclose()
    await web.aclose()


async def test_concurrent_status_writes_become_a_conflict_event_and_a_logged_conflict(server: InProcServer) -> None:
    phone = server.client("phone-a", sub="driver-17")
    web = server.client("web-1", sub="dispatcher-1", role="dispatcher")
    web.collection("deliveries").set("dlv-1", status="pending")
    await web.sync()
    await phone.sync()

    phone.collection("deliveries").set("dlv-1", status="delivered")
    web.collection("deliveries").set("dlv-1", status="failed")
    seen: list[Event] = []
    phone.subscribe(seen.append, ConflictDetected)
    await phone.sync()
    await web.sync()
    await phone.sync()

    view = phone.collection("deliveries").view("dlv-1")
    assert view is not None
    status = view.fields["status"]
    assert status.value == "delivered"  # precedence: delivered beats failed
    assert sorted((s.value, s.replica) for s in status.siblings or []) == [
        ("delivered", "phone-a"),
        ("failed", "web-1"),
    ]
    assert len(seen) == 1
    event = seen[0]
    assert isinstance(event, ConflictDetected)
    assert (event.entity, event.field, event.value, event.mine) == ("dlv-1", "status", "delivered", True)
    [logged] = await server.conflicts(kind="register")
    assert {(v.value, v.user) for v in logged.values} == {("delivered", "driver-17"), ("failed", "dispatcher-1")}

    # A write that has seen both siblings collapses them.
    phone.collection("deliveries").set("dlv-1", status="delivered")
    await phone.sync()
    view = phone.collection("deliveries").view("dlv-1")
    assert view is not None
    assert view.fields["status"].siblings is None
    await phone.aclose()
    await web.aclose()


async def test_a_rejected_change_is_reported_kept_and_does_not_block_later_ones(server: InProcServer) -> None:
    phone = server.client("phone-a")
    d = phone.collection("deliveries")
    events: list[Event] = []
    phone.subscribe(events.append, RejectedChange)
    bad = d.set("dlv-1", "cod_cents", "twelve")  # cod_cents is a counter on the server
    d.set("dlv-1", status="delivered")

    stats = await phone.sync()

    assert (stats.rejected, stats.applied, phone.pending_count()) == (1, 1, 0)
    assert [(e.id, e.code) for e in events if isinstance(e, RejectedChange)] == [(bad.id, errors.KIND_MISMATCH)]
    assert [r.id for r in phone.rejections()] == [bad.id]
    assert d.get("dlv-1") == {"status": "delivered"}
    phone.clear_rejections()
    assert phone.rejections() == []
    await phone.aclose()


async def test_a_lost_counter_is_renumbered_not_dropped(server: InProcServer, tmp_path: Path) -> None:
    """The phone's database is restored from an old backup: its counter restarts at 1 (``n_reused``)."""
    first = server.client("phone-a", sub="driver-17")
    for i in range(5):
        first.collection("deliveries").set(f"dlv-{i}", status="pending")
    await first.sync()
    await first.aclose()

    token = server.token("driver-17", "dispatcher")
    restored = SyncClient(
        "http://testserver",
        token,
        "phone-a",
        tmp_path / "restored.db",
        transport=server.transport("driver-17", "dispatcher"),
    )
    again = [restored.collection("deliveries").set(f"dlv-{i}", status="delivered") for i in range(3)]
    stats = await restored.sync()

    assert stats.renumbered >= 3
    assert restored.pending_count() == 0
    store = server.app.state.store
    log = await store.changes(server.tenant, 0, 1000)
    mine = assert_exactly_once(log, "phone-a", {c.id for c in again})
    assert len(mine) == 8
    assert restored.collection("deliveries").get("dlv-0") == {"status": "delivered"}
    await restored.aclose()


async def test_reset_drops_synced_state_but_keeps_the_outbox(server: InProcServer) -> None:
    phone = server.client("phone-a")
    web = server.client("web-1", role="dispatcher")
    w = web.collection("deliveries")
    w.set("dlv-old", status="pending")
    w.set("dlv-keep", status="pending")
    await web.sync()
    await phone.sync()
    w.delete("dlv-old")
    await web.sync()
    # Tombstones are collected; the phone's cursor is now older than the retention.
    await server.app.state.store.purge_tombstones(server.tenant, int(time.time() * 1000) + 60_000)
    phone.collection("deliveries").set("dlv-keep", driver="driver-17")  # queued before the reset

    stats = await phone.sync()

    assert stats.resets == 1
    assert phone.collection("deliveries").list() == {"dlv-keep": {"status": "pending", "driver": "driver-17"}}
    assert phone.store.view("deliveries", "dlv-old") is None
    assert (await server.views())[("deliveries", "dlv-keep")].fields["driver"].value == "driver-17"
    await phone.aclose()
    await web.aclose()


async def test_push_batches_shrink_to_the_servers_limit(tmp_path: Path) -> None:
    settings = Settings(
        database_url="memory://",
        data_dir=tmp_path / "data",
        master_key="A" * 43 + "=",
        jwt_secret="s" * 32,
        collections_file=COLLECTIONS,
    )
    settings = replace(settings, limits=Limits(max_changes_per_push=7))
    async with inproc_server(tmp_path, settings) as server:
        phone = server.client("phone-a")
        with phone.batch():
            changes = [phone.collection("deliveries").inc("dlv-1", "cod_cents", 1) for _ in range(40)]
        stats = await phone.sync()
        assert (stats.applied, phone.pending_count()) == (40, 0)
        assert stats.pushes >= 40 // 7
        log = await server.app.state.store.changes(server.tenant, 0, 1000)
        assert_exactly_once(log, "phone-a", {c.id for c in changes})
        assert phone.collection("deliveries").get("dlv-1") == {"cod_cents": 40}
        await phone.aclose()


async def test_invalid_input_is_refused_before_it_reaches_the_outbox(server: InProcServer) -> None:
    phone = server.client("phone-a")
    d = phone.collection("deliveries")
    with pytest.raises(ValueError, match="invalid change"):
        d.set("not an id!", status="x")
    with pytest.raises(ValueError, match="invalid change"):
        d.set("dlv-1", **{"9bad": 1})
    with pytest.raises(ValueError, match="at most"):
        d.set("dlv-1", blob="x" * (2 << 20))
    with pytest.raises(IndexError):
        d.edit_text("dlv-1", "notes", 3, 0, "x")  # the text is empty
    assert phone.pending_count() == 0
    assert phone.store.counter() == 0  # no number was spent on a refused write
    await phone.aclose()


async def test_delete_hides_and_a_later_update_revives_with_fields(server: InProcServer) -> None:
    phone = server.client("phone-a")
    d = phone.collection("deliveries")
    d.set("dlv-1", status="pending", address="1 Main St")
    await phone.sync()
    d.delete("dlv-1")
    assert d.get("dlv-1") is None
    assert "dlv-1" not in d.list()
    await phone.sync()
    assert d.get("dlv-1") is None
    d.set("dlv-1", status="delivered")
    assert d.get("dlv-1") == {"status": "delivered", "address": "1 Main St"}
    await phone.sync()
    assert d.get("dlv-1") == {"status": "delivered", "address": "1 Main St"}
    await phone.aclose()


async def test_query_filters_the_optimistic_state(server: InProcServer) -> None:
    phone = server.client("phone-a")
    d = phone.collection("deliveries")
    d.set("dlv-1", status="pending", depot="north")
    d.set("dlv-2", status="delivered", depot="north")
    d.set("dlv-3", status="pending", depot="south")
    d.inc("dlv-3", "cod_cents", 500)
    await phone.sync()
    d.set("dlv-1", status="delivered")  # pending, not yet synced
    assert sorted(d.query(status="delivered")) == ["dlv-1", "dlv-2"]
    assert sorted(d.query(lambda r: r.get("cod_cents", 0) > 0)) == ["dlv-3"]
    assert sorted(d.query(lambda r: r["depot"] == "north", status="pending")) == []
    await phone.aclose()


async def test_a_driver_sees_its_deliveries_is_refused_others_and_drops_one_reassigned_away(
    server: InProcServer,
) -> None:
    web = server.client("web-1", sub="dispatcher-1")
    phone = server.client("phone-a", sub="driver-17", role="driver")
    w = web.collection("deliveries")
    w.set("dlv-1", driver_id="driver-17", status="pending")
    w.set("dlv-2", driver_id="driver-42", status="pending")
    await web.sync()
    await phone.sync()
    d = phone.collection("deliveries")
    assert sorted(d.list()) == ["dlv-1"]

    refused = d.set("dlv-2", status="delivered")  # another driver's delivery
    d.set("dlv-1", status="delivered")
    assert sorted(d.list()) == ["dlv-1", "dlv-2"]  # optimistic until the server answers
    await phone.sync()
    assert [(r.id, r.code) for r in phone.rejections()] == [(refused.id, errors.FORBIDDEN)]
    assert d.list() == {"dlv-1": {"driver_id": "driver-17", "status": "delivered"}}

    w.set("dlv-1", driver_id="driver-42")  # reassigned: it leaves the phone's scope
    await web.sync()
    await phone.sync()
    assert d.list() == {}
    await phone.aclose()
    await web.aclose()
