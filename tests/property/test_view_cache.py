"""A cached entity version answers every device exactly as building its view afresh would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncproto import merge
from syncproto.views import entity_view
from syncserver.sync.payloads import StoredEntity
from syncserver.sync.view_cache import opened
from syncstore.records import EntityRecord
from tests.property.sim import make_collection, new_world, steps


@settings(max_examples=150, deadline=None)
@given(
    on_delete=st.sampled_from(["update_wins", "delete_wins"]),
    history=st.lists(steps(3), min_size=1, max_size=25),
    seqs=st.lists(st.integers(1, 40), min_size=6, max_size=6),
    afters=st.lists(st.integers(0, 45), min_size=1, max_size=5),
)
def test_a_cached_version_gives_the_view_each_device_would_get(
    on_delete: str, history: list, seqs: list[int], afters: list[int]
) -> None:
    collection = make_collection(on_delete)
    state = new_world(3, collection).run(history).server.state
    field_seq = dict(zip(sorted(state.fields), seqs, strict=False))
    row = EntityRecord("jobs", "j1", 50, merge.is_deleted(state, collection.on_delete), 1, b"x", {}, 0)
    entry = opened(StoredEntity(state, field_seq), collection, row)
    for after in afters:
        changed = None if after == 0 else [f for f, s in field_seq.items() if s > after]
        assert entry.view_for(after) == entity_view(state, collection, "j1", 50, changed)
    # Each caller gets its own copy: what one response sets is not seen by the next.
    first = entry.view_for(0)
    first.attachments = {"a": "pending"}
    assert entry.view_for(0).attachments is None
