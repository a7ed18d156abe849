"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from syncserver.crypto.keys import KeyProvider, KeyProviderError
from syncserver.fanout.base import Fanout
from syncstore.base import Store, StoreUnavailable


@get("/health/live", summary="Liveness", tags=["operations"], exclude_from_auth=True)
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/health/ready",
    summary="Readiness: database, key provider and fan-out",
    tags=["operations"],
    responses={503: ResponseSpec(dict[str, Any], description="A hard dependency is down; `checks` says which.")},
)
async def ready(state: State) -> Response[dict[str, Any]]:
    # Read from state: Litestar would type-check injected Protocols and fail.
    store: Store = state.store
    key_provider: KeyProvider = state.key_provider
    checks: dict[str, str] = {}
    try:
        await store.ping()
        checks["database"] = "ok"
    except StoreUnavailable as exc:
        checks["database"] = f"down: {exc}"
    try:
        key_provider.check()
        checks["keys"] = "ok"
    except KeyProviderError as exc:
        checks["keys"] = f"down: {exc}"
    healthy = all(v == "ok" for v in checks.values())
    # The fan-out's broker (Redis) is soft: without it each process still serves its own subscribers.
    fanout: Fanout | None = state.get("fanout")
    soft = fanout.checks() if fanout is not None else {}
    checks.update(soft)
    degraded = any(v != "ok" for v in soft.values())
    status = "unavailable" if not healthy else "degraded" if degraded else "ok"
    return Response({"status": status, "checks": checks}, status_code=200 if healthy else 503)
