"""Every CRDT's state-based join is commutative, associative and idempotent.

States come from real histories (``sim.related_states``): arbitrary structs would
break invariants that a history keeps (for example that a version vector covers
every dot in the state).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncproto.crdt import AWSet, Counter, FieldState, Log, Register, TextState, awset, counter, log, register, text
from syncproto.merge import EntityState, join
from syncproto.vv import merge as vv_merge
from tests.property.sim import (
    canonical,
    canonical_field,
    make_collection,
    new_world,
    related_states,
    steps,
)

VV = Mapping[str, int]
Versioned = tuple[FieldState, dict[str, int]]
"""A field's state with the version vector of the entity state it comes from (its join needs it)."""


@dataclass(frozen=True)
class FieldKind:
    field: str
    empty: Callable[[], FieldState]
    merge: Callable[[Any, Any, VV, VV], FieldState]

    def project(self, state: EntityState) -> Versioned:
        return state.fields.get(self.field) or self.empty(), dict(state.vv)

    def join(self, a: Versioned, b: Versioned) -> Versioned:
        return self.merge(a[0], b[0], a[1], b[1]), vv_merge(a[1], b[1])


KINDS = {
    "register": FieldKind("title", Register, register.join),
    "precedence_register": FieldKind("status", Register, register.join),
    "counter": FieldKind("count", Counter, lambda a, b, _va, _vb: counter.join(a, b)),
    "awset": FieldKind("tags", AWSet, awset.join),
    "text": FieldKind("body", TextState, lambda a, b, _va, _vb: text.join(a, b)),
    "log": FieldKind("trail", Log, lambda a, b, _va, _vb: log.join(a, b)),
}


def _same(x: Versioned, y: Versioned) -> bool:
    return bool(canonical_field(x[0]) == canonical_field(y[0]) and x[1] == y[1])


def check_commutative(kind: str, states: list[EntityState]) -> None:
    k = KINDS[kind]
    a, b = (k.project(s) for s in states[:2])
    assert _same(k.join(a, b), k.join(b, a))


def check_associative(kind: str, states: list[EntityState]) -> None:
    k = KINDS[kind]
    a, b, c = (k.project(s) for s in states)
    assert _same(k.join(k.join(a, b), c), k.join(a, k.join(b, c)))


def check_idempotent(kind: str, states: list[EntityState]) -> None:
    k = KINDS[kind]
    a = k.project(states[0])
    assert _same(k.join(a, a), a)


@given(related_states())
def test_register_join_is_commutative(states: list[EntityState]) -> None:
    check_commutative("register", states)
    check_commutative("precedence_register", states)


@given(related_states())
def test_register_join_is_associative(states: list[EntityState]) -> None:
    check_associative("register", states)
    check_associative("precedence_register", states)


@given(related_states())
def test_register_join_is_idempotent(states: list[EntityState]) -> None:
    check_idempotent("register", states)
    check_idempotent("precedence_register", states)


@given(related_states())
def test_counter_join_is_commutative(states: list[EntityState]) -> None:
    check_commutative("counter", states)


@given(related_states())
def test_counter_join_is_associative(states: list[EntityState]) -> None:
    check_associative("counter", states)


@given(related_states())
def test_counter_join_is_idempotent(states: list[EntityState]) -> None:
    check_idempotent("counter", states)


@given(related_states())
def test_awset_join_is_commutative(states: list[EntityState]) -> None:
    check_commutative("awset", states)


@given(related_states())
def test_awset_join_is_associative(states: list[EntityState]) -> None:
    check_associative("awset", states)


@given(related_states())
def test_awset_join_is_idempotent(states: list[EntityState]) -> None:
    check_idempotent("awset", states)


@given(related_states())
def test_text_join_is_commutative(states: list[EntityState]) -> None:
    check_commutative("text", states)


@given(related_states())
def test_text_join_is_associative(states: list[EntityState]) -> None:
    check_associative("text", states)


@given(related_states())
def test_text_join_is_idempotent(states: list[EntityState]) -> None:
    check_idempotent("text", states)


@given(related_states())
def test_log_join_is_commutative(states: list[EntityState]) -> None:
    check_commutative("log", states)


@given(related_states())
def test_log_join_is_associative(states: list[EntityState]) -> None:
    check_associative("log", states)


@given(related_states())
def test_log_join_is_idempotent(states: list[EntityState]) -> None:
    check_idempotent("log", states)


@given(related_states())
def test_entity_join_is_commutative(states: list[EntityState]) -> None:
    a, b = states[:2]
    assert canonical(join(a, b)) == canonical(join(b, a))


@given(related_states())
def test_entity_join_is_associative(states: list[EntityState]) -> None:
    a, b, c = states
    assert canonical(join(join(a, b), c)) == canonical(join(a, join(b, c)))


@given(related_states())
def test_entity_join_is_idempotent(states: list[EntityState]) -> None:
    assert canonical(join(states[0], states[0])) == canonical(states[0])


@given(related_states(count=2))
def test_entity_join_is_an_upper_bound(states: list[EntityState]) -> None:
    """Joining again with either input changes nothing: nothing one side had is lost."""
    a, b = states
    ab = join(a, b)
    assert canonical(join(ab, a)) == canonical(ab)
    assert canonical(join(b, ab)) == canonical(ab)


@given(
    n_replicas=st.integers(2, 4),
    history=st.lists(steps(4), min_size=1, max_size=30),
    policy=st.sampled_from(["update_wins", "delete_wins"]),
)
def test_apply_change_is_an_inflation(n_replicas: int, history: list[Any], policy: str) -> None:
    """Op-based and state-based agree step by step: the state after a change, joined
    with the state before it, is the state after it."""
    world = new_world(n_replicas, make_collection(policy)).run(history)
    world.push_all()
    for d in world.server.deliveries:
        assert canonical(join(d.before, d.outcome.state)) == canonical(d.outcome.state)
        assert canonical(join(d.outcome.state, d.before)) == canonical(d.outcome.state)
