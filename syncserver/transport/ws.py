"""The WebSocket channel of protocol v1: ``GET /v1/sync/ws`` (PROTOCOL.md, "WebSocket channel").

A session is: accept; authenticate (``Authorization`` header, a ``bearer.<jwt>``
subprotocol next to ``sync.v1``, or an ``auth`` first message; never the URL
query), counted meanwhile among its address's unauthenticated connections;
admit (connection limits); ``hello`` -> ``welcome``. Then a reader
handles client messages (push, ping, pong, token refresh) and a writer drains
the connection's send queue, until either ends. What is delivered, and when, is
``syncserver.live``'s business.

Every refusal is an ``error`` message followed by a close whose code is in the
table below and whose reason is the stable error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from enum import IntEnum
from typing import Any
from urllib.parse import parse_qsl

import jwt
import msgspec
from litestar import WebSocket, websocket

from syncproto import errors
from syncproto.messages import (
    SUPPORTED_VERSIONS,
    PushRequest,
    WsAuth,
    WsClientMessage,
    WsError,
    WsHello,
    WsPing,
    WsPong,
    WsPush,
    WsPushResult,
    WsReset,
    WsWelcome,
)
from syncserver.auth import ratelimit
from syncserver.auth.ratelimit import RateLimiting
from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Principal, TokenVerifier, bearer_token
from syncserver.errors import ApiError
from syncserver.keys.envelope import DecryptionError
from syncserver.live import Connection, LiveHub, TooManyConnections, encode
from syncserver.ops import metrics
from syncserver.settings import Settings
from syncserver.sync import cursor
from syncserver.sync.push import PushService
from syncserver.transport.body import decode_client_message
from syncstore import TRANSIENT_ERRORS
from syncstore.store import TenantNotFound

log = logging.getLogger("syncserver.ws")

SUBPROTOCOL = "sync.v1"
BEARER_PREFIX = "bearer."
_TOKEN_PARAMS = frozenset({"token", "access_token", "jwt", "auth", "authorization", "bearer", "id_token"})
_JWT_SHAPE = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]*$")
_TAG_PATH = re.compile(r"\.ops\[\d+\]\.op`?$")
_CLOSE_TIMEOUT_S = 2.0
_FLUSH_BEFORE_CLOSE_S = 1.0
UNCOUNTED_FRAME_BYTES = 4096
"""Frames smaller than this skip the push budget: control messages and small pushes cost little memory."""


class Close(IntEnum):
    """WebSocket close codes of the channel (the table in PROTOCOL.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL = 1011
    UNAVAILABLE = 1013
    INVALID = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    TIMEOUT = 4408
    VERSION_UNSUPPORTED = 4426
    TOO_MANY_CONNECTIONS = 4429


RATE_LIMITED_MESSAGE = "too many requests; retry after the number of seconds in retry_after"


class Refused(Exception):
    """End the session: an ``error`` message, then a close with ``close`` and reason ``code``."""

    def __init__(self, close: Close, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.close = close
        self.code = code
        self.message = message
        self.retry_after = retry_after


class _Envelope(msgspec.Struct):
    """Just enough of a malformed message to echo its correlation id."""

    id: str | None = None


def _decode(data: str | bytes) -> WsClientMessage:
    return decode_client_message(data)  # bounded nesting: transport/body.py


def _error_for(exc: msgspec.DecodeError, data: str | bytes) -> WsError:
    correlation = None
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        if isinstance(data, str):
            correlation = msgspec.json.decode(data, type=_Envelope).id
        else:
            correlation = msgspec.msgpack.decode(data, type=_Envelope).id
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        code = errors.UNKNOWN_OP if message.startswith("Invalid value") and _TAG_PATH.search(message) else None
        return WsError(code or errors.INVALID_REQUEST, message, correlation)
    return WsError(errors.MALFORMED_JSON, f"the message is not valid JSON or MessagePack: {exc}", correlation)


def _token_in_query(scope: Any) -> bool:
    raw: bytes = scope.get("query_string") or b""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []
    return any(k.lower() in _TOKEN_PARAMS or _JWT_SHAPE.match(v) for k, v in pairs)


def _header(scope: Any, name: bytes) -> str | None:
    """One request header, read from the scope (``socket.headers`` would keep a parsed copy per connection)."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _client_address(scope: Any) -> str:
    """The peer's IP address as the ASGI server reports it (behind a proxy, set uvicorn's ``--forwarded-allow-ips``)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _expiry(token: str, leeway_s: int) -> float | None:
    """When a verified token stops being valid (its ``exp`` plus the leeway)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    exp = claims.get("exp")
    return float(exp) + leeway_s if isinstance(exp, int | float) else None


class Session:
    """One WebSocket from accept to close."""

    __slots__ = (
        "_closer",
        "_conn",
        "_writer",
        "closed",
        "disconnected",
        "hub",
        "push_service",
        "rate_limiting",
        "settings",
        "socket",
        "verifier",
    )

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        state = socket.app.state
        self.socket = socket
        self.hub: LiveHub = state.live
        self.push_service: PushService = state.push_service
        self.verifier: TokenVerifier = state.verifier
        self.rate_limiting: RateLimiting = state.rate_limiting
        self.settings: Settings = state.settings
        self.disconnected = False
        self.closed = False
        self._conn: Connection | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        offered = list(self.socket.scope.get("subprotocols") or [])
        await self.socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        principal: Principal | None = None
        try:
            principal, expires_at = await self._authenticate_counted(offered)
            try:
                self.hub.admission.admit(principal)
            except TooManyConnections as exc:
                principal = None
                raise Refused(Close.TOO_MANY_CONNECTIONS, errors.TOO_MANY_CONNECTIONS, str(exc)) from exc
            conn = await self._hello(principal)
            conn.expires_at = expires_at
            await self._serve(conn)
        except Refused as refusal:
            await self._refuse(refusal)
        except _Disconnected:
            pass
        except TRANSIENT_ERRORS:
            await self._refuse(
                Refused(Close.UNAVAILABLE, errors.UNAVAILABLE, "the database is unavailable; retry later")
            )
        except Exception:
            log.exception("unexpected error in a WebSocket session")
            await self._refuse(Refused(Close.INTERNAL, errors.INTERNAL, "the server could not continue this session"))
        finally:
            if principal is not None:
                self.hub.admission.release(principal)
            self.hub.admission.ended()

    # --- handshake ----------------------------------------------------------

    async def _authenticate_counted(self, offered: list[str]) -> tuple[Principal, float | None]:
        """Authenticate, counted meanwhile among the client address's unauthenticated connections (4429 over)."""
        address = _client_address(self.socket.scope)
        try:
            self.hub.admission.admit_unauthenticated(address)
        except TooManyConnections as exc:
            raise Refused(Close.TOO_MANY_CONNECTIONS, errors.TOO_MANY_CONNECTIONS, str(exc)) from exc
        try:
            return await self._authenticate(offered)
        finally:
            self.hub.admission.release_unauthenticated(address)

    async def _authenticate(self, offered: list[str]) -> tuple[Principal, float | None]:
        """The upgrade counts as a request in the HTTP rate-limit budget, once its credential is read: the
        verified identity's, or the client address's when it is refused (4401; over the limit, 4429)."""
        if _token_in_query(self.socket.scope):
            await self._rate_limit(None)
            raise Refused(
                Close.UNAUTHORIZED,
                errors.UNAUTHORIZED,
                "tokens in the URL are refused: use the Authorization header, "
                f"the '{BEARER_PREFIX}<token>' subprotocol or an auth message",
            )
        try:
            token = await self._token(offered)
            principal = self.verifier.verify(token)
        except ApiError as exc:
            await self._rate_limit(None)
            raise Refused(Close.UNAUTHORIZED, exc.code, exc.message) from exc
        await self._rate_limit(principal)
        if await self.hub.store.get_tenant(principal.tenant) is None:
            raise Refused(Close.UNAUTHORIZED, errors.TENANT_UNKNOWN, "the token's tenant does not exist")
        return principal, _expiry(token, self.verifier.leeway_s)

    async def _rate_limit(self, principal: Principal | None) -> None:
        """Count the upgrade for ``principal`` (None: the client address); over the limit, 4429 ``rate_limited``."""
        key = ratelimit.address(self.socket.scope) if principal is None else ratelimit.identity(principal)
        retry_after = await self.rate_limiting.hit(key)
        if retry_after is not None:
            raise Refused(Close.TOO_MANY_CONNECTIONS, errors.RATE_LIMITED, RATE_LIMITED_MESSAGE, retry_after)

    async def _token(self, offered: list[str]) -> str:
        header = _header(self.socket.scope, b"authorization")
        if header:
            return bearer_token(header)
        for protocol in offered:
            if protocol.startswith(BEARER_PREFIX):
                return protocol[len(BEARER_PREFIX) :]
        first = await self._handshake_message("auth message")
        if not isinstance(first, WsAuth):
            raise Refused(Close.UNAUTHORIZED, errors.UNAUTHORIZED, "authenticate first (header, subprotocol or auth)")
        return first.token

    async def _hello(self, principal: Principal) -> Connection:
        hello = await self._handshake_message("hello")
        if not isinstance(hello, WsHello):
            raise Refused(Close.INVALID, errors.INVALID_REQUEST, f"expected hello, got {type(hello).__name__}")
        shared = set(hello.versions) & set(SUPPORTED_VERSIONS)
        if not shared:
            raise Refused(
                Close.VERSION_UNSUPPORTED,
                errors.VERSION_UNSUPPORTED,
                f"no shared protocol version: the server speaks {list(SUPPORTED_VERSIONS)}",
            )
        try:
            found = cursor.decode_for(principal.tenant, hello.cursor, cursor.scope_key(Scope.of(principal)))
        except ApiError as exc:
            raise Refused(Close.INVALID, exc.code, exc.message) from exc
        # ``None``: a cursor of another scope (channels or role changed). As HTTP pull: ``reset``, then from the start.
        position, since, floor = found if found is not None else cursor.Position(0, 0)
        live = self.settings.live
        conn = Connection(
            principal,
            live,
            encoding=hello.encoding,
            position=position,
            since=since,
            floor=floor,
            has_cursor=hello.cursor is not None and found is not None,
            collections=hello.collections,
            scope=self.hub.scope,
        )
        conn.control(WsWelcome(max(shared), hello.encoding, hello.cursor, live.heartbeat_ms, live.idle_timeout_ms))
        if found is None:
            conn.control(WsReset())
        return conn

    async def _handshake_message(self, expected: str) -> WsClientMessage:
        timeout = self.settings.live.handshake_timeout_ms / 1000
        try:
            event = await asyncio.wait_for(self.socket.receive(), timeout)
        except TimeoutError as exc:
            raise Refused(Close.TIMEOUT, errors.TIMEOUT, f"no {expected} within {timeout:g} s") from exc
        data = self._data(event)
        try:
            return _decode(data)
        except msgspec.DecodeError as exc:
            error = _error_for(exc, data)
            raise Refused(Close.INVALID, error.code, error.message) from exc

    def _data(self, event: Any) -> str | bytes:
        if event["type"] == "websocket.disconnect":
            self.disconnected = True
            raise _Disconnected
        text: str | None = event.get("text")
        return text if text is not None else event.get("bytes") or b""

    async def _refuse(self, refusal: Refused) -> None:
        if self.disconnected:
            return
        log.info("closing a WebSocket: %s (%s)", refusal.code, refusal.message)
        with contextlib.suppress(Exception):
            error = WsError(refusal.code, refusal.message)
            if refusal.retry_after is not None:
                error.retry_after = refusal.retry_after
            text = encode(error, "json")
            await asyncio.wait_for(self.socket.send_data(text, "text"), _CLOSE_TIMEOUT_S)
        await self._close(refusal.close, refusal.code)

    async def _close(self, code: int, reason: str) -> None:
        if self.disconnected or self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.close(code, reason), _CLOSE_TIMEOUT_S)

    # --- the session ---------------------------------------------------------

    async def _serve(self, conn: Connection) -> None:
        """Read client messages until the peer disconnects (after a close we sent, too).

        The handler itself is the reader; a writer task exists only while frames wait;
        a close requested from elsewhere (heartbeats, token expiry) is sent by a task of
        its own, and the peer's answer ends the read loop.
        """
        self._conn = conn
        conn.on_close = self._request_close
        conn.start_writer = self._start_writer
        conn.kick()  # the welcome is already queued
        self.hub.attach(conn)
        try:
            await self._read(conn)
        finally:
            conn.on_close = conn.start_writer = None
            if self._writer is not None:
                self._writer.cancel()
            await self.hub.detach(conn)
            if self._closer is not None:
                await self._closer

    def _start_writer(self) -> None:
        assert self._conn is not None
        self._writer = asyncio.create_task(self._write(self._conn), name="ws-writer")

    def _request_close(self) -> None:
        if self._closer is None:
            self._closer = asyncio.create_task(self._close_requested(), name="ws-closer")

    async def _close_requested(self) -> None:
        assert self._conn is not None
        conn = self._conn
        if self._writer is not None:
            # Let the frames already queued (the error that explains this close) go out first, but
            # briefly: the writer may be stuck sending to a peer that does not read.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), _FLUSH_BEFORE_CLOSE_S)
        if self._writer is not None:
            self._writer.cancel()
        await self.hub.detach(conn)  # stop delivering now, even if the close takes a while
        await self._close(conn.close_code or Close.NORMAL, conn.close_reason)

    async def _write(self, conn: Connection) -> None:
        """Send until the queue is empty, then end: an idle connection keeps no writer task."""
        try:
            while (frame := conn.pop()) is not None:
                try:
                    await self.socket.send_data(frame.data, "text" if isinstance(frame.data, str) else "binary")
                except Exception:  # the peer is gone; the reader sees the disconnect
                    self.disconnected = True
                    return
                conn.sent()
                if frame.stamp_ms is not None and conn.sample:
                    metrics.FANOUT_LAG.observe(max(0.0, time.time() - frame.stamp_ms / 1000))
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None

    async def _read(self, conn: Connection) -> None:
        while True:
            try:
                data = self._data(await self.socket.receive())
            except _Disconnected:
                return
            conn.last_seen = time.monotonic()
            await conn.wait_not_full()  # a client that sends without reading must not grow its queue
            if len(data) > self.settings.limits.max_body_bytes:
                limit = self.settings.limits.max_body_bytes
                conn.control(WsError(errors.BODY_TOO_LARGE, f"a message may be at most {limit} bytes"))
                continue
            # A frame big enough to matter waits for room in the push budget before it is decoded, as an
            # HTTP push does, and holds it until its push ends, even if the socket closes first
            # (sync/push_budget.py); pings, pongs and small pushes go straight on.
            if len(data) >= UNCOUNTED_FRAME_BYTES:
                await self.push_service.budget.run(len(data), functools.partial(self._decode_and_handle, conn, data))
            else:
                await self._decode_and_handle(conn, data)

    async def _decode_and_handle(self, conn: Connection, data: str | bytes) -> None:
        try:
            message = _decode(data)
        except msgspec.DecodeError as exc:
            conn.control(_error_for(exc, data))
            return
        await self._handle(conn, message)

    async def _handle(self, conn: Connection, message: WsClientMessage) -> None:
        match message:
            case WsPush():
                await self._push(conn, message)
            case WsPing(id=ping_id):
                conn.control(WsPong(ping_id), droppable=True)
            case WsPong():
                pass
            case WsAuth(token=token):
                self._refresh(conn, token)
            case WsHello():
                conn.control(WsError(errors.INVALID_REQUEST, "hello was already received"))

    async def _push(self, conn: Connection, message: WsPush) -> None:
        if conn.expires_at is not None and time.time() > conn.expires_at:
            # As over HTTP, an expired credential pushes nothing; the hub's periodic check would close
            # the session a little later, and a push must not slip into that window.
            conn.control(WsError(errors.TOKEN_EXPIRED, "the token has expired", message.id))
            conn.request_close(Close.UNAUTHORIZED, errors.TOKEN_EXPIRED)
            return
        # Each push counts in the identity's HTTP budget (Litestar's middleware sees only HTTP requests).
        retry_after = await self.rate_limiting.hit(ratelimit.identity(conn.principal))
        if retry_after is not None:
            conn.control(WsError(errors.RATE_LIMITED, RATE_LIMITED_MESSAGE, message.id, retry_after=retry_after))
            return
        request = PushRequest(message.replica, message.changes)
        task = asyncio.ensure_future(self.push_service.push(conn.principal, request))
        # Shielded: a push the server started is finished and committed even if the socket closes meanwhile.
        task.add_done_callback(_retrieve)
        try:
            response = await asyncio.shield(task)
        except ApiError as exc:
            conn.control(WsError(exc.code, exc.message, message.id))
        except TenantNotFound:
            conn.control(WsError(errors.TENANT_UNKNOWN, "the token's tenant does not exist", message.id))
        except TRANSIENT_ERRORS:
            conn.control(WsError(errors.UNAVAILABLE, "the database is unavailable; retry later", message.id))
        except DecryptionError:
            log.error("stored data failed its integrity check during a WebSocket push")
            conn.control(WsError(errors.DATA_INTEGRITY, "stored data failed its integrity check", message.id))
        except Exception:
            log.exception("unexpected error in a WebSocket push")
            conn.control(WsError(errors.INTERNAL, "the server could not complete this push", message.id))
        else:
            conn.control(WsPushResult(message.id, response.results))

    def _refresh(self, conn: Connection, token: str) -> None:
        """A new token mid-session, before the old one expires; the scope cannot change (no evictions follow).

        A token that fails verification (expired, forged, malformed) ends the session with 4401: the
        client offered it as its credential from now on, so the old one must not carry on in its place.
        """
        try:
            principal = self.verifier.verify(token)
        except ApiError as exc:
            conn.control(WsError(exc.code, exc.message))
            conn.request_close(Close.UNAUTHORIZED, exc.code)
            return
        if principal != conn.principal:
            message = "a refreshed token must keep the tenant, user, role and channels; reconnect to change them"
            conn.control(WsError(errors.FORBIDDEN, message))
            conn.request_close(Close.FORBIDDEN, errors.FORBIDDEN)
            return
        conn.expires_at = _expiry(token, self.verifier.leeway_s)


class _Disconnected(Exception):
    pass


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), ApiError):
        log.debug("a push finished with %r", task.exception())


@websocket(
    "/v1/sync/ws",
    exclude_from_auth=True,
    name="sync_ws",
)
async def sync_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """Live sync: hello/welcome, catch-up, live changes, push, heartbeats (PROTOCOL.md)."""
    await Session(socket).run()
