"""A handle on one collection: writes that queue changes, reads that show them at once.

Every write returns the queued ``Change`` after its outbox row is committed
(or, inside ``client.batch()``, when the batch commits). Reads are optimistic:
the last pulled state with this replica's pending changes applied.
"""

from __future__ import annotations

import base64
import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from syncclient.state import visible
from syncproto.crdt import text
from syncproto.messages import (
    AddOp,
    AppendOp,
    Change,
    DeleteOp,
    EntityView,
    IncOp,
    Op,
    RemoveOp,
    SetElement,
    SetOp,
    TextOp,
)

if TYPE_CHECKING:
    from syncclient.client import SyncClient

__all__ = ["CollectionHandle"]

_MISSING: Any = object()
Record = dict[str, Any]


class CollectionHandle:
    """``client.collection("deliveries")``. Cheap to create; holds no state of its own."""

    def __init__(self, client: SyncClient, name: str) -> None:
        self.client = client
        self.name = name

    # --- writes ---------------------------------------------------------------

    def set(self, entity: str, field: str = _MISSING, value: Any = _MISSING, /, **fields: Any) -> Change:
        """Write register fields: ``set(e, "status", "delivered")`` or ``set(e, status="delivered", eta=5)``.

        Several fields go in one change, applied atomically by the server.
        """
        if field is not _MISSING:
            if value is _MISSING:
                raise TypeError("set(entity, field, value) needs a value")
            fields = {field: value, **fields}
        if not fields:
            raise TypeError("set() needs at least one field")
        return self.write(entity, *(SetOp(name, v) for name, v in fields.items()))

    def inc(self, entity: str, field: str, by: int = 1) -> Change:
        """Add ``by`` (may be negative) to a counter field."""
        return self.write(entity, IncOp(field, by))

    def add(self, entity: str, field: str, *values: SetElement) -> Change:
        """Add elements to a set field (add wins over a concurrent remove)."""
        return self.write(entity, *(AddOp(field, v) for v in values))

    def remove(self, entity: str, field: str, *values: SetElement) -> Change:
        """Remove elements, as far as this replica has seen them added."""
        return self.write(entity, *(RemoveOp(field, v) for v in values))

    def append(self, entity: str, field: str, *values: Any) -> Change:
        """Append entries to a log field (for example GPS points)."""
        return self.write(entity, *(AppendOp(field, v) for v in values))

    def delete(self, entity: str) -> Change:
        """Delete the entity (a tombstone; a later update revives it under ``update_wins``)."""
        return self.write(entity, DeleteOp())

    def edit_text(self, entity: str, field: str, pos: int, delete: int = 0, insert: str = "") -> Change:
        """Edit a text field at code-point ``pos``: delete ``delete`` code points, then insert ``insert``.

        The edit is made on the text as this replica sees it now (pending edits
        included) and queued as a Yjs update; Yjs merges it with concurrent edits.
        Raises ``IndexError`` for a position outside the text.
        """

        def ops(view: EntityView | None) -> list[Op]:
            current = view.fields.get(field) if view is not None else None
            if current is not None and current.kind != "text":
                raise ValueError(f"{self.name}.{field} is a {current.kind}, not a text field")
            state = text.TextState(base64.b64decode(current.update) if current is not None and current.update else b"")
            doc, _ = text.load(state)
            update = text.splice(doc, pos, delete, insert)
            return [TextOp(field, base64.b64encode(update).decode())]

        return self.client._write(self.name, entity, ops)

    def write(self, entity: str, *ops: Op) -> Change:
        """Queue one change made of ``ops`` (syncproto op structs), applied atomically by the server."""
        if not ops:
            raise ValueError("a change needs at least one op")
        return self.client._write(self.name, entity, list(ops))

    # --- reads ----------------------------------------------------------------

    def get(self, entity: str) -> Record | None:
        """The entity's field values with pending changes applied; None if absent or deleted."""
        return visible(self.view(entity))

    def view(self, entity: str) -> EntityView | None:
        """The optimistic ``EntityView`` (with ``vv``, ``deleted`` and register ``siblings``)."""
        return self.client._view(self.name, entity)

    def query(self, predicate: Callable[[Record], bool] | None = None, /, **equals: Any) -> dict[str, Record]:
        """Entities whose fields equal ``equals`` and satisfy ``predicate``, by entity id.

        ``deliveries.query(status="pending")``, ``deliveries.query(lambda d: d.get("cod_cents", 0) > 0)``.
        """
        out: dict[str, Record] = {}
        for entity, record in self.list().items():
            if all(record.get(k, _MISSING) == v for k, v in equals.items()) and (
                predicate is None or predicate(record)
            ):
                out[entity] = record
        return out

    def list(self) -> builtins.dict[str, Record]:
        """Every entity that is not deleted, by id, with pending changes applied."""
        views = self.client._views(self.name)
        records = {entity: visible(view) for entity, view in sorted(views.items())}
        return {entity: record for entity, record in records.items() if record is not None}
