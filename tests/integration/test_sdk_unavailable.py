"""The Python SDK against a server one of whose entity rows fails its integrity check, until ``repair``.

A device keeps what it holds of the damaged entity and lists it as unavailable
while every other change still reaches it; after ``EntityRepair`` (what
``syncserver repair`` runs) its next sync round reads the entity back with the
value the change log says, and the list is empty (PROTOCOL §4.4).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncclient import EntityUnavailable, Event, HttpTransport, RemoteChange, SyncClient
from syncproto import errors
from syncproto.messages import Unavailable
from syncserver.services import Services
from syncstore import SqlStore
from tests.integration.conftest import Server

# The repair and the damage as the server's own integrity test does them (EntityRepair is what
# ``syncserver repair`` runs).
from tests.integration.test_corrupt_entity import EntityRepair, damage


class Clock:
    """The device's wall clock (ms), moved by the test past the waits between reads."""

    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


def device(server: Server, tenant: str, replica: str, path: str, clock: Clock | None = None) -> SyncClient:
    token = server.verifier.issue(tenant, f"user-{replica}", "dispatcher", ())
    transport = HttpTransport(str(server.client.base_url), token, client=server.client)
    if clock is None:
        return SyncClient(None, None, replica, path, transport=transport)
    return SyncClient(None, None, replica, path, transport=transport, wall_clock=clock)


async def test_a_device_keeps_a_damaged_entity_gets_everything_else_and_reads_it_back_after_repair(
    server: Server, backend_url: str, tmp_path: Path
) -> None:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps no ciphertext to damage")
    services: Services = server.app.state.services
    assert isinstance(services.store, SqlStore)
    tenant = await server.tenant()
    clock = Clock()
    phone = device(server, tenant, "phone-a", str(tmp_path / "phone-a.db"), clock)
    web = device(server, tenant, "web-1", str(tmp_path / "web-1.db"))
    events: list[Event] = []
    phone.subscribe(events.append)
    desk = web.collection("deliveries")
    desk.set("dlv-1", status="pending", address="1 Main St")
    desk.set("dlv-2", status="pending")
    await web.sync()
    await phone.sync()
    deliveries = phone.collection("deliveries")
    assert deliveries.get("dlv-1") == {"status": "pending", "address": "1 Main St"}

    # The dispatcher moves dlv-1 on; then its row is damaged in the database, and dlv-2 changes too.
    desk.set("dlv-1", status="out_for_delivery")
    await web.sync()
    await damage(services.store, tenant, "dlv-1", "flip")
    desk.set("dlv-2", status="delivered")
    assert (await web.sync()).applied == 1

    stats = await phone.sync()
    assert deliveries.get("dlv-2") == {"status": "delivered"}  # another device's change still arrives
    assert deliveries.get("dlv-1") == {"status": "pending", "address": "1 Main St"}  # the old value stays
    [named] = phone.unavailable()
    assert (named.collection, named.entity, named.code) == ("deliveries", "dlv-1", errors.DATA_INTEGRITY)
    assert [e for e in events if isinstance(e, EntityUnavailable)] == [
        EntityUnavailable("deliveries", "dlv-1", errors.DATA_INTEGRITY)
    ]
    assert stats.pulled == 1

    # Read again on the next round: the server still cannot read it (500 data_integrity), so it stays.
    await phone.sync()
    assert phone.unavailable() == [Unavailable("deliveries", "dlv-1", named.seq, errors.DATA_INTEGRITY)]
    assert deliveries.get("dlv-1") == {"status": "pending", "address": "1 Main St"}

    report = await EntityRepair(services.store, services.keyring, services.schema).repair(tenant)
    assert report.repaired == [("deliveries", "dlv-1")]
    clock.ms += 61_000  # past the first wait (30-60 s) between reads
    events.clear()
    stats = await phone.sync()
    assert deliveries.get("dlv-1") == {"status": "out_for_delivery", "address": "1 Main St"}  # the log's value
    assert phone.unavailable() == []
    assert RemoteChange("deliveries", "dlv-1", ("address", "status"), False) in events
    assert (stats.pulled, stats.pages) == (1, 1)  # the repair logged nothing new: the read brought it back
    assert (await phone.sync()).pulled == 0
    await phone.aclose()
    await web.aclose()
