"""The admin page's CSRF key is shared by every replica, and a deployment on public keys creates no JWT secret."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from syncserver.admin.web import csrf_secret
from syncserver.keys import devsecrets
from syncserver.settings import Settings


def replica(tmp_path: Path, name: str, master_key: str, **overrides: object) -> Settings:
    data = tmp_path / name
    return Settings(data_dir=data, master_key=master_key, jwt_secret=None, **overrides)  # type: ignore[arg-type]


def test_replicas_on_public_keys_share_the_csrf_key_and_make_no_jwt_secret(tmp_path: Path) -> None:
    """Tokens come from an identity provider (a public key): each replica has its own data directory, so a
    JWT secret made up in it would differ from replica to replica, and a form one served the next refused."""
    master = base64.b64encode(secrets.token_bytes(32)).decode()
    pem = tmp_path / "idp.pem"
    pem.write_text("not read here")
    one = replica(tmp_path, "one", master, jwt_public_key_file=pem)
    two = replica(tmp_path, "two", master, jwt_public_key_file=pem)
    assert csrf_secret(devsecrets.admin_secret(one)) == csrf_secret(devsecrets.admin_secret(two))
    assert not (one.data_dir / "jwt.secret").exists()
    assert not (two.data_dir / "jwt.secret").exists()
    other = replica(tmp_path, "other", base64.b64encode(secrets.token_bytes(32)).decode(), jwt_public_key_file=pem)
    assert devsecrets.admin_secret(other) != devsecrets.admin_secret(one)


def test_hs256_deployments_key_the_admin_page_with_their_jwt_secret(tmp_path: Path) -> None:
    master = base64.b64encode(secrets.token_bytes(32)).decode()
    shared = secrets.token_urlsafe(32)
    one = replica(tmp_path, "one", master)
    assert devsecrets.admin_secret(one) == devsecrets.jwt_secret(one)  # the development secret, created
    assert (one.data_dir / "jwt.secret").exists()
    explicit = Settings(data_dir=tmp_path / "x", master_key=master, jwt_secret=shared)
    assert devsecrets.admin_secret(explicit) == shared
