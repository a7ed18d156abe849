"""API errors: every failure a client sees is ``{"error": {"code", "message"}}``.

Codes are stable (``syncproto.errors``). Unexpected exceptions become
``internal`` with a correlation-free generic message: no stack trace, no
exception text, no payload value ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException

from syncproto import errors
from syncproto.messages import ErrorBody, ErrorResponse

log = logging.getLogger("syncserver.errors")


class ApiError(Exception):
    """An error with a stable code and an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    body = msgspec.json.encode(ErrorResponse(ErrorBody(code, message)))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def handle_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


_STATUS_CODES = {
    400: errors.INVALID_REQUEST,
    401: errors.UNAUTHORIZED,
    403: errors.FORBIDDEN,
    404: errors.NOT_FOUND,
    405: errors.INVALID_REQUEST,
    413: errors.BODY_TOO_LARGE,
    429: errors.RATE_LIMITED,
}


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        log.error("server error on %s %s", request.method, request.url.path, exc_info=exc)
    if isinstance(exc, NotAuthorizedException):
        code, message = errors.UNAUTHORIZED, exc.detail or "authentication required"
    elif isinstance(exc, PermissionDeniedException):
        code, message = errors.FORBIDDEN, exc.detail or "not allowed"
    elif status >= 500:
        code, message = (
            errors.UNAVAILABLE if status == 503 else errors.INTERNAL,
            "the server could not complete this request",
        )
    else:
        code, message = _STATUS_CODES.get(status, errors.INVALID_REQUEST), exc.detail or "invalid request"
    headers = dict(exc.headers or {})
    if status == 429:
        # Litestar's rate limiter sends RateLimit-Reset (seconds until the window resets); clients honour Retry-After.
        headers.setdefault("Retry-After", str(max(1, int(headers.get("RateLimit-Reset", "1") or 1))))
        message = "too many requests; retry after the number of seconds in Retry-After"
    return error_response(status, code, message, headers)


def handle_tenant_not_found(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return error_response(401, errors.TENANT_UNKNOWN, "the token's tenant does not exist")


def handle_decryption_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Tampering or a moved row: the operator must know, the client must not learn more.
    log.error("stored data failed its integrity check on %s %s: %s", request.method, request.url.path, exc)
    return error_response(500, errors.DATA_INTEGRITY, "stored data failed its integrity check")


def handle_store_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(503, errors.UNAVAILABLE, "the database is unavailable; retry later", {"Retry-After": "1"})


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, OverflowError):
        # An id or counter beyond what the database stores (SQLite: 64-bit); the client's mistake.
        return error_response(400, errors.INVALID_REQUEST, "a number in the request is out of range")
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, errors.INTERNAL, "the server could not complete this request")
