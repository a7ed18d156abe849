"""The committed JSON Schemas (protocol/schema/*.json) match the structs they are generated from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "protocol" / "tools" / "gen_schema.py"
SCHEMA_DIR = ROOT / "protocol" / "schema"
FIX = "run python protocol/tools/gen_schema.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schema", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_schema = _load_tool()
EXPECTED: dict[str, str] = gen_schema.expected_files()


def test_every_top_level_message_has_a_schema_file() -> None:
    assert sorted(EXPECTED) == [
        "attachment-ref.json",
        "attachment-status-request.json",
        "attachment-status-response.json",
        "change.json",
        "conflict-page.json",
        "error-response.json",
        "pull-request.json",
        "pull-response.json",
        "push-request.json",
        "push-response.json",
        "ws-client-message.json",
        "ws-server-message.json",
    ]
    committed = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    assert committed == sorted(EXPECTED), f"schema files differ from the messages ({committed}); {FIX}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_schema_is_up_to_date(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing; {FIX}"
    assert path.read_text(encoding="utf-8") == EXPECTED[name], f"{path.relative_to(ROOT)} is stale; {FIX}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_is_pretty_printed_with_sorted_keys(name: str) -> None:
    text = EXPECTED[name]
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refs = [doc["$ref"]] if "$ref" in doc else [choice["$ref"] for choice in doc["anyOf"]]  # a WebSocket union
    assert refs
    assert all(ref.startswith("#/$defs/") for ref in refs)


def test_request_schemas_forbid_unknown_fields_and_responses_allow_them() -> None:
    defs = json.loads(EXPECTED["push-request.json"])["$defs"]
    assert all(d.get("additionalProperties") is False for d in defs.values() if d.get("type") == "object")
    response = json.loads(EXPECTED["pull-response.json"])["$defs"]
    assert all("additionalProperties" not in d for d in response.values() if d.get("type") == "object")


def test_websocket_client_messages_forbid_unknown_fields_except_hello() -> None:
    """``hello`` tolerates unknown members so a newer client can still negotiate; the others are strict."""
    defs = json.loads(EXPECTED["ws-client-message.json"])["$defs"]
    assert "additionalProperties" not in defs["WsHello"]
    assert defs["WsAuth"]["additionalProperties"] is False
    assert defs["WsPush"]["additionalProperties"] is False
    union = json.loads(EXPECTED["ws-server-message.json"])
    assert union["discriminator"]["propertyName"] == "type"


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen_schema.write(tmp_path)
    assert gen_schema.stale_files(tmp_path) == []
    (tmp_path / "change.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "old-message.json").write_text("{}\n", encoding="utf-8")
    assert gen_schema.stale_files(tmp_path) == ["change.json", "old-message.json"]
    assert sorted(gen_schema.write(tmp_path)) == ["change.json", "old-message.json (removed)"]
    assert gen_schema.stale_files(tmp_path) == []
