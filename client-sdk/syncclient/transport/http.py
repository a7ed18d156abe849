"""Protocol v1 over HTTP with httpx: ``POST /v1/sync/push`` and ``/v1/sync/pull`` (PROTOCOL §3-4), and
``POST /v1/attachments/status`` (§10.2)."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from syncclient.errors import ServerError, TransportError
from syncproto.attachments import AttachmentStatus, AttachmentStatusRequest, attachment_status_response_decoder
from syncproto.messages import (
    ConflictPage,
    EntityView,
    ErrorResponse,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    json_encoder,
    pull_response_decoder,
    push_response_decoder,
)

__all__ = ["HttpTransport"]

T = TypeVar("T")
_error_decoder = msgspec.json.Decoder(ErrorResponse)
_conflicts_decoder = msgspec.json.Decoder(ConflictPage)
_entity_decoder = msgspec.json.Decoder(EntityView)


class HttpTransport:
    """Talks to ``url`` with a bearer token.

    ``token`` may be a callable, so an app can refresh expiring tokens.
    ``client`` lets tests pass an ``httpx.AsyncClient`` wired to an in-process
    app (for example with ``httpx.ASGITransport``); a passed client is not closed.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def push(self, request: PushRequest) -> PushResponse:
        return await self._send("POST", "/v1/sync/push", push_response_decoder.decode, json_encoder.encode(request))

    async def pull(self, request: PullRequest) -> PullResponse:
        return await self._send("POST", "/v1/sync/pull", pull_response_decoder.decode, json_encoder.encode(request))

    async def conflicts(self, **filters: str | int | None) -> ConflictPage:
        """One page of ``GET /v1/conflicts`` (filters: collection, entity, field, kind, status, after, limit)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return await self._send("GET", "/v1/conflicts", _conflicts_decoder.decode, params=params)

    async def entity(self, collection: str, entity: str) -> EntityView | None:
        """The server's merged view of one entity, or None if it does not exist."""
        try:
            return await self._send("GET", f"/v1/entities/{collection}/{entity}", _entity_decoder.decode)
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    async def attachment_status(self, ids: Sequence[str]) -> dict[str, AttachmentStatus]:
        """``POST /v1/attachments/status``: the status of each id (at most 500) this token may see."""
        body = json_encoder.encode(AttachmentStatusRequest(list(ids)))
        answer = await self._send("POST", "/v1/attachments/status", attachment_status_response_decoder.decode, body)
        return answer.attachments

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _headers(self) -> dict[str, str]:
        token = self.token() if callable(self.token) else self.token
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def _send(
        self,
        method: str,
        path: str,
        decode: Callable[[bytes], T],
        body: bytes | None = None,
        params: dict[str, Any] | None = None,
    ) -> T:
        try:
            response = await self._client.request(
                method, self.url + path, content=body, params=params, headers=self._headers()
            )
        except httpx.TransportError as exc:  # connect, read, write, timeouts, broken protocol
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _server_error(response)
        try:
            return decode(response.content)
        except msgspec.DecodeError as exc:
            # A proxy or captive portal answering 200 with HTML: the server was not reached.
            raise TransportError(f"{method} {path}: the response is not protocol JSON: {exc}") from exc


def _server_error(response: httpx.Response) -> ServerError:
    try:
        body = _error_decoder.decode(response.content).error
        code, message = body.code, body.message
    except msgspec.DecodeError:
        code, message = f"http_{response.status_code}", response.text[:200]
    return ServerError(response.status_code, code, message, retry_after(response.headers.get("retry-after")))


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
