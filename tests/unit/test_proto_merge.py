"""Edge cases of ``merge.apply_change`` and the joins that the property tests do not reach."""

from __future__ import annotations

import base64

import pytest
from pycrdt import Doc, Text

from syncproto import errors
from syncproto.crdt import AWSet, Log, LogEntry, Register, Sibling, TextState, awset, log, register
from syncproto.crdt import text as ytext
from syncproto.merge import ChangeRejected, EntityState, Mark, apply_change, join, normalize
from syncproto.messages import AddOp, Change, Op, RemoveOp, SetOp, TextOp
from syncproto.schema import CollectionSpec, FieldSpec, compile_collection

JOBS = compile_collection(
    "jobs",
    CollectionSpec(
        fields={"tags": FieldSpec(kind="set"), "body": FieldSpec(kind="text"), "trail": FieldSpec(kind="log")}
    ),
)


def change(n: int, ops: list[Op], context: dict[str, int] | None = None, hlc: tuple[int, int] = (1000, 0)) -> Change:
    return Change(f"c{n}", n, "jobs", "job-1", hlc, context or {}, ops)


def test_a_text_update_that_is_not_base64_is_rejected_with_its_code() -> None:
    with pytest.raises(ChangeRejected) as caught:
        apply_change(EntityState(), change(1, [TextOp("body", "not base64!")]), "a", JOBS)
    assert caught.value.code == errors.INVALID_TEXT_UPDATE


def test_a_text_update_that_is_not_yjs_is_rejected_with_its_code() -> None:
    with pytest.raises(ChangeRejected) as caught:
        apply_change(EntityState(), change(1, [TextOp("body", base64.b64encode(b"\xff\x01").decode())]), "a", JOBS)
    assert caught.value.code == errors.INVALID_TEXT_UPDATE


def test_a_text_update_building_on_edits_the_server_lacks_is_rejected_not_dropped() -> None:
    doc: Doc[Text] = Doc(client_id=9)
    t = doc.get(ytext.ROOT, type=Text)
    t += "abc"
    first = doc.get_update()
    before = doc.get_state()
    t += "def"
    second = doc.get_update(before)
    with pytest.raises(ChangeRejected) as caught:
        apply_change(EntityState(), change(2, [TextOp("body", base64.b64encode(second).decode())]), "a", JOBS)
    assert caught.value.code == errors.INVALID_TEXT_UPDATE
    state = apply_change(EntityState(), change(1, [TextOp("body", base64.b64encode(first).decode())]), "a", JOBS).state
    state = apply_change(state, change(2, [TextOp("body", base64.b64encode(second).decode())]), "a", JOBS).state
    body = state.fields["body"]
    assert isinstance(body, TextState)
    assert ytext.value(body) == "abcdef"


def test_the_last_of_two_writes_to_one_field_in_a_change_wins() -> None:
    out = apply_change(EntityState(), change(1, [SetOp("title", "draft"), SetOp("title", "final")]), "a", JOBS)
    reg = out.state.fields["title"]
    assert isinstance(reg, Register)
    assert [s.value for s in reg.siblings] == ["final"]
    assert out.conflicts == []


def test_two_writes_to_one_field_in_a_change_make_one_conflict_with_the_last_value() -> None:
    state = apply_change(EntityState(), change(1, [SetOp("title", "from-b")]), "b", JOBS).state
    out = apply_change(state, change(1, [SetOp("title", "draft"), SetOp("title", "final")]), "a", JOBS)
    (conflict,) = out.conflicts
    assert sorted(str(s.value) for s in conflict.values) == ["final", "from-b"]
    # The same write twice in one change is one write: its conflict stays.
    again = apply_change(state, change(1, [SetOp("title", "x"), SetOp("title", "x")]), "a", JOBS)
    (conflict,) = again.conflicts
    assert sorted(str(s.value) for s in conflict.values) == ["from-b", "x"]


def test_a_change_s_ops_on_a_set_apply_in_order() -> None:
    add_then_remove = apply_change(EntityState(), change(1, [AddOp("tags", "red"), RemoveOp("tags", "red")]), "a", JOBS)
    remove_then_add = apply_change(EntityState(), change(1, [RemoveOp("tags", "red"), AddOp("tags", "red")]), "a", JOBS)
    removed, added = add_then_remove.state.fields["tags"], remove_then_add.state.fields["tags"]
    assert isinstance(removed, AWSet)
    assert isinstance(added, AWSet)
    assert awset.value(removed) == []
    assert awset.value(added) == ["red"]
    # And joining agrees: the replica that added and removed has nothing for another to resurrect.
    assert normalize(join(add_then_remove.state, EntityState())) == normalize(add_then_remove.state)


def test_a_remove_keeps_a_concurrent_add() -> None:
    state = apply_change(EntityState(), change(1, [AddOp("tags", "red")]), "b", JOBS).state
    out = apply_change(state, change(1, [RemoveOp("tags", "red")]), "a", JOBS)
    tags = out.state.fields["tags"]
    assert isinstance(tags, AWSet)
    assert awset.value(tags) == ["red"]


def test_assigning_a_write_again_is_a_replay_that_changes_nothing() -> None:
    s = Sibling("x", "a", 1, (5, 0))
    reg, _ = register.assign(Register(), s, {})
    other, conflicts = register.assign(Register([*reg.siblings, Sibling("y", "b", 1, (6, 0))]), s, {})
    assert conflicts == []
    assert [x.value for x in other.siblings] == ["x", "y"]


def test_joining_a_clamped_write_with_the_devices_copy_keeps_the_servers_stamp_either_way() -> None:
    device = Sibling("late", "a", 1, (9_000, 0), "u")
    server = Sibling("late", "a", 1, (5_000, 0), "u")
    vv = {"a": 1}
    for a, b in ((device, server), (server, device)):
        assert register.join(Register([a]), Register([b]), vv, vv).siblings == [server]
    entry_device = LogEntry((9_000, 0), "a", 1, 0, {"lat": 1})
    entry_server = LogEntry((5_000, 0), "a", 1, 0, {"lat": 1})
    earlier = LogEntry((6_000, 0), "b", 1, 0, {"lat": 2})
    for x, y in ((entry_device, entry_server), (entry_server, entry_device)):
        assert log.join(Log([x, earlier]), Log([y])).entries == [entry_server, earlier]
    marks = [Mark("a", 1, (9_000, 0), "u"), Mark("a", 1, (5_000, 0), "u")]
    states = [EntityState(vv=vv, live=[m]) for m in marks]
    assert join(states[0], states[1]).live == join(states[1], states[0]).live == [marks[1]]
