"""How pulled deltas update the local copy, what events they imply, and the optimistic view."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from syncclient.events import ConflictDetected, Event, RemoteChange
from syncproto.messages import Change, EntityView, FieldView
from syncproto.optimistic import apply_pending
from syncproto.schema import Collection

__all__ = ["events_for", "merge_delta", "optimistic_view", "visible"]


def merge_delta(old: EntityView | None, delta: EntityView) -> EntityView:
    """The stored view after a pulled item: its fields replace ours, the rest stay (PROTOCOL §4.4).

    A deleted item carries no fields; ours are kept (hidden) because the server
    keeps field state too, and a revival sends every field again anyway.
    """
    if old is None:
        return delta
    fields = dict(old.fields)
    fields.update(delta.fields)
    return EntityView(
        collection=delta.collection,
        entity=delta.entity,
        seq=delta.seq,
        vv=delta.vv,
        deleted=delta.deleted,
        fields=dict(sorted(fields.items())),
    )


def _sibling_dots(f: FieldView | None) -> set[tuple[str, int]]:
    return {(s.replica, s.n) for s in (f.siblings or [])} if f is not None else set()


def events_for(old: EntityView | None, delta: EntityView, me: str) -> list[Event]:
    """``RemoteChange`` if another replica's changes arrived; ``ConflictDetected`` for new sibling sets."""
    events: list[Event] = []
    before = old.vv if old is not None else {}
    if any(r != me and n > before.get(r, 0) for r, n in delta.vv.items()):
        events.append(RemoteChange(delta.collection, delta.entity, tuple(sorted(delta.fields)), delta.deleted))
    for name, f in sorted(delta.fields.items()):
        if f.kind != "register" or not f.siblings or len(f.siblings) < 2:
            continue
        if _sibling_dots(f) == _sibling_dots(old.fields.get(name) if old is not None else None):
            continue  # the same conflict, already reported
        mine = any(s.replica == me for s in f.siblings)
        events.append(ConflictDetected(delta.collection, delta.entity, name, f.value, tuple(f.siblings), mine))
    return events


def optimistic_view(
    stored: EntityView | None, changes: Iterable[Change], me: str, collection: Collection | None
) -> EntityView | None:
    """``stored`` with this replica's outbox changes applied, in counter order.

    A change with ``n <= vv[me]`` is skipped: the server processes a replica's
    changes in counter order, so the stored state already reflects it.
    """
    view = stored
    covered = stored.vv.get(me, 0) if stored is not None else 0
    for change in changes:
        if change.n > covered:
            view = apply_pending(view, change, me, collection)
    return view


def visible(view: EntityView | None) -> dict[str, Any] | None:
    """Field values an app reads, or None for a missing or deleted entity."""
    if view is None or view.deleted:
        return None
    return {name: f.value for name, f in view.fields.items()}
