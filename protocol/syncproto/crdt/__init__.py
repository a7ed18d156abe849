"""The field CRDTs. Each kind has an op-based ``apply`` used by the server and
a state-based ``join`` whose laws (commutative, associative, idempotent) the
property tests check."""

from __future__ import annotations

from syncproto.crdt.awset import AWSet
from syncproto.crdt.counter import Counter
from syncproto.crdt.log import Log, LogEntry
from syncproto.crdt.register import Register, Sibling
from syncproto.crdt.text import TextState

FieldState = Register | Counter | AWSet | TextState | Log
"""The stored state of one field; ``kind`` is the tag."""

__all__ = ["AWSet", "Counter", "FieldState", "Log", "LogEntry", "Register", "Sibling", "TextState"]
