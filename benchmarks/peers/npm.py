"""Installing a Node peer with npm into its cache directory under ``benchmarks/.peers/``.

Each peer module (``pouchdb.py``, ``yjs.py``) pins its packages and calls
``install``; the directory is git-ignored and reused by later runs. When node
or npm is missing, or the install fails, ``PeerUnavailable`` says why and the
peer is skipped: never faked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

INSTALL_TIMEOUT_S = 900


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the reason goes into the result as a skip."""


def install(peer_dir: Path, label: str, dependencies: dict[str, str], installed: Callable[[], bool]) -> None:
    """``npm install`` ``dependencies`` into ``peer_dir`` unless ``installed()`` already holds."""
    if installed():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise PeerUnavailable(f"{label} skipped: node/npm are not installed on this machine")
    peer_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"name": f"bench-peer-{peer_dir.name}", "private": True, "dependencies": dependencies}
    (peer_dir / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        out = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=peer_dir,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"{label} skipped: npm install took over {INSTALL_TIMEOUT_S} s") from exc
    if out.returncode != 0 or not installed():
        head = (out.stderr or out.stdout).strip().splitlines()[:4]  # npm puts the code and reason first
        raise PeerUnavailable(f"{label} skipped: npm install failed: {' | '.join(head)}")


def package_version(package_dir: Path) -> str | None:
    """The ``version`` in ``package_dir/package.json``, or None when it is not installed."""
    try:
        version = json.loads((package_dir / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)
