"""``syncserver gc`` for attachments: unreferenced ones go after retention; referenced ones and siblings stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncserver.attachments.gc import AttachmentCollector
from tests.integration.attachment_client import create, patch, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def fs_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")):
        yield s


def collector(s: Server) -> AttachmentCollector:
    state = s.app.state
    return AttachmentCollector(state.store, state.keyring, state.schema, state.upload_service)


async def test_gc_removes_unreferenced_after_retention_and_keeps_referenced_ones_and_siblings(
    fs_server: Server,
) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    files = {name: os.urandom(90_000 + i) for i, name in enumerate(["value", "sibling", "overwritten", "never"])}
    refs = {name: ref_for(data) for name, data in files.items()}
    for name in files:
        assert (await upload(s.client, h, refs[name], files[name])).status_code == 204
    partial = ref_for(os.urandom(50_000))
    assert (await create(s.client, h, partial)).status_code == 201
    assert (await patch(s.client, h, partial.id, 0, b"x" * 1000)).status_code == 204

    def set_pod(name: str) -> list[dict[str, object]]:
        return [{"op": "set", "field": "pod", "value": refs[name].to_value()}]

    # Two devices write the photo concurrently: both stay as siblings.
    await s.push(h, "phone-a", [change(1, "dlv-1", set_pod("value"), hlc=(1_700_000_000_001, 0))])
    await s.push(h, "phone-b", [change(1, "dlv-1", set_pod("sibling"), hlc=(1_700_000_000_000, 0))])
    # A photo replaced by a write that saw it is no longer referenced.
    await s.push(h, "phone-c", [change(1, "dlv-2", set_pod("overwritten"))])
    await s.push(h, "phone-c", [change(2, "dlv-2", [{"op": "set", "field": "pod", "value": None}])])
    view = (await s.client.get("/v1/entities/deliveries/dlv-1", headers=h)).json()
    assert len(view["fields"]["pod"]["siblings"]) == 2

    now = int(time.time() * 1000)
    young = await collector(s).collect(tenant, now)
    assert (young.deleted, young.abandoned) == (0, 0)  # nothing is old enough yet

    retention = s.settings.attachments.retention_s * 1000
    result = await collector(s).collect(tenant, now + retention + DAY_MS)
    assert (result.referenced, result.deleted, result.abandoned) == (2, 2, 1)
    blobs = s.settings.data_dir / "blobs" / tenant
    assert sorted(p.name for p in blobs.iterdir()) == sorted([refs["value"].id, refs["sibling"].id])
    for name in ("value", "sibling"):
        r = await s.client.get(f"/v1/attachments/{refs[name].id}", headers=h)
        assert r.content == files[name]
    for gone in (refs["overwritten"], refs["never"]):
        assert (await s.client.get(f"/v1/attachments/{gone.id}", headers=h)).status_code == 404
    head = await s.client.head(f"/v1/attachments/uploads/{partial.id}", headers={**h, "Tus-Resumable": "1.0.0"})
    assert head.status_code == 404


async def test_gc_keeps_shared_objects_until_the_last_attachment_using_them_goes(fs_server: Server) -> None:
    s = fs_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = os.urandom(80_000)
    first, second = ref_for(data), ref_for(data)
    for ref in (first, second):
        assert (await upload(s.client, h, ref, data)).status_code == 204
    await s.push(h, "web-1", [change(1, "dlv-1", [{"op": "set", "field": "pod", "value": second.to_value()}])])
    later = int(time.time() * 1000) + s.settings.attachments.retention_s * 1000 + DAY_MS
    result = await collector(s).collect(tenant, later)
    assert result.deleted == 1  # the first (owner of the bytes) is unreferenced; the second still uses its chunks
    r = await s.client.get(f"/v1/attachments/{second.id}", headers=h)
    assert r.content == data


def test_the_gc_command_collects_attachments_too(tmp_path: Path) -> None:
    from syncserver.testing import cli, server_env

    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")
    cli(env, "tenant", "create", "acme")
    out = subprocess.run(  # the summary goes to stderr (rich console)
        [sys.executable, "-m", "syncserver.cli", "gc"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "collected 0 tombstones, 0 attachments, 0 abandoned uploads" in out.stderr
