"""What the admin API sends and accepts (JSON). Values are decrypted for admins only.

These are server-side messages, not part of the device protocol (``syncproto``):
they may grow fields freely, always with defaults.

The numbers admins type are bounded here too (``conflict_key``, ``counter``,
``in_range`` ...), as the JSON API bounds them: the API refuses an out-of-range
number before its handler runs, with the parameter types of
``syncserver.transport.openapi``; the web page and the CLI reach the same
services with what an admin typed in a URL or on a command line, and the
services check it with these, the same patterns and bounds. So a number the
database cannot hold (``NumericValueOutOfRange`` on PostgreSQL: a 500, a
traceback) is a 400 ``invalid_request`` everywhere: an error page on the web,
``Error: ...`` from the CLI.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Struct

from syncproto import errors
from syncproto.attachments import AttachmentStatus
from syncproto.messages import ConflictValue, EntityView, ErrorBody, FieldView, Hlc
from syncserver.errors import ApiError
from syncserver.transport.openapi import CONFLICT_ID_PATTERN, DEAD_LETTER_CURSOR_PATTERN, SAFE_INT_MAX
from syncstore.adminstore import DeadLetterKey


class OverrideInfo(Struct, gc=False):
    """Who overrode a conflict, when, and the seq of the server change that carried the choice."""

    actor: str
    at: str
    change_seq: int


class AdminConflict(Struct, gc=False, omit_defaults=True):
    """A conflict with every competing value decrypted, plus what the field holds now."""

    id: str
    collection: str
    entity: str
    field: str | None
    kind: str
    rule: str
    seq: int
    created_at: str
    status: str
    values: list[ConflictValue]
    winner: ConflictValue | None = None
    note: str | None = None
    override: OverrideInfo | None = None
    current: FieldView | None = None
    """The field's merged state now (register conflicts); ``siblings`` is absent once they collapsed."""
    overridable: bool = True


class AdminConflictPage(Struct, gc=False):
    conflicts: list[AdminConflict]
    next: str | None = None
    """Pass as ``after`` for the next page; ``null`` when the log is exhausted."""
    unavailable: list[str] | msgspec.UnsetType = msgspec.UNSET
    """Conflicts examined for this page whose stored record failed its integrity check."""


class OverrideRequest(Struct, gc=False, forbid_unknown_fields=True):
    """Pick one of the conflict's values by index, or write a value.

    * register conflicts: ``{"pick": 1}`` or ``{"value": "delivered"}``;
    * delete/update conflicts: ``{"pick": 0}`` deletes the entity (value 0 is the
      delete); ``{"field": "status", "value": "pending"}`` keeps it and writes a field.
    """

    pick: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)] | None = None
    value: Any | msgspec.UnsetType = msgspec.UNSET
    field: str | None = None

    def __post_init__(self) -> None:
        # Decoding fails (422 invalid_request) unless exactly one is given; OVERRIDE_EXACTLY_ONE says so in the schema.
        if (self.pick is not None) == (self.value is not msgspec.UNSET):
            raise ValueError("give exactly one of 'pick' (a value's index) or 'value'")


_PICKED: Final = {"required": ["pick"], "properties": {"pick": {"type": "integer"}}}
OVERRIDE_EXACTLY_ONE: Final = {
    "oneOf": [{**_PICKED, "not": {"required": ["value"]}}, {"required": ["value"], "not": _PICKED}]
}
"""``OverrideRequest.__post_init__``'s rule as JSON Schema, added to the struct's schema in the OpenAPI."""


class ServerChange(Struct, gc=False):
    """The change the server wrote on an admin's behalf."""

    id: str
    replica: str
    n: int
    seq: int


class OverrideResult(Struct, gc=False):
    conflict: AdminConflict
    change: ServerChange


class HistoryAttachment(Struct, gc=False, omit_defaults=True):
    """An attachment a change's ``set`` op referenced, with its upload's status now."""

    id: str
    status: AttachmentStatus
    """As devices see it (PROTOCOL.md §10.2): ``pending`` until verified bytes arrive."""
    media_type: str
    size: int
    field: str
    code: str | None = None
    """Why the upload was refused (a dead letter), when it was."""


class HistoryEntry(Struct, gc=False, omit_defaults=True):
    """One applied change of an entity, decrypted."""

    seq: int
    change_id: str
    replica: str
    n: int
    user: str
    hlc: Hlc
    context: dict[str, int]
    created_at: str
    ops: list[Any] | None
    """``null`` when the change's stored record failed its integrity check (``result`` says so)."""
    result: Literal["applied", "unavailable"]
    conflicts: list[str] = []
    attachments: list[HistoryAttachment] = []


class DeadLetterView(Struct, gc=False, omit_defaults=True):
    """A rejected change; ``change`` (the change exactly as pushed) only when shown alone."""

    id: str
    replica: str
    n: int
    change_id: str
    user: str
    collection: str
    entity: str
    code: str
    message: str
    created_at: str
    status: str
    change: Any = None
    attachments: list[HistoryAttachment] = []
    """Attachments the rejected change referenced (in an entity's history only)."""


class EntityHistory(Struct, gc=False, omit_defaults=True):
    """An entity's change log in seq order, its rejected changes, and its state now."""

    collection: str
    entity: str
    changes: list[HistoryEntry]
    rejected: list[DeadLetterView]
    current: EntityView | None = None
    next: int | None = None
    """Pass as ``after`` for the next page of ``changes``."""
    current_unavailable: bool = False
    """The entity's stored state failed its integrity check (``syncserver repair`` rebuilds it)."""


class DeadLetterPage(Struct, gc=False):
    dead_letters: list[DeadLetterView]
    next: str | None = None
    """Pass as ``before`` for the next (older) page."""


class ReplayResult(Struct, gc=False, omit_defaults=True):
    """``applied``: replayed now; ``already_replayed``: an earlier replay was applied; ``rejected``: still failing."""

    outcome: Literal["applied", "already_replayed", "rejected"]
    dead_letter: DeadLetterView
    change: ServerChange | None = None
    error: ErrorBody | None = None


class AuditEntry(Struct, gc=False):
    id: int
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    at: str


class AuditPage(Struct, gc=False):
    entries: list[AuditEntry]
    next: int | None = None


class IntegrityProblem(Struct, gc=False):
    kind: str
    """``missing``, ``payload``, ``link``, ``unchained``, ``checkpoint``, ``head``, ``entity`` or ``channel``."""
    where: str
    detail: str


class VerificationView(Struct, gc=False):
    """One ``syncserver verify`` run over the tenant."""

    started_at: str
    finished_at: str
    from_seq: int
    to_seq: int
    changes: int
    entities: int
    ok: bool
    problems: list[IntegrityProblem]


class SetAsideRow(Struct, gc=False):
    """A stored row this server process set aside because it failed its integrity check."""

    at: str
    table: str
    row: str
    reason: str


class IntegrityStatus(Struct, gc=False):
    verifications: list[VerificationView]
    """The latest runs, newest first (at most 10)."""
    set_aside: list[SetAsideRow]
    """Rows set aside lately by the process that answered (newest first; not kept over a restart)."""


override_request_decoder = msgspec.json.Decoder(OverrideRequest)


# What the admin tools accept: the numbers admins type, bounded as the JSON API bounds them (see the module docs).

LIMIT_MAX: Final = 500
"""The largest page an admin asks for (the API's ``limit``)."""
INDEX_MAX: Final = 2**31 - 1
"""The largest index of a value within a conflict (a 32-bit column)."""
AUDIT_ID_MAX: Final = 2**31 - 1
"""The largest audit log id: a 32-bit column (SQLite's rowid alias), so not ``SAFE_INT_MAX``."""

_CONFLICT_ID = re.compile(CONFLICT_ID_PATTERN)
_DEAD_LETTER_CURSOR = re.compile(DEAD_LETTER_CURSOR_PATTERN)
_WHOLE = re.compile(r"^(0|[1-9][0-9]{0,15})$")
"""A whole number as typed: ASCII digits only (``int()`` would take other scripts' digits), at most 16."""


def invalid(message: str) -> ApiError:
    return ApiError(400, errors.INVALID_REQUEST, message)


def conflict_key(value: str) -> tuple[int, int]:
    """``c<seq>.<index>`` as ``(seq, index)``, within the store's range (the API's ``ConflictId``)."""
    if not _CONFLICT_ID.fullmatch(value):
        raise invalid(f"'{value[:40]}' is not a conflict id like c42.0")
    seq, idx = value[1:].split(".")
    return int(seq), int(idx)


def dead_letter_cursor(value: str) -> DeadLetterKey:
    """A dead-letter page's ``next`` (``<created_at ms>:<n>:<replica>``) as its key (the API's ``DeadLetterCursor``)."""
    if not _DEAD_LETTER_CURSOR.fullmatch(value):
        raise invalid(f"'{value[:40]}' is not a dead-letter cursor")
    at, n, replica = value.split(":", 2)
    return int(at), replica, int(n)


def in_range(value: int, name: str, low: int, high: int = SAFE_INT_MAX) -> int:
    """``value`` if ``low <= value <= high``, else 400 naming the parameter and its range."""
    if not low <= value <= high:
        raise invalid(f"{name} must be a whole number from {low} to {high}")
    return value


def counter(n: int) -> int:
    """A replica's counter ``n`` naming a dead letter (the API's ``ReplicaCounter``)."""
    return in_range(n, "n", 1)


def audit_before(before: int | None) -> int | None:
    """An audit page's ``before`` (an entry id), 1 to ``AUDIT_ID_MAX``."""
    return None if before is None else in_range(before, "before", 1, AUDIT_ID_MAX)


def whole(text: str | None, name: str, low: int, high: int = SAFE_INT_MAX) -> int | None:
    """A number typed into a form or query string (``None`` when empty), bounded like ``in_range``."""
    if not text:
        return None
    if not _WHOLE.fullmatch(text):
        raise invalid(f"{name} must be a whole number from {low} to {high}")
    return in_range(int(text), name, low, high)
