"""Real PostgreSQL and Redis for tests: one private database / key prefix per run.

On a laptop without the services, tests that need them skip with a clear
message. Under ``CI=true`` a missing service fails the run instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST = os.environ.get("SYNC_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SYNC_TEST_PG_PORT", "5432"))
PG_ADMIN_DB = os.environ.get("SYNC_TEST_PG_DB", "test")
PG_USER = os.environ.get("SYNC_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("SYNC_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SYNC_TEST_REDIS_PORT", "6379"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{service} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true this is a failure, not a skip", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def _admin_conninfo() -> str:
    user = PG_USER
    return f"host={PG_HOST} port={PG_PORT} dbname={PG_ADMIN_DB} user={user}"


def _pick_user() -> str:
    import psycopg

    for user in (PG_USER, "root", os.environ.get("USER", "")):
        if not user:
            continue
        try:
            with psycopg.connect(f"host={PG_HOST} port={PG_PORT} dbname={PG_ADMIN_DB} user={user}", connect_timeout=3):
                return user
        except psycopg.OperationalError:
            continue
    raise RuntimeError("no PostgreSQL role accepted a trust login")


@contextmanager
def private_database(tag: str = "sync") -> Iterator[str]:
    """Create a throw-away database and yield its SQLAlchemy URL; drop it afterwards."""
    import psycopg

    require("PostgreSQL", PG_HOST, PG_PORT)
    user = _pick_user()
    name = f"{tag}_{uuid.uuid4().hex[:12]}"
    admin = f"host={PG_HOST} port={PG_PORT} dbname={PG_ADMIN_DB} user={user}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url() -> str:
    require("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def key_prefix() -> str:
    return f"synctest:{uuid.uuid4().hex[:12]}:"
