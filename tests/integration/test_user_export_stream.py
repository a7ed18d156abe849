"""The user export (GDPR access) streams: bounded memory, exact base64, a damaged attachment set aside.

``SubjectRequests.export_user_stream`` writes one JSON document piece by piece
(``GET /v1/admin/users/{sub}/export`` and ``syncserver export-user`` both send
it on as it comes): memory holds one row (of a page of at most 100 read at
a time) or one attachment chunk, never the user's data. An attachment whose stored chunks fail their check is
listed with ``content_b64`` null and named in ``unavailable``; one whose bytes
change between that check and the streaming stops the stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from litestar.exceptions import LitestarException
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from syncproto.attachments import AttachmentRef
from syncserver.app import create_app
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.attachments.settings import AttachmentSettings
from syncserver.auth.tokens import TokenVerifier
from syncserver.cli import main
from syncserver.integrity import quarantine
from syncserver.keys.subjects import SubjectRequests, UserExport
from syncserver.settings import Settings
from syncserver.testing import server_env
from syncstore.adminstore import AdminStore
from tests.integration.attachment_client import create, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start

CHUNK = 256 * 1024
"""Small chunks, so a few MiB make many of them (a chunk is 262,144 bytes: not a multiple of 3)."""
MiB = 1024 * 1024


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    files = AttachmentSettings(chunk_bytes=CHUNK)
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", attachments=files)):
        yield s


def subjects(s: Server) -> SubjectRequests:
    found: SubjectRequests = s.app.state.subject_requests
    return found


async def stored(s: Server, tenant: str, sub: str, data: bytes) -> AttachmentRef:
    ref = ref_for(data)
    assert (await upload(s.client, s.headers(tenant, sub), ref, data, chunk=MiB)).status_code == 204
    return ref


def chunk_files(root: Path, tenant: str, ref: AttachmentRef) -> list[Path]:
    """The stored chunk objects of one attachment, in index order."""
    files = sorted(p for p in (root / "blobs" / tenant / ref.id).rglob("*") if p.is_file())
    assert files, f"no objects stored for {ref.id}"
    return files


def flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))


async def audit(s: Server, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    store = s.app.state.store
    assert isinstance(store, AdminStore)
    entries = reversed(await store.audit_log(tenant, None, 100))
    return [(a.action, msgspec.json.decode(a.details)) for a in entries if a.action == "user.export"]


def integrity_failures() -> tuple[float, float]:
    """(attachment chunk failures, rows of the ``attachments`` table set aside) counted so far."""
    chunks = REGISTRY.get_sample_value("sync_attachment_integrity_failures_total") or 0.0
    rows = REGISTRY.get_sample_value("sync_integrity_failures_total", {"table": "attachments"}) or 0.0
    return chunks, rows


async def test_memory_is_bounded_by_a_chunk_not_by_the_users_attachments(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    await s.push(s.headers(tenant, "d-17"), "phone-17", [change(1, "dlv-1", [{"op": "set", "field": "a", "value": 1}])])
    photos = [os.urandom(2 * MiB + i) for i in range(1, 5)]  # 8 MiB and a few bytes
    for data in photos:
        await stored(s, tenant, "d-17", data)
    expected_b64 = sum(len(base64.b64encode(p)) for p in photos)

    total = 0
    tracemalloc.start()
    try:
        stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
        async for piece in stream:  # consumed and dropped, as the API and the CLI do
            total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > expected_b64 >= 4 * len(base64.b64encode(bytes(2 * MiB)))
    assert stream.summary.attachments == 4
    assert peak < expected_b64 / 4, f"peak {peak:,} bytes for an export of {total:,} bytes"


async def test_memory_is_bounded_by_a_row_not_by_a_page_of_the_users_changes(sqlite_server: Server) -> None:
    """Each change is written as a piece of its own, and changes are read 100 at a time: a driver with hundreds of
    large changes does not hold a page of them, decrypted and encoded, at once."""
    s = sqlite_server
    tenant = await s.tenant()
    mine = s.headers(tenant, "d-17")
    rows, value_chars = 400, 60_000  # 24 MB of (hardly compressible) values
    for first in range(0, rows, 50):
        values = [base64.b64encode(os.urandom(value_chars * 3 // 4)).decode() for _ in range(50)]
        batch = [
            change(first + i + 1, f"e-{first + i}", [{"op": "set", "field": "note", "value": v}])
            for i, v in enumerate(values)
        ]
        await s.push(mine, "phone-17", batch)

    total = biggest = 0
    tracemalloc.start()
    try:
        stream = await subjects(s).export_user_stream(tenant, "d-17", "test")
        async for piece in stream:
            total += len(piece)
            biggest = max(biggest, len(piece))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.summary.changes == rows
    assert total > rows * value_chars
    assert biggest < 2 * value_chars, f"a piece of {biggest:,} bytes: more than one change"
    # A page of 100 rows as read (about 9 MB here, with the database driver's copies) and one row decrypted and
    # encoded; not 400 rows as read, nor 100 in three forms more (decrypted, encoded, joined).
    assert peak < 200 * value_chars, f"peak {peak:,} bytes for an export of {total:,} bytes"


async def test_streamed_base64_is_that_of_the_whole_file_and_the_document_decodes(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    mine = s.headers(tenant, "d-17")
    await s.push(
        mine,
        "phone-17",
        [
            change(1, "dlv-1", [{"op": "set", "field": "note", "value": 'ring "twice"\n\u2028then leave'}]),
            change(2, "dlv-1", [{"op": "inc", "field": "note", "by": 1}]),  # rejected: a dead letter
        ],
    )
    await s.push(s.headers(tenant, "d-42"), "phone-42", [change(1, "dlv-2", [{"op": "set", "field": "x", "value": 1}])])
    sizes = [1, 2, CHUNK - 1, 3 * CHUNK + 2]  # none a multiple of 3; the last over four chunks
    files = {ref.id: data for data in map(os.urandom, sizes) for ref in [await stored(s, tenant, "d-17", data)]}
    waiting = ref_for(b"not sent yet")
    assert (await create(s.client, mine, waiting)).status_code == 201

    r = await s.client.get("/v1/admin/users/d-17/export", headers=s.headers(tenant, "ops", "admin"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    export = msgspec.json.decode(r.content, type=UserExport)
    assert (export.tenant, export.sub, export.replicas, export.unavailable) == (tenant, "d-17", ["phone-17"], [])
    assert [(c.n, c.entity) for c in export.changes] == [(1, "dlv-1")]
    assert msgspec.to_builtins(export.changes[0].ops) == [
        {"op": "set", "field": "note", "value": 'ring "twice"\n\u2028then leave'}
    ]
    assert [(d.n, d.code) for d in export.dead_letters] == [(2, "kind_mismatch")]
    assert sorted(a.id for a in export.attachments) == sorted([*files, waiting.id])
    for a in export.attachments:
        if a.id == waiting.id:
            assert (a.state, a.content_b64) == ("uploading", None)
            continue
        original = files[a.id]
        assert (a.state, a.size, a.media_type) == ("available", len(original), "image/jpeg")
        assert a.content_b64 == base64.b64encode(original).decode()
        assert hashlib.sha256(base64.b64decode(a.content_b64)).digest() == hashlib.sha256(original).digest()

    # One element per line (readable in a pager); every field of the document, replicas and unavailable last.
    lines = r.content.split(b"\n")
    assert lines[0].startswith(b'{"tenant":')
    assert lines[0].endswith(b'"changes":[')
    assert (lines[2], lines[4]) == (b'],"dead_letters":[', b'],"attachments":[')
    assert msgspec.json.decode(lines[1])["n"] == 1
    assert msgspec.json.decode(lines[3])["n"] == 2
    assert len(lines) == 5 + len(export.attachments) + 1
    assert [msgspec.json.decode(line.rstrip(b","))["id"] for line in lines[5:-1]] == [a.id for a in export.attachments]
    assert lines[-1] == b'],"replicas":["phone-17"],"unavailable":[]}'
    assert list(msgspec.json.decode(r.content)) == [
        "tenant",
        "sub",
        "exported_at",
        "changes",
        "dead_letters",
        "attachments",
        "replicas",
        "unavailable",
    ]
    entries = await audit(s, tenant)
    assert entries == [
        ("user.export", {"phase": "start"}),
        ("user.export", {"changes": 1, "dead_letters": 1, "attachments": 5}),
    ]


async def test_a_tampered_attachment_is_named_and_everything_else_is_exported(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    await s.push(s.headers(tenant, "d-17"), "phone-17", [change(1, "dlv-1", [{"op": "set", "field": "a", "value": 1}])])
    damaged, intact = os.urandom(3 * CHUNK), os.urandom(CHUNK + 5)
    bad, good = await stored(s, tenant, "d-17", damaged), await stored(s, tenant, "d-17", intact)
    flip(chunk_files(s.settings.data_dir, tenant, bad)[1])
    before = integrity_failures()

    r = await s.client.get("/v1/admin/users/d-17/export", headers=s.headers(tenant, "ops", "admin"))
    assert r.status_code == 200
    export = msgspec.json.decode(r.content, type=UserExport)
    assert export.unavailable == [f"attachments/{bad.id}"]
    by_id = {a.id: a for a in export.attachments}
    assert (by_id[bad.id].state, by_id[bad.id].size, by_id[bad.id].content_b64) == ("available", 3 * CHUNK, None)
    assert by_id[good.id].content_b64 == base64.b64encode(intact).decode()
    assert [c.n for c in export.changes] == [1]
    assert integrity_failures() == (before[0] + 1, before[1] + 1)
    assert [(f.table, f.row) for f in quarantine.recent(tenant)][:1] == [("attachments", bad.id)]
    assert (await audit(s, tenant))[-1] == (
        "user.export",
        {"changes": 1, "dead_letters": 0, "attachments": 2, "unavailable": 1},
    )


async def test_bytes_changed_after_their_check_stop_the_stream_without_sending_them(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = fs_server
    tenant = await s.tenant()
    data = os.urandom(3 * CHUNK)
    ref = await stored(s, tenant, "d-17", data)
    victim = chunk_files(s.settings.data_dir, tenant, ref)[1]
    tamper_after_its_check(monkeypatch, victim)  # after the check, before the bytes are read again to be sent
    pieces: list[bytes] = []
    stream = await subjects(s).export_user_stream(tenant, "d-17", "test")

    async def consume() -> None:
        async for piece in stream:
            pieces.append(piece)

    with pytest.raises(ChunkError):
        await consume()
    sent = b"".join(pieces)
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(sent)  # cut off: never mistaken for a whole export
    started = sent.split(b'"content_b64":"', 1)[1]
    assert 0 < len(started) < len(base64.b64encode(data))
    assert base64.b64encode(data).startswith(started)  # what left was the stored bytes, nothing after
    assert stream.summary.complete is False
    assert await audit(s, tenant) == [  # no counts of a whole document: aborted, with what left
        ("user.export", {"phase": "start"}),
        ("user.export", {"phase": "aborted", "changes": 0, "dead_letters": 0, "attachments": 1}),
    ]
    # Over HTTP the response has started by then: it is cut off, never finished as if whole.
    flip(victim)  # intact again, until its check is over
    with pytest.raises(LitestarException, match="after response started"):
        await s.client.get("/v1/admin/users/d-17/export", headers=s.headers(tenant, "ops", "admin"))


# The CLI, on the database and blob directory a server wrote.


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


async def seed(env: dict[str, str], sizes: list[int]) -> list[tuple[AttachmentRef, bytes]]:
    settings = Settings.from_env(env)
    assert settings.jwt_secret is not None
    verifier = TokenVerifier(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience)
    headers = {"Authorization": f"Bearer {verifier.issue('acme', 'd-17', 'dispatcher')}"}
    stored: list[tuple[AttachmentRef, bytes]] = []
    async with AsyncTestClient(create_app(settings)) as client:
        body = {"replica": "p", "changes": [change(1, "dlv-1", [{"op": "set", "field": "a", "value": "x"}])]}
        assert (await client.post("/v1/sync/push", json=body, headers=headers)).status_code == 200
        for size in sizes:
            data = os.urandom(size)
            ref = ref_for(data)
            assert (await upload(client, headers, ref, data, chunk=MiB)).status_code == 204
            stored.append((ref, data))
    return stored


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_ATTACHMENT_CHUNK_BYTES=str(CHUNK))
    assert run(env, "tenant", "create", "acme").exit_code == 0
    return env


def test_the_cli_writes_the_export_and_names_a_tampered_attachment(env: dict[str, str], tmp_path: Path) -> None:
    (bad, _), (good, intact) = asyncio.run(seed(env, [2 * CHUNK + 1, CHUNK + 2]))
    out = tmp_path / "export.json"
    ok = run(env, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out))
    assert ok.exit_code == 0, ok.output
    assert "1 changes, 0 dead letters -> " in ok.output
    assert oct(out.stat().st_mode)[-3:] == "600"
    assert out.read_bytes().endswith(b'],"replicas":["p"],"unavailable":[]}\n')
    # The head, the change, the (empty) dead letters, the two attachments, the end.
    assert len(out.read_bytes().splitlines()) == 7

    flip(chunk_files(tmp_path / "data", "acme", bad)[0])
    damaged = run(env, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out))
    assert damaged.exit_code == 1, damaged.output
    assert isinstance(damaged.exception, SystemExit)  # click's clean exit
    last = damaged.output.strip().splitlines()[-1]
    assert last == f"Error: data_integrity: rows that failed their integrity check: attachments/{bad.id}"
    export = msgspec.json.decode(out.read_bytes(), type=UserExport)  # everything intact is in the file
    assert export.unavailable == [f"attachments/{bad.id}"]
    assert {a.id: a.content_b64 for a in export.attachments} == {
        bad.id: None,
        good.id: base64.b64encode(intact).decode(),
    }
    assert [c.n for c in export.changes] == [1]


def tamper_after_its_check(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """Flip a byte of ``victim`` (a stored chunk) right after the export has checked the attachment's chunks."""
    checked = SealedBlob.verify

    async def check_then_tamper(self: SealedBlob, start: int = 0, end: int | None = None) -> None:
        await checked(self, start, end)
        flip(victim)

    monkeypatch.setattr(SealedBlob, "verify", check_then_tamper)


def test_the_cli_leaves_no_file_when_bytes_change_while_exported(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((ref, _),) = asyncio.run(seed(env, [3 * CHUNK]))
    tamper_after_its_check(monkeypatch, chunk_files(tmp_path / "data", "acme", ref)[2])
    out = tmp_path / "export.json"
    result = run(env, "export-user", "--tenant", "acme", "--sub", "d-17", "--output", str(out))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: data_integrity: stored attachment data changed while it was exported (chunk 2 ")
    assert last.endswith("the export was stopped")
    assert "Traceback" not in result.output
    assert not out.exists()
