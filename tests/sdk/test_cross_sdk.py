"""The Python SDK and the browser SDK (client-sdk/js, run under node with fake-indexeddb)
edit the same deliveries offline against a real server, sync, and converge to the same
bytes: the same views and the same Yjs text.

Needs node and npm; without them the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from syncclient import SyncClient
from syncproto.crdt import text
from syncproto.messages import json_encoder
from syncserver.testing import ROOT
from tests import services
from tests.sdk.conftest import SCHEMA, ServerProcess

JS = ROOT / "client-sdk" / "js"
# The server's collections.toml, as the browser SDK's schema option.
JS_SCHEMA = {
    "deliveries": {
        "on_delete": "update_wins",
        "fields": {
            "status": {"kind": "register", "rule": "precedence", "order": ["delivered", "failed", "out_for_delivery"]},
            "cod_cents": {"kind": "counter"},
            "scanned": {"kind": "set"},
            "notes": {"kind": "text"},
            "trail": {"kind": "log"},
        },
    }
}


@pytest.fixture(scope="module")
def js_build() -> Path:
    """``client-sdk/js/dist``, built from the sources (``npm ci`` first if needed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed to run the browser SDK"
        if services.IN_CI:
            pytest.fail(message + "; under CI=true this is a failure, not a skip", pytrace=False)
        pytest.skip(message)
    if not (JS / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True)
    subprocess.run([npm, "run", "build"], cwd=JS, check=True, capture_output=True)
    return JS / "dist"


class NodePeer:
    """A browser SDK client in a node process (client-sdk/js/test-support/peer.mjs), one JSON line per command."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = 0

    async def __call__(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.ids += 1
        self.proc.stdin.write(json.dumps({"id": self.ids, "cmd": cmd, "args": args}).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line, "the node peer exited"
        answer = json.loads(line)
        assert answer["id"] == self.ids
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    async def call(self, method: str, *params: Any) -> Any:
        return await self("call", collection="deliveries", method=method, params=list(params))


@pytest.fixture
async def js_peer(js_build: Path) -> AsyncIterator[NodePeer]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS / "test-support" / "peer.mjs"),
        cwd=JS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 << 20,  # one answer is one line; a view with a Yjs state can pass the 64 KiB default
    )
    try:
        yield NodePeer(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def as_json(view: Any) -> dict[str, Any]:
    """An EntityView (msgspec struct or the JS object) as plain JSON data."""
    data: dict[str, Any] = json.loads(json_encoder.encode(view)) if not isinstance(view, dict) else view
    return {"fields": {}, **data}


def yjs_text(view: dict[str, Any], field: str) -> str:
    return text.value(text.TextState(base64.b64decode(view["fields"][field]["update"])))


async def test_python_and_browser_sdks_edit_offline_and_converge(
    real_server: ServerProcess, js_peer: NodePeer, tmp_path: Path
) -> None:
    url = real_server.url
    py = SyncClient(url, real_server.token("dispatcher-py"), "py-1", tmp_path / "py.db", schema=SCHEMA)
    await js_peer("open", url=url, token=real_server.token("dispatcher-js"), replicaId="web-js-1", schema=JS_SCHEMA)
    d = py.collection("deliveries")
    for entity in ("x-dlv-1", "x-dlv-2"):
        d.set(entity, status="out_for_delivery", driver_id="driver-1")
        d.inc(entity, "cod_cents", 1000)
        d.add(entity, "scanned", "parcel-0")
        d.edit_text(entity, "notes", 0, 0, "Leave at door 🚪")
    await py.sync()
    await js_peer("sync")

    # Offline on both sides: concurrent edits of every field kind, a delete against an update.
    d.set("x-dlv-1", status="failed")
    d.inc("x-dlv-1", "cod_cents", 500)
    d.add("x-dlv-1", "scanned", "parcel-1")
    d.edit_text("x-dlv-1", "notes", 0, 0, "Ring 🔔 then ")
    d.append("x-dlv-1", "trail", {"lat": 25.2, "lon": 55.27})
    d.delete("x-dlv-2")
    await js_peer.call("set", "x-dlv-1", {"status": "delivered"})
    await js_peer.call("inc", "x-dlv-1", "cod_cents", 1250)
    await js_peer.call("add", "x-dlv-1", "scanned", "parcel-2")
    await js_peer.call("remove", "x-dlv-1", "scanned", "parcel-0")
    await js_peer.call("editText", "x-dlv-1", "notes", 15, 0, " — gate 4321 ✓")  # after the emoji: code points
    await js_peer.call("append", "x-dlv-1", "trail", {"lat": 25.3, "lon": 55.3})
    await js_peer.call("set", "x-dlv-2", {"eta": 12})
    mine = await js_peer.call("get", "x-dlv-1")
    assert mine["notes"] == "Leave at door 🚪 — gate 4321 ✓"  # optimistic, before any sync

    await py.sync()
    stats = await js_peer("sync")
    assert (stats["pushed"], stats["rejected"]) == (7, 0)
    await py.sync()

    for entity in ("x-dlv-1", "x-dlv-2"):
        py_view = as_json(d.view(entity))
        js_view = as_json((await js_peer("views", collection="deliveries"))[entity])
        assert js_view == py_view, entity
    stored = {v["entity"]: v for v in await js_peer("stored", collection="deliveries")}
    one = as_json(d.view("x-dlv-1"))
    assert stored["x-dlv-1"]["fields"]["notes"]["update"] == one["fields"]["notes"]["update"]  # the same Yjs bytes
    assert yjs_text(one, "notes") == "Ring 🔔 then Leave at door 🚪 — gate 4321 ✓"
    assert one["fields"]["status"]["value"] == "delivered"  # precedence over the concurrent "failed"
    assert sorted(s["value"] for s in one["fields"]["status"]["siblings"]) == ["delivered", "failed"]
    assert one["fields"]["cod_cents"]["value"] == 1000 + 500 + 1250
    assert one["fields"]["scanned"]["value"] == ["parcel-1", "parcel-2"]
    assert len(one["fields"]["trail"]["value"]) == 2
    two = as_json(d.view("x-dlv-2"))
    assert two["deleted"] is False
    assert two["fields"]["eta"]["value"] == 12
    await js_peer("close")
    await py.aclose()


async def test_a_python_change_reaches_the_browser_sdk_live_over_the_websocket(
    real_server: ServerProcess, js_peer: NodePeer, tmp_path: Path
) -> None:
    url = real_server.url
    py = SyncClient(url, real_server.token("dispatcher-py2"), "py-2", tmp_path / "py2.db", schema=SCHEMA)
    await js_peer(
        "open",
        url=url,
        token=real_server.token("dispatcher-js2"),
        replicaId="web-js-2",
        schema=JS_SCHEMA,
        transport="ws",
    )
    await js_peer.call("set", "live-dlv-1", {"status": "out_for_delivery"})
    await js_peer("start")
    for _ in range(200):  # the loop connects, pushes the queued write and catches up
        status = await js_peer("status")
        if status["connection"] == "live" and status["outbox"] == 0:
            break
        await asyncio.sleep(0.05)
    assert status["connection"] == "live"
    assert status["leader"] is True
    await py.sync()
    assert py.collection("deliveries").get("live-dlv-1") == {"status": "out_for_delivery"}

    py.collection("deliveries").set("live-dlv-1", status="delivered")
    await py.sync()
    for _ in range(100):  # no sync() on the browser side: the change arrives on the stream
        got = await js_peer.call("get", "live-dlv-1")
        if got == {"status": "delivered"}:
            break
        await asyncio.sleep(0.05)
    assert got == {"status": "delivered"}
    events = await js_peer("events")
    assert any(e["type"] == "remote_change" and e["entity"] == "live-dlv-1" for e in events)
    await js_peer("close")
    await py.aclose()


def test_the_build_has_the_entries_the_package_exports(js_build: Path) -> None:
    """The built package exports what the PWA imports (entry and service-worker entry)."""
    names = msgspec.json.decode((JS / "package.json").read_bytes())["exports"]
    assert set(names) == {".", "./sw"}
    assert (js_build / "index.js").is_file()
    assert (js_build / "sw.js").is_file()
