"""Protocol v1 over the WebSocket channel ``/v1/sync/ws`` (PROTOCOL §9), with ``websockets``.

``connect_websocket(params)`` opens a session (bearer header, ``hello``,
``welcome``) and returns a ``WebSocketTransport``, a ``LiveTransport``:

* ``pull`` hands out the ``changes`` frames the server streams, in order; it
  answers ``more=True`` until ``synced`` arrived and every change this session
  pushed has come back on the stream, then ``more=False`` whenever nothing is
  buffered. A ``reset`` frame becomes ``PullResponse(reset=True)``.
* ``push`` sends a ``push`` with a fresh correlation id and waits for its
  ``push_result`` (or ``error``, raised as ``ServerError``).
* ``wait_for_changes`` returns when a frame is buffered.
* ``refresh_token`` sends ``auth`` with a fresh token (``SyncClient.set_token``
  calls it), so a session outlives the token it opened with.
* Server ``ping``s are answered; a server silent for longer than its heartbeat
  plus a margin counts as a dead connection. Every failure of the connection
  becomes ``TransportError`` (retry) or, for a refusal with a 44xx close code,
  ``ServerError`` with the close reason as its code; the background loop then
  reconnects from the client's stored cursor.

Memory is bounded: at most ``max_buffered_frames`` frames wait for ``pull``.
A client that falls further behind drops them (as the server does with a slow
reader, §9.3), keeps reading push results, and fails its next ``pull`` with
``TransportError``, so the loop reconnects from the cursor it has stored.

Usage::

    client = SyncClient(url, token, "phone-1", "local.db")  # start() tries this transport first
    transport = await connect_websocket(LiveParams(url, token, "phone-1", cursor=None))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from typing import Final, Literal

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from syncclient.errors import ProtocolViolation, ServerError, SyncError, TransportError
from syncclient.transport.interface import LiveParams
from syncproto import errors
from syncproto.messages import (
    PROTOCOL_VERSION,
    Applied,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    WsAuth,
    WsChanges,
    WsError,
    WsHello,
    WsPing,
    WsPong,
    WsPush,
    WsPushResult,
    WsReset,
    WsServerMessage,
    WsSynced,
    WsWelcome,
    json_encoder,
    ws_server_json_decoder,
    ws_server_msgpack_decoder,
)

__all__ = ["WS_PATH", "WebSocketTransport", "connect_websocket", "ws_url"]

log = logging.getLogger("syncclient")

WS_PATH: Final = "/v1/sync/ws"
SUBPROTOCOL: Final = "sync.v1"

# Close code -> the HTTP status the same refusal has over HTTP (PROTOCOL §9.7), for ``ServerError``.
_CLOSE_STATUS: Final = {4400: 400, 4401: 401, 4403: 403, 4408: 408, 4426: 426, 4429: 429, 1013: 503}
_RETRYABLE_CLOSES: Final = frozenset({4408, 4429})
"""Refusals that heal by reconnecting later (a timeout, a connection limit): raised as ``TransportError``."""

Buffered = WsChanges | WsSynced | WsReset


def ws_url(url: str) -> str:
    """``http(s)://host[/prefix]`` -> ``ws(s)://host[/prefix]/v1/sync/ws``."""
    base = url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http) :] + WS_PATH
    if base.startswith(("ws://", "wss://")):
        return base if base.endswith(WS_PATH) else base + WS_PATH
    raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")


async def connect_websocket(
    params: LiveParams,
    *,
    encoding: Literal["json", "msgpack"] = "json",
    collections: list[str] | None = None,
    open_timeout: float = 10.0,
    push_timeout: float = 120.0,
    max_buffered_frames: int = 64,
) -> WebSocketTransport:
    """Open a session and return once ``welcome`` arrived; a ``LiveTransportFactory``.

    Raises ``TransportError`` when the server cannot be reached and
    ``ServerError`` when it refuses (no WebSocket endpoint, bad token, no
    common protocol version).
    """
    try:
        socket = await connect(
            ws_url(params.url),
            additional_headers={"Authorization": f"Bearer {params.token}"},
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]  # Subprotocol is a NewType of str
            open_timeout=open_timeout,
            max_size=None,  # the server bounds its frames (one page); refusing one would stall sync
            compression=None,  # pages are mostly ciphertext-derived JSON; deflate costs CPU on phones
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ServerError(status, f"http_{status}", "the server refused the WebSocket upgrade") from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise TransportError(f"WebSocket connect: {type(exc).__name__}: {exc}") from exc
    transport = WebSocketTransport(
        socket,
        params,
        encoding=encoding,
        push_timeout=push_timeout,
        max_buffered_frames=max_buffered_frames,
        collections=collections,
    )
    try:
        await asyncio.wait_for(transport._handshake(collections), open_timeout)
    except BaseException as exc:
        await transport.aclose()
        if isinstance(exc, TimeoutError):
            raise TransportError("the server sent no welcome in time") from exc
        raise
    return transport


class WebSocketTransport:
    """One live session. Build it with ``connect_websocket``; use it from one event loop."""

    name = "ws"

    def __init__(
        self,
        socket: ClientConnection,
        params: LiveParams,
        *,
        encoding: Literal["json", "msgpack"],
        push_timeout: float,
        max_buffered_frames: int,
        collections: list[str] | None = None,
    ) -> None:
        self._socket = socket
        self._params = params
        self._encoding = encoding
        self._push_timeout = push_timeout
        self._max_buffered = max_buffered_frames
        self._buffer: deque[Buffered] = deque()
        self._arrived = asyncio.Event()
        self._pending: dict[str, asyncio.Future[PushResponse]] = {}
        self._ids = itertools.count(1)
        self._cursor = params.cursor
        """The cursor of the last page handed to ``pull``: where the client's state ends."""
        self._synced = False
        self._echoes: dict[tuple[str, str], int] = {}
        """Entities of applied pushes, with their seq, not yet seen again on the stream."""
        self._collections = None if collections is None else frozenset(collections)
        self._lagging = False
        self._failure: SyncError | None = None
        self._silence_s = 60.0
        self._reader: asyncio.Task[None] | None = None

    # --- Transport ----------------------------------------------------------------

    async def push(self, request: PushRequest) -> PushResponse:
        self._raise_if_failed()
        push_id = f"p-{next(self._ids)}"
        result: asyncio.Future[PushResponse] = asyncio.get_running_loop().create_future()
        self._pending[push_id] = result
        try:
            await self._send(json_encoder.encode(WsPush(push_id, request.replica, request.changes)))
            async with asyncio.timeout(self._push_timeout):
                response = await result
        except TimeoutError as exc:
            error = TransportError(f"no push_result for {push_id} within {self._push_timeout:g} s")
            await self._fail(error)
            raise error from exc
        finally:
            self._pending.pop(push_id, None)
        self._expect_echoes(request, response)
        return response

    async def pull(self, request: PullRequest) -> PullResponse:
        """The next page of the stream; ``request.cursor`` must be where the last page ended."""
        if request.cursor != self._cursor:
            # The client dropped or replaced its state (a reset of its own): the stream no
            # longer continues it. Reconnecting resumes from the client's stored cursor.
            await self._fail(TransportError("the client's cursor left this session's stream; reconnecting"))
        while True:
            self._raise_if_failed()
            if self._lagging:
                await self._fail(TransportError("fell behind the server's stream; reconnecting from the cursor"))
                continue
            if self._buffer:
                frame = self._buffer.popleft()
                if isinstance(frame, WsReset):
                    self._cursor, self._synced = None, False
                    return PullResponse(reset=True)
                if isinstance(frame, WsSynced):
                    self._synced = True
                    self._cursor = frame.cursor if frame.cursor is not None else self._cursor
                    if not self._buffer and self._caught_up():
                        return PullResponse(cursor=self._cursor, more=False)
                    continue
                self._cursor = frame.cursor
                self._settle_echoes(frame)
                if self._buffer and isinstance(synced := self._buffer[0], WsSynced):
                    self._buffer.popleft()  # fold catch-up's end into this page: no empty round
                    self._synced = True
                    self._cursor = synced.cursor if synced.cursor is not None else self._cursor
                more = bool(self._buffer) or not self._caught_up()
                page = PullResponse(frame.changes, self._cursor, more, evictions=frame.evictions)
                page.unavailable = frame.unavailable
                return page
            if self._caught_up():
                return PullResponse(cursor=self._cursor, more=False)
            try:
                await self._wait_for_frame(self._silence_s)
            except TimeoutError:
                await self._fail(TransportError(f"the stream stalled for {self._silence_s:g} s before catching up"))

    def _caught_up(self) -> bool:
        """Catch-up is over and every change this session pushed has come back on the stream.

        The round trip drops acknowledged outbox rows once a pull ends (``more=False``),
        trusting that the pulled state includes them, as an HTTP pull that starts after
        the push does. The stream may still be on its way, so the end waits for the echoes.
        """
        return self._synced and not self._echoes

    def _expect_echoes(self, request: PushRequest, response: PushResponse) -> None:
        """Remember each applied change's entity and seq; the stream will carry it (or its eviction)."""
        for change, result in zip(request.changes, response.results, strict=False):
            if isinstance(result, Applied) and (self._collections is None or change.collection in self._collections):
                key = (change.collection, change.entity)
                self._echoes[key] = max(self._echoes.get(key, 0), result.seq)

    def _settle_echoes(self, frame: WsChanges) -> None:
        if not self._echoes:
            return
        for view in frame.changes:
            key = (view.collection, view.entity)
            if view.seq >= self._echoes.get(key, view.seq + 1):
                del self._echoes[key]
        for gone in frame.evictions:
            self._echoes.pop((gone.collection, gone.entity), None)
        # A pushed entity the server cannot read comes back named, not as a view: no echo to wait for.
        for bad in frame.unavailable or ():
            self._echoes.pop((bad.collection, bad.entity), None)

    async def wait_for_changes(self, max_wait: float) -> bool:
        self._raise_if_failed()
        if self._buffer or self._lagging:
            return True
        with contextlib.suppress(TimeoutError):
            await self._wait_for_frame(max_wait)
        self._raise_if_failed()
        return bool(self._buffer) or self._lagging

    async def refresh_token(self, token: str) -> None:
        """Send ``auth`` with a fresh token, so the session outlives the old one's expiry (PROTOCOL §9.1).

        The token must name the same tenant, user, role and channels, or the
        server closes the session (4403) and the loop reconnects with it.
        """
        self._raise_if_failed()
        await self._send(json_encoder.encode(WsAuth(token)))

    async def aclose(self) -> None:
        if self._failure is None:
            self._failure = TransportError("the WebSocket transport is closed")
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(Exception):
            await self._socket.close()
        self._settle_pending()

    # --- session ------------------------------------------------------------------

    async def _handshake(self, collections: list[str] | None) -> None:
        hello = WsHello(
            [PROTOCOL_VERSION], self._params.replica, self._params.cursor, collections, encoding=self._encoding
        )
        await self._send(json_encoder.encode(hello))
        while True:
            message = await self._receive()
            if isinstance(message, WsWelcome):
                break
            if isinstance(message, WsError):
                raise await self._refusal(message)
            if isinstance(message, WsPing):
                await self._send(json_encoder.encode(WsPong(message.id)))
                continue
            raise ProtocolViolation(f"expected welcome, got {type(message).__name__}")
        if message.version != PROTOCOL_VERSION:
            raise ProtocolViolation(f"the server chose protocol version {message.version}")
        # Silence beyond twice the heartbeat, plus slack for a busy server, means a dead peer.
        self._silence_s = 2 * message.heartbeat_ms / 1000 + 5
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="syncclient-ws-reader")

    async def _read(self) -> None:
        try:
            while True:
                async with asyncio.timeout(self._silence_s):
                    message = await self._receive()
                self._dispatch(message)
                if isinstance(message, WsPing):
                    await self._send(json_encoder.encode(WsPong(message.id)))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await self._fail(TransportError(f"the server was silent for {self._silence_s:g} s"))
        except SyncError as exc:
            await self._fail(exc)
        except Exception as exc:  # anything else still ends this session, never the app
            log.exception("WebSocket reader failed")
            await self._fail(TransportError(f"WebSocket reader: {type(exc).__name__}: {exc}"))

    def _dispatch(self, message: WsServerMessage) -> None:
        if isinstance(message, WsChanges | WsSynced | WsReset):
            if self._lagging:
                return  # dropped: the reconnect re-reads the log from the client's cursor
            if isinstance(message, WsChanges) and len(self._buffer) >= self._max_buffered:
                log.warning("%s fell behind the stream; dropping %d frames", self._params.replica, len(self._buffer))
                self._buffer.clear()
                self._lagging = True
            else:
                self._buffer.append(message)
            self._arrived.set()
        elif isinstance(message, WsPushResult):
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                future.set_result(PushResponse(message.results, message.protocol))
        elif isinstance(message, WsError):
            future = self._pending.get(message.id) if message.id else None
            if future is not None and not future.done():
                future.set_exception(
                    ServerError(_error_status(message.code), message.code, message.message, _retry_after(message))
                )
            else:
                log.warning("server error on the live channel: %s: %s", message.code, message.message)
        elif isinstance(message, WsWelcome):
            raise ProtocolViolation("a second welcome in one session")
        # WsPing is answered by ``_read``; WsPong needs nothing.

    async def _receive(self) -> WsServerMessage:
        try:
            frame = await self._socket.recv()
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc
        try:
            if isinstance(frame, bytes):
                return ws_server_msgpack_decoder.decode(frame)
            return ws_server_json_decoder.decode(frame)
        except msgspec.DecodeError as exc:
            raise ProtocolViolation(f"the server sent a message outside protocol v1: {exc}") from exc

    async def _send(self, data: bytes) -> None:
        try:
            await self._socket.send(data.decode())  # text frame: JSON (PROTOCOL §9.2)
        except ConnectionClosed as exc:
            error = _closed_error(exc)
            await self._fail(error)
            raise error from exc

    async def _refusal(self, error: WsError) -> SyncError:
        """The error the server sent before closing a handshake, with the close code's status."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._socket.wait_closed(), 2.0)
        code = self._socket.close_code
        if code in _RETRYABLE_CLOSES:
            return TransportError(f"{code} {error.code}: {error.message}")
        status = _CLOSE_STATUS.get(code or 0, _error_status(error.code))
        return ServerError(status, error.code, error.message, _retry_after(error))

    async def _wait_for_frame(self, within: float) -> None:
        self._arrived.clear()
        if self._buffer or self._lagging or self._failure is not None:
            return
        async with asyncio.timeout(within):
            await self._arrived.wait()

    async def _fail(self, error: SyncError) -> None:
        if self._failure is None:
            self._failure = error
        self._arrived.set()
        self._settle_pending()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        with contextlib.suppress(Exception):
            await self._socket.close()

    def _settle_pending(self) -> None:
        error = self._failure or TransportError("the WebSocket closed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure


def _closed_error(exc: ConnectionClosed) -> SyncError:
    close = exc.rcvd
    if close is None:
        return TransportError("the WebSocket dropped without a close frame")
    status = _CLOSE_STATUS.get(close.code)
    if status is None or close.code in _RETRYABLE_CLOSES or status >= 500:
        return TransportError(f"the server closed the WebSocket: {close.code} {close.reason}")
    return ServerError(status, close.reason or f"ws_{close.code}", f"closed with {close.code}")


def _error_status(code: str) -> int:
    """The HTTP status a request-level ``error`` would have over HTTP, for ``ServerError.retryable``."""
    return errors.REQUEST_STATUS.get(code, 400)


def _retry_after(error: WsError) -> float | None:
    """The seconds a ``rate_limited`` error asks to wait (PROTOCOL §9.4), as a ``ServerError`` carries them."""
    return None if isinstance(error.retry_after, msgspec.UnsetType) else float(error.retry_after)
