"""The admin web page in a real browser: Debian's chromium driven by Playwright, against a real server.

Signs in with an admin token, finds the conflict two offline drivers made,
overrides it, and checks that a device's next pull has no siblings left; then
replays and discards a dead letter. A second walk looks at a delivery's proof
of delivery: the photo as a thumbnail, a signature whose upload was refused. Screenshots go to a temporary directory, or
to docs/img/ with ``SYNC_UPDATE_SCREENSHOTS=1`` (the admin guide shows them).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``scripts/test`` does
it) and the ``playwright`` Python package; without them the test skips, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncproto.attachments import AttachmentRef
from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import ROOT, cli, free_port, running_server, server_env
from tests import services
from tests.integration.attachment_client import TUS, UPLOADS, metadata, ref_for
from tests.integration.test_admin_web import photo

CHROMIUM = os.environ.get("SYNC_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
NOW = int(time.time() * 1000)

pytestmark = pytest.mark.slow


def require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        missing.append(f"chromium ({CHROMIUM}; apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if services.IN_CI:
            pytest.fail(message + "; under CI=true this is a failure, not a skip", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("SYNC_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs" / "img"
    return tmp_path / "img"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    require_browser()
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_LOG_LEVEL="WARNING")
    cli(env, "tenant", "create", "acme")
    with running_server(env, free_port(), tmp_path / "server.log") as base:
        yield base, env


def change(n: int, entity: str, ops: list[dict[str, Any]], hlc: int, context: dict[str, int] | None = None) -> Any:
    return {
        "id": str(uuid.uuid4()),
        "n": n,
        "collection": "deliveries",
        "entity": entity,
        "hlc": [hlc, 0],
        "context": context or {},
        "ops": ops,
    }


def push(base: str, token: str, replica: str, changes: list[Any]) -> list[Any]:
    r = httpx.post(f"{base}/v1/sync/push", json={"replica": replica, "changes": changes}, headers=bearer(token))
    assert r.status_code == 200, r.text
    results: list[Any] = r.json()["results"]
    return results


def pull(base: str, token: str, cursor: str | None) -> Any:
    r = httpx.post(f"{base}/v1/sync/pull", json={"cursor": cursor}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_admin_overrides_a_conflict_in_the_browser_and_devices_collapse_it(
    site: tuple[str, dict[str, str]], shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, env = site
    verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
    a = verifier.issue("acme", "driver-17", "driver", ("depot:dxb",))
    b = verifier.issue("acme", "driver-42", "driver", ("depot:dxb",))
    admin = verifier.issue("acme", "ops@acme", "admin")
    depot = {"op": "set", "field": "depot", "value": "dxb"}

    # Both phones are offline; each marks delivery dlv-123, then they sync.
    assert (
        push(base, a, "phone-a", [change(1, "dlv-123", [depot, set_status("delivered")], NOW)])[0]["status"]
        == "applied"
    )
    assert push(base, b, "phone-b", [change(1, "dlv-123", [set_status("failed")], NOW + 900)])[0]["status"] == "applied"
    # A third change is rejected (an increment on a register) and becomes a dead letter.
    bad = change(2, "dlv-123", [{"op": "inc", "field": "status", "by": 1}], NOW + 1000)
    assert push(base, b, "phone-b", [bad])[0]["status"] == "rejected"
    seen = pull(base, a, None)
    assert len(seen["changes"][0]["fields"]["status"]["siblings"]) == 2

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.set_default_timeout(10_000)
            # The pages send a strict Content-Security-Policy: chromium reports anything it blocks.
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

            page.goto(f"{base}/admin/conflicts")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(page.locator("header")).to_have_css("background-color", "rgb(23, 32, 46)")  # the stylesheet loaded
            page.get_by_label("Admin token").fill(admin)
            page.get_by_role("button", name="Sign in").click()

            expect(page.get_by_role("heading", name="Conflicts")).to_be_visible()
            row = page.locator("#conflicts tbody tr", has_text="dlv-123")
            expect(row).to_contain_text("driver-42")
            expect(row).to_contain_text("precedence")
            expect(row.locator(".badge")).to_have_text("open")
            page.screenshot(path=str(shots / "admin-conflicts.png"), full_page=True)

            row.get_by_role("link", name="c2.0").click()
            expect(page.get_by_role("heading", name="Conflict c2.0")).to_be_visible()
            values = page.locator("#values .value")
            expect(values).to_have_count(2)
            expect(page.locator("#values .winner")).to_contain_text('"delivered"')
            expect(page.locator("#values .winner")).to_contain_text("driver-17")
            expect(page.locator("#current")).to_contain_text("2 values still concurrent")
            page.screenshot(path=str(shots / "admin-conflict.png"), full_page=True)

            page.get_by_label('keep "failed" (driver-42)').check()
            page.get_by_role("button", name="Override").click()
            expect(page.get_by_role("status")).to_contain_text("Overridden: the server change is seq")
            expect(page.locator("#status")).to_have_text("overridden")
            expect(page.locator("#override-info")).to_contain_text("ops@acme")
            expect(page.locator("#current")).to_contain_text("one value: no conflict left")
            page.screenshot(path=str(shots / "admin-override.png"), full_page=True)

            # The phone syncs: the siblings are gone, the admin's choice is the value.
            after = pull(base, a, seen["cursor"])
            assert after["changes"][0]["fields"] == {"status": {"kind": "register", "value": "failed"}}

            page.get_by_role("link", name="deliveries/dlv-123").click()
            expect(page.get_by_role("heading", name="deliveries/dlv-123")).to_be_visible()
            expect(page.locator("#timeline li.applied")).to_have_count(3)
            expect(page.locator("#timeline li.rejected")).to_contain_text("kind_mismatch")
            expect(page.locator("#timeline")).to_contain_text("server:admin:ops@acme")
            page.screenshot(path=str(shots / "admin-entity.png"), full_page=True)

            page.get_by_role("link", name="Dead letters").click()
            letter = page.locator("#dead-letters tbody tr", has_text="phone-b / 2")
            expect(letter).to_contain_text("kind_mismatch")
            page.screenshot(path=str(shots / "admin-dead-letters.png"), full_page=True)
            letter.get_by_role("button", name="Replay").click()
            expect(page.get_by_role("status")).to_contain_text("rejected: kind_mismatch")
            expect(page.locator("#status")).to_have_text("open")
            page.get_by_role("button", name="Discard").click()
            expect(page.locator("#status")).to_have_text("discarded")

            page.get_by_role("link", name="Audit log").click()
            audit = page.locator("#audit")
            for action in ("admin.sign_in", "conflict.override", "dead_letter.replay_failed", "dead_letter.discard"):
                expect(audit).to_contain_text(action)
            assert not blocked, blocked
        finally:
            browser.close()


def set_status(value: str) -> dict[str, Any]:
    return {"op": "set", "field": "status", "value": value}


def tus_upload(base: str, token: str, ref: AttachmentRef, data: bytes) -> httpx.Response:
    """Create the upload and send the bytes in one PATCH; the PATCH's response."""
    created = httpx.post(
        f"{base}{UPLOADS}",
        headers={**bearer(token), **TUS, "Upload-Length": str(ref.size), "Upload-Metadata": metadata(ref)},
    )
    assert created.status_code == 201, created.text
    headers = {**bearer(token), **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    return httpx.patch(f"{base}{UPLOADS}/{ref.id}", headers=headers, content=data)


def test_admin_sees_a_delivery_photo_and_a_refused_signature_in_the_browser(
    site: tuple[str, dict[str, str]], shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, env = site
    verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
    driver = verifier.issue("acme", "driver-17", "driver", ("depot:dxb",))
    admin = verifier.issue("acme", "ops@acme", "admin")
    picture = photo("dlv-124 · 1 of 1", (640, 480))
    signature = photo("signature", (300, 120))
    label = photo("label", (480, 360))
    pod, signed, parcel = ref_for(picture), ref_for(signature, "image/png"), ref_for(label)
    assert tus_upload(base, driver, pod, picture).status_code == 204
    damaged = tus_upload(base, driver, signed, signature[:-1] + bytes([signature[-1] ^ 1]))
    assert damaged.json()["error"]["code"] == "attachment_hash_mismatch"
    # The parcel photo is half uploaded when the phone loses signal again.
    half = len(label) // 2
    assert tus_upload(base, driver, parcel, label[:half]).status_code == 204
    ops = [
        {"op": "set", "field": "depot", "value": "dxb"},
        set_status("delivered"),
        {"op": "set", "field": "pod_photo", "value": pod.to_value()},
        {"op": "set", "field": "pod_signature", "value": signed.to_value()},
        {"op": "set", "field": "parcel_photo", "value": parcel.to_value()},
    ]
    assert push(base, driver, "phone-a", [change(1, "dlv-124", ops, NOW)])[0]["status"] == "applied"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.set_default_timeout(10_000)
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"{base}/admin/login")
            page.get_by_label("Admin token").fill(admin)
            page.get_by_role("button", name="Sign in").click()

            page.get_by_role("link", name="Attachments").click()
            expect(page.get_by_role("heading", name="Attachments", exact=True)).to_be_visible()
            refused = page.locator("#refused tbody tr", has_text=signed.id)
            expect(refused).to_contain_text("attachment_hash_mismatch")
            expect(refused).to_contain_text("driver-17")
            expect(page.locator("#uploading tbody tr", has_text=parcel.id)).to_contain_text(f"{half} of {parcel.size}")
            page.screenshot(path=str(shots / "admin-attachments.png"), full_page=True)

            refused.get_by_role("link", name="deliveries/dlv-124").click()
            expect(page.get_by_role("heading", name="deliveries/dlv-124")).to_be_visible()
            chip = page.locator(f"#timeline #attachment-{pod.id}")
            expect(chip.locator(".badge")).to_have_text("available")
            thumb = chip.locator("img.thumb")
            expect(thumb).to_be_visible()
            # The image really loaded from the same origin under the page's CSP (a blocked one has no pixels).
            assert thumb.evaluate("img => img.complete && img.naturalWidth") == 640
            failed = page.locator(f"#timeline #attachment-{signed.id}")
            expect(failed.locator(".badge")).to_have_text("refused")
            expect(failed).to_contain_text("attachment_hash_mismatch")
            expect(failed.locator("img")).to_have_count(0)
            waiting = page.locator(f"#timeline #attachment-{parcel.id}")
            expect(waiting.locator(".badge")).to_have_text("pending")
            expect(waiting.locator("img")).to_have_count(0)
            expect(page.locator(f"#state #attachment-{pod.id} img.thumb")).to_be_visible()
            page.screenshot(path=str(shots / "admin-entity-attachments.png"), full_page=True)

            page.get_by_role("link", name="Attachments").click()
            page.locator("#refused tbody tr", has_text=signed.id).get_by_role("button", name="Replay").click()
            expect(page.get_by_role("status")).to_contain_text(f"{signed.id} re-admitted")
            expect(page.locator("#uploading tbody tr", has_text=signed.id)).to_contain_text("0 of")
            assert not blocked, blocked
        finally:
            browser.close()


def test_admin_sees_a_damaged_entity_set_aside_and_the_verification_runs(
    site: tuple[str, dict[str, str]], shots: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, env = site
    verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
    boss = verifier.issue("acme", "dispatch-1", "dispatcher")
    admin = verifier.issue("acme", "ops@acme", "admin")
    changes = [change(i, f"dlv-{i}", [set_status("pending")], NOW + i) for i in (1, 2, 3)]
    assert [r["status"] for r in push(base, boss, "web-1", changes)] == ["applied"] * 3
    cli(env, "verify", "--tenant", "acme")  # clean: exit 0
    with sqlite3.connect(tmp_path / "sync.db") as db:
        (state,) = db.execute("SELECT state FROM entities WHERE entity_id = 'dlv-2'").fetchone()
        damaged = bytearray(state)
        damaged[len(damaged) // 2] ^= 0x01
        db.execute("UPDATE entities SET state = ? WHERE entity_id = 'dlv-2'", (bytes(damaged),))
    body = pull(base, boss, None)
    assert [u["entity"] for u in body["unavailable"]] == ["dlv-2"]
    with pytest.raises(RuntimeError, match="verify"):
        cli(env, "verify", "--tenant", "acme")  # exit 1: the damaged row

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.set_default_timeout(10_000)
            page.goto(f"{base}/admin/integrity")
            page.get_by_label("Admin token").fill(admin)
            page.get_by_role("button", name="Sign in").click()
            page.goto(f"{base}/admin/integrity")
            expect(page.get_by_role("heading", name="Integrity", exact=True)).to_be_visible()
            expect(page.locator("#set-aside tbody tr").first).to_contain_text("deliveries/dlv-2")
            runs = page.locator("#verifications tbody tr")
            expect(runs).to_have_count(2)
            expect(runs.nth(0).locator(".badge")).to_have_text("1 problem")
            expect(runs.nth(0)).to_contain_text("deliveries/dlv-2")
            expect(runs.nth(1).locator(".badge")).to_have_text("ok")
            page.screenshot(path=str(shots / "admin-integrity.png"), full_page=True)
        finally:
            browser.close()
