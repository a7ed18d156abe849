"""``FaultyStore``: a Store wrapper that fails on command, for tests.

Usage::

    store = FaultyStore(MemoryStore())
    store.fail_next_commit()                  # nothing is written, commit raises
    store.fail_next_commit(after_write=True)  # written, but the caller sees an error

The second form is the lost acknowledgement: the push is durable but the
server never learned it, so the client retries and must be told "duplicate".

A small delegating proxy: every call of the store interfaces (``Store``,
``AdminStore``, ``ChannelStore``, ``KeyStore``) goes to ``inner`` unchanged,
except ``ping`` and a push session's ``commit``, which fail when armed. The
forwarding methods are generated from the interfaces, so a method added to an
interface is forwarded without a line here.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from syncstore.adminstore import AdminStore
from syncstore.channels import ChannelStore
from syncstore.integrity import IntegrityStore
from syncstore.keystore import KeyStore
from syncstore.records import DotRecord, EntityRecord, PushBatch, ReplicaRecord
from syncstore.store import EntityKey, PushLoad, PushSession, Store, StoreUnavailable

INTERFACES: tuple[type, ...] = (Store, AdminStore, ChannelStore, KeyStore, IntegrityStore)

if TYPE_CHECKING:

    class _Interfaces(Store, AdminStore, ChannelStore, KeyStore, IntegrityStore, Protocol):
        """For the type checker: a FaultyStore has every method of the interfaces (forwarded below)."""

else:
    _Interfaces = object


class InjectedFault(StoreUnavailable):
    """The default error a ``FaultyStore`` raises: looks like an outage to callers."""


class FaultyStore(_Interfaces):
    """Delegates to ``inner``; ``commit`` raises once per ``fail_next_commit`` call, ``ping`` per ``fail_next_ping``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._armed: list[tuple[BaseException, bool]] = []
        self._ping_failure: BaseException | None = None

    def fail_next_ping(self, error: BaseException | None = None) -> None:
        """Make the next ``ping`` raise ``error`` (default ``InjectedFault``), as a database that is down does."""
        self._ping_failure = error or InjectedFault("injected ping failure")

    def fail_next_commit(self, error: BaseException | None = None, *, after_write: bool = False) -> None:
        """Make the next ``commit`` raise ``error`` (default ``InjectedFault``).

        With ``after_write`` the batch is committed first, then the error raised.
        Calls queue up: two calls fail the next two commits.
        """
        self._armed.append((error or InjectedFault("injected commit failure"), after_write))

    def push_session(self, tenant_id: str) -> AbstractAsyncContextManager[PushSession]:
        return self._push_session(tenant_id)

    @asynccontextmanager
    async def _push_session(self, tenant_id: str) -> AsyncIterator[PushSession]:
        async with self.inner.push_session(tenant_id) as session:
            yield _FaultySession(session, self._armed)

    async def ping(self) -> None:
        failure, self._ping_failure = self._ping_failure, None
        if failure is not None:
            raise failure
        await self.inner.ping()


def _forward(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def forward(self: FaultyStore, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.inner, name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    return forward


for _interface in INTERFACES:
    for _name, _method in inspect.getmembers(_interface, inspect.iscoroutinefunction):
        if not _name.startswith("_") and _name not in vars(FaultyStore):
            setattr(FaultyStore, _name, _forward(_name))


class _FaultySession:
    def __init__(self, inner: PushSession, armed: list[tuple[BaseException, bool]]) -> None:
        self._inner = inner
        self._armed = armed

    @property
    def last_seq(self) -> int:
        return self._inner.last_seq

    @last_seq.setter
    def last_seq(self, value: int) -> None:
        self._inner.last_seq = value

    @property
    def chain_head(self) -> bytes | None:
        return self._inner.chain_head

    @chain_head.setter
    def chain_head(self, value: bytes | None) -> None:
        self._inner.chain_head = value

    async def replicas(self, replica_ids: Sequence[str]) -> dict[str, ReplicaRecord]:
        return await self._inner.replicas(replica_ids)

    async def entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, EntityRecord]:
        return await self._inner.entities(keys)

    async def dot(self, replica_id: str, n: int) -> DotRecord | None:
        return await self._inner.dot(replica_id, n)

    async def dot_change_id(self, replica_id: str, n: int) -> str | None:
        return await self._inner.dot_change_id(replica_id, n)

    async def channel_members(self, keys: Sequence[EntityKey]) -> dict[EntityKey, dict[str, int]]:
        return await self._inner.channel_members(keys)

    async def load(self, replica_ids: Sequence[str], keys: Sequence[EntityKey]) -> PushLoad:
        return await self._inner.load(replica_ids, keys)

    async def commit(self, batch: PushBatch) -> None:
        if not self._armed:
            await self._inner.commit(batch)
            return
        error, after_write = self._armed.pop(0)
        if after_write:
            await self._inner.commit(batch)
        raise error
