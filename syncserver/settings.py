"""Server settings, read from ``SYNC_*`` environment variables.

Every setting has a production-safe default except the secrets: without
``SYNC_MASTER_KEY``/``SYNC_MASTER_KEY_FILE`` and ``SYNC_JWT_SECRET``/
``SYNC_JWT_SECRET_FILE`` the server creates development secrets in the data
directory and warns loudly (see ``devsecrets``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import msgspec

from syncserver.attachments.settings import AttachmentSettings
from syncstore.engine import SQLITE_SYNCHRONOUS

KEPT_EMPTY = frozenset({"data_dir", "host", "jwt_issuer", "jwt_audience"})
"""Settings whose variable is read as given even when empty; every other empty variable means "the default"."""
FALSE_WORDS = ("0", "false", "no")
"""``SYNC_MIGRATE_ON_START`` is off only for these; any other value leaves it on."""
TRUE_WORDS = ("1", "true", "yes")
"""``SYNC_ADMIN_COOKIE_SECURE`` is on only for these."""
_SECTIONS = {"limits": "SYNC_", "live": "SYNC_WS_"}
"""Nested settings and the prefix of their variables (``limits.max_body_bytes`` is ``SYNC_MAX_BODY_BYTES``)."""


def _variables(env: Mapping[str, str], cls: type, prefix: str) -> dict[str, str]:
    """The set variables of ``cls``'s fields (``<prefix><FIELD>``), empty ones dropped unless kept."""
    hints = get_type_hints(cls)
    found: dict[str, str] = {}
    for f in fields(cls):
        raw = env.get(prefix + f.name.upper())
        if raw is None or (raw == "" and f.name not in KEPT_EMPTY):
            continue
        found[f.name] = raw.strip() if hints[f.name] is int else raw
    return found


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def _refusal(error: msgspec.ValidationError, env: Mapping[str, str]) -> ValueError:
    """The error naming the variable: ``... - at `$.limits.max_body_bytes``` is ``SYNC_MAX_BODY_BYTES``."""
    message, _, where = str(error).rpartition(" - at `$.")
    section, _, name = where.rstrip("`").rpartition(".")
    variable = _SECTIONS.get(section, "SYNC_") + name.upper()
    if message.startswith("Expected `int`"):
        return ValueError(f"{variable} must be an integer, got {env.get(variable)!r}")
    return ValueError(f"{variable}: {message}")


def _sqlite_synchronous(raw: str) -> str:
    level = raw.upper()
    if level not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"SYNC_SQLITE_SYNCHRONOUS must be one of {', '.join(SQLITE_SYNCHRONOUS)}, got {level!r}")
    return level


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
    push_inflight_bytes: int = 16 * 1024 * 1024
    """Push bodies one process decodes and applies at once; later pushes wait their turn, undecoded (0: no bound)."""


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
    dictionary_after_changes: int = 1000
    """A tenant whose change log reaches this many changes gets a compression dictionary trained on its own
    payloads, with a new key version (ADR 0034); 0 turns training off."""
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
        """Read ``SYNC_*`` variables (``os.environ`` by default); raise ``ValueError`` naming a bad one.

        Each setting is read from ``SYNC_<NAME>`` (``SYNC_WS_<NAME>`` for ``live``);
        ``msgspec.convert`` turns the strings into the fields' types. Unset or empty
        means the default (except ``KEPT_EMPTY``); see ``FALSE_WORDS`` and ``TRUE_WORDS``.
        """
        e = os.environ if env is None else env
        data: dict[str, Any] = _variables(e, cls, "SYNC_")
        for section, prefix in _SECTIONS.items():
            data[section] = _variables(e, LiveSettings if section == "live" else Limits, prefix)
        data.setdefault("data_dir", ".sync")
        data.setdefault("database_url", f"sqlite+aiosqlite:///{Path(data['data_dir']) / 'sync.db'}")
        if "migrate_on_start" in data:
            data["migrate_on_start"] = data["migrate_on_start"] not in FALSE_WORDS
        if "admin_cookie_secure" in data:
            data["admin_cookie_secure"] = data["admin_cookie_secure"] in TRUE_WORDS
        if "sqlite_synchronous" in data:
            data["sqlite_synchronous"] = _sqlite_synchronous(data["sqlite_synchronous"])
        if "cors_allow_origins" in data:
            data["cors_allow_origins"] = [o.strip() for o in data["cors_allow_origins"].split(",") if o.strip()]
        data.pop("attachments", None)
        try:
            settings = msgspec.convert(data, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            raise _refusal(exc, e) from exc
        return replace(settings, attachments=AttachmentSettings.from_env(e))
