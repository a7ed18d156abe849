"""The server's collection schema on the device, so optimistic reads use the same kinds and rules.

Apps ship the deployment's ``collections.toml`` (the file the server reads
from ``SYNC_COLLECTIONS_FILE``) and load it here::

    client = SyncClient(url, token, "phone-1", "sync.db", schema=load_schema("collections.toml"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from syncproto.schema import CollectionSpec, Schema, compile_collection

__all__ = ["load_schema", "parse_schema"]


class _CollectionsFile(msgspec.Struct):
    collections: dict[str, CollectionSpec] = {}


def parse_schema(toml: bytes | str, resolvers: Mapping[str, Callable[..., Any]] | None = None) -> Schema:
    """A ``Schema`` from TOML text.

    A register with ``rule = "python"`` runs a server-side function; pass it in
    ``resolvers`` (``"module:function" -> callable``) to predict its pick, or
    reads predict with LWW until the server's choice arrives.
    """
    parsed = msgspec.toml.decode(toml, type=_CollectionsFile)
    resolvers = dict(resolvers or {})
    collections = {}
    for name, spec in parsed.collections.items():
        fields = {
            fname: (
                msgspec.structs.replace(f, rule="lww", resolver=None)
                if _unresolvable(f.rule, f.resolver, resolvers)
                else f
            )
            for fname, f in spec.fields.items()
        }
        collections[name] = compile_collection(name, msgspec.structs.replace(spec, fields=fields), resolvers)
    return Schema(collections)


def _unresolvable(rule: str, resolver: str | None, resolvers: Mapping[str, object]) -> bool:
    return rule == "python" and (resolver or "") not in resolvers


def load_schema(path: str | Path, resolvers: Mapping[str, Callable[..., Any]] | None = None) -> Schema:
    """``parse_schema`` of a file."""
    return parse_schema(Path(path).read_bytes(), resolvers)
