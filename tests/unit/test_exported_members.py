"""Every package states its public surface in ``__all__``, and everything listed exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "name", ["syncproto", "syncstore", "syncserver", "syncserver.keys", "syncserver.fanout", "syncserver.auth"]
)
def test_all_lists_existing_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists missing names {missing}"
    assert all(not n.startswith("_") for n in exported)


def test_importing_syncserver_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = "import sys, syncserver; print(sorted(m for m in sys.modules if m.startswith('syncserver')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "['syncserver']"
