"""OpenAPI helpers: our error body (``ErrorResponse``) documented for the statuses an operation returns, and the
parameter types whose constraints are both the published schema and the validation.

Litestar documents its own validation-error shape for 400; our handlers never
send it. ``responses=error_responses(400, 404, *AUTHENTICATED)`` on a route
decorator documents ``{"error": {"code", "message"}}`` for those statuses.

The parameter types below carry their constraints (pattern, bounds) in
Litestar's ``Parameter``: Litestar validates a request against them and
publishes them in ``/schema/openapi.json``, so a value the schema allows is
one the handler accepts, and one it forbids is refused with 400 before the
handler runs (``tests/integration/test_fuzz_openapi.py`` holds both ways).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final

import msgspec
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from syncproto import errors
from syncproto.messages import ErrorResponse
from syncserver.errors import ApiError

SAFE_INT_MAX: Final = 2**53 - 1
"""The largest integer a parameter takes: exact in every JSON parser (and in the schema's float bounds)."""

CONFLICT_ID_PATTERN: Final = r"^c(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,8})$"
"""``c<seq>.<index>`` (``syncserver.sync.conflicts.conflict_id``), numbers within the store's range."""

DEAD_LETTER_CURSOR_PATTERN: Final = r"^(0|[1-9][0-9]{0,17}):(0|[1-9][0-9]{0,17}):[^\x00]{1,128}$"
"""``<created_at ms>:<n>:<replica>``, the ``next`` of a dead-letter page."""

ConflictId = Annotated[str, PathParameter(pattern=CONFLICT_ID_PATTERN, description="A conflict id, e.g. `c42.0`.")]
ConflictCursor = Annotated[
    str | None, QueryParameter(pattern=CONFLICT_ID_PATTERN, description="Continue after this conflict id (`next`).")
]
DeadLetterCursor = Annotated[
    str | None,
    QueryParameter(pattern=DEAD_LETTER_CURSOR_PATTERN, description="The previous page's `next`: older letters follow."),
]
ReplicaCounter = Annotated[
    int, PathParameter(ge=1, le=SAFE_INT_MAX, description="The change's counter `n` (1, 2, ...).")
]
Timestamp = Annotated[
    str | None,
    QueryParameter(
        format="date-time",
        description="RFC 3339 date and time, e.g. `2026-11-22T10:00:00Z` (a time without a zone is taken as UTC).",
    ),
]


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """A ``Timestamp`` parameter as a datetime: RFC 3339 only (never a bare number), else 400 ``invalid_request``."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, dt.datetime, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(
            400, errors.INVALID_REQUEST, f"{name} must be a date and time like 2026-11-22T10:00:00Z"
        ) from exc


DESCRIPTIONS = {
    400: "Malformed request (malformed_json, invalid_cursor, invalid_request)",
    401: "Missing, invalid or expired token, or unknown tenant (unauthorized, token_expired, tenant_unknown)",
    403: "The role or scope does not allow this (forbidden, replica_forbidden)",
    404: "Not found (not_found)",
    409: "Conflicts with the current state",
    413: "Body or batch over a limit (body_too_large, too_many_changes)",
    422: "Wrong types or values (invalid_request, unknown_op, id_too_long)",
    429: "Rate limited: retry after Retry-After seconds (rate_limited)",
    500: "Server error (internal, data_integrity); details are only in server logs",
    503: "A dependency is down (unavailable)",
}

AUTHENTICATED: tuple[int, ...] = (401, 403)
"""Statuses every endpoint behind the bearer token can return."""


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """``ResponseSpec``s documenting ``ErrorResponse`` for each status (for a route's ``responses=``)."""
    return {
        status: ResponseSpec(
            data_container=ErrorResponse,
            description=DESCRIPTIONS.get(status, "Error"),
            generate_examples=False,
        )
        for status in statuses
    }
