"""syncclient installs and imports on its own: no server stack, an explicit public surface."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import tomllib

import pytest

import syncclient
from syncserver.testing import ROOT

PACKAGE_DIR = ROOT / "client-sdk" / "syncclient"
SERVER_STACK = ("litestar", "sqlalchemy", "redis", "syncserver", "syncstore", "aiosqlite", "psycopg", "uvicorn")

BLOCKER = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_STACK!r}:
            raise ImportError(f"{{name}} is not installed (blocked)")
        return None

sys.meta_path.insert(0, Block())
"""

SCENARIO = """
import asyncio, pkgutil, importlib, tempfile, pathlib
import syncclient
for m in pkgutil.walk_packages(syncclient.__path__, "syncclient."):
    importlib.import_module(m.name)
from syncclient import MemoryServer, MockTransport, SyncClient

async def main():
    tmp = pathlib.Path(tempfile.mkdtemp())
    server = MemoryServer()
    async with SyncClient(None, None, "p", tmp / "p.db", transport=MockTransport(server)) as c:
        c.collection("deliveries").set("dlv-1", status="ok")
        await c.sync()
    assert len(server.log) == 1

asyncio.run(main())
print("ok")
"""


def test_syncclient_imports_and_syncs_without_the_server_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER + SCENARIO], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_third_party_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "client-sdk" / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    imported: set[str] = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"syncclient", "__future__"}
    assert third_party <= declared, f"undeclared: {third_party - declared}"


@pytest.mark.parametrize(
    "name", [*sorted(m.name for m in pkgutil.walk_packages(syncclient.__path__, "syncclient.")), "syncclient"]
)
def test_each_module_states_its_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported)
    assert [n for n in exported if not hasattr(module, n)] == []
    assert all(not n.startswith("_") for n in exported)
