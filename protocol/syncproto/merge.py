"""The merge rules: how one change changes one entity, and how two states join.

``apply_change`` is what the server runs for every accepted change (op-based,
with per-replica causal delivery guaranteed by the counter-order check).
``join`` is the state-based merge of two entity states; the property tests use
it to check the CRDT laws and that op-based application converges.

Deletes are tombstones with add-wins/remove-wins semantics on the entity:
``live`` holds the update marks no delete has seen, ``tomb`` the delete marks no
update has seen. Under ``update_wins`` an entity is deleted when it has a
tombstone and no live update; under ``delete_wins`` when it has a tombstone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msgspec import Struct

from syncproto import errors
from syncproto.crdt import (
    AWSet,
    Counter,
    FieldState,
    Log,
    LogEntry,
    Register,
    Sibling,
    TextState,
    awset,
    counter,
    log,
    register,
    text,
)
from syncproto.messages import (
    AddOp,
    AppendOp,
    Change,
    DeleteOp,
    IncOp,
    RemoveOp,
    SetOp,
    TextOp,
)
from syncproto.rules import Rule
from syncproto.schema import Collection, Kind
from syncproto.values import INT64_MAX, INT64_MIN, MAX_HLC_COUNTER, MAX_VALUE_DEPTH, check_value
from syncproto.vv import Dot, covers
from syncproto.vv import merge as vv_merge


class Mark(Struct, gc=False, frozen=True):
    """Who made an update or a delete: used for delete/update conflicts."""

    replica: str
    n: int
    hlc: tuple[int, int]
    user: str = ""

    @property
    def dot(self) -> Dot:
        return Dot(self.replica, self.n)


class EntityState(Struct, gc=False):
    vv: dict[str, int] = {}
    fields: dict[str, FieldState] = {}
    live: list[Mark] = []
    tomb: list[Mark] = []


ConflictKind = Literal["register", "delete_update"]


@dataclass
class ConflictDraft:
    """A conflict found while applying a change; the server logs it."""

    kind: ConflictKind
    field: str | None
    rule: str
    values: list[Sibling]
    winner: Sibling | None


@dataclass
class Outcome:
    state: EntityState
    changed: set[str] = field(default_factory=set)
    conflicts: list[ConflictDraft] = field(default_factory=list)
    revived: bool = False


class ChangeRejected(Exception):
    """A change that cannot be applied; ``code`` is a stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _empty(kind: Kind) -> FieldState:
    match kind:
        case "register":
            return Register()
        case "counter":
            return Counter()
        case "set":
            return AWSet()
        case "text":
            return TextState()
        case "log":
            return Log()


def is_deleted(state: EntityState, policy: str) -> bool:
    if not state.tomb:
        return False
    return policy == "delete_wins" or not state.live


_OP_KIND: dict[type, Kind] = {
    SetOp: "register",
    IncOp: "counter",
    AddOp: "set",
    RemoveOp: "set",
    TextOp: "text",
    AppendOp: "log",
}
_OP_NAME: dict[type, str] = {cls: cls.__struct_config__.tag for cls in _OP_KIND}  # type: ignore[attr-defined]


def check_bounds(change: Change) -> None:
    """Reject a change with a number out of range or a value nested too deep (``syncproto.values``).

    Run it before anything encodes the change: such a change may not survive encoding.
    """
    wall, logical = change.hlc
    if not INT64_MIN <= wall <= INT64_MAX or logical > MAX_HLC_COUNTER:
        raise ChangeRejected(
            errors.VALUE_OUT_OF_RANGE, f"an HLC is [int64, int <= {MAX_HLC_COUNTER}]; got {[wall, logical]}"
        )
    if change.context and max(change.context.values()) > INT64_MAX:  # the schema makes them >= 0
        raise ChangeRejected(errors.VALUE_OUT_OF_RANGE, "a context counter is outside signed 64 bits")
    for op in change.ops:
        if isinstance(op, IncOp):
            if not INT64_MIN <= op.by <= INT64_MAX:
                raise ChangeRejected(errors.VALUE_OUT_OF_RANGE, f"'inc' of '{op.field}' is outside signed 64 bits")
        elif isinstance(op, _VALUE_OPS):
            value: Any = op.value
            kind = type(value)
            # Most values are a string or a number: checked here, without a call (this runs for every change).
            if kind is str or value is None or kind is bool or (kind is int and INT64_MIN <= value <= INT64_MAX):
                continue
            code = check_value(value)
            if code is not None:
                raise ChangeRejected(code, _VALUE_MESSAGES[code].format(op.field, MAX_VALUE_DEPTH))


_VALUE_OPS = (SetOp, AppendOp, AddOp, RemoveOp)
_VALUE_MESSAGES = {
    errors.VALUE_TOO_DEEP: "the value of field '{}' nests deeper than {} arrays or objects",
    errors.VALUE_OUT_OF_RANGE: "the value of field '{}' has an integer outside signed 64 bits",
    errors.INVALID_CHANGE: "the value of field '{}' is not JSON (binary, extension, NaN, non-string key)",
}


def check_change(change: Change, collection: Collection, *, bounds_checked: bool = False) -> None:
    """Reject a change whose numbers or values are out of bounds, or whose ops do not fit the field kinds.

    ``bounds_checked``: the caller already ran ``check_bounds`` (the server does, before anything else).
    """
    _field_kinds(change, collection, bounds_checked)


def _field_kinds(change: Change, collection: Collection, bounds_checked: bool) -> list[Kind]:
    """``check_change``; returns the kind of each op's field (none for a delete), for ``apply_change``."""
    if not bounds_checked:
        check_bounds(change)
    ops = change.ops
    if not ops:
        raise ChangeRejected(errors.INVALID_CHANGE, "a change needs at least one op")
    if isinstance(ops[0], DeleteOp):
        if len(ops) > 1:
            raise ChangeRejected(errors.INVALID_CHANGE, "a delete must be the only op of its change")
        return []
    kinds: list[Kind] = []
    for op in ops:
        want = _OP_KIND.get(type(op))
        if want is None:  # a delete after other ops
            raise ChangeRejected(errors.INVALID_CHANGE, "a delete must be the only op of its change")
        have = collection.kind(op.field)  # type: ignore[union-attr]
        if want != have:
            raise ChangeRejected(
                errors.KIND_MISMATCH,
                f"op '{_OP_NAME[type(op)]}' needs a {want} field, but {collection.name}.{op.field} is a {have}",  # type: ignore[union-attr]
            )
        if want == "text":
            try:
                text.decode_update(op.update)  # type: ignore[union-attr]
            except text.InvalidTextUpdate as exc:
                raise ChangeRejected(errors.INVALID_TEXT_UPDATE, str(exc)) from exc
        kinds.append(have)
    return kinds


def apply_change(
    state: EntityState,
    change: Change,
    replica: str,
    collection: Collection,
    *,
    hlc: tuple[int, int] | None = None,
    user: str = "",
    bounds_checked: bool = False,
) -> Outcome:
    """Apply one accepted change. The caller has already checked counter order.

    ``hlc`` overrides the change's stamp (the server passes a clamped one).
    """
    kinds = _field_kinds(change, collection, bounds_checked)
    stamp = hlc or change.hlc
    n = change.n
    dot = Dot(replica, n)
    # A replica has always seen its own earlier changes.
    ctx: Mapping[str, int] = change.context
    if ctx.get(replica, 0) < n - 1:
        ctx = {**ctx, replica: n - 1}
    mark = Mark(replica, n, stamp, user)
    was_deleted = is_deleted(state, collection.on_delete)
    vv = dict(state.vv)
    if vv.get(replica, 0) < n:
        vv[replica] = n
    out = Outcome(EntityState(vv=vv, fields=dict(state.fields)))

    if isinstance(change.ops[0], DeleteOp):
        concurrent = [m for m in state.live if not covers(ctx, m.dot)]
        out.state.live = concurrent
        out.state.tomb = [*(m for m in state.tomb if not covers(ctx, m.dot)), mark]
        if concurrent:
            out.conflicts.append(_delete_conflict(mark, concurrent, collection.on_delete))
        return out

    concurrent_deletes = [m for m in state.tomb if ctx.get(m.replica, 0) < m.n]
    out.state.tomb = concurrent_deletes
    live = [m for m in state.live if ctx.get(m.replica, 0) < m.n]
    live.append(mark)
    out.state.live = live
    if concurrent_deletes:
        out.conflicts.extend(_delete_conflict(d, [mark], collection.on_delete) for d in concurrent_deletes)
    for i, op in enumerate(change.ops):
        _apply_op(out, op, i, dot, ctx, stamp, user, collection, kinds[i])
    if was_deleted and not is_deleted(out.state, collection.on_delete):
        out.revived = True
        out.changed.update(out.state.fields)
    return out


def _apply_op(
    out: Outcome,
    op: Any,
    index: int,
    dot: Dot,
    ctx: Mapping[str, int],
    stamp: tuple[int, int],
    user: str,
    collection: Collection,
    kind: Kind,
) -> None:
    name: str = op.field
    current = out.state.fields.get(name)
    if current is None:
        current = _empty(kind)
    new: FieldState
    match op:
        case SetOp(value=v):
            assert isinstance(current, Register)
            sib = Sibling(v, dot.replica, dot.n, stamp, user)
            new, concurrent = register.assign(current, sib, ctx)
            if index and out.conflicts and new is not current:
                # A later write to the same field in this change replaced the
                # earlier one, and so does its conflict: one per field and change.
                out.conflicts = [c for c in out.conflicts if not (c.kind == "register" and c.field == name)]
            if concurrent:
                rule = collection.rule(name)
                out.conflicts.append(
                    ConflictDraft("register", name, rule.name, list(new.siblings), rule.pick(new.siblings))
                )
        case IncOp(by=by):
            assert isinstance(current, Counter)
            try:
                new = counter.increment(current, dot, by)
            except counter.OutOfRange as exc:
                raise ChangeRejected(errors.VALUE_OUT_OF_RANGE, str(exc)) from exc
        case AddOp(value=v):
            assert isinstance(current, AWSet)
            new = awset.add(current, dot, ctx, v)
        case RemoveOp(value=v):
            assert isinstance(current, AWSet)
            # A remove has also seen the earlier ops of its own change (an add of
            # the same element before it in the list).
            new = awset.remove(current, {**ctx, dot.replica: dot.n} if index else ctx, v)
        case TextOp(update=u):
            assert isinstance(current, TextState)
            try:
                new = text.apply_update(current, text.decode_update(u))
            except text.InvalidTextUpdate as exc:
                raise ChangeRejected(errors.INVALID_TEXT_UPDATE, str(exc)) from exc
        case AppendOp(value=v):
            assert isinstance(current, Log)
            new = log.append(current, LogEntry(stamp, dot.replica, dot.n, index, v))
        case _:  # pragma: no cover - check_change rejects the rest
            raise ChangeRejected(errors.INVALID_CHANGE, f"op {op!r} cannot be applied")
    out.state.fields[name] = new
    out.changed.add(name)


def _delete_conflict(delete: Mark, updates: list[Mark], policy: str) -> ConflictDraft:
    d = Sibling(None, delete.replica, delete.n, delete.hlc, delete.user)
    ups = [Sibling("<update>", m.replica, m.n, m.hlc, m.user) for m in updates]
    winner = d if policy == "delete_wins" else max(ups, key=lambda s: (s.hlc, s.replica, s.n))
    return ConflictDraft("delete_update", None, policy, [d, *ups], winner)


# --- state-based join ---------------------------------------------------------


def _join_marks(a: list[Mark], b: list[Mark], vv_a: Mapping[str, int], vv_b: Mapping[str, int]) -> list[Mark]:
    in_a = {m.dot: m for m in a}
    in_b = {m.dot: m for m in b}
    # One change with two stamps (the server clamped it): keep the lower, as registers do.
    out = [
        m if m.dot not in in_b or m == in_b[m.dot] else min(m, in_b[m.dot], key=lambda x: (x.hlc, x.user))
        for m in a
        if m.dot in in_b or not covers(vv_b, m.dot)
    ]
    out += [m for m in b if m.dot not in in_a and not covers(vv_a, m.dot)]
    return sorted(out, key=lambda m: (m.replica, m.n))


def join_field(a: FieldState, b: FieldState, vv_a: Mapping[str, int], vv_b: Mapping[str, int]) -> FieldState:
    match a, b:
        case Register(), Register():
            return register.join(a, b, vv_a, vv_b)
        case Counter(), Counter():
            return counter.join(a, b)
        case AWSet(), AWSet():
            return awset.join(a, b, vv_a, vv_b)
        case TextState(), TextState():
            return text.join(a, b)
        case Log(), Log():
            return log.join(a, b)
    raise ValueError(f"cannot join a {type(a).__name__} with a {type(b).__name__}")


def join(a: EntityState, b: EntityState) -> EntityState:
    """Merge two replicas' states of one entity (commutative, associative, idempotent)."""
    fields: dict[str, FieldState] = {}
    for name in sorted(a.fields.keys() | b.fields.keys()):
        fa, fb = a.fields.get(name), b.fields.get(name)
        if fa is None or fb is None:
            # The side without the field has seen none of its writes it did not keep.
            only = fa if fa is not None else fb
            assert only is not None
            empty = _empty(only.__struct_config__.tag)  # type: ignore[arg-type]
            fa, fb = (only, empty) if fa is not None else (empty, only)
        fields[name] = join_field(fa, fb, a.vv, b.vv)
    return EntityState(
        vv=dict(sorted(vv_merge(a.vv, b.vv).items())),
        fields=fields,
        live=_join_marks(a.live, b.live, a.vv, b.vv),
        tomb=_join_marks(a.tomb, b.tomb, a.vv, b.vv),
    )


def normalize(state: EntityState) -> EntityState:
    """A canonical form for comparing states: sorted keys and lists."""
    return EntityState(
        vv=dict(sorted(state.vv.items())),
        fields={k: _normalize_field(v) for k, v in sorted(state.fields.items())},
        live=sorted(state.live, key=lambda m: (m.replica, m.n)),
        tomb=sorted(state.tomb, key=lambda m: (m.replica, m.n)),
    )


def _normalize_field(f: FieldState) -> FieldState:
    match f:
        case Counter():
            return Counter(dict(sorted(f.entries.items())))
        case AWSet():
            return AWSet({k: sorted(v) for k, v in sorted(f.elements.items())})
    return f


def field_value(f: FieldState, rule: Rule) -> Any:
    """The merged value a reader sees."""
    if type(f) is Register:  # the common kind first, and no class pattern to match
        sibs = f.siblings
        if len(sibs) == 1:
            return sibs[0].value  # every rule picks the only sibling there is
        return rule.pick(sibs).value if sibs else None
    match f:
        case Counter():
            return counter.value(f)
        case AWSet():
            return awset.value(f)
        case TextState():
            return text.value(f)
        case Log():
            return log.value(f)
    raise TypeError(type(f).__name__)
