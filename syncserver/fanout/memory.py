"""In-process fan-out: one server process, or tests."""

from __future__ import annotations

from collections.abc import Callable

from syncserver.fanout.interface import FanoutListener


class Listeners:
    """The local subscribers of a backend; shared by every backend."""

    def __init__(self) -> None:
        self._listeners: list[FanoutListener] = []

    def add(self, listener: FanoutListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:  # by identity: two listeners may compare equal
            self._listeners[:] = [x for x in self._listeners if x is not listener]

        return remove

    def changed(self, tenant: str, seq: int) -> None:
        for listener in list(self._listeners):
            listener.changed(tenant, seq)

    def resync(self) -> None:
        for listener in list(self._listeners):
            listener.resync()


class MemoryFanout:
    """Delivers each notification to this process's listeners, synchronously."""

    def __init__(self) -> None:
        self._listeners = Listeners()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, tenant: str, seq: int) -> None:
        self._listeners.changed(tenant, seq)

    def subscribe(self, listener: FanoutListener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def checks(self) -> dict[str, str]:
        return {}
