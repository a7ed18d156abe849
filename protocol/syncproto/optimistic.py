"""Optimistic reads: a replica's own pending changes applied to the last server view.

A device shows its edits before the server has merged them. It holds the
``EntityView`` it last pulled and the changes in its outbox, and predicts the
merged view with the rules of ``merge.apply_change``:

* ``set`` removes the siblings its effective context has seen and the rule
  picks among what remains (a predicted conflict keeps ``siblings``);
* ``inc`` adds to the counter, ``add``/``remove`` change the set, ``text``
  merges the Yjs update, ``append`` adds to the log;
* ``delete`` hides the entity; a later update revives it (``update_wins``), or
  revives it only if it has seen the delete (``delete_wins``);
* a change the server would reject whole is skipped whole: ops that do not fit
  the fields' kinds (``kind_mismatch``), a delete mixed with other ops
  (``invalid_change``), a text update the text cannot take (``invalid_text_update``).

A view carries values, not the dots behind them, so some cases are predictions
that the next pull corrects: a register without siblings is taken as seen by
the write, a log entry is shown last (the server orders by HLC), and an entity
first pulled deleted has no fields to show when a local update revives it.

>>> from syncproto.messages import Change, IncOp
>>> change = Change("c1", 1, "deliveries", "dlv-1", (1000, 0), {}, [IncOp("cod_cents", 500)])
>>> apply_pending(None, change, "phone-a").fields["cod_cents"].value
500
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import msgspec

from syncproto.crdt import text
from syncproto.crdt.awset import element_key
from syncproto.crdt.register import Sibling
from syncproto.crdt.text import TextState
from syncproto.messages import (
    AddOp,
    AppendOp,
    Change,
    DeleteOp,
    EntityView,
    FieldView,
    IncOp,
    Op,
    RemoveOp,
    SetOp,
    SiblingView,
    TextOp,
)
from syncproto.schema import OP_KIND, Collection, Kind
from syncproto.vv import Dot, covers, dominates

__all__ = ["apply_pending", "predicts_rejection"]


def _op_kind(op: Op) -> Kind | None:
    tag = type(op).__struct_config__.tag
    return OP_KIND.get(str(tag))


def predicts_rejection(view: EntityView | None, change: Change, collection: Collection | None = None) -> bool:
    """True when the server will reject ``change`` whole because of its shape or field kinds."""
    ops = change.ops
    if not ops:
        return True
    if any(isinstance(op, DeleteOp) for op in ops):
        return len(ops) > 1
    fields = view.fields if view is not None else {}
    for op in ops:
        name: str = op.field  # type: ignore[union-attr]
        if collection is not None and name in collection.kinds:
            have: str = collection.kind(name)
        elif name in fields:
            have = fields[name].kind
        else:
            continue  # an unknown field takes the op's kind
        if _op_kind(op) != have:
            return True
    return False


def apply_pending(
    view: EntityView | None, change: Change, replica: str, collection: Collection | None = None
) -> EntityView:
    """The view after ``change`` (made by ``replica``); ``view`` is not modified."""
    base = view or EntityView(collection=change.collection, entity=change.entity, seq=0, vv={}, deleted=False)
    if predicts_rejection(view, change, collection):
        return base
    n = change.n
    # As on the server, a replica has always seen its own earlier changes.
    ctx: dict[str, int] = dict(change.context)
    if ctx.get(replica, 0) < n - 1:
        ctx[replica] = n - 1
    vv = dict(base.vv)
    vv[replica] = max(vv.get(replica, 0), n)
    out = EntityView(
        collection=base.collection,
        entity=base.entity,
        seq=base.seq,
        vv=vv,
        deleted=base.deleted,
        fields=dict(base.fields),
    )
    if isinstance(change.ops[0], DeleteOp):
        out.deleted = True
        return out
    policy = collection.on_delete if collection is not None else "update_wins"
    # Under delete_wins an update revives the entity only if it has seen the delete.
    if policy == "update_wins" or dominates(ctx, base.vv):
        out.deleted = False
    for op in change.ops:
        name: str = op.field  # type: ignore[union-attr]
        try:
            out.fields[name] = _apply_op(out.fields.get(name), op, replica, change, ctx, collection)
        except text.InvalidTextUpdate:
            # The server refuses the whole change (``invalid_text_update``), for example an
            # edit built on an earlier edit of ours that it rejected.
            return base
    return out


def _apply_op(
    current: FieldView | None,
    op: Op,
    replica: str,
    change: Change,
    ctx: Mapping[str, int],
    collection: Collection | None,
) -> FieldView:
    match op:
        case SetOp(field=name, value=v):
            return _assign(current, name, Sibling(v, replica, change.n, change.hlc), ctx, collection)
        case IncOp(by=by):
            return FieldView(kind="counter", value=(current.value if current else 0) + by)
        case AddOp(value=v):
            return _set_field(current, v, add=True)
        case RemoveOp(value=v):
            return _set_field(current, v, add=False)
        case TextOp(update=u):
            state = TextState(base64.b64decode(current.update) if current and current.update else b"")
            merged = text.apply_update(state, text.decode_update(u))
            return FieldView(
                kind="text", value=text.value(merged), update=base64.b64encode(text.encoded(merged)).decode()
            )
        case AppendOp(value=v):
            return FieldView(kind="log", value=[*(current.value if current else []), v])
    raise TypeError(f"cannot apply {op!r}")  # pragma: no cover - predicts_rejection filters the rest


def _assign(
    current: FieldView | None, name: str, new: Sibling, ctx: Mapping[str, int], collection: Collection | None
) -> FieldView:
    siblings = current.siblings if current is not None and current.siblings else []
    # A sibling with the write's own dot is an earlier op of the same change: replaced, as on the server.
    kept = [
        Sibling(s.value, s.replica, s.n, s.hlc)
        for s in siblings
        if not covers(ctx, Dot(s.replica, s.n)) and (s.replica, s.n) != (new.replica, new.n)
    ]
    if not kept:
        return FieldView(kind="register", value=new.value)
    frontier = sorted([*kept, new], key=lambda s: (s.replica, s.n))
    rule = collection.rule(name) if collection is not None else None
    winner = rule.pick(frontier) if rule is not None else max(frontier, key=lambda s: (s.hlc, s.replica, s.n))
    return FieldView(
        kind="register",
        value=winner.value,
        siblings=[SiblingView(s.value, s.replica, s.n, s.hlc) for s in frontier],
    )


def _set_field(current: FieldView | None, value: Any, *, add: bool) -> FieldView:
    elements = {element_key(v): v for v in (current.value if current else [])}
    key = element_key(value)
    if add:
        elements[key] = value
    else:
        elements.pop(key, None)
    # Same order as the server's ``awset.value``: sorted by canonical JSON.
    return FieldView(kind="set", value=[msgspec.json.decode(k) for k in sorted(elements)])
