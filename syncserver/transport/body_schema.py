"""OpenAPI request and response bodies for handlers that read and write raw bytes.

Push and pull decode their bodies with strict msgspec decoders (docs/adr/0002)
and encode their responses themselves, so Litestar sees neither a ``data``
parameter nor a response type. ``operation(request=PushRequest,
response=PushResponse)`` returns a Litestar ``Operation`` class (the route
decorators' ``operation_class``) that fills in the JSON Schemas msgspec
generates from the very structs the decoders use, so clients, docs and fuzzers
(schemathesis) see the real contract. Error statuses are documented with
``transport.openapi.error_responses``.

Schemas are inlined: msgspec's ``$defs`` references are resolved in place (the
protocol's types are not recursive) and tagged unions keep their ``anyOf`` with
a ``const`` tag in each member, without a ``discriminator`` mapping that would
point at the removed definitions. Homogeneous tuples become ``items`` with
``minItems = maxItems``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema


@dataclass
class RawSchema(Schema):
    """A JSON Schema given as a dict (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""

    raw: dict[str, Any] = field(default_factory=dict)

    def to_schema(self) -> dict[str, Any]:
        return self.raw


@cache
def json_schema(type_: type) -> dict[str, Any]:
    """msgspec's JSON Schema of ``type_`` with every ``$ref`` resolved in place."""
    (root,), defs = msgspec.json.schema_components([type_], ref_template="#/$defs/{name}")

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            resolved = dict(inline(defs[ref.removeprefix("#/$defs/")]))
            resolved.update({k: inline(v) for k, v in node.items() if k != "$ref"})
            return resolved
        out = {k: inline(v) for k, v in node.items() if k != "discriminator"}
        prefix = out.get("prefixItems")
        if isinstance(prefix, list) and prefix and all(item == prefix[0] for item in prefix):
            # A homogeneous fixed-length tuple (an HLC): the same constraint without prefixItems,
            # which some OpenAPI tools (schemathesis among them) mis-read.
            del out["prefixItems"]
            out["items"] = prefix[0]
        return out

    inlined: dict[str, Any] = inline(root)
    return inlined


def _json(type_: type) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=RawSchema(raw=json_schema(type_)))}


def operation(request: type, response: type) -> type[Operation]:
    """An ``Operation`` class documenting ``request`` as the JSON request body and ``response`` as the 200 body."""

    @dataclass
    class RawBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(content=_json(request), required=True)
            self.responses = {
                **(self.responses or {}),
                "200": OpenAPIResponse(description="OK", content=_json(response)),
            }

    return RawBodyOperation
