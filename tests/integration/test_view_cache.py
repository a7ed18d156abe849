"""Devices pulling the same entity versions share one opening of each (``syncserver.sync.view_cache``)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from syncproto.messages import EntityView
from syncserver.sync import payloads
from syncserver.sync.pull import PullService
from syncserver.sync.view_cache import OpenedEntity, ViewCache
from syncstore.records import EntityRecord
from tests.integration.conftest import Server, change


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The entities whose sealed state was opened (decrypted and decoded), in order."""
    seen: list[str] = []
    real = payloads.open_entity

    def counting(cipher: Any, row: EntityRecord) -> Any:
        seen.append(row.entity_id)
        return real(cipher, row)

    monkeypatch.setattr(payloads, "open_entity", counting)
    return seen


async def test_devices_pulling_the_same_versions_open_each_once(sqlite_server: Server, opened: list[str]) -> None:
    s = sqlite_server
    tenant = await s.tenant()
    boss = s.headers(tenant, "boss")
    ops = [set_("driver_id", "7"), set_("status", "pending")]
    await s.push(boss, "web-1", [change(i + 1, f"dlv-{i}", ops) for i in range(30)])
    phones = [s.headers(tenant, "d-7", "driver", ("driver:7",)), s.headers(tenant, "d-7b", "driver", ("driver:7",))]
    first, _ = await s.pull_all(s.headers(tenant, "web-2"), limit=7)
    assert len(pull_service(s).view_cache) == 0  # asked for once: nothing kept yet
    second, _ = await s.pull_all(s.headers(tenant, "web-2b"), limit=5)
    assert len(pull_service(s).view_cache) == 30  # asked for twice: kept
    opened.clear()
    # Another dispatcher and two drivers of that channel, each from the start: nothing is opened again.
    again, _ = await s.pull_all(s.headers(tenant, "web-3"), limit=11)
    drivers = [(await s.pull_all(h))[0] for h in phones]
    assert opened == []
    assert second == again == first
    assert drivers == [first, first]

    # A new version is opened by the first two devices, then shared; a device that was whole gets only
    # the changed field.
    _, cursor = await s.pull_all(phones[0])
    await s.push(boss, "web-1", [change(31, "dlv-3", [set_("status", "delivered")], {"web-1": 4})])
    opened.clear()  # the push opened the version it merged into
    delta, _ = await s.pull_all(phones[0], cursor)
    fresh, _ = await s.pull_all(phones[1])
    await s.pull_all(s.headers(tenant, "web-4"))
    assert opened == ["dlv-3", "dlv-3"]
    assert [(c["entity"], sorted(c["fields"])) for c in delta] == [("dlv-3", ["status"])]
    assert next(c for c in fresh if c["entity"] == "dlv-3")["fields"]["status"]["value"] == "delivered"


def pull_service(s: Server) -> PullService:
    service: PullService = s.app.state.services.pull
    return service


async def test_a_scan_read_once_does_not_displace_shared_versions(sqlite_server: Server, opened: list[str]) -> None:
    """A device's first sync reads each version of a large depot once: it keeps none of them, so the
    versions catch-up pulls share stay kept."""
    s = sqlite_server
    pull_service(s).view_cache = ViewCache(budget_bytes=64 * 1024)  # about 40 deliveries
    tenant = await s.tenant()
    boss = s.headers(tenant, "boss")
    await s.push(boss, "web-1", [change(i + 1, f"hot-{i}", [set_("status", "pending")]) for i in range(10)])
    for device in ("web-2", "web-3"):
        await s.pull_all(s.headers(tenant, device))
    await s.push(boss, "web-1", [change(11 + i, f"old-{i}", [set_("status", "pending")]) for i in range(200)])
    scan, _ = await s.pull_all(s.headers(tenant, "new-phone"), limit=50)
    assert len(scan) == 210
    opened.clear()
    await s.pull_all(s.headers(tenant, "web-4"), limit=50)
    assert not [e for e in opened if e.startswith("hot-")]
    assert len([e for e in opened if e.startswith("old-")]) == 200


async def test_the_cache_is_bounded_by_its_memory_budget(sqlite_server: Server) -> None:
    s = sqlite_server
    pull: PullService = s.app.state.services.pull
    pull.view_cache = ViewCache(budget_bytes=64 * 1024)
    tenant = await s.tenant()
    boss = s.headers(tenant, "boss")
    small = [change(i + 1, f"dlv-{i}", [set_("status", "pending")]) for i in range(60)]
    await s.push(boss, "web-1", small)
    await s.pull_all(boss)
    changes, _ = await s.pull_all(boss)  # the second pull of each version keeps it
    assert len(changes) == 60
    assert 0 < pull.view_cache.held_bytes <= 64 * 1024
    kept_small = len(pull.view_cache)
    assert kept_small < 60
    # Large values: fewer entries fit the same budget; one larger than a sixteenth of it is not kept at all.
    pull.view_cache.clear()
    big = [change(61 + i, f"big-{i}", [set_("address", os.urandom(1024).hex())]) for i in range(20)]
    await s.push(boss, "web-1", big)
    await s.pull_all(boss)
    changes, _ = await s.pull_all(boss)
    assert pull.view_cache.held_bytes <= 64 * 1024
    assert len([k for k in pull.view_cache._entries if k[2].startswith("big-")]) == 0  # each ~7.5 KB > 4 KB
    assert len(pull.view_cache) <= kept_small


async def test_the_live_feed_does_not_fill_the_cache(sqlite_server: Server) -> None:
    """Its pages are shared by its subscribers already; holding the views twice would double the memory."""
    s = sqlite_server
    pull: PullService = s.app.state.services.pull
    tenant = await s.tenant()
    boss = s.headers(tenant, "boss")
    await s.push(boss, "web-1", [change(1, "dlv-1", [set_("status", "pending")])])
    cipher = await pull.ciphers.cipher(tenant)
    row = await pull.store.get_entity(tenant, "deliveries", "dlv-1")
    assert row is not None
    views, _ = pull.views(cipher, [(row, 0)], share=False)
    assert [v.entity for v in views] == ["dlv-1"]
    views, _ = pull.views(cipher, [(row, 0)], share=False)
    assert len(pull.view_cache) == 0
    pull.views(cipher, [(row, 0)])
    pull.views(cipher, [(row, 0)])
    assert len(pull.view_cache) == 1


def test_an_entry_that_expires_while_it_is_looked_up_is_a_miss() -> None:
    """A lookup reads the clock twice (is it there, then the entry): expiring in between is a miss, not an error
    (``KeyError`` out of a pull)."""
    now, step = [0.0], [0.0]

    def clock() -> float:
        now[0] += step[0]
        return now[0]

    cache = ViewCache(ttl_s=60.0, timer=clock)
    row = EntityRecord("deliveries", "dlv-1", 1, False, 1, b"sealed", {}, 0)
    key = cache.admit("t1", row) or cache.admit("t1", row)  # kept on the second miss
    assert key is not None
    entry = OpenedEntity(EntityView("deliveries", "dlv-1", 1, {}, False), {}, frozenset(), 10)
    cache.keep(key, entry)  # at 0.0: it expires at 60.0
    now[0] = 58.5
    assert cache.get("t1", row) is entry  # still alive at 58.5
    step[0] = 1.0  # from now on every reading is a second later: 59.5 (alive), then 60.5 (expired)
    assert cache.get("t1", row) is None
    assert cache.get("t1", row) is None
