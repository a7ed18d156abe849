"""``via``: a store method that calls the same method of one of the store's parts.

``SqlStore`` and ``MemoryStore`` are each built from parts (keys, admin,
channels) that get the backend's shared state in their constructor. The store
exposes their methods as its own, so callers and the interfaces see one
object::

    class MemoryStore:
        def __init__(self) -> None:
            self._keys = MemoryKeys(MemoryState())

        add_tenant_key = via("_keys", MemoryKeys.add_tenant_key)

The signature (and so the type checker's view) is the part's method's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Part = TypeVar("_Part")


def via(
    part: str, method: Callable[Concatenate[_Part, _P], Coroutine[Any, Any, _R]]
) -> Callable[Concatenate[Any, _P], Coroutine[Any, Any, _R]]:
    """A coroutine method of the store that awaits ``method`` on the store's attribute ``part``."""

    async def call(self: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await method(getattr(self, part), *args, **kwargs)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = method.__doc__
    return call
