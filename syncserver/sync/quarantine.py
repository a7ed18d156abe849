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
entity states from the change log (``syncserver.sync.rebuild``).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from syncproto import errors
from syncproto.messages import Unavailable
from syncstore.records import EntityRecord

log = logging.getLogger("syncserver.integrity")

INTEGRITY_FAILURES = Counter(
    "sync_integrity_failures",
    "Stored rows that failed their integrity check and were set aside, by table.",
    ["table"],
)


def failed(table: str, tenant: str, row: str, reason: Exception) -> None:
    """Log and count one row that failed its check."""
    INTEGRITY_FAILURES.labels(table).inc()
    log.error(
        "a stored row failed its integrity check and was set aside",
        extra={"tenant": tenant, "table": table, "row": row, "reason": str(reason)},
    )


def unavailable_entity(tenant: str, row: EntityRecord, reason: Exception) -> Unavailable:
    """Log and count an entity row that failed; what the pull tells the device about it."""
    failed("entities", tenant, f"{row.collection}/{row.entity_id}", reason)
    return Unavailable(row.collection, row.entity_id, row.seq, errors.DATA_INTEGRITY)
