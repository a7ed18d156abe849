"""The /admin pages in process: sign-in cookie, CSRF on every form, pages that show the data.

The real-browser walk-through is ``test_admin_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncserver.settings import Limits
from tests.integration.conftest import Server, make_settings, start
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
