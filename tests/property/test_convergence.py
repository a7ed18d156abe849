"""Convergence: every delivery order of the same changes gives the same state and view,
and applying ops (what the server does) agrees with joining states."""

from __future__ import annotations

import random
from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from syncproto.merge import join
from tests.property.sim import (
    Edit,
    Step,
    canonical,
    canonical_view,
    causal_order,
    deliver_all,
    edits,
    make_collection,
    new_world,
    skews,
    steps,
    view,
    with_retries,
)

policies = st.sampled_from(["update_wins", "delete_wins"])


@given(
    n_replicas=st.integers(2, 4),
    seed=st.lists(steps(4), max_size=8),
    offline=st.lists(edits(4), min_size=1, max_size=16),
    skew=st.lists(skews, min_size=4, max_size=4),
    policy=policies,
    rng=st.randoms(use_true_random=False),
)
def test_offline_changes_converge_in_any_delivery_order(
    n_replicas: int,
    seed: list[Step],
    offline: list[Edit],
    skew: list[int],
    policy: str,
    rng: random.Random,
) -> None:
    collection = make_collection(policy)
    world = new_world(n_replicas, collection, skew).run(seed).checkpoint().run(offline)
    servers = [
        deliver_all(
            collection,
            world.start,
            world.start_hwm,
            with_retries(causal_order(world.per_replica(), world.start_hwm, rng), rng),
        )
        for _ in range(2)
    ]
    first, second = servers
    assert len(first.deliveries) == len(second.deliveries) == sum(len(cs) for cs in world.per_replica().values())
    assert canonical(first.state) == canonical(second.state)
    assert canonical_view(view(first.state, collection)) == canonical_view(view(second.state, collection))

    # State-based and op-based agree: joining what each replica did on its own
    # gives what the server got by applying every change.
    own = [rep.own_only for rep in world.replicas if rep.own_only is not None]
    assert len(own) == n_replicas  # nobody pulled since the checkpoint
    joined = reduce(join, own)
    assert canonical(joined) == canonical(first.state)
    assert canonical_view(view(joined, collection)) == canonical_view(view(first.state, collection))


@given(
    n_replicas=st.integers(2, 4),
    history=st.lists(steps(4), min_size=1, max_size=30),
    policy=policies,
    rng=st.randoms(use_true_random=False),
)
def test_synced_histories_converge_in_any_causal_delivery_order(
    n_replicas: int, history: list[Step], policy: str, rng: random.Random
) -> None:
    """Replicas push and pull as they go, so contexts name other replicas' changes;
    any causal delivery order, with duplicates and early sends, gives the same state."""
    collection = make_collection(policy)
    world = new_world(n_replicas, collection).run(history)
    world.push_all()
    reference = world.server
    for _ in range(2):
        order = with_retries(causal_order(world.per_replica(), {}, rng), rng)
        other = deliver_all(collection, world.start, {}, order)
        assert canonical(other.state) == canonical(reference.state)
        assert canonical_view(view(other.state, collection)) == canonical_view(view(reference.state, collection))

    # Every replica's state joined with the others' is the server's state.
    joined = reduce(join, [rep.state for rep in world.replicas])
    assert canonical(joined) == canonical(reference.state)
    # And a replica that pulls after everything was pushed has the server's view.
    for rep in world.replicas:
        world.pull(rep)
        assert canonical_view(view(rep.state, collection)) == canonical_view(view(reference.state, collection))
