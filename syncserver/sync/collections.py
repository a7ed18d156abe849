"""Loading collection schemas from a TOML file.

Example (``config/collections.toml``)::

    [collections.deliveries]
    on_delete = "update_wins"
    channels = ["driver:{driver_id}", "depot:{depot}"]

    [collections.deliveries.fields.status]
    rule = "precedence"
    order = ["delivered", "failed", "out_for_delivery", "pending"]

    [collections.deliveries.fields.cod_cents]
    kind = "counter"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from syncproto.schema import CollectionSpec, Schema, SchemaError, compile_collection


class CollectionsFile(msgspec.Struct, forbid_unknown_fields=True):
    collections: dict[str, CollectionSpec] = {}


def _import(qualname: str) -> Callable[..., Any]:
    module, _, attr = qualname.partition(":")
    if not module or not attr:
        raise SchemaError(f"resolver {qualname!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise SchemaError(f"resolver {qualname!r} is not a callable")
    return fn  # type: ignore[no-any-return]


def load_schema(path: Path | None) -> Schema:
    if path is None:
        return Schema()
    try:
        parsed = msgspec.toml.decode(path.read_bytes(), type=CollectionsFile)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    resolvers = {
        f.resolver: _import(f.resolver)
        for spec in parsed.collections.values()
        for f in spec.fields.values()
        if f.resolver
    }
    return Schema({name: compile_collection(name, spec, resolvers) for name, spec in parsed.collections.items()})
