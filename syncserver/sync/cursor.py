"""Pull cursors: opaque to clients, bound to one tenant and to the reader's scope.

A cursor is base64url of a msgpack ``[2, tenant, seq, since, scope]``. ``seq`` is
where the next page starts (pages follow each entity's latest change);
``since`` is where the device was last whole: the pull began there, so an
entity first met on a later page must carry every field changed after
``since``, not only those after ``seq`` (its older fields were never sent).
Once a pull reaches the end the device is whole at ``seq`` and ``since`` equals
it. ``scope`` is ``scope_key`` of the scope the cursor was issued to (64 bits):
what a device holds depends on its channels, so a cursor read under another
scope (a token that lost or gained a channel, or changed role between a
driver's and the whole tenant's) answers ``reset`` (``decode_for``), and the
device pulls its new scope from the start.

A cursor in the middle of a pull from the start (``since`` 0) also carries
``floor``, ``[2, tenant, seq, 0, scope, floor]``: the tenant's ``purged_seq``
when that pull began. A device must start over (``reset``) when tombstones it
may not have seen were collected: for a device whole at ``since``, any
collected after ``since``; for a pull from the start, which held nothing
before it began, only a collection since then (``purged_seq`` past ``floor``)
can hide the delete of an entity it was already sent. Without ``floor`` every
page after the first of a fresh device's pull, on a tenant that ever collected
a tombstone, would answer ``reset``: a device with more entities than a page
could never finish its first sync. ``floor`` is ``since`` in every other
cursor.

Cursors issued before scopes were bound, ``[1, tenant, seq]`` or ``[1, tenant,
seq, since]`` (or built by a caller that passes no scope, ``encode``), carry no
scope: they are read as before, under any scope, and the next page's cursor
carries the reader's. So an upgrade does not send every device back to the
start.

A cursor carries no secret: forging one for your own tenant only changes what
you re-read (a pull shows only what the token may see). A cursor of another
tenant is refused, so a leaked cursor reveals nothing. A seq outside signed 64
bits is refused too (``invalid_cursor``): the database columns are ``BIGINT``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache
from typing import NamedTuple

import msgspec

from syncproto import errors
from syncserver.auth.scopes import Scope
from syncserver.errors import ApiError

_VERSION = 1
"""Cursors without a scope: ``[1, tenant, seq]``, ``[1, tenant, seq, since]``."""
_SCOPED = 2
"""Cursors with one: ``[2, tenant, seq, since, scope]``."""
MAX_SEQ = 2**63 - 1
"""The largest seq a cursor may name (a signed 64-bit column)."""
_Parts = tuple[int, str, int, int]
_ScopedParts = tuple[int, str, int, int, int]
_FlooredParts = tuple[int, str, int, int, int, int]


class Position(NamedTuple):
    seq: int
    """Where the next page starts."""
    since: int
    """Fields changed after this are sent (``since <= seq``); equal to ``seq`` once a pull has reached the end."""
    floor: int = 0
    """The device must reset once the tenant's ``purged_seq`` is past this: ``since``, or, in a pull from the start
    still under way, the ``purged_seq`` when it began (see the module docs)."""


@lru_cache(maxsize=4096)
def scope_key(scope: Scope) -> int:
    """A short digest of what ``scope`` sees: the whole tenant, or its sorted channels.

    Only the scope counts, not the role: a dispatcher's and an admin's cursors are interchangeable (both see the
    whole tenant), and channels a tenant-wide token happens to carry change nothing."""
    what = None if scope.channels is None else sorted(scope.channels)
    digest = hashlib.blake2b(msgspec.msgpack.encode(what), digest_size=8, person=b"sync-cursor-v2").digest()
    return int.from_bytes(digest, "big")


def encode(
    tenant: str, seq: int, since: int | None = None, *, scope: int | None = None, floor: int | None = None
) -> str:
    """A cursor at ``seq``; ``since`` (below ``seq``) while the pull that reached ``seq`` has more pages.

    ``scope``: ``scope_key`` of the reader's scope, which the cursor is then bound to (``decode_for``); without
    it the cursor is one of the first layout, read under any scope. ``floor``: in a pull from the start still
    under way, the tenant's ``purged_seq`` when it began (kept only there, see the module docs).
    """
    whole = since if since is not None and since < seq else None
    parts: list[object]
    if scope is not None:
        parts = [_SCOPED, tenant, seq, seq if whole is None else whole, scope]
        if whole == 0 and floor:
            parts.append(floor)
    else:
        parts = [_VERSION, tenant, seq] if whole is None else [_VERSION, tenant, seq, whole]
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(parts)).rstrip(b"=").decode()


def _decode(tenant: str, cursor: str) -> tuple[Position, int | None]:
    """The position a cursor points at and the scope key it carries (``None``: a cursor of the first layout)."""
    scope: int | None = None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = msgspec.msgpack.decode(raw, type=list[int | str])
        floor: int | None = None
        if len(parts) == 6:
            version, owner, seq, since, scope, floor = msgspec.convert(parts, _FlooredParts)
            ok = version == _SCOPED and 0 <= scope < 2**64 and since == 0 and 0 <= floor <= MAX_SEQ
        elif len(parts) == 5:
            version, owner, seq, since, scope = msgspec.convert(parts, _ScopedParts)
            ok = version == _SCOPED and 0 <= scope < 2**64
        else:
            version, owner, seq, since = msgspec.convert(parts if len(parts) == 4 else [*parts, -1], _Parts)
            ok = version == _VERSION
            since = seq if since == -1 else since
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor is not one this server issued") from exc
    if not ok or not 0 <= since <= seq <= MAX_SEQ:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor is not one this server issued")
    if owner != tenant:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor belongs to another tenant")
    return Position(seq, since, since if floor is None else floor), scope


def decode_position(tenant: str, cursor: str | None) -> Position:
    """Where a cursor points, whatever scope it was issued to; ``None`` means from the beginning."""
    if cursor is None:
        return Position(0, 0)
    return _decode(tenant, cursor)[0]


def decode_for(tenant: str, cursor: str | None, scope: int) -> Position | None:
    """Where a cursor points for a reader whose ``scope_key`` is ``scope``; ``None`` means from the beginning.

    ``None`` also when the cursor was issued to another scope: what the device holds is another scope's, so it
    must drop its synced state and pull from the start (``reset``). A cursor without a scope (the first layout)
    is read as it always was.
    """
    if cursor is None:
        return Position(0, 0)
    position, issued_to = _decode(tenant, cursor)
    if issued_to is not None and issued_to != scope:
        return None
    return position


def decode(tenant: str, cursor: str | None) -> int:
    """The seq a cursor points after (where its next page starts); ``None`` means from the beginning."""
    return decode_position(tenant, cursor).seq
