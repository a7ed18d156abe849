"""Attachments end to end through the app: references in pushes, tus uploads, statuses, downloads, scope."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncproto.attachments import AttachmentRef
from syncserver.attachments.uploads import Declared
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from tests.integration.attachment_client import TUS, create, patch, ref_for, sha1_header, upload
from tests.integration.conftest import Server, change, make_settings, start


@pytest.fixture(params=["memory", "sqlite"])
async def app_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    url = "memory://" if request.param == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    async for s in start(make_settings(tmp_path, url)):
        yield s


def photo(size: int = 700_000) -> bytes:
    return os.urandom(size)


async def test_a_change_referencing_a_missing_attachment_is_applied_pending_then_available(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "driver-1", "driver", ("driver:1",))
    data = photo()
    ref = ref_for(data)
    ops = [{"op": "set", "field": "driver_id", "value": "1"}, {"op": "set", "field": "pod", "value": ref.to_value()}]
    results = await s.push(h, "phone-1", [change(1, "dlv-1", ops)])
    assert results[0]["status"] == "applied"

    changes, _ = await s.pull_all(h)
    assert changes[0]["attachments"] == {ref.id: "pending"}
    r = await s.client.get("/v1/entities/deliveries/dlv-1", headers=h)
    assert r.json()["attachments"] == {ref.id: "pending"}
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=h)).status_code == 404

    r = await upload(s.client, h, ref, data)
    assert r.status_code == 204, r.text
    changes, _ = await s.pull_all(h)
    assert changes[0]["attachments"] == {ref.id: "available"}
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=h)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == ref.sha256
    assert r.headers["etag"] == f'"{ref.id}"'
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert r.headers["content-type"] == "image/jpeg"


async def test_range_requests_return_exactly_the_requested_bytes(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = photo(600_000)
    ref = ref_for(data)
    assert (await upload(s.client, h, ref, data)).status_code == 204
    url = f"/v1/attachments/{ref.id}"
    for header, (first, end) in {
        "bytes=0-9": (0, 10),
        "bytes=262140-262150": (262140, 262151),
        "bytes=-5": (len(data) - 5, len(data)),
        "bytes=500000-": (500000, len(data)),
    }.items():
        r = await s.client.get(url, headers={**h, "Range": header})
        assert r.status_code == 206, header
        assert r.content == data[first:end], header
        assert r.headers["content-range"] == f"bytes {first}-{end - 1}/{len(data)}"
    r = await s.client.get(url, headers={**h, "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.json()["error"]["code"] == "range_not_satisfiable"
    huge = "9" * 5000  # more digits than Python's int() takes
    for header, status, body in [
        (f"bytes=0-{huge}", 206, data),  # a last position past the end is the end
        (f"bytes={huge}-", 416, None),  # a first position past the end is unsatisfiable
        (f"bytes=-{huge}", 206, data),  # a suffix longer than the file is the file
        ("bytes=5-3", 200, data),  # not a valid range: ignored (RFC 9110, 14.2)
    ]:
        r = await s.client.get(url, headers={**h, "Range": header})
        assert r.status_code == status, header[:40]
        if body is not None:
            assert r.content == body, header[:40]
    r = await s.client.get(url, headers={**h, "If-None-Match": f'"{ref.id}"'})
    assert r.status_code == 304


async def test_head_tells_the_offset_and_a_bad_checksum_is_refused_with_460(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "driver-1", "driver", ("driver:1",))
    data = photo(300_000)
    ref = ref_for(data)
    r = await create(s.client, h, ref)
    assert r.status_code == 201
    assert r.headers["location"] == f"/v1/attachments/uploads/{ref.id}"
    assert (await patch(s.client, h, ref.id, 0, data[:100_000])).status_code == 204
    head = await s.client.head(f"/v1/attachments/uploads/{ref.id}", headers={**h, **TUS})
    assert head.headers["upload-offset"] == "100000"
    assert head.headers["upload-length"] == str(len(data))

    bad = await patch(s.client, h, ref.id, 100_000, data[100_000:200_000], sha1_header(b"something else"))
    assert bad.status_code == 460
    assert bad.json()["error"]["code"] == "checksum_mismatch"
    head = await s.client.head(f"/v1/attachments/uploads/{ref.id}", headers={**h, **TUS})
    assert head.headers["upload-offset"] == "100000"

    wrong = await patch(s.client, h, ref.id, 50, data[50:100])
    assert wrong.status_code == 409
    assert wrong.json()["error"]["code"] == "offset_mismatch"

    good = await patch(s.client, h, ref.id, 100_000, data[100_000:], sha1_header(data[100_000:]))
    assert good.status_code == 204
    assert good.headers["upload-offset"] == str(len(data))
    # The driver sees it only once an entity in its channels references it.
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=h)).status_code == 404
    ops = [{"op": "set", "field": "driver_id", "value": "1"}, {"op": "set", "field": "pod", "value": ref.to_value()}]
    await s.push(h, "phone-1", [change(1, "dlv-1", ops)])
    r = await s.client.get(f"/v1/attachments/{ref.id}", headers=h)
    assert r.content == data


async def test_a_refused_upload_is_a_dead_letter_and_the_next_upload_goes_through(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    text = b"not an image"
    bad_type = ref_for(text, media_type="text/plain")
    r = await create(s.client, h, bad_type)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "media_type_not_allowed"
    r = await create(s.client, h, bad_type)  # a retry gets the same stable answer
    assert r.json()["error"]["code"] == "media_type_not_allowed"

    data = photo(200_000)
    lying = ref_for(os.urandom(200_000))
    lying = ref_for(data, attachment_id=lying.id)
    lying = type(lying)(id=lying.id, size=lying.size, sha256="0" * 64, media_type="image/png")
    r = await upload(s.client, h, lying, data)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "attachment_hash_mismatch"
    ops = [{"op": "set", "field": "pod", "value": lying.to_value()}]
    await s.push(h, "web-1", [change(1, "dlv-9", ops)])
    r = await s.client.get("/v1/entities/deliveries/dlv-9", headers=h)
    assert r.json()["attachments"] == {lying.id: "refused"}
    assert (await s.client.get(f"/v1/attachments/{lying.id}", headers=h)).status_code == 404

    good = ref_for(data)
    assert (await upload(s.client, h, good, data)).status_code == 204
    assert (await s.client.get(f"/v1/attachments/{good.id}", headers=h)).content == data


async def test_another_tenant_and_another_drivers_channel_are_not_found(app_server: Server) -> None:
    s = app_server
    acme, other = await s.tenant("acme"), await s.tenant("other")
    d1 = s.headers(acme, "driver-1", "driver", ("driver:1",))
    d2 = s.headers(acme, "driver-2", "driver", ("driver:2",))
    data = photo(100_000)
    ref = ref_for(data)
    assert (await upload(s.client, d1, ref, data)).status_code == 204
    ops = [{"op": "set", "field": "driver_id", "value": "1"}, {"op": "set", "field": "pod", "value": ref.to_value()}]
    await s.push(d1, "phone-1", [change(1, "dlv-1", ops)])
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=d1)).status_code == 200
    for headers in (d2, s.headers(other, "disp"), s.headers(other, "driver-1", "driver", ("driver:1",))):
        r = await s.client.get(f"/v1/attachments/{ref.id}", headers=headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    # Another user (or tenant) cannot resume or read the state of the upload either.
    head = await s.client.head(f"/v1/attachments/uploads/{ref.id}", headers={**s.headers(other, "driver-1"), **TUS})
    assert head.status_code == 404
    # Driver 2 writes driver 1's attachment id into its own delivery: a reference grants the bytes only with
    # their size and SHA-256, which a driver that learnt just the id does not have.
    forged = [
        AttachmentRef(id=ref.id, size=1, sha256="0" * 64, media_type="image/jpeg"),
        AttachmentRef(id=ref.id, size=ref.size, sha256="0" * 64, media_type="image/jpeg"),
        AttachmentRef(id=ref.id, size=ref.size + 1, sha256=ref.sha256, media_type="image/jpeg"),
    ]
    for n, fake in enumerate(forged, start=1):
        mine = [{"op": "set", "field": "driver_id", "value": "2"}]
        mine.append({"op": "set", "field": "pod", "value": fake.to_value()})
        assert (await s.push(d2, "phone-2", [change(n, "dlv-2", mine)]))[0]["status"] == "applied"
        r = await s.client.get(f"/v1/attachments/{ref.id}", headers=d2)
        assert r.status_code == 404, fake
    # An entity moved out of driver 1's channels takes the attachment with it.
    await s.push(d1, "phone-1", [change(2, "dlv-1", [{"op": "set", "field": "depot", "value": "x"}])])
    moved = [{"op": "set", "field": "driver_id", "value": "2"}]
    await s.push(s.headers(acme, "disp"), "web-1", [change(1, "dlv-1", moved, context={"phone-1": 2})])
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=d1)).status_code == 404
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=d2)).status_code == 200


async def test_options_tells_the_tus_version_extensions_limits_and_checksums(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    r = await s.client.options("/v1/attachments/uploads", headers=s.headers(tenant, "d"))
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    extensions = {"creation", "creation-with-upload", "checksum", "termination", "expiration"}
    assert set(r.headers["tus-extension"].split(",")) == extensions
    assert "sha1" in r.headers["tus-checksum-algorithm"].split(",")
    assert int(r.headers["tus-max-size"]) == s.settings.attachments.max_bytes


async def test_a_malformed_upload_creation_is_refused_with_a_stable_code(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = {**s.headers(tenant, "d"), **TUS}
    good = ref_for(b"abc")
    for metadata, length in [
        (f"id {b64('..')},sha256 {b64(good.sha256)},media_type {b64('image/png')}", "3"),  # not an object name
        (f"id {b64('a1')},sha256 {b64('xyz')},media_type {b64('image/png')}", "3"),  # not a SHA-256
        (f"id {b64('a1')},sha256 {b64(good.sha256)},media_type {b64('image/png')}", "-1"),
        ("id !!!", "3"),
    ]:
        r = await s.client.post(
            "/v1/attachments/uploads", headers={**h, "Upload-Length": length, "Upload-Metadata": metadata}
        )
        assert r.status_code == 400, metadata
        assert r.json()["error"]["code"] == "invalid_request"
    r = await s.client.post("/v1/attachments/uploads", headers={**s.headers(tenant, "d"), "Upload-Length": "3"})
    assert r.status_code == 412  # no Tus-Resumable


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_creation_with_upload_takes_the_first_bytes_in_the_creating_request(app_server: Server) -> None:
    """tus creation-with-upload: one request for a small photo, or the first part of a larger one."""
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")

    whole = photo(300_000)
    ref = ref_for(whole)
    r = await create(s.client, h, ref, whole, sha1_header(whole))
    assert r.status_code == 201, r.text
    assert r.headers["Upload-Offset"] == str(len(whole))
    assert "Upload-Expires" not in r.headers  # complete: nothing left to expire
    got = await s.client.get(f"/v1/attachments/{ref.id}", headers=h)
    assert got.status_code == 200
    assert got.content == whole

    data = photo(500_000)
    ref = ref_for(data)
    r = await create(s.client, h, ref, data[:200_000])
    assert (r.status_code, r.headers["Upload-Offset"]) == (201, "200000")
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=h)).status_code == 404  # not complete
    # A retried creation (the answer was lost) keeps what arrived and ignores its body.
    r = await create(s.client, h, ref, data[:300_000])
    assert (r.status_code, r.headers["Upload-Offset"]) == (201, "200000")
    r = await patch(s.client, h, ref.id, 200_000, data[200_000:])
    assert (r.status_code, r.headers["Upload-Offset"]) == (204, str(len(data)))
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=h)).content == data


@pytest.mark.parametrize(
    ("size", "extra", "damaged", "status", "code"),
    [(300_000, b"", True, 460, "checksum_mismatch"), (1000, b"extra", False, 413, "body_too_large")],
    ids=["damaged", "longer-than-declared"],
)
async def test_a_refused_creation_body_keeps_nothing_and_the_resend_goes_through(
    app_server: Server, size: int, extra: bytes, damaged: bool, status: int, code: str
) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = photo(size)
    ref = ref_for(data)
    r = await create(s.client, h, ref, data + extra, sha1_header(b"something else") if damaged else None)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    head = await s.client.head(f"/v1/attachments/uploads/{ref.id}", headers={**h, **TUS})
    assert (head.status_code, head.headers["Upload-Offset"]) == (200, "0")  # created, nothing kept
    # The device resends the right bytes.
    r = await create(s.client, h, ref, data, sha1_header(data))
    assert (r.status_code, r.headers["Upload-Offset"]) == (201, str(len(data)))
    assert (await s.client.get(f"/v1/attachments/{ref.id}", headers=h)).content == data


async def test_a_patch_in_flight_never_writes_into_an_upload_created_again_under_its_id(app_server: Server) -> None:
    """A PATCH under way, then its upload terminated (tus DELETE) and created again with other content: the old
    PATCH's write is refused, and the new upload keeps its own size and content."""
    s = app_server
    tenant = await s.tenant()
    uploads = s.app.state.upload_service
    device = Principal(tenant, "d-1", "dispatcher")
    first, second = os.urandom(4000), os.urandom(50)
    await uploads.create(device, Declared("att-1", len(first), hashlib.sha256(first).hexdigest(), "image/png"))
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield first[:10]
        await gate.wait()
        yield first[10:2000]

    patching = asyncio.create_task(uploads.receive(device, "att-1", 0, slow_body()))
    await asyncio.sleep(0.05)
    await uploads.terminate(device, "att-1")
    declared = Declared("att-1", len(second), hashlib.sha256(second).hexdigest(), "image/png")
    again = await uploads.create(device, declared)
    gate.set()
    with pytest.raises(ApiError) as refused:
        await patching
    assert refused.value.status == 409
    row = await uploads.meta.get_attachment(tenant, "att-1")
    assert (row.size, row.upload_offset, row.mac) == (len(second), 0, again.mac)
