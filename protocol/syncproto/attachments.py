"""Attachment references: how a register field points at a file (a photo, a signature).

A reference is an ordinary register value, an object with one reserved member::

    {"$attachment": {"id": "3f0c…", "size": 48213, "sha256": "<64 hex>", "media_type": "image/jpeg"}}

so it merges exactly like any register value (siblings, rules, conflict log) and
the merge code does not know attachments exist. The device chooses ``id``
offline (a UUID), writes the reference, and uploads the bytes later over tus;
the server checks the bytes against ``size`` and ``sha256``.

Usage::

    ref = AttachmentRef(id="a1", size=3, sha256=hashlib.sha256(b"abc").hexdigest(), media_type="image/png")
    value = ref.to_value()
    assert attachment_ref(value) == ref
    assert [r.id for r in refs_in_view(entity_view)] == [...]

Pitfalls:

* A value whose ``$attachment`` member does not decode as an ``AttachmentRef``
  is not an attachment: it is kept and merged as plain JSON, and never gets a
  status. SDKs only ever write well-formed references.
* Only a register's value and its siblings are scanned, not nested values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from syncproto.messages import EntityView

__all__ = [
    "ATTACHMENT_KEY",
    "MAX_STATUS_IDS",
    "AttachmentId",
    "AttachmentRef",
    "AttachmentStatus",
    "AttachmentStatusRequest",
    "AttachmentStatusResponse",
    "attachment_ref",
    "attachment_ref_decoder",
    "attachment_status_request_decoder",
    "attachment_status_response_decoder",
    "refs_in_value",
    "refs_in_view",
]

ATTACHMENT_KEY = "$attachment"
"""The reserved member of a register value that makes it an attachment reference."""

AttachmentId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_:@\-][A-Za-z0-9._:@\-]*$")]
"""An id (PROTOCOL.md §2) that does not start with ``.``: it names objects in a blob store, where ``.``
and ``..`` are not names."""
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
MediaType = Annotated[str, Meta(min_length=3, max_length=127, pattern=r"^[a-z0-9!#$&^_.+\-]+/[a-z0-9!#$&^_.+\-]+$")]

AttachmentStatus = Literal["pending", "available", "refused"]
"""``pending``: no verified bytes yet; ``available``: downloadable; ``refused``: the upload was a dead letter."""


class AttachmentRef(Struct, gc=False, forbid_unknown_fields=False, omit_defaults=True):
    """What a register holds for a file. Unknown members are kept out (ignored) so refs can grow."""

    id: AttachmentId
    size: Annotated[int, Meta(ge=0)]
    sha256: Sha256Hex
    media_type: MediaType
    name: Annotated[str, Meta(max_length=255)] | None = None
    """The file name on the device (informative; the server never uses it)."""

    def to_value(self) -> dict[str, Any]:
        """The register value that holds this reference."""
        return {ATTACHMENT_KEY: msgspec.to_builtins(self)}


attachment_ref_decoder: msgspec.json.Decoder[AttachmentRef] = msgspec.json.Decoder(AttachmentRef)

MAX_STATUS_IDS = 500
"""Most ids one ``POST /v1/attachments/status`` may ask about (PROTOCOL.md §10.2)."""


class AttachmentStatusRequest(Struct, gc=False, forbid_unknown_fields=True):
    """``POST /v1/attachments/status``: the statuses of these attachments, now."""

    ids: Annotated[list[AttachmentId], Meta(min_length=1, max_length=MAX_STATUS_IDS)]


class AttachmentStatusResponse(Struct, gc=False):
    """Each asked id the caller may see, with its status; any other id is simply absent."""

    attachments: dict[str, AttachmentStatus] = {}


attachment_status_request_decoder: msgspec.json.Decoder[AttachmentStatusRequest] = msgspec.json.Decoder(
    AttachmentStatusRequest
)
attachment_status_response_decoder: msgspec.json.Decoder[AttachmentStatusResponse] = msgspec.json.Decoder(
    AttachmentStatusResponse
)


def attachment_ref(value: Any) -> AttachmentRef | None:
    """The reference a register value holds, or ``None`` if it is not a (well-formed) reference."""
    if not isinstance(value, dict) or ATTACHMENT_KEY not in value:
        return None
    try:
        return msgspec.convert(value[ATTACHMENT_KEY], AttachmentRef)
    except msgspec.ValidationError:
        return None


def refs_in_view(view: EntityView) -> list[AttachmentRef]:
    """Every reference in the view's register values and siblings, each id once, in field order.

    A plain loop: every entity of every pull passes here, and most reference nothing. A generator,
    ``itertools.chain`` and a set per view cost about 1 µs more per entity (of the 30-45 µs a first pull
    costs one, ``benchmarks.bench_pull_cpu``), measured alone on a pull's views."""
    found: list[AttachmentRef] = []
    for field in view.fields.values():
        if field.kind != "register":
            continue
        value = field.value
        if isinstance(value, dict) and ATTACHMENT_KEY in value:
            _add_ref(found, value)
        if field.siblings:
            for sibling in field.siblings:
                if isinstance(sibling.value, dict) and ATTACHMENT_KEY in sibling.value:
                    _add_ref(found, sibling.value)
    return found


def _add_ref(found: list[AttachmentRef], value: dict[str, Any]) -> None:
    ref = attachment_ref(value)
    if ref is not None and all(r.id != ref.id for r in found):
        found.append(ref)


def refs_in_value(value: Any) -> Iterator[AttachmentRef]:
    """The reference a single register value holds (zero or one), as an iterator."""
    ref = attachment_ref(value)
    if ref is not None:
        yield ref
