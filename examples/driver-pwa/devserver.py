"""The driver PWA's development backend: serves the built app and mints short-lived tokens.

A real app's backend signs its users in (with its own identity provider) and
gives the app a sync token for that user: a JWT with the tenant, the user, the
role and the channels it may see (PROTOCOL.md §7). This file does the same with
**no sign-in at all**, using the sync server's development HMAC secret, so that
anyone who can reach it gets a token for any driver or dispatcher. It is for
``scripts/pwa`` and the browser tests on 127.0.0.1 only; never deploy it.

Usage::

    python examples/driver-pwa/devserver.py seed    # a tenant's demo deliveries, pushed over HTTP
    python examples/driver-pwa/devserver.py serve   # the app and POST /dev/token on PWA_PORT

Both read the sync server's ``SYNC_*`` settings (the same data directory, so
the same development secret) and ``PWA_*``: ``PWA_SYNC_URL`` (the sync server,
default ``http://127.0.0.1:8000``), ``PWA_TENANT`` (default ``demo``),
``PWA_HOST``/``PWA_PORT`` (default ``127.0.0.1:8080``) and ``PWA_TOKEN_TTL_S``
(default 900: tokens expire, the app asks for a new one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
from litestar import Litestar, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
from litestar.static_files import create_static_files_router

from syncserver.auth.tokens import TokenVerifier, build_verifier
from syncserver.settings import Settings
from syncserver.sync.collections import CollectionsFile

HERE = Path(__file__).resolve().parent
DIST = HERE / "dist"
SEED_REPLICA = "dispatch-seed"
DRIVERS = ("driver-1", "driver-2")


@dataclass(frozen=True)
class PwaConfig:
    sync_url: str
    tenant: str
    token_ttl_s: int
    host: str
    port: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PwaConfig:
        e = dict(os.environ) if env is None else env
        return cls(
            sync_url=e.get("PWA_SYNC_URL", "http://127.0.0.1:8000").rstrip("/"),
            tenant=e.get("PWA_TENANT", "demo"),
            token_ttl_s=int(e.get("PWA_TOKEN_TTL_S", "900")),
            host=e.get("PWA_HOST", "127.0.0.1"),
            port=int(e.get("PWA_PORT", "8080")),
        )


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["driver", "dispatcher"]
    sub: str = msgspec.field(default="")


class TokenResponse(msgspec.Struct):
    token: str
    expires_at: int
    """Unix seconds."""
    tenant: str
    sub: str
    role: str


def mint(verifier: TokenVerifier, config: PwaConfig, request: TokenRequest) -> TokenResponse:
    """A driver sees only its own deliveries (channel ``driver:<id>``); a dispatcher sees the tenant."""
    channels: tuple[str, ...] = ()
    if request.role == "driver":
        if not request.sub or len(request.sub) > 64 or not request.sub.replace("-", "").isalnum():
            raise HTTPException(status_code=422, detail="a driver id is 1-64 letters, digits and '-'")
        sub, channels = request.sub, (f"driver:{request.sub}",)
    else:
        sub = request.sub or "dispatcher-1"
    token = verifier.issue(config.tenant, sub, request.role, channels, ttl_s=config.token_ttl_s)
    return TokenResponse(token, int(time.time()) + config.token_ttl_s, config.tenant, sub, request.role)


def client_schema(path: Path | None) -> dict[str, Any]:
    """The server's collection schema (``SYNC_COLLECTIONS_FILE``) in the browser SDK's ``schema`` shape: the
    app's optimistic reads then pick a register's value by the same rule as the server."""
    if path is None:
        return {}
    parsed = msgspec.toml.decode(path.read_bytes(), type=CollectionsFile)
    schema: dict[str, Any] = {}
    for name, spec in parsed.collections.items():
        fields = {
            field: {k: v for k, v in (("kind", f.kind), ("rule", f.rule), ("order", f.order)) if v}
            for field, f in spec.fields.items()
        }
        schema[name] = {"fields": fields, "on_delete": spec.on_delete}
    return schema


def create_app(settings: Settings, config: PwaConfig, dist: Path = DIST) -> Litestar:
    verifier = build_verifier(settings)
    schema = client_schema(settings.collections_file)

    @get("/config.json", sync_to_thread=False)
    def app_config() -> Response[dict[str, Any]]:
        body = {"syncUrl": config.sync_url, "tenant": config.tenant, "drivers": list(DRIVERS), "schema": schema}
        return Response(body, headers={"Cache-Control": "no-cache"})

    @post("/dev/token", status_code=200, sync_to_thread=False)
    def dev_token(data: JSONBody[TokenRequest]) -> Response[TokenResponse]:
        return Response(mint(verifier, config, data), headers={"Cache-Control": "no-store"})

    @get("/sw.js", sync_to_thread=False)
    def service_worker() -> Response[bytes]:
        # Served from the root so its scope is the whole app; never cached by HTTP, so updates reach phones.
        return Response(
            (dist / "sw.js").read_bytes(),
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
        )

    static = create_static_files_router("/", [dist], html_mode=True, name="app")
    return Litestar([app_config, dev_token, service_worker, static])


def seed_changes(tenant: str) -> list[dict[str, Any]]:
    """The demo round: three stops per driver, with cash to collect on some. Ids are stable, so seeding twice is
    a duplicate push that changes nothing."""
    stops = [
        ("Al Wasl Rd 14, Jumeirah", "Amira Haddad", 12_500, ["P-1001", "P-1002"]),
        ("Marina Walk, Tower 3, apt 1204", "Rahul Menon", 0, ["P-1003"]),
        ("Business Bay, Bay Square 7", "Lina Farouk", 4_900, ["P-1004"]),
        ("Al Quoz 3, Warehouse 21", "Nasser Traders LLC", 0, ["P-2001", "P-2002", "P-2003"]),
        ("Deira, Baniyas Rd 88", "Omar Saleh", 23_000, ["P-2004"]),
        ("JLT Cluster D, Lake Terrace 502", "Sofia Rossi", 7_500, ["P-2005"]),
    ]
    changes = []
    for i, (address, customer, cod, parcels) in enumerate(stops):
        driver = DRIVERS[i // 3]
        entity = f"dlv-{1001 + i}"
        fields = {
            "driver_id": driver,
            "depot": "dxb",
            "stop": i % 3 + 1,
            "address": address,
            "customer": customer,
            "cod_due_cents": cod,
            "parcels": parcels,
            "status": "out_for_delivery",
        }
        changes.append(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"syncserver-demo:{tenant}:{entity}")),
                "n": i + 1,
                "collection": "deliveries",
                "entity": entity,
                "hlc": [int(time.time() * 1000), 0],
                "context": {},
                "ops": [{"op": "set", "field": k, "value": v} for k, v in fields.items()],
            }
        )
    return changes


def wait_for_server(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the sync server at {url} did not answer /health/live")
        time.sleep(0.2)


def seed(settings: Settings, config: PwaConfig) -> list[str]:
    """Push the demo deliveries as a dispatcher; returns the result statuses."""
    wait_for_server(config.sync_url)
    token = build_verifier(settings).issue(config.tenant, "dispatcher-1", "dispatcher", ttl_s=60)
    r = httpx.post(
        f"{config.sync_url}/v1/sync/push",
        json={"replica": SEED_REPLICA, "changes": seed_changes(config.tenant)},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    r.raise_for_status()
    return [result["status"] for result in r.json()["results"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["seed", "serve"])
    args = parser.parse_args(argv)
    settings, config = Settings.from_env(), PwaConfig.from_env()
    if args.command == "seed":
        statuses = seed(settings, config)
        print(f"seeded {len(statuses)} deliveries in tenant {config.tenant!r}: {', '.join(sorted(set(statuses)))}")
        return 0
    if not (DIST / "index.html").exists():
        print(f"{DIST} has no build: run `npm ci && npm run build` in {HERE.name}/", file=sys.stderr)
        return 1
    import uvicorn

    print(f"driver app:   http://{config.host}:{config.port}/  (dispatcher: /dispatcher.html)", flush=True)
    uvicorn.run(create_app(settings, config), host=config.host, port=config.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
