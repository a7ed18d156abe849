"""Admin tools for attachments: refused uploads are listed and replayable; entity history shows attachments."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from syncserver.testing import cli, server_env
from tests.integration.attachment_client import create, patch, ref_for, upload
from tests.integration.conftest import Server, change


async def test_a_refused_upload_is_listed_and_a_replay_lets_the_device_upload_it_again(server: Server) -> None:
    s = server
    tenant = await s.tenant()
    admin, device = s.headers(tenant, "ops", "admin"), s.headers(tenant, "d-1")
    data = os.urandom(120_000)
    ref = ref_for(data)
    damaged = bytearray(data)
    damaged[5] ^= 1
    r = await upload(s.client, device, ref, bytes(damaged))
    assert r.json()["error"]["code"] == "attachment_hash_mismatch"

    page = (await s.client.get("/v1/admin/attachments?state=refused", headers=admin)).json()
    assert [(a["id"], a["code"], a["status"], a["user"]) for a in page["attachments"]] == [
        (ref.id, "attachment_hash_mismatch", "refused", "d-1")
    ]
    assert (await s.client.get("/v1/admin/attachments?state=refused", headers=device)).status_code == 403

    replayed = (await s.client.post(f"/v1/admin/attachments/{ref.id}/replay", headers=admin)).json()
    assert (replayed["state"], replayed["received"]) == ("uploading", 0)
    audit = (await s.client.get("/v1/admin/audit", params={"target": ref.id}, headers=admin)).json()
    assert [(e["action"], e["actor"]) for e in audit["entries"]] == [("attachment.replay", "ops")]
    assert (await upload(s.client, device, ref, data)).status_code == 204
    shown = (await s.client.get(f"/v1/admin/attachments/{ref.id}", headers=admin)).json()
    assert shown["status"] == "available"
    assert "code" not in shown
    missing = await s.client.post(f"/v1/admin/attachments/{ref.id}/replay", headers=admin)
    assert missing.status_code == 404  # only refused uploads can be replayed


async def test_a_refusal_that_still_applies_stays_refused_after_replay(server: Server) -> None:
    s = server
    tenant = await s.tenant()
    admin, device = s.headers(tenant, "ops", "admin"), s.headers(tenant, "d-1")
    ref = ref_for(b"%PDF-not-allowed", media_type="text/csv")
    assert (await create(s.client, device, ref)).status_code == 415
    replayed = (await s.client.post(f"/v1/admin/attachments/{ref.id}/replay", headers=admin)).json()
    assert (replayed["state"], replayed["code"]) == ("refused", "media_type_not_allowed")


async def test_entity_history_shows_every_attachment_with_its_status(server: Server) -> None:
    s = server
    tenant = await s.tenant()
    admin, device = s.headers(tenant, "ops", "admin"), s.headers(tenant, "d-1")
    first, second = os.urandom(30_000), os.urandom(40_000)
    old, new = ref_for(first), ref_for(second, media_type="image/png")
    assert (await upload(s.client, device, old, first)).status_code == 204
    assert (await create(s.client, device, new)).status_code == 201
    assert (await patch(s.client, device, new.id, 0, second[:1000])).status_code == 204

    await s.push(device, "phone-1", [change(1, "dlv-1", [{"op": "set", "field": "pod", "value": old.to_value()}])])
    await s.push(device, "phone-1", [change(2, "dlv-1", [{"op": "set", "field": "pod", "value": new.to_value()}])])
    r = await s.client.get("/v1/admin/entities/deliveries/dlv-1/attachments", headers=admin)
    assert r.status_code == 200
    found = {a["id"]: a for a in r.json()}
    assert (found[old.id]["status"], found[old.id]["current"]) == ("available", False)
    assert (found[new.id]["status"], found[new.id]["current"], found[new.id]["media_type"]) == (
        "pending",
        True,
        "image/png",
    )
    assert len(found[old.id]["seqs"]) == 1
    assert found[new.id]["seqs"][0] > found[old.id]["seqs"][0]


def test_the_attachments_command_lists_and_replays(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")
    cli(env, "tenant", "create", "acme")
    assert json.loads(cli(env, "attachments", "list", "--tenant", "acme", "--state", "refused", "--json")) == []
    with pytest.raises(RuntimeError, match="not_found"):
        cli(env, "attachments", "replay", "--tenant", "acme", "no-such-upload")


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_metrics_count_bytes_stored_and_failed_uploads(server: Server) -> None:
    s = server
    tenant = await s.tenant()
    device = s.headers(tenant, "d-1")
    before = (await s.client.get("/metrics")).text
    data = os.urandom(10_000)
    assert (await upload(s.client, device, ref_for(data), data)).status_code == 204
    assert (await create(s.client, device, ref_for(b"x", media_type="text/plain"))).status_code == 415
    after = (await s.client.get("/metrics")).text
    stored = "sync_attachment_bytes_stored_total"
    failed = 'sync_attachment_uploads_failed_total{code="media_type_not_allowed"}'
    assert metric(after, stored) - metric(before, stored) == len(data)
    assert metric(after, failed) - metric(before, failed) == 1
    assert "sync_attachment_uploads_in_progress" in after
