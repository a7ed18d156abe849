"""Attachments under the key lifecycle: rotation re-encrypts them, erase shreds them, export includes them."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.attachment_client import create, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")):
        yield s


async def test_reencrypt_moves_attachments_to_the_new_key_and_only_then_the_old_one_can_go(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    admin, driver = s.headers(tenant, "ops", "admin"), s.headers(tenant, "d-1")
    s.app.state.key_ops.settle_ms = 0  # destroy right after the rotation: no other server writes to this tenant here
    data = os.urandom(300_000)
    ref = ref_for(data)
    assert (await upload(s.client, driver, ref, data)).status_code == 204
    blob_dir = s.settings.data_dir / "blobs" / tenant / ref.id
    assert [p.name for p in blob_dir.iterdir()] == ["v1"]

    assert (await s.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
    status = (await s.client.get("/v1/admin/keys", headers=admin)).json()
    assert status["stale_rows"] >= 1
    refused = await s.client.post("/v1/admin/keys/1/destroy", headers=admin)
    assert refused.status_code == 409  # the attachment still needs version 1

    result = (await s.client.post("/v1/admin/keys/reencrypt", headers=admin)).json()
    assert result["remaining"] == 0
    assert [p.name for p in blob_dir.iterdir()] == ["v2"]
    assert (await s.client.post("/v1/admin/keys/1/destroy", headers=admin)).status_code == 200
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=admin)
    assert r.status_code == 200
    assert r.content == data
    # A driver's download checks the reference against the content's keyed hash, which moved to version 2 too.
    own = s.headers(tenant, "driver-1", "driver", ("driver:1",))
    ops = [{"op": "set", "field": "driver_id", "value": "1"}, {"op": "set", "field": "pod", "value": ref.to_value()}]
    await s.push(own, "phone-1", [change(1, "dlv-1", ops)])
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=own)
    assert r.status_code == 200
    assert r.content == data


async def test_erase_deletes_every_object_of_the_tenant_and_nothing_else(fs_server: Server) -> None:
    s = fs_server
    doomed, kept = await s.tenant("doomed"), await s.tenant("kept")
    for tenant in (doomed, kept):
        data = os.urandom(100_000)
        assert (await upload(s.client, s.headers(tenant, "d"), ref_for(data), data)).status_code == 204
    blobs = s.settings.data_dir / "blobs"
    r = await s.client.post(f"/v1/admin/tenant/erase?confirm={doomed}", headers=s.headers(doomed, "ops", "admin"))
    assert r.status_code == 200, r.text
    assert r.json()["rows_deleted"]["attachment_objects"] == 1
    assert [p for p in (blobs / doomed).rglob("*") if p.is_file()] == []
    assert [p.name.partition("-")[0] for p in (blobs / kept).rglob("*") if p.is_file()] == ["00000000"]


async def test_export_user_includes_their_attachments_with_bytes(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    data = os.urandom(50_000)
    mine, theirs = ref_for(data), ref_for(b"other" * 10)
    assert (await upload(s.client, s.headers(tenant, "d-17"), mine, data)).status_code == 204
    assert (await upload(s.client, s.headers(tenant, "d-18"), theirs, b"other" * 10)).status_code == 204
    r = await s.client.get("/v1/admin/users/d-17/export", headers=s.headers(tenant, "ops", "admin"))
    files = r.json()["attachments"]
    assert [(f["id"], f["state"], f["media_type"]) for f in files] == [(mine.id, "available", "image/jpeg")]
    assert base64.b64decode(files[0]["content_b64"]) == data


async def test_uploads_recorded_under_a_destroyed_key_version_are_refused_cleanly(fs_server: Server) -> None:
    """A dead letter whose declared content was recorded under a key version destroyed since cannot be replayed
    (its upload would seal under, and check against, that key): 409, not a 500 at every PATCH after."""
    s = fs_server
    tenant = await s.tenant()
    admin, device = s.headers(tenant, "ops", "admin"), s.headers(tenant, "d-1")
    s.app.state.key_ops.settle_ms = 0  # destroy right after the rotation: no other server writes to this tenant here
    data = os.urandom(50_000)
    ref = ref_for(data)
    r = await upload(s.client, device, ref, data[::-1])  # not the declared bytes: a dead letter
    assert r.json()["error"]["code"] == "attachment_hash_mismatch"
    assert (await s.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
    assert (await s.client.post("/v1/admin/keys/reencrypt", headers=admin)).json()["remaining"] == 0
    assert (await s.client.post("/v1/admin/keys/1/destroy", headers=admin)).status_code == 200

    replay = await s.client.post(f"/v1/admin/attachments/{ref.id}/replay", headers=admin)
    assert replay.status_code == 409, replay.text
    assert "destroyed" in replay.json()["error"]["message"]
    # Created again by its device, it is a conflict too (the record cannot show it holds this content).
    again = await create(s.client, device, ref)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "attachment_conflict"
    # A new id goes through.
    fresh = ref_for(data)
    assert (await upload(s.client, device, fresh, data)).status_code == 204
