"""The layering rule: syncproto imports no project package; syncstore and syncclient import only syncproto."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"syncproto", "syncstore", "syncserver", "syncclient"}
PACKAGES = {
    "syncproto": (ROOT / "protocol" / "syncproto", set()),
    "syncstore": (ROOT / "storage" / "syncstore", {"syncproto"}),
    "syncclient": (ROOT / "client-sdk" / "syncclient", {"syncproto"}),
    "syncserver": (ROOT / "syncserver", {"syncproto", "syncstore"}),
}
# Third-party imports each pure layer may use: a new one is a design decision.
THIRD_PARTY = {"syncproto": {"msgspec", "pycrdt"}}


def imports_of(package_dir: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    directory, allowed = PACKAGES[package]
    if not directory.exists():
        pytest.skip(f"{package} is not in this tree")
    found = imports_of(directory)
    forbidden = {name: files for name, files in found.items() if name in PROJECT - allowed - {package}}
    assert not forbidden, f"{package} must not import {sorted(forbidden)}: {forbidden}"


def test_syncproto_is_pure() -> None:
    directory, _ = PACKAGES["syncproto"]
    import sys

    stdlib = set(sys.stdlib_module_names)
    io_modules = {"socket", "sqlite3", "subprocess", "asyncio", "urllib", "http", "ssl", "os", "shutil", "pathlib"}
    found = imports_of(directory)
    third = {n for n in found if n not in stdlib and n not in PROJECT and n != "__future__"}
    assert third <= THIRD_PARTY["syncproto"], f"syncproto depends on {sorted(third - THIRD_PARTY['syncproto'])}"
    io = {n: f for n, f in found.items() if n in io_modules}
    assert not io, f"syncproto must do no I/O, but imports {io}"


# Inside the server: the sync logic and the key code are below the doors that call them.
SERVER_RULES = {
    "sync": {"transport", "admin", "live", "app", "services", "cli", "attachments", "ops"},
    "keys": {"transport", "live", "app", "services", "ops"},
    "auth": {"transport", "sync", "admin", "live", "app", "services", "attachments"},
}
# ``keys/cli.py`` and ``keys/api.py`` are doors of their own: they may use the composition root and admin helpers.
DOORS = {"syncserver/keys/cli.py", "syncserver/keys/api.py"}


def server_imports(sub: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "syncserver" / sub).rglob("*.py"):
        if str(path.relative_to(ROOT)) in DOORS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("syncserver."):
                found.setdefault(node.module.split(".")[1], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("sub", sorted(SERVER_RULES))
def test_server_subpackage_does_not_import_the_layers_that_call_it(sub: str) -> None:
    found = server_imports(sub)
    forbidden = {name: files for name, files in found.items() if name in SERVER_RULES[sub]}
    assert not forbidden, f"syncserver.{sub} must not import {sorted(forbidden)}: {forbidden}"


# Only the doors that push and the services that make server changes import push: pull, conflicts, the admin
# read paths and key operations read through ``keys.keyring.Ciphers`` and ``syncproto`` instead.
PUSHERS = {
    "syncserver/admin/server_changes.py",
    "syncserver/attachments/refs.py",
    "syncserver/transport/http.py",
    "syncserver/transport/ws.py",
}


def test_only_the_pushers_import_push() -> None:
    importers = set()
    for path in (ROOT / "syncserver").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "syncserver.sync.push":
                importers.add(str(path.relative_to(ROOT)))
    assert importers - {"syncserver/sync/push.py"} == PUSHERS
