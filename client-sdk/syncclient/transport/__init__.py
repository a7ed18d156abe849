"""Transports: the ``Transport`` seam, HTTP with httpx, the WebSocket channel, and a mock for tests."""

from __future__ import annotations

from syncclient.transport.http import HttpTransport
from syncclient.transport.interface import (
    LiveParams,
    LiveTransport,
    LiveTransportFactory,
    StatusTransport,
    TokenRefreshable,
    Transport,
)
from syncclient.transport.mock import MockHandler, MockTransport
from syncclient.transport.ws import WebSocketTransport, connect_websocket

__all__ = [
    "HttpTransport",
    "LiveParams",
    "LiveTransport",
    "LiveTransportFactory",
    "MockHandler",
    "MockTransport",
    "StatusTransport",
    "TokenRefreshable",
    "Transport",
    "WebSocketTransport",
    "connect_websocket",
]
