"""``0009_packed_change_ids`` (ADR 0039) on a database written by the previous release.

The previous release stored every change id as text and every context as JSON naming the change's own
replica. After the upgrade those rows read exactly as before, rows written from then on are packed (a
canonical UUID id as 16 bytes, the own replica as ``""``), both kinds read together, and a downgrade
unpacks them again.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

from syncstore import PushBatch
from syncstore.migrate import alembic_config, run_locked, upgrade
from syncstore.records import ChangeRecord
from syncstore.sql_log import of_tenant
from syncstore.tables import changes
from tests.contract import factories
from tests.contract.factories import NOW
from tests.contract.test_sql_store import opened

PREVIOUS = "0008_key_dictionary"
TENANT = "acme"
REPLICA = "web-3f2b6c1a-9d84-4e57-b0a2-6c1d9e8f7a30"


def sdk_change(seq: int, change_id: str | None = None) -> ChangeRecord:
    """A change as the browser SDK makes it: a dashed UUID id, the device's previous change in its context."""
    return msgspec.structs.replace(
        factories.change(seq, f"dlv-{seq % 4}", replica_id=REPLICA, n=seq),
        change_id=change_id or str(uuid.UUID(int=seq * 7919)),
        context={REPLICA: seq - 1, "dispatch-1": 3} if seq > 1 else {},
    )


OLD = [sdk_change(seq) for seq in range(1, 11)] + [sdk_change(11, "custom id 11"), sdk_change(12, uuid.uuid4().hex)]


def write_previous_release(conn: Connection) -> None:
    """The rows of ``OLD`` as the previous release's push wrote them: ids as text, contexts as sorted JSON."""
    conn.execute(
        text("INSERT INTO log_names (tenant_id, no, name) VALUES (:t, 1, :replica), (:t, 2, 'user-1')"),
        {"t": TENANT, "replica": REPLICA},
    )
    conn.execute(
        text(
            "INSERT INTO changes (tenant_no, seq, change_id, collection, entity_id, replica_no, n, hlc_wall,"
            " hlc_counter, user_no, context, key_version, payload, created_at, chain) SELECT no, :seq, :change_id,"
            " :collection, :entity_id, 1, :n, :hlc_wall, :hlc_counter, 2, :context, :key_version, :payload,"
            " :created_at, :chain FROM tenants WHERE id = :t"
        ),
        [
            {
                **{k: v for k, v in msgspec.structs.asdict(c).items() if k not in ("hlc", "user", "replica_id")},
                "hlc_wall": c.hlc[0],
                "hlc_counter": c.hlc[1],
                "context": msgspec.json.encode(c.context, order="sorted").decode(),
                "t": TENANT,
            }
            for c in OLD
        ],
    )
    conn.execute(text("UPDATE tenants SET last_seq = :seq WHERE id = :t"), {"seq": len(OLD), "t": TENANT})


def _downgrade(url: str) -> None:
    config = alembic_config()

    def work(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, PREVIOUS)

    asyncio.run(run_locked(url, work))


def test_the_previous_releases_log_reads_the_same_and_new_changes_are_packed(migration_url: str) -> None:
    url = migration_url
    asyncio.run(upgrade(url, PREVIOUS))

    async def create() -> None:
        async with opened(url) as store:
            await store.create_tenant(TENANT, factories.key(TENANT), NOW)

    asyncio.run(create())
    asyncio.run(run_locked(url, write_previous_release))
    asyncio.run(upgrade(url))

    new = [sdk_change(seq) for seq in range(len(OLD) + 1, len(OLD) + 4)]

    async def after() -> None:
        async with opened(url) as store:
            assert await store.changes(TENANT, 0, 100) == OLD
            async with store.push_session(TENANT) as session:
                assert await session.dot_change_id(REPLICA, 11) == "custom id 11"
                assert await session.dot_change_id(REPLICA, 3) == OLD[2].change_id
                await session.commit(PushBatch(last_seq=new[-1].seq, changes=new))
            assert await store.changes(TENANT, 0, 100) == OLD + new
            assert await store.change_at(TENANT, REPLICA, new[0].n) == new[0]
            stored = await store.database.rows(
                select(changes.c.seq, changes.c.change_id, changes.c.change_uuid, changes.c.context)
                .where(of_tenant(changes, TENANT))
                .order_by(changes.c.seq)
            )
            assert [(r["change_id"], r["change_uuid"]) for r in stored[:2]] == [(c.change_id, None) for c in OLD[:2]]
            assert [(r["change_id"], bytes(r["change_uuid"])) for r in stored[len(OLD) :]] == [
                ("", uuid.UUID(c.change_id).bytes) for c in new
            ]
            assert {r["context"] for r in stored[len(OLD) :]} == {'{"":1,"dispatch-1":3}'}

    asyncio.run(after())

    _downgrade(url)  # unpacks what was written since: the previous release reads text ids and full contexts

    def as_previous_release_wrote(conn: Connection) -> None:
        stored = conn.execute(
            text("SELECT change_id, context FROM changes ORDER BY seq"),
        ).all()
        assert [(r.change_id, r.context) for r in stored] == [
            (c.change_id, msgspec.json.encode(c.context, order="sorted").decode()) for c in OLD + new
        ]
        assert "change_uuid" not in {c["name"] for c in inspect(conn).get_columns("changes")}

    asyncio.run(run_locked(url, as_previous_release_wrote))
    asyncio.run(upgrade(url))

    async def again() -> None:
        async with opened(url) as store:
            assert await store.changes(TENANT, 0, 100) == OLD + new

    asyncio.run(again())
