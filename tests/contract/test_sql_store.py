"""SqlStore specifics on SQLite and PostgreSQL: locking across processes, round trips, setup."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from syncstore import PushBatch, SqlStore, StoreUnavailable
from syncstore import engine as engine_module
from syncstore.engine import create_engine
from syncstore.migrate import upgrade
from syncstore.records import ConflictFilter
from syncstore.rows import replica_to_row
from syncstore.sql_log import of_tenant
from syncstore.sqlite_sync import sync_engine
from syncstore.tables import changes, entities, replicas, tenants
from tests.contract import factories
from tests.contract.backends import sqlite_url
from tests.contract.factories import NOW
from tests.contract.store_suite.channels import member, write


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore.from_url(url)
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def statements(store: SqlStore) -> Iterator[list[tuple[str, bool]]]:
    """Record ``(sql, executemany)`` for every statement the store sends (SQLite's reader and writer too)."""
    sent: list[tuple[str, bool]] = []

    def record(_conn: Any, _cursor: Any, sql: str, _params: Any, _context: Any, executemany: bool) -> None:
        sent.append((sql, executemany))

    db = store.database
    engines = [store.engine.sync_engine] + [t.engine for t in (db.reader, db.writer) if t is not None]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_two_stores_on_one_database_take_turns(sql_url: str) -> None:
    """Two SqlStore instances share no in-process lock: the database lock alone must serialize them."""
    async with opened(sql_url) as first, opened(sql_url) as second:
        tenant = factories.new_tenant_id()
        await first.create_tenant(tenant, factories.key(tenant), NOW)
        entered = asyncio.Event()

        async def late_push() -> int:
            async with second.push_session(tenant) as session:
                entered.set()
                await session.commit(factories.changes_batch(session.last_seq + 1, 1, replica_id="late"))
                return session.last_seq

        async with first.push_session(tenant) as session:
            late = asyncio.create_task(late_push())
            await asyncio.sleep(0.3)
            assert not entered.is_set(), "the second process entered while the first held the lock"
            await session.commit(factories.changes_batch(1, 2))

        assert await asyncio.wait_for(late, 15) == 3
        assert [c.seq for c in await second.changes(tenant, 0, 10)] == [1, 2, 3]


async def test_a_uuid_change_id_and_the_own_replicas_context_entry_are_stored_packed(sql_url: str) -> None:
    """ADR 0039: a canonical UUID id takes 16 bytes, not 36 characters; the change's own replica in its
    context is ``""`` with its distance to the change's counter, not the replica id again."""
    cid = "0b9e6a52-2f0d-4c4e-9a53-7d1c8e2f4b60"
    pushed = msgspec.structs.replace(
        factories.change(7, replica_id="web-6e2a9f0c-1d3b-4c5e-8f7a-9b0c1d2e3f40", n=7),
        change_id=cid,
        context={"web-6e2a9f0c-1d3b-4c5e-8f7a-9b0c1d2e3f40": 6, "dispatch-1": 40},
    )
    async with opened(sql_url) as store:
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        async with store.push_session(tenant) as session:
            await session.commit(PushBatch(last_seq=7, changes=[pushed]))
        stored = select(changes.c.change_id, changes.c.change_uuid, changes.c.context)
        [row] = await store.database.rows(stored.where(of_tenant(changes, tenant)))
        assert (row["change_id"], bytes(row["change_uuid"])) == ("", uuid.UUID(cid).bytes)
        assert row["context"] == '{"":1,"dispatch-1":40}'
        assert await store.changes(tenant, 0, 10) == [pushed]


async def test_push_of_500_changes_is_a_handful_of_statements(sql_url: str) -> None:
    async with opened(sql_url) as store:
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        batch = factories.changes_batch(1, 500)
        batch.conflicts = [factories.conflict(s) for s in range(1, 501)]
        batch.dead_letters = [factories.dead_letter(n, replica_id="tablet") for n in range(1, 501)]

        with statements(store) as sent:
            async with store.push_session(tenant) as session:
                found = await session.entities([(e.collection, e.entity_id) for e in batch.entities])
                await session.replicas(["phone"])
                await session.commit(batch)

        assert found == {}
        # With the change log's numbers (ADR 0033): one read of them, and one insert of a replica's first names.
        assert len(sent) <= 14, sent
        # changes, conflicts, dead letters, entities, and the log's numbers for the replica's and the user's
        # first names; the single replica row goes as a plain execute.
        assert sum(many for _, many in sent) == 5
        assert len(await store.changes(tenant, 0, 1000)) == 500


@pytest.mark.parametrize("stage", range(5))
async def test_a_push_cancelled_mid_step_leaves_sqlite_unlocked_and_whole(tmp_path: Path, stage: int) -> None:
    """A push runs its steps on the writer thread. Cancelled (twice, as a shutdown may) while one of them
    runs there (taking the lock, reading replicas, entities, committing) or after its commit, it is
    applied whole or not at all, and neither the writer thread nor the file's write lock is left to the
    next push or to a write on the async engine."""
    url = sqlite_url(tmp_path)
    await upgrade(url)
    async with opened(url) as store:
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        batch = factories.changes_batch(1, 20)
        reached = asyncio.Event()

        def at(n: int) -> None:
            if n == stage:
                reached.set()  # the push goes on into its next step; the test cancels it there

        async def push() -> None:
            at(0)
            async with store.push_session(tenant) as session:
                at(1)
                await session.replicas(["phone"])
                at(2)
                await session.entities([(e.collection, e.entity_id) for e in batch.entities])
                at(3)
                await session.commit(batch)
                at(4)
                await asyncio.sleep(3600)

        task = asyncio.create_task(push())
        await reached.wait()
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        other = factories.new_tenant_id()
        await asyncio.wait_for(store.create_tenant(other, factories.key(other), NOW), 5)
        async with asyncio.timeout(5), store.push_session(tenant) as session:
            # The next transaction starts after every step of the cancelled one has finished on the thread.
            applied = session.last_seq
            assert len(await store.changes(tenant, 0, 100)) == applied
            await session.commit(factories.changes_batch(applied + 1, 1, replica_id="tablet"))
        # Cancelled during its commit step, a push may or may not have committed (never acknowledged either way).
        assert applied in ({0, 20} if stage == 3 else {20 if stage > 3 else 0})
        assert len(await store.changes(tenant, 0, 100)) == applied + 1


async def test_sqlite_write_sessions_begin_immediate_and_reads_do_not(tmp_path: Path) -> None:
    """Seen from another connection: a write session holds the write lock from its start, a read never takes it.

    (The BEGIN goes to the driver's cursor, past SQLAlchemy's statement events: ``on_sqlite_begin``.)"""
    url = sqlite_url(tmp_path)
    await upgrade(url)
    other = sqlite3.connect(tmp_path / "store.db", timeout=0, isolation_level=None)
    try:
        async with opened(url) as store:
            tenant = factories.new_tenant_id()
            await store.create_tenant(tenant, factories.key(tenant), NOW)
            async with store.push_session(tenant) as session:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                await session.commit(factories.changes_batch(1, 1))

            other.execute("BEGIN IMMEDIATE")  # the write lock: a read beginning IMMEDIATE would wait 10 s for it
            try:
                pulled = await asyncio.wait_for(store.pull(tenant, 0, 10), 5)
            finally:
                other.execute("ROLLBACK")
            assert [e.entity_id for e in pulled] == ["e-1"]
    finally:
        other.close()


async def test_a_write_session_whose_begin_failed_leaves_the_next_one_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push whose ``BEGIN IMMEDIATE`` gave up (another process held the write lock past ``busy_timeout``) fails;
    the next push is still one transaction holding the write lock. (SQLAlchemy leaves a connection whose
    ``begin`` event raised unable to begin again: the writer's next pushes ran in autocommit, statement by
    statement, visible half-written and never rolled back, until the connection was replaced.)"""
    monkeypatch.setattr(engine_module, "_SQLITE_PRAGMAS", ("PRAGMA busy_timeout=50", "PRAGMA foreign_keys=ON"))
    url = sqlite_url(tmp_path)
    await upgrade(url)
    other = sqlite3.connect(tmp_path / "store.db", timeout=0, isolation_level=None)
    try:
        async with opened(url) as store:
            tenant = factories.new_tenant_id()
            await store.create_tenant(tenant, factories.key(tenant), NOW)
            other.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(OperationalError, match="locked"):  # transient: the server answers 503
                    async with store.push_session(tenant) as session:
                        await session.commit(factories.changes_batch(1, 1))
            finally:
                other.execute("ROLLBACK")
            for n in (1, 2):
                async with store.push_session(tenant) as session:
                    with pytest.raises(sqlite3.OperationalError, match="locked"):
                        other.execute("BEGIN IMMEDIATE")
                    await session.commit(factories.changes_batch(n, 1))
            assert [c.seq for c in await store.changes(tenant, 0, 10)] == [1, 2]
    finally:
        other.close()


def test_a_begin_the_driver_refuses_raises_sqlalchemys_error(tmp_path: Path) -> None:
    """Errors of the BEGIN map as any statement's do (``OperationalError``: a store that cannot be reached)."""
    engine = sync_engine(make_url(sqlite_url(tmp_path)), "FULL", 1)
    try:
        with engine.connect() as conn:
            conn.connection.dbapi_connection.execute("BEGIN")  # type: ignore[union-attr]
            with pytest.raises(OperationalError, match="within a transaction") as caught:
                conn.execute(text("SELECT 1"))
            assert isinstance(caught.value.orig, sqlite3.OperationalError)
    finally:
        engine.dispose()


_WALK = re.compile(
    r"SCAN (entities|changes|entity_channels|conflicts|dead_letters|replicas|log_names|attachments)\b"
    r"|USING (PRIMARY KEY|(COVERING )?INDEX \w+) \((tenant_no|tenant_id)=\?\)$"
)
"""A plan step that reads a whole table, or every row of the tenant in one."""


async def test_sqlite_hot_paths_never_walk_the_tenants_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement of a push, a dispatcher's pull, a driver's pull (page and evictions), the live feed's
    wake-up, an entity read, verify's channel check, an entity's conflicts and a driver's conflicts seeks an
    index; none reads the tenant's rows one by one.

    SQLite keeps no statistics unless someone runs ``ANALYZE``, and then a flat ``GROUP BY`` (the evictions) and
    a list of ``(collection, entity_id)`` pairs (verify's check) walked ``entity_channels`` from ``tenant_no``:
    a driver's pull cost 6.7 times as much at 100,000 deliveries as at 1,000 (benchmarks/README.md)."""
    url = sqlite_url(tmp_path)
    await upgrade(url)
    sent: list[tuple[str, Any]] = []
    # A window of one row: a restricted reader's conflict page walks one row of the log, finds nothing it may
    # see, and is then found from its channels' side. Both statements run, and both are checked.
    monkeypatch.setattr("syncstore.sql_channels.CONFLICT_WINDOW", 1)

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, many: bool) -> None:
        if not many and sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
            sent.append((sql, params))

    async with opened(url) as store:
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1), member("dlv-1", "depot:n", 1)])
        db = store.database
        engines = [t.engine for t in (db.reader, db.writer) if t is not None]
        assert len(engines) == 2
        for engine in engines:
            event.listen(engine, "before_cursor_execute", record)
        try:
            await write(store, tenant, 2, "dlv-1", [member("dlv-1", "driver:a", 2, 1, left=True)])
            async with store.push_session(tenant) as session:  # a conflict of an entity in no reader's channels
                await session.commit(
                    PushBatch(
                        last_seq=3,
                        changes=[factories.change(3, "dlv-9")],
                        entities=[factories.entity("dlv-9", 3)],
                        conflicts=[factories.conflict(3, 0, entity_id="dlv-9")],
                        replicas=[factories.replica(hwm=3)],
                        memberships=[member("dlv-9", "depot:z", 3)],
                    )
                )
            async with store.push_session(tenant) as session:
                await session.load(["phone", "tablet"], [("deliveries", "dlv-1"), ("deliveries", "dlv-2")])
                assert await session.dot_change_id("phone", 2) == "chg-phone-2"
            pulled = await store.pull(tenant, 1, 10)
            first = await store.scoped_page(tenant, ["driver:a"], 0, 10, None, evictions=False)
            page = await store.scoped_page(tenant, ["driver:a"], 1, 10, None, evictions=True)
            latest = await store.latest_in_channels(tenant, ["driver:a", "depot:n"], 0)
            one = await store.get_entity(tenant, "deliveries", "dlv-1")
            members = await store.member_channels(tenant, [("deliveries", "dlv-1"), ("deliveries", "dlv-9")])
            one = ConflictFilter(collection="deliveries", entity_id="dlv-1")
            logged = await store.conflicts(tenant, None, 10, one)
            seen = await store.conflicts_in_channels(tenant, ["depot:n"], None, 10, one)
            # A driver's own conflicts, unfiltered: found from its channel rows, not among all of the tenant's.
            mine = await store.conflicts_in_channels(tenant, ["driver:a"], None, 10)
            later = await store.conflicts_in_channels(tenant, ["driver:a"], (5, 0), 10, ConflictFilter(status="open"))
            # A token of two channels (its driver's and its depot's): each channel's range of the index, as for one
            # (SQLite's statistics, migration 0012; without them it walked the tenant's channel rows).
            two = ["driver:a", "depot:x"]
            both = await store.scoped_page(tenant, two, 1, 10, None, evictions=True)
            both_first = await store.scoped_page(tenant, two, 0, 10, None, evictions=False)
            ours = await store.conflicts_in_channels(tenant, two, None, 10)
            # Filtered: the window's visible rows are counted to choose between the walk and the channels' side.
            open_ones = await store.conflicts_in_channels(tenant, two, None, 10, ConflictFilter(status="open"))
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", record)
    assert [e.entity_id for e in pulled] == ["dlv-1", "dlv-9"]
    assert one is not None
    assert first.entities == []
    assert [e.entity_id for e in page.evictions] == ["dlv-1"]
    assert latest == {"driver:a": 2, "depot:n": 1}
    assert members == {("deliveries", "dlv-1"): {"depot:n"}, ("deliveries", "dlv-9"): {"depot:z"}}
    assert logged == seen == mine == later == ours == open_ones == []
    assert [e.entity_id for e in both.evictions] == ["dlv-1"]
    assert both_first.entities == []

    plain = sqlite3.connect(tmp_path / "store.db")
    try:
        plans = {sql: [row[3] for row in plain.execute("EXPLAIN QUERY PLAN " + sql, params)] for sql, params in sent}
    finally:
        plain.close()
    assert sum("entity_channels" in sql for sql in plans) >= 5, list(plans)
    # A restricted reader's conflict page walked a bounded window of the log, then read from its channels' side.
    assert any(") <= (" in sql and "conflicts" in sql for sql in plans), list(plans)
    assert any("member_conflicts" in sql for sql in plans), list(plans)
    for sql, plan in plans.items():
        # The highest name number: SQLite's min/max optimization reads the last entry of the primary key. The
        # window's end (``window_end``) reads at most that many entries of the primary key, by OFFSET.
        bounded = "OFFSET" in sql and "conflicts" in sql
        walks = [
            step
            for step in plan
            if _WALK.search(step)
            and "log_last" not in step
            and not (bounded and "COVERING INDEX sqlite_autoindex_conflicts_1" in step)
        ]
        assert not walks, (sql, plan)


async def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        await engine.dispose()

    # synchronous: 2 is FULL (every commit fsyncs the WAL: an acknowledged push survives a power cut).
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 10000, "foreign_keys": 1}


async def test_a_push_is_three_trips_to_the_sqlite_writer_and_a_short_write_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start and lock, load (replicas, entities, their channels), write and commit: three hops, each about as
    costly as a small push's own work (benchmarks/README.md, "Small pushes in fewer hops"). Leaving after a
    commit costs none; leaving without one still rolls back on the thread, so the next push goes through."""
    url = sqlite_url(tmp_path)
    await upgrade(url)
    async with opened(url) as store:
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1)])
        writer = store.database.writer
        assert writer is not None
        trips: list[object] = []
        real_run = writer.run

        async def counted(work: Any) -> Any:
            trips.append(work)
            return await real_run(work)

        monkeypatch.setattr(writer, "run", counted)
        async with store.push_session(tenant) as session:
            loaded = await session.load(["phone"], [("deliveries", "dlv-1")])
            assert loaded.members == {("deliveries", "dlv-1"): {"driver:a": 1}}
            await session.commit(factories.changes_batch(2, 1))
        assert len(trips) == 3

        trips.clear()
        await store.database.write(lambda conn: conn.execute(select(tenants.c.no)).all())
        assert len(trips) == 1

        trips.clear()
        async with store.push_session(tenant) as session:
            await session.load(["phone"], [])
        assert len(trips) == 3  # start and lock, load, and the rollback of what was left open
        async with asyncio.timeout(5), store.push_session(tenant) as session:
            await session.commit(factories.changes_batch(3, 1))
        assert len(await store.changes(tenant, 0, 100)) == 3


@pytest.mark.parametrize(("level", "code"), [("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
async def test_sqlite_synchronous_is_the_configured_level(tmp_path: Path, level: str, code: int) -> None:
    engine = create_engine(sqlite_url(tmp_path), sqlite_synchronous=level)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == code
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("level", "code"), [("NORMAL", 1), ("FULL", 2)])
async def test_the_sqlite_writer_and_reader_threads_connect_like_the_engine(
    tmp_path: Path, level: str, code: int
) -> None:
    """A push commits on the writer thread's connection: it must run at the configured ``synchronous`` level
    (so an acknowledged push is as durable as configured), in WAL, with the busy timeout and foreign keys."""
    url = sqlite_url(tmp_path)
    await upgrade(url)
    store = SqlStore(create_engine(url, sqlite_synchronous=level))
    try:
        pragmas = "SELECT * FROM pragma_synchronous, pragma_journal_mode, pragma_busy_timeout, pragma_foreign_keys"
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        async with store.push_session(tenant) as session:
            await session.commit(factories.changes_batch(1, 1))
        writer = store.database.writer
        assert writer is not None
        # The connection the push above committed on.
        async with writer.transaction(lambda conn: tuple(conn.exec_driver_sql(pragmas).one())) as seen:
            pass
        assert seen == (code, "wal", 10000, 1)
        assert tuple((await store.database.rows(text(pragmas)))[0].values()) == (code, "wal", 10000, 1)
    finally:
        await store.close()


@pytest.mark.parametrize("level", ["OFF", "normal; DROP TABLE x", ""])
def test_sqlite_synchronous_off_or_unknown_is_refused(tmp_path: Path, level: str) -> None:
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        create_engine(sqlite_url(tmp_path), sqlite_synchronous=level)


@pytest.mark.postgres
async def test_postgres_commits_are_synchronous(migrated_pg_url: str) -> None:
    """Nothing in our connection setup lowers ``synchronous_commit``: COMMIT returns after the WAL flush."""
    engine = create_engine(migrated_pg_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar() == "on"
            assert (await conn.exec_driver_sql("SHOW fsync")).scalar() == "on"
    finally:
        await engine.dispose()


async def test_rows_must_belong_to_an_existing_tenant(sql_url: str) -> None:
    """Foreign keys are enforced in both databases (SQLite needs the pragma on every connection)."""
    async with opened(sql_url) as store, store.engine.connect() as conn:
        with pytest.raises(IntegrityError):
            await conn.execute(replicas.insert(), [replica_to_row("no-such-tenant", factories.replica())])


async def test_ping_unreachable_sqlite_file_raises_store_unavailable(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    async with opened(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}") as store:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get_tenant("any")
    # aiosqlite stops a connection that failed to open without awaiting its worker thread, which then
    # answers on this test's event loop: let it finish while the loop is open, or it raises in a later test.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=10)
        assert not thread.is_alive(), f"{thread.name} still running"


async def test_ping_unreachable_postgres_raises_store_unavailable() -> None:
    # Port 1 on localhost: nothing listens, the connection is refused at once.
    async with opened("postgresql+psycopg://nobody@127.0.0.1:1/nothing") as store:
        with pytest.raises(StoreUnavailable):
            await store.ping()


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="memory://"):
        SqlStore.from_url("sqlite+aiosqlite://")
    with pytest.raises(ValueError, match="memory://"):
        SqlStore.from_url("sqlite+aiosqlite:///:memory:")


def test_unsupported_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        SqlStore.from_url("mysql+aiomysql://db/x")


@pytest.mark.postgres
async def test_postgres_never_prepares_statements(migrated_pg_url: str) -> None:
    """A prepared ``IN`` list may get PostgreSQL's generic plan, which scans the whole tenant (engine.py)."""
    engine = create_engine(migrated_pg_url)
    try:
        async with engine.connect() as conn:
            query = select(entities).where(of_tenant(entities, "t"), entities.c.entity_id.in_(["a", "b", "c"]))
            for _ in range(10):  # psycopg's default would prepare it after 5 runs
                await conn.execute(query)
            prepared = (await conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))).scalar()
    finally:
        await engine.dispose()
    assert prepared == 0


async def test_a_push_between_reads_never_drops_an_entity_from_a_scoped_pull(sql_url: str) -> None:
    """A driver's pull page must hold every entity changed after its cursor, even when a push commits while the
    page is read: read apart, channel rows and entity rows disagreed on the seq and the entity was dropped while
    the cursor moved past it, so the device never saw that change."""
    async with opened(sql_url) as store:
        tenant = factories.new_tenant_id()
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        for seq in (1, 2):
            await write(store, tenant, seq, "dlv-1", [member("dlv-1", "driver:a", seq, 1)])
        real_rows = store._db.rows
        reads = 0

        async def rows_then_push(query: Any, params: dict[str, Any] | None = None) -> Any:
            nonlocal reads
            found = await real_rows(query, params)
            reads += 1
            if reads == 1:  # another device's push commits right after the page's first read
                await write(store, tenant, 3, "dlv-1", [member("dlv-1", "driver:a", 3, 1)])
            return found

        store._db.rows = rows_then_push  # type: ignore[method-assign]
        page = await store.pull_in_channels(tenant, ["driver:a"], 1, 10)
        store._db.rows = real_rows  # type: ignore[method-assign]
        assert [(p.record.entity_id, p.record.seq) for p in page] in ([("dlv-1", 2)], [("dlv-1", 3)])


async def test_tenants_created_at_once_by_two_stores_each_get_their_own_number(sql_url: str) -> None:
    """Each process numbers a new tenant one above the highest (ADR 0033); two that pick the same number at
    the same moment must both end up created, with different numbers, not one refused as a duplicate."""
    async with opened(sql_url) as first, opened(sql_url) as second:
        ids = [factories.new_tenant_id() for _ in range(12)]
        await asyncio.gather(
            *((first if i % 2 else second).create_tenant(t, factories.key(t), NOW) for i, t in enumerate(ids))
        )
        async with first.engine.connect() as conn:
            numbers = (await conn.execute(select(tenants.c.no).where(tenants.c.id.in_(ids)))).scalars().all()
        assert len(numbers) == len(set(numbers)) == len(ids)
        assert 0 not in numbers
        for t in ids:
            async with first.push_session(t) as session:
                await session.commit(factories.changes_batch(1, 1))
        assert [len(await second.changes(t, 0, 10)) for t in ids] == [1] * len(ids)
