"""``SYNC_SQLITE_SYNCHRONOUS``: FULL unless an operator explicitly trades durability away; OFF is never accepted."""

from __future__ import annotations

import pytest

from syncserver.settings import Settings


def test_the_default_is_full() -> None:
    assert Settings().sqlite_synchronous == "FULL"
    assert Settings.from_env({}).sqlite_synchronous == "FULL"


@pytest.mark.parametrize(("raw", "level"), [("NORMAL", "NORMAL"), ("normal", "NORMAL"), ("extra", "EXTRA")])
def test_an_explicit_level_is_read(raw: str, level: str) -> None:
    assert Settings.from_env({"SYNC_SQLITE_SYNCHRONOUS": raw}).sqlite_synchronous == level


@pytest.mark.parametrize("raw", ["OFF", "0", "fast"])
def test_off_and_unknown_levels_are_refused_at_startup(raw: str) -> None:
    with pytest.raises(ValueError, match="SYNC_SQLITE_SYNCHRONOUS"):
        Settings.from_env({"SYNC_SQLITE_SYNCHRONOUS": raw})
