"""The run command needs nothing set up: it creates development secrets with a loud warning."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from syncserver.testing import ROOT, free_port, stop, wait_ready


def test_serve_on_a_fresh_data_dir_creates_dev_secrets_and_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["SYNC_DATA_DIR"] = str(tmp_path / ".sync")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncserver.cli", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, log)
            r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
            assert r.status_code == 200, r.text
        finally:
            stop(proc)
    text = log.read_text()
    assert "DEVELOPMENT MASTER KEY CREATED" in text
    assert "DEVELOPMENT JWT SIGNING SECRET CREATED" in text
    for name in ("master.key", "jwt.secret"):
        path = tmp_path / ".sync" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() not in text, "a secret was printed"
    assert (tmp_path / ".sync" / "sync.db").exists()
    assert ROOT.exists()
