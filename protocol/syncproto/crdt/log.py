"""Append-only log (for example a GPS trail): entries ordered by HLC, never removed."""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class LogEntry(Struct, gc=False, frozen=True, array_like=True):
    hlc: tuple[int, int]
    replica: str
    n: int
    i: int
    """Position of the entry among the appends of one change."""
    value: Any

    def key(self) -> tuple[tuple[int, int], str, int, int]:
        return (self.hlc, self.replica, self.n, self.i)


class Log(Struct, gc=False, tag="log", tag_field="kind"):
    entries: list[LogEntry] = []


def append(log: Log, entry: LogEntry) -> Log:
    if any(e.replica == entry.replica and e.n == entry.n and e.i == entry.i for e in log.entries):
        return log
    entries = [*log.entries, entry]
    if log.entries and entry.key() < log.entries[-1].key():
        entries.sort(key=LogEntry.key)
    return Log(entries)


def value(log: Log) -> list[Any]:
    return [e.value for e in log.entries]


def join(a: Log, b: Log) -> Log:
    seen = {(e.replica, e.n, e.i): e for e in a.entries}
    for e in b.entries:
        mine = seen.setdefault((e.replica, e.n, e.i), e)
        if e.hlc < mine.hlc:
            # One entry with two stamps: the server clamped a device clock that runs
            # ahead. Keep the lower (the server's) whichever side it is on.
            seen[(e.replica, e.n, e.i)] = e
    return Log(sorted(seen.values(), key=LogEntry.key))
