"""Errors a sync round trip can raise. ``retryable`` tells the background loop what to do."""

from __future__ import annotations

__all__ = ["ProtocolViolation", "ServerError", "SyncError", "TransportError"]


class SyncError(Exception):
    """Base class of the SDK's errors."""


class TransportError(SyncError):
    """The server could not be reached or the connection broke: nothing is known, retry later.

    Replays are safe (PROTOCOL §4.2), so a push whose answer was lost is simply sent again.
    """

    retryable = True


class ServerError(SyncError):
    """The server answered with an ``ErrorResponse`` (PROTOCOL §4.6)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        """Seconds to wait, from a 429 or 503 ``Retry-After`` header."""

    @property
    def retryable(self) -> bool:
        """Rate limits and server-side failures pass; a 4xx needs a fix (token, client version)."""
        return self.status == 429 or self.status >= 500


class ProtocolViolation(SyncError):
    """The server's answer breaks the protocol (for example, results that do not match the push)."""

    retryable = False
