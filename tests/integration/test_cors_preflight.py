"""OPTIONS and CORS: every route answers OPTIONS cleanly, and browsers get a preflight only from allowed origins.

The admin guards read the authenticated user, so OPTIONS (which Litestar's
authentication skips by default) used to reach them without one and fail with
500 and a logged traceback. OPTIONS is now authenticated like every method; a
CORS preflight (``SYNC_CORS_ALLOW_ORIGINS``) is answered before authentication.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.routes import HTTPRoute

from syncserver.settings import Settings
from tests.integration.conftest import Server, make_settings, start

ORIGIN = "https://driver.example"
SAMPLE = {int: "1", str: "sample", Path: "admin.css"}


class Recorder(logging.Handler):
    """Every record at WARNING or above, and every record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info is not None:
            self.bad.append(record)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    handler = Recorder()
    loggers = [logging.getLogger(name) for name in ("", "litestar", "syncserver", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


async def serve(tmp_path: Path, origins: tuple[str, ...]) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, "memory://", cors_allow_origins=origins)):
        yield s


@pytest.fixture(params=[(), (ORIGIN,)], ids=["cors-off", "cors-on"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    async for s in serve(tmp_path, request.param):
        yield s


def concrete_paths(server: Server) -> list[str]:
    """One concrete URL per HTTP route of the app, path parameters filled in by type."""
    paths = []
    for route in server.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = route.path_format
        for name, definition in route.path_parameters.items():
            path = path.replace("{" + name + "}", SAMPLE.get(definition.type, "sample"))
        paths.append(path)
    return paths


async def test_options_on_every_route_is_never_a_server_error_nor_a_logged_traceback(
    server: Server, recorder: Recorder
) -> None:
    tenant = await server.tenant()
    variants: dict[str, dict[str, str]] = {
        "anonymous": {},
        "preflight": {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        "driver": server.headers(tenant, "d1", "driver", ("driver:d1",)),
        "admin": server.headers(tenant, "ops", "admin"),
    }
    paths = concrete_paths(server)
    assert any(p.startswith("/v1/admin/") for p in paths)
    assert "/v1/sync/push" in paths
    statuses: dict[tuple[str, str], int] = {}
    for path in paths:
        for name, headers in variants.items():
            r = await server.client.options(path, headers=headers)
            statuses[(path, name)] = r.status_code
    server_errors = {key: status for key, status in statuses.items() if status >= 500}
    assert not server_errors
    assert not recorder.bad, [r.getMessage() for r in recorder.bad]


async def test_options_is_authenticated_and_the_admin_guard_applies(server: Server) -> None:
    tenant = await server.tenant()
    anonymous = await server.client.options("/v1/admin/conflicts")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    driver = await server.client.options("/v1/admin/conflicts", headers=server.headers(tenant, "d1", "driver"))
    assert driver.status_code == 403
    admin = await server.client.options("/v1/admin/conflicts", headers=server.headers(tenant, "ops", "admin"))
    assert admin.status_code == 204
    assert set(admin.headers["allow"].split(", ")) == {"GET", "OPTIONS"}


@pytest.fixture
async def cors_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in serve(tmp_path, (ORIGIN, "https://other.example")):
        yield s


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


@pytest.mark.parametrize(("path", "method"), [("/v1/sync/push", "POST"), ("/v1/sync/pull", "POST")])
async def test_preflight_from_an_allowed_origin_allows_the_sync_request(
    cors_server: Server, path: str, method: str
) -> None:
    r = await cors_server.client.options(path, headers=preflight(ORIGIN, method))
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert method in r.headers["access-control-allow-methods"].split(", ")
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in r.headers


async def test_the_actual_request_from_an_allowed_origin_can_read_the_response(cors_server: Server) -> None:
    tenant = await cors_server.tenant()
    headers = {"Origin": ORIGIN, **cors_server.headers(tenant, "disp")}
    r = await cors_server.client.post("/v1/sync/pull", json={"cursor": None}, headers=headers)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in r.headers["access-control-expose-headers"].lower()


async def test_a_browser_can_upload_an_attachment_with_tus_from_an_allowed_origin(cors_server: Server) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type, tus-resumable, upload-offset, upload-checksum",
    }
    r = await cors_server.client.options("/v1/attachments/uploads/some-id", headers=headers)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert {"PATCH", "HEAD", "DELETE"} <= set(r.headers["access-control-allow-methods"].split(", "))
    tenant = await cors_server.tenant()
    answer = await cors_server.client.get(
        "/v1/attachments/missing", headers={"Origin": ORIGIN, **cors_server.headers(tenant, "disp")}
    )
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"location", "upload-offset", "tus-resumable", "etag", "content-range"} <= exposed


async def test_preflight_from_another_origin_is_refused(cors_server: Server) -> None:
    r = await cors_server.client.options("/v1/sync/push", headers=preflight("https://evil.example"))
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


async def test_preflight_for_a_method_the_sync_routes_do_not_use_is_refused(cors_server: Server) -> None:
    r = await cors_server.client.options("/v1/sync/push", headers=preflight(ORIGIN, "PUT"))
    assert r.status_code == 400


async def test_cors_is_off_by_default(tmp_path: Path) -> None:
    assert Settings.from_env({}).cors_allow_origins == ()
    async for s in serve(tmp_path, ()):
        r = await s.client.options("/v1/sync/push", headers=preflight(ORIGIN))
        assert r.status_code == 401
        assert "access-control-allow-origin" not in r.headers


def test_allowed_origins_are_read_comma_separated() -> None:
    settings = Settings.from_env({"SYNC_CORS_ALLOW_ORIGINS": " https://a.example, https://b.example ,"})
    assert settings.cors_allow_origins == ("https://a.example", "https://b.example")


def test_route_table_fill_in_covers_every_parameter_type(tmp_path: Path) -> None:
    # Guards the iteration above: a new parameter type would otherwise be filled with "sample".
    from syncserver.app import create_app
    from syncstore import MemoryStore

    app = create_app(make_settings(tmp_path, "memory://"), store=MemoryStore())
    types: set[Any] = {d.type for r in app.routes for d in getattr(r, "path_parameters", {}).values()}
    assert types <= set(SAMPLE)
