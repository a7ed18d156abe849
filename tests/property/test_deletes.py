"""Delete semantics: a tombstone, with a per-collection policy for a delete that
meets an update it had not seen."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncproto.merge import is_deleted
from tests.property.sim import (
    DeleteSpec,
    Edit,
    OpSpec,
    Pull,
    Push,
    Step,
    World,
    field_op_specs,
    make_collection,
    new_world,
    steps,
    view,
)

updates = st.lists(field_op_specs, min_size=1, max_size=3).map(tuple)
prefix = st.lists(steps(2), max_size=10)


def concurrent_delete_and_update(
    policy: str, prefix: list[Step], update: tuple[OpSpec, ...], delete_first: bool
) -> World:
    """From a common state, replica a deletes while replica b updates, neither having seen the other."""
    world = new_world(2, make_collection(policy)).run(prefix).checkpoint()
    world.run([Edit(0, (DeleteSpec(),)), Edit(1, update)])
    a, b = world.replicas
    for rep in (a, b) if delete_first else (b, a):
        world.push(rep, 1)
    return world


def check_one_delete_update_conflict(world: World, winner_is_delete: bool) -> None:
    first, second = world.server.deliveries[-2:]
    assert [c for c in first.outcome.conflicts if c.kind == "delete_update"] == []
    (conflict,) = [c for c in second.outcome.conflicts if c.kind == "delete_update"]
    a, b = world.replicas
    delete_dot, update_dot = (a.id, a.n), (b.id, b.n)
    assert [(s.replica, s.n) for s in conflict.values] == [delete_dot, update_dot]
    assert conflict.winner is not None
    assert (conflict.winner.replica, conflict.winner.n) == (delete_dot if winner_is_delete else update_dot)
    assert conflict.rule == world.collection.on_delete


@given(prefix, updates, st.booleans())
def test_update_wins_keeps_alive_an_entity_updated_concurrently_with_its_delete(
    prefix: list[Step], update: tuple[OpSpec, ...], delete_first: bool
) -> None:
    world = concurrent_delete_and_update("update_wins", prefix, update, delete_first)
    state = world.server.state
    assert not is_deleted(state, "update_wins")
    shown = view(state, world.collection)
    assert not shown.deleted
    assert shown.fields  # the update's fields at least
    check_one_delete_update_conflict(world, winner_is_delete=False)


@given(prefix, updates, st.booleans())
def test_delete_wins_keeps_deleted_an_entity_updated_concurrently_with_its_delete(
    prefix: list[Step], update: tuple[OpSpec, ...], delete_first: bool
) -> None:
    world = concurrent_delete_and_update("delete_wins", prefix, update, delete_first)
    assert is_deleted(world.server.state, "delete_wins")
    shown = view(world.server.state, world.collection)
    assert shown.deleted
    assert shown.fields == {}
    check_one_delete_update_conflict(world, winner_is_delete=True)


@given(st.sampled_from(["update_wins", "delete_wins"]), prefix, updates)
def test_an_update_that_has_seen_the_delete_revives_the_entity(
    policy: str, prefix: list[Step], update: tuple[OpSpec, ...]
) -> None:
    world = new_world(2, make_collection(policy)).run(prefix).checkpoint()
    world.run([Edit(0, (DeleteSpec(),)), Push(0, 1)])
    assert is_deleted(world.server.state, policy)
    assert view(world.server.state, world.collection).deleted
    world.run([Pull(1), Edit(1, update), Push(1, 1)])
    last = world.server.deliveries[-1].outcome
    assert last.revived
    assert [c for c in last.conflicts if c.kind == "delete_update"] == []  # it saw the delete: not concurrent
    assert last.changed == set(last.state.fields)  # a revived entity is sent whole
    assert not is_deleted(world.server.state, policy)
    assert not view(world.server.state, world.collection).deleted
    assert world.server.state.tomb == []


@given(st.sampled_from(["update_wins", "delete_wins"]), prefix)
def test_a_delete_that_has_seen_every_update_deletes_without_conflict(policy: str, prefix: list[Step]) -> None:
    world = new_world(2, make_collection(policy)).run(prefix).checkpoint()
    world.run([Edit(1, (DeleteSpec(),)), Push(1, 1)])
    assert world.server.deliveries[-1].outcome.conflicts == []
    assert is_deleted(world.server.state, policy)
    assert world.server.state.live == []
