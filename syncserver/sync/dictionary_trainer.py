"""When a tenant gets its compression dictionary: trained on its own log, installed with a new key version.

After a push group commits, ``committed`` looks at the tenant's log head. Once it reaches
``SYNC_DICTIONARY_AFTER_CHANGES`` and the active key version has no dictionary, a background task
(one per tenant and process):

1. reads the latest changes (at most ``SAMPLE`` of them) and the entities they touched, opens them and
   keeps their plaintext bodies (at most ``CHANGE_BYTES`` and ``ENTITY_BYTES``), exactly what ``compact.frame``
   compresses;
2. trains a dictionary on a worker thread (``syncserver.keys.dictionary.train``: about 35 ms for 1.4 MB
   of bodies on a 2-core machine; zstd releases the GIL meanwhile);
3. rotates the tenant's key to a new version that carries it (``KeyOps.rotate``: audited, under the
   store's key lock). From then on every row this process seals is compressed against it; another
   process starts within its key cache's TTL, and reads the new rows at once (a row's key version it
   lacks reloads its keys, dictionaries included).

Rows written before keep their frames and stay readable; ``syncserver keys reencrypt`` moves them to
the new version, compressing them again. Two processes that train at once make two rotations at
worst (the second one's dictionary wins); nothing is lost either way. A training that fails (too few
or too alike bodies) is tried again when the log has doubled. Nothing here runs in a push's
transaction or delays its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from syncserver.keys import dictionary
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantCipher, TenantKeyring
from syncserver.sync import payloads
from syncstore.store import Store

log = logging.getLogger("syncserver.keys")

TRAININGS = Counter(
    "sync_dictionary_trainings",
    "Tenant compression dictionaries trained, by outcome: installed, too_few_samples, skipped (another process "
    "installed one first), failed.",
    ["outcome"],
)

SAMPLE = 1000
"""Changes (and as many entities) read to train on."""
PAGE = 100
"""Rows read per query while sampling."""
CHANGE_BYTES = 256 * 1024
ENTITY_BYTES = 1024 * 1024
"""At most this much of change bodies, and of entity bodies, is trained on. It bounds the training's memory
(about 15 MiB at most, for a moment) whatever the payloads weigh. Entity states are the larger part of the
database and gain most from more samples: on the footprint scenario a state compresses to 190 bytes with a
dictionary trained on 500 of them, 127 with 1,000."""

DONE = 2**62
"""``_next`` of a tenant this process gave a dictionary."""

Rotate = Callable[[str, bytes], Awaitable[Any]]
"""Installs a trained dictionary: a new key version that carries it (``KeyOps.rotate``)."""


class DictionaryTrainer:
    def __init__(self, store: Store, keyring: TenantKeyring, rotate: Rotate, after_changes: int) -> None:
        self.store = store
        self.keyring = keyring
        self.rotate = rotate
        self.after_changes = after_changes
        self._next: dict[str, int] = {}
        """Per tenant, the log head at which this process tries (again)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def committed(self, tenant: str, head_seq: int, cipher: TenantCipher) -> None:
        """After a commit: start training if the tenant is due (cheap; never waits)."""
        if self.after_changes <= 0 or head_seq < self._next.get(tenant, self.after_changes):
            return
        if cipher.dictionary() is not None or tenant in self._tasks:
            return
        self._next[tenant] = 2 * head_seq  # once per process unless it fails; then again when the log doubled
        task = asyncio.create_task(self._train(tenant, head_seq), name=f"dictionary-{tenant}")
        self._tasks[tenant] = task
        task.add_done_callback(lambda _: self._tasks.pop(tenant, None))

    async def close(self) -> None:
        """Stop trainings still running (before the store closes); a stopped one is tried after a restart."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _train(self, tenant: str, head_seq: int) -> None:
        try:
            samples = await self.samples(tenant, head_seq)
            trained = await asyncio.to_thread(dictionary.train, samples)
            self.keyring.forget(tenant)
            if (await self.keyring.cipher(tenant)).dictionary() is not None:
                TRAININGS.labels("skipped").inc()
                return  # another process installed one meanwhile
            await self.rotate(tenant, trained)
            self._next[tenant] = DONE  # a push group that began before the rotation must not start another
            TRAININGS.labels("installed").inc()
            log.info(
                "tenant compression dictionary installed",
                extra={"tenant": tenant, "samples": len(samples), "dictionary_bytes": len(trained)},
            )
        except dictionary.TrainingError as exc:
            TRAININGS.labels("too_few_samples").inc()
            log.info("no compression dictionary yet", extra={"tenant": tenant, "reason": str(exc)})
        except Exception:
            TRAININGS.labels("failed").inc()
            log.exception("training a compression dictionary failed", extra={"tenant": tenant})

    async def samples(self, tenant: str, head_seq: int) -> list[bytes]:
        """Plaintext bodies of the tenant's latest changes and of the entities they touched."""
        after = max(0, head_seq - SAMPLE)
        bodies: list[bytes] = []
        budget, seq = CHANGE_BYTES, after
        while budget > 0 and seq < head_seq:  # a page at a time: large payloads stop the reading early
            changes = await self.store.changes(tenant, seq, PAGE)
            if not changes:
                break
            cipher = await self.keyring.cipher(tenant, {c.key_version for c in changes})
            for change in changes:
                with contextlib.suppress(DecryptionError):  # damaged: verify reports it; it is no sample
                    bodies.append(payloads.open_ops_plaintext(cipher, change))
                    budget -= len(bodies[-1])
            seq = changes[-1].seq
        budget, seq = ENTITY_BYTES, after
        while budget > 0 and seq < head_seq:
            entities = await self.store.pull(tenant, seq, PAGE)
            if not entities:
                break
            cipher = await self.keyring.cipher(tenant, {e.key_version for e in entities})
            for entity in entities:
                with contextlib.suppress(DecryptionError):
                    bodies.append(payloads.entity_body(cipher, entity))
                    budget -= len(bodies[-1])
            seq = entities[-1].seq
        return bodies
