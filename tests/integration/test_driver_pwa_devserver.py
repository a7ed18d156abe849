"""The driver PWA's development backend (``examples/driver-pwa/devserver.py``): tokens, config, seed data.

Fast checks without a browser; the browser tests (``test_driver_pwa_browser.py``) run the whole app.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path
from types import ModuleType

import jwt
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from syncserver.auth.tokens import TokenVerifier
from syncserver.settings import Settings
from syncserver.testing import DEFAULT_COLLECTIONS, ROOT


def load_devserver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("driver_pwa_devserver", ROOT / "examples/driver-pwa/devserver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


devserver = load_devserver()


@pytest.fixture
def app(tmp_path: Path) -> tuple[TestClient[Litestar], TokenVerifier]:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("<!doctype html><title>app</title>")
    (tmp_path / "dist" / "sw.js").write_text("// worker")
    secret = secrets.token_urlsafe(32)
    settings = Settings(jwt_secret=secret, data_dir=tmp_path / "data", collections_file=DEFAULT_COLLECTIONS)
    config = devserver.PwaConfig.from_env({"PWA_TENANT": "demo", "PWA_TOKEN_TTL_S": "120"})
    client = TestClient(devserver.create_app(settings, config, tmp_path / "dist"))
    return client, TokenVerifier(secret, "syncserver", "sync")


def test_a_driver_token_sees_only_the_drivers_channel_and_expires_soon(
    app: tuple[TestClient[Litestar], TokenVerifier],
) -> None:
    client, verifier = app
    with client:
        r = client.post("/dev/token", json={"role": "driver", "sub": "driver-7"})
    assert r.status_code == 200
    body = r.json()
    principal = verifier.verify(body["token"])
    assert (principal.tenant, principal.sub, principal.role, principal.channels) == (
        "demo",
        "driver-7",
        "driver",
        ("driver:driver-7",),
    )
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert body["expires_at"] >= claims["exp"]
    assert r.headers["cache-control"] == "no-store"


def test_a_dispatcher_token_sees_the_whole_tenant(app: tuple[TestClient[Litestar], TokenVerifier]) -> None:
    client, verifier = app
    with client:
        r = client.post("/dev/token", json={"role": "dispatcher"})
    principal = verifier.verify(r.json()["token"])
    assert (principal.role, principal.sub, principal.channels) == ("dispatcher", "dispatcher-1", ())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"role": "driver", "sub": ""}, 422),
        ({"role": "driver", "sub": "driver-1,driver-2"}, 422),
        ({"role": "driver", "sub": "x" * 65}, 422),
        ({"role": "admin", "sub": "ops"}, 400),
        ({"role": "driver", "sub": "d", "channels": ["depot:dxb"]}, 400),
    ],
    ids=["empty-id", "two-ids", "too-long", "admin-role", "own-channels"],
)
def test_no_admin_token_and_no_chosen_channels(
    app: tuple[TestClient[Litestar], TokenVerifier],
    body: dict[str, object],
    status: int,
) -> None:
    client, _ = app
    with client:
        r = client.post("/dev/token", json=body)
    assert r.status_code == status
    assert "token" not in r.json()


def test_the_config_carries_the_servers_collection_rules(app: tuple[TestClient[Litestar], TokenVerifier]) -> None:
    client, _ = app
    with client:
        config = client.get("/config.json").json()
        worker = client.get("/sw.js")
    deliveries = config["schema"]["deliveries"]
    assert deliveries["fields"]["status"] == {
        "kind": "register",
        "rule": "precedence",
        "order": ["delivered", "failed", "out_for_delivery", "pending"],
    }
    assert {name: f["kind"] for name, f in deliveries["fields"].items() if name != "status"} == {
        "cod_cents": "counter",
        "scanned": "set",
        "notes": "text",
        "trail": "log",
    }
    assert worker.headers["cache-control"] == "no-cache"
    assert worker.headers["content-type"].startswith("text/javascript")


def test_seeding_twice_pushes_the_same_changes() -> None:
    first, second = devserver.seed_changes("demo"), devserver.seed_changes("demo")
    assert [c["id"] for c in first] == [c["id"] for c in second]
    assert [c["n"] for c in first] == list(range(1, 7))
    drivers = [next(op["value"] for op in c["ops"] if op["field"] == "driver_id") for c in first]
    assert drivers == ["driver-1"] * 3 + ["driver-2"] * 3
