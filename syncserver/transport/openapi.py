"""OpenAPI helpers: our error body (``ErrorResponse``) documented for the statuses an operation returns.

Litestar documents its own validation-error shape for 400; our handlers never
send it. ``responses=error_responses(400, 404, *AUTHENTICATED)`` on a route
decorator documents ``{"error": {"code", "message"}}`` for those statuses.
"""

from __future__ import annotations

from litestar.openapi import ResponseSpec

from syncproto.messages import ErrorResponse

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
