"""Server settings, read from ``SYNC_*`` environment variables.

Every setting has a production-safe default except the secrets: without
``SYNC_MASTER_KEY``/``SYNC_MASTER_KEY_FILE`` and ``SYNC_JWT_SECRET``/
``SYNC_JWT_SECRET_FILE`` the server creates development secrets in the data
directory and warns loudly (see ``devsecrets``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from syncserver.attachments.settings import AttachmentSettings
from syncstore.engine import SQLITE_SYNCHRONOUS


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _path(env: Mapping[str, str], name: str) -> Path | None:
    return Path(env[name]) if env.get(name) else None


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _sqlite_synchronous(env: Mapping[str, str]) -> str:
    raw = (env.get("SYNC_SQLITE_SYNCHRONOUS") or "FULL").upper()
    if raw not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"SYNC_SQLITE_SYNCHRONOUS must be one of {', '.join(SQLITE_SYNCHRONOUS)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Limits:
    """Input limits; each has a stable error code (see PROTOCOL.md)."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_changes_per_push: int = 1000
    max_ops_per_change: int = 100
    max_value_bytes: int = 64 * 1024
    max_fields_per_entity: int = 256
    max_pull_limit: int = 5000
    max_id_length: int = 128
    """Replica, collection and entity ids (the protocol allows up to 128)."""
    max_field_name_length: int = 64
    """Field names (the protocol allows up to 64)."""


@dataclass(frozen=True)
class LiveSettings:
    """The WebSocket channel's limits and timers (``SYNC_WS_*``); see PROTOCOL.md, "WebSocket channel"."""

    max_connections: int = 10_000
    max_connections_per_user: int = 16
    max_unauthenticated_per_address: int = 100
    """Connections from one client address still authenticating (an honest one is for one round trip)."""
    queue_frames: int = 256
    queue_bytes: int = 1024 * 1024
    page_limit: int = 500
    cache_rows: int = 2000
    heartbeat_ms: int = 20_000
    idle_timeout_ms: int = 60_000
    handshake_timeout_ms: int = 10_000
    resync_ms: int = 30_000


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///.sync/sync.db"
    redis_url: str | None = None
    redis_prefix: str = "sync:"
    data_dir: Path = Path(".sync")
    host: str = "127.0.0.1"
    port: int = 8000
    master_key: str | None = None
    master_key_file: Path | None = None
    master_key_previous: str | None = None
    master_key_previous_file: Path | None = None
    jwt_secret: str | None = None
    jwt_secret_file: Path | None = None
    jwt_issuer: str = "syncserver"
    jwt_audience: str = "sync"
    jwt_leeway_s: int = 30
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    collections_file: Path | None = None
    max_clock_skew_ms: int = 5 * 60 * 1000
    tombstone_retention_s: int = 30 * 24 * 3600
    key_cache_ttl_s: int = 300
    rate_limit: str = "50/second"
    """Requests per bearer token: ``<n>/<second|minute|hour|day>`` or ``off`` (see ``ratelimit.py``)."""
    migrate_on_start: bool = True
    log_level: str = "INFO"
    log_format: str = "json"
    """``json`` (one object per line) or ``text``."""
    admin_cookie_secure: bool = False
    """Mark the admin web page's cookies ``Secure`` (set it when TLS terminates in front)."""
    sqlite_synchronous: str = "FULL"
    """SQLite's ``PRAGMA synchronous``: ``FULL`` (default) fsyncs the WAL at every commit, so ``applied``
    survives a power cut; ``NORMAL`` trades the last commits before a power cut for speed."""
    cors_allow_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (CORS); empty turns CORS off."""
    limits: Limits = field(default_factory=Limits)
    live: LiveSettings = field(default_factory=LiveSettings)
    attachments: AttachmentSettings = field(default_factory=AttachmentSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        data_dir = Path(e.get("SYNC_DATA_DIR", ".sync"))
        default_db = f"sqlite+aiosqlite:///{data_dir / 'sync.db'}"
        limits = Limits(
            max_body_bytes=_int(e, "SYNC_MAX_BODY_BYTES", Limits.max_body_bytes),
            max_changes_per_push=_int(e, "SYNC_MAX_CHANGES_PER_PUSH", Limits.max_changes_per_push),
            max_ops_per_change=_int(e, "SYNC_MAX_OPS_PER_CHANGE", Limits.max_ops_per_change),
            max_value_bytes=_int(e, "SYNC_MAX_VALUE_BYTES", Limits.max_value_bytes),
            max_fields_per_entity=_int(e, "SYNC_MAX_FIELDS_PER_ENTITY", Limits.max_fields_per_entity),
            max_pull_limit=_int(e, "SYNC_MAX_PULL_LIMIT", Limits.max_pull_limit),
            max_id_length=_int(e, "SYNC_MAX_ID_LENGTH", Limits.max_id_length),
            max_field_name_length=_int(e, "SYNC_MAX_FIELD_NAME_LENGTH", Limits.max_field_name_length),
        )
        live = LiveSettings(
            max_connections=_int(e, "SYNC_WS_MAX_CONNECTIONS", LiveSettings.max_connections),
            max_connections_per_user=_int(e, "SYNC_WS_MAX_CONNECTIONS_PER_USER", LiveSettings.max_connections_per_user),
            max_unauthenticated_per_address=_int(
                e, "SYNC_WS_MAX_UNAUTHENTICATED_PER_ADDRESS", LiveSettings.max_unauthenticated_per_address
            ),
            queue_frames=_int(e, "SYNC_WS_QUEUE_FRAMES", LiveSettings.queue_frames),
            queue_bytes=_int(e, "SYNC_WS_QUEUE_BYTES", LiveSettings.queue_bytes),
            page_limit=_int(e, "SYNC_WS_PAGE_LIMIT", LiveSettings.page_limit),
            cache_rows=_int(e, "SYNC_WS_CACHE_ROWS", LiveSettings.cache_rows),
            heartbeat_ms=_int(e, "SYNC_WS_HEARTBEAT_MS", LiveSettings.heartbeat_ms),
            idle_timeout_ms=_int(e, "SYNC_WS_IDLE_TIMEOUT_MS", LiveSettings.idle_timeout_ms),
            handshake_timeout_ms=_int(e, "SYNC_WS_HANDSHAKE_TIMEOUT_MS", LiveSettings.handshake_timeout_ms),
            resync_ms=_int(e, "SYNC_WS_RESYNC_MS", LiveSettings.resync_ms),
        )
        return cls(
            database_url=e.get("SYNC_DATABASE_URL") or default_db,
            redis_url=e.get("SYNC_REDIS_URL") or None,
            redis_prefix=e.get("SYNC_REDIS_PREFIX") or "sync:",
            data_dir=data_dir,
            host=e.get("SYNC_HOST", "127.0.0.1"),
            port=_int(e, "SYNC_PORT", 8000),
            master_key=e.get("SYNC_MASTER_KEY") or None,
            master_key_file=_path(e, "SYNC_MASTER_KEY_FILE"),
            master_key_previous=e.get("SYNC_MASTER_KEY_PREVIOUS") or None,
            master_key_previous_file=_path(e, "SYNC_MASTER_KEY_PREVIOUS_FILE"),
            jwt_secret=e.get("SYNC_JWT_SECRET") or None,
            jwt_secret_file=_path(e, "SYNC_JWT_SECRET_FILE"),
            jwt_issuer=e.get("SYNC_JWT_ISSUER", "syncserver"),
            jwt_audience=e.get("SYNC_JWT_AUDIENCE", "sync"),
            jwt_leeway_s=_int(e, "SYNC_JWT_LEEWAY_S", 30),
            jwt_public_key_file=_path(e, "SYNC_JWT_PUBLIC_KEY_FILE"),
            jwt_jwks_file=_path(e, "SYNC_JWT_JWKS_FILE"),
            collections_file=_path(e, "SYNC_COLLECTIONS_FILE"),
            max_clock_skew_ms=_int(e, "SYNC_MAX_CLOCK_SKEW_MS", 5 * 60 * 1000),
            tombstone_retention_s=_int(e, "SYNC_TOMBSTONE_RETENTION_S", 30 * 24 * 3600),
            key_cache_ttl_s=_int(e, "SYNC_KEY_CACHE_TTL_S", 300),
            rate_limit=e.get("SYNC_RATE_LIMIT") or "50/second",
            migrate_on_start=e.get("SYNC_MIGRATE_ON_START", "1") not in ("0", "false", "no"),
            log_level=e.get("SYNC_LOG_LEVEL") or "INFO",
            log_format=e.get("SYNC_LOG_FORMAT") or "json",
            admin_cookie_secure=e.get("SYNC_ADMIN_COOKIE_SECURE", "0") in ("1", "true", "yes"),
            sqlite_synchronous=_sqlite_synchronous(e),
            cors_allow_origins=_csv(e, "SYNC_CORS_ALLOW_ORIGINS"),
            limits=limits,
            live=live,
            attachments=AttachmentSettings.from_env(e),
        )
