"""Key material never reaches logs, error messages, responses or Redis, whatever the server goes through."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from syncserver.keys.keyring import wrap_aad
from tests import services
from tests.integration.conftest import Server, change, make_settings, start


def forms(secret: bytes) -> list[str]:
    """Ways a key could be written into text."""
    return [
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
        secret.hex(),
        repr(secret)[2:-1],
    ]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[tuple[Server, aioredis.Redis, str]]:
    url, prefix = services.redis_url(), services.key_prefix()
    client = aioredis.Redis.from_url(url)
    settings = make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}",
        redis_url=url,
        redis_prefix=prefix,
        rate_limit="1000/second",
    )
    try:
        async for server in start(settings):
            yield server, client, prefix
    finally:
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
        await client.aclose()


async def redis_contents(client: aioredis.Redis, prefix: str) -> bytes:
    out = []
    async for key in client.scan_iter(match=prefix + "*"):
        kind = (await client.type(key)).decode()
        value: Any = {
            "string": client.get,
            "list": lambda k: client.lrange(k, 0, -1),
            "hash": client.hgetall,
            "set": client.smembers,
            "zset": lambda k: client.zrange(k, 0, -1),
        }.get(kind, client.type)(key)
        out.append(key + b"=" + repr(await value).encode())
    return b"\n".join(out)


async def test_keys_never_reach_logs_errors_responses_or_redis(
    redis_server: tuple[Server, aioredis.Redis, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server, client, prefix = redis_server
    caplog.set_level(logging.DEBUG)
    heard: list[bytes] = []
    pubsub = client.pubsub()
    await pubsub.psubscribe(prefix + "*")

    async def listen() -> None:
        async for message in pubsub.listen():
            heard.append(repr(message).encode())

    listener = asyncio.create_task(listen())
    bodies: list[str] = []
    tenant = await server.tenant()
    admin, boss = server.headers(tenant, "ops", "admin"), server.headers(tenant, "boss")

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        r = await server.client.request(method, path, **kwargs)
        bodies.append(r.text)
        return r

    await call(
        "POST",
        "/v1/sync/push",
        json={"replica": "w", "changes": [change(1, "dlv-1", [{"op": "set", "field": "a", "value": 1}])]},
        headers=boss,
    )
    await call("POST", "/v1/admin/keys/rotate", headers=admin)
    await call(
        "POST",
        "/v1/sync/push",
        json={"replica": "w", "changes": [change(2, "dlv-2", [{"op": "set", "field": "a", "value": 2}])]},
        headers=boss,
    )
    await call("GET", "/v1/admin/keys", headers=admin)
    await call("POST", "/v1/admin/keys/reencrypt", headers=admin)
    await call("GET", "/v1/admin/users/boss/export", headers=admin)
    await call("GET", "/v1/admin/audit", headers=admin)
    await call("POST", "/v1/sync/pull", json={}, headers=boss)
    # Data keys, as they are in memory right now.
    provider = server.app.state.key_provider
    data_keys = [
        provider.unwrap(k.wrapped, wrap_aad(tenant, k.version))
        for k in await server.app.state.store.tenant_keys(tenant)
    ]
    wrapped = [k.wrapped for k in await server.app.state.store.tenant_keys(tenant)]
    assert len(data_keys) == 2
    # Failures: a tampered row, a destroyed key version in use, an unknown tenant, garbage.
    path = server.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        (blob,) = db.execute("SELECT state FROM entities WHERE entity_id='dlv-1'").fetchone()
        flipped = bytes(blob[:20]) + bytes([blob[20] ^ 1]) + bytes(blob[21:])
        db.execute("UPDATE entities SET state=? WHERE entity_id='dlv-1'", (flipped,))
    await call("GET", "/v1/entities/deliveries/dlv-1", headers=boss)
    await call("POST", "/v1/admin/keys/2/destroy", headers=admin)
    await call("POST", "/v1/sync/pull", json={}, headers=server.headers("nope", "x"))
    await call("POST", "/v1/sync/push", content=b"\xff\xfe", headers=boss)
    await call("POST", f"/v1/admin/tenant/erase?confirm={tenant}", headers=admin)
    await call("POST", "/v1/sync/pull", json={}, headers=boss)
    await asyncio.sleep(0.2)
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await pubsub.aclose()

    out, err = capfd.readouterr()
    text = "\n".join([caplog.text, out, err, *bodies])
    stored = (await redis_contents(client, prefix)) + b"\n".join(heard)
    assert "data_integrity" in text  # the failures did happen
    assert heard, "Redis carried the change notices"
    master = base64.b64decode(server.settings.master_key or "")
    jwt_secret = server.settings.jwt_secret or ""
    for secret in [master, *data_keys, *wrapped]:
        for form in forms(secret):
            assert form not in text, "key material in logs or responses"
            assert form.encode() not in stored, "key material in Redis"
        assert secret not in stored
    assert jwt_secret not in text
    assert jwt_secret.encode() not in stored
