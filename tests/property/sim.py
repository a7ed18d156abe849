"""A small simulated deployment for the property tests.

Replicas edit one entity offline, numbering their changes 1, 2, 3, … and using
as context the version vector of the state they last saw. A server applies the
changes with ``merge.apply_change`` and, like the real one, keeps a per-replica
high-water mark: ``n <= hwm`` is a duplicate, ``n > hwm + 1`` is out of order,
so a replica's changes are applied in counter order exactly once.

Histories are generated as data (``Step`` values drawn by hypothesis) and then
interpreted here, so a failing example prints as a readable list of steps.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
from hypothesis import strategies as st
from pycrdt import Doc, Text

from syncproto.crdt import AWSet, Counter, FieldState, Log, Register, TextState
from syncproto.crdt import text as ytext
from syncproto.hlc import HybridClock
from syncproto.merge import ConflictDraft, EntityState, Outcome, apply_change, join, normalize
from syncproto.messages import (
    AddOp,
    AppendOp,
    Change,
    DeleteOp,
    EntityView,
    IncOp,
    Op,
    RemoveOp,
    SetOp,
    TextOp,
)
from syncproto.schema import Collection, CollectionSpec, DeletePolicy, FieldSpec, compile_collection
from syncproto.views import entity_view

COLLECTION = "jobs"
ENTITY = "job-1"
STATUS_ORDER = ["delivered", "failed", "pending"]
REGISTER_FIELDS = ("title", "status", "note")
"""``title`` is a declared LWW register, ``status`` has a precedence rule, ``note`` is undeclared."""


def make_collection(on_delete: str = "update_wins") -> Collection:
    policy: DeletePolicy = "delete_wins" if on_delete == "delete_wins" else "update_wins"
    spec = CollectionSpec(
        fields={
            "title": FieldSpec(),
            "status": FieldSpec(rule="precedence", order=STATUS_ORDER),
            "count": FieldSpec(kind="counter"),
            "tags": FieldSpec(kind="set"),
            "body": FieldSpec(kind="text"),
            "trail": FieldSpec(kind="log"),
        },
        on_delete=policy,
    )
    return compile_collection(COLLECTION, spec)


# --- steps of a history --------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    field: str
    value: Any


@dataclass(frozen=True)
class IncSpec:
    by: int


@dataclass(frozen=True)
class AddSpec:
    value: Any


@dataclass(frozen=True)
class RemoveSpec:
    value: Any


@dataclass(frozen=True)
class AppendSpec:
    value: Any


@dataclass(frozen=True)
class TextSpec:
    pos: int
    """A code-point position, taken modulo the current length + 1."""
    delete: int
    insert: str


@dataclass(frozen=True)
class DeleteSpec:
    pass


OpSpec = SetSpec | IncSpec | AddSpec | RemoveSpec | AppendSpec | TextSpec | DeleteSpec


@dataclass(frozen=True)
class Edit:
    """Replica ``replica`` makes one change ``dt`` ms after the previous step."""

    replica: int
    ops: tuple[OpSpec, ...]
    dt: int = 0


@dataclass(frozen=True)
class Push:
    """Replica ``replica`` delivers up to ``count`` of its undelivered changes."""

    replica: int
    count: int


@dataclass(frozen=True)
class Pull:
    """Replica ``replica`` merges the server's state into its own."""

    replica: int


Step = Edit | Push | Pull

register_values = st.sampled_from(["x", "y", "z", 7, None, True])
status_values = st.sampled_from([*STATUS_ORDER, "lost"])
set_elements = st.sampled_from(["red", "blue", True])
TEXT_ALPHABET = "ab é😀中"


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a strategy with the given weights, then draw from it."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


field_op_specs: st.SearchStrategy[OpSpec] = weighted(
    (4, st.builds(SetSpec, st.sampled_from(["title", "title", "note"]), register_values)),
    (2, st.builds(SetSpec, st.just("status"), status_values)),
    (1, st.builds(IncSpec, st.integers(-3, 3))),
    (2, st.builds(AddSpec, set_elements)),
    (2, st.builds(RemoveSpec, set_elements)),
    (1, st.builds(AppendSpec, st.integers(0, 99))),
    (2, st.builds(TextSpec, st.integers(0, 40), st.integers(0, 3), st.text(alphabet=TEXT_ALPHABET, max_size=3))),
)


change_specs: st.SearchStrategy[tuple[OpSpec, ...]] = weighted(
    (5, st.lists(field_op_specs, min_size=1, max_size=3).map(tuple)),
    (1, st.just((DeleteSpec(),))),
)
"""About one change in six is a delete (the only op of its change)."""


def edits(replicas: int) -> st.SearchStrategy[Edit]:
    return st.builds(Edit, st.integers(0, replicas - 1), change_specs, st.integers(0, 1500))


def steps(replicas: int) -> st.SearchStrategy[Step]:
    """Edits, pushes and pulls: histories in which replicas see each other's writes."""
    return weighted(
        (6, edits(replicas)),
        (2, st.builds(Push, st.integers(0, replicas - 1), st.integers(1, 3))),
        (2, st.builds(Pull, st.integers(0, replicas - 1))),
    )


skews = st.sampled_from([0, 0, -3000, 5000])
"""Device clock offsets in ms: HLCs decide only LWW views, never causality."""


# --- the world -----------------------------------------------------------------


@dataclass
class Delivery:
    """One change the server applied, in delivery order."""

    replica: str
    change: Change
    before: EntityState
    outcome: Outcome

    @property
    def ctx(self) -> dict[str, int]:
        """The effective context: the change's context plus its own replica's earlier changes."""
        ctx = dict(self.change.context)
        ctx[self.replica] = max(ctx.get(self.replica, 0), self.change.n - 1)
        return ctx


@dataclass
class Server:
    collection: Collection
    state: EntityState = field(default_factory=EntityState)
    hwm: dict[str, int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    def deliver(self, replica: str, change: Change) -> str:
        """Deliver like the server's push: duplicates and gaps leave the state alone."""
        hwm = self.hwm.get(replica, 0)
        if change.n <= hwm:
            status = "duplicate"
        elif change.n > hwm + 1:
            status = "out_of_order"
        else:
            outcome = apply_change(self.state, change, replica, self.collection, user=f"user-{replica}")
            self.deliveries.append(Delivery(replica, change, self.state, outcome))
            self.state = outcome.state
            self.hwm[replica] = change.n
            status = "applied"
        self.statuses.append(status)
        return status


@dataclass
class Replica:
    id: str
    client_id: int
    clock: HybridClock
    state: EntityState
    n: int = 0
    changes: list[Change] = field(default_factory=list)
    """Every change this replica made, in counter order."""
    pushed: int = 0
    """How many of ``changes`` the server has (delivered in order)."""
    own_only: EntityState | None = field(default_factory=EntityState)
    """The start state with only this replica's own changes applied; ``None`` once
    it pulled (its later changes build on what it pulled)."""


@dataclass
class World:
    collection: Collection
    replicas: list[Replica]
    server: Server
    now: int = 1_700_000_000_000
    start: EntityState = field(default_factory=EntityState)
    """The common state of the last ``checkpoint``."""
    start_hwm: dict[str, int] = field(default_factory=dict)

    def replica(self, index: int) -> Replica:
        return self.replicas[index % len(self.replicas)]

    def run(self, history: Iterable[Step]) -> World:
        for step in history:
            match step:
                case Edit():
                    self.edit(step)
                case Push(replica=r, count=count):
                    self.push(self.replica(r), count)
                case Pull(replica=r):
                    self.pull(self.replica(r))
        return self

    def edit(self, step: Edit) -> Change:
        self.now += step.dt
        rep = self.replica(step.replica)
        rep.n += 1
        change = Change(
            id=f"{rep.id}-{rep.n}",
            n=rep.n,
            collection=COLLECTION,
            entity=ENTITY,
            hlc=rep.clock.tick(),
            context=dict(rep.state.vv),
            ops=self._ops(rep, step.ops),
        )
        rep.state = apply_change(rep.state, change, rep.id, self.collection, user=f"user-{rep.id}").state
        if rep.own_only is not None:
            rep.own_only = apply_change(rep.own_only, change, rep.id, self.collection, user=f"user-{rep.id}").state
        rep.changes.append(change)
        return change

    def _ops(self, rep: Replica, specs: Sequence[OpSpec]) -> list[Op]:
        ops: list[Op] = []
        doc: Doc[Any] | None = None
        for spec in specs:
            match spec:
                case SetSpec(field=f, value=v):
                    ops.append(SetOp(f, v))
                case IncSpec(by=by):
                    ops.append(IncOp("count", by))
                case AddSpec(value=v):
                    ops.append(AddOp("tags", v))
                case RemoveSpec(value=v):
                    ops.append(RemoveOp("tags", v))
                case AppendSpec(value=v):
                    ops.append(AppendOp("trail", {"lat": v, "lon": -v}))
                case TextSpec(pos=pos, delete=delete, insert=insert):
                    if doc is None:
                        doc = text_doc(rep.state.fields.get("body"), rep.client_id)
                    current = str(doc.get(ytext.ROOT, type=Text))
                    pos %= len(current) + 1
                    update = ytext.splice(doc, pos, min(delete, len(current) - pos), insert)
                    ops.append(TextOp("body", base64.b64encode(update).decode()))
                case DeleteSpec():
                    ops.append(DeleteOp())
        return ops

    def push(self, rep: Replica, count: int) -> None:
        for change in rep.changes[rep.pushed : rep.pushed + count]:
            assert self.server.deliver(rep.id, change) == "applied"
            rep.pushed += 1

    def pull(self, rep: Replica) -> None:
        rep.state = join(rep.state, self.server.state)
        rep.own_only = None
        rep.clock.observe(max_hlc(self.server.state))

    def push_all(self) -> None:
        for rep in self.replicas:
            self.push(rep, len(rep.changes))

    def checkpoint(self) -> World:
        """Everyone pushes and pulls everything: from here on they share ``start``.

        Each replica's change list restarts empty (its counter goes on)."""
        self.push_all()
        self.start, self.start_hwm = self.server.state, dict(self.server.hwm)
        for rep in self.replicas:
            rep.state = rep.own_only = self.start
            rep.changes, rep.pushed = [], 0
            rep.clock.observe(max_hlc(self.start))
        return self

    def per_replica(self) -> dict[str, list[Change]]:
        return {rep.id: rep.changes for rep in self.replicas}


def new_world(n_replicas: int, collection: Collection, skew: Sequence[int] = ()) -> World:
    world = World(collection, [], Server(collection))
    for i in range(n_replicas):
        clock = HybridClock(wall=partial(_device_wall, world, skew[i] if i < len(skew) else 0))
        world.replicas.append(Replica("abcd"[i], 1000 + i, clock, EntityState()))
    return world


def _device_wall(world: World, offset: int) -> int:
    return world.now + offset


def text_doc(f: FieldState | None, client_id: int) -> Doc[Any]:
    """A replica's editable Yjs document of a text field, with its own fixed client id.

    Reusing the client id is safe because the replica's state holds every item it made.
    """
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get(ytext.ROOT, type=Text)
    if isinstance(f, TextState) and (f.update or f.tail):
        doc.apply_update(ytext.encoded(f))
    return doc


def max_hlc(state: EntityState) -> tuple[int, int]:
    stamps = [m.hlc for m in state.live + state.tomb]
    for f in state.fields.values():
        if isinstance(f, Register):
            stamps += [s.hlc for s in f.siblings]
    return max(stamps, default=(0, 0))


# --- delivery orders -------------------------------------------------------------


def causal_order(
    per_replica: dict[str, list[Change]], start_vv: dict[str, int], rng: random.Random
) -> list[tuple[str, Change]]:
    """A random delivery order that keeps each replica's counter order and causality
    (a change comes after every change its context has seen)."""
    delivered = dict(start_vv)
    queues = {r: list(cs) for r, cs in per_replica.items() if cs}
    order: list[tuple[str, Change]] = []
    while queues:
        ready = [
            r
            for r, q in sorted(queues.items())
            if all(delivered.get(o, 0) >= n for o, n in q[0].context.items() if o != r)
        ]
        assert ready, "the generated history is not causal"
        r = rng.choice(ready)
        change = queues[r].pop(0)
        delivered[r] = change.n
        order.append((r, change))
        if not queues[r]:
            del queues[r]
    return order


def with_retries(order: Sequence[tuple[str, Change]], rng: random.Random) -> list[tuple[str, Change]]:
    """Add network noise: re-deliveries of changes already sent (duplicates) and
    changes sent ahead of their turn (out of order, to be sent again later)."""
    sent: dict[str, list[Change]] = {}
    out: list[tuple[str, Change]] = []
    by_replica: dict[str, list[Change]] = {}
    for r, c in order:
        by_replica.setdefault(r, []).append(c)
    for r, c in order:
        roll = rng.random()
        if roll < 0.2 and sent.get(r):
            out.append((r, rng.choice(sent[r])))
        elif roll < 0.3:
            later = [x for x in by_replica[r] if x.n > c.n]
            if later:
                out.append((r, rng.choice(later)))
        out.append((r, c))
        sent.setdefault(r, []).append(c)
    return out


def deliver_all(
    collection: Collection, start: EntityState, start_hwm: dict[str, int], order: Iterable[tuple[str, Change]]
) -> Server:
    server = Server(collection, start, dict(start_hwm))
    for r, change in order:
        before = server.hwm.get(r, 0)
        status = server.deliver(r, change)
        expected = "duplicate" if change.n <= before else "applied" if change.n == before + 1 else "out_of_order"
        assert status == expected, (r, change.n, before, status)
    return server


# --- comparing states -------------------------------------------------------------


def canonical(state: EntityState) -> Any:
    """A comparable form of a state: ``normalize``, with text fields as their string."""
    norm = normalize(state)
    out = msgspec.to_builtins(norm)
    for name, f in norm.fields.items():
        if isinstance(f, TextState):
            out["fields"][name] = {"kind": "text", "value": ytext.value(f)}
    return out


def canonical_field(f: FieldState) -> Any:
    if isinstance(f, TextState):
        return ("text", ytext.value(f))
    return msgspec.to_builtins(normalize(EntityState(fields={"f": f})).fields["f"])


def canonical_view(view: EntityView) -> Any:
    """A comparable form of a view; a text field's Yjs bytes are compared by their string."""
    out = msgspec.to_builtins(view)
    for name, fv in view.fields.items():
        if fv.update is not None:
            out["fields"][name]["update"] = ytext.value(TextState(base64.b64decode(fv.update)))
    return out


def view(state: EntityState, collection: Collection) -> EntityView:
    return entity_view(state, collection, ENTITY, seq=0)


def empty_like(f: FieldState) -> FieldState:
    match f:
        case Register():
            return Register()
        case Counter():
            return Counter()
        case AWSet():
            return AWSet()
        case TextState():
            return TextState()
        case Log():
            return Log()
    raise TypeError(type(f).__name__)


def register_conflicts(deliveries: Iterable[Delivery]) -> list[tuple[int, ConflictDraft]]:
    return [(i, c) for i, d in enumerate(deliveries) for c in d.outcome.conflicts if c.kind == "register"]


@st.composite
def related_states(draw: st.DrawFn, count: int = 3) -> list[EntityState]:
    """``count`` states of one entity from one history: replicas' states (with and
    without what they pulled, some with changes not pushed yet) and the server's."""
    n_replicas = draw(st.integers(2, 4))
    history = draw(st.lists(steps(4), min_size=2, max_size=30))
    world = new_world(n_replicas, make_collection(draw(st.sampled_from(["update_wins", "delete_wins"])))).run(history)
    pool = [world.server.state, *(r.state for r in world.replicas)]
    pool += [r.own_only for r in world.replicas if r.own_only is not None]
    return [pool[draw(st.integers(0, len(pool) - 1))] for _ in range(count)]
