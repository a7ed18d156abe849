"""Golden vectors (protocol/vectors/): the module-level decoders accept every valid
vector and re-encode it to an equivalent JSON, and reject every reject vector with
the error the vector names."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from syncproto import attachments, errors, messages
from syncproto.crdt import text
from syncproto.crdt.text import TextState

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
VALID = sorted((VECTORS / "valid").glob("*.json"))
REJECT = sorted((VECTORS / "reject").glob("*.json"))

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "PushRequest": messages.push_request_decoder,
    "PushResponse": messages.push_response_decoder,
    "PullRequest": messages.pull_request_decoder,
    "PullResponse": messages.pull_response_decoder,
    "Change": messages.change_decoder,
    "ConflictPage": messages.conflict_page_decoder,
    "ErrorResponse": messages.error_response_decoder,
    "AttachmentRef": attachments.attachment_ref_decoder,
    "AttachmentStatusRequest": attachments.attachment_status_request_decoder,
    "AttachmentStatusResponse": attachments.attachment_status_response_decoder,
    "WsClientMessage": messages.ws_client_json_decoder,
    "WsServerMessage": messages.ws_server_json_decoder,
}
NEGOTIATION = {errors.VERSION_UNSUPPORTED}
"""Reject codes for messages that decode but that negotiation refuses (a ``hello`` with no shared version)."""
ENVELOPE = {"message", "description", "body", "raw", "canonical", "error", "path"}
_TAG_PATH = re.compile(r"\.ops\[\d+\]\.op`?$")


def load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert set(vector) <= ENVELOPE, f"{path.name}: unknown envelope members {set(vector) - ENVELOPE}"
    assert vector.get("message") in DECODERS, f"{path.name}: unknown message {vector.get('message')!r}"
    assert vector.get("description"), f"{path.name}: needs a description"
    assert ("body" in vector) != ("raw" in vector), f"{path.name}: needs exactly one of body and raw"
    return vector


def body_bytes(vector: dict[str, Any]) -> bytes:
    if "raw" in vector:
        return str(vector["raw"]).encode("utf-8")
    return json.dumps(vector["body"], ensure_ascii=False).encode("utf-8")


def error_code(exc: msgspec.DecodeError) -> str:
    """The stable code for a decode failure, as the server maps it (syncserver/transport/body.py)."""
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        if message.startswith("Invalid value") and _TAG_PATH.search(message):
            return errors.UNKNOWN_OP
        return errors.INVALID_REQUEST
    return errors.MALFORMED_JSON


def test_the_required_vectors_exist() -> None:
    valid = {p.stem for p in VALID}
    reject = {p.stem for p in REJECT}
    assert {
        "push-every-op",
        "push-single-set",
        "pull-null-cursor",
        "pull-collections",
        "push-response-applied",
        "push-response-duplicate",
        "push-response-out-of-order",
        "push-response-rejected",
        "pull-response-siblings-text",
        "pull-response-reset",
        "error-response",
        "attachment-status-request",
        "attachment-status-response",
    } <= valid
    assert {
        "unknown-op",
        "missing-n",
        "n-zero",
        "hlc-wrong-type",
        "hlc-three-elements",
        "id-bad-characters",
        "id-too-long",
        "change-unknown-field",
        "not-json",
        "delete-with-field",
        "pull-negative-limit",
        "empty-replica",
        "ws-unknown-type",
        "ws-hello-without-versions",
        "ws-hello-no-shared-version",
        "attachment-status-no-ids",
        "attachment-status-too-many-ids",
        "attachment-status-dot-id",
    } <= reject
    assert {"ws-hello", "ws-hello-newer-client", "ws-welcome", "ws-changes", "ws-push", "ws-push-result"} <= valid
    assert {load(p)["message"] for p in VALID} == set(DECODERS), "every message has a valid vector"
    assert all(p.suffix == ".json" for p in VECTORS.glob("*/*")), "vectors are .json files"


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_vector_decodes_and_reencodes_to_equivalent_json(path: Path) -> None:
    vector = load(path)
    assert not {"raw", "error", "path"} & set(vector), "those members belong to reject vectors"
    decoded = DECODERS[vector["message"]].decode(body_bytes(vector))
    reencoded = json.loads(messages.json_encoder.encode(decoded))
    assert reencoded == vector.get("canonical", vector["body"])
    if "canonical" in vector:
        assert vector["canonical"] != vector["body"], "canonical is only for bodies that re-encode differently"
        assert DECODERS[vector["message"]].decode(json.dumps(vector["canonical"]).encode()) == decoded
    # Every text update in it is a real Yjs update; in a view it holds the field's value.
    for field, update in _text_updates(decoded):
        state = text.apply_update(TextState(), base64.b64decode(update, validate=True))
        if isinstance(field, messages.FieldView):
            assert text.value(state) == field.value


def _text_updates(message: Any) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = []
    changes = message.changes if isinstance(message, messages.PushRequest | messages.PullResponse) else [message]
    for item in changes:
        if isinstance(item, messages.Change):
            out += [(op, op.update) for op in item.ops if isinstance(op, messages.TextOp)]
        elif isinstance(item, messages.EntityView):
            out += [(f, f.update) for f in item.fields.values() if f.update is not None]
    return out


@pytest.mark.parametrize("path", REJECT, ids=[p.stem for p in REJECT])
def test_reject_vector_is_rejected_with_its_error(path: Path) -> None:
    vector = load(path)
    assert "canonical" not in vector
    if vector.get("error") in NEGOTIATION:
        hello = DECODERS[vector["message"]].decode(body_bytes(vector))
        assert isinstance(hello, messages.WsHello), "only hello is negotiated"
        assert not set(hello.versions) & {messages.PROTOCOL_VERSION}, "a shared version would be chosen"
        return
    assert vector.get("error") in {errors.MALFORMED_JSON, errors.UNKNOWN_OP, errors.INVALID_REQUEST}
    with pytest.raises(msgspec.DecodeError) as caught:
        DECODERS[vector["message"]].decode(body_bytes(vector))
    assert error_code(caught.value) == vector["error"], str(caught.value)
    if "path" in vector:
        message = str(caught.value)
        if vector["path"] == "$":
            assert " - at `" not in message, message
        else:
            assert message.endswith(f" - at `{vector['path']}`"), message
    if "body" in vector:
        # Apart from the one defect, a reject vector is a well-formed JSON document.
        assert msgspec.json.decode(body_bytes(vector)) == vector["body"]


def test_hello_negotiation_picks_the_highest_shared_version() -> None:
    """Every valid hello vector lists the version this package speaks; the newer client's lists a higher one first."""
    hellos = [load(p) for p in VALID if load(p)["body"].get("type") == "hello"]
    assert len(hellos) >= 3
    for vector in hellos:
        hello = messages.ws_client_json_decoder.decode(body_bytes(vector))
        assert isinstance(hello, messages.WsHello)
        assert max(set(hello.versions) & {messages.PROTOCOL_VERSION}) == messages.PROTOCOL_VERSION


def test_responses_ignore_unknown_members() -> None:
    """Evolution rule: a newer server may add members to a response."""
    body = {"results": [{"status": "duplicate", "id": "c1", "n": 1, "since": 3}], "protocol": 1, "server": "x"}
    decoded = messages.push_response_decoder.decode(json.dumps(body).encode())
    assert decoded == messages.PushResponse([messages.Duplicate("c1", 1)])
