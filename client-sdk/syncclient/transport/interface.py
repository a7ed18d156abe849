"""The seam between the sync logic and the network.

A ``Transport`` moves one push or one pull; everything else (batching, result
handling, cursors, retries) lives above it in ``roundtrip`` and ``background``,
so transports stay dumb and interchangeable.

Usage::

    class MyTransport:
        name = "mine"

        async def push(self, request: PushRequest) -> PushResponse:
            return push_response_decoder.decode(await post("/v1/sync/push", encode(request)))

        async def pull(self, request: PullRequest) -> PullResponse: ...

        async def aclose(self) -> None: ...

    client = SyncClient(url, token, "phone-1", "local.db", transport=MyTransport())
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from syncproto.attachments import AttachmentStatus
from syncproto.messages import PullRequest, PullResponse, PushRequest, PushResponse

__all__ = ["LiveParams", "LiveTransport", "LiveTransportFactory", "StatusTransport", "TokenRefreshable", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """One request/response exchange per call."""

    name: str
    """Short label for logs and ``ConnectionChanged`` events (``http``, ``ws``, ``mock``)."""

    async def push(self, request: PushRequest) -> PushResponse:
        """Send changes; return exactly one result per change, in request order.

        Raise ``TransportError`` when the outcome is unknown (connection lost
        mid-request): the caller resends, and the server answers ``duplicate``
        for what it already has. Raise ``ServerError`` for an ``ErrorResponse``.
        """
        ...

    async def pull(self, request: PullRequest) -> PullResponse:
        """Fetch one page after ``request.cursor``. Errors as for ``push``.

        The last page (``more=False``) must include every change this transport
        pushed and got ``applied`` for: the round trip then drops those outbox
        rows, trusting the pulled state to hold them. An HTTP pull that starts
        after the push does; a streaming transport waits for the echoes.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class LiveTransport(Transport, Protocol):
    """A transport that also hears about new changes as they happen (the WebSocket channel).

    The background loop prefers one: instead of polling, it waits on
    ``wait_for_changes`` and runs a round trip when the server announces
    something. A channel that streams pages unasked (WebSocket ``changes``
    frames after ``hello``) serves ``pull`` from what it has received, in
    order, and answers ``more=False`` once it has caught up (``synced``);
    a ``reset`` frame becomes ``PullResponse(reset=True)``.
    """

    async def wait_for_changes(self, max_wait: float) -> bool:
        """Return True when the server announced changes, False after ``max_wait`` seconds.

        Raise ``TransportError`` when the connection drops; the loop then reconnects.
        """
        ...


@runtime_checkable
class StatusTransport(Protocol):
    """A transport that can ask for attachment statuses by id (``POST /v1/attachments/status``)."""

    async def attachment_status(self, ids: Sequence[str]) -> dict[str, AttachmentStatus]:
        """The status of each id (at most ``MAX_STATUS_IDS``) the token may see; others are absent.

        Errors as for ``Transport.push``.
        """
        ...


@runtime_checkable
class TokenRefreshable(Protocol):
    """A session that can take a fresh bearer token without reconnecting (WebSocket ``auth``)."""

    async def refresh_token(self, token: str) -> None: ...


@dataclass(frozen=True)
class LiveParams:
    """What a live channel needs to open a session (the WebSocket ``hello``)."""

    url: str
    token: str
    replica: str
    cursor: str | None
    """Where the client's synced state ends: the channel resumes from here."""


LiveTransportFactory = Callable[[LiveParams], Awaitable[LiveTransport]]
"""Connects a live transport; raises ``TransportError``/``ServerError`` if the channel is unavailable."""
