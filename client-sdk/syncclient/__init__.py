"""syncclient: the Python SDK of the sync server.

A ``SyncClient`` keeps a durable offline outbox, shows local writes at once
(optimistic reads), and syncs with the server in one round trip (``sync()``) or
in the background (``start()``). Imports no project package but ``syncproto``.
"""

from __future__ import annotations

from syncclient.attachments import Attachments, UploadState
from syncclient.backoff import Backoff
from syncclient.client import MAX_CHANGE_BYTES, SyncClient
from syncclient.collection import CollectionHandle
from syncclient.errors import ProtocolViolation, ServerError, SyncError, TransportError
from syncclient.events import (
    AttachmentStatusChanged,
    ConflictDetected,
    ConnectionChanged,
    EntityUnavailable,
    Event,
    EventBus,
    RejectedChange,
    RemoteChange,
)
from syncclient.memoryserver import MemoryServer
from syncclient.roundtrip import SyncStats
from syncclient.schema import load_schema, parse_schema
from syncclient.transport import (
    HttpTransport,
    LiveParams,
    LiveTransport,
    LiveTransportFactory,
    MockTransport,
    StatusTransport,
    TokenRefreshable,
    Transport,
    WebSocketTransport,
    connect_websocket,
)

__all__ = [
    "MAX_CHANGE_BYTES",
    "AttachmentStatusChanged",
    "Attachments",
    "Backoff",
    "CollectionHandle",
    "ConflictDetected",
    "ConnectionChanged",
    "EntityUnavailable",
    "Event",
    "EventBus",
    "HttpTransport",
    "LiveParams",
    "LiveTransport",
    "LiveTransportFactory",
    "MemoryServer",
    "MockTransport",
    "ProtocolViolation",
    "RejectedChange",
    "RemoteChange",
    "ServerError",
    "StatusTransport",
    "SyncClient",
    "SyncError",
    "SyncStats",
    "TokenRefreshable",
    "Transport",
    "TransportError",
    "UploadState",
    "WebSocketTransport",
    "connect_websocket",
    "load_schema",
    "parse_schema",
]
