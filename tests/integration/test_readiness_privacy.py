"""``/health/ready`` is unauthenticated: its body says which dependency is down, never the driver's error.

The details (host, port, database, the key provider's message) go to the log,
once per change of state, not once per probe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncserver.keys.providers import KeyProviderError
from syncserver.testing import free_port
from tests.integration.conftest import make_settings, start


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def health_log() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("syncserver.health")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def test_a_dead_database_is_reported_without_its_address(tmp_path: Path, health_log: Captured) -> None:
    port = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/secret_db_name"
    async for server in start(make_settings(tmp_path, url, migrate_on_start=False)):
        bodies = [(await server.client.get("/health/ready")) for _ in range(3)]
        for r in bodies:
            assert r.status_code == 503
            assert r.json() == {"status": "unavailable", "checks": {"database": "down: unreachable", "keys": "ok"}}
            for leak in (str(port), "127.0.0.1", "secret_db_name", "psycopg", "postgres"):
                assert leak not in r.text
        down = [line for line in health_log.lines if "database is down" in line]
        assert len(down) == 1, health_log.lines  # logged once for three probes
        assert str(port) in down[0]  # the operator gets the details


class BrokenProvider:
    def check(self) -> None:
        raise KeyProviderError("kms.internal.example:8200 refused the token for role sync-prod")


async def test_a_failing_key_provider_is_reported_without_its_message(tmp_path: Path, health_log: Captured) -> None:
    async for server in start(make_settings(tmp_path, "memory://")):
        assert (await server.client.get("/health/ready")).json()["checks"]["keys"] == "ok"
        good = server.app.state.key_provider
        server.app.state.key_provider = BrokenProvider()
        r = await server.client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["keys"] == "down: key provider unavailable"
        assert "kms" not in r.text
        assert any("kms.internal.example" in line for line in health_log.lines)
        server.app.state.key_provider = good
        assert (await server.client.get("/health/ready")).status_code == 200
        assert any("keys is back" in line for line in health_log.lines)
