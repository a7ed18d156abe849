"""``syncproto.optimistic``: a device's prediction of its own changes equals the server's merge."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from syncproto.crdt import text
from syncproto.merge import EntityState, apply_change, is_deleted
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
from syncproto.optimistic import apply_pending, predicts_rejection
from syncproto.schema import CollectionSpec, FieldSpec, compile_collection
from syncproto.views import entity_view

COLLECTION = compile_collection(
    "deliveries",
    CollectionSpec(
        fields={
            "status": FieldSpec(rule="precedence", order=["delivered", "failed", "pending"]),
            "cod": FieldSpec(kind="counter"),
            "scanned": FieldSpec(kind="set"),
            "notes": FieldSpec(kind="text"),
            "trail": FieldSpec(kind="log"),
        }
    ),
)
ME = "phone-a"


def text_update(base: str, pos: int, insert: str) -> str:
    doc: Doc[Any] = Doc()
    doc.get(text.ROOT, type=Text)
    if base:
        text.splice(doc, 0, 0, base)
    return base64.b64encode(text.splice(doc, pos, 0, insert)).decode()


ops_ = st.one_of(
    st.builds(SetOp, st.just("status"), st.sampled_from(["pending", "failed", "delivered"])),
    st.builds(SetOp, st.sampled_from(["assignee", "eta"]), st.integers(0, 9) | st.none()),
    st.builds(IncOp, st.just("cod"), st.integers(-100, 100)),
    st.builds(AddOp, st.just("scanned"), st.sampled_from(["p1", "p2", "p3"])),
    st.builds(RemoveOp, st.just("scanned"), st.sampled_from(["p1", "p2", "p3"])),
    st.builds(AppendOp, st.just("trail"), st.integers(0, 9)),
)
changes_ = st.lists(st.lists(ops_, min_size=1, max_size=3) | st.just([DeleteOp()]), min_size=1, max_size=8)


def state_after(ops_per_change: list[list[Op]], replica: str, state: EntityState, t0: int) -> EntityState:
    for n, ops in enumerate(ops_per_change, start=1):
        change = Change(f"{replica}-{n}", n, "deliveries", "dlv-1", (t0 + n, 0), dict(state.vv), ops)
        state = apply_change(state, change, replica, COLLECTION).state
    return state


def visible(view: EntityView) -> Any:
    if view.deleted:
        return "deleted"
    return {k: (f.value, [(s.replica, s.n, s.value) for s in f.siblings or []]) for k, f in view.fields.items()}


@settings(max_examples=80, deadline=None)
@given(remote=changes_, local=changes_)
def test_the_prediction_of_changes_made_on_the_pulled_state_is_the_servers_merge(
    remote: list[list[Op]], local: list[list[Op]]
) -> None:
    pulled = state_after(remote, "web-1", EntityState(), 1000)
    # The device saw the fields before any delete (its stored view keeps them, hidden).
    view = entity_view(msgspec.structs.replace(pulled, tomb=[]), COLLECTION, "dlv-1", len(remote))
    view.deleted = is_deleted(pulled, COLLECTION.on_delete)
    predicted: EntityView | None = view
    server = pulled
    context = dict(view.vv)  # what the device saw, for every change it makes before the next pull
    for n, ops in enumerate(local, start=1):
        change = Change(f"c{n}", n, "deliveries", "dlv-1", (2000 + n, 0), context, ops)
        predicted = apply_pending(predicted, change, ME, COLLECTION)
        server = apply_change(server, change, ME, COLLECTION).state
    assert predicted is not None
    merged = entity_view(server, COLLECTION, "dlv-1", 0)
    assert visible(predicted) == visible(merged)
    assert predicted.vv == merged.vv


def test_a_write_that_saw_one_sibling_keeps_the_other_and_the_rule_picks() -> None:
    state = EntityState()
    for replica, value, t in (("web-1", "failed", 10), ("phone-b", "pending", 20)):
        change = Change(replica, 1, "deliveries", "dlv-1", (t, 0), {}, [SetOp("status", value)])
        state = apply_change(state, change, replica, COLLECTION).state
    view = entity_view(state, COLLECTION, "dlv-1", 2)
    assert view.fields["status"].siblings is not None

    # Made before the device saw phone-b's write: that one stays, and precedence picks.
    mine = Change("m1", 1, "deliveries", "dlv-1", (30, 0), {"web-1": 1}, [SetOp("status", "delivered")])
    predicted = apply_pending(view, mine, ME, COLLECTION)
    server = entity_view(apply_change(state, mine, ME, COLLECTION).state, COLLECTION, "dlv-1", 3)
    assert visible(predicted) == visible(server)
    assert predicted.fields["status"].value == "delivered"
    assert [(s.replica, s.value) for s in predicted.fields["status"].siblings or []] == [
        ("phone-a", "delivered"),
        ("phone-b", "pending"),
    ]


def test_text_edits_merge_into_the_yjs_state() -> None:
    base = EntityView("deliveries", "dlv-1", 1, {}, False)
    first = Change("t1", 1, "deliveries", "dlv-1", (1, 0), {}, [TextOp("notes", text_update("", 0, "héllo"))])
    view = apply_pending(base, first, ME, COLLECTION)
    assert view.fields["notes"].value == "héllo"
    state = text.TextState(base64.b64decode(view.fields["notes"].update or ""))
    doc, _ = text.load(state)
    update = base64.b64encode(text.splice(doc, 5, 0, " 😀")).decode()
    second = Change("t2", 2, "deliveries", "dlv-1", (2, 0), {}, [TextOp("notes", update)])
    assert apply_pending(view, second, ME, COLLECTION).fields["notes"].value == "héllo 😀"


def test_changes_the_server_would_reject_whole_are_not_shown() -> None:
    view = EntityView("deliveries", "dlv-1", 1, {}, False)
    mismatch = Change("x", 1, "deliveries", "dlv-1", (1, 0), {}, [SetOp("title", "a"), IncOp("status", 1)])
    assert predicts_rejection(view, mismatch, COLLECTION)
    assert apply_pending(view, mismatch, ME, COLLECTION) == view
    mixed = Change("y", 2, "deliveries", "dlv-1", (2, 0), {}, [SetOp("title", "a"), DeleteOp()])
    assert apply_pending(view, mixed, ME, COLLECTION) == view
    # An edit built on text this state does not have (an earlier edit that was rejected).
    orphan = TextOp("notes", text_update("abc", 3, "d"))
    dangling = Change("z", 3, "deliveries", "dlv-1", (3, 0), {}, [SetOp("title", "b"), orphan])
    assert apply_pending(view, dangling, ME, COLLECTION) == view


def test_without_a_schema_the_kind_comes_from_the_field_seen_or_the_op() -> None:
    view = EntityView("deliveries", "dlv-1", 1, {}, False)
    view = apply_pending(view, Change("a", 1, "deliveries", "dlv-1", (1, 0), {}, [IncOp("cod", 5)]), ME)
    assert view.fields["cod"].value == 5
    wrong = Change("b", 2, "deliveries", "dlv-1", (2, 0), {}, [SetOp("cod", "five")])
    assert apply_pending(view, wrong, ME).fields["cod"].value == 5


def test_a_pending_text_deletion_is_not_half_applied_to_the_optimistic_view() -> None:
    """Issue 12's rule in the SDK: a local deletion of content the pulled state lacks
    shows nothing rather than a view that silently dropped part of the edit."""
    other: Doc[Any] = Doc(client_id=11)
    insert = text.splice(other, 0, 0, "keep DELETE-ME keep")
    mine: Doc[Any] = Doc(client_id=12)
    mine.apply_update(insert)
    deletion = base64.b64encode(text.splice(mine, 5, 10, "")).decode()
    pulled = EntityView(collection="deliveries", entity="dlv-1", seq=1, vv={}, deleted=False)
    change = Change("c1", 1, "deliveries", "dlv-1", (1, 0), {}, [TextOp("notes", deletion), SetOp("status", "failed")])
    assert apply_pending(pulled, change, ME, COLLECTION) == pulled
    # Once the pulled state holds the insert, the same change applies in full.
    state = apply_change(
        EntityState(),
        Change("o1", 1, "deliveries", "dlv-1", (1, 0), {}, [TextOp("notes", base64.b64encode(insert).decode())]),
        "other",
        COLLECTION,
    ).state
    view = entity_view(state, COLLECTION, "dlv-1", 1)
    after = apply_pending(view, change, ME, COLLECTION)
    assert after.fields["notes"].value == "keep keep"
    assert after.fields["status"].value == "failed"
