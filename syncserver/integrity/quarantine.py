"""Containment: a stored row that fails its integrity check is set aside, not a failure of the tenant.

A row whose ciphertext does not open (damaged, tampered with, moved from another
row or tenant, or sealed under a key version the tenant no longer holds) makes
only that row unavailable:

* a pull sends every other entity and names the bad one in ``unavailable``
  (PROTOCOL.md §4.4); its cursor still moves past it, and the device reads the
  entity again later with ``GET /v1/entities/...``;
* a push that touches the entity rejects only that change (``data_integrity``,
  a dead letter an admin replays after ``syncserver repair``);
* admin lists (conflicts, history, export) skip the row and say so.

Every such row is logged at ERROR and counted in
``sync_integrity_failures_total{table=...}``: operators must hear of it, the
client learns nothing more than the stable code. ``syncserver repair`` rebuilds
entity states from the change log (``syncserver.integrity.rebuild``).
"""

from __future__ import annotations

import logging
import time
from collections import deque

from msgspec import Struct
from prometheus_client import Counter

from syncproto import errors
from syncproto.messages import Unavailable
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantCipher
from syncserver.sync import payloads
from syncserver.sync.payloads import StoredEntity
from syncstore.records import EntityRecord

log = logging.getLogger("syncserver.integrity")

INTEGRITY_FAILURES = Counter(
    "sync_integrity_failures",
    "Stored rows that failed their integrity check and were set aside, by table.",
    ["table"],
)


class NotCurrent(DecryptionError):
    """An entity row that opens but is not what the change log says is current (a rollback or an injected row)."""


def open_current(cipher: TenantCipher, row: EntityRecord, latest: int | None = None) -> StoredEntity:
    """The row's state, checked against the seq of its latest change in the log: ``latest`` if given, else what
    the read of the row brought along (``row.latest_seq``).

    Raises ``DecryptionError`` if the ciphertext is not this row's (its associated data binds the row's seq and
    the chain link of the change that produced it), and ``NotCurrent`` if the row is older than the log (a
    restore of the entities table, a row written back with its old seq) or has no change in the log at all.
    """
    stored = payloads.open_entity(cipher, row)
    check_current(row, latest)
    return stored


def check_current(row: EntityRecord, latest: int | None = None) -> None:
    """``NotCurrent`` unless the row's seq is its latest change's in the log (``latest``, else ``row.latest_seq``)."""
    if latest is None:
        latest = row.latest_seq
    if latest is None:
        raise NotCurrent("the change log holds no change of this entity")
    if latest != row.seq:
        raise NotCurrent(f"the row is at seq {row.seq}, the change log's latest change of it at {latest}")


class Failure(Struct, frozen=True, gc=False):
    """One row set aside by this process, for the admin page."""

    at: int
    """Milliseconds since the epoch."""
    table: str
    row: str
    reason: str


RECENT = 100
_recent: dict[str, deque[Failure]] = {}


def recent(tenant: str) -> list[Failure]:
    """The rows of ``tenant`` this process set aside lately, newest first (at most ``RECENT``; not kept over
    a restart: ``syncserver verify`` checks everything)."""
    return list(reversed(_recent.get(tenant, ())))


def _remember(tenant: str, table: str, row: str, reason: str) -> None:
    if len(_recent) > 10_000 and tenant not in _recent:
        _recent.clear()  # bounded: a process serving many damaged tenants keeps the latest ones
    _recent.setdefault(tenant, deque(maxlen=RECENT)).append(Failure(int(time.time() * 1000), table, row, reason))


def failed(table: str, tenant: str, row: str, reason: Exception) -> None:
    """Log and count one row that failed its check."""
    INTEGRITY_FAILURES.labels(table).inc()
    _remember(tenant, table, row, str(reason))
    log.error(
        "a stored row failed its integrity check and was set aside",
        extra={"tenant": tenant, "table": table, "row": row, "reason": str(reason)},
    )


def foreign_channel_row(tenant: str, row: EntityRecord) -> None:
    """Log and count a channel row that put an entity in a scope its own state does not (left out of the read)."""
    INTEGRITY_FAILURES.labels("entity_channels").inc()
    _remember(tenant, "entity_channels", f"{row.collection}/{row.entity_id}", "a channel row its state does not make")
    log.error(
        "a channel row does not match its entity's state; the entity was left out",
        extra={"tenant": tenant, "table": "entity_channels", "row": f"{row.collection}/{row.entity_id}"},
    )


def unavailable_entity(tenant: str, row: EntityRecord, reason: Exception) -> Unavailable:
    """Log and count an entity row that failed; what the pull tells the device about it."""
    failed("entities", tenant, f"{row.collection}/{row.entity_id}", reason)
    return Unavailable(row.collection, row.entity_id, row.seq, errors.DATA_INTEGRITY)
