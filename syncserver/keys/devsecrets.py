"""Development secrets: created on first run so the server starts with no setup.

Production sets ``SYNC_MASTER_KEY(_FILE)`` and ``SYNC_JWT_SECRET(_FILE)``; when
they are missing we generate random ones in the data directory (mode 0600) and
print a warning that cannot be missed.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path

from syncserver.keys.providers import LocalKeyProvider
from syncserver.settings import Settings

BANNER = (
    "\n" + "!" * 78 + "\n"
    "!!  DEVELOPMENT {what} CREATED at {path}\n"
    "!!  Anyone with this file can {power}. Do NOT use it in production:\n"
    "!!  set {env} (or {env}_FILE) to a secret from your secret manager.\n" + "!" * 78 + "\n"
)


def _read_or_create(path: Path, what: str, power: str, env: str, nbytes: int) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = base64.b64encode(secrets.token_bytes(nbytes)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    sys.stderr.write(BANNER.format(what=what, path=path, power=power, env=env))
    return value


def master_key_b64(settings: Settings) -> str:
    if settings.master_key:
        return settings.master_key
    if settings.master_key_file:
        return settings.master_key_file.read_text().strip()
    return _read_or_create(
        settings.data_dir / "master.key", "MASTER KEY", "decrypt every tenant's data", "SYNC_MASTER_KEY", 32
    )


def hmac_tokens(settings: Settings) -> bool:
    """Whether bearer tokens are HS256-signed with a shared secret: one is set, or no public key replaces it."""
    explicit = settings.jwt_secret is not None or settings.jwt_secret_file is not None
    return explicit or (settings.jwt_public_key_file is None and settings.jwt_jwks_file is None)


def admin_secret(settings: Settings) -> str:
    """What the admin page's CSRF tokens are derived from; every replica of a deployment must share it.

    The JWT secret when tokens are HS256-signed. With public keys only there is no JWT secret (tokens come
    from an identity provider), and one made up in each replica's data directory would differ from replica to
    replica: a form served by one would be refused by the next. So it is the master key then, which every
    replica has.
    """
    if hmac_tokens(settings):
        return jwt_secret(settings)
    return "master-key:" + master_key_b64(settings)


def previous_master_keys_b64(settings: Settings) -> list[str]:
    """Master keys being rotated away (``SYNC_MASTER_KEY_PREVIOUS(_FILE)``): base64, comma- or line-separated."""
    raw = settings.master_key_previous or ""
    if settings.master_key_previous_file:
        raw += "\n" + settings.master_key_previous_file.read_text()
    return [part.strip() for part in raw.replace(",", "\n").splitlines() if part.strip()]


def key_provider(settings: Settings) -> LocalKeyProvider:
    """The master-key provider: the current key, plus previous ones during a rotation."""
    return LocalKeyProvider.from_b64(master_key_b64(settings), previous_master_keys_b64(settings))


def jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.jwt_secret_file:
        return settings.jwt_secret_file.read_text().strip()
    return _read_or_create(
        settings.data_dir / "jwt.secret", "JWT SIGNING SECRET", "mint tokens for any tenant", "SYNC_JWT_SECRET", 48
    )
