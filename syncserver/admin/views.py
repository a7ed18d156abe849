"""What the admin API sends and accepts (JSON). Values are decrypted for admins only.

These are server-side messages, not part of the device protocol (``syncproto``):
they may grow fields freely, always with defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Struct

from syncproto.attachments import AttachmentStatus
from syncproto.messages import ConflictValue, EntityView, ErrorBody, FieldView, Hlc


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
