"""Convert a tenant's sealed rows written before ADR 0029 to framed, compressed payloads, in place.

    compactor = PayloadCompactor(store, keyring, marks=Path(".sync/compact"))
    result = await compactor.compact("acme", batch_size=500)

Each batch is a page of one sealed table in primary-key order
(``KeyStore.sealed_rows``): every legacy cell is opened, re-encoded
(``payloads.encode_entity`` for states, ``compact.frame`` for the rest) and
sealed again under the key version it had, then written back by compare-and-set
(``KeyStore.reseal``) in one transaction. A cell already framed is left alone,
and one rewritten meanwhile (a push, a re-encryption) fails the compare and is
skipped: its writer stored the new format already.

Resumable: after each batch commits, the key of its last row is written to a
small file per tenant under ``marks`` (written whole, then renamed), and the
next run starts after it. A kill between the commit and the mark only repeats
one batch, whose rows are then already framed. Without a mark (another host, a
lost file) a run starts over and skips every framed cell: slower, never wrong.

The associated data, the key versions and the change log's chain links are
unchanged: the chain hashes the unframed ops, the very bytes the legacy row held.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec

from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync import compact, payloads
from syncstore.keystore import SEALED_TABLES, KeyPart, KeyStore, Resealed, SealedRow, SealedTable

Progress = Callable[[str, int], None]
"""Called with a table name and how many of its rows a batch handled."""

ANY_VERSION = -1
"""No key version is negative: ``sealed_rows(not_version=ANY_VERSION)`` pages through every cell."""


class CompactResult(msgspec.Struct, gc=False):
    tenant: str
    rewritten: int = 0
    """Legacy cells now stored compact."""
    already: int = 0
    """Cells that were compact already (written by this release, or by an earlier run)."""
    skipped: int = 0
    """Cells rewritten by someone else between the read and the write (they are compact now)."""
    failed: int = 0
    """Cells that did not open or decode (damaged or moved): left as they are; ``syncserver verify`` reports them."""
    bytes_before: int = 0
    bytes_after: int = 0
    """Ciphertext bytes of the rewritten cells, before and after."""


class PayloadCompactor:
    def __init__(self, keys: KeyStore, keyring: Ciphers, marks: Path | None) -> None:
        self.keys = keys
        self.keyring = keyring
        self.marks = marks

    async def rows_to_scan(self, tenant: str) -> dict[str, int]:
        """Per sealed table, how many cells a run from its mark may still read (for progress totals)."""
        usage = await self.keys.key_usage(tenant)
        done = self._load_mark(tenant).get("done", [])
        return {t: 0 if t in done else sum(usage.get(t, {}).values()) for t in SEALED_TABLES}

    async def compact(
        self,
        tenant: str,
        *,
        batch_size: int = 500,
        max_batches: int | None = None,
        restart: bool = False,
        progress: Progress | None = None,
    ) -> CompactResult:
        """Rewrite the tenant's legacy cells; ``max_batches`` bounds one call (tests), ``restart`` ignores the mark."""
        result = CompactResult(tenant)
        mark = {} if restart else self._load_mark(tenant)
        batches = 0
        for table in SEALED_TABLES:
            if table in mark.get("done", []):
                continue
            after = _key(mark.get(table))
            while True:
                if max_batches is not None and batches >= max_batches:
                    return result
                rows = await self.keys.sealed_rows(
                    tenant, table, not_version=ANY_VERSION, after=after, limit=batch_size
                )
                if not rows:
                    mark.setdefault("done", []).append(table)
                    mark.pop(table, None)
                    self._save_mark(tenant, mark)
                    break
                await self._batch(tenant, table, rows, result)
                after = rows[-1].key
                mark[table] = list(after)
                self._save_mark(tenant, mark)
                batches += 1
                if progress is not None:
                    progress(table, len(rows))
        return result

    async def _batch(self, tenant: str, table: SealedTable, rows: list[SealedRow], result: CompactResult) -> None:
        cipher = await self.keyring.cipher(tenant, {r.key_version for r in rows})
        updates = []
        for row in rows:
            row_id = payloads.sealed_row_id(table, row.names)
            try:
                plaintext = cipher.open(table, row_id, row.key_version, row.blob)
                framed = compact.unframe(plaintext, cipher.dictionary(row.key_version))[0]
                if framed:
                    result.already += 1
                    continue
                blob = _reseal(cipher, table, row_id, row.key_version, plaintext)
            except (DecryptionError, msgspec.DecodeError):
                result.failed += 1
                continue
            updates.append(Resealed(row.key, row.key_version, row.blob, row.key_version, blob))
            result.bytes_before += len(row.blob)
            result.bytes_after += len(blob)
        done = await self.keys.reseal(tenant, table, updates)
        result.rewritten += done
        result.skipped += len(updates) - done

    def _path(self, tenant: str) -> Path | None:
        return None if self.marks is None else self.marks / f"{quote(tenant, safe='')}.json"

    def _load_mark(self, tenant: str) -> dict[str, Any]:
        path = self._path(tenant)
        if path is None or not path.exists():
            return {}
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def _save_mark(self, tenant: str, mark: dict[str, Any]) -> None:
        path = self._path(tenant)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(mark, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)


def _reseal(cipher: TenantCipher, table: SealedTable, row_id: str, version: int, legacy: bytes) -> bytes:
    """The legacy plaintext in this release's format, sealed for the same row under the same key version."""
    if table == "entities":
        stored = msgspec.msgpack.decode(legacy, type=payloads.StoredEntity)
        plaintext = payloads.encode_entity(stored, cipher.dictionary(version))
    else:
        plaintext = compact.frame(legacy, cipher.dictionary(version))
    return cipher.seal(table, row_id, plaintext, version=version)[1]


def _key(saved: list[KeyPart] | None) -> tuple[KeyPart, ...] | None:
    return None if saved is None else tuple(saved)
