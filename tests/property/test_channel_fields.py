"""A change that touches none of the fields a collection's channel templates name leaves its channels.

A push recomputes an entity's channels only after a change to one of those fields
(``scopes.channel_fields``); for the other changes it keeps the channels it computed from the
state before. This checks the rule that makes that safe, over random histories of every op kind
(sets with concurrent siblings, counters, set adds and removes, text, logs, deletes and revivals,
under both delete policies): whenever ``Outcome.changed`` misses every channel field, the
channels of the state after equal those of the state before.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import event, given
from hypothesis import strategies as st

from syncproto.merge import EntityState
from syncproto.schema import Collection
from syncserver.auth.scopes import ChannelError, channel_fields, entity_channels
from tests.property.sim import Step, make_collection, new_world, steps

TEMPLATES = ("title:{title}", "status:{status}", "tag:{tags}", "count:{count}", "pair:{title}/{tags}", "everyone")
"""Registers (one with a precedence rule), a set, a counter, two fields in one template, a constant."""


def channels(collection: Collection, state: EntityState) -> frozenset[str] | str:
    try:
        return entity_channels(collection, state)
    except ChannelError as exc:
        return f"ChannelError: {exc}"


def test_the_fields_of_the_templates() -> None:
    assert channel_fields(TEMPLATES) == {"title", "status", "tags", "count"}
    assert channel_fields(("driver:{driver_id}", "depot:{depot:>3}", "{unbalanced")) == {"driver_id", "depot"}
    assert channel_fields(()) == frozenset()


@given(
    n_replicas=st.integers(1, 3),
    history=st.lists(steps(3), min_size=1, max_size=30),
    policy=st.sampled_from(["update_wins", "delete_wins"]),
)
def test_a_change_to_no_channel_field_leaves_the_channels(n_replicas: int, history: list[Step], policy: str) -> None:
    collection = replace(make_collection(policy), channels=TEMPLATES)
    fields = channel_fields(collection.channels)
    world = new_world(n_replicas, collection).run(history)
    world.push_all()
    for delivery in world.server.deliveries:
        before, after = delivery.before, delivery.outcome.state
        if delivery.outcome.changed.isdisjoint(fields):
            event("no channel field changed")
            assert channels(collection, after) == channels(collection, before), delivery.change
        elif channels(collection, after) != channels(collection, before):
            event("a channel field changed the channels")
