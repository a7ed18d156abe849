"""Strict decoding of request bodies into protocol messages, with stable error codes.

We decode with msgspec's strict decoders rather than Litestar's signature model,
which coerces types (``"n": "1"`` would become ``1``); see docs/adr/0002.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar import Request

from syncproto import errors
from syncserver.errors import ApiError

T = TypeVar("T")
_TAG_PATH = re.compile(r"\.ops\[\d+\]\.op`?$")


async def decode_body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T]) -> T:
    body = await request.body()
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.startswith("Invalid value") and _TAG_PATH.search(message):
            raise ApiError(422, errors.UNKNOWN_OP, message) from exc
        raise ApiError(422, errors.INVALID_REQUEST, message) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, errors.MALFORMED_JSON, f"the body is not valid JSON: {exc}") from exc
