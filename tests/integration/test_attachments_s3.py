"""The server with its attachments in S3: moto's standalone server on 127.0.0.1, spoken to over HTTP by obstore."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from syncserver.attachments.settings import AttachmentSettings
from tests.integration.attachment_client import ref_for, upload
from tests.integration.conftest import Server, make_settings, start
from tests.moto_s3 import S3Endpoint, moto_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
async def s3_server(s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key)
    bucket = s3.create_bucket()
    files = AttachmentSettings(blob_url=f"s3://{bucket}", s3_endpoint=s3.url, s3_region=s3.region)
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", attachments=files)
    async for s in start(settings):
        yield s


async def test_upload_and_ranged_download_through_s3(s3_server: Server) -> None:
    s = s3_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = os.urandom(700_000)
    ref = ref_for(data)
    assert (await upload(s.client, h, ref, data, chunk=150_000)).status_code == 204
    assert not (s.settings.data_dir / "blobs").exists()  # nothing went to the local disk
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=h)
    assert hashlib.sha256(r.content).hexdigest() == ref.sha256
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers={**h, "Range": "bytes=262000-262300"})
    assert r.status_code == 206
    assert r.content == data[262000:262301]
