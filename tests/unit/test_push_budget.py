"""``PushBudget``: bytes of push bodies in flight, first come, first served."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from syncserver.sync.push_budget import PushBudget


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_reservations_that_fit_go_at_once_and_the_rest_wait_in_arrival_order() -> None:
    budget = PushBudget(100)
    order: list[str] = []
    release = {name: asyncio.Event() for name in "abcd"}

    async def push(name: str, size: int) -> None:
        async def work() -> None:
            order.append(name)
            await release[name].wait()

        await budget.run(size, work)

    tasks = [asyncio.create_task(push(name, size)) for name, size in (("a", 60), ("b", 30), ("c", 50), ("d", 5))]
    await settle()
    # a and b fit (90); c does not, and d, small enough to fit, still waits behind c.
    assert order == ["a", "b"]
    assert budget.used == 90
    release["b"].set()
    await settle()
    assert order == ["a", "b"], "60 + 50 is over the budget: c waits for a"
    release["a"].set()
    await settle()
    assert order == ["a", "b", "c", "d"]
    assert budget.used == 55
    release["c"].set()
    release["d"].set()
    await asyncio.gather(*tasks)
    assert budget.used == 0


async def test_a_body_larger_than_the_budget_goes_alone_once_nothing_else_is_in_flight() -> None:
    budget = PushBudget(100)
    inside: list[int] = []
    first = asyncio.Event()

    async def small() -> None:
        inside.append(10)
        await first.wait()

    async def huge() -> None:
        inside.append(1_000)
        assert budget.used == 100, "counted as the whole budget, not more"

    a = asyncio.create_task(budget.run(10, small))
    await settle()
    b = asyncio.create_task(budget.run(1_000, huge))
    await settle()
    assert inside == [10]
    first.set()
    await asyncio.gather(a, b)
    assert inside == [10, 1_000]
    assert budget.used == 0


async def test_a_push_cancelled_while_it_waits_leaves_the_line_and_the_next_moves_up() -> None:
    budget = PushBudget(100)
    hold = asyncio.Event()
    entered: list[str] = []

    async def push(name: str, size: int, until: asyncio.Event | None = None) -> None:
        async def work() -> None:
            entered.append(name)
            if until is not None:
                await until.wait()

        await budget.run(size, work)

    holder = asyncio.create_task(push("holder", 60, hold))
    await settle()
    gone = asyncio.create_task(push("gone", 80))  # waits: 60 + 80 > 100
    behind = asyncio.create_task(push("behind", 30))  # fits, but waits behind "gone"
    await settle()
    assert entered == ["holder"]
    gone.cancel()
    await settle()
    assert entered == ["holder", "behind"], "the cancelled head no longer blocks the line"
    assert gone.cancelled()
    hold.set()
    await asyncio.gather(holder, behind)
    assert budget.used == 0


async def test_a_push_granted_room_but_cancelled_before_it_ran_gives_the_room_back() -> None:
    budget = PushBudget(100)
    hold = asyncio.Event()

    async def push(size: int, until: asyncio.Event | None = None) -> None:
        async def work() -> None:
            if until is not None:
                await until.wait()

        await budget.run(size, work)

    holder = asyncio.create_task(push(100, hold))
    await settle()
    waiter = asyncio.create_task(push(50))
    await settle()
    hold.set()
    async with asyncio.timeout(1):
        while budget.used != 50:  # the holder's push ends and grants the waiter its 50 bytes...
            await asyncio.sleep(0)
    waiter.cancel()  # ... which is cancelled before it resumes
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert budget.used == 0

    async def whole() -> None:
        assert budget.used == 100

    await asyncio.wait_for(budget.run(100, whole), 1)  # the whole budget is free again


async def test_zero_means_no_bound() -> None:
    budget = PushBudget(0)

    async def inner() -> None:
        assert budget.used == 0

    async def outer() -> None:
        await budget.run(10**9, inner)

    await budget.run(10**9, outer)


async def test_waits_are_counted_and_the_gauge_follows_the_bytes_in_flight() -> None:
    budget = PushBudget(10)
    waits_before = REGISTRY.get_sample_value("sync_push_budget_waits_total") or 0.0
    hold = asyncio.Event()

    tasks = [asyncio.create_task(budget.run(8, hold.wait)) for _ in range(3)]
    await settle()
    assert REGISTRY.get_sample_value("sync_push_inflight_bytes") == 8
    assert (REGISTRY.get_sample_value("sync_push_budget_waits_total") or 0.0) - waits_before == 2
    hold.set()
    await asyncio.gather(*tasks)
    assert REGISTRY.get_sample_value("sync_push_inflight_bytes") == 0


async def test_a_run_holds_its_bytes_until_its_work_ends_even_if_its_caller_gave_up() -> None:
    """A push keeps running once queued (its group commits it whether or not the client still waits): the bytes
    it holds go back when it ends, not when its request is cancelled, or resent pushes pile up past the budget."""
    budget = PushBudget(100)
    finish = asyncio.Event()
    ran: list[str] = []

    async def work(name: str) -> str:
        ran.append(name)
        await finish.wait()
        return name

    caller = asyncio.create_task(budget.run(80, lambda: work("first")))
    await settle()
    caller.cancel()  # the client gave up
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert budget.used == 80, "the push it started still runs and still holds its bytes"
    resent = asyncio.create_task(budget.run(80, lambda: work("resent")))
    await settle()
    assert ran == ["first"], "the resend waits for room"
    finish.set()
    assert await resent == "resent"
    assert ran == ["first", "resent"]
    assert budget.used == 0


async def test_a_run_whose_work_fails_gives_its_bytes_back_and_raises() -> None:
    budget = PushBudget(100)

    async def failing() -> None:
        raise ValueError("bad body")

    with pytest.raises(ValueError, match="bad body"):
        await budget.run(50, failing)
    assert budget.used == 0
