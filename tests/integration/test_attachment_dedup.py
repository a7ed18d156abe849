"""Deduplicated attachments outlive their owner's row: its objects are never overwritten, deleted or stranded.

Attachment B with the content of an earlier A reads A's objects (``<tenant>/<A>/``). GC collects A's row when
nothing references A, while B still reads those objects: id A must not name a new upload (which would write
into them), nothing refused or replayed may delete them, and key rotation must re-encrypt them.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from syncproto.attachments import AttachmentRef
from syncserver.attachments.gc import AttachmentCollector
from syncstore.attachments import AttachmentRecord
from tests.integration.attachment_client import create, patch, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")):
        yield s


async def collect(s: Server, tenant: str) -> Any:
    state = s.app.state
    later = int(time.time() * 1000) + s.settings.attachments.retention_s * 1000 + DAY_MS
    return await AttachmentCollector(state.store, state.keyring, state.schema, state.upload_service).collect(
        tenant, later
    )


async def owner_collected(
    s: Server, tenant: str, h: dict[str, str], data: bytes
) -> tuple[AttachmentRef, AttachmentRef]:
    """Upload ``data`` as A then as B (deduplicated onto A), reference only B, and let GC take A's row."""
    first, second = ref_for(data), ref_for(data)
    for ref in (first, second):
        assert (await upload(s.client, h, ref, data)).status_code == 204
    await s.push(h, "web-1", [change(1, "dlv-1", [{"op": "set", "field": "pod", "value": second.to_value()}])])
    assert (await collect(s, tenant)).deleted == 1
    meta = s.app.state.upload_service.meta
    assert await meta.get_attachment(tenant, first.id) is None
    row = await meta.get_attachment(tenant, second.id)
    assert row is not None
    assert row.blob_owner == first.id
    return first, second


async def assert_serves(s: Server, h: dict[str, str], ref: AttachmentRef, data: bytes) -> None:
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=h)
    assert r.status_code == 200, r.text
    assert r.content == data


async def test_the_id_of_a_collected_owner_cannot_name_a_new_upload(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = os.urandom(80_000)
    first, second = await owner_collected(s, tenant, h, data)

    other = os.urandom(len(data))  # same length: written into A's prefix, it would be served as B's bytes
    for user, content in (("disp", other), ("disp", data), ("someone-else", other)):
        r = await create(s.client, s.headers(tenant, user), ref_for(content, attachment_id=first.id))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "attachment_conflict"
        assert (await patch(s.client, s.headers(tenant, user), first.id, 0, content)).status_code == 404
    r = await create(s.client, h, ref_for(other, attachment_id=first.id), data=other)  # creation-with-upload
    assert r.status_code == 409
    assert await s.app.state.upload_service.meta.get_attachment(tenant, first.id) is None  # no row left behind
    await assert_serves(s, h, second, data)


async def test_a_refused_upload_never_deletes_objects_another_row_uses(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = os.urandom(80_000)
    first, second = await owner_collected(s, tenant, h, data)
    meta = s.app.state.upload_service.meta

    # Declared content and sent bytes differ: the hash-mismatch refusal used to delete A's whole prefix.
    declared = ref_for(b"y" * len(data), attachment_id=first.id)
    assert (await create(s.client, h, declared)).status_code == 409
    assert (await patch(s.client, h, first.id, 0, b"z" * len(data))).status_code == 404
    await assert_serves(s, h, second, data)

    # A row for id A that got in anyway (created while A's row was being collected, or before this check):
    # its first PATCH is refused before a byte is written, so nothing is refused and deleted either.
    now = int(time.time() * 1000)
    stray = AttachmentRecord(
        tenant_id=tenant,
        id=first.id,
        user_sub="disp",
        size=len(data),
        media_type="image/jpeg",
        mac="0" * 64,
        mac_version=1,
        key_version=1,
        state="uploading",
        upload_offset=0,
        chunk_bytes=s.settings.attachments.chunk_bytes,
        created_at=now,
        updated_at=now,
        expires_at=now + DAY_MS,
    )
    await meta.create_attachment(stray)
    r = await patch(s.client, h, first.id, 0, b"z" * len(data))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "attachment_conflict"
    await assert_serves(s, h, second, data)

    # Refused, it is not replayed (which dropped its prefix and let it upload into it again).
    refused = replace(stray, state="refused", code="attachment_hash_mismatch", message="mismatch")
    assert await meta.update_attachment(stray, refused)
    r = await s.client.post(f"/v1/admin/attachments/{first.id}/replay", headers=s.headers(tenant, "ops", "admin"))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "attachment_conflict"
    await s.app.state.upload_service.discard(refused)  # and discarding it keeps the objects B reads
    await assert_serves(s, h, second, data)


async def test_an_upload_deduplicated_onto_an_owner_collected_meanwhile_keeps_its_own_objects(
    fs_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    meta = s.app.state.upload_service.meta
    data = os.urandom(80_000)
    first = ref_for(data)
    assert (await upload(s.client, h, first, data)).status_code == 204
    found = await meta.get_attachment(tenant, first.id)
    assert found is not None
    assert await meta.find_blob(tenant, found.mac) == found
    assert (await collect(s, tenant)).deleted == 1  # A's row and objects go (nothing used them yet)

    async def as_before_gc(tenant_id: str, mac: str) -> AttachmentRecord | None:
        return found  # the dedup lookup ran just before GC took A

    monkeypatch.setattr(meta, "find_blob", as_before_gc)
    later = ref_for(data)
    assert (await upload(s.client, h, later, data)).status_code == 204
    row = await meta.get_attachment(tenant, later.id)
    assert row is not None
    assert row.blob_owner == later.id
    await assert_serves(s, s.headers(tenant, "ops", "admin"), later, data)


async def test_reencrypt_moves_a_blob_whose_owner_row_is_gone_and_only_then_the_old_key_can_go(
    fs_server: Server,
) -> None:
    s = fs_server
    tenant = await s.tenant()
    h, admin = s.headers(tenant, "disp"), s.headers(tenant, "ops", "admin")
    data = os.urandom(300_000)
    first, second = await owner_collected(s, tenant, h, data)
    ops = s.app.state.key_ops
    ops.settle_ms = 0  # destroy right after the rotation: no other server writes to this tenant here

    assert (await s.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
    assert (await ops.stale_rows(tenant))["attachments"] == 1  # B's blob, under A's prefix
    # Entities first, attachments left behind: version 1 is still needed by B's blob alone.
    attachment_keys, ops.attachments = ops.attachments, None
    try:
        await ops.reencrypt(tenant, "root")
    finally:
        ops.attachments = attachment_keys
    assert (await s.client.post("/v1/admin/keys/1/destroy", headers=admin)).status_code == 409

    result = (await s.client.post("/v1/admin/keys/reencrypt", headers=admin)).json()
    assert (result["failed"], result["remaining"]) == (0, 0)
    blob_dir = s.settings.data_dir / "blobs" / tenant / first.id
    assert [p.name for p in blob_dir.iterdir()] == ["v2"]
    row = await s.app.state.upload_service.meta.get_attachment(tenant, second.id)
    assert row is not None
    assert (row.key_version, row.mac_version) == (2, 2)
    assert (await s.client.post("/v1/admin/keys/1/destroy", headers=admin)).status_code == 200
    await assert_serves(s, h, second, data)


async def test_an_upload_is_not_deduplicated_onto_objects_that_do_not_hold_its_content(fs_server: Server) -> None:
    """A's objects hold other bytes than A's record says (objects replaced in the store, sealed as the server
    seals them): B, with the recorded content, keeps its own objects and serves its own bytes, and A is reported
    damaged."""
    from prometheus_client import REGISTRY

    from syncserver.attachments import chunks

    def failures() -> float:
        return REGISTRY.get_sample_value("sync_attachment_integrity_failures_total") or 0.0

    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "ops")
    data = os.urandom(3000)
    first = ref_for(data)
    assert (await upload(s.client, h, first, data)).status_code == 204
    meta = s.app.state.upload_service.meta
    row = await meta.get_attachment(tenant, first.id)
    assert row is not None
    # Sealed as the server seals A's one chunk, but other bytes of the same length.
    cipher = await s.app.state.keyring.cipher(tenant, [row.key_version])
    other = os.urandom(len(data))
    token = chunks.token_at(row.chunk_tokens, 0)
    sealed = chunks.seal_chunk(cipher, first.id, 0, True, other, row.key_version, token)
    key = chunks.chunk_key(tenant, first.id, row.key_version, 0, token)
    await s.app.state.upload_service.blobs.put(key, sealed)
    before = failures()

    second = ref_for(data)
    assert (await upload(s.client, h, second, data)).status_code == 204
    stored = await meta.get_attachment(tenant, second.id)
    assert stored is not None
    assert stored.blob_owner == second.id  # its own objects, not A's
    r = await s.client.get(f"/v1/attachments/{second.id}", headers=h)
    assert r.content == data
    assert failures() == before + 1
