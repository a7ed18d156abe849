"""Checks every backend applies to a ``PushBatch`` before writing it.

They are cheap and catch the caller bugs that would silently break the
gap-free, in-order seq promise (see ``store.py``); merge logic stays above the
store. Every backend raises ``ValueError`` for an invalid batch, and also when
a change, conflict or dead letter collides with a stored row.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from syncstore.records import EntityRecord, MembershipRecord, PushBatch, ReplicaRecord


def check_batch(session_last_seq: int, batch: PushBatch) -> None:
    """Raise ``ValueError`` unless ``batch`` can follow ``session_last_seq``.

    * ``last_seq`` never goes backwards;
    * each change has a new, distinct seq in ``(session_last_seq, batch.last_seq]``;
    * no entity claims a seq above ``batch.last_seq`` (a reader would skip it);
    * a dot ``(replica_id, n)`` appears at most once among the changes and once
      among the dead letters; conflict keys ``(seq, idx)`` are distinct.
    """
    if batch.last_seq < session_last_seq:
        raise ValueError(f"batch.last_seq {batch.last_seq} is below the session's last_seq {session_last_seq}")
    seqs = [change.seq for change in batch.changes]
    for seq in seqs:
        if not session_last_seq < seq <= batch.last_seq:
            raise ValueError(f"change seq {seq} is outside ({session_last_seq}, {batch.last_seq}]")
    _require_distinct("change seq", seqs)
    _require_distinct("change dot", [(change.replica_id, change.n) for change in batch.changes])
    _require_distinct("dead letter dot", [(letter.replica_id, letter.n) for letter in batch.dead_letters])
    _require_distinct("conflict key", [(conflict.seq, conflict.idx) for conflict in batch.conflicts])
    for entity in batch.entities:
        if entity.seq > batch.last_seq:
            raise ValueError(f"entity {entity.collection}/{entity.entity_id} has seq {entity.seq} > {batch.last_seq}")
    for row in batch.memberships:
        if not row.joined_seq <= row.seq <= batch.last_seq:
            raise ValueError(f"channel row {row.channel} of {row.collection}/{row.entity_id} has bad seqs")
    _require_distinct("channel row", [(row.collection, row.entity_id, row.channel) for row in batch.memberships])
    for checkpoint in batch.checkpoints:
        if not session_last_seq < checkpoint.seq <= batch.last_seq:
            raise ValueError(f"checkpoint seq {checkpoint.seq} is outside ({session_last_seq}, {batch.last_seq}]")
    _require_distinct("checkpoint seq", [checkpoint.seq for checkpoint in batch.checkpoints])


def latest_entities(batch: PushBatch) -> list[EntityRecord]:
    """One row per entity key, the last one in the batch winning (an upsert's semantics)."""
    return list({(entity.collection, entity.entity_id): entity for entity in batch.entities}.values())


def memberships_by_entity(batch: PushBatch) -> dict[tuple[str, str], list[MembershipRecord]]:
    """The batch's channel rows grouped by entity key."""
    grouped: dict[tuple[str, str], list[MembershipRecord]] = {}
    for row in batch.memberships:
        grouped.setdefault((row.collection, row.entity_id), []).append(row)
    return grouped


def latest_replicas(batch: PushBatch) -> list[ReplicaRecord]:
    """One row per replica id, the last one in the batch winning."""
    return list({replica.replica_id: replica for replica in batch.replicas}.values())


def _require_distinct(what: str, keys: Sequence[Hashable]) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate {what} in batch")
