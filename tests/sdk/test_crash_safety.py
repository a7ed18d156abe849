"""A client process SIGKILLed at random moments loses nothing and applies nothing twice.

Each round: a fresh replica writes 1,000 changes in a subprocess, printing ids
once their commit returned, and syncs in batches of 50. We SIGKILL it at a
random moment (the first round while it writes, one commit per write; the
others during the sync), restart it to drain its outbox, then read the real
server's change log straight from its database.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncclient import HttpTransport
from syncproto.messages import EntityView
from syncserver.testing import ROOT
from tests.sdk.conftest import ServerProcess, assert_exactly_once, pull_everything

WRITES = 1000
ROUNDS = 8
COD_TOTAL = sum(i for i in range(WRITES) if i % 4 == 1)


def child(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.sdk.crash_child", *args]


@dataclass
class Round:
    ids: list[str]
    finished: bool
    sync_seconds: float | None


def run_and_kill(cmd: list[str], kill_after_ids: int | None, kill_after_s: float) -> Round:
    """Start the writer and SIGKILL it after ``kill_after_ids`` ids or ``kill_after_s`` into its sync."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        assert proc.stdout is not None
        ids: list[str] = []
        for line in proc.stdout:
            word = line.strip()
            if word == "SYNC":
                time.sleep(kill_after_s)
                break
            ids.append(word)
            if kill_after_ids is not None and len(ids) >= kill_after_ids:
                break
        proc.kill()
        proc.wait(timeout=10)
        rest = proc.stdout.read().split()
    done = rest.index("DONE") if "DONE" in rest else None
    ids += [w for w in rest[:done] if w != "SYNC"]
    return Round(ids, done is not None, float(rest[done + 2]) if done is not None else None)


@pytest.mark.slow
def test_a_client_killed_mid_sync_drains_on_restart_with_every_change_exactly_once(
    real_server: ServerProcess, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    token = real_server.token("crash-tester")
    window = 0.6  # seconds after "SYNC" to pick the kill from; shrinks if the sync is faster here
    interrupted = 0
    replicas = []
    for round_ in range(ROUNDS):
        replica = f"crash-{uuid.uuid4().hex[:8]}"
        replicas.append(replica)
        db = str(tmp_path / f"{replica}.db")
        if round_ == 0:
            # Killed while writing, one commit per write: every id printed must survive.
            cmd = child("write", real_server.url, token, replica, db, str(WRITES), "1")
            result = run_and_kill(cmd, rng.randint(1, 300), 0.0)
        else:
            cmd = child("write", real_server.url, token, replica, db, str(WRITES), "50")
            result = run_and_kill(cmd, None, rng.uniform(0.0, window))
            interrupted += not result.finished
            if result.sync_seconds is not None:
                window = min(window, result.sync_seconds * 0.9)

        drained = subprocess.run(
            child("drain", real_server.url, token, replica, db), capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert drained.stdout.split()[-3:-1] == ["DONE", "0"], f"seed {seed}: {drained.stderr}"

        log = asyncio.run(real_server.change_log())
        mine = assert_exactly_once(log, replica, set(result.ids))
        if round_ == 0:
            # A write may be committed but killed before it printed its id: at most one more.
            assert len(result.ids) <= len(mine) <= len(result.ids) + 1, f"seed {seed}"
        else:
            assert len(mine) == WRITES, f"seed {seed}"
    assert interrupted >= (ROUNDS - 1) // 2, f"seed {seed}: most kills must land before the sync finished"

    # The merged state counts every increment exactly once too.
    async def views() -> dict[tuple[str, str], EntityView]:
        transport = HttpTransport(real_server.url, real_server.token("admin", "admin"))
        try:
            return await pull_everything(transport)
        finally:
            await transport.aclose()

    state = asyncio.run(views())
    for replica in replicas[1:]:
        cod = sum(
            v.fields["cod_cents"].value
            for (_, entity), v in state.items()
            if entity.startswith(replica) and "cod_cents" in v.fields
        )
        assert cod == COD_TOTAL, f"seed {seed}: {replica}"
