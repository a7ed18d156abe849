"""The conflict log lists exactly the concurrent writes.

An independent oracle recomputes, from the delivery history alone, which writes
were concurrent when each change arrived, and compares with the ``ConflictDraft``s
that ``apply_change`` emitted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from syncproto.merge import ConflictDraft
from syncproto.messages import DeleteOp
from syncproto.schema import Collection
from tests.property.oracle import concurrent_with, covered, expected_winner, overwritten_between, register_writes
from tests.property.sim import (
    Delivery,
    Step,
    causal_order,
    deliver_all,
    make_collection,
    new_world,
    steps,
    with_retries,
)


def check_register_conflicts(deliveries: Sequence[Delivery]) -> int:
    writes = register_writes(deliveries)
    by_key = {(w.dot, w.field): w for w in writes}
    emitted: dict[tuple[int, str], ConflictDraft] = {}
    for i, d in enumerate(deliveries):
        for c in d.outcome.conflicts:
            if c.kind == "register":
                assert c.field is not None
                assert (i, c.field) not in emitted, "two conflicts for one write"
                emitted[(i, c.field)] = c

    for w in writes:
        rivals = concurrent_with(w, writes)
        draft = emitted.pop((w.index, w.field), None)
        # A conflict is emitted at w iff some earlier, not overwritten write is concurrent with it ...
        assert (draft is not None) == bool(rivals), (w, rivals, draft)
        if draft is None:
            continue
        # ... and it lists exactly those writes and w, each with its value, replica, user and stamp.
        listed = {(s.replica, s.n): s for s in draft.values}
        assert set(listed) == {x.dot for x in rivals} | {w.dot}
        for dot, s in listed.items():
            source = by_key[(dot, w.field)]
            assert (s.value, s.hlc, s.user) == (source.value, source.hlc, f"user-{dot[0]}")
        # Values listed together are pairwise concurrent.
        for a in listed:
            for b in listed:
                if a != b:
                    assert not covered(by_key[(a, w.field)].ctx, b), (a, b)
        # The winner is the one the field's rule picks.
        assert draft.winner is not None
        want = expected_winner(w.field, [by_key[(dot, w.field)] for dot in listed])
        assert (draft.winner.replica, draft.winner.n) == want.dot
        assert draft.rule == ("precedence" if w.field == "status" else "lww")
    assert not emitted, f"conflicts without a concurrent write: {emitted}"

    # Completeness, pair by pair: concurrent writes to one field, the earlier not
    # overwritten before the later arrived, appear together in some conflict.
    together = {
        frozenset((s.replica, s.n) for s in c.values)
        for d in deliveries
        for c in d.outcome.conflicts
        if c.kind == "register"
    }
    for x in writes:
        for y in writes:
            if (
                x.field == y.field
                and x.index < y.index
                and not covered(y.ctx, x.dot)
                and not overwritten_between(x, x.index, y.index, writes)
            ):
                assert any({x.dot, y.dot} <= group for group in together), (x, y)
    return len(writes)


def check_delete_conflicts(deliveries: Sequence[Delivery], collection: Collection) -> None:
    """A delete meeting an update it had not seen (or the reverse) is a ``delete_update`` conflict."""

    def is_delete(d: Delivery) -> bool:
        return isinstance(d.change.ops[0], DeleteOp)

    for i, x in enumerate(deliveries):
        # The marks no change delivered since had seen.
        frontier = [
            (j, m)
            for j, m in enumerate(deliveries[:i])
            if not any(covered(deliveries[k].ctx, (m.replica, m.change.n)) for k in range(j + 1, i))
        ]
        unseen = [m for _, m in frontier if not covered(x.ctx, (m.replica, m.change.n))]
        got = sorted([(s.replica, s.n) for s in c.values] for c in x.outcome.conflicts if c.kind == "delete_update")
        if is_delete(x):
            updates = [m for m in unseen if not is_delete(m)]
            want = [[(x.replica, x.change.n)] + [(m.replica, m.change.n) for m in updates]] if updates else []
        else:
            want = sorted([[(m.replica, m.change.n), (x.replica, x.change.n)] for m in unseen if is_delete(m)])
        assert got == want, (i, got, want)
        for c in x.outcome.conflicts:
            if c.kind == "delete_update":
                assert c.rule == collection.on_delete
                assert c.winner is not None
                if collection.on_delete == "delete_wins":
                    assert c.winner.value is None  # the delete


histories = st.lists(steps(4), min_size=4, max_size=30)


@given(
    n_replicas=st.integers(2, 4),
    history=histories,
    policy=st.sampled_from(["update_wins", "delete_wins"]),
    rng=st.randoms(use_true_random=False),
)
def test_conflict_log_lists_exactly_the_concurrent_writes(
    n_replicas: int, history: list[Step], policy: str, rng: random.Random
) -> None:
    collection = make_collection(policy)
    world = new_world(n_replicas, collection).run(history)
    world.push_all()
    reordered = deliver_all(collection, world.start, {}, with_retries(causal_order(world.per_replica(), {}, rng), rng))
    for server in (world.server, reordered):
        check_register_conflicts(server.deliveries)
        check_delete_conflicts(server.deliveries, collection)
