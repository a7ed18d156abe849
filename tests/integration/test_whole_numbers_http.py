"""Over HTTP a whole float is the integer the schema says it is: a push with ``"n": 1.0`` is applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import Server, change, make_settings, start


@pytest.fixture
async def mem(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, "memory://")):
        yield s


async def test_a_push_spelled_with_whole_floats_is_applied_and_its_values_keep_their_spelling(mem: Server) -> None:
    headers = mem.headers(await mem.tenant(), "disp")
    body = change(
        1, "dlv-1", [{"op": "set", "field": "weight", "value": 2.0}, {"op": "inc", "field": "cod_cents", "by": 3.0}]
    )
    body.update(n=1.0, hlc=[1_700_000_000_000.0, 0.0])
    r = await mem.client.post("/v1/sync/push", json={"replica": "p", "changes": [body]}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "applied"
    pulled = await mem.client.post("/v1/sync/pull", json={"limit": 10.0}, headers=headers)
    assert pulled.status_code == 200, pulled.text
    fields = pulled.json()["changes"][0]["fields"]
    assert fields["cod_cents"]["value"] == 3
    assert '"value":2.0' in pulled.text.replace(" ", "")  # the register's value was not rewritten


async def test_a_fractional_counter_is_still_refused(mem: Server) -> None:
    headers = mem.headers(await mem.tenant(), "disp")
    body = {**change(1, "dlv-1", [{"op": "set", "field": "s", "value": 1}]), "n": 1.5}
    r = await mem.client.post("/v1/sync/push", json={"replica": "p", "changes": [body]}, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"
