"""Collection schemas: each field's CRDT kind and each register's rule.

A collection that is not declared, and a field that is not declared, are
registers with LWW. Schemas are data (``CollectionSpec``, loaded from config)
compiled into ``Collection`` objects that carry the rule instances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msgspec import Struct

from syncproto.rules import LWW, Precedence, Resolver, Rule

Kind = Literal["register", "counter", "set", "text", "log"]
DeletePolicy = Literal["update_wins", "delete_wins"]

OP_KIND: dict[str, Kind] = {
    "set": "register",
    "inc": "counter",
    "add": "set",
    "remove": "set",
    "text": "text",
    "append": "log",
}
"""Which field kind each op applies to."""


class FieldSpec(Struct, gc=False, forbid_unknown_fields=True):
    kind: Kind = "register"
    rule: Literal["lww", "precedence", "python"] = "lww"
    order: list[Any] | None = None
    """precedence: the values, strongest first."""
    resolver: str | None = None
    """python: ``module:function`` taking the siblings, returning the winner."""


class CollectionSpec(Struct, gc=False, forbid_unknown_fields=True):
    fields: dict[str, FieldSpec] = {}
    on_delete: DeletePolicy = "update_wins"
    channels: list[str] = []
    """Channel templates such as ``driver:{driver_id}``; used by access control."""


@dataclass(frozen=True)
class Collection:
    """A compiled collection schema."""

    name: str
    kinds: Mapping[str, Kind] = field(default_factory=dict)
    rules: Mapping[str, Rule] = field(default_factory=dict)
    on_delete: DeletePolicy = "update_wins"
    channels: tuple[str, ...] = ()

    def kind(self, field_name: str) -> Kind:
        return self.kinds.get(field_name, "register")

    def rule(self, field_name: str) -> Rule:
        return self.rules.get(field_name, LWW)


class SchemaError(ValueError):
    """A collection spec is inconsistent (for example precedence without an order)."""


def compile_collection(
    name: str,
    spec: CollectionSpec,
    resolvers: Mapping[str, Callable[..., Any]] | None = None,
) -> Collection:
    """Turn a spec into a ``Collection``; ``resolvers`` maps ``module:function`` names to callables."""
    kinds: dict[str, Kind] = {}
    rules: dict[str, Rule] = {}
    for fname, fspec in spec.fields.items():
        kinds[fname] = fspec.kind
        if fspec.rule == "precedence":
            if not fspec.order:
                raise SchemaError(f"{name}.{fname}: rule 'precedence' needs a non-empty 'order'")
            rules[fname] = Precedence(fspec.order)
        elif fspec.rule == "python":
            fn = (resolvers or {}).get(fspec.resolver or "")
            if fn is None:
                raise SchemaError(f"{name}.{fname}: resolver {fspec.resolver!r} is not available")
            rules[fname] = Resolver(fn, fspec.resolver or "")
        if fspec.kind != "register" and fspec.rule != "lww":
            raise SchemaError(f"{name}.{fname}: only register fields take a rule")
    return Collection(name, kinds, rules, spec.on_delete, tuple(spec.channels))


@dataclass(frozen=True)
class Schema:
    """All collections of a deployment."""

    collections: Mapping[str, Collection] = field(default_factory=dict)

    def get(self, name: str) -> Collection:
        return self.collections.get(name) or Collection(name)
