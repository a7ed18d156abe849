"""Structured logs and a request id on every response.

Logs are JSON lines on stderr (``SYNC_LOG_FORMAT=text`` for humans). Every
line logged while a request is handled carries its ``request_id``, which is
also echoed in the ``X-Request-ID`` response header; a client may send its
own (1-128 characters of ``A-Za-z0-9._:-``). Nothing here ever logs a header,
a body, a query string or a payload value.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.logging.config import LoggingConfig
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "logging_config",
    "request_id",
    "request_id_for_unrouted",
]

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("syncserver.access")


class RequestIdMiddleware(ASGIMiddleware):
    """Takes or makes a request id, binds it for logging, echoes it, and writes one access line."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        rid = _incoming_id(scope) or uuid.uuid4().hex
        request_id.set(rid)
        scope["state"]["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = rid
            await send(message)

        method = str(scope.get("method", "GET"))
        path = str(scope.get("path_template", scope["path"]))
        try:
            await next_app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered by an exception handler outside this middleware (auth failures, for one).
            status = _status_of(exc)
            raise
        finally:
            access_log.info(
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


def _status_of(exc: Exception) -> int:
    for name in ("status_code", "status"):
        status = getattr(exc, name, None)
        if isinstance(status, int):
            return status
    return 500


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


async def request_id_for_unrouted(message: Message, scope: Scope) -> None:
    """``before_send`` hook: responses that never reached a route (404, 405) get an id too."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        if REQUEST_ID_HEADER not in headers:
            headers[REQUEST_ID_HEADER] = scope.get("state", {}).get("request_id") or uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds the current request id (or ``None``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def logging_config(level: str = "INFO", fmt: str = "json") -> LoggingConfig:
    """Litestar's logging config: one stderr handler for the root, Litestar's and uvicorn's loggers."""
    formatters: dict[str, dict[str, Any]] = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    }
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json" if fmt == "json" else "text",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    quiet = {"handlers": ["console"], "level": "WARNING", "propagate": False}
    return LoggingConfig(
        formatters=formatters,
        filters={"request_id": {"()": RequestIdFilter}},
        handlers={"console": handler, "queue_listener": handler},
        root={"handlers": ["console"], "level": level.upper()},
        loggers={
            "litestar": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            # Our access lines carry the request id; uvicorn's would repeat them without it.
            "uvicorn.access": quiet,
            # SQL echo and the SQLite driver's debug lines would print bound parameters.
            "sqlalchemy.engine": quiet,
            "aiosqlite": quiet,
        },
        log_exceptions="never",
    )
