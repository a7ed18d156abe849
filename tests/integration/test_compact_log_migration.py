"""A database written in the previous release's layout (strings in every row) reads the same after
``0007_compact_log`` numbers it (ADR 0033), and the store goes on from there.

The old rows are written with plain SQL into a database migrated to the revisions before
``0007_compact_log``, exactly as that release's push wrote them: tenant, replica and user as strings,
the context as JSON text, chain links present or (rows from before the chain) NULL; entity rows (some
deleted) and their channel rows with the tenant's id. Two tenants share replica and user names, and
one user sub equals a replica id. Conflicts and dead letters are in tables the migration leaves
alone; they are read before and after through today's store.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection

from syncstore.engine import create_engine
from syncstore.migrate import upgrade
from syncstore.records import ChangeRecord, EntityRecord
from syncstore.sql import SqlStore
from syncstore.tables import conflicts, dead_letters, log_names, tenant_keys, tenants
from tests.contract import factories
from tests.contract.test_sql_store import opened

PREVIOUS_HEADS = ("0003_admin", "0004_attachments", "0005_integrity", "0006_footprint")
TENANTS = ("acme", "globex")
REPLICAS = ("phone-1", "phone-2", "web-1")
USERS = {"phone-1": "driver-17", "phone-2": "driver-17", "web-1": "phone-1"}
"""Who pushed from each replica: the dispatcher's sub is the same string as a replica id."""
CHANGES = 90


def old_changes(tenant: str) -> list[ChangeRecord]:
    """The tenant's log as the previous release stored it; the first third before the hash chain."""
    found = []
    for seq in range(1, CHANGES + 1):
        replica = REPLICAS[seq % 3]
        n = (seq + 2) // 3
        found.append(
            ChangeRecord(
                seq=seq,
                change_id=f"{tenant}-c{seq:03d}",
                collection="deliveries" if seq % 4 else "stops",
                entity_id=f"dlv-{seq % 7}",
                replica_id=replica,
                n=n,
                hlc=(1_796_000_000_000 + seq, seq % 5),
                user=USERS[replica],
                context={replica: n - 1, "web-1": seq // 2} if n > 1 else {},
                key_version=1 + seq % 2,
                payload=f"sealed ops {tenant} {seq}".encode(),
                created_at=1_796_000_000_500 + seq,
                chain=None if seq <= CHANGES // 3 else seq.to_bytes(32, "big"),
            )
        )
    return found


def write_previous_release(conn: Connection) -> None:
    for tenant in TENANTS:
        conn.execute(insert(tenants).values(id=tenant, created_at=1, last_seq=CHANGES, purged_seq=0))
        key = msgspec.structs.asdict(factories.key(tenant))
        del key["dictionary"]  # that release's tenant_keys had no such column (0008_key_dictionary)
        conn.execute(insert(tenant_keys).values(key))
        rows = [
            msgspec.structs.asdict(c)
            | {
                "tenant_id": tenant,
                "user_sub": c.user,
                "context": msgspec.json.encode(c.context, order="sorted").decode(),
                "hlc_wall": c.hlc[0],
                "hlc_counter": c.hlc[1],
            }
            for c in old_changes(tenant)
        ]
        for row in rows:
            del row["user"], row["hlc"]
        conn.execute(
            text(
                "INSERT INTO changes (tenant_id, seq, change_id, collection, entity_id, replica_id, n, hlc_wall,"
                " hlc_counter, user_sub, context, key_version, payload, created_at, chain) VALUES (:tenant_id, :seq,"
                " :change_id, :collection, :entity_id, :replica_id, :n, :hlc_wall, :hlc_counter, :user_sub, :context,"
                " :key_version, :payload, :created_at, :chain)"
            ),
            rows,
        )
        conn.execute(insert(conflicts), [_row(tenant, factories.conflict(s, i)) for s in (4, 9) for i in (0, 1)])
        conn.execute(insert(dead_letters), [_row(tenant, factories.dead_letter(n, replica_id="web-1")) for n in (7, 8)])
        conn.execute(
            text(
                "INSERT INTO entities (tenant_id, collection, entity_id, seq, deleted, key_version, state, vv,"
                " updated_at, chain) VALUES (:tenant_id, :collection, :entity_id, :seq, :deleted, :key_version,"
                " :state, :vv, :updated_at, :chain)"
            ),
            [{"tenant_id": tenant, **_without_latest(e), "vv": '{"phone-1":3}'} for e in old_entities(tenant)],
        )
        conn.execute(
            text(
                "INSERT INTO entity_channels (tenant_id, collection, entity_id, channel, seq, joined_seq, member)"
                " VALUES (:tenant_id, :collection, :entity_id, :channel, :seq, :joined_seq, :member)"
            ),
            [
                {
                    "tenant_id": tenant,
                    "collection": e.collection,
                    "entity_id": e.entity_id,
                    "channel": f"driver:{e.entity_id}",
                    "seq": e.seq,
                    "joined_seq": 1,
                    "member": True,
                }
                for e in old_entities(tenant)
            ],
        )


def old_entities(tenant: str) -> list[EntityRecord]:
    """Each entity's row as the previous release stored it (``latest_seq`` is read, not stored)."""
    latest = {(c.collection, c.entity_id): c for c in old_changes(tenant)}
    return sorted(
        (
            EntityRecord(
                collection=collection,
                entity_id=entity_id,
                seq=c.seq,
                deleted=c.seq % 5 == 0,
                key_version=1,
                state=f"sealed state {tenant} {collection}/{entity_id}".encode(),
                vv={"phone-1": 3},
                updated_at=c.created_at,
                chain=c.chain,
                latest_seq=c.seq,
            )
            for (collection, entity_id), c in latest.items()
        ),
        key=lambda e: (e.seq, e.collection, e.entity_id),
    )


def _without_latest(entity: EntityRecord) -> dict[str, object]:
    row = msgspec.structs.asdict(entity)
    del row["latest_seq"]
    return row


def _row(tenant: str, record: msgspec.Struct) -> dict[str, object]:
    row = {"tenant_id": tenant, **msgspec.structs.asdict(record)}
    if "user" in row:
        row["user_sub"] = row.pop("user")
    return row


async def _at(url: str, heads: tuple[str, ...]) -> None:
    for head in heads:
        await upgrade(url, head)


async def _run_sql(url: str, work: object) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(work)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def _read_unchanged_tables(store: SqlStore) -> dict[str, object]:
    return {
        t: (
            await store.conflicts(t, None, 100),
            await store.dead_letters(t, 100),
        )
        for t in TENANTS
    }


def test_an_old_change_log_reads_the_same_after_it_is_numbered(
    migration_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = migration_url
    asyncio.run(_at(url, PREVIOUS_HEADS))
    asyncio.run(_run_sql(url, write_previous_release))

    async def before() -> dict[str, object]:
        async with opened(url) as store:
            return await _read_unchanged_tables(store)

    unchanged = asyncio.run(before())
    with caplog.at_level(logging.INFO, logger="syncstore.migrate"):
        asyncio.run(upgrade(url))
    assert "0007_compact_log: changes rows of globex: 180 of 180 seqs (100 %)" in caplog.text

    async def after() -> None:
        async with opened(url) as store:
            assert await _read_unchanged_tables(store) == unchanged
            for tenant in TENANTS:
                log = old_changes(tenant)
                assert await store.changes(tenant, 0, 1000) == log
                assert await store.changes(tenant, 40, 7) == log[40:47]
                history = await store.changes(tenant, 0, 1000, collection="stops", entity_id="dlv-4")
                assert history == [c for c in log if (c.collection, c.entity_id) == ("stops", "dlv-4")]
                by_user = await store.changes_by_user(tenant, "phone-1", 10, 1000)
                assert by_user == [c for c in log if c.user == "phone-1" and c.seq > 10]
                assert await store.change_at(tenant, "phone-2", 5) == next(
                    c for c in log if (c.replica_id, c.n) == ("phone-2", 5)
                )
                usage = await store.key_usage(tenant)
                assert usage["changes"] == {1: CHANGES // 2, 2: CHANGES // 2}
                sealed = await store.sealed_rows(tenant, "changes", not_version=2, after=(10,), limit=3)
                assert [(r.key, r.names["seq"], r.blob) for r in sealed] == [
                    ((c.seq,), c.seq, c.payload) for c in log if c.key_version == 1 and c.seq > 10
                ][:3]
                stored = await store.get_entity(tenant, "stops", "dlv-4")
                assert isinstance(stored, EntityRecord)
                assert stored.latest_seq == max(c.seq for c in history)
                assert await store.pull(tenant, 0, 1000) == old_entities(tenant)
                assert [s.record for s in await store.pull_in_channels(tenant, ["driver:dlv-4"], 0, 10)] == [
                    e for e in old_entities(tenant) if e.entity_id == "dlv-4"
                ]
                assert await store.entity_channels(tenant, "stops", "dlv-4") == {"driver:dlv-4": 1}

            # The log goes on: a known dot is found, a new replica gets the next number, in one tenant only.
            async with store.push_session("acme") as session:
                assert await session.dot_change_id("web-1", 3) == "acme-c008"
                assert await session.dot_change_id("web-1", 99) is None
                batch = factories.changes_batch(CHANGES + 1, 2, replica_id="tablet-9")
                await session.commit(batch)
            assert [(c.replica_id, c.user) for c in await store.changes("acme", CHANGES, 10)] == [
                ("tablet-9", "user-1"),
                ("tablet-9", "user-1"),
            ]
            assert (await store.changes("globex", 0, 1000)) == old_changes("globex")
            await store.create_tenant("initech", factories.key("initech"), 2)
            erased = await store.erase_tenant("acme")
            assert erased["changes"] == CHANGES + 2
            assert erased["log_names"] == 6  # phone-1, phone-2, web-1, driver-17, tablet-9, user-1
            assert erased["entities"] == len(old_entities("acme")) + 2
            assert erased["entity_channels"] == len(old_entities("acme"))
            assert await store.changes("globex", 0, 1000) == old_changes("globex")

    asyncio.run(after())

    def numbered(conn: Connection) -> None:
        columns = {c["name"] for c in inspect(conn).get_columns("changes")}
        assert {"tenant_no", "replica_no", "user_no"} <= columns
        assert not {"tenant_id", "replica_id", "user_sub"} & columns
        assert conn.execute(select(tenants.c.id, tenants.c.no).order_by(tenants.c.id)).all() == [
            ("globex", 2),
            ("initech", 3),
        ]
        names = conn.execute(select(log_names.c.name).where(log_names.c.tenant_id == "globex")).scalars().all()
        assert sorted(names) == ["driver-17", "phone-1", "phone-2", "web-1"]  # "phone-1" once: replica and user

    asyncio.run(_run_sql(url, numbered))
