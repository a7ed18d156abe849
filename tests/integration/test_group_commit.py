"""Group commit: concurrent pushes to one tenant share one transaction, and each gets what it would alone.

The pushes go straight to ``PushService`` (in process, over a ``FaultyStore`` that
counts and can fail commits), many at once with ``asyncio.gather``, so they
queue behind the tenant's lock the way a reconnect storm's do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncproto import errors
from syncproto.messages import Applied, Change, IncOp, PushRequest, PushResult, Rejected, SetOp
from syncserver.admin.tenants import create_tenant
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.integrity.verify import Verifier
from syncserver.services import Services, build_services
from syncstore import FaultyStore, InjectedFault, MemoryStore, PushBatch, PushSession
from tests.integration.conftest import make_settings


class CountingStore(FaultyStore):
    """Counts commits and loads (one of each per group)."""

    commits = 0
    loads = 0

    @asynccontextmanager
    async def _push_session(self, tenant_id: str) -> AsyncIterator[PushSession]:
        async with super()._push_session(tenant_id) as session:
            inner = session.commit
            inner_load = session.load

            async def commit(batch: PushBatch) -> None:
                await inner(batch)
                self.commits += 1

            async def load(replica_ids: Any, keys: Any) -> Any:
                self.loads += 1
                return await inner_load(replica_ids, keys)

            session.commit = commit  # type: ignore[method-assign]
            session.load = load  # type: ignore[method-assign]
            yield session


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Services]:
    services = build_services(make_settings(tmp_path, "memory://"), CountingStore(MemoryStore()))
    await services.start()
    try:
        yield services
    finally:
        await services.close()


def change(n: int, entity: str, ops: list[Any], hlc: int = 1) -> Change:
    return Change(str(uuid.uuid4()), n, "deliveries", entity, (1_700_000_000_000 + hlc, 0), {}, ops)


async def new_tenant(svc: Services) -> str:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    await create_tenant(svc.store, svc.keyring, tenant)
    return tenant


def boss(tenant: str, sub: str = "boss") -> Principal:
    return Principal(tenant, sub, "dispatcher")


async def test_concurrent_pushes_share_commits_and_each_gets_its_own_results(svc: Services) -> None:
    tenant = await new_tenant(svc)
    store = svc.store
    assert isinstance(store, CountingStore)
    pushes = [
        PushRequest(f"phone-{i}", [change(1, "dlv-shared", [IncOp("cod_cents", 1)]), change(2, f"dlv-{i}", [])])
        for i in range(40)
    ]
    # A change without ops is refused (a dead letter); each push has one applied and one rejected.
    responses = await asyncio.gather(*(svc.push.push(boss(tenant), p) for p in pushes))
    assert store.commits < 40, "concurrent pushes were not grouped"
    assert store.loads == store.commits, "a group reads its replicas and entities in one step, not one per push"
    seqs = []
    for response in responses:
        first, second = response.results
        assert isinstance(first, Applied)
        assert isinstance(second, Rejected)
        seqs.append(first.seq)
    assert sorted(seqs) == list(range(1, 41)), "seqs are consecutive and distinct across the groups"
    shared = await svc.pull.entity(boss(tenant), "deliveries", "dlv-shared")
    assert shared.fields["cod_cents"].value == 40
    assert len(await store.dead_letters(tenant, 100)) == 40
    assert (await Verifier(store, svc.keyring, svc.schema).verify(tenant)).ok


async def test_two_pushes_of_one_replica_go_in_separate_groups_in_order(svc: Services) -> None:
    tenant = await new_tenant(svc)
    first = PushRequest("phone-a", [change(1, "dlv-1", [SetOp("status", "pending")])])
    second = PushRequest("phone-a", [change(2, "dlv-1", [SetOp("status", "delivered")], hlc=2)])
    others = [PushRequest(f"phone-{i}", [change(1, f"dlv-{i}", [SetOp("status", "pending")])]) for i in range(5)]
    results = await asyncio.gather(*(svc.push.push(boss(tenant), p) for p in [first, *others, second]))
    assert all(isinstance(r, Applied) for response in results for r in response.results)
    assert isinstance(results[-1].results[0], Applied)  # not out_of_order: it saw the first push's counter
    view = await svc.pull.entity(boss(tenant), "deliveries", "dlv-1")
    assert view.fields["status"].value == "delivered"


async def test_a_push_refused_as_a_whole_fails_alone(svc: Services) -> None:
    tenant = await new_tenant(svc)
    await svc.push.push(boss(tenant, "driver-a"), PushRequest("phone-a", [change(1, "dlv-1", [SetOp("status", "x")])]))
    thief = svc.push.push(
        boss(tenant, "driver-b"), PushRequest("phone-a", [change(2, "dlv-1", [SetOp("status", "y")])])
    )
    honest = [
        svc.push.push(boss(tenant), PushRequest(f"web-{i}", [change(1, f"dlv-{i + 2}", [SetOp("status", "ok")])]))
        for i in range(5)
    ]
    outcomes = await asyncio.gather(thief, *honest, return_exceptions=True)
    assert isinstance(outcomes[0], ApiError)
    assert outcomes[0].code == errors.REPLICA_FORBIDDEN
    for outcome in outcomes[1:]:
        assert not isinstance(outcome, BaseException)
        assert isinstance(outcome.results[0], Applied)
    assert (await svc.pull.entity(boss(tenant), "deliveries", "dlv-1")).fields["status"].value == "x"


async def test_a_failed_commit_fails_every_push_of_the_group_and_a_resend_applies_each_once(svc: Services) -> None:
    tenant = await new_tenant(svc)
    store = svc.store
    assert isinstance(store, CountingStore)
    pushes = [PushRequest(f"phone-{i}", [change(1, "dlv-1", [IncOp("cod_cents", 1)])]) for i in range(10)]
    store.fail_next_commit()
    outcomes = await asyncio.gather(*(svc.push.push(boss(tenant), p) for p in pushes), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, InjectedFault)]
    assert failed, "the injected failure reached no push"
    assert all(isinstance(o, InjectedFault) or not isinstance(o, BaseException) for o in outcomes)
    # Every device resends everything it was not told about; nothing is applied twice.
    again = await asyncio.gather(*(svc.push.push(boss(tenant), p) for p in pushes))
    statuses = sorted(type(r.results[0]).__name__ for r in again)
    assert statuses.count("Applied") == len(failed)
    view = await svc.pull.entity(boss(tenant), "deliveries", "dlv-1")
    assert view.fields["cod_cents"].value == 10


ops = st.one_of(
    st.builds(lambda v: SetOp("status", v), st.sampled_from(["pending", "failed", "delivered", "out_for_delivery"])),
    st.builds(lambda by: IncOp("cod_cents", by), st.integers(-5, 5)),
)
plans = st.lists(
    st.tuples(st.integers(0, 3), st.lists(st.tuples(st.sampled_from(["dlv-1", "dlv-2", "dlv-3"]), ops), max_size=4)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans)
async def test_grouped_pushes_equal_the_same_pushes_one_by_one(svc: Services, plan: list[Any]) -> None:
    """The results and every entity after a storm equal those of the same pushes sent one at a time in the
    order the groups applied them (arrival order, each replica's pushes in its own order)."""
    requests: list[tuple[str, PushRequest]] = []
    counters: dict[str, int] = {}
    for device, edits in plan:
        replica = f"phone-{device}"
        changes = []
        for entity, op in edits:
            counters[replica] = counters.get(replica, 0) + 1
            changes.append(change(counters[replica], entity, [op], hlc=counters[replica]))
        requests.append((replica, PushRequest(replica, changes)))
    grouped_tenant, alone_tenant = await new_tenant(svc), await new_tenant(svc)
    grouped = await asyncio.gather(*(svc.push.push(boss(grouped_tenant), r) for _, r in requests))
    # Replay in the order the groups applied them: by the seq each push's first applied change got.
    order = sorted(range(len(requests)), key=lambda i: _first_seq(grouped[i].results, i))
    alone: dict[int, list[PushResult]] = {}
    for i in order:
        alone[i] = (await svc.push.push(boss(alone_tenant), requests[i][1])).results
    for i in range(len(requests)):
        assert [_shape(r) for r in grouped[i].results] == [_shape(r) for r in alone[i]]
    for entity in ("dlv-1", "dlv-2", "dlv-3"):
        a = await _view(svc, grouped_tenant, entity)
        b = await _view(svc, alone_tenant, entity)
        assert a == b


def _first_seq(results: list[PushResult], index: int) -> tuple[int, int]:
    seqs = [r.seq for r in results if isinstance(r, Applied)]
    return (min(seqs) if seqs else 1 << 62, index)


def _shape(result: PushResult) -> Any:
    return msgspec.to_builtins(result)


async def _view(svc: Services, tenant: str, entity: str) -> Any:
    try:
        view = await svc.pull.entity(boss(tenant), "deliveries", entity)
    except ApiError:
        return None
    return {name: msgspec.to_builtins(field) for name, field in view.fields.items()}


async def test_metrics_see_each_push_of_a_group_with_its_own_conflicts(svc: Services) -> None:
    tenant = await new_tenant(svc)
    seen: list[tuple[int, int]] = []
    svc.push.observe = lambda batch, results: seen.append((len(results), len(batch.conflicts)))
    pushes = [
        PushRequest(f"phone-{i}", [change(1, "dlv-1", [SetOp("status", s)], hlc=i + 1)])
        for i, s in enumerate(["pending", "failed", "delivered"])
    ]
    await asyncio.gather(*(svc.push.push(boss(tenant), p) for p in pushes))
    assert len(seen) == 3
    assert [n for n, _ in seen] == [1, 1, 1]
    # The first write finds nothing; each later concurrent one records one conflict of its own.
    assert [c for _, c in seen] == [0, 1, 1]
