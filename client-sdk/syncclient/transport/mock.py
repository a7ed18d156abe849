"""A transport that calls a function instead of a server, like ``httpx.MockTransport``.

Usage::

    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if isinstance(request, PullRequest):
            return PullResponse(cursor="c0")
        return PushResponse([Applied(c.id, c.n, seq=c.n) for c in request.changes])

    client = SyncClient(None, None, "phone-1", "local.db", transport=MockTransport(handler))

A handler may be async, and may raise ``TransportError`` (offline) or
``ServerError`` (for example a 429 with ``retry_after``) to test how an app
copes. ``MemoryServer`` is a complete in-memory server usable as the handler.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from syncproto.messages import (
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    json_encoder,
    pull_request_decoder,
    pull_response_decoder,
    push_request_decoder,
    push_response_decoder,
)

__all__ = ["MockHandler", "MockTransport"]

Request = PushRequest | PullRequest
Response = PushResponse | PullResponse
MockHandler = Callable[[Request], Response | Awaitable[Response]]
T = TypeVar("T")


class MockTransport:
    """Hands each request to ``handler``.

    Requests and responses go through JSON both ways, as on the wire, so the
    handler and the client never share objects and a value that JSON cannot
    carry fails here rather than in production.
    """

    name = "mock"

    def __init__(self, handler: MockHandler) -> None:
        self.handler = handler

    async def push(self, request: PushRequest) -> PushResponse:
        wire = push_request_decoder.decode(json_encoder.encode(request))
        return _expect(await self._call(wire), PushResponse, push_response_decoder.decode)

    async def pull(self, request: PullRequest) -> PullResponse:
        wire = pull_request_decoder.decode(json_encoder.encode(request))
        return _expect(await self._call(wire), PullResponse, pull_response_decoder.decode)

    async def aclose(self) -> None:
        return None

    async def _call(self, request: Request) -> Response:
        result = self.handler(request)
        if inspect.isawaitable(result):
            return await result
        return result


def _expect(response: Response, kind: type[T], decode: Callable[[bytes], T]) -> T:
    if not isinstance(response, kind):
        raise TypeError(f"the mock handler returned {type(response).__name__}, expected {kind.__name__}")
    return decode(json_encoder.encode(response))
