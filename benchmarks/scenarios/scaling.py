"""10. Scaling: how the cost of ingest, pull and the reconnect storm grows with the table and the fleet.

One run on one backend, in two parts:

* **Storms**, first, on a nearly empty database: for each D of ``devices`` (100, 300, 1,000 and
  3,000 by default), D drivers with ``changes_per_device`` queued changes each (K = 100 for every
  D) reconnect at once, exactly as in the storm scenario (:func:`benchmarks.scenarios.storm.reconnect_storm`:
  a fresh server process per storm, the same checks of convergence and merged state).
* **The table**: one server, one tenant. A seeder grows the tenant's deliveries to each of
  ``sizes`` (10,000, 100,000 and 1,000,000 by default) with new deliveries in pushes of
  ``push_batch`` (500, as the ingest scenario). At each size, with the table exactly that large:

  - **pull**: a fresh device of a dispatcher (new token, new connection, cursor ``null``) pulls
    the first ``pull_entities`` entities (10,000 by default: ten pages of 1,000), not the whole
    table, so every size does the same work and the run stays bounded; what is measured is
    whether a page costs more when the table behind it is larger;
  - **ingest**: ``probe`` changes (20,000 by default: ``probe / 2`` new deliveries, then an update
    of each, as the ingest scenario pushes them, bodies encoded before the clock starts, every
    result ``applied``). The probe's deliveries stay and count toward the next size.

Reported: ingest changes/s (creates, updates, both) and pull entities/s at each size, the growth
rate between sizes (creates/s, for information), and every storm figure per D. Flatness is
reported as ratios inside the run: ingest and pull at the largest size ÷ at the smallest (1.0 is
flat), and the storm's seconds per device at the largest D ÷ at the smallest (1.0 is linear in D).
The PNG draws ingest and pull against stored entities (log x) and storm seconds against devices.
"""

from __future__ import annotations

from pathlib import Path

from rich.progress import TaskID

from benchmarks import plots, workload
from benchmarks.results import Result
from benchmarks.runner import Context
from benchmarks.scenarios import ingest, storm
from benchmarks.scenarios.pull import fresh_pull
from benchmarks.server import our_server
from benchmarks.wire import SyncClient, push_bodies

DEFAULTS = {
    "sizes": "10000,100000,1000000",
    "probe": 20_000,
    "pull_entities": 10_000,
    "devices": "100,300,1000,3000",
    "changes_per_device": 100,
    "push_batch": 500,
    "page": 1000,
    "reps": 1,
}
QUICK = {
    "sizes": "1000,3000,10000",
    "probe": 2_000,
    "pull_entities": 1_000,
    "devices": "10,30",
    "changes_per_device": 20,
}
GROWTH_CHUNK = 50_000
"""Growth changes encoded at a time (bounded client memory)."""
SEEDER = "seeder"


def _ints(spec: object) -> list[int]:
    return [int(v) for v in str(spec).split(",") if v.strip()]


def ingest_name(size: int, what: str = "ingest") -> str:
    return f"{what} @{size:,} stored"


def pull_name(size: int) -> str:
    return f"pull @{size:,} stored"


def storm_prefix(d: int) -> str:
    return f"storm D={d:,}: "


TOTAL, DRAINED = "drained and pulled to the end", "drained (last push acknowledged)"


class Table:
    """One tenant's deliveries, grown by a seeder in pushes of ``batch``."""

    def __init__(self, client: SyncClient, batch: int) -> None:
        self.client, self.batch = client, batch
        self.stored = 0
        self.n = 0
        """The seeder's last change number."""

    def grow_to(self, size: int) -> tuple[int, float]:
        """Add new deliveries until ``size`` are stored; how many were added and the seconds spent pushing."""
        added, seconds = 0, 0.0
        while self.stored < size:
            count = min(GROWTH_CHUNK, size - self.stored)
            changes = workload.creates(f"g{self.stored}", count, first_n=self.n + 1)
            seconds += self.client.push_all(push_bodies(SEEDER, changes, self.batch))
            self.n += count
            self.stored += count
            added += count
        return added, seconds


def _storms(ctx: Context, result: Result, rep: int, task: TaskID) -> None:
    k, batch, page = int(ctx.params["changes_per_device"]), int(ctx.params["push_batch"]), int(ctx.params["page"])
    for d in _ints(ctx.params["devices"]):
        label = storm_prefix(d)
        run = storm.reconnect_storm(ctx.backend, d, k, batch, page, result, f"server-storm-{d}-{rep}.log", label)
        storm.record(result, run, d, k, rep, label)
        ctx.progress.advance(task)


def _table(ctx: Context, result: Result, task: TaskID) -> None:
    sizes, probe = _ints(ctx.params["sizes"]), int(ctx.params["probe"]) // 2
    up_to, batch, page = int(ctx.params["pull_entities"]), int(ctx.params["push_batch"]), int(ctx.params["page"])
    with our_server(ctx.backend, "server-table.log") as server:
        tenant = server.tenant("scaling")
        with SyncClient(server.base, server.headers(tenant, SEEDER)) as client:
            table = Table(client, batch)
            last = ""
            for size in sizes:
                added, seconds = table.grow_to(size)
                if added:
                    result.add(f"growth up to {size:,} stored", added / seconds, "creates/s")
                for rep in range(ctx.reps):
                    seconds, end = fresh_pull(server, tenant, f"fresh-{size}-{rep}", page, up_to=up_to)
                    result.check(
                        f"entities pulled @{size:,} stored, rep {rep + 1}", min(up_to, table.stored), end.entities
                    )
                    result.add(pull_name(size), end.entities / seconds, "entities/s")
                    last = f"p{size}r{rep}"
                    t_create, t_update = ingest.creates_then_updates(client, last, probe, batch)
                    table.stored += probe
                    result.add(ingest_name(size, "creates"), probe / t_create, "changes/s")
                    result.add(ingest_name(size, "updates"), probe / t_update, "changes/s")
                    result.add(ingest_name(size), 2 * probe / (t_create + t_update), "changes/s")
                ctx.progress.advance(task)
            ingest.check_last_entity(client, result, last, probe)
    result.params["stored_at_end"] = table.stored


def _flatness(ctx: Context, result: Result) -> None:
    """Ratios inside the run: largest ÷ smallest size (1.0 is flat), per-device storm time (1.0 is linear)."""
    sizes, devices = _ints(ctx.params["sizes"]), _ints(ctx.params["devices"])
    lo, hi = sizes[0], sizes[-1]
    for rep in range(ctx.reps):
        for what, name in (("ingest", ingest_name), ("pull", pull_name)):
            result.ratio(
                f"{what} @{hi:,} ÷ @{lo:,} stored", result.figures[name(hi)][rep], result.figures[name(lo)][rep]
            )
        d_lo, d_hi = devices[0], devices[-1]
        result.ratio(
            f"storm seconds per device, D={d_hi:,} ÷ D={d_lo:,}",
            result.figures[storm_prefix(d_hi) + TOTAL][rep] / d_hi,
            result.figures[storm_prefix(d_lo) + TOTAL][rep] / d_lo,
        )


def run(ctx: Context, result: Result) -> None:
    steps = ctx.reps * len(_ints(ctx.params["devices"])) + len(_ints(ctx.params["sizes"]))
    task = ctx.progress.add_task("scaling: storms, then the table", total=steps)
    for rep in range(ctx.reps):
        _storms(ctx, result, rep, task)
    _table(ctx, result, task)
    _flatness(ctx, result)


def plot(result: Result, path: Path) -> Path:
    sizes, devices = _ints(result.params["sizes"]), _ints(result.params["devices"])
    return plots.lines(
        result,
        path,
        [
            plots.Curves(
                "stored entities (log)",
                "changes/s",
                [float(s) for s in sizes],
                {
                    f"ingest, {result.params['probe']:,} changes": [ingest_name(s) for s in sizes],
                    "creates": [ingest_name(s, "creates") for s in sizes],
                    "updates": [ingest_name(s, "updates") for s in sizes],
                },
                logx=True,
            ),
            plots.Curves(
                "stored entities (log)",
                "entities/s",
                [float(s) for s in sizes],
                {f"pull, first {result.params['pull_entities']:,} entities": [pull_name(s) for s in sizes]},
                logx=True,
            ),
            plots.Curves(
                f"devices (log), {result.params['changes_per_device']} changes each",
                "s (log)",
                [float(d) for d in devices],
                {
                    f"storm: {TOTAL}": [storm_prefix(d) + TOTAL for d in devices],
                    f"storm: {DRAINED}": [storm_prefix(d) + DRAINED for d in devices],
                },
                logx=True,
                logy=True,
            ),
        ],
    )
