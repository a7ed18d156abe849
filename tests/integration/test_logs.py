"""A real server's logs are JSON lines with request ids, and never carry a token or a payload value."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import cli, free_port, running_server, server_env


def test_logs_are_json_with_request_ids_and_hold_no_secret_or_value(tmp_path: Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_LOG_LEVEL="DEBUG")
    cli(env, "tenant", "create", "acme")
    verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
    driver = verifier.issue("acme", "driver-17", "driver", ("depot:dxb",))
    admin = verifier.issue("acme", "ops", "admin")
    log = tmp_path / "server.log"
    seen_ids: list[str] = []

    with running_server(env, free_port(), log) as base, httpx.Client(base_url=base) as http:

        def call(method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = http.request(method, path, headers=headers, **kw)
            seen_ids.append(r.headers["x-request-id"])
            return r

        def change(n: int, ops: list[Any]) -> dict[str, Any]:
            return {"id": f"c-{n}", "n": n, "collection": "deliveries", "entity": "dlv-1", "hlc": [1, 0]} | {
                "context": {},
                "ops": ops,
            }

        depot = {"op": "set", "field": "depot", "value": "dxb"}
        ok = [
            depot,
            {"op": "set", "field": "note", "value": marker},
            {"op": "add", "field": "scanned", "value": marker},
        ]
        bad = [{"op": "inc", "field": "note", "by": 1}, {"op": "set", "field": "x", "value": marker}]
        assert (
            call("POST", "/v1/sync/push", driver, json={"replica": "p", "changes": [change(1, ok)]}).status_code == 200
        )
        assert (
            call("POST", "/v1/sync/push", driver, json={"replica": "p", "changes": [change(2, bad)]}).status_code == 200
        )
        assert call("POST", "/v1/sync/push", driver, content=f'{{"replica": "{marker}'.encode()).status_code == 400
        assert call("POST", "/v1/sync/push", driver, json={"replica": "p", "changes": [], marker: 1}).status_code == 422
        assert call("POST", "/v1/sync/pull", driver, json={"cursor": None}).status_code == 200
        assert call("POST", "/v1/sync/pull", f"{driver}x", json={}).status_code == 401
        assert call("GET", "/v1/admin/dead-letters/p/2", admin).status_code == 200
        assert call("GET", f"/v1/admin/conflicts?entity={marker}", admin).status_code == 200
        assert call("GET", f"/nowhere/{marker}").status_code == 404

    text = log.read_text()
    for secret in (marker, driver, admin, env["SYNC_JWT_SECRET"], env["SYNC_MASTER_KEY"]):
        assert secret not in text, "a token, secret or payload value reached the logs"
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    access = [line for line in lines if line["logger"] == "syncserver.access"]
    assert {line["request_id"] for line in access} >= set(seen_ids[:-1])  # the 404 never reached a route
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert {"POST /v1/sync/push 200", "POST /v1/sync/pull 401"} <= {line["message"] for line in access}
