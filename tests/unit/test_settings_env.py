"""``Settings.from_env``: how each ``SYNC_*`` variable is read, including its edge rules.

* An integer variable that is unset or empty takes its default; anything else must
  be an integer (surrounding spaces allowed), or startup fails naming the variable.
* An empty string, URL, secret or path variable takes its default, except
  ``SYNC_DATA_DIR``, ``SYNC_HOST``, ``SYNC_JWT_ISSUER`` and ``SYNC_JWT_AUDIENCE``,
  which are read as given.
* ``SYNC_MIGRATE_ON_START`` is off only for ``0``, ``false`` or ``no``;
  ``SYNC_ADMIN_COOKIE_SECURE`` is on only for ``1``, ``true`` or ``yes``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncserver.settings import LiveSettings, Settings


def _live(name: str) -> Callable[[Settings], object]:
    return lambda s: getattr(s.live, name)


INTEGERS: dict[str, Callable[[Settings], object]] = {
    "SYNC_PORT": lambda s: s.port,
    "SYNC_JWT_LEEWAY_S": lambda s: s.jwt_leeway_s,
    "SYNC_MAX_CLOCK_SKEW_MS": lambda s: s.max_clock_skew_ms,
    "SYNC_TOMBSTONE_RETENTION_S": lambda s: s.tombstone_retention_s,
    "SYNC_KEY_CACHE_TTL_S": lambda s: s.key_cache_ttl_s,
    "SYNC_MAX_BODY_BYTES": lambda s: s.limits.max_body_bytes,
    "SYNC_MAX_CHANGES_PER_PUSH": lambda s: s.limits.max_changes_per_push,
    "SYNC_MAX_OPS_PER_CHANGE": lambda s: s.limits.max_ops_per_change,
    "SYNC_MAX_VALUE_BYTES": lambda s: s.limits.max_value_bytes,
    "SYNC_MAX_FIELDS_PER_ENTITY": lambda s: s.limits.max_fields_per_entity,
    "SYNC_MAX_PULL_LIMIT": lambda s: s.limits.max_pull_limit,
    "SYNC_MAX_ID_LENGTH": lambda s: s.limits.max_id_length,
    "SYNC_MAX_FIELD_NAME_LENGTH": lambda s: s.limits.max_field_name_length,
    **{
        f"SYNC_WS_{f.name.upper()}": (lambda name: lambda s: getattr(s.live, name))(f.name)
        for f in fields(LiveSettings)
    },
    "SYNC_ATTACHMENT_MAX_BYTES": lambda s: s.attachments.max_bytes,
    "SYNC_ATTACHMENT_CHUNK_BYTES": lambda s: s.attachments.chunk_bytes,
}

EMPTY_IS_DEFAULT = {
    "SYNC_DATABASE_URL": ("database_url", "sqlite+aiosqlite:///.sync/sync.db"),
    "SYNC_REDIS_URL": ("redis_url", None),
    "SYNC_REDIS_PREFIX": ("redis_prefix", "sync:"),
    "SYNC_MASTER_KEY": ("master_key", None),
    "SYNC_MASTER_KEY_FILE": ("master_key_file", None),
    "SYNC_MASTER_KEY_PREVIOUS": ("master_key_previous", None),
    "SYNC_MASTER_KEY_PREVIOUS_FILE": ("master_key_previous_file", None),
    "SYNC_JWT_SECRET": ("jwt_secret", None),
    "SYNC_JWT_SECRET_FILE": ("jwt_secret_file", None),
    "SYNC_JWT_PUBLIC_KEY_FILE": ("jwt_public_key_file", None),
    "SYNC_JWT_JWKS_FILE": ("jwt_jwks_file", None),
    "SYNC_COLLECTIONS_FILE": ("collections_file", None),
    "SYNC_RATE_LIMIT": ("rate_limit", "50/second"),
    "SYNC_LOG_LEVEL": ("log_level", "INFO"),
    "SYNC_LOG_FORMAT": ("log_format", "json"),
    "SYNC_SQLITE_SYNCHRONOUS": ("sqlite_synchronous", "FULL"),
    "SYNC_CORS_ALLOW_ORIGINS": ("cors_allow_origins", ()),
    "SYNC_MIGRATE_ON_START": ("migrate_on_start", True),
    "SYNC_ADMIN_COOKIE_SECURE": ("admin_cookie_secure", False),
}


def test_no_variables_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize("name", sorted(INTEGERS))
def test_an_empty_integer_variable_takes_its_default(name: str) -> None:
    read = INTEGERS[name]
    assert read(Settings.from_env({name: ""})) == read(Settings())


@pytest.mark.parametrize("name", sorted(INTEGERS))
@pytest.mark.parametrize("raw", ["abc", "12abc", "0x10", "twelve"])
def test_a_non_integer_is_refused_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be an integer, got {re.escape(repr(raw))}$"):
        Settings.from_env({name: raw})


@pytest.mark.parametrize("raw", ["5.5", "-0.1", "1_000", "+5"])
def test_a_fraction_or_a_decorated_number_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=f"^SYNC_PORT must be an integer, got {re.escape(repr(raw))}$"):
        Settings.from_env({"SYNC_PORT": raw})


@given(name=st.sampled_from(sorted(INTEGERS)), value=st.integers(-(2**62), 2**62), pad=st.sampled_from(["", " "]))
def test_an_integer_variable_reads_back_the_number_written(name: str, value: int, pad: str) -> None:
    assert INTEGERS[name](Settings.from_env({name: f"{pad}{value}{pad}"})) == value


@pytest.mark.parametrize("name", sorted(EMPTY_IS_DEFAULT))
def test_an_empty_variable_takes_its_default(name: str) -> None:
    attribute, default = EMPTY_IS_DEFAULT[name]
    assert getattr(Settings.from_env({name: ""}), attribute) == default


@pytest.mark.parametrize(
    ("name", "attribute"),
    [("SYNC_HOST", "host"), ("SYNC_JWT_ISSUER", "jwt_issuer"), ("SYNC_JWT_AUDIENCE", "jwt_audience")],
)
def test_these_strings_are_read_as_given_even_when_empty(name: str, attribute: str) -> None:
    assert getattr(Settings.from_env({name: ""}), attribute) == ""
    assert getattr(Settings.from_env({name: "x y"}), attribute) == "x y"


def test_the_default_database_lives_in_the_data_directory() -> None:
    settings = Settings.from_env({"SYNC_DATA_DIR": "var/sync"})
    assert settings.data_dir == Path("var/sync")
    assert settings.database_url == f"sqlite+aiosqlite:///{Path('var/sync') / 'sync.db'}"
    assert Settings.from_env({"SYNC_DATA_DIR": "d", "SYNC_DATABASE_URL": "memory://"}).database_url == "memory://"


def test_file_variables_are_paths() -> None:
    settings = Settings.from_env({"SYNC_MASTER_KEY_FILE": "keys/master", "SYNC_COLLECTIONS_FILE": "c.toml"})
    assert settings.master_key_file == Path("keys/master")
    assert settings.collections_file == Path("c.toml")


@pytest.mark.parametrize("raw", ["0", "false", "no"])
def test_migrate_on_start_is_off_only_for_the_false_words(raw: str) -> None:
    assert Settings.from_env({"SYNC_MIGRATE_ON_START": raw}).migrate_on_start is False


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "FALSE", "anything"])
def test_migrate_on_start_stays_on_for_any_other_word(raw: str) -> None:
    assert Settings.from_env({"SYNC_MIGRATE_ON_START": raw}).migrate_on_start is True


@pytest.mark.parametrize(("raw", "secure"), [("1", True), ("true", True), ("yes", True), ("0", False), ("on", False)])
def test_admin_cookie_secure_is_on_only_for_the_true_words(raw: str, secure: bool) -> None:
    assert Settings.from_env({"SYNC_ADMIN_COOKIE_SECURE": raw}).admin_cookie_secure is secure


def test_cors_origins_are_a_comma_separated_list() -> None:
    assert Settings.from_env({"SYNC_CORS_ALLOW_ORIGINS": " a , ,b,"}).cors_allow_origins == ("a", "b")


def test_other_strings_are_read_as_given() -> None:
    settings = Settings.from_env(
        {"SYNC_REDIS_URL": "redis://r:6379/0", "SYNC_RATE_LIMIT": "off", "SYNC_LOG_FORMAT": "text", "SYNC_PORT": "9000"}
    )
    assert (settings.redis_url, settings.rate_limit, settings.log_format, settings.port) == (
        "redis://r:6379/0",
        "off",
        "text",
        9000,
    )
