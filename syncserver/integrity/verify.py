"""``syncserver verify``: walk a tenant's change-log chain and every derived row; say what is broken, where.

Checks, each a ``Problem`` with a stable ``kind``:

* ``missing``: seqs absent from the log (a deleted change row); seqs are gap-free by construction;
* ``payload``: a change's ops do not open under its associated data (altered, moved, a rewritten link);
* ``link``: a change's link is not ``chain.link(previous link, change)`` (a row inserted, reordered,
  rolled back or with altered metadata);
* ``unchained``: a change without a link after the tenant's chain began;
* ``checkpoint``: a checkpoint whose MAC is wrong, whose head differs from the log's link at its seq, that
  lies beyond the log's end (the tail was truncated) or at a seq without a linked change; or a multiple of
  ``chain.CHECKPOINT_EVERY`` in the chained range without the checkpoint its crossing wrote (deleted, with
  the tail after it or not);
* ``head``: the tenant row's last seq or chain head disagrees with the log;
* ``entity``: an entity state that does not open, or is not what the log says is current (rolled back,
  injected, at a seq the log does not have);
* ``channel``: an entity's channel rows differ from the channels its state puts it in (an injected row).

Rows written before the chain existed (``chain`` null, before the first linked change) are counted as
``legacy``, checked for gaps and opened as the read path opens them (a linked row whose link was
stripped does not open so, since its link is in its associated data: ``payload``). ``from_seq`` starts
the walk after that seq, anchored on the stored link at ``from_seq``; checkpoints after it are checked.
A run is kept (``record_verification``) for the admin API and page. Reading is paged (``PAGE`` rows)
and takes no lock: run it when writes are quiet, or expect ``head`` to move while it walks (it is read
first and the walk stops there).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from syncproto.hlc import iso
from syncproto.schema import Schema
from syncserver.admin.views import IntegrityProblem, IntegrityStatus, SetAsideRow, VerificationView
from syncserver.auth.scopes import ChannelError, entity_channels
from syncserver.integrity import chain, quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync import payloads
from syncstore.integrity import EntityKey, IntegrityStore
from syncstore.records import CheckpointRecord, VerificationRecord
from syncstore.store import Store, TenantNotFound

PAGE = 1000
Progress = Callable[[str, int], None]
"""Called with (what, how many more rows were checked)."""


class Problem(msgspec.Struct, frozen=True, gc=False):
    kind: str
    where: str
    detail: str


_problems = msgspec.json.Decoder(list[Problem])


@dataclass
class Report:
    tenant: str
    from_seq: int
    to_seq: int
    changes: int = 0
    legacy: int = 0
    entities: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def problems_of(record: VerificationRecord) -> list[Problem]:
    return _problems.decode(record.problems)


async def integrity_status(verifier: Verifier, tenant: str) -> IntegrityStatus:
    """The admin API's and page's view: the latest verification runs and the rows set aside lately."""
    runs = await verifier.integrity.verifications(tenant, 10)
    return IntegrityStatus(
        verifications=[
            VerificationView(
                started_at=iso(run.started_at),
                finished_at=iso(run.finished_at),
                from_seq=run.from_seq,
                to_seq=run.to_seq,
                changes=run.changes,
                entities=run.entities,
                ok=not problems_of(run),
                problems=[IntegrityProblem(p.kind, p.where, p.detail) for p in problems_of(run)],
            )
            for run in runs
        ],
        set_aside=[SetAsideRow(iso(f.at), f.table, f.row, f.reason) for f in quarantine.recent(tenant)],
    )


class Verifier:
    def __init__(self, store: Store, ciphers: Ciphers, schema: Schema, clock: Callable[[], int] | None = None) -> None:
        if not isinstance(store, IntegrityStore):
            raise TypeError(f"{type(store).__name__} must implement IntegrityStore")
        self.store = store
        self.integrity: IntegrityStore = store
        self.ciphers = ciphers
        self.schema = schema
        self.clock = clock or (lambda: int(time.time() * 1000))

    async def verify(self, tenant: str, from_seq: int = 0, progress: Progress | None = None) -> Report:
        started = self.clock()
        record = await self.store.get_tenant(tenant)
        if record is None:
            raise TenantNotFound(tenant)
        report = Report(tenant, from_seq, record.last_seq)
        # Each entity's latest change, as the walk saw it (the whole log only when it starts at the beginning).
        latest: dict[EntityKey, int] | None = {} if from_seq == 0 else None
        last_link = await self._walk_log(report, record.last_seq, progress, latest)
        if record.last_seq >= from_seq and last_link != record.chain_head and report.changes:
            report.problems.append(Problem("head", "tenants", "the tenant's chain head is not the log's last link"))
        await self._check_entities(report, progress, latest)
        await self.integrity.record_verification(
            tenant,
            VerificationRecord(
                started_at=started,
                finished_at=self.clock(),
                from_seq=from_seq,
                to_seq=report.to_seq,
                changes=report.changes,
                entities=report.entities,
                problems=msgspec.json.encode(report.problems).decode(),
            ),
        )
        return report

    async def _walk_log(
        self,
        report: Report,
        head: int,
        progress: Progress | None,
        latest: dict[EntityKey, int] | None,
    ) -> bytes | None:
        tenant = report.tenant
        prev: bytes | None = None  # None: no linked change seen yet
        chained_from: int | None = None  # the first seq of the walk's chained range
        expected = report.from_seq + 1
        if report.from_seq > 0:
            anchor = await self.store.changes(tenant, report.from_seq - 1, 1)
            if not anchor or anchor[0].seq != report.from_seq:
                report.problems.append(Problem("missing", f"seq {report.from_seq}", "the walk's anchor is absent"))
            else:
                prev = anchor[0].chain
                if prev is not None:
                    chained_from = report.from_seq + 1
        checkpoints = await self._checkpoints(tenant, report.from_seq)
        marks = sorted(checkpoints)
        after = report.from_seq
        while after < head:
            rows = [r for r in await self.store.changes(tenant, after, PAGE) if r.seq <= head]
            if not rows:
                break
            cipher = await self.ciphers.cipher(tenant, {r.key_version for r in rows})
            for r in rows:
                if r.seq != expected:
                    report.problems.append(Problem("missing", f"seqs {expected}-{r.seq - 1}", "absent from the log"))
                expected = r.seq + 1
                report.changes += 1
                if latest is not None:
                    latest[(r.collection, r.entity_id)] = r.seq
                where = f"seq {r.seq} ({r.collection}/{r.entity_id})"
                if r.chain is None:
                    if prev is None:
                        report.legacy += 1
                    else:
                        report.problems.append(Problem("unchained", f"seq {r.seq}", "no link after the chain began"))
                    # Opened as the read path opens a row from before the chain: a linked row whose link was
                    # removed does not open so (its link is in its associated data).
                    try:
                        payloads.open_ops_plaintext(cipher, r)
                    except DecryptionError as exc:
                        detail = f"a change without a link that does not open as a row from before the chain: {exc}"
                        report.problems.append(Problem("payload", where, detail))
                    continue
                if chained_from is None:
                    chained_from = r.seq
                try:
                    plaintext = payloads.open_ops_plaintext(cipher, r)
                except DecryptionError as exc:
                    report.problems.append(Problem("payload", where, str(exc)))
                else:
                    if chain.link(prev if prev is not None else chain.genesis(tenant), r, plaintext) != r.chain:
                        report.problems.append(Problem("link", where, "does not follow from the previous change"))
                prev = r.chain
                checkpoint = checkpoints.pop(r.seq, None)
                if checkpoint is not None:
                    report.checkpoints += 1
                    self._check_checkpoint(report, cipher, checkpoint, r.chain)
            after = rows[-1].seq
            if progress is not None:
                progress("changes", len(rows))
        if expected <= head:
            report.problems.append(Problem("missing", f"seqs {expected}-{head}", "absent from the log's end"))
        for seq in sorted(checkpoints):
            if seq > head:
                detail = f"a checkpoint at seq {seq} lies beyond the log's last seq {head} (truncated)"
            else:
                detail = f"a checkpoint at seq {seq}, where the log has no linked change"
            report.problems.append(Problem("checkpoint", f"seq {seq}", detail))
        if chained_from is not None:
            self._check_crossings(report, marks, chained_from, head)
        return prev

    @staticmethod
    def _check_crossings(report: Report, marks: list[int], chained_from: int, head: int) -> None:
        """Every multiple of ``CHECKPOINT_EVERY`` in the chained range ``[chained_from, head]`` has a checkpoint.

        The writer's rule (``PushService``): a push (or group of pushes) whose seqs cross a multiple ``m``
        writes one checkpoint at its last seq, in the transaction that raises the tenant's ``last_seq`` to it.
        So for each such ``m`` there is a checkpoint at a seq in ``[m, head]`` (one group may cross several
        multiples and write one checkpoint for all). Multiples before ``chained_from`` are not asked for: rows
        from before the chain (and before checkpoints, which came with it) have none.
        """
        every = chain.CHECKPOINT_EVERY
        first = -(-chained_from // every) * every
        i = bisect.bisect_left(marks, first)
        for multiple in range(first, head + 1, every):
            while i < len(marks) and marks[i] < multiple:
                i += 1
            if i == len(marks) or marks[i] > head:
                detail = (
                    f"no checkpoint at or after seq {multiple} (up to {head}): the log crossed seq {multiple}, so "
                    "a push wrote one; it was deleted, and with it maybe the log's tail"
                )
                report.problems.append(Problem("checkpoint", f"seq {multiple}", detail))
                return  # the later multiples have none either: one problem says it

    async def _checkpoints(self, tenant: str, after: int) -> dict[int, CheckpointRecord]:
        found: dict[int, CheckpointRecord] = {}
        while page := await self.integrity.checkpoints(tenant, after, PAGE):
            found.update({c.seq: c for c in page})
            after = page[-1].seq
        return found

    @staticmethod
    def _check_checkpoint(report: Report, cipher: TenantCipher, checkpoint: CheckpointRecord, link: bytes) -> None:
        where = f"checkpoint {checkpoint.seq}"
        try:
            valid = chain.checkpoint_valid(cipher, checkpoint)
        except DecryptionError as exc:
            report.problems.append(Problem("checkpoint", where, str(exc)))
            return
        if not valid:
            report.problems.append(Problem("checkpoint", where, "its MAC is wrong"))
        elif checkpoint.head != link:
            report.problems.append(Problem("checkpoint", where, "its head is not the log's link at its seq"))

    async def _check_entities(
        self, report: Report, progress: Progress | None, walked: dict[EntityKey, int] | None
    ) -> None:
        tenant = report.tenant
        after = 0
        while rows := await self.store.pull(tenant, after, PAGE):
            after = rows[-1].seq
            cipher = await self.ciphers.cipher(tenant, {r.key_version for r in rows})
            keys = [(r.collection, r.entity_id) for r in rows]
            members = await self.integrity.member_channels(tenant, keys)
            for row in rows:
                report.entities += 1
                where = f"{row.collection}/{row.entity_id}"
                try:
                    known = walked.get((row.collection, row.entity_id)) if walked is not None else None
                    stored = quarantine.open_current(cipher, row, known)
                except DecryptionError as exc:
                    report.problems.append(Problem("entity", where, str(exc)))
                    continue
                try:
                    wanted = entity_channels(self.schema.get(row.collection), stored.state)
                except ChannelError:
                    wanted = frozenset()
                stored_channels = members.get((row.collection, row.entity_id), set())
                if stored_channels != set(wanted):
                    detail = f"channel rows {sorted(stored_channels)}; its state puts it in {sorted(wanted)}"
                    report.problems.append(Problem("channel", where, detail))
            if progress is not None:
                progress("entities", len(rows))
