"""Rows as the Store hands them over. Payload columns hold ciphertext: the store
never sees a key or a plaintext value, only ids and metadata.

Records are frozen msgspec Structs without GC tracking: a push creates
thousands of them, and they are several times cheaper to build than frozen
dataclasses and never rescanned by the cyclic GC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msgspec import Struct


class TenantRecord(Struct, frozen=True, gc=False):
    id: str
    created_at: int
    """Milliseconds since the epoch."""
    last_seq: int
    """The highest sequence number assigned in this tenant (0 = none)."""
    purged_seq: int
    """Tombstones up to this seq were collected; older cursors must reset."""
    chain_head: bytes | None = None
    """The hash-chain link of the change at ``last_seq`` (None before the tenant's first chained change)."""


class WrappedKey(Struct, frozen=True, gc=False):
    """A tenant data key, encrypted ("wrapped") under a master key."""

    tenant_id: str
    version: int
    wrapped: bytes
    master_key_id: str
    created_at: int
    state: str = "active"
    """``active`` (the one new writes use; the highest active version), ``retired`` or ``destroyed``."""
    dictionary: bytes | None = None
    """The version's compression dictionary, sealed under its own data key (ADR 0034); None: it has none."""


class ReplicaRecord(Struct, frozen=True, gc=False):
    replica_id: str
    owner: str
    """The ``sub`` of the user that first pushed from this replica."""
    hwm: int
    """High-water mark: the highest counter processed (applied or rejected)."""


class EntityRecord(Struct, frozen=True, gc=False):
    collection: str
    entity_id: str
    seq: int
    """The seq of the latest change applied to this entity."""
    deleted: bool
    key_version: int
    state: bytes
    """Encrypted, msgpack-encoded entity state."""
    vv: dict[str, int]
    updated_at: int
    chain: bytes | None = None
    """The chain link of the change at ``seq``, bound into the state's associated data (None: before the chain)."""
    latest_seq: int | None = None
    """Not a column: what the change log says, filled by every read of the row (in the same statement): the seq
    of the entity's latest change, None if it has none. The read path sets aside a row whose ``seq`` differs
    (a rolled-back row). Ignored by writes."""


class ChangeRecord(Struct, frozen=True, gc=False):
    seq: int
    change_id: str
    collection: str
    entity_id: str
    replica_id: str
    n: int
    hlc: tuple[int, int]
    user: str
    context: dict[str, int]
    key_version: int
    payload: bytes
    """Encrypted ops."""
    created_at: int
    chain: bytes | None = None
    """This change's link in the tenant's hash chain, bound into the payload's associated data."""


class ConflictRecord(Struct, frozen=True, gc=False):
    seq: int
    """The seq of the change whose application found the conflict."""
    idx: int
    """Position among the conflicts found by that change."""
    collection: str
    entity_id: str
    field: str | None
    kind: str
    rule: str
    status: str
    created_at: int
    key_version: int
    details: bytes
    """Encrypted: the competing values, their writers and the winner."""


class DotRecord(Struct, frozen=True, gc=False):
    """What a replica's counter was used for: the change's id, and the refusal when it was rejected (a dead letter)."""

    change_id: str
    code: str | None = None
    """The dead letter's error code when the change was rejected; ``None`` when it was applied."""
    message: str | None = None


class DeadLetterRecord(Struct, frozen=True, gc=False):
    replica_id: str
    n: int
    change_id: str
    user: str
    collection: str
    entity_id: str
    code: str
    message: str
    key_version: int
    payload: bytes
    """Encrypted: the change exactly as it was pushed."""
    created_at: int
    status: str = "open"


class MembershipRecord(Struct, frozen=True, gc=False):
    """An entity's membership of one channel, kept in plaintext so reads can filter by scope.

    Rows stay when the entity leaves the channel (``member`` false): the next
    pull of a device in that channel turns them into evictions.
    """

    collection: str
    entity_id: str
    channel: str
    seq: int
    """While a member: the entity's latest seq. Once it left: the seq of the change that moved it out."""
    joined_seq: int
    """The seq at which the entity (last) joined the channel."""
    member: bool


class CheckpointRecord(Struct, frozen=True, gc=False):
    """A signed checkpoint of the change log's hash chain: the link at ``seq``, MAC'd under a tenant key."""

    seq: int
    head: bytes
    key_version: int
    mac: bytes
    created_at: int


class VerificationRecord(Struct, frozen=True, gc=False):
    """The outcome of one ``syncserver verify`` run over a tenant."""

    started_at: int
    finished_at: int
    from_seq: int
    to_seq: int
    changes: int
    entities: int
    problems: str
    """JSON: a list of ``{"kind", "where", "detail"}``; ``[]`` when everything checked out."""


@dataclass
class PushBatch:
    """Everything one push writes, committed atomically by ``PushSession.commit``."""

    last_seq: int
    entities: list[EntityRecord] = field(default_factory=list)
    changes: list[ChangeRecord] = field(default_factory=list)
    conflicts: list[ConflictRecord] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    replicas: list[ReplicaRecord] = field(default_factory=list)
    memberships: list[MembershipRecord] = field(default_factory=list)
    """Channel rows of the changed entities, upserted by ``(collection, entity_id, channel)``."""
    chain_head: bytes | None = None
    """The chain link at ``last_seq`` after this batch (None: unchanged)."""
    checkpoints: list[CheckpointRecord] = field(default_factory=list)


class ConflictFilter(Struct, frozen=True, gc=False):
    collection: str | None = None
    entity_id: str | None = None
    field: str | None = None
    kind: str | None = None
    status: str | None = None
