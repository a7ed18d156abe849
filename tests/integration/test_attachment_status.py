"""``POST /v1/attachments/status``: statuses by id, scoped exactly like downloads (PROTOCOL.md §10.2)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncserver.attachments import status
from tests.integration.attachment_client import create, ref_for, upload
from tests.integration.conftest import Server, change, make_settings, start

STATUS = "/v1/attachments/status"


@pytest.fixture(params=["memory", "sqlite"])
async def app_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    url = "memory://" if request.param == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    async for s in start(make_settings(tmp_path, url)):
        yield s


async def ask(s: Server, headers: dict[str, str], ids: list[str]) -> dict[str, Any]:
    r = await s.client.post(STATUS, headers=headers, json={"ids": ids})
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()["attachments"]
    return found


def pod(driver: str, value: Any) -> list[dict[str, Any]]:
    return [{"op": "set", "field": "driver_id", "value": driver}, {"op": "set", "field": "pod", "value": value}]


async def test_pending_available_and_refused_each_answer_their_status(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "disp")
    data = os.urandom(50_000)
    waiting, done = ref_for(data), ref_for(data)
    bad = ref_for(b"not an image", media_type="text/plain")
    assert (await upload(s.client, h, done, data)).status_code == 204
    assert (await create(s.client, h, bad)).status_code == 415
    changes = [change(i + 1, f"dlv-{i}", pod("1", r.to_value())) for i, r in enumerate((waiting, done, bad))]
    await s.push(h, "web-1", changes)

    found = await ask(s, h, [waiting.id, done.id, bad.id, "never-heard-of"])
    assert found == {waiting.id: "pending", done.id: "available", bad.id: "refused"}
    assert list(found) == sorted(found)


async def test_an_upload_turns_pending_into_available_without_any_entity_change(app_server: Server) -> None:
    s = app_server
    tenant = await s.tenant()
    h = s.headers(tenant, "driver-1", "driver", ("driver:1",))
    data = os.urandom(30_000)
    ref = ref_for(data)
    await s.push(h, "phone-1", [change(1, "dlv-1", pod("1", ref.to_value()))])
    _, cursor = await s.pull_all(h)
    assert await ask(s, h, [ref.id]) == {ref.id: "pending"}
    assert (await upload(s.client, h, ref, data)).status_code == 204
    assert await ask(s, h, [ref.id]) == {ref.id: "available"}
    changes, _ = await s.pull_all(h, cursor)
    assert changes == [], "the status is not a change in the log"


@pytest.mark.parametrize("scope_read_limit", [5000, 0], ids=["one-scope-read", "entity-by-entity"])
async def test_a_driver_sees_only_ids_referenced_in_its_channels(
    app_server: Server, scope_read_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "SCOPE_READ_LIMIT", scope_read_limit)
    s = app_server
    tenant = await s.tenant()
    d1 = s.headers(tenant, "driver-1", "driver", ("driver:1",))
    d2 = s.headers(tenant, "driver-2", "driver", ("driver:2",))
    disp = s.headers(tenant, "disp")
    mine, theirs, loose = ref_for(b"1"), ref_for(b"2"), ref_for(b"3")
    await s.push(d1, "phone-1", [change(1, "dlv-1", pod("1", mine.to_value()))])
    await s.push(d2, "phone-2", [change(1, "dlv-2", pod("2", theirs.to_value()))])
    assert (await upload(s.client, d1, loose, b"3")).status_code == 204  # uploaded, referenced by nothing

    ids = [mine.id, theirs.id, loose.id]
    assert await ask(s, d1, ids) == {mine.id: "pending"}
    assert await ask(s, d2, ids) == {theirs.id: "pending"}
    assert await ask(s, disp, ids) == {mine.id: "pending", theirs.id: "pending", loose.id: "available"}

    # Moved into driver 2's channel: driver 1 no longer sees it; a hint alone grants nothing.
    await s.push(disp, "web-1", [change(1, "dlv-1", [{"op": "set", "field": "driver_id", "value": "2"}])])
    assert await ask(s, d1, ids) == {}
    assert await ask(s, d2, ids) == {mine.id: "pending", theirs.id: "pending"}
    # Overwritten by another value: the old reference is gone for the driver too.
    await s.push(d2, "phone-2", [change(2, "dlv-2", [{"op": "set", "field": "pod", "value": None}])])
    assert await ask(s, d2, ids) == {mine.id: "pending"}


async def test_another_tenants_ids_and_unknown_ids_are_absent(app_server: Server) -> None:
    s = app_server
    acme, other = await s.tenant("acme"), await s.tenant("other")
    data = os.urandom(1000)
    ref = ref_for(data)
    assert (await upload(s.client, s.headers(acme, "disp"), ref, data)).status_code == 204
    await s.push(s.headers(acme, "disp"), "web-1", [change(1, "dlv-1", pod("1", ref.to_value()))])
    assert await ask(s, s.headers(acme, "disp"), [ref.id]) == {ref.id: "available"}
    for headers in (s.headers(other, "disp"), s.headers(other, "admin", "admin")):
        assert await ask(s, headers, [ref.id, "unknown-1"]) == {}
    assert await ask(s, s.headers(other, "driver-1", "driver", ("driver:1",)), [ref.id]) == {}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ids": [f"a{i}" for i in range(501)]}, 422, "invalid_request"),
        ({"ids": []}, 422, "invalid_request"),
        ({"ids": ["ok", ".."]}, 422, "invalid_request"),
        ({"ids": ["x" * 129]}, 422, "invalid_request"),
        ({"ids": "a1"}, 422, "invalid_request"),
        ({"ids": ["a1"], "extra": 1}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        (b'{"ids": ["a1"', 400, "malformed_json"),
        (b"", 400, "malformed_json"),
    ],
    ids=["501-ids", "no-ids", "dot-id", "long-id", "not-a-list", "unknown-member", "no-ids-member", "cut", "empty"],
)
async def test_a_bad_body_is_refused_with_a_stable_code(app_server: Server, body: Any, status: int, code: str) -> None:
    s = app_server
    h = s.headers(await s.tenant(), "disp")
    content = body if isinstance(body, bytes) else None
    r = await s.client.post(STATUS, headers=h, content=content, json=None if content is not None else body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_500_ids_are_answered_and_no_token_is_unauthorized(app_server: Server) -> None:
    s = app_server
    h = s.headers(await s.tenant(), "disp")
    assert await ask(s, h, [f"a{i}" for i in range(500)]) == {}
    r = await s.client.post(STATUS, json={"ids": ["a1"]})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


async def test_openapi_documents_the_request_and_the_answer(app_server: Server) -> None:
    doc = (await app_server.client.get("/schema/openapi.json")).json()
    op = doc["paths"]["/v1/attachments/status"]["post"]
    ids = op["requestBody"]["content"]["application/json"]["schema"]["properties"]["ids"]
    assert (ids["minItems"], ids["maxItems"], ids["items"]["maxLength"]) == (1, 500, 128)
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["attachments"]
    assert sorted(answer["additionalProperties"]["enum"]) == ["available", "pending", "refused"]
    assert {"400", "401", "422", "429"} <= set(op["responses"])
