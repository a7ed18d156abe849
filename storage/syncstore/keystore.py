"""The ``KeyStore`` interface: the storage side of key lifecycle and data-subject requests.

The server does the cryptography (``syncserver.keys.operations``); a ``KeyStore`` only
moves wrapped keys and ciphertext cells, never a plaintext key or value:

* data-key versions: add one (retiring the active one), rewrap one under a new
  master key, destroy some;
* ciphertext cells of the four sealed tables, read in primary-key order and
  written back compare-and-set, for resumable re-encryption;
* the change log's checkpoints (``chain_checkpoints``), which are not sealed but
  MAC'd under the key version that was active when they were written: they count
  in ``key_usage`` (so a version a checkpoint still needs is never destroyed) and
  are re-MAC'd compare-and-set (``checkpoint_macs``, ``remac_checkpoints``);
* erasing every row of a tenant; reading every change of one user.

``SqlStore`` and ``MemoryStore`` implement it through their parts ``SqlKeys``
(``sql_keys.py``) and ``MemoryKeys`` (``memory_keys.py``); ``FaultyStore`` forwards it.

Usage::

    rows = await store.sealed_rows("acme", "entities", not_version=2, after=None, limit=500)
    ...  # open each under its old version, seal under version 2
    done = await store.reseal("acme", "entities", resealed)
    next_page = await store.sealed_rows("acme", "entities", not_version=2, after=rows[-1].key, limit=500)

Pitfalls:

* ``reseal`` is compare-and-set on ``(key_version, blob)``: a row rewritten by
  a push in the meantime is skipped, never overwritten with older content.
  Each call is one transaction, so a crash loses at most that batch's work,
  never a row.
* ``destroy_tenant_keys`` overwrites the wrapped key. On SQLite it also zeroes
  the freed bytes (``secure_delete``) and truncates the WAL; on PostgreSQL the
  old tuple version lingers until vacuumed, and backups keep it: rotating the
  master key is what makes those copies useless (see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol, runtime_checkable

from msgspec import Struct

from syncstore.records import ChangeRecord, CheckpointRecord, WrappedKey

SealedTable = Literal["entities", "changes", "conflicts", "dead_letters"]
SEALED_TABLES: Final[tuple[SealedTable, ...]] = ("entities", "changes", "conflicts", "dead_letters")

SEALED_COLUMN: Final[dict[SealedTable, str]] = {
    "entities": "state",
    "changes": "payload",
    "conflicts": "details",
    "dead_letters": "payload",
}
"""The ciphertext column of each sealed table."""

NAME_COLUMNS: Final[dict[SealedTable, tuple[str, ...]]] = {
    "entities": ("collection", "entity_id", "seq", "chain"),
    "changes": ("collection", "entity_id", "seq", "chain"),
    "conflicts": ("collection", "entity_id", "seq", "idx"),
    "dead_letters": ("replica_id", "n", "change_id"),
}
"""The plaintext columns the server binds into each table's associated data (see ``syncserver.sync.payloads``)."""

CHECKPOINTS: Final = "chain_checkpoints"
"""``key_usage``'s entry for the chain's checkpoints: MAC'd, not sealed, under a key version."""

KeyPart = str | int


class SealedRow(Struct, frozen=True, gc=False):
    """One ciphertext cell and the plaintext columns that name it."""

    table: str
    key: tuple[KeyPart, ...]
    """The row's primary key after ``tenant_id``, in column order: pass it back as ``after``."""
    names: dict[str, KeyPart | bytes | None]
    """The ``NAME_COLUMNS`` of the table."""
    key_version: int
    blob: bytes


class Resealed(Struct, frozen=True, gc=False):
    """A cell to rewrite: only if it still holds ``old_version`` and ``old_blob``."""

    key: tuple[KeyPart, ...]
    old_version: int
    old_blob: bytes
    key_version: int
    blob: bytes


class Remac(Struct, frozen=True, gc=False):
    """A checkpoint's MAC to rewrite: only if it still holds ``old_version`` and ``old_mac``."""

    seq: int
    old_version: int
    old_mac: bytes
    key_version: int
    mac: bytes


@runtime_checkable
class KeyStore(Protocol):
    """Key lifecycle, erasure and export reads. See the module docs."""

    async def add_tenant_key(self, key: WrappedKey) -> None:
        """Store ``key`` as ``active`` and mark the tenant's other active keys ``retired``, atomically.

        Takes the tenant lock. Raises ``TenantNotFound``, and ``ValueError`` if the version exists.
        """
        ...

    async def rewrap_tenant_key(self, key: WrappedKey, wrapped: bytes, master_key_id: str) -> bool:
        """Replace ``key``'s wrapped bytes and master key id, if it still holds ``key.wrapped``."""
        ...

    async def destroy_tenant_keys(self, tenant_id: str, versions: Sequence[int] | None = None) -> int:
        """Overwrite the wrapped bytes of these versions (all if ``None``) and mark them ``destroyed``.

        Returns how many keys were destroyed now (already destroyed ones do not count).
        """
        ...

    async def key_usage(self, tenant_id: str) -> dict[str, dict[int, int]]:
        """For each sealed table, how many rows each key version sealed; and under ``CHECKPOINTS``, how many
        checkpoints each key version MAC'd."""
        ...

    async def sealed_rows(
        self, tenant_id: str, table: SealedTable, *, not_version: int, after: tuple[KeyPart, ...] | None, limit: int
    ) -> list[SealedRow]:
        """Cells of ``table`` whose ``key_version != not_version``, in primary-key order, strictly after ``after``."""
        ...

    async def reseal(self, tenant_id: str, table: SealedTable, rows: Sequence[Resealed]) -> int:
        """Compare-and-set each cell in one transaction; returns how many were rewritten."""
        ...

    async def checkpoint_macs(
        self, tenant_id: str, *, not_version: int, after: int | None, limit: int
    ) -> list[CheckpointRecord]:
        """Checkpoints whose ``key_version != not_version``, in seq order, with ``seq > after``."""
        ...

    async def remac_checkpoints(self, tenant_id: str, rows: Sequence[Remac]) -> int:
        """Compare-and-set each checkpoint's ``(key_version, mac)`` in one transaction; returns how many were
        rewritten (a checkpoint changed meanwhile is skipped)."""
        ...

    async def erase_tenant(self, tenant_id: str) -> dict[str, int]:
        """Delete every row of the tenant, in every table (the audit log excepted), in one transaction.

        Returns the rows deleted per table; empty if the tenant does not exist.
        Destroy the keys first (``destroy_tenant_keys``): then a crash in between
        already leaves the data unreadable, and running it again finishes.
        """
        ...

    async def changes_by_user(self, tenant_id: str, user: str, after_seq: int, limit: int) -> list[ChangeRecord]:
        """Changes pushed by ``user`` (the token's ``sub``) after ``after_seq``, in seq order."""
        ...
