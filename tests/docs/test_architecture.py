"""docs/architecture.md names every module: each file of a package appears, in backticks, in its package's row."""

from __future__ import annotations

import re
from pathlib import Path

from syncserver.testing import ROOT

PAGE = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\| `([^`]+/)`[^|]*\|(.*)\|\s*$", re.MULTILINE)
PACKAGES = ["syncserver", "storage/syncstore", "protocol/syncproto", "client-sdk/syncclient", "client-sdk/js/src"]


def rows() -> dict[str, str]:
    """Each table row's package directory and the text of its modules cell."""
    return {match.group(1): match.group(2) for match in ROW.finditer(PAGE.read_text())}


def modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix in {".py", ".ts"} and path.name != "__init__.py" and "migrations" not in path.parts:
                found.append(path.relative_to(ROOT))
    return found


def row_of(module: Path, table: dict[str, str]) -> str:
    """The row of the deepest package directory that holds ``module``."""
    holders = [key for key in table if str(module).startswith(key)]
    assert holders, f"docs/architecture.md has no row for the package of {module}"
    return table[max(holders, key=len)]


def test_every_module_is_named_in_its_packages_row() -> None:
    table = rows()
    missing = [str(m) for m in modules() if f"`{m.name}`" not in row_of(m, table)]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_named_module_exists() -> None:
    table = rows()
    for key, cell in table.items():
        names = set(re.findall(r"`([\w-]+\.(?:py|ts))`", cell))
        present = {p.name for p in (ROOT / key).rglob("*") if p.suffix in {".py", ".ts"}}
        assert names <= present, f"docs/architecture.md names modules of {key} that do not exist: {names - present}"
