"""Pull cursors: opaque to clients, bound to one tenant.

A cursor is base64url of a msgpack ``[version, tenant, seq]``, or ``[version,
tenant, seq, since]`` in the middle of a pull that has more pages. ``seq`` is
where the next page starts (pages follow each entity's latest change);
``since`` is where the device was last whole: the pull began there, so an
entity first met on a later page must carry every field changed after
``since``, not only those after ``seq`` (its older fields were never sent).
Once a pull reaches the end the device is whole at ``seq`` and the cursor drops
``since``.

A cursor carries no secret: forging one for your own tenant only changes what
you re-read. A cursor of another tenant is refused, so a leaked cursor reveals
nothing.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

import msgspec

from syncproto import errors
from syncserver.errors import ApiError

_VERSION = 1
_Parts = tuple[int, str, int, int]


class Position(NamedTuple):
    seq: int
    """Where the next page starts."""
    since: int
    """Fields changed after this are sent (``since <= seq``); equal to ``seq`` once a pull has reached the end."""


def encode(tenant: str, seq: int, since: int | None = None) -> str:
    """A cursor at ``seq``; ``since`` (below ``seq``) while the pull that reached ``seq`` has more pages."""
    parts: list[object] = [_VERSION, tenant, seq]
    if since is not None and since < seq:
        parts.append(since)
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(parts)).rstrip(b"=").decode()


def decode_position(tenant: str, cursor: str | None) -> Position:
    """Where a cursor points; ``None`` means from the beginning."""
    if cursor is None:
        return Position(0, 0)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = msgspec.msgpack.decode(raw, type=list[int | str])
        version, owner, seq, since = msgspec.convert(parts if len(parts) == 4 else [*parts, -1], _Parts)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor is not one this server issued") from exc
    since = seq if since == -1 else since
    if version != _VERSION or seq < 0 or not 0 <= since <= seq:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor is not one this server issued")
    if owner != tenant:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor belongs to another tenant")
    return Position(seq, since)


def decode(tenant: str, cursor: str | None) -> int:
    """The seq a cursor points after (where its next page starts); ``None`` means from the beginning."""
    return decode_position(tenant, cursor).seq
