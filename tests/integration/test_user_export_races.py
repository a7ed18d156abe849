"""The user export (GDPR access) while the tenant keeps living: keys rotate, attachments are re-encrypted or
deleted, clients leave, the CLI is stopped.

An export takes as long as the user's data takes to send (a driver's thousand
photos over a slow link): what happens meanwhile must not make intact data
look damaged, nor leave a partial file where a complete one is expected, nor
leave the audit log without its closing row.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result

from syncserver.admin.tenants import create_tenant
from syncserver.attachments.chunks import SealedBlob
from syncserver.attachments.keyops import AttachmentGone
from syncserver.attachments.settings import AttachmentSettings
from syncserver.cli import main
from syncserver.integrity import quarantine
from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.operations import KeyOps
from syncserver.keys.subjects import UserExport
from syncserver.services import open_services
from syncserver.settings import Settings
from syncserver.testing import server_env
from syncstore.adminstore import AdminStore
from syncstore.attachments import AttachmentRecord
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_user_export_stream import (
    CHUNK,
    audit,
    chunk_files,
    flip,
    integrity_failures,
    seed,
    stored,
    subjects,
    tamper_after_its_check,
)


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    files = AttachmentSettings(chunk_bytes=CHUNK)
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", attachments=files)):
        yield s


async def read_until(pieces: AsyncIterator[bytes], marker: bytes) -> list[bytes]:
    """Pieces of an export up to the one after which ``marker`` is in what was read."""
    read: list[bytes] = []
    while marker not in b"".join(read):
        read.append(await anext(pieces))
    return read


async def closing_rows(s: Server, tenant: str, count: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """The ``user.export`` rows once ``count`` of them are not ``start`` (a shielded write may finish later)."""
    deadline = time.monotonic() + 10
    while True:
        rows = await audit(s, tenant)
        if len([r for r in rows if r[1].get("phase") != "start"]) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


def attachment_failures(tenant: str) -> list[str]:
    return [f.row for f in quarantine.recent(tenant) if f.table == "attachments"]


# Keys rotated during an export (item: a cipher per page, holding the versions of its rows).

WHERE = {
    "changes": b'"changes":[\n{',  # the first change is written, the next page not read yet
    "dead letters": b'"dead_letters":[\n{',  # the first dead letter is written
    "attachments": b'"attachments":[',  # before the attachments are listed
}


@pytest.mark.parametrize("where", list(WHERE))
async def test_rows_sealed_under_a_key_another_process_rotated_to_meanwhile_are_exported(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Another process (the CLI, a scheduled job) rotates the tenant's key and re-encrypts every row and attachment
    while an export runs here: the rows it reads from then on are under a version this process's cached keys
    lack. They are intact: they are exported, not reported as failing their integrity check."""
    monkeypatch.setattr("syncserver.keys.subjects.PAGE", 1)  # a page per row: the rotation falls between pages
    s = fs_server
    tenant = await s.tenant()
    mine = s.headers(tenant, "d-17")
    await s.push(
        mine, "phone-17", [change(n, "dlv-1", [{"op": "set", "field": "note", "value": f"n{n}"}]) for n in (1, 2, 3)]
    )
    await s.push(mine, "phone-17", [change(n, "dlv-1", [{"op": "inc", "field": "note", "by": 1}]) for n in (4, 5)])
    data = os.urandom(2 * CHUNK + 1)
    ref = await stored(s, tenant, "d-17", data)
    store = s.app.state.store
    provider = s.app.state.key_provider
    elsewhere = KeyOps(
        store,
        TenantKeyring(store, provider, ttl_s=3600),
        provider,
        s.app.state.schema,
        attachments=s.app.state.attachment_keys,
    )

    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
    pieces = aiter(stream)
    sent = await read_until(pieces, WHERE[where])
    assert (await elsewhere.rotate(tenant, "cron")).version == 2  # this process's keyring is not told
    assert (await elsewhere.reencrypt(tenant, "cron")).remaining == 0
    assert (await s.app.state.keyring.cipher(tenant)).current_version == 1  # still cached here
    sent += [piece async for piece in pieces]

    export = msgspec.json.decode(b"".join(sent), type=UserExport)
    assert export.unavailable == []
    assert [c.n for c in export.changes] == [1, 2, 3]
    assert [d.n for d in export.dead_letters] == [5, 4]
    assert [(a.id, a.content_b64) for a in export.attachments] == [(ref.id, base64.b64encode(data).decode())]
    assert quarantine.recent(tenant) == []
    assert (await audit(s, tenant))[-1] == ("user.export", {"changes": 3, "dead_letters": 2, "attachments": 1})


# Attachments re-encrypted or deleted during an export.


def track_blobs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every blob an export reads, as (attachment id, key version), in order."""
    opened: list[tuple[str, int]] = []
    real = SealedBlob.of.__func__  # type: ignore[attr-defined]

    def of(cls: type[SealedBlob], blobs: Any, cipher: Any, row: AttachmentRecord) -> SealedBlob:
        opened.append((row.id, row.key_version))
        blob: SealedBlob = real(cls, blobs, cipher, row)
        return blob

    monkeypatch.setattr(SealedBlob, "of", classmethod(of))
    return opened


async def test_attachments_re_encrypted_while_exported_are_read_from_their_new_objects(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keys rotate`` and ``keys reencrypt`` while the first attachment streams: its old objects go, and the
    rows listed with it name a version whose objects are gone. The first goes on from its new objects where it
    was; the others are read again before their turn. Every byte is exported, nothing is called damaged."""
    s = fs_server
    tenant = await s.tenant()
    admin = s.headers(tenant, "ops", "admin")
    files = {
        ref.id: data
        for data in [os.urandom(2 * CHUNK + 7) for _ in range(3)]
        for ref in [await stored(s, tenant, "d-17", data)]
    }
    first, *others = sorted(files)
    opened = track_blobs(monkeypatch)
    before = integrity_failures()

    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
    pieces = aiter(stream)
    sent = await read_until(pieces, b'"content_b64":"')  # the first attachment's bytes have begun
    exporting = len(opened)
    assert (await s.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
    assert (await s.client.post("/v1/admin/keys/reencrypt", headers=admin)).json()["remaining"] == 0
    del opened[exporting:]  # the re-encryption's own reads
    for attachment_id in files:  # only the new version's objects are left
        assert {p.parent.name for p in (s.settings.data_dir / "blobs" / tenant / attachment_id).rglob("0*")} == {"v2"}
    sent += [piece async for piece in pieces]

    export = msgspec.json.decode(b"".join(sent), type=UserExport)
    assert export.unavailable == []
    assert {a.id: a.content_b64 for a in export.attachments} == {
        i: base64.b64encode(data).decode() for i, data in files.items()
    }
    assert opened == [(first, 1), (first, 2)] + [(i, 2) for i in others]  # the first went on from version 2
    assert integrity_failures() == before
    assert attachment_failures(tenant) == []
    assert (await audit(s, tenant))[-1] == ("user.export", {"changes": 0, "dead_letters": 0, "attachments": 3})


async def test_an_attachment_deleted_before_its_turn_is_left_out(fs_server: Server) -> None:
    """Deleted (GC, the discard of a refused upload) after the attachments were listed, before its turn: it is
    no longer the user's data. Left out, not named as failing its check."""
    s = fs_server
    tenant = await s.tenant()
    refs = sorted([(await stored(s, tenant, "d-17", os.urandom(CHUNK + 1))).id for _ in range(2)])
    before = integrity_failures()
    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
    pieces = aiter(stream)
    sent = await read_until(pieces, b'"content_b64":"')  # the first is streaming; both were listed
    uploads = s.app.state.services.uploads
    await uploads.discard(await uploads.meta.get_attachment(tenant, refs[1]))
    sent += [piece async for piece in pieces]

    export = msgspec.json.decode(b"".join(sent), type=UserExport)
    assert [a.id for a in export.attachments] == [refs[0]]
    assert export.unavailable == []
    assert integrity_failures() == before
    assert attachment_failures(tenant) == []
    assert (await audit(s, tenant))[-1] == ("user.export", {"changes": 0, "dead_letters": 0, "attachments": 1})


def after_check(monkeypatch: pytest.MonkeyPatch, then: Callable[[SealedBlob], Awaitable[None]]) -> None:
    """Run ``then`` after an attachment's chunks passed their check, before they are read again to be sent."""
    checked = SealedBlob.verify

    async def check_then(self: SealedBlob, start: int = 0, end: int | None = None) -> None:
        await checked(self, start, end)
        await then(self)

    monkeypatch.setattr(SealedBlob, "verify", check_then)


@pytest.mark.parametrize("what", ["deleted", "re-encrypted"])
async def test_an_attachment_changed_while_it_is_checked_is_not_called_damaged(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Deleted or re-encrypted after its row was read again for its turn, while its chunks are checked: its check
    fails on objects that are gone. Read again, it is left out (deleted) or checked again on its new objects."""
    s = fs_server
    tenant = await s.tenant()
    admin = s.headers(tenant, "ops", "admin")
    data = os.urandom(3 * CHUNK)
    ref = await stored(s, tenant, "d-17", data)
    uploads = s.app.state.services.uploads
    checked = SealedBlob.verify
    changed = False

    async def change_then_check(self: SealedBlob, start: int = 0, end: int | None = None) -> None:
        nonlocal changed
        if not changed:
            changed = True
            if what == "deleted":
                await uploads.discard(await uploads.meta.get_attachment(tenant, ref.id))
            else:
                assert (await s.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
                assert (await s.client.post("/v1/admin/keys/reencrypt", headers=admin)).json()["remaining"] == 0
        await checked(self, start, end)

    monkeypatch.setattr(SealedBlob, "verify", change_then_check)
    before = integrity_failures()
    export = await subjects(s).export_user(tenant, "d-17", "test")
    assert changed
    assert export.unavailable == []
    expected = [] if what == "deleted" else [(ref.id, base64.b64encode(data).decode())]
    assert [(a.id, a.content_b64) for a in export.attachments] == expected
    assert integrity_failures() == before
    assert attachment_failures(tenant) == []


async def test_an_attachment_deleted_after_its_check_before_its_first_byte_is_left_out(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = fs_server
    tenant = await s.tenant()
    doomed = await stored(s, tenant, "d-17", os.urandom(3 * CHUNK))
    uploads = s.app.state.services.uploads

    async def delete(blob: SealedBlob) -> None:
        if blob.owner == doomed.id:
            await uploads.discard(await uploads.meta.get_attachment(tenant, doomed.id))

    after_check(monkeypatch, delete)
    before = integrity_failures()
    export = await subjects(s).export_user(tenant, "d-17", "test")
    assert (export.attachments, export.unavailable) == ([], [])
    assert integrity_failures() == before
    assert (await audit(s, tenant))[-1] == ("user.export", {"changes": 0, "dead_letters": 0})


async def test_stored_bytes_failing_after_the_check_but_before_the_first_byte_are_named_not_a_cut(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first chunk fails when read to be sent, its row unchanged: nothing of it has been written yet, so it is
    listed as failing its check (``content_b64`` null, in ``unavailable``) and the export goes on."""
    s = fs_server
    tenant = await s.tenant()
    bad = await stored(s, tenant, "d-17", os.urandom(2 * CHUNK))
    victim = chunk_files(s.settings.data_dir, tenant, bad)[0]

    async def tamper(blob: SealedBlob) -> None:
        flip(victim)

    after_check(monkeypatch, tamper)
    export = await subjects(s).export_user(tenant, "d-17", "test")
    assert [(a.id, a.content_b64) for a in export.attachments] == [(bad.id, None)]
    assert export.unavailable == [f"attachments/{bad.id}"]
    assert attachment_failures(tenant) == [bad.id]


async def test_an_attachment_deleted_while_it_streams_stops_the_export_without_calling_it_damaged(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = fs_server
    tenant = await s.tenant()
    data = os.urandom(4 * CHUNK)
    doomed = await stored(s, tenant, "d-17", data)
    before = integrity_failures()
    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
    pieces = aiter(stream)
    sent = await read_until(pieces, b'"content_b64":"')
    uploads = s.app.state.services.uploads
    await uploads.discard(await uploads.meta.get_attachment(tenant, doomed.id))
    with pytest.raises(AttachmentGone):
        sent += [piece async for piece in pieces]

    started = b"".join(sent).split(b'"content_b64":"', 1)[1]
    assert base64.b64encode(data).startswith(started)  # what left is its bytes; the document is cut short
    assert integrity_failures() == before
    assert attachment_failures(tenant) == []
    assert (await audit(s, tenant))[-1] == (
        "user.export",
        {"phase": "aborted", "changes": 0, "dead_letters": 0, "attachments": 1},
    )


# The closing audit row: exactly once, with the counts before the last piece or as aborted.


async def test_the_counts_are_written_before_the_last_piece_and_only_once(fs_server: Server) -> None:
    """A client that has the whole document and leaves at once (never asks for more) leaves the counts."""
    s = fs_server
    tenant = await s.tenant()
    await s.push(s.headers(tenant, "d-17"), "phone-17", [change(1, "dlv-1", [{"op": "set", "field": "a", "value": 1}])])
    await stored(s, tenant, "d-17", os.urandom(CHUNK + 5))
    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
    pieces = aiter(stream)
    sent: list[bytes] = []
    while not b"".join(sent).endswith(b'"unavailable":[]}'):
        sent.append(await anext(pieces))
    done = ("user.export", {"changes": 1, "dead_letters": 0, "attachments": 1})
    assert await audit(s, tenant) == [("user.export", {"phase": "start"}), done]
    await stream.aclose()  # the client leaves
    await stream.aclose()
    assert await audit(s, tenant) == [("user.export", {"phase": "start"}), done]


async def test_an_export_closed_part_way_is_audited_as_aborted_once(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    await s.push(
        s.headers(tenant, "d-17"),
        "phone-17",
        [change(n, "dlv-1", [{"op": "set", "field": "a", "value": n}]) for n in (1, 2)],
    )
    for _ in range(2):
        await stored(s, tenant, "d-17", os.urandom(3 * CHUNK))
    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
    await read_until(aiter(stream), b'"content_b64":"')
    await stream.aclose()
    await stream.aclose()
    assert await audit(s, tenant) == [
        ("user.export", {"phase": "start"}),
        ("user.export", {"phase": "aborted", "changes": 2, "dead_letters": 0, "attachments": 1}),
    ]
    # Closed before its first piece: aborted too.
    unread = await subjects(s).export_user_stream(tenant, "d-17", "test")
    await unread.aclose()
    assert (await audit(s, tenant))[-2:] == [
        ("user.export", {"phase": "start"}),
        ("user.export", {"phase": "aborted", "changes": 0, "dead_letters": 0}),
    ]


async def asgi_get(app: Any, path: str, headers: dict[str, str], leave_after: int, block: bool = False) -> list[bytes]:
    """GET ``path`` on the ASGI app as uvicorn serves it, the client leaving after ``leave_after`` body pieces: from
    then on ``receive`` says ``http.disconnect`` and ``send`` drops what it is given. ``block``: the write of the
    last piece the client gets waits a while (a full socket buffer) instead of returning at once."""
    bodies: list[bytes] = []
    gone = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set() or message["type"] != "http.response.body":
            return
        bodies.append(message["body"])
        if len(bodies) >= leave_after or not message.get("more_body", False):
            gone.set()
            if block and message.get("more_body", False):
                await asyncio.sleep(1)  # cancelled here when the server sees the client gone

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), 30)
    return bodies


@pytest.mark.parametrize("where", ["sending", "reading"])
async def test_a_client_leaving_mid_export_leaves_an_aborted_row(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Over HTTP: the response is cancelled when the client goes (``http.disconnect``), while a piece is being
    sent (the export waits at a piece it handed out: closed after the response) or while the export reads a
    chunk (cancelled inside the export, again and again under anyio: its closing row is written all the same)."""
    s = fs_server
    tenant = await s.tenant()
    await s.push(s.headers(tenant, "d-17"), "phone-17", [change(1, "dlv-1", [{"op": "set", "field": "a", "value": 1}])])
    for _ in range(2):
        await stored(s, tenant, "d-17", os.urandom(6 * CHUNK + 5))
    reads = 0
    real = SealedBlob.read_chunk

    async def slow_read(self: SealedBlob, index: int) -> bytes:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return await real(self, index)

    if where == "reading":
        monkeypatch.setattr(SealedBlob, "read_chunk", slow_read)
    headers = s.headers(tenant, "ops", "admin")
    # The head, the change, the dead letters' and attachments' openings, the first attachment's start: 6 pieces.
    bodies = await asgi_get(s.app, "/v1/admin/users/d-17/export", headers, 6, block=where == "sending")
    assert len(bodies) == 6
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(b"".join(bodies))
    rows = await closing_rows(s, tenant)
    assert rows == [
        ("user.export", {"phase": "start"}),
        ("user.export", {"phase": "aborted", "changes": 1, "dead_letters": 0, "attachments": 1}),
    ]
    if where == "reading":
        assert reads < 2 * 7 + 3  # stopped in the first attachment (checked: 7 chunks; sent: a few)
    await asyncio.sleep(0.2)
    assert len(await audit(s, tenant)) == 2  # once

    # Read to the end, the same export leaves the counts (and nothing more).
    everything = await asgi_get(s.app, "/v1/admin/users/d-17/export", headers, 10_000)
    assert msgspec.json.decode(b"".join(everything), type=UserExport).unavailable == []
    assert (await closing_rows(s, tenant, 2))[2:] == [
        ("user.export", {"phase": "start"}),
        ("user.export", {"changes": 1, "dead_letters": 0, "attachments": 2}),
    ]


# The CLI: a complete file at --output, or none (and an earlier one as it was).


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_ATTACHMENT_CHUNK_BYTES=str(CHUNK))
    assert run(env, "tenant", "create", "acme").exit_code == 0
    return env


EARLIER = b'{"an": "earlier, complete export"}\n'


def partial_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".export.json.")]


def test_a_failed_export_leaves_an_earlier_file_as_it_was_and_nothing_else(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((ref, _),) = asyncio.run(seed(env, [3 * CHUNK]))
    out = tmp_path / "export.json"
    out.write_bytes(EARLIER)

    unknown = run(env, "export-user", "--tenant", "no-such-tenant", "--sub", "d-17", "--output", str(out))
    assert unknown.exit_code == 1, unknown.output
    assert "no tenant 'no-such-tenant'" in unknown.output
    assert out.read_bytes() == EARLIER
    assert partial_files(tmp_path) == []

    victim = chunk_files(tmp_path / "data", "acme", ref)[2]
    tamper_after_its_check(monkeypatch, victim)
    cut = run(env, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out))
    assert cut.exit_code == 1, cut.output
    assert "data_integrity: stored attachment data changed while it was exported" in cut.output
    assert out.read_bytes() == EARLIER
    assert partial_files(tmp_path) == []

    monkeypatch.undo()
    flip(victim)  # intact again
    ok = run(env, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out))
    assert ok.exit_code == 0, ok.output
    assert msgspec.json.decode(out.read_bytes(), type=UserExport).attachments[0].id == ref.id
    assert oct(out.stat().st_mode)[-3:] == "600"
    assert partial_files(tmp_path) == []


SLOW_CLI = """
import asyncio, sys
from syncserver.admin.tenants import create_tenant
from syncserver.attachments.chunks import SealedBlob
real = SealedBlob.read_chunk
async def slow(self, index):
    await asyncio.sleep(0.05)  # a slow object store: the export takes seconds
    return await real(self, index)
SealedBlob.read_chunk = slow
from syncserver.cli import main
main(sys.argv[1:], prog_name="syncserver")
"""


def test_sigterm_mid_export_leaves_no_file_and_an_aborted_audit_row(env: dict[str, str], tmp_path: Path) -> None:
    """``systemctl stop``, ``timeout``, a pod's shutdown: SIGTERM part way through. The partial file goes, an earlier
    export at --output stays as it was, and the audit log says the export was aborted (data had left)."""
    asyncio.run(seed(env, [4 * CHUNK] * 6))
    out = tmp_path / "export.json"
    out.write_bytes(EARLIER)
    command = [sys.executable, "-c", SLOW_CLI, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out)]
    cli = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # Mid-export: the head and the change are in the partial file, and some attachment bytes.
        while time.monotonic() < deadline and not any(p.stat().st_size > CHUNK for p in partial_files(tmp_path)):
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.02)
        assert partial_files(tmp_path), "the export never got going"
        cli.send_signal(signal.SIGTERM)
        _, stderr = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 128 + signal.SIGTERM, stderr.decode()
    assert b"terminated: the export was stopped; no file written" in stderr
    assert b"Traceback" not in stderr
    assert out.read_bytes() == EARLIER
    assert partial_files(tmp_path) == []

    async def closing_row() -> dict[str, Any]:
        async with open_services(Settings.from_env(env)) as services:
            store = services.store
            assert isinstance(store, AdminStore)
            rows = [a for a in await store.audit_log("acme", None, 10) if a.action == "user.export"]
            assert [msgspec.json.decode(a.details).get("phase") for a in reversed(rows)] == ["start", "aborted"]
            details: dict[str, Any] = msgspec.json.decode(rows[0].details)
            return details

    aborted = asyncio.run(closing_row())
    assert (aborted["changes"], aborted["dead_letters"]) == (1, 0)
    assert 1 <= aborted["attachments"] < 6


async def test_a_closing_row_being_written_when_the_server_stops_is_written_before_the_store_closes(
    tmp_path: Path,
) -> None:
    """The server stops while an export cut short is still writing its ``aborted`` row (its response cancelled,
    the row's write slow): closing the services waits for the row before it closes the store."""
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")
    async with open_services(settings) as services:
        await create_tenant(services.store, services.keyring, "acme")
        requests = services.subjects
        stream = await requests.export_user_stream("acme", "d-17", "test")
        await anext(aiter(stream))
        write = requests._audit
        writing = asyncio.Event()

        async def slow(*args: Any) -> None:
            writing.set()
            await asyncio.sleep(0.5)  # a busy database
            await write(*args)

        requests._audit = slow  # type: ignore[method-assign,assignment]
        closing = asyncio.ensure_future(stream.aclose())
        await writing.wait()
        closing.cancel()  # the response is cancelled (the client gone, the server stopping): the write goes on
        with pytest.raises(asyncio.CancelledError):
            await closing
    async with open_services(settings) as services:
        assert isinstance(services.store, AdminStore)
        rows = [a for a in await services.store.audit_log("acme", None, 10) if a.action == "user.export"]
    assert [msgspec.json.decode(a.details) for a in reversed(rows)] == [
        {"phase": "start"},
        {"phase": "aborted", "changes": 0, "dead_letters": 0},
    ]
