#!/usr/bin/env python3
"""Generate the JSON Schemas of the top-level wire messages from the msgspec structs.

Usage::

    python protocol/tools/gen_schema.py          # write protocol/schema/*.json
    python protocol/tools/gen_schema.py --check  # exit 1 if a committed file is stale

One file per top-level message, pretty-printed with sorted keys and a trailing
newline, so a diff shows exactly what changed on the wire. The structs in
``syncproto.messages`` are the source of truth; never edit the JSON by hand.
``tests/unit/test_proto_schema.py`` fails when a committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from syncproto import attachments, messages

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

MESSAGES: dict[str, Any] = {
    "push-request": messages.PushRequest,
    "push-response": messages.PushResponse,
    "pull-request": messages.PullRequest,
    "pull-response": messages.PullResponse,
    "change": messages.Change,
    "conflict-page": messages.ConflictPage,
    "error-response": messages.ErrorResponse,
    "attachment-ref": attachments.AttachmentRef,
    "attachment-status-request": attachments.AttachmentStatusRequest,
    "attachment-status-response": attachments.AttachmentStatusResponse,
    "ws-client-message": messages.WsClientMessage,
    "ws-server-message": messages.WsServerMessage,
}
"""File stem -> message type (a WebSocket file is the union of the messages one side sends, tagged by ``type``)."""
UNION_NAMES = {"ws-client-message": "WsClientMessage", "ws-server-message": "WsServerMessage"}


def render(message: Any, name: str | None = None) -> str:
    """The schema document of one message, as the exact text of its file."""
    schema = msgspec.json.schema(message)
    schema["$schema"] = DIALECT
    schema["$comment"] = (
        f"Generated from syncproto.messages.{name or message.__name__} (protocol v{messages.PROTOCOL_VERSION}) "
        "by protocol/tools/gen_schema.py; do not edit."
    )
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> content, for every schema file."""
    return {f"{stem}.json": render(message, UNION_NAMES.get(stem)) for stem, message in MESSAGES.items()}


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that are missing, differ, or should not be there."""
    want = expected_files()
    stale = [
        name
        for name, text in want.items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale += sorted(p.name for p in directory.glob("*.json") if p.name not in want)
    return stale


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in expected_files().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(name)
    for extra in directory.glob("*.json"):
        if extra.stem not in MESSAGES:
            extra.unlink()
            written.append(f"{extra.name} (removed)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale JSON Schema files: {', '.join(stale)}; run python protocol/tools/gen_schema.py")
            return 1
        print(f"{len(MESSAGES)} schema files are up to date")
        return 0
    written = write()
    print(f"wrote {', '.join(written)}" if written else f"{len(MESSAGES)} schema files already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
