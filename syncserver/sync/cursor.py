"""Pull cursors: opaque to clients, bound to one tenant.

A cursor is base64url of a msgpack ``[version, tenant, seq]``. It carries no
secret: forging one for your own tenant only changes what you re-read. A
cursor of another tenant is refused, so a leaked cursor reveals nothing.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from syncproto import errors
from syncserver.errors import ApiError

_VERSION = 1


def encode(tenant: str, seq: int) -> str:
    raw = msgspec.msgpack.encode([_VERSION, tenant, seq])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(tenant: str, cursor: str | None) -> int:
    """The seq a cursor points after; ``None`` means from the beginning."""
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, owner, seq = msgspec.msgpack.decode(raw, type=tuple[int, str, int])
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor is not one this server issued") from exc
    if version != _VERSION or seq < 0:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor is not one this server issued")
    if owner != tenant:
        raise ApiError(400, errors.INVALID_CURSOR, "the cursor belongs to another tenant")
    return seq
