"""The /admin pages in process: sign-in cookie, CSRF on every form, pages that show the data.

The real-browser walk-through is ``test_admin_browser.py``.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncproto.attachments import AttachmentRef
from syncserver.settings import Limits
from tests.integration.attachment_client import create, patch, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_admin_api import offline_conflict, rejected_cod

CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Server]:
    # Values over 64 bytes are rejected, so a dead letter is easy to make.
    async for s in start(make_settings(tmp_path, "memory://", limits=Limits(max_value_bytes=64))):
        s.client.follow_redirects = False  # the tests look at each redirect
        yield s


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(web: Server, tenant: str, role: str = "admin") -> str:
    page = await web.client.get("/admin/login")
    token = web.verifier.issue(tenant, "ops@acme", role)  # type: ignore[arg-type]
    r = await web.client.post("/admin/login", data={"token": token, "_csrf_token": csrf_of(page.text)})
    return r.headers.get("set-cookie", "") if r.status_code == 303 else f"{r.status_code}: {r.text}"


async def test_pages_need_sign_in(web: Server) -> None:
    r = await web.client.get("/admin/conflicts")
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/login"
    page = await web.client.get("/admin/login")
    assert page.status_code == 200
    assert "Admin token" in page.text


async def test_sign_in_sets_an_http_only_strict_cookie_and_is_audited(web: Server) -> None:
    tenant = await web.tenant()
    cookie = await sign_in(web, tenant)
    assert cookie.startswith("sync_admin=")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "path=/admin", "samesite=strict"} <= attributes
    page = await web.client.get("/admin/audit")
    assert page.status_code == 200
    assert "admin.sign_in" in page.text


async def test_forms_without_the_csrf_token_are_refused(web: Server) -> None:
    tenant = await web.tenant()
    token = web.verifier.issue(tenant, "ops@acme", "admin")
    r = await web.client.post("/admin/login", data={"token": token})
    assert r.status_code == 403
    assert "sync_admin=" not in r.headers.get("set-cookie", "")
    await sign_in(web, tenant)
    await offline_conflict(web, tenant)
    refused = await web.client.post("/admin/conflicts/c2.0/override", data={"choice": "pick:1"})
    assert refused.status_code == 403
    forged = await web.client.post("/admin/conflicts/c2.0/override", data={"choice": "pick:1", "_csrf_token": "x" * 80})
    assert forged.status_code == 403
    page = await web.client.get("/admin/conflicts/c2.0")
    assert '<span class="badge open" id="status">open</span>' in page.text


async def test_bad_or_non_admin_tokens_cannot_sign_in(web: Server) -> None:
    tenant = await web.tenant()
    assert (await sign_in(web, tenant, "driver")).startswith("403:")
    page = await web.client.get("/admin/login")
    r = await web.client.post("/admin/login", data={"token": "not-a-jwt", "_csrf_token": csrf_of(page.text)})
    assert r.status_code == 401
    assert "the token is not valid" in r.text
    assert (await web.client.get("/admin/conflicts")).status_code == 303


async def test_conflict_pages_show_values_side_by_side_and_override_them(web: Server) -> None:
    tenant = await web.tenant()
    await offline_conflict(web, tenant)
    await sign_in(web, tenant)

    listing = await web.client.get("/admin/conflicts", params={"entity": "dlv-123", "kind": "register"})
    assert listing.status_code == 200
    assert 'href="/admin/conflicts/c2.0"' in listing.text
    assert "driver-42" in listing.text
    assert "No conflicts match." in (await web.client.get("/admin/conflicts", params={"user": "nobody"})).text

    detail = await web.client.get("/admin/conflicts/c2.0")
    assert detail.status_code == 200
    assert len(re.findall(r'class="value( winner)?"', detail.text)) == 2
    assert "picked by precedence" in detail.text
    assert "2 values still concurrent" in detail.text

    r = await web.client.post(
        "/admin/conflicts/c2.0/override",
        data={"choice": "value", "value": '"pending"', "_csrf_token": csrf_of(detail.text)},
    )
    assert r.status_code == 303
    after = await web.client.get(r.headers["location"])
    assert "Overridden: the server change is seq" in after.text
    assert "Overridden by <strong>ops@acme</strong>" in after.text
    assert "one value: no conflict left" in after.text
    history = await web.client.get("/admin/entities/deliveries/dlv-123")
    assert "server:admin:ops@acme" in history.text
    assert history.text.count('class="applied"') == 3


async def test_dead_letter_pages_replay_and_discard(web: Server) -> None:
    tenant = await web.tenant()
    await rejected_cod(web, tenant)
    await sign_in(web, tenant)
    listing = await web.client.get("/admin/dead-letters")
    assert "value_too_large" in listing.text
    detail = await web.client.get("/admin/dead-letters/phone-a/1")
    assert "cod_cents" in detail.text

    r = await web.client.post("/admin/dead-letters/phone-a/1/discard", data={"_csrf_token": csrf_of(detail.text)})
    assert r.status_code == 303
    after = await web.client.get(r.headers["location"])
    assert '<span class="badge discarded" id="status">discarded</span>' in after.text
    missing = await web.client.get("/admin/dead-letters/phone-a/99")
    assert missing.status_code == 404
    assert "no dead letter phone-a/99" in missing.text


def photo(text: str = "dlv-7", size: tuple[int, int] = (320, 240)) -> bytes:
    """A small JPEG of a parcel, drawn with Pillow (a matplotlib dependency)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, (214, 221, 230))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle((w // 5, h // 4, w * 4 // 5, h * 7 // 8), fill=(176, 126, 76), outline=(110, 74, 40), width=4)
    draw.rectangle((w // 2 - 12, h // 4, w // 2 + 12, h * 7 // 8), fill=(222, 196, 140))
    label = (w // 5 + 10, h // 4 + 10, w * 4 // 5 - 10, h // 4 + 10 + h // 7)
    draw.rectangle(label, fill=(250, 250, 245))
    draw.text((label[0] + 6, label[1] + 4), text, fill=(30, 30, 30), font=ImageFont.load_default(h // 10))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


@pytest.fixture
async def attached(tmp_path: Path) -> AsyncIterator[Server]:
    # Default limits: an attachment reference is larger than the 64-byte values of ``web``.
    async for s in start(make_settings(tmp_path, "memory://")):
        s.client.follow_redirects = False
        yield s


async def pod_with_three_photos(s: Server, tenant: str) -> tuple[AttachmentRef, AttachmentRef, AttachmentRef, bytes]:
    """dlv-7's proof of delivery: one photo uploaded, one still uploading, one refused (its bytes do not match)."""
    device = s.headers(tenant, "driver-7")
    data, other, bad = photo(), photo("second"), photo("third")
    uploaded, waiting, refused = ref_for(data), ref_for(other, "image/png"), ref_for(bad)
    assert (await upload(s.client, device, uploaded, data)).status_code == 204
    assert (await create(s.client, device, waiting)).status_code == 201
    assert (await patch(s.client, device, waiting.id, 0, other[:500])).status_code == 204
    tampered = bytes([bad[0] ^ 1]) + bad[1:]
    assert (await upload(s.client, device, refused, tampered)).json()["error"]["code"] == "attachment_hash_mismatch"
    ops = [
        {"op": "set", "field": "pod_photo", "value": uploaded.to_value()},
        {"op": "set", "field": "parcel_photo", "value": waiting.to_value()},
    ]
    results = await s.push(device, "phone-7", [change(1, "dlv-7", ops)])
    assert results[0]["status"] == "applied"
    later = [{"op": "set", "field": "signature", "value": refused.to_value()}]
    assert (await s.push(device, "phone-7", [change(2, "dlv-7", later)]))[0]["status"] == "applied"
    return uploaded, waiting, refused, data


async def test_entity_history_shows_each_changes_attachments_with_status_and_thumbnails(attached: Server) -> None:
    s = attached
    tenant = await s.tenant()
    uploaded, waiting, refused, _ = await pod_with_three_photos(s, tenant)
    await sign_in(s, tenant)
    page = await s.client.get("/admin/entities/deliveries/dlv-7")
    assert page.status_code == 200
    timeline = page.text[page.text.index('id="timeline"') :]
    chips = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<div class="attachment" id="attachment-([^"]+)">.*?</div>\s*</div>', timeline, re.S)
    }
    available = chips[uploaded.id]
    assert f'<img class="thumb" src="/admin/attachments/{uploaded.id}/content"' in available
    assert '<span class="badge available">available</span> <code>pod_photo</code>' in available
    assert '<span class="badge pending">pending</span> <code>parcel_photo</code>' in chips[waiting.id]
    assert "<img" not in chips[waiting.id]  # no bytes to show yet
    assert '<span class="badge refused">refused</span>' in chips[refused.id]
    assert "<code>attachment_hash_mismatch</code>" in chips[refused.id]
    assert "<img" not in chips[refused.id]
    # The state now shows the current references the same way.
    state = page.text[page.text.index('id="state"') : page.text.index('id="timeline"')]
    assert f'src="/admin/attachments/{uploaded.id}/content"' in state
    # The JSON history carries the same statuses.
    api = await s.client.get("/v1/admin/entities/deliveries/dlv-7/history", headers=s.headers(tenant, "ops", "admin"))
    found = {a["id"]: (a["status"], a["field"], a.get("code")) for c in api.json()["changes"] for a in c["attachments"]}
    assert found == {
        uploaded.id: ("available", "pod_photo", None),
        waiting.id: ("pending", "parcel_photo", None),
        refused.id: ("refused", "signature", "attachment_hash_mismatch"),
    }


async def test_the_thumbnail_route_serves_the_bytes_to_a_signed_in_admin_of_the_tenant_only(attached: Server) -> None:
    s = attached
    tenant = await s.tenant()
    uploaded, waiting, _, data = await pod_with_three_photos(s, tenant)
    await sign_in(s, tenant)
    r = await s.client.get(f"/admin/attachments/{uploaded.id}/content")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-disposition"] == "inline"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    unfinished = await s.client.get(f"/admin/attachments/{waiting.id}/content")
    assert unfinished.status_code == 404  # nothing is served before it is verified
    assert data not in unfinished.content

    other = await s.tenant("globex")
    await sign_in(s, other)  # the cookie now holds another tenant's admin
    across = await s.client.get(f"/admin/attachments/{uploaded.id}/content")
    assert across.status_code == 404
    assert f"no attachment {uploaded.id}" in across.text

    s.client.cookies.clear()
    anonymous = await s.client.get(f"/admin/attachments/{uploaded.id}/content")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/admin/login"
    assert anonymous.content == b""
    device = await s.client.get(
        f"/admin/attachments/{uploaded.id}/content", headers=s.headers(tenant, "driver-7")
    )  # a bearer token is not an admin session
    assert device.status_code == 303


async def test_a_non_image_attachment_is_served_as_a_download_never_inline(attached: Server) -> None:
    s = attached
    tenant = await s.tenant()
    device = s.headers(tenant, "driver-7")
    data = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    ref = ref_for(data, "image/svg+xml")
    assert (await upload(s.client, device, ref, data)).status_code == 204  # image/* is allowed by default
    await sign_in(s, tenant)
    r = await s.client.get(f"/admin/attachments/{ref.id}/content")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == f'attachment; filename="{ref.id}"'
    assert r.content == data


async def test_the_attachments_page_lists_refused_and_unfinished_uploads_and_replays(attached: Server) -> None:
    s = attached
    tenant = await s.tenant()
    uploaded, waiting, refused, _ = await pod_with_three_photos(s, tenant)
    await sign_in(s, tenant)
    page = await s.client.get("/admin/attachments")
    assert page.status_code == 200
    refused_table = page.text[page.text.index('id="refused"') : page.text.index('id="uploading"')]
    uploading_table = page.text[page.text.index('id="uploading"') :]
    assert f'<tr id="{refused.id}">' in refused_table
    assert "<code>attachment_hash_mismatch</code>" in refused_table
    assert 'href="/admin/entities/deliveries/dlv-7"' in refused_table
    assert waiting.id not in refused_table
    assert uploaded.id not in page.text  # available attachments are not listed
    assert f'<tr id="{waiting.id}">' in uploading_table
    assert f"500 of {waiting.size} bytes" in uploading_table

    forged = await s.client.post(f"/admin/attachments/{refused.id}/replay")
    assert forged.status_code == 403  # no CSRF token
    r = await s.client.post(f"/admin/attachments/{refused.id}/replay", data={"_csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    after = await s.client.get(r.headers["location"])
    assert f"{refused.id} re-admitted" in after.text
    refused_after = after.text[after.text.index('id="refused"') : after.text.index('id="uploading"')]
    assert refused.id not in refused_after
    assert f'<tr id="{refused.id}">' in after.text[after.text.index('id="uploading"') :]
    audit = await s.client.get("/admin/audit", params={"target": refused.id})
    assert "attachment.replay" in audit.text
