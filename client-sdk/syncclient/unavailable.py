"""Entities a pull named ``unavailable`` (PROTOCOL §4.4): kept, remembered, read back later.

Their stored state failed the server's integrity check (damage or tampering in its
database), so the pull went past them. The local store keeps what this replica
holds and commits the set with the page that named them (``LocalStore.apply_page``).
After later sync rounds, ``UnavailableEntities`` reads each one again with
``GET /v1/entities/{collection}/{entity}``:

* 200: the whole state replaces ours (as a pull from ``cursor: null`` sends it), the
  entity leaves the set, a ``RemoteChange`` tells the app;
* 404: it is gone or out of the token's scope: dropped locally, it leaves the set;
* anything else (500 ``data_integrity`` until an operator runs ``syncserver repair``,
  the network): it stays for a later round.

Usage (``SyncClient`` wires it into every sync round; an app calls ``client.unavailable()``)::

    entities = UnavailableEntities(store, http_transport, emit, observe_hlc)
    await entities.after_round()   # after each round: reads back what is due

Pitfalls:

* Not in the round that named an entity: the server has just said it cannot read it.
  Then at most ``batch`` reads per round, one at a time, and while some stay, the next
  reads wait ``Backoff`` delays (30-60 s, doubling to 5-10 min) however often rounds run.
* A transport without ``entity()`` (a ``MockTransport``) never reads back: the
  entities stay listed until a pull after a reset ends without naming them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from syncclient.backoff import Backoff
from syncclient.errors import ServerError, SyncError
from syncclient.events import Event
from syncclient.localstore import LocalStore
from syncproto.messages import EntityView, Unavailable

__all__ = ["EntityReader", "UnavailableEntities"]

log = logging.getLogger("syncclient")

BATCH = 50
"""Reads per round at most."""


@runtime_checkable
class EntityReader(Protocol):
    """A transport that reads one entity's whole state (``GET /v1/entities/{collection}/{entity}``)."""

    async def entity(self, collection: str, entity: str) -> EntityView | None:
        """The entity's merged view, or ``None`` on 404 (absent, or out of the token's scope).

        Errors as for ``Transport.push``: ``ServerError`` (500 ``data_integrity`` while the
        server cannot read it) or ``TransportError``.
        """
        ...


class UnavailableEntities:
    """Reads back the unavailable entities of one client (see the module docs)."""

    def __init__(
        self,
        store: LocalStore,
        reader: object,
        emit: Callable[[Event], None],
        observe_hlc: Callable[[tuple[int, int]], None],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.reader = reader if isinstance(reader, EntityReader) else None
        self.emit = emit
        self.observe_hlc = observe_hlc
        self._backoff = backoff or Backoff(base=60.0, cap=600.0)
        self._clock = clock
        self._batch = batch
        self._due: float | None = None
        """While reads fail: when the next ones may go out."""
        self._known: set[tuple[str, str]] = set()
        """The set as the last round left it: entities named since then wait for the next round."""

    def list(self) -> list[Unavailable]:
        return self.store.unavailable()

    async def after_round(self) -> int:
        """Read back the unavailable entities if their time has come; how many left the set.

        A read that fails never raises: the entity waits for a later round.
        """
        items = self.store.unavailable()
        known, self._known = self._known, {(u.collection, u.entity) for u in items}
        if not items:
            self._due = None
            self._backoff.reset()
            return 0
        # Not in the round that named an entity (or the first after a restart): the server has just said
        # it cannot read it.
        ready = [u for u in items if (u.collection, u.entity) in known]
        if not ready or self.reader is None or (self._due is not None and self._clock() < self._due):
            return 0
        resolved = waiting = 0
        for item in ready[: self._batch]:
            try:
                view = await self.reader.entity(item.collection, item.entity)
            except SyncError as exc:
                waiting += 1
                if isinstance(exc, ServerError) and exc.code != "data_integrity":
                    log.warning("reading unavailable %s/%s back failed: %s", item.collection, item.entity, exc)
                continue
            if view is not None:
                for f in view.fields.values():
                    for s in f.siblings or ():
                        self.observe_hlc(s.hlc)
            events = self.store.resolve_unavailable(item, view)
            if events:
                resolved += 1
                self._known.discard((item.collection, item.entity))
            for event in events:
                self.emit(event)
        if waiting:
            self._due = self._clock() + self._backoff.next()
        else:  # all read back (the rest of a long list goes out next round)
            self._due = None
            self._backoff.reset()
        return resolved
