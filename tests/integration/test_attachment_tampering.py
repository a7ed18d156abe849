"""Tampering with stored attachment chunks is detected (``data_integrity``) and never served as data."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncproto.attachments import AttachmentRef
from syncserver.attachments.settings import AttachmentSettings
from tests.integration.attachment_client import ref_for, upload
from tests.integration.conftest import Server, make_settings, start

CHUNK = 256 * 1024
SIZE = 600_000  # three chunks of 256 KiB: 262144 + 262144 + 75712


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    # Several chunks per file, whatever the default chunk size: the tests move chunks around.
    files = AttachmentSettings(chunk_bytes=CHUNK)
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", attachments=files)):
        yield s


async def stored(s: Server, tenant: str) -> tuple[AttachmentRef, bytes, list[Path]]:
    h = s.headers(tenant, "disp")
    data = os.urandom(SIZE)
    ref = ref_for(data)
    assert (await upload(s.client, h, ref, data)).status_code == 204
    directory = s.settings.data_dir / "blobs" / tenant / ref.id / "v1"
    files = sorted(directory.iterdir())
    # Chunk index, then the token of the PATCH that wrote it.
    assert [f.name.partition("-")[0] for f in files] == ["00000000", "00000001", "00000002"]
    return ref, data, files


async def assert_refused(s: Server, tenant: str, ref: AttachmentRef) -> None:
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=s.headers(tenant, "disp"))
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "data_integrity", "message": r.json()["error"]["message"]}}


async def test_untampered_blob_is_served(fs_server: Server) -> None:
    tenant = await fs_server.tenant()
    ref, data, _ = await stored(fs_server, tenant)
    r = await fs_server.client.get(f"/v1/attachments/{ref.id}", headers=fs_server.headers(tenant, "disp"))
    assert r.content == data


async def test_a_flipped_byte_is_detected(fs_server: Server) -> None:
    tenant = await fs_server.tenant()
    ref, _, files = await stored(fs_server, tenant)
    raw = bytearray(files[1].read_bytes())
    raw[100] ^= 0x01
    files[1].write_bytes(bytes(raw))
    await assert_refused(fs_server, tenant, ref)


async def test_swapped_chunks_are_detected(fs_server: Server) -> None:
    tenant = await fs_server.tenant()
    ref, _, files = await stored(fs_server, tenant)
    first, second = files[0].read_bytes(), files[1].read_bytes()
    files[0].write_bytes(second)
    files[1].write_bytes(first)
    await assert_refused(fs_server, tenant, ref)


async def test_a_truncated_object_is_detected(fs_server: Server) -> None:
    tenant = await fs_server.tenant()
    ref, _, files = await stored(fs_server, tenant)
    files[2].unlink()  # the blob now ends after chunk 1, which is not flagged "last"
    await assert_refused(fs_server, tenant, ref)
    ref, _, files = await stored(fs_server, tenant)
    files[2].write_bytes(files[2].read_bytes()[:-10])
    await assert_refused(fs_server, tenant, ref)


async def test_a_chunk_moved_from_another_attachment_is_detected(fs_server: Server) -> None:
    tenant = await fs_server.tenant()
    ref, _, files = await stored(fs_server, tenant)
    _, _, donor = await stored(fs_server, tenant)
    shutil.copy(donor[0], files[0])
    await assert_refused(fs_server, tenant, ref)


async def test_a_chunk_moved_from_another_tenant_is_detected(fs_server: Server) -> None:
    acme, other = await fs_server.tenant("acme"), await fs_server.tenant("other")
    ref, _, files = await stored(fs_server, acme)
    _, _, donor = await stored(fs_server, other)
    shutil.copy(donor[2], files[2])
    await assert_refused(fs_server, acme, ref)


async def test_a_range_request_over_a_tampered_chunk_is_refused_too(fs_server: Server) -> None:
    tenant = await fs_server.tenant()
    ref, _, files = await stored(fs_server, tenant)
    raw = bytearray(files[1].read_bytes())
    raw[-1] ^= 0xFF
    files[1].write_bytes(bytes(raw))
    h = {**fs_server.headers(tenant, "disp"), "Range": "bytes=262100-262200"}
    r = await fs_server.client.get(f"/v1/attachments/{ref.id}", headers=h)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "data_integrity"


async def test_equal_content_is_stored_once_per_tenant(fs_server: Server) -> None:
    acme, other = await fs_server.tenant("acme"), await fs_server.tenant("other")
    data = os.urandom(SIZE)
    first, second, third = ref_for(data), ref_for(data), ref_for(data)
    for tenant, ref in ((acme, first), (acme, second), (other, third)):
        assert (await upload(fs_server.client, fs_server.headers(tenant, "disp"), ref, data)).status_code == 204
    blobs = fs_server.settings.data_dir / "blobs"
    assert sorted(p.name for p in (blobs / acme).iterdir()) == [first.id]  # the second reuses the first's chunks
    assert sorted(p.name for p in (blobs / other).iterdir()) == [third.id]  # another tenant stores its own
    r = await fs_server.client.get(f"/v1/attachments/{second.id}", headers=fs_server.headers(acme, "disp"))
    assert r.content == data
    # The two tenants' copies share nothing an outsider could match: names and ciphertexts differ.
    [ours] = (blobs / acme / first.id / "v1").glob("00000000-*")
    [theirs] = (blobs / other / third.id / "v1").glob("00000000-*")
    assert ours.read_bytes() != theirs.read_bytes()
