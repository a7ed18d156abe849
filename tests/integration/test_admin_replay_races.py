"""A dead letter is applied at most once, and audited once, however its replays interleave (every backend).

The races are made deterministic by holding one replay right after it read the
replay replica's high-water mark, while another replay (or a discard) runs to
the end: what two server processes can do at any moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from syncserver.admin.dead_letters import DeadLetterAdmin
from syncserver.admin.views import ReplayResult
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncstore.records import ReplicaRecord
from tests.integration.conftest import Server, change


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


async def rejected_inc(server: Server) -> tuple[str, dict[str, str]]:
    """A driver's ``inc`` rejected (the delivery is not in the driver's channels); returns tenant, admin headers."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    await server.push(boss, "web-1", [change(1, "dlv-x", [set_("driver_id", "d2"), set_("status", "pending")])])
    driver = server.headers(tenant, "d1", "driver", ("driver:d1",))
    inc = {"op": "inc", "field": "cod_cents", "by": 100}
    result = await server.push(driver, "phone-1", [change(1, "dlv-x", [inc])])
    assert result[0]["status"] == "rejected", result
    return tenant, server.headers(tenant, "ops", "admin")


def hold_first_read(
    server: Server, monkeypatch: pytest.MonkeyPatch, released: asyncio.Event
) -> Callable[[], Awaitable[bool]]:
    """The first read of a replay replica answers as it was then, but only once ``released`` is set.

    Returns an awaitable that resolves when that first read has happened.
    """
    dla: DeadLetterAdmin = server.app.state.dead_letter_admin
    store = dla.store
    original = store.get_replica
    first_read = asyncio.Event()

    async def get_replica(tenant: str, replica: str) -> ReplicaRecord | None:
        found = await original(tenant, replica)
        if replica.startswith("server:replay:") and not first_read.is_set():
            first_read.set()
            await asyncio.wait_for(released.wait(), 10)
        return found

    monkeypatch.setattr(store, "get_replica", get_replica)
    return first_read.wait


async def replay_changes(server: Server, admin: dict[str, str]) -> list[tuple[str, int]]:
    r = await server.client.get("/v1/admin/entities/deliveries/dlv-x/history", headers=admin)
    assert r.status_code == 200, r.text
    return [(c["replica"], c["n"]) for c in r.json()["changes"] if c["replica"].startswith("server:replay:")]


async def audit_actions(server: Server, admin: dict[str, str]) -> list[str]:
    r = await server.client.get("/v1/admin/audit", headers=admin, params={"target": "phone-1/1"})
    assert r.status_code == 200, r.text
    return [e["action"] for e in r.json()["entries"]]


async def cod(server: Server, admin: dict[str, str]) -> Any:
    r = await server.client.get("/v1/entities/deliveries/dlv-x", headers=admin)
    assert r.status_code == 200, r.text
    return r.json()["fields"]["cod_cents"]["value"]


async def test_a_replay_that_read_before_another_finished_does_not_apply_again(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, admin = await rejected_inc(server)
    dla: DeadLetterAdmin = server.app.state.dead_letter_admin
    who = Principal(tenant, "ops", "admin", ())
    released = asyncio.Event()
    read = hold_first_read(server, monkeypatch, released)

    slow = asyncio.create_task(dla.replay(who, "phone-1", 1))  # reads "nothing replayed yet", then waits
    await asyncio.wait_for(read(), 10)
    fast = await dla.replay(Principal(tenant, "lead", "admin", ()), "phone-1", 1)
    released.set()
    late: ReplayResult = await asyncio.wait_for(slow, 10)

    assert fast.outcome == "applied"
    assert late.outcome == "already_replayed"
    assert late.change == fast.change
    assert late.dead_letter.status == "replayed"
    assert fast.change is not None
    assert await replay_changes(server, admin) == [(fast.change.replica, 1)]
    assert await cod(server, admin) == 100
    assert await audit_actions(server, admin) == ["dead_letter.replay"]


async def test_a_replay_applied_while_a_discard_won_is_still_audited_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay passed its ``discarded?`` check, a discard then won the letter, the replay applied: the change
    is in the log, so the letter says ``replayed`` and the replay is audited (once)."""
    tenant, admin = await rejected_inc(server)
    dla: DeadLetterAdmin = server.app.state.dead_letter_admin
    who = Principal(tenant, "ops", "admin", ())
    released = asyncio.Event()
    read = hold_first_read(server, monkeypatch, released)

    replay = asyncio.create_task(dla.replay(who, "phone-1", 1))
    await asyncio.wait_for(read(), 10)
    await dla.discard(Principal(tenant, "lead", "admin", ()), "phone-1", 1)
    released.set()
    result = await asyncio.wait_for(replay, 10)

    assert result.outcome == "applied"
    assert result.dead_letter.status == "replayed"
    assert await cod(server, admin) == 100
    assert await audit_actions(server, admin) == ["dead_letter.replay", "dead_letter.discard"]
    again = await dla.replay(who, "phone-1", 1)
    assert again.outcome == "already_replayed"
    assert await audit_actions(server, admin) == ["dead_letter.replay", "dead_letter.discard"]


async def test_a_replay_that_stopped_after_applying_is_audited_by_the_next(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that dies between applying the replay and marking the letter: the next replay marks and audits it."""
    tenant, admin = await rejected_inc(server)
    dla: DeadLetterAdmin = server.app.state.dead_letter_admin
    who = Principal(tenant, "ops", "admin", ())
    store = dla.store
    original = store.set_dead_letter_status

    async def broken(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("the server stopped")

    monkeypatch.setattr(store, "set_dead_letter_status", broken)
    with pytest.raises(ConnectionError):
        await dla.replay(who, "phone-1", 1)
    monkeypatch.setattr(store, "set_dead_letter_status", original)
    assert await audit_actions(server, admin) == []

    results = await asyncio.gather(*(dla.replay(who, "phone-1", 1) for _ in range(3)))

    assert [r.outcome for r in results] == ["already_replayed"] * 3
    assert all(r.dead_letter.status == "replayed" for r in results)
    assert await cod(server, admin) == 100
    assert len(await replay_changes(server, admin)) == 1
    assert await audit_actions(server, admin) == ["dead_letter.replay"]


async def test_many_concurrent_replays_through_the_api_apply_and_audit_once(server: Server) -> None:
    _, admin = await rejected_inc(server)

    results = await asyncio.gather(
        *(server.client.post("/v1/admin/dead-letters/phone-1/1/replay", headers=admin) for _ in range(6))
    )

    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    outcomes = sorted(r.json()["outcome"] for r in results)
    assert outcomes == ["already_replayed"] * 5 + ["applied"]
    assert len({str(r.json()["change"]) for r in results}) == 1
    assert await cod(server, admin) == 100
    assert len(await replay_changes(server, admin)) == 1
    assert await audit_actions(server, admin) == ["dead_letter.replay"]


async def test_a_rejected_replay_leaves_the_letter_open_for_the_next(server: Server) -> None:
    """Still rejected: the attempt's own dead letter is discarded; a second attempt takes the next counter."""
    tenant, admin = await rejected_inc(server)
    dla: DeadLetterAdmin = server.app.state.dead_letter_admin
    who = Principal(tenant, "ops", "admin", ())
    push = server.app.state.push_service
    limits = push.limits
    push.limits = replace(limits, max_ops_per_change=0)
    first = await dla.replay(who, "phone-1", 1)
    push.limits = limits
    assert first.outcome == "rejected"
    assert first.dead_letter.status == "open"
    second = await dla.replay(who, "phone-1", 1)
    assert second.outcome == "applied"
    assert second.change is not None
    assert second.change.n == 2
    assert await cod(server, admin) == 100
    assert await audit_actions(server, admin) == ["dead_letter.replay", "dead_letter.replay_failed"]
    with pytest.raises(ApiError):
        await dla.discard(who, "phone-1", 1)
