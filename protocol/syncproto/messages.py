"""Wire messages of sync protocol v1.

Evolution rules (normative, repeated in PROTOCOL.md):

1. A new field on an existing message MUST have a default, so that old peers
   that omit it still decode.
2. A field's type never changes, and a field is never renamed. To change one,
   add a new field and deprecate the old one.
3. Receivers of responses ignore unknown fields (msgspec's default), so a newer
   server can add response fields without breaking older clients. Requests and
   their parts (``PushRequest``, ``Change``, ops, ``PullRequest``) are declared
   ``forbid_unknown_fields=True``: a server rejects an unknown field with
   ``invalid_request``, so a client learns at once that it speaks a newer dialect.
4. New op kinds or result statuses are additions to a tagged union. A peer that
   does not know a tag rejects the message with ``unknown_op`` rather than
   guessing; that is why such additions require a protocol version bump.
5. The protocol version travels on the wire (``PROTOCOL_VERSION`` in HTTP
   responses' ``protocol`` field and the WebSocket ``hello``/``welcome``).

Every struct is declared ``gc=False``: decoded JSON cannot form reference
cycles, and untracked objects keep the cyclic GC from rescanning every
in-flight change (a large share of merge time under load).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
SERVER_REPLICA_PREFIX = "server:"
"""Replica ids the server's own changes use (PROTOCOL.md §1); a push from one is ``replica_forbidden``."""

# Identifiers: printable, no whitespace or path separators that could confuse
# logs, cursors or AAD strings. Lengths are the protocol maxima; a server MAY
# configure lower limits.
Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")]
FieldName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")]
ChangeId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\x00]+$")]
"""Any text but NUL (which PostgreSQL text columns cannot hold)."""
Cursor = Annotated[str, Meta(min_length=1, max_length=512)]
"""A pull cursor: opaque, echoed as the server issued it (never empty); ``null`` means from the beginning."""
MAX_PULL_COLLECTIONS = 256
"""Most collections a pull (``PullRequest.collections``, ``hello.collections``) may name: a schema has a handful,
and each one named is a bound value of the page's query (PostgreSQL takes at most 65,535 of them)."""
PullCollections = Annotated[list[Id], Meta(max_length=MAX_PULL_COLLECTIONS)]
"""Only these collections; ``null`` (``None``) means all."""
Counter = Annotated[int, Meta(ge=1)]
Seq = Annotated[int, Meta(ge=0)]
Hlc = tuple[Annotated[int, Meta(ge=0)], Annotated[int, Meta(ge=0)]]
"""Hybrid logical clock: (wall-clock milliseconds since the epoch, logical counter)."""
VersionVector = dict[Id, Annotated[int, Meta(ge=0)]]
"""Replica id -> highest counter of that replica this state has seen."""
SetElement = str | int | float | bool
"""Elements of an add-wins set: JSON scalars (compared by canonical JSON)."""


# --- ops --------------------------------------------------------------------


class SetOp(Struct, gc=False, tag="set", tag_field="op", forbid_unknown_fields=True):
    """Write a register field."""

    field: FieldName
    value: Any


class IncOp(Struct, gc=False, tag="inc", tag_field="op", forbid_unknown_fields=True):
    """Add ``by`` (may be negative) to a counter field."""

    field: FieldName
    by: int


class AddOp(Struct, gc=False, tag="add", tag_field="op", forbid_unknown_fields=True):
    """Add an element to a set field."""

    field: FieldName
    value: SetElement


class RemoveOp(Struct, gc=False, tag="remove", tag_field="op", forbid_unknown_fields=True):
    """Remove the elements of a set field that the change's context has seen."""

    field: FieldName
    value: SetElement


class TextOp(Struct, gc=False, tag="text", tag_field="op", forbid_unknown_fields=True):
    """Apply a Yjs update (base64 of the binary v1 update) to a text field."""

    field: FieldName
    update: str


class AppendOp(Struct, gc=False, tag="append", tag_field="op", forbid_unknown_fields=True):
    """Append one entry to an append-only log field."""

    field: FieldName
    value: Any


class DeleteOp(Struct, gc=False, tag="delete", tag_field="op", forbid_unknown_fields=True):
    """Delete the entity (a tombstone)."""


Op = SetOp | IncOp | AddOp | RemoveOp | TextOp | AppendOp | DeleteOp


class Change(Struct, gc=False, forbid_unknown_fields=True):
    """One change made by one replica to one entity: the unit of push."""

    id: ChangeId
    n: Counter
    collection: Id
    entity: Id
    hlc: Hlc
    context: VersionVector
    ops: list[Op]


# --- push -------------------------------------------------------------------


class PushRequest(Struct, gc=False, forbid_unknown_fields=True):
    replica: Id
    changes: list[Change]


class ErrorBody(Struct, gc=False):
    code: str
    message: str


class Applied(Struct, gc=False, tag="applied", tag_field="status"):
    id: str
    n: int
    seq: int


class Duplicate(Struct, gc=False, tag="duplicate", tag_field="status"):
    id: str
    n: int


class OutOfOrder(Struct, gc=False, tag="out_of_order", tag_field="status"):
    id: str
    n: int
    expected: int


class Rejected(Struct, gc=False, tag="rejected", tag_field="status"):
    id: str
    n: int
    error: ErrorBody


PushResult = Applied | Duplicate | OutOfOrder | Rejected


class PushResponse(Struct, gc=False):
    results: list[PushResult]
    protocol: int = PROTOCOL_VERSION


# --- pull -------------------------------------------------------------------


class PullRequest(Struct, gc=False, forbid_unknown_fields=True):
    cursor: Cursor | None = None
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000
    collections: PullCollections | None = None


class SiblingView(Struct, gc=False, omit_defaults=True):
    """One value of a register's frontier of concurrent writes."""

    value: Any
    replica: str
    n: int
    hlc: Hlc


class FieldView(Struct, gc=False, omit_defaults=True):
    """A field's merged state as sent to devices."""

    kind: Literal["register", "counter", "set", "text", "log"]
    value: Any
    siblings: list[SiblingView] | None = None
    update: str | None = None
    """text only: the full Yjs state as a base64 update, for local editing."""


class EntityView(Struct, gc=False, omit_defaults=True):
    collection: str
    entity: str
    seq: int
    vv: VersionVector
    deleted: bool
    fields: dict[str, FieldView] = {}
    attachments: dict[str, Literal["pending", "available", "refused"]] | None = None
    """Status of each attachment the sent fields reference (``syncproto.attachments``); absent when none."""


class Eviction(Struct, gc=False):
    """An entity that left the device's scope: drop it locally."""

    collection: str
    entity: str
    seq: int


class Unavailable(Struct, gc=False):
    """An entity changed after the cursor whose stored state failed its integrity check.

    The device keeps what it holds and reads it again later with ``GET /v1/entities/...``
    (PROTOCOL.md §4.4): the cursor moves past it, the entity is never silently skipped.
    """

    collection: str
    entity: str
    seq: int
    code: str


class PullResponse(Struct, gc=False):
    changes: list[EntityView] = []
    cursor: str | None = None
    more: bool = False
    reset: bool = False
    evictions: list[Eviction] = []
    protocol: int = PROTOCOL_VERSION
    unavailable: list[Unavailable] | msgspec.UnsetType = msgspec.UNSET
    """Absent unless some entity of this page is unavailable."""


class ErrorResponse(Struct, gc=False):
    error: ErrorBody


# --- conflicts --------------------------------------------------------------


class ConflictValue(Struct, gc=False, omit_defaults=True):
    value: Any
    replica: str
    n: int
    user: str
    hlc: Hlc


class ConflictView(Struct, gc=False, omit_defaults=True):
    id: str
    collection: str
    entity: str
    field: str | None
    kind: Literal["register", "delete_update", "clock_skew"]
    rule: str
    seq: int
    created_at: str
    status: str
    values: list[ConflictValue]
    winner: ConflictValue | None = None
    note: str | None = None


class ConflictPage(Struct, gc=False):
    conflicts: list[ConflictView]
    next: str | None = None
    unavailable: list[str] | msgspec.UnsetType = msgspec.UNSET
    """Ids of conflicts of this page whose stored record failed its integrity check (absent when none)."""


# One reusable encoder/decoder per format, built once at import.
json_encoder = msgspec.json.Encoder()
push_request_decoder = msgspec.json.Decoder(PushRequest)
pull_request_decoder = msgspec.json.Decoder(PullRequest)
push_response_decoder = msgspec.json.Decoder(PushResponse)
pull_response_decoder = msgspec.json.Decoder(PullResponse)
change_decoder = msgspec.json.Decoder(Change)
error_response_decoder = msgspec.json.Decoder(ErrorResponse)
conflict_page_decoder = msgspec.json.Decoder(ConflictPage)


# --- WebSocket channel (/v1/sync/ws) -----------------------------------------
#
# Every WebSocket message is tagged by ``type``. Client messages are decoded by
# frame type: a text frame is JSON, a binary frame is MessagePack. The server
# answers in the encoding negotiated by ``hello`` (JSON until then). ``hello``
# alone tolerates unknown fields, so a newer client can still negotiate an older
# version; the other client messages forbid them, like HTTP requests.

WsEncoding = Literal["json", "msgpack"]


class WsAuth(Struct, gc=False, tag="auth", tag_field="type", forbid_unknown_fields=True):
    """A bearer token for clients that cannot set headers (browsers): the first message, or a refresh."""

    token: str


class WsHello(Struct, gc=False, tag="hello", tag_field="type"):
    """Opens the sync session: the versions the client speaks, where it is, and what it wants."""

    versions: list[int]
    replica: Id | None = None
    cursor: Cursor | None = None
    collections: PullCollections | None = None
    encoding: WsEncoding = "json"


class WsPush(Struct, gc=False, tag="push", tag_field="type", forbid_unknown_fields=True):
    """An HTTP push body (``replica``, ``changes``) plus a correlation ``id`` echoed in ``push_result``."""

    id: Annotated[str, Meta(min_length=1, max_length=64)]
    replica: Id
    changes: list[Change]


class WsPing(Struct, gc=False, tag="ping", tag_field="type"):
    """Heartbeat, either direction; the receiver answers ``pong`` with the same ``id``."""

    id: str | None = None


class WsPong(Struct, gc=False, tag="pong", tag_field="type"):
    id: str | None = None


class WsWelcome(Struct, gc=False, tag="welcome", tag_field="type"):
    """The server's answer to ``hello``: the chosen version and encoding, then catch-up starts."""

    version: int
    encoding: WsEncoding
    cursor: str | None
    heartbeat_ms: int
    idle_timeout_ms: int


class WsChanges(Struct, gc=False, tag="changes", tag_field="type"):
    """Entities changed after the previous frame's cursor: the ``changes`` of a pull response."""

    changes: list[EntityView]
    cursor: str
    more: bool = False
    evictions: list[Eviction] = []
    unavailable: list[Unavailable] | msgspec.UnsetType = msgspec.UNSET


class WsSynced(Struct, gc=False, tag="synced", tag_field="type"):
    """Catch-up reached the head of the log: live changes follow."""

    cursor: str | None


class WsReset(Struct, gc=False, tag="reset", tag_field="type"):
    """The cursor is older than tombstone retention: drop synced state (not the outbox); a full sync follows."""


class WsPushResult(Struct, gc=False, tag="push_result", tag_field="type"):
    """The results of one ``push``, exactly as in an HTTP push response."""

    id: str
    results: list[PushResult]
    protocol: int = PROTOCOL_VERSION


class WsError(Struct, gc=False, tag="error", tag_field="type"):
    """A request failed (``id`` names the push, if any); fatal errors are followed by a close."""

    code: str
    message: str
    id: str | None = None
    retry_after: Annotated[int, Meta(ge=0)] | msgspec.UnsetType = msgspec.UNSET
    """Only with ``rate_limited``: seconds to wait before the next request (as HTTP's ``Retry-After``); absent
    from every other error (``UNSET`` is not encoded)."""


WsClientMessage = WsAuth | WsHello | WsPush | WsPing | WsPong
WsServerMessage = WsWelcome | WsChanges | WsSynced | WsReset | WsPushResult | WsError | WsPing | WsPong

msgpack_encoder = msgspec.msgpack.Encoder()
ws_client_json_decoder: msgspec.json.Decoder[WsClientMessage] = msgspec.json.Decoder(WsClientMessage)
ws_client_msgpack_decoder: msgspec.msgpack.Decoder[WsClientMessage] = msgspec.msgpack.Decoder(WsClientMessage)
ws_server_json_decoder: msgspec.json.Decoder[WsServerMessage] = msgspec.json.Decoder(WsServerMessage)
ws_server_msgpack_decoder: msgspec.msgpack.Decoder[WsServerMessage] = msgspec.msgpack.Decoder(WsServerMessage)
