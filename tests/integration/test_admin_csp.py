"""The admin pages send a strict Content-Security-Policy and need nothing it forbids.

The browser test (test_admin_browser.py) checks in chromium that nothing is
blocked; these check the headers on every kind of admin response and that the
templates carry no inline script or style the policy would block.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncserver.admin.web import CONTENT_SECURITY_POLICY, TEMPLATES
from tests.integration.conftest import Server, make_settings, start


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, "memory://")):
        yield s


def directives(header: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_policy_allows_no_script_and_only_our_own_styles_and_forms() -> None:
    policy = directives(CONTENT_SECURITY_POLICY)
    assert policy["default-src"] == "'none'"
    assert "script-src" not in policy  # falls back to default-src 'none'
    assert policy["style-src"] == "'self'"
    assert policy["form-action"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_every_kind_of_admin_response_carries_the_policy(server: Server) -> None:
    tenant = await server.tenant()
    admin = server.verifier.issue(tenant, "ops", "admin")
    server.client.cookies.set("sync_admin", admin, path="/admin")
    responses = {
        "sign-in page": await server.client.get("/admin/login"),
        "page": await server.client.get("/admin/conflicts"),
        "redirect": await server.client.get("/admin", follow_redirects=False),
        "error page": await server.client.get("/admin/conflicts/c99.0"),
        "stylesheet": await server.client.get("/admin/static/admin.css"),
        "csrf refusal": await server.client.post("/admin/logout"),
        "not found": await server.client.get("/admin/static/missing.css"),
    }
    assert responses["page"].status_code == 200
    assert responses["error page"].status_code in (400, 404)
    assert responses["csrf refusal"].status_code == 403
    for name, r in responses.items():
        assert r.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, name
        assert r.headers.get("x-content-type-options") == "nosniff", name


async def test_the_stylesheet_is_served_as_css(server: Server) -> None:
    r = await server.client.get("/admin/static/admin.css")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/css")
    assert "--accent" in r.text


async def test_the_api_and_the_swagger_page_are_left_alone(server: Server) -> None:
    for path in ("/health/live", "/schema/swagger"):
        r = await server.client.get(path)
        assert "content-security-policy" not in r.headers, path


def test_no_template_has_inline_script_style_or_event_handler() -> None:
    inline = re.compile(r"<script|<style|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE)
    offenders = [p.name for p in TEMPLATES.rglob("*.html") if inline.search(p.read_text())]
    assert not offenders
