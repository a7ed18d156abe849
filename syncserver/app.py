"""The application factory: the one place where concrete backends are chosen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from litestar.types import Method

from syncproto.messages import PROTOCOL_VERSION
from syncserver.admin.api import AdminController
from syncserver.admin.web import TEMPLATES, admin_router, content_security_policy
from syncserver.attachments.admin import AttachmentAdminController
from syncserver.attachments.download import DownloadController
from syncserver.attachments.status import AttachmentStatusController
from syncserver.attachments.tus import TusController
from syncserver.auth.ratelimit import RateLimiting
from syncserver.auth.tokens import BearerAuthMiddleware, build_verifier
from syncserver.errors import (
    ApiError,
    handle_api_error,
    handle_decryption_error,
    handle_http_exception,
    handle_store_unavailable,
    handle_tenant_not_found,
    handle_unexpected,
)
from syncserver.keys import devsecrets
from syncserver.keys.api import KeyAdminController
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.providers import KeyProvider
from syncserver.ops import health, logs, metrics
from syncserver.services import Services, build_services, open_backend
from syncserver.settings import Settings
from syncserver.sync.collections import load_schema
from syncserver.transport.http import SyncController
from syncserver.transport.ws import sync_socket
from syncstore import TRANSIENT_ERRORS
from syncstore.store import Store, TenantNotFound

UNAUTHENTICATED_PATHS = ["^/health", "^/schema", "^/metrics", "^/admin"]
"""Paths the bearer-token middleware skips: probes, the schema, metrics and the cookie-signed admin pages."""

CORS_METHODS: list[Method] = ["GET", "POST", "HEAD", "PATCH", "DELETE"]
"""Sync and admin calls use GET and POST; tus uploads (PROTOCOL.md §10.3) also HEAD, PATCH and DELETE."""
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    # tus 1.0 uploads and ranged, cached downloads of attachments
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "Range",
    "If-None-Match",
]
CORS_EXPOSED_HEADERS = [
    "Retry-After",
    "X-Request-ID",
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "ETag",
    "Content-Range",
    "Accept-Ranges",
]


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for browser SDKs served from another origin (``SYNC_CORS_ALLOW_ORIGINS``); ``None`` (off) by default.

    The preflight is answered by Litestar's CORS middleware before authentication
    (a browser never sends the token with it). Credentials (cookies) are never
    allowed cross-origin: the API takes bearer tokens, the admin page is same-origin.
    """
    if not settings.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_allow_origins),
        allow_methods=list(CORS_METHODS),
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=600,
    )


def state_names(services: Services) -> dict[str, object]:
    """The names under which handlers find the services in ``app.state`` (and as dependencies)."""
    return {
        "store": services.store,
        "keyring": services.keyring,
        "fanout": services.fanout,
        "push_service": services.push,
        "pull_service": services.pull,
        "upload_service": services.uploads,
        "attachment_reader": services.attachment_reader,
        "attachment_keys": services.attachment_keys,
        "live": services.live,
        "conflict_service": services.conflicts,
        "conflict_admin": services.conflict_admin,
        "entity_history": services.entity_history,
        "dead_letter_admin": services.dead_letter_admin,
        "audit_log": services.audit_log,
        "key_ops": services.key_ops,
        "subject_requests": services.subjects,
        "integrity_verifier": services.integrity,
    }


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> Litestar:
    """Build the app. ``store`` overrides ``SYNC_DATABASE_URL`` (tests pass a MemoryStore)."""
    settings = settings or Settings.from_env()
    schema = load_schema(settings.collections_file)
    provider: KeyProvider = devsecrets.key_provider(settings)
    verifier = build_verifier(settings)
    rate_limiting = RateLimiting.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        backend = store if store is not None else await open_backend(settings)
        services = build_services(settings, backend, key_provider=provider, schema=schema, owns_store=store is None)
        app.state.services = services
        app.state.update(state_names(services))
        services.push.observe = metrics.observe_push
        metrics.watch_keyring(services.keyring)
        await services.start()
        try:
            yield
        finally:
            await services.stop()
            await services.close()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> Any:
            return state[name]

        return Provide(provide, sync_to_thread=False)

    return Litestar(
        route_handlers=[
            SyncController,
            sync_socket,
            TusController,
            DownloadController,
            AttachmentStatusController,
            AttachmentAdminController,
            health.live,
            health.ready,
            AdminController,
            KeyAdminController,
            admin_router(devsecrets.admin_secret(settings), secure_cookies=settings.admin_cookie_secure),
            metrics.MetricsController,
        ],
        lifespan=[lifespan, rate_limiting.lifespan],
        stores=rate_limiting.stores,
        state=State(
            {
                "verifier": verifier,
                "settings": settings,
                "key_provider": provider,
                "schema": schema,
                "rate_limiting": rate_limiting,  # the WebSocket channel counts in the same budget (transport/ws.py)
            }
        ),
        dependencies={
            "push_service": from_state("push_service"),
            "pull_service": from_state("pull_service"),
            "conflict_service": from_state("conflict_service"),
            "conflict_admin": from_state("conflict_admin"),
            "entity_history": from_state("entity_history"),
            "dead_letter_admin": from_state("dead_letter_admin"),
            "audit_log": from_state("audit_log"),
            "key_ops": from_state("key_ops"),
            "subject_requests": from_state("subject_requests"),
            "live": from_state("live"),
            "integrity_verifier": from_state("integrity_verifier"),
            "upload_service": from_state("upload_service"),
            "attachment_reader": from_state("attachment_reader"),
        },
        middleware=[
            logs.RequestIdMiddleware(),
            metrics.prometheus_config().middleware,
            *rate_limiting.middleware,
            # OPTIONS is authenticated like every method (Litestar skips it by default): otherwise the
            # role guards would run with no user and fail with 500. A CORS preflight is answered earlier.
            DefineMiddleware(BearerAuthMiddleware, exclude=UNAUTHENTICATED_PATHS, exclude_http_methods=[]),
        ],
        cors_config=cors_config(settings),
        before_send=[logs.request_id_for_unrouted, content_security_policy],
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        logging_config=logs.logging_config(settings.log_level, settings.log_format),
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            TenantNotFound: handle_tenant_not_found,
            DecryptionError: handle_decryption_error,
            **dict.fromkeys(TRANSIENT_ERRORS, handle_store_unavailable),
            Exception: handle_unexpected,
        },
        request_max_body_size=settings.limits.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="syncserver",
            version=f"protocol v{PROTOCOL_VERSION}",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        debug=False,
    )
