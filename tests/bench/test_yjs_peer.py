"""The Yjs WebSocket server peer (``benchmarks/peers/yjs.py``): installs, starts, relays, converges.

Needs node and npm (the install is cached in ``benchmarks/.peers/yjs``, which git
ignores). Without them the test skips with the reason; under ``CI=true`` that is
a failure. Asserts correctness only (every change reached every subscriber, the
replayed text converged), never speed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from benchmarks.peers import yjs
from benchmarks.scenarios.text import TRACES
from syncserver.testing import free_port
from tests import services

pytestmark = pytest.mark.slow
TRACE = TRACES / "automerge-paper.json.gz"


def unavailable(message: str) -> NoReturn:
    if services.IN_CI:
        pytest.fail(f"{message}; under CI=true this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("the Yjs peer needs node and npm (apt-get install nodejs npm)")
    try:
        yjs.install()
    except yjs.PeerUnavailable as exc:
        unavailable(str(exc))
    with yjs.yjs_server(tmp_path_factory.mktemp("yjs")) as url:
        yield url


def test_install_pins_the_server_version(server: str) -> None:
    assert server.startswith("ws://127.0.0.1:")
    assert yjs.is_installed()
    assert yjs.installed_version() == yjs.VERSION


def test_fanout_reaches_every_subscriber(server: str) -> None:
    found = yjs.fanout(server, subscribers=6, changes=5, interval_ms=20, timeout_s=60, client_procs=2)
    assert found["subscribers"] == 6
    assert found["changes"] == 5
    assert found["client_procs"] == 2
    assert found["missing"] == 0
    assert found["duplicates"] == 0
    assert found["unexpected"] == 0
    assert len(found["latencies_ms"]) == 30
    assert all(latency >= 0 for latency in found["latencies_ms"])  # one clock across the processes
    assert 0 <= found["p50_ms"] <= found["p99_ms"] <= found["max_ms"]
    assert found["reconnects"] == 0


def test_fanout_that_cannot_connect_times_out(server: str) -> None:
    with pytest.raises(RuntimeError, match=r"timed out waiting for 2 subscribers"):
        yjs.fanout(f"ws://127.0.0.1:{free_port()}", subscribers=2, changes=1, interval_ms=0, timeout_s=2)


def test_text_replay_converges(server: str) -> None:
    if not TRACE.exists():
        pytest.skip(f"the editing trace {TRACE.name} is not in the shared/ folder beside the repository")
    found = yjs.text(server, TRACE, edits=2_000, timeout_s=60)
    assert found["edits"] == 2_000
    assert found["final_equals_end"] is True
    assert found["subscriber_equals_writer"] is True
    assert found["writer_s"] > 0
    assert found["converged_s"] >= found["writer_s"]
    assert found["edits_per_s"] > 0


def test_client_failure_carries_stderr(server: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)yjs_client\.mjs text failed.*ENOENT"):
        yjs.text(server, tmp_path / "no-such-trace.json.gz", edits=10, timeout_s=30)
