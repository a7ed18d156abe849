"""The docs site builds with ``mkdocs build --strict``, and every shell snippet in the docs runs.

Snippet rules (``snippet_blocks``): every ```` ```bash ```` block of a page runs,
in order, in one shell, against a fresh server; ``http://127.0.0.1:8000`` and
``.venv/bin/`` are pointed at the test's server and interpreter. A line
``# => TEXT`` says that TEXT appears in that block's output. A block preceded by
``<!-- snippet: skip (reason) -->`` is not run (it starts a server, installs
packages, needs Docker).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncserver.testing import ROOT, free_port, running_server, server_env
from tests import services

FENCE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"<!--\s*snippet:\s*skip\b")
PAGES = ["README.md", "docs/quickstart.md", "docs/guides/admin.md", "docs/guides/operations.md"]
BIN = Path(sys.executable).parent


@dataclass
class Block:
    code: str
    expected: list[str]


def snippet_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(markdown):
        before = markdown[: match.start()].rstrip().splitlines()
        if before and SKIP.search(before[-1]):
            continue
        code = match.group(1)
        expected = [line.split("# =>", 1)[1].strip() for line in code.splitlines() if line.startswith("# =>")]
        blocks.append(Block(code, expected))
    return blocks


def test_every_page_with_snippets_is_tested() -> None:
    pages = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))] if snippet_blocks(p.read_text())]
    untested = {str(p.relative_to(ROOT)) for p in pages} - set(PAGES)
    assert not untested, f"pages with runnable snippets that no test runs: {sorted(untested)}"


@pytest.mark.parametrize("page", PAGES)
def test_snippets_run_against_a_real_server(page: str, tmp_path: Path) -> None:
    blocks = snippet_blocks((ROOT / page).read_text())
    assert blocks, f"{page} has no runnable snippet"
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_LOG_LEVEL="WARNING", COLUMNS="200")
    with running_server(env, free_port(), tmp_path / "server.log") as base:
        script = ["set -eo pipefail"]
        for i, block in enumerate(blocks):
            code = block.code.replace("http://127.0.0.1:8000", base).replace(".venv/bin/", f"{BIN}/")
            script += [f"printf '\\n@@block {i}@@\\n'", code]
        out = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=tmp_path,
            # The server has migrated the database already; the CLI need not check again.
            env={**env, "SYNC_MIGRATE_ON_START": "0"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, f"{page}: a snippet failed\n{out.stdout}\n{out.stderr}"
    outputs = re.split(r"^@@block \d+@@$", out.stdout, flags=re.MULTILINE)[1:]
    assert len(outputs) == len(blocks)
    for block, output in zip(blocks, outputs, strict=True):
        for text in block.expected:
            assert text in output, f"{page}: expected {text!r} in the output of\n{block.code}\ngot:\n{output}"


def test_docs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(BIN)) or shutil.which("mkdocs")
    if mkdocs is None:
        message = "mkdocs is not installed (pip install -e '.[docs]')"
        if services.IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    admin = (tmp_path / "site" / "guides" / "admin" / "index.html").read_text()
    assert "admin-conflict.png" in admin
    protocol = (tmp_path / "site" / "protocol" / "index.html").read_text()
    assert "Sync protocol, version 1" in protocol
    reference = (tmp_path / "site" / "reference" / "server" / "index.html").read_text()
    assert "DeadLetterAdmin" in reference
