"""Text updates that depend on what the server lacks: applied in full or rejected, never half.

Three replicas edit one text. They also learn each other's edits out of band
(a dead-lettered change, a peer-to-peer hop), so an update can insert after, or
delete, content the server has not received yet. The server takes each
replica's queued updates in order, sometimes holding some back; a rejected
update is resent later as a new change, as a client does with a dead letter it
replays. The oracle is a plain Yjs document that receives every update the
server reports applied: Yjs keeps what it cannot integrate yet as "pending"
and integrates it later, so if the server ever drops part of an applied update
(the lost pending delete of issue 12), the two texts part ways.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from syncproto import errors
from syncproto.crdt import text
from syncproto.crdt.text import TextState
from syncproto.merge import ChangeRejected, EntityState, apply_change
from syncproto.messages import Change, TextOp
from tests.property.sim import ENTITY, make_collection

REPLICAS = ("a", "b", "c")
words = st.sampled_from(["x", "DELETE-ME ", "é", "🚚", "keep ", "中文"])


@dataclass
class Replica:
    name: str
    doc: Doc[Any]
    queue: list[bytes] = field(default_factory=list)
    sent: int = 0

    @property
    def text(self) -> str:
        return str(self.doc.get(text.ROOT, type=Text))


@dataclass
class World:
    replicas: dict[str, Replica]
    server: EntityState = field(default_factory=EntityState)
    oracle: Doc[Any] = field(default_factory=Doc)
    applied: int = 0
    rejected: int = 0

    def server_text(self) -> str:
        body = self.server.fields.get("body")
        return text.value(body) if isinstance(body, TextState) else ""

    def deliver(self, replica: Replica) -> bool:
        """The server takes the replica's next queued update. True if it applied."""
        update = replica.queue.pop(0)
        replica.sent += 1
        op = TextOp("body", base64.b64encode(update).decode())
        change = Change(f"{replica.name}-{replica.sent}", replica.sent, "jobs", ENTITY, (replica.sent, 0), {}, [op])
        code = None
        try:
            self.server = apply_change(self.server, change, replica.name, make_collection()).state
        except ChangeRejected as exc:
            code = exc.code
        if code is not None:
            assert code == errors.INVALID_TEXT_UPDATE
            replica.queue.append(update)  # the dead letter is replayed later as a new change
            self.rejected += 1
            return False
        self.oracle.apply_update(update)
        self.applied += 1
        # Applied in full: nothing of the update is missing from what the server stores,
        # so the server reads exactly what a Yjs document with every applied update reads.
        assert self.server_text() == str(self.oracle.get(text.ROOT, type=Text))
        return True


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    step = st.one_of(
        st.tuples(st.just("edit"), st.sampled_from(REPLICAS), st.floats(0, 1), st.floats(0, 1), words),
        st.tuples(st.just("learn"), st.sampled_from(REPLICAS), st.sampled_from(REPLICAS)),
        st.tuples(st.just("deliver"), st.sampled_from(REPLICAS)),
        st.tuples(st.just("pull"), st.sampled_from(REPLICAS)),
    )
    return draw(st.lists(step, min_size=1, max_size=30))


def _edit(replica: Replica, at: float, span: float, insert: str) -> None:
    current = replica.text
    pos = int(at * len(current))
    delete = int(span * (len(current) - pos))
    replica.queue.append(text.splice(replica.doc, pos, delete, insert))


@settings(max_examples=150, deadline=None)
@given(steps())
def test_every_text_update_is_applied_in_full_or_rejected_and_replicas_converge(plan: list[tuple[Any, ...]]) -> None:
    world = World({name: Replica(name, Doc(client_id=i + 1)) for i, name in enumerate(REPLICAS)})
    for step in plan:
        match step:
            case ("edit", name, at, span, insert):
                _edit(world.replicas[name], at, span, insert)
            case ("learn", name, source):
                # Out of band: the replica learns everything the source holds, sent or not.
                world.replicas[name].doc.apply_update(world.replicas[source].doc.get_update())
            case ("deliver", name) if world.replicas[name].queue:
                world.deliver(world.replicas[name])
            case ("pull", name):
                body = world.server.fields.get("body")
                if isinstance(body, TextState) and body.update:
                    world.replicas[name].doc.apply_update(body.update)

    # Reconnect: every replica drains its queue, resending rejected updates, until nothing is held back.
    for _ in range(sum(len(r.queue) for r in world.replicas.values()) + 1):
        for replica in world.replicas.values():
            for _ in range(len(replica.queue)):
                world.deliver(replica)
    assert all(not r.queue for r in world.replicas.values()), "an update stayed rejected with its dependencies applied"

    body = world.server.fields.get("body")
    final = body.update if isinstance(body, TextState) else b""
    for replica in world.replicas.values():
        if final:
            replica.doc.apply_update(final)
        assert replica.text == world.server_text()
    assert world.server_text() == str(world.oracle.get(text.ROOT, type=Text))


def test_the_issue_scenario_is_rejected_then_applies_after_its_dependency() -> None:
    """The four steps of the report, at the merge level: B's deletion of A's unsent text."""
    world = World({name: Replica(name, Doc(client_id=i + 1)) for i, name in enumerate(REPLICAS)})
    a, b = world.replicas["a"], world.replicas["b"]
    a.queue.append(text.splice(a.doc, 0, 0, "keep DELETE-ME keep"))
    b.doc.apply_update(a.doc.get_update())
    b.queue.append(text.splice(b.doc, 5, 10, ""))
    assert world.deliver(b) is False
    assert world.deliver(a) is True
    assert world.deliver(b) is True
    assert world.server_text() == "keep keep"
    assert (world.applied, world.rejected) == (2, 1)
