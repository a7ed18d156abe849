"""Hypothesis drives three SDK clients against a real in-process server: random writes, going
offline and online, syncing. After everyone syncs, every client holds the server's state, and
the conflict log lists exactly the register writes that were concurrent.

Concurrency is decided by an independent model, not by the SDK: a client has seen exactly the
changes pushed before its last successful sync (sync pushes, then pulls to the end), so a write's
context is that set plus the writer's own earlier changes. Replaying the pushes in server order
against §5's register rule gives the conflicts the server must log.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from syncclient import SyncClient, TransportError
from syncclient.transport.interface import Transport
from syncproto.messages import EntityView, PullRequest, PullResponse, PushRequest, PushResponse
from tests.sdk.conftest import SCHEMA, InProcServer, inproc_server

# Tenant-wide tokens: every client must be able to see every entity for "identical state" to
# be the property (channel scoping is the server's concern, tested with the server).
REPLICAS = (
    ("phone-a", "user-a", "dispatcher"),
    ("phone-b", "user-b", "dispatcher"),
    ("web-1", "user-c", "admin"),
)
ENTITIES = ("dlv-1", "dlv-2", "dlv-3")
STATUSES = ("pending", "out_for_delivery", "delivered", "failed")
TEXT = st.text(alphabet="aé😀世 ", max_size=3)
Dot = tuple[str, int]

clients_ = st.integers(0, len(REPLICAS) - 1)
entities_ = st.sampled_from(ENTITIES)


class Switch:
    """A transport that can lose its signal."""

    name = "switch"

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.online = True

    def _check(self) -> None:
        if not self.online:
            raise TransportError("offline")

    async def push(self, request: PushRequest) -> PushResponse:
        self._check()
        return await self.inner.push(request)

    async def pull(self, request: PullRequest) -> PullResponse:
        self._check()
        return await self.inner.pull(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True)
class RegisterWrite:
    entity: str
    field: str
    context: dict[str, int]


def normalized(view: EntityView | None) -> Any:
    """What must agree: deletion, vv, and for live entities each field's kind, value and siblings."""
    if view is None:
        return None
    if view.deleted:
        return ("deleted", view.vv)
    fields = {
        name: (f.kind, f.value, sorted((s.replica, s.n, s.hlc, repr(s.value)) for s in f.siblings or []))
        for name, f in view.fields.items()
    }
    return (view.vv, fields)


class SdkConvergence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sdk-convergence-"))
        self.runner = asyncio.Runner()
        self.stack = contextlib.AsyncExitStack()
        self.server: InProcServer = self.runner.run(self.stack.enter_async_context(inproc_server(self.tmp)))
        self.switches: list[Switch] = []
        self.clients: list[SyncClient] = []
        for replica, sub, role in REPLICAS:
            switch = Switch(self.server.transport(sub, role))  # type: ignore[arg-type]
            self.switches.append(switch)
            self.clients.append(
                SyncClient(None, None, replica, self.tmp / f"{replica}.db", transport=switch, schema=SCHEMA)
            )
        # The model.
        self.unpushed: list[list[int]] = [[] for _ in REPLICAS]
        self.pushed_max: dict[str, int] = {}
        self.seen: list[dict[str, int]] = [{} for _ in REPLICAS]
        self.server_order: list[Dot] = []
        self.registers: dict[Dot, RegisterWrite] = {}
        self.cod: dict[str, int] = dict.fromkeys(ENTITIES, 0)

    def replica(self, c: int) -> str:
        return REPLICAS[c][0]

    def wrote(self, c: int, n: int) -> None:
        self.unpushed[c].append(n)

    # --- writes -------------------------------------------------------------------

    @rule(c=clients_, entity=entities_, status=st.sampled_from(STATUSES))
    def set_status(self, c: int, entity: str, status: str) -> None:
        change = self.clients[c].collection("deliveries").set(entity, status=status)
        self.registers[(self.replica(c), change.n)] = RegisterWrite(entity, "status", dict(self.seen[c]))
        self.wrote(c, change.n)

    @rule(c=clients_, entity=entities_, value=st.integers(0, 3) | st.none())
    def set_assignee(self, c: int, entity: str, value: int | None) -> None:
        change = self.clients[c].collection("deliveries").set(entity, "assignee", value)
        self.registers[(self.replica(c), change.n)] = RegisterWrite(entity, "assignee", dict(self.seen[c]))
        self.wrote(c, change.n)

    @rule(c=clients_, entity=entities_, by=st.integers(-500, 2000))
    def collect_cash(self, c: int, entity: str, by: int) -> None:
        self.wrote(c, self.clients[c].collection("deliveries").inc(entity, "cod_cents", by).n)
        self.cod[entity] += by

    @rule(c=clients_, entity=entities_, parcel=st.sampled_from(("p1", "p2", "p3")), add=st.booleans())
    def scan(self, c: int, entity: str, parcel: str, add: bool) -> None:
        d = self.clients[c].collection("deliveries")
        change = d.add(entity, "scanned", parcel) if add else d.remove(entity, "scanned", parcel)
        self.wrote(c, change.n)

    @rule(c=clients_, entity=entities_, data=st.data())
    def edit_notes(self, c: int, entity: str, data: st.DataObject) -> None:
        d = self.clients[c].collection("deliveries")
        view = d.view(entity)
        current = view.fields["notes"].value if view is not None and "notes" in view.fields else ""
        pos = data.draw(st.integers(0, len(current)), label="pos")
        delete = data.draw(st.integers(0, len(current) - pos), label="delete")
        insert = data.draw(TEXT, label="insert")
        if delete or insert:
            self.wrote(c, d.edit_text(entity, "notes", pos, delete, insert).n)

    @rule(c=clients_, entity=entities_, lat=st.integers(-90, 90))
    def gps(self, c: int, entity: str, lat: int) -> None:
        self.wrote(c, self.clients[c].collection("deliveries").append(entity, "trail", {"lat": lat}).n)

    @rule(c=clients_, entity=entities_)
    def delete(self, c: int, entity: str) -> None:
        self.wrote(c, self.clients[c].collection("deliveries").delete(entity).n)

    # --- network ------------------------------------------------------------------

    @rule(c=clients_)
    def toggle_network(self, c: int) -> None:
        self.switches[c].online = not self.switches[c].online

    @precondition(lambda self: any(s.online for s in self.switches))
    @rule(data=st.data())
    def sync_online(self, data: st.DataObject) -> None:
        online = [i for i, s in enumerate(self.switches) if s.online]
        self.sync(data.draw(st.sampled_from(online), label="client"))

    @rule(c=clients_)
    def sync_attempt(self, c: int) -> None:
        if self.switches[c].online:
            self.sync(c)
            return
        before = self.clients[c].pending_count()
        with pytest.raises(TransportError):
            self.runner.run(self.clients[c].sync())
        assert self.clients[c].pending_count() == before

    def sync(self, c: int) -> None:
        stats = self.runner.run(self.clients[c].sync())
        assert stats.rejected == 0, [(r.code, r.message) for r in self.clients[c].rejections()]
        replica = self.replica(c)
        self.server_order += [(replica, n) for n in self.unpushed[c]]
        if self.unpushed[c]:
            self.pushed_max[replica] = self.unpushed[c][-1]
        self.unpushed[c] = []
        self.seen[c] = dict(self.pushed_max)

    @invariant()
    def the_outbox_holds_exactly_the_unpushed_writes(self) -> None:
        for c, client in enumerate(self.clients):
            assert client.pending_count() == len(self.unpushed[c])

    # --- the end --------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.check_convergence()
        finally:
            for client in self.clients:
                self.runner.run(client.aclose())
            self.runner.run(self.stack.aclose())
            self.runner.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def check_convergence(self) -> None:
        for s in self.switches:
            s.online = True
        for _ in range(2):  # the second round brings everyone the first round's last pushes
            for c in range(len(self.clients)):
                self.sync(c)
        server = self.runner.run(self.server.views())
        for c, client in enumerate(self.clients):
            d = client.collection("deliveries")
            for entity in ENTITIES:
                expected = normalized(server.get(("deliveries", entity)))
                assert normalized(d.view(entity)) == expected, f"{self.replica(c)} differs on {entity}"
        for entity in ENTITIES:
            view = server.get(("deliveries", entity))
            if view is not None and not view.deleted and "cod_cents" in view.fields:
                assert view.fields["cod_cents"].value == self.cod[entity]
        logged = self.runner.run(self.server.conflicts(kind="register"))
        actual = {(c.entity, c.field, frozenset((v.replica, v.n) for v in c.values)) for c in logged}
        assert actual == self.expected_conflicts()

    def expected_conflicts(self) -> set[tuple[str, str | None, frozenset[Dot]]]:
        expected: set[tuple[str, str | None, frozenset[Dot]]] = set()
        frontier: dict[tuple[str, str], list[Dot]] = {}
        for dot in self.server_order:
            write = self.registers.get(dot)
            if write is None:
                continue
            replica, n = dot
            context = {**write.context, replica: max(write.context.get(replica, 0), n - 1)}
            key = (write.entity, write.field)
            concurrent = [d for d in frontier.get(key, []) if context.get(d[0], 0) < d[1]]
            frontier[key] = [*concurrent, dot]
            if concurrent:
                expected.add((write.entity, write.field, frozenset(frontier[key])))
        return expected


@pytest.mark.slow
def test_sdk_clients_converge_with_the_server_and_every_concurrent_write_is_logged() -> None:
    run_state_machine_as_test(
        SdkConvergence,
        settings=settings(
            max_examples=15,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
