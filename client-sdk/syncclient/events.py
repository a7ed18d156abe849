"""What a client tells the app: remote changes, conflicts, rejected changes, attachment statuses, unavailable
entities, connection state.

Usage::

    def on_event(event: Event) -> None:
        match event:
            case RejectedChange(code=code, message=message):
                show_error(f"{code}: {message}")
            case ConflictDetected(entity=entity, field=field):
                highlight(entity, field)

    unsubscribe = client.subscribe(on_event)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from syncproto.messages import Change, SiblingView

__all__ = [
    "AttachmentStatusChanged",
    "ConflictDetected",
    "ConnectionChanged",
    "EntityUnavailable",
    "Event",
    "EventBus",
    "Handler",
    "RejectedChange",
    "RemoteChange",
]

log = logging.getLogger("syncclient")


@dataclass(frozen=True)
class RemoteChange:
    """A pull brought changes other replicas made to this entity.

    Also, with ``fields=()`` and ``deleted=True``, an entity this replica showed left it: evicted (it is out
    of the token's scope now, PROTOCOL §4.4 ``evictions``), or not brought back by the pull after a reset.
    """

    collection: str
    entity: str
    fields: tuple[str, ...]
    """The fields the pull carried (all fields on a first pull or a revival)."""
    deleted: bool


@dataclass(frozen=True)
class ConflictDetected:
    """A register field now holds concurrent values; ``value`` is the one the rule picked."""

    collection: str
    entity: str
    field: str
    value: Any
    siblings: tuple[SiblingView, ...]
    mine: bool
    """One of the competing values was written by this replica."""


@dataclass(frozen=True)
class RejectedChange:
    """The server refused one of this replica's changes; it is kept as a dead letter there."""

    id: str
    n: int
    collection: str
    entity: str
    code: str
    """A stable error code from PROTOCOL §6."""
    message: str
    change: Change


@dataclass(frozen=True)
class AttachmentStatusChanged:
    """An attachment this replica holds a reference to changed status (PROTOCOL §10.2).

    Mostly ``pending`` -> ``available`` (download it now) or ``refused`` (a dead
    letter: show it, do not wait for it). Learned from a pull or from the status
    refresh, without any change to the entity.
    """

    id: str
    status: Literal["pending", "available", "refused"]
    previous: Literal["pending", "available", "refused"] | None = None


@dataclass(frozen=True)
class EntityUnavailable:
    """A pull went past this entity: its stored state failed the server's integrity check (PROTOCOL §4.4).

    What this replica holds of it stays; the client reads it again after later
    sync rounds (``SyncClient.unavailable()`` lists those still waiting), and a
    ``RemoteChange`` follows when it is back (``deleted=True`` if it is gone).
    """

    collection: str
    entity: str
    code: str
    """``data_integrity``."""


@dataclass(frozen=True)
class ConnectionChanged:
    """The background loop's link to the server."""

    state: Literal["connecting", "online", "offline", "stopped"]
    transport: str | None = None
    error: str | None = None
    retry_in: float | None = None
    """Seconds until the next attempt (``offline`` only)."""


Event = (
    RemoteChange | ConflictDetected | RejectedChange | AttachmentStatusChanged | EntityUnavailable | ConnectionChanged
)
Handler = Callable[[Event], object]


class EventBus:
    """Synchronous fan-out to subscribers. A failing handler is logged and never stops a sync."""

    def __init__(self) -> None:
        self._handlers: list[tuple[Handler, tuple[type, ...]]] = []

    def subscribe(self, handler: Handler, *types: type) -> Callable[[], None]:
        """Call ``handler`` for every event, or only for events of ``types``. Returns an unsubscribe function."""
        entry = (handler, types)
        self._handlers.append(entry)

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for handler, types in list(self._handlers):
            if types and not isinstance(event, types):
                continue
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed on %r", handler, event)
