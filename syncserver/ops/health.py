"""Liveness and readiness.

Readiness is unauthenticated, so its body names only which dependency is down,
with a generic reason (``down: unreachable``); the driver's error text (host,
port, file paths) goes to the log, once per change of state rather than once per
probe, so a load balancer polling a dead database does not flood it.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from syncserver.fanout.interface import Fanout
from syncserver.keys.providers import KeyProvider, KeyProviderError
from syncstore.store import Store, StoreUnavailable

log = logging.getLogger("syncserver.health")

OK = "ok"
REASONS = {"database": "down: unreachable", "keys": "down: key provider unavailable", "redis": "down: unreachable"}
"""What the body says for a dependency that is down; the details are only logged."""


@get("/health/live", summary="Liveness", tags=["operations"], exclude_from_auth=True)
async def live() -> dict[str, str]:
    return {"status": "ok"}


def _report(state: State, name: str, detail: str) -> str:
    """The public value of check ``name``; logs ``detail`` when it differs from the last probe's."""
    last: dict[str, str] = state.setdefault("readiness_details", {})
    if last.get(name) != detail:
        last[name] = detail
        if detail == OK:
            log.info("readiness: %s is back", name)
        else:
            log.warning("readiness: %s is down: %s", name, detail)
    return OK if detail == OK else REASONS.get(name, "down")


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
    details: dict[str, str] = {}
    try:
        await store.ping()
        details["database"] = OK
    except StoreUnavailable as exc:
        details["database"] = str(exc) or type(exc).__name__
    try:
        key_provider.check()
        details["keys"] = OK
    except KeyProviderError as exc:
        details["keys"] = str(exc) or type(exc).__name__
    # The fan-out's broker (Redis) is soft: without it each process still serves its own subscribers.
    fanout: Fanout | None = state.get("fanout")
    soft = fanout.checks() if fanout is not None else {}
    checks = {name: _report(state, name, detail) for name, detail in {**details, **soft}.items()}
    healthy = all(checks[name] == OK for name in details)
    degraded = any(checks[name] != OK for name in soft)
    status = "unavailable" if not healthy else "degraded" if degraded else "ok"
    return Response({"status": status, "checks": checks}, status_code=200 if healthy else 503)
