"""Transports: the ``Transport`` seam, HTTP with httpx, and a mock for tests.

The WebSocket transport (``/v1/sync/ws``) will implement ``LiveTransport``.
"""

from __future__ import annotations

from syncclient.transport.base import LiveParams, LiveTransport, LiveTransportFactory, Transport
from syncclient.transport.http import HttpTransport
from syncclient.transport.mock import MockHandler, MockTransport

__all__ = [
    "HttpTransport",
    "LiveParams",
    "LiveTransport",
    "LiveTransportFactory",
    "MockHandler",
    "MockTransport",
    "Transport",
]
