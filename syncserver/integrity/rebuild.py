"""Repair: rebuild entity states from the change log, which is the truth.

Every entity state is derived: replaying the entity's applied changes in seq
order through the same merge as a push (``apply_change``, with the stamp, user
and context the log recorded) gives the state back, with its per-field seqs.
``EntityRepair.repair`` checks every entity row of a tenant and rewrites those
that fail their integrity check (see ``quarantine``); the rewrite happens under
the tenant's write lock and keeps the entity's seq (the seq of its latest
change), so no device sees a new change: a device that was told the entity is
``unavailable`` reads it again (PROTOCOL.md §4.4) and gets the rebuilt state.

**Where the replay starts.** ``purge_tombstones`` deletes tombstones (entity rows whose state is deleted)
and keeps the log; the entity's next change finds no row and starts it from nothing, so that change, not
the entity's first, is where its current life starts: replaying the earlier changes would bring back what
was deleted and purged. The log alone does not tell whether a tombstone was purged before the entity's
next change. The tenant's ``purged_seq`` is only a watermark, the highest seq of any tombstone purged, and
other entities raise it: entity X deleted at seq 10 and Y at 11, then either both purged and X written
again at 12 (a new life), or X written again at 12 (reviving its old fields) and then only Y purged;
both leave the same log and ``purged_seq`` 11. (What the log does rule out: a tombstone at seq ``t`` with
``t > purged_seq`` was never purged, since a purge raises the watermark to at least ``t``; and a tombstone
that received a later change was not purged after that change, since it was no longer that tombstone.)
So ``purge_tombstones`` records, per entity, the seq of the latest tombstone it deleted
(``IntegrityStore.purged``, table ``entity_purges``), and the replay takes only the changes after it.
Purges before migration ``0013_entity_purges`` were not recorded: the migration kept each tenant's
``purged_seq`` then as a watermark ``U``. A replay in which the entity is a tombstone at a seq ``≤ U`` and
then changes again cannot tell the two cases apart, and is refused (``RebuildError``) rather than guessed.

Channel rows (an index for pulls) that differ from what an entity's state makes
are rewritten from the state (``ChannelStore.set_entity_channels``). Limits: the
replay uses today's collection rules, which are those the pushes were merged
with unless the schema's rules changed since; an entity whose own change rows
fail to open cannot be rebuilt and is reported.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from syncproto.merge import EntityState, apply_change, is_deleted
from syncproto.messages import Change
from syncproto.schema import Schema
from syncserver.auth.scopes import ChannelError, entity_channels
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers
from syncserver.sync import payloads
from syncstore.channels import ChannelStore
from syncstore.integrity import IntegrityStore
from syncstore.records import EntityRecord, PushBatch
from syncstore.store import Store

PAGE = 500

EntityKey = tuple[str, str]


class RebuildError(Exception):
    """The entity's change log cannot be replayed (a change row fails its own check, or there is none)."""


@dataclass
class RepairReport:
    checked: int = 0
    repaired: list[EntityKey] = field(default_factory=list)
    failed: list[tuple[EntityKey, str]] = field(default_factory=list)
    """Entities that fail their check and could not be rebuilt, with the reason."""
    channels: list[EntityKey] = field(default_factory=list)
    """Entities whose channel rows differed from what their state makes them (rewritten from the state)."""


class EntityRepair:
    def __init__(self, store: Store, ciphers: Ciphers, schema: Schema, clock: Callable[[], int] | None = None) -> None:
        self.store = store
        if not isinstance(store, IntegrityStore):
            raise TypeError(f"{type(store).__name__} must implement IntegrityStore")
        self.integrity: IntegrityStore = store
        if not isinstance(store, ChannelStore):
            raise TypeError(f"{type(store).__name__} must implement ChannelStore")
        self.access: ChannelStore = store
        self.ciphers = ciphers
        self.schema = schema
        self.clock = clock or (lambda: int(time.time() * 1000))

    async def rebuild(
        self, tenant: str, collection: str, entity_id: str
    ) -> tuple[int, bytes | None, payloads.StoredEntity]:
        """The entity's seq, the chain link of its latest change, and its state, replayed from the changes of
        its current life (after its latest purged tombstone: see the module docs)."""
        rules = self.schema.get(collection)
        state = EntityState()
        field_seq: dict[str, int] = {}
        purged, unrecorded = await self.integrity.purged(tenant, collection, entity_id)
        seq = 0
        after = purged
        link: bytes | None = None
        tombstone = 0  # the seq at which the replayed state is deleted (0: it is not)
        while True:
            rows = await self.store.changes(tenant, after, PAGE, collection=collection, entity_id=entity_id)
            if not rows:
                break
            cipher = await self.ciphers.cipher(tenant, {r.key_version for r in rows})
            for r in rows:
                try:
                    ops = payloads.open_ops(cipher, r)
                except DecryptionError as exc:
                    quarantine.failed("changes", tenant, f"{collection}/{entity_id}@{r.seq}", exc)
                    raise RebuildError(f"change {r.seq} fails its integrity check") from exc
                if tombstone and tombstone <= unrecorded:
                    raise RebuildError(
                        f"the entity was deleted at seq {tombstone} and changed again at seq {r.seq}; purges up to "
                        f"seq {unrecorded} were not recorded, so whether it was purged in between is not known"
                    )
                change = Change(r.change_id, r.n, r.collection, r.entity_id, r.hlc, r.context, ops)
                outcome = apply_change(state, change, r.replica_id, rules, hlc=r.hlc, user=r.user, bounds_checked=True)
                state = outcome.state
                for name in outcome.changed:
                    field_seq[name] = r.seq
                seq, link = r.seq, r.chain
                tombstone = r.seq if is_deleted(state, rules.on_delete) else 0
            after = rows[-1].seq
        if seq == 0:
            raise RebuildError("the change log holds no change of this entity")
        return seq, link, payloads.StoredEntity(state, field_seq)

    async def repair(self, tenant: str, only: EntityKey | None = None) -> RepairReport:
        """Check the tenant's entity rows (or one); rebuild and rewrite each that fails its check, then rewrite
        channel rows that differ from what the entities' states make (an injected or stale row)."""
        report = RepairReport()
        async for rows in self._pages(tenant, only):
            cipher = await self.ciphers.cipher(tenant, {r.key_version for r in rows})
            for row in rows:
                report.checked += 1
                key = (row.collection, row.entity_id)
                try:
                    quarantine.open_current(cipher, row)
                    continue
                except DecryptionError as exc:
                    quarantine.failed("entities", tenant, f"{key[0]}/{key[1]}", exc)
                try:
                    await self._rewrite(tenant, key)
                except RebuildError as exc:
                    report.failed.append((key, str(exc)))
                    continue
                report.repaired.append(key)
            await self._channels(tenant, rows, report)
        return report

    async def _pages(self, tenant: str, only: EntityKey | None) -> AsyncIterator[list[EntityRecord]]:
        if only is not None:
            row = await self.store.get_entity(tenant, *only)
            if row is not None:
                yield [row]
            return
        after = 0
        while rows := await self.store.pull(tenant, after, PAGE):
            yield rows  # a rewrite keeps the entity's seq: paging by seq is not disturbed
            after = rows[-1].seq

    async def _channels(self, tenant: str, rows: list[EntityRecord], report: RepairReport) -> None:
        """Rewrite the channel rows of entities whose rows differ from what their (now sound) state makes."""
        members = await self.integrity.member_channels(tenant, [(r.collection, r.entity_id) for r in rows])
        fresh = {(r.collection, r.entity_id): r for r in rows}
        rewritten = {key for key in report.repaired if key in fresh}
        if rewritten:  # read again: rebuilt rows have a new state
            for key in rewritten:
                row = await self.store.get_entity(tenant, *key)
                if row is not None:
                    fresh[key] = row
        cipher = await self.ciphers.cipher(tenant, {r.key_version for r in fresh.values()})
        for key, row in fresh.items():
            try:
                stored = quarantine.open_current(cipher, row)
            except DecryptionError:
                continue  # could not be rebuilt: reported already
            try:
                wanted = entity_channels(self.schema.get(row.collection), stored.state)
            except ChannelError:
                wanted = frozenset()
            differs = set(wanted) != members.get(key, set())
            if differs and await self.access.set_entity_channels(tenant, key[0], key[1], row.seq, sorted(wanted)):
                report.channels.append(key)

    async def _rewrite(self, tenant: str, key: EntityKey) -> None:
        async with self.store.push_session(tenant) as session:
            # Under the lock: no push can change the entity between the replay and the write.
            seq, link, stored = await self.rebuild(tenant, *key)
            cipher = await self.ciphers.cipher(tenant)
            version, blob = payloads.seal_entity(cipher, key[0], key[1], stored, seq, link)
            record = EntityRecord(
                collection=key[0],
                entity_id=key[1],
                seq=seq,
                deleted=is_deleted(stored.state, self.schema.get(key[0]).on_delete),
                key_version=version,
                state=blob,
                vv=dict(stored.state.vv),
                updated_at=self.clock(),
                chain=link,
            )
            await session.commit(PushBatch(last_seq=session.last_seq, entities=[record]))
