"""Who may see and change which entities: roles, channels, and the per-entity check.

* A token's ``role`` is ``driver``, ``dispatcher`` or ``admin``. Dispatchers and
  admins see the whole tenant; a driver sees only entities in one of the
  channels of its token (the ``ch`` claim).
* An entity's channels come from its collection's templates
  (``channels = ["driver:{driver_id}", "depot:{depot}"]``), filled from the
  entity's merged field values. ``{name}`` takes the field's current value: a
  register's visible value (the rule's pick when there are siblings), or each
  element of a set or list. Only strings and integers make channels; a missing,
  empty, ``null`` or other value makes none from that template. A template with
  no placeholder is a constant channel every entity of the collection is in
  (e.g. ``"all"``), so a collection can be shared with every driver holding it.
* A collection without templates is in no channel: only dispatchers and admins
  see it (deny by default).
* A driver may change an entity only if the entity is in its scope before the
  change (when it exists) and after it, and the change adds no channel its
  token does not hold (the channels after the change are a subset of the
  channels before it plus the token's). So a driver creates an entity only in
  its own channels, and can neither move an entity into another driver's
  channel, nor publish it there too, nor edit one it cannot see. Anything else
  is rejected per change with ``forbidden`` and kept as a dead letter.

``can_see`` is the check for one entity whose merged state you hold (the live
channel uses it per delivered entity); ``Scope.allows`` checks a set of
channels, for instance the ones ``ChannelStore.entity_channels`` returns.

Usage::

    scope = Scope.of(principal)
    if scope.allows(entity_channels(schema.get("deliveries"), state)):
        deliver(...)
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from syncproto import errors
from syncproto.merge import EntityState, field_value
from syncproto.schema import Collection
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError

TENANT_WIDE_ROLES = frozenset({"dispatcher", "admin"})
MAX_CHANNEL_LENGTH = 256
"""Longest channel name (the ``entity_channels.channel`` column)."""
MAX_CHANNELS_PER_ENTITY = 64
"""A bound on what one entity's templates may expand to (sets multiply)."""


class ChannelError(ValueError):
    """An entity's field values make a channel that cannot be stored (too long, too many)."""


@dataclass(frozen=True)
class Scope:
    """What one principal may see: the whole tenant (``channels is None``) or these channels."""

    channels: frozenset[str] | None

    @classmethod
    def of(cls, principal: Principal) -> Scope:
        if principal.role in TENANT_WIDE_ROLES:
            return cls(None)
        return cls(frozenset(principal.channels))

    @property
    def unrestricted(self) -> bool:
        return self.channels is None

    def allows(self, channels: Iterable[str]) -> bool:
        """Whether an entity in ``channels`` is visible in this scope."""
        if self.channels is None:
            return True
        return not self.channels.isdisjoint(channels)

    def foreign(self, channels: Iterable[str]) -> list[str]:
        """The ones of ``channels`` this scope does not hold, sorted (none for a tenant-wide scope)."""
        if self.channels is None:
            return []
        return sorted(set(channels) - self.channels)


def can_see(principal: Principal, collection: Collection, state: EntityState) -> bool:
    """Whether ``principal`` may see an entity of ``collection`` whose merged state is ``state``."""
    scope = Scope.of(principal)
    return scope.unrestricted or scope.allows(entity_channels(collection, state))


def entity_channels(collection: Collection, state: EntityState) -> frozenset[str]:
    """The channels the entity is in, from its collection's templates. Raises ``ChannelError``."""
    if not collection.channels:
        return frozenset()
    found: set[str] = set()
    for template in collection.channels:
        found.update(_expand(collection, state, _parse(template)))
    if len(found) > MAX_CHANNELS_PER_ENTITY:
        raise ChannelError(f"the entity would be in {len(found)} channels; the limit is {MAX_CHANNELS_PER_ENTITY}")
    too_long = [c for c in found if len(c) > MAX_CHANNEL_LENGTH]
    if too_long:
        raise ChannelError(f"a channel of this entity would be longer than {MAX_CHANNEL_LENGTH} characters")
    if any("\x00" in c for c in found):  # PostgreSQL text cannot hold NUL
        raise ChannelError("a channel name of this entity would contain NUL")
    return frozenset(found)


@lru_cache(maxsize=1024)
def channel_fields(templates: tuple[str, ...]) -> frozenset[str]:
    """The fields channel ``templates`` (a ``Collection.channels``) name: ``entity_channels`` reads no other.

    A change that touches none of them leaves the entity's channels as they were (a push skips the
    recomputation: it was about a twelfth of the event loop's time in the reconnect storm).
    """
    return frozenset(name for template in templates for _, name in _parse(template) if name is not None)


Part = tuple[str, str | None]
"""A literal and the field whose value follows it (``None`` at the end)."""


@lru_cache(maxsize=1024)
def _parse(template: str) -> tuple[Part, ...]:
    try:
        return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template))
    except ValueError:  # unbalanced braces: the template is a constant
        return ((template, None),)


def _expand(collection: Collection, state: EntityState, parts: tuple[Part, ...]) -> list[str]:
    prefixes = [""]
    for literal, name in parts:
        if name is None:
            prefixes = [p + literal for p in prefixes]
            continue
        values = _values(collection, state, name)
        if not values:
            return []
        prefixes = [p + literal + v for p in prefixes for v in values]
        if len(prefixes) > MAX_CHANNELS_PER_ENTITY:
            raise ChannelError(f"the entity would be in more than {MAX_CHANNELS_PER_ENTITY} channels")
    return prefixes


def _values(collection: Collection, state: EntityState, name: str) -> list[str]:
    f = state.fields.get(name)
    if f is None:
        return []
    value: Any = field_value(f, collection.rule(name))
    items = value if isinstance(value, list) else [value]
    return sorted({str(v) for v in items if _scalar(v)})


def _scalar(value: Any) -> bool:
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and not isinstance(value, bool))


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard: only tokens with the ``admin`` role pass."""
    principal = connection.user
    if not isinstance(principal, Principal) or principal.role != "admin":
        raise ApiError(403, errors.FORBIDDEN, "this endpoint needs a token with the admin role")
