"""Every Python block of client-sdk/README.md runs: the quickstart against a real server, the rest as written."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from syncclient import HttpTransport
from syncserver.testing import ROOT
from tests.sdk.conftest import ServerProcess

README = ROOT / "client-sdk" / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_a_quickstart_attachments_and_mock_examples() -> None:
    assert len(BLOCKS) == 4
    assert "SYNC_TOKEN" in BLOCKS[0]
    assert "Attachments" in BLOCKS[1]
    assert "MockTransport" in BLOCKS[2]


def test_quickstart_runs_against_a_real_server(
    real_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYNC_URL", real_server.url)
    monkeypatch.setenv("SYNC_TOKEN", real_server.token("driver-17", "driver"))
    exec(compile(BLOCKS[0], f"{README}:quickstart", "exec"), {"__name__": "__main__"})

    out = capsys.readouterr().out
    assert "Leave at the door please 🚪" in out
    assert "applied=6" in out  # six writes, one change each
    assert "rejected=0" in out

    async def server_view() -> object:
        transport = HttpTransport(real_server.url, real_server.token("dispatcher-1"))
        try:
            return await transport.entity("deliveries", "dlv-123")
        finally:
            await transport.aclose()

    view = asyncio.run(server_view())
    assert view is not None
    fields = view.fields  # type: ignore[attr-defined]
    assert fields["cod_cents"].value == 12500
    assert fields["scanned"].value == ["parcel-1", "parcel-2"]
    assert fields["notes"].value == "Leave at the door please 🚪"


def test_attachments_example_runs_against_a_real_server(
    real_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYNC_URL", real_server.url)
    monkeypatch.setenv("SYNC_TOKEN", real_server.token("driver-17", "driver"))
    exec(compile(BLOCKS[1], f"{README}:attachments", "exec"), {"__name__": "__main__"})

    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "True"  # the fetched copy has the photo's bytes
    assert "state='uploaded'" in out[-2]


@pytest.mark.parametrize("index", [2, 3], ids=["mock-transport", "background"])
def test_mock_examples_run_as_written(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"{README}:block{index}", "exec"), {"__name__": "__main__"})
