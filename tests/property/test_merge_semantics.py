"""What the merged state means, checked against oracles computed from the delivered
changes alone (no CRDT code): multi-value registers, add-wins sets, counters, logs,
and update-wins / delete-wins tombstones."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from syncproto.crdt import AWSet, Counter, Log, Register
from syncproto.merge import EntityState, is_deleted
from syncproto.messages import AddOp, AppendOp, DeleteOp, IncOp, RemoveOp
from syncproto.views import entity_view
from tests.property.oracle import covered, expected_winner, register_writes
from tests.property.sim import (
    ENTITY,
    Delivery,
    Server,
    causal_order,
    deliver_all,
    make_collection,
    new_world,
    steps,
    view,
    with_retries,
)

Dot = tuple[str, int]


@st.composite
def delivered(draw: st.DrawFn) -> tuple[Server, str]:
    """A server that received a random history in a random causal order."""
    policy = draw(st.sampled_from(["update_wins", "delete_wins"]))
    collection = make_collection(policy)
    world = new_world(draw(st.integers(2, 4)), collection).run(draw(st.lists(steps(4), min_size=1, max_size=30)))
    rng = draw(st.randoms(use_true_random=False))
    order = with_retries(causal_order(world.per_replica(), {}, rng), rng)
    return deliver_all(collection, EntityState(), {}, order), policy


def dot(d: Delivery) -> Dot:
    return (d.replica, d.change.n)


@given(delivered())
def test_register_keeps_exactly_the_writes_no_later_write_has_seen(server_policy: tuple[Server, str]) -> None:
    server, _ = server_policy
    writes = register_writes(server.deliveries)
    for name in {w.field for w in writes}:
        mine = [w for w in writes if w.field == name]
        frontier = {w.dot: w for w in mine if not any(x is not w and covered(x.ctx, w.dot) for x in mine)}
        reg = server.state.fields[name]
        assert isinstance(reg, Register)
        assert {(s.replica, s.n): s.value for s in reg.siblings} == {d: w.value for d, w in frontier.items()}
        if not is_deleted(server.state, server.collection.on_delete):
            shown = view(server.state, server.collection).fields[name]
            assert shown.value == expected_winner(name, list(frontier.values())).value
            assert (shown.siblings is not None) == (len(frontier) > 1)


@given(delivered())
def test_awset_holds_exactly_the_adds_no_later_op_has_seen(server_policy: tuple[Server, str]) -> None:
    """Add wins: a remove takes away only the adds its context had seen."""
    server, _ = server_policy
    ops: list[tuple[str, Dot, dict[str, int], bool]] = []  # element, change, context, last op is an add
    for d in server.deliveries:
        last: dict[str, bool] = {}
        for op in d.change.ops:
            if isinstance(op, AddOp | RemoveOp):
                last[msgspec.json.encode(op.value, order="sorted").decode()] = isinstance(op, AddOp)
        ops += [(key, dot(d), d.ctx, is_add) for key, is_add in last.items()]
    alive: dict[str, set[Dot]] = {}
    for key, a, _, is_add in ops:
        # A change's ops apply in order: its dot is on the element iff its last op on it is an add,
        # and it stays iff no later add or remove of the element had seen it.
        if is_add and not any(k == key and covered(ctx, a) for k, _, ctx, _ in ops):
            alive.setdefault(key, set()).add(a)
    s = server.state.fields.get("tags", AWSet())
    assert isinstance(s, AWSet)
    assert {k: {(d.replica, d.n) for d in ds} for k, ds in s.elements.items()} == alive


@given(delivered())
def test_counter_counts_every_increment_exactly_once(server_policy: tuple[Server, str]) -> None:
    server, _ = server_policy
    total = sum(op.by for d in server.deliveries for op in d.change.ops if isinstance(op, IncOp))
    c = server.state.fields.get("count", Counter())
    assert isinstance(c, Counter)
    assert sum(i - dec for _, i, dec in c.entries.values()) == total
    if "count" in server.state.fields and not is_deleted(server.state, server.collection.on_delete):
        assert view(server.state, server.collection).fields["count"].value == total


@given(delivered())
def test_log_keeps_every_append_once_in_stamp_order(server_policy: tuple[Server, str]) -> None:
    server, _ = server_policy
    entries: list[tuple[Any, Any]] = []
    for d in server.deliveries:
        for i, op in enumerate(d.change.ops):
            if isinstance(op, AppendOp):
                entries.append(((d.change.hlc, d.replica, d.change.n, i), op.value))
    trail = server.state.fields.get("trail", Log())
    assert isinstance(trail, Log)
    assert [e.value for e in trail.entries] == [v for _, v in sorted(entries, key=lambda e: e[0])]


def maximal(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """The changes no other change had seen."""
    return [m for m in deliveries if not any(covered(x.ctx, dot(m)) for x in deliveries if x is not m)]


@given(delivered())
def test_entity_is_deleted_iff_an_unseen_delete_wins_by_policy(server_policy: tuple[Server, str]) -> None:
    """Deleted iff some delete no change has seen remains and, under update_wins,
    no update that no change has seen remains beside it."""
    server, policy = server_policy
    top = maximal(server.deliveries)
    deletes = [m for m in top if isinstance(m.change.ops[0], DeleteOp)]
    updates = [m for m in top if not isinstance(m.change.ops[0], DeleteOp)]
    want = bool(deletes) and (policy == "delete_wins" or not updates)
    assert is_deleted(server.state, policy) == want
    shown = view(server.state, server.collection)
    assert shown.deleted == want
    assert (shown.fields == {}) == (want or not server.state.fields)
    assert sorted((m.replica, m.n) for m in server.state.tomb) == sorted(dot(m) for m in deletes)
    assert sorted((m.replica, m.n) for m in server.state.live) == sorted(dot(m) for m in updates)


@given(delivered(), st.randoms(use_true_random=False))
def test_view_lists_only_the_fields_asked_for(server_policy: tuple[Server, str], rng: random.Random) -> None:
    server, _ = server_policy
    wanted = [n for n in sorted(server.state.fields) if rng.random() < 0.5] + ["absent"]
    full = view(server.state, server.collection)
    part = entity_view(server.state, server.collection, ENTITY, 0, fields=wanted)
    assert (part.vv, part.deleted) == (full.vv, full.deleted)
    assert part.fields == {n: f for n, f in full.fields.items() if n in wanted}
