"""The server process is SIGKILLed in the middle of a push and restarted: the client completes, exactly once."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import pytest

from syncclient import HttpTransport, SyncClient, TransportError
from syncproto.messages import PushRequest, PushResponse
from tests.sdk.conftest import SCHEMA, ServerProcess, assert_exactly_once

CHANGES = 3000
BATCH = 250


class KillingTransport(HttpTransport):
    """SIGKILLs the server a random few milliseconds after sending push number ``kill_on``."""

    def __init__(self, server: ServerProcess, token: str, rng: random.Random) -> None:
        super().__init__(server.url, token, timeout=10)
        self.server = server
        self.rng = rng
        self.pushes = 0
        self.kill_on: int | None = None

    async def push(self, request: PushRequest) -> PushResponse:
        self.pushes += 1
        if self.pushes == self.kill_on:
            # From another thread, so the kill can land while the request is on the wire or being committed.
            threading.Timer(self.rng.uniform(0.0, 0.03), self.server.kill).start()
        return await super().push(request)


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    return ServerProcess(tmp_path / "srv")


@pytest.mark.slow
async def test_a_push_cut_by_a_server_kill_completes_after_restart_exactly_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    await asyncio.to_thread(server.start)
    token = server.token("driver-17")
    transport = KillingTransport(server, token, rng)
    client = SyncClient(
        server.url, token, "phone-a", tmp_path / "phone.db", transport=transport, schema=SCHEMA, batch_size=BATCH
    )
    try:
        d = client.collection("deliveries")
        with client.batch():
            written = [d.inc(f"dlv-{i % 25}", "cod_cents", 1) for i in range(CHANGES)]

        kills = 0
        for kill_on in (2, 5):  # the 2nd push of the first sync, then the 5th push of the resumed one
            transport.kill_on = transport.pushes + kill_on
            with pytest.raises(TransportError):
                await client.sync()
            kills += 1
            assert client.pending_count() > 0, f"seed {seed}: the kill came after the last push"
            await asyncio.to_thread(server.start)  # same file, same port, same secrets

        transport.kill_on = None
        stats = await client.sync()
        assert client.pending_count() == 0
        assert kills == 2
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)

    log = await server.change_log()
    mine = assert_exactly_once(log, "phone-a", {c.id for c in written})
    assert len(mine) == CHANGES, f"seed {seed}"
    assert stats.applied + stats.duplicates <= CHANGES
    total = sum(v["cod_cents"] for v in client_state(tmp_path).values())
    assert total == CHANGES, f"seed {seed}: every increment counted once"


def client_state(tmp_path: Path) -> dict[str, dict[str, int]]:
    """Reopen the phone's file: its pulled state, after the last sync, is the server's."""
    reopened = SyncClient("http://unused", "t", "phone-a", tmp_path / "phone.db", schema=SCHEMA)
    try:
        return reopened.collection("deliveries").list()
    finally:
        reopened.store.close()
