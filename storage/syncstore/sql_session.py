"""``SqlPushSession``: the reads and the single write of one locked push.

Created by ``SqlStore.push_session`` on a transaction that already holds the
tenant lock (``SqlDatabase.push_transaction``); it never commits anything but
``commit``'s batch.

Speed: a push of hundreds of changes costs a handful of round trips. Lookups
are batched ``IN`` queries (chunked under SQLite's bound-parameter limit) and
``commit`` issues one executemany per table (psycopg pipelines them). On SQLite
each method is one hop to the writer thread, whatever it sends.
"""

from __future__ import annotations

import functools
import operator
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, bindparam, null, select, true, union_all, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from syncstore import rows, sql_log
from syncstore.batches import check_batch, latest_entities, latest_replicas
from syncstore.records import DotRecord, EntityRecord, PushBatch, ReplicaRecord
from syncstore.sql_database import Steps
from syncstore.store import EntityKey, PushLoad
from syncstore.tables import (
    chain_checkpoints,
    changes,
    conflicts,
    dead_letters,
    entities,
    entity_channels,
    latest_seq_column,
    replicas,
    tenants,
)

CHUNK = 500
"""Ids per ``IN (...)`` query: far below SQLite's limit (999 before 3.32)."""

_T = TypeVar("_T")


_ENTITY_ROWS = select(entities, latest_seq_column()).where(
    sql_log.of_tenant(entities, bindparam("tenant_id")),
    entities.c.collection == bindparam("collection"),
    entities.c.entity_id.in_(bindparam("ids", expanding=True)),
)
_REPLICA_ROWS = select(replicas).where(
    replicas.c.tenant_id == bindparam("tenant_id"), replicas.c.replica_id.in_(bindparam("ids", expanding=True))
)
_MEMBER_ROWS = select(entity_channels.c.entity_id, entity_channels.c.channel, entity_channels.c.joined_seq).where(
    sql_log.of_tenant(entity_channels, bindparam("tenant_id")),
    entity_channels.c.collection == bindparam("collection"),
    entity_channels.c.entity_id.in_(bindparam("ids", expanding=True)),
    entity_channels.c.member == true(),
)
"""The channels some entities of one collection are members of: seeks of the primary key's
``(tenant_no, collection, entity_id)`` prefix. A list of ``(collection, entity_id)`` pairs instead made SQLite
(without statistics) walk every channel row of the tenant."""
_DOT = union_all(
    sql_log.select_changes(
        bindparam("tenant_id"),
        changes.c.change_id,
        changes.c.change_uuid,
        null().label("code"),
        null().label("message"),
    ).where(sql_log.replica_name == bindparam("replica_id"), changes.c.n == bindparam("n")),
    select(dead_letters.c.change_id, null().label("change_uuid"), dead_letters.c.code, dead_letters.c.message).where(
        dead_letters.c.tenant_id == bindparam("tenant_id"),
        dead_letters.c.replica_id == bindparam("replica_id"),
        dead_letters.c.n == bindparam("n"),
    ),
).limit(1)
"""A push's entity, replica and channel rows and a dot's change id: each statement is built once; building
it took longer than running it for a small push."""


class SqlPushSession:
    """See ``PushSession``. Not safe to share between tasks.

    Each method is one step of the transaction (``Steps``): a synchronous function of its connection,
    which on SQLite runs whole on the writer thread.
    """

    def __init__(self, step: Steps, tenant_id: str, last_seq: int, chain_head: bytes | None) -> None:
        self._step = step
        self._tenant_id = tenant_id
        self.last_seq = last_seq
        self.chain_head = chain_head
        self._finished = False

    async def replicas(self, replica_ids: Sequence[str]) -> dict[str, ReplicaRecord]:
        """High-water marks of the given replicas; unknown ones are absent."""
        self._check_open()
        return await self._step(functools.partial(_replicas, tenant_id=self._tenant_id, ids=sorted(set(replica_ids))))

    async def entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, EntityRecord]:
        """Current rows of the given entities, deleted ones included; unknown ones are absent.

        One query per collection per chunk of ids, not one per entity.
        """
        self._check_open()
        return await self._step(functools.partial(entity_rows, tenant_id=self._tenant_id, keys=keys))

    async def dot(self, replica_id: str, n: int) -> DotRecord | None:
        """What ``(replica_id, n)`` was used for: its change in the log, or its dead letter with the refusal."""
        self._check_open()
        params = {"tenant_id": self._tenant_id, "replica_id": replica_id, "n": n}
        return await self._step(functools.partial(_dot, params=params))

    async def dot_change_id(self, replica_id: str, n: int) -> str | None:
        """The change id stored for ``(replica_id, n)`` in the change log or the dead letters."""
        found = await self.dot(replica_id, n)
        return None if found is None else found.change_id

    async def channel_members(self, keys: Sequence[EntityKey]) -> dict[EntityKey, dict[str, int]]:
        """Member channels (with their ``joined_seq``) of the given entities; one query per collection chunk."""
        self._check_open()
        return await self._step(functools.partial(channel_members, tenant_id=self._tenant_id, keys=keys))

    async def load(self, replica_ids: Sequence[str], keys: Sequence[EntityKey]) -> PushLoad:
        """See ``PushSession.load``: one step."""
        self._check_open()
        return await self._step(
            functools.partial(_load, tenant_id=self._tenant_id, replica_ids=sorted(set(replica_ids)), keys=keys)
        )

    async def commit(self, batch: PushBatch) -> None:
        """Write ``batch`` and the new ``last_seq`` in this session's transaction, then commit.

        Raises ``ValueError`` if the batch breaks the rules in ``batches.py`` or
        collides with stored rows (a dot or seq already taken); nothing is
        written then. A second call raises ``RuntimeError``.
        """
        self._check_open()
        check_batch(self.last_seq, batch)
        self._finished = True
        try:
            await self._step(functools.partial(_write, tenant_id=self._tenant_id, batch=batch))
        except IntegrityError as exc:
            # The transaction is aborted; push_session rolls it back on exit.
            raise ValueError(f"push batch collides with stored rows: {exc.orig}") from exc
        self.last_seq = batch.last_seq
        if batch.chain_head is not None:
            self.chain_head = batch.chain_head

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this push session has already committed (or failed to)")


# The steps: each a function of the transaction's synchronous connection (see ``Steps``).


def _by_collection(keys: Sequence[EntityKey]) -> dict[str, list[str]]:
    grouped: defaultdict[str, set[str]] = defaultdict(set)
    for collection, entity_id in keys:
        grouped[collection].add(entity_id)
    return {collection: sorted(ids) for collection, ids in grouped.items()}


def _replicas(conn: Connection, tenant_id: str, ids: Sequence[str]) -> dict[str, ReplicaRecord]:
    found: dict[str, ReplicaRecord] = {}
    for chunk in chunks(ids):
        for row in conn.execute(_REPLICA_ROWS, {"tenant_id": tenant_id, "ids": chunk}).mappings():
            found[row["replica_id"]] = rows.replica_from_row(row)
    return found


def entity_rows(conn: Connection, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, EntityRecord]:
    """The current rows of ``keys`` (those that exist): a read per collection and chunk."""
    found: dict[EntityKey, EntityRecord] = {}
    for collection, ids in _by_collection(keys).items():
        for chunk in chunks(ids):
            params = {"tenant_id": tenant_id, "collection": collection, "ids": chunk}
            for row in conn.execute(_ENTITY_ROWS, params).mappings():
                record = rows.entity_from_row(row)
                found[(record.collection, record.entity_id)] = record
    return found


def _load(conn: Connection, tenant_id: str, replica_ids: Sequence[str], keys: Sequence[EntityKey]) -> PushLoad:
    found = entity_rows(conn, tenant_id, keys)
    members = channel_members(conn, tenant_id, list(found)) if found else {}
    return PushLoad(_replicas(conn, tenant_id, replica_ids), found, members)


def _dot(conn: Connection, params: dict[str, object]) -> DotRecord | None:
    found = conn.execute(_DOT, params).first()
    if found is None:
        return None
    return DotRecord(rows.unpack_change_id(found.change_id, found.change_uuid), found.code, found.message)


def channel_members(conn: Connection, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, dict[str, int]]:
    """The channels each entity of ``keys`` is a member of, with when it joined: a read per collection and chunk."""
    found: dict[EntityKey, dict[str, int]] = {}
    for collection, ids in _by_collection(keys).items():
        for chunk in chunks(ids):
            params = {"tenant_id": tenant_id, "collection": collection, "ids": chunk}
            for entity_id, channel, joined_seq in conn.execute(_MEMBER_ROWS, params).all():
                found.setdefault((collection, entity_id), {})[channel] = joined_seq
    return found


def _write(conn: Connection, tenant_id: str, batch: PushBatch) -> None:
    """Every row of ``batch``, one executemany per table, the tenant's counters, then the commit."""
    names = {c.replica_id for c in batch.changes} | {c.user for c in batch.changes}
    tenant_no, numbers = sql_log.numbers(conn, tenant_id, names)
    _insert(
        conn,
        changes,
        [rows.change_to_row(tenant_no, c, numbers[c.replica_id], numbers[c.user]) for c in batch.changes],
    )
    _insert(conn, conflicts, [rows.conflict_to_row(tenant_id, c) for c in batch.conflicts])
    _insert(conn, dead_letters, [rows.dead_letter_to_row(tenant_id, d) for d in batch.dead_letters])
    _insert(conn, entities, [rows.entity_to_row(tenant_no, e) for e in latest_entities(batch)], upsert=True)
    _insert(conn, replicas, [rows.replica_to_row(tenant_id, r) for r in latest_replicas(batch)], upsert=True)
    _insert(conn, entity_channels, [rows.membership_to_row(tenant_no, m) for m in batch.memberships], upsert=True)
    _insert(conn, chain_checkpoints, [rows.checkpoint_to_row(tenant_id, c) for c in batch.checkpoints])
    values: dict[str, object] = {"last_seq": batch.last_seq}
    if batch.chain_head is not None:
        values["chain_head"] = batch.chain_head
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(values))
    conn.commit()


def _insert(conn: Connection, table: Table, values: list[rows.Row], *, upsert: bool = False) -> None:
    """One executemany of ``values`` (an upsert: ``INSERT ... ON CONFLICT (primary key) DO UPDATE`` of every
    non-key column)."""
    if values:
        sql, columns = _write_sql(conn.dialect, table, upsert=upsert)
        conn.exec_driver_sql(sql, [columns(row) for row in values])


_WRITE_SQL: dict[tuple[str, str, bool], tuple[str, Callable[[rows.Row], Any]]] = {}


def _write_sql(dialect: Dialect, table: Table, upsert: bool) -> tuple[str, Callable[[rows.Row], Any]]:
    """The driver-level INSERT (or upsert) for ``table`` with positional parameters, built once per dialect,
    and the getter that makes a row (a dict by column name) its parameters, in the table's column order.

    The hot path of every push: handing the DBAPI one ``executemany`` skips SQLAlchemy's per-row parameter
    processing, which cost more than SQLite's own work (see benchmarks/README.md), and positional parameters
    bind faster than named ones (sqlite3 looks each name up in the row's dict: 8.9 against 5.6 µs a change
    row, measured alone). Rows from ``rows.py`` already hold plain DBAPI values. Both dialects spell the
    upsert the same.
    """
    key = (dialect.name, table.name, upsert)
    built = _WRITE_SQL.get(key)
    if built is None:
        quote = dialect.identifier_preparer.quote
        names = [column.name for column in table.columns]
        marker = "?" if dialect.name == "sqlite" else "%s"
        columns = ", ".join(quote(n) for n in names)
        values = ", ".join(marker for _ in names)
        # Only identifiers from our own table metadata are interpolated; values are bound.
        sql = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({values})"  # noqa: S608
        if upsert:
            pk = [column.name for column in table.primary_key.columns]
            assignments = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in pk)
            sql += f" ON CONFLICT ({', '.join(quote(n) for n in pk)}) DO UPDATE SET {assignments}"
        # Every table written here has several columns: ``itemgetter`` of several names gives a tuple.
        assert len(names) > 1, table.name
        built = _WRITE_SQL[key] = (sql, operator.itemgetter(*names))
    return built


def chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
