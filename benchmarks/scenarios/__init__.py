"""The scenarios, in the issue's numbering. ``python -m benchmarks list`` shows them with their parameters."""

from __future__ import annotations

from benchmarks.runner import Scenario
from benchmarks.scenarios import (
    attachments,
    conflicts,
    fanout,
    footprint,
    idle,
    ingest,
    pull,
    scaling,
    storm,
    text,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "ingest", 1, "Ingest: new entities, then updates", "changes/s", ingest.run, ingest.DEFAULTS, ingest.QUICK
        ),
        Scenario("pull", 2, "Pull: a fresh client pulls to the end", "entities/s", pull.run, pull.DEFAULTS, pull.QUICK),
        Scenario(
            "storm",
            3,
            "Reconnect storm: devices with queued changes reconnect at once",
            "s",
            storm.run,
            storm.DEFAULTS,
            storm.QUICK,
            time_limit_s=3600,
        ),
        Scenario(
            "fanout", 4, "Fan-out: one writer, M WebSocket subscribers", "ms", fanout.run, fanout.DEFAULTS, fanout.QUICK
        ),
        Scenario(
            "conflicts",
            5,
            "Conflicts: concurrent offline edits",
            "changes/s",
            conflicts.run,
            conflicts.DEFAULTS,
            conflicts.QUICK,
        ),
        Scenario("text", 6, "Text: replay a real editing trace", "edits/s", text.run, text.DEFAULTS, text.QUICK),
        Scenario("idle", 7, "Idle: N idle WebSocket connections", "bytes", idle.run, idle.DEFAULTS, idle.QUICK),
        Scenario(
            "footprint",
            8,
            "Footprint: bytes on disk per record, by table and index",
            "bytes/record",
            footprint.run,
            footprint.DEFAULTS,
            footprint.QUICK,
        ),
        Scenario(
            "attachments",
            9,
            "Attachments: tus upload and download throughput vs raw files; server memory under concurrent uploads",
            "MiB/s",
            attachments.run,
            attachments.DEFAULTS,
            attachments.QUICK,
        ),
        Scenario(
            "scaling",
            10,
            "Scaling: ingest and pull at 10k, 100k and 1M stored entities; storms of 100 to 3,000 devices",
            "changes/s",
            scaling.run,
            scaling.DEFAULTS,
            scaling.QUICK,
            time_limit_s=3600,
            plot=scaling.plot,
        ),
    )
}

ALIASES = {"reconnect-storm": "storm", "fan-out": "fanout"}

__all__ = ["ALIASES", "SCENARIOS"]
