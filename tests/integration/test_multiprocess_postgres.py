"""Two server processes write one PostgreSQL tenant at once; a paging reader sees every change once, in order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from syncserver.testing import cli, free_port, running_server, server_env

WRITERS = 4
BATCHES = 12
BATCH = 25

LOGGED = "SELECT seq FROM changes WHERE tenant_no = (SELECT no FROM tenants WHERE id = %s) ORDER BY seq"


async def _writer(base: str, token: str, replica: str) -> list[str]:
    entities = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        n = 0
        for _ in range(BATCHES):
            changes = []
            for _ in range(BATCH):
                n += 1
                entity = f"{replica}-{n}"
                entities.append(entity)
                changes.append(
                    {
                        "id": str(uuid.uuid4()),
                        "n": n,
                        "collection": "deliveries",
                        "entity": entity,
                        "hlc": [1, 0],
                        "context": {},
                        "ops": [{"op": "set", "field": "status", "value": "pending"}],
                    }
                )
            r = await c.post("/v1/sync/push", json={"replica": replica, "changes": changes})
            assert r.status_code == 200, r.text
            assert all(x["status"] == "applied" for x in r.json()["results"])
    return entities


async def _reader(base: str, token: str, done: asyncio.Event) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    cursor = None
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        while True:
            finished = done.is_set()
            r = await c.post("/v1/sync/pull", json={"cursor": cursor, "limit": 37})
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [(e["seq"], e["entity"]) for e in body["changes"]]
            cursor = body["cursor"]
            if finished and not body["more"]:
                return seen
            if not body["more"]:
                await asyncio.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_processes_keep_seqs_gap_free_and_readers_see_each_change_once(pg_url: str, tmp_path: Path) -> None:
    env = server_env(tmp_path, pg_url)
    cli(env, "db", "upgrade")
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    cli(env, "tenant", "create", tenant)
    token = cli(env, "token", "issue", "--tenant", tenant, "--sub", "loader", "--role", "dispatcher")
    env["SYNC_MIGRATE_ON_START"] = "0"
    # Both processes train the tenant's dictionary while they write (ADR 0034): one or two rotations.
    env["SYNC_DICTIONARY_AFTER_CHANGES"] = "300"
    p1, p2 = free_port(), free_port()
    with running_server(env, p1, tmp_path / "a.log") as a, running_server(env, p2, tmp_path / "b.log") as b:
        done = asyncio.Event()
        reader = asyncio.create_task(_reader(b, token, done))
        written = await asyncio.gather(*(_writer(a if i % 2 == 0 else b, token, f"dev{i}") for i in range(WRITERS)))
        done.set()
        seen = await asyncio.wait_for(reader, timeout=60)

    total = WRITERS * BATCHES * BATCH
    seqs = [s for s, _ in seen]
    assert seqs == sorted(seqs), "the reader saw seqs out of order"
    assert sorted(e for _, e in seen) == sorted(e for w in written for e in w), "a change was missed or repeated"
    assert seqs == list(range(1, total + 1)), "seqs are not gap-free"
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        logged = [r[0] for r in conn.execute(LOGGED, (tenant,))]
        # The change log's hash chain stayed whole: both processes extended it under the tenant lock.
        checkpoints = conn.execute("SELECT seq FROM chain_checkpoints WHERE tenant_id=%s", (tenant,)).fetchall()
        versions = conn.execute(
            "SELECT version, dictionary IS NOT NULL FROM tenant_keys WHERE tenant_id=%s ORDER BY version", (tenant,)
        ).fetchall()
        with_dictionary = [v for v, has in versions if has]
        compressed = conn.execute(
            "SELECT count(*) FROM changes WHERE tenant_no = (SELECT no FROM tenants WHERE id = %s)"
            " AND key_version = ANY(%s)",
            (tenant, with_dictionary),
        ).fetchone()
    assert versions[0] == (1, False)
    assert 1 <= len(with_dictionary) <= 2, versions  # at most one rotation per process
    assert compressed is not None
    assert compressed[0] > 0, "no change was written under a version with a dictionary"
    assert logged == list(range(1, total + 1))
    assert [r[0] for r in checkpoints] == [1000]
    cli(env, "verify", "--tenant", tenant)  # exits 1 (and cli raises) on any broken link
