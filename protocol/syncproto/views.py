"""Turning stored entity state into what devices receive (``EntityView``)."""

from __future__ import annotations

import base64
from collections.abc import Iterable

from syncproto.crdt import FieldState, Register, TextState, text
from syncproto.merge import EntityState, field_value, is_deleted
from syncproto.messages import EntityView, FieldView, SiblingView
from syncproto.schema import Collection


def field_view(f: FieldState, collection: Collection, name: str) -> FieldView:
    if type(f) is Register and len(f.siblings) == 1:
        # Nearly every field: one register value, which every rule picks (``field_value``), no siblings to list.
        return FieldView("register", f.siblings[0].value)
    kind = f.__struct_config__.tag
    view = FieldView(kind=kind, value=field_value(f, collection.rule(name)))  # type: ignore[arg-type]
    if isinstance(f, Register) and len(f.siblings) > 1:
        view.siblings = [SiblingView(s.value, s.replica, s.n, s.hlc) for s in f.siblings]
    elif isinstance(f, TextState):
        view.update = base64.b64encode(text.encoded(f)).decode()
    return view


def entity_view(
    state: EntityState,
    collection: Collection,
    entity: str,
    seq: int,
    fields: Iterable[str] | None = None,
) -> EntityView:
    """The view of an entity; ``fields`` limits it to the fields a device lacks."""
    deleted = is_deleted(state, collection.on_delete)
    view = EntityView(collection=collection.name, entity=entity, seq=seq, vv=dict(state.vv), deleted=deleted)
    if not deleted:
        names = state.fields.keys() if fields is None else [f for f in fields if f in state.fields]
        view.fields = {n: field_view(state.fields[n], collection, n) for n in sorted(names)}
    return view
