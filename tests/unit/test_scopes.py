"""Channel templates fill from merged field values; a scope is the whole tenant or a set of channels."""

from __future__ import annotations

from typing import Any

import pytest

from syncproto.merge import EntityState, apply_change
from syncproto.messages import AddOp, Change, Op, SetOp
from syncproto.schema import Collection, CollectionSpec, FieldSpec, compile_collection
from syncserver.auth.scopes import MAX_CHANNEL_LENGTH, ChannelError, Scope, can_see, entity_channels
from syncserver.auth.tokens import Principal

DELIVERIES = compile_collection(
    "deliveries",
    CollectionSpec(
        fields={"zones": FieldSpec(kind="set")},
        channels=["driver:{driver_id}", "depot:{depot}", "zone:{zones}", "all-deliveries"],
    ),
)


def state(*ops: Op, collection: Collection = DELIVERIES, base: EntityState | None = None, n: int = 1) -> EntityState:
    change = Change(f"c{n}", n, collection.name, "dlv-1", (1000 + n, 0), {}, list(ops))
    return apply_change(base or EntityState(), change, "phone", collection).state


def test_templates_fill_from_register_values() -> None:
    s = state(SetOp("driver_id", "d-17"), SetOp("depot", "north"))
    assert entity_channels(DELIVERIES, s) == {"driver:d-17", "depot:north", "all-deliveries"}


def test_a_missing_null_empty_or_non_scalar_value_makes_no_channel_from_its_template() -> None:
    assert entity_channels(DELIVERIES, state(SetOp("status", "pending"))) == {"all-deliveries"}
    values: list[Any] = [None, "", True, {"id": 1}, 2.5]
    for value in values:
        assert entity_channels(DELIVERIES, state(SetOp("driver_id", value))) == {"all-deliveries"}, value
    assert entity_channels(DELIVERIES, state(SetOp("driver_id", 42))) == {"driver:42", "all-deliveries"}


def test_a_set_field_puts_the_entity_in_one_channel_per_element() -> None:
    s = state(AddOp("zones", "a"), AddOp("zones", "b"))
    assert entity_channels(DELIVERIES, s) == {"zone:a", "zone:b", "all-deliveries"}


def test_a_list_value_expands_and_several_placeholders_multiply() -> None:
    grid = compile_collection("grid", CollectionSpec(channels=["{region}/{teams}"]))
    s = state(SetOp("region", "eu"), SetOp("teams", ["x", "y", 3, None]), collection=grid)
    assert entity_channels(grid, s) == {"eu/x", "eu/y", "eu/3"}


def test_reassigning_the_field_moves_the_entity() -> None:
    first = state(SetOp("driver_id", "d-1"))
    moved = state(SetOp("driver_id", "d-2"), base=first, n=2)
    assert "driver:d-1" in entity_channels(DELIVERIES, first)
    assert entity_channels(DELIVERIES, moved) == {"driver:d-2", "all-deliveries"}


def test_a_collection_without_templates_is_in_no_channel() -> None:
    plain = compile_collection("notes", CollectionSpec())
    assert entity_channels(plain, state(SetOp("driver_id", "d-1"), collection=plain)) == frozenset()


def test_unstorable_channels_are_refused() -> None:
    with pytest.raises(ChannelError, match="longer than"):
        entity_channels(DELIVERIES, state(SetOp("driver_id", "x" * MAX_CHANNEL_LENGTH)))
    many = state(*(AddOp("zones", f"z{i}") for i in range(70)))
    with pytest.raises(ChannelError, match="channels"):
        entity_channels(DELIVERIES, many)


def test_scopes_by_role() -> None:
    driver = Principal("t", "d-17", "driver", ("driver:d-17", "depot:north"))
    assert Scope.of(driver).allows({"driver:d-17"})
    assert Scope.of(driver).allows({"depot:north", "zone:x"})
    assert not Scope.of(driver).allows({"driver:d-42"})
    assert not Scope.of(driver).allows(set())
    for role in ("dispatcher", "admin"):
        tenant_wide = Scope.of(Principal("t", "x", role))  # type: ignore[arg-type]
        assert tenant_wide.unrestricted
        assert tenant_wide.allows(set())


def test_can_see_uses_the_merged_state() -> None:
    s = state(SetOp("driver_id", "d-17"))
    assert can_see(Principal("t", "d-17", "driver", ("driver:d-17",)), DELIVERIES, s)
    assert not can_see(Principal("t", "d-42", "driver", ("driver:d-42",)), DELIVERIES, s)
    assert can_see(Principal("t", "boss", "dispatcher"), DELIVERIES, s)
