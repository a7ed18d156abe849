"""3. Reconnect storm: D devices, each with K queued changes, reconnect at once.

Before the outage (untimed) a dispatcher creates one delivery per driver and
every device pulls its channel once (a cursor is bound to its reader's scope). Offline, each driver queues K
changes to its delivery (status, cash on delivery, odometer). Then all D
devices reconnect at once, each on its own connection and token: it pushes
its outbox (in pushes of at most ``push_batch``), pulls from its old cursor
to the end, and, once every device is done, pulls once more from where it
stopped, to pick up what others committed after its pull.

Devices retry 429, 5xx and network errors with backoff, as the protocol's
launch checklist asks; the retries are counted and reported, never hidden.

Reported: the time until every device has drained and pulled to the end,
the time until the last push was acknowledged, p50/p99 per push (as the
device sees it, queueing included), the server's peak RSS (``VmHWM``; a fresh
server process per repetition), and how many entity views the pulls carried.
The end state is checked: every device holds the server's latest version of
every entity, and each entity's merged value is the one its K changes imply.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import uvloop

from benchmarks.backends import Backend
from benchmarks.results import Result
from benchmarks.runner import Context
from benchmarks.server import OurServer, our_server
from benchmarks.wire import AsyncSyncClient, Json, Retries, SyncClient, async_http, change, now_ms, push_bodies

DEFAULTS = {"devices": 1000, "changes_per_device": 100, "push_batch": 500, "page": 1000, "reps": 2}
QUICK = {"devices": 40, "changes_per_device": 20, "push_batch": 500, "page": 1000, "reps": 1}
STATUSES = ("out_for_delivery", "failed", "out_for_delivery", "delivered")
COD_STEP = 100
DISPATCH = "dispatch-web"
NOTE_UNSCOPED = (
    "Every device pulled every delivery changed in the storm (pulls were not scoped to the token's channels): "
    "D x D entity views, which dominate the time at large D. Channel-scoped pulls cut this to each driver's own."
)


@dataclass
class Device:
    replica: str
    user: str
    entity: str
    headers: dict[str, str]
    bodies: list[bytes]
    seen: dict[str, int] = field(default_factory=dict)
    """entity -> seq of the newest version this device pulled."""
    cursor: str | None = None


@dataclass
class Storm:
    total_s: float = 0.0
    drained_s: float = 0.0
    first_round_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    pulled: int = 0
    retries: Retries = field(default_factory=Retries)


def _entity(i: int) -> str:
    return f"route-{i}"


def _outbox(i: int, k: int, batch: int) -> list[bytes]:
    wall, replica = now_ms(), f"phone-{i}"
    context = {DISPATCH: i + 1}  # the delivery as the device saw it before the outage
    changes = [
        change(
            j + 1,
            _entity(i),
            [
                {"op": "set", "field": "status", "value": STATUSES[j % len(STATUSES)]},
                {"op": "inc", "field": "cod_cents", "by": COD_STEP},
                {"op": "set", "field": "odometer", "value": j},
            ],
            (wall, j),
            context,
        )
        for j in range(k)
    ]
    return push_bodies(replica, changes, batch)


def _seed(server: OurServer, tenant: str, d: int, page: int) -> str | None:
    """One delivery per driver, made by the dispatcher; returns the dispatcher's cursor."""
    changes = [
        change(i + 1, _entity(i), [{"op": "set", "field": "driver_id", "value": f"driver-{i}"}], (now_ms(), i))
        for i in range(d)
    ]
    with SyncClient(server.base, server.headers(tenant, "dispatcher")) as client:
        client.push_all(push_bodies(DISPATCH, changes, 1000))
        return client.pull_to_end(None, page).cursor


def _own_cursors(server: OurServer, devices: list[Device], page: int) -> None:
    """Each driver pulls its channel once before going offline (untimed): a cursor is bound to the scope it was
    issued to, so the dispatcher's would get each driver a reset."""
    with SyncClient(server.base, devices[0].headers) as client:
        for dev in devices:
            client.use(dev.headers)
            dev.cursor = client.pull_to_end(None, page).cursor


async def _storm(base: str, devices: list[Device], page: int) -> Storm:
    out = Storm()
    last_ack = 0.0
    async with async_http(base, connections=len(devices)) as http:

        async def reconnect(dev: Device) -> None:
            nonlocal last_ack
            client = AsyncSyncClient(http, dev.headers, out.retries)
            for body in dev.bodies:
                t = time.perf_counter()
                await client.push(body)
                now = time.perf_counter()
                out.latencies_ms.append((now - t) * 1000)
                last_ack = max(last_ack, now)
            end = await client.pull_to_end(dev.cursor, page, on_page=lambda items: _remember(dev, items))
            dev.cursor = end.cursor
            out.pulled += end.entities

        async def catch_up(dev: Device) -> None:
            end = await AsyncSyncClient(http, dev.headers, out.retries).pull_to_end(
                dev.cursor, page, on_page=lambda items: _remember(dev, items)
            )
            dev.cursor = end.cursor
            out.pulled += end.entities

        t0 = time.perf_counter()
        await asyncio.gather(*(reconnect(d) for d in devices))
        out.first_round_s = time.perf_counter() - t0
        await asyncio.gather(*(catch_up(d) for d in devices))
        out.total_s = time.perf_counter() - t0
        out.drained_s = last_ack - t0
    return out


def _remember(dev: Device, items: list[Json]) -> None:
    for item in items:
        dev.seen[item["entity"]] = item["seq"]


def _expected(i: int, k: int) -> dict[str, object]:
    return {
        "driver_id": f"driver-{i}",
        "status": STATUSES[(k - 1) % len(STATUSES)],
        "cod_cents": k * COD_STEP,
        "odometer": k - 1,
    }


def _visible(server: OurServer, dev: Device, page: int) -> set[str]:
    """What this device may see now, by a fresh pull with its own token (cursor ``null``)."""
    seen: set[str] = set()
    with SyncClient(server.base, dev.headers) as client:
        client.pull_to_end(None, page, on_page=lambda items: seen.update(e["entity"] for e in items))
    return seen


def _check(
    server: OurServer, tenant: str, devices: list[Device], k: int, page: int, result: Result, label: str = ""
) -> None:
    """Every device holds the head version of everything it may see; every delivery has its expected state.

    What a driver may see depends on whether pulls are scoped to the token's
    channels, so it is asked, not assumed: a few devices pull afresh, and every
    device must have pulled exactly as many entities, its own among them, each
    at the server's newest seq.
    """
    final: dict[str, Json] = {}
    with SyncClient(server.base, server.headers(tenant, "auditor")) as client:
        client.pull_to_end(None, page, on_page=lambda items: final.update((e["entity"], e) for e in items))
    head = {entity: view["seq"] for entity, view in final.items()}
    samples = [devices[i] for i in sorted({0, len(devices) // 2, len(devices) - 1})]
    sizes = set()
    for dev in samples:
        visible = _visible(server, dev, page)
        detail = f"{len(visible)} visible, {len(dev.seen)} pulled"
        result.check(f"{label}{dev.replica} pulled exactly what it may see", True, visible == set(dev.seen), detail)
        sizes.add(len(visible))
    result.check(f"{label}devices in the sample see as many entities", 1, len(sizes))
    result.params["entities_visible_per_device"] = sizes.pop()
    expected = result.params["entities_visible_per_device"]
    behind = sum(
        1
        for dev in devices
        if len(dev.seen) != expected or dev.entity not in dev.seen or any(head.get(e) != s for e, s in dev.seen.items())
    )
    result.check(f"{label}devices converged on the server's head", 0, behind, f"of {len(devices)} devices")
    wrong = 0
    for i, dev in enumerate(devices):
        view = final.get(dev.entity)
        fields = {name: f["value"] for name, f in view["fields"].items()} if view else {}
        vv = view["vv"] if view else {}
        if fields != _expected(i, k) or vv != {DISPATCH: i + 1, dev.replica: k}:
            wrong += 1
    result.check(f"{label}deliveries with the expected merged state", 0, wrong, f"of {len(devices)} deliveries")


@dataclass
class StormRun:
    """One storm on a fresh server process, with the server's memory around it."""

    storm: Storm
    rss_before: int
    peak_rss: int


def reconnect_storm(
    backend: Backend, d: int, k: int, batch: int, page: int, result: Result, log_name: str, label: str = ""
) -> StormRun:
    """Seed, then storm ``d`` devices x ``k`` changes on a fresh server process, and check the end state.

    A fresh server per storm, so ``VmHWM`` is this storm's peak. ``label`` prefixes the check names,
    so several storms can be checked in one result.
    """
    with our_server(backend, log_name) as server:
        tenant = server.tenant("storm")
        _seed(server, tenant, d, page)
        devices = [
            Device(
                f"phone-{i}",
                f"driver-{i}",
                _entity(i),
                server.headers(tenant, f"driver-{i}", "driver", (f"driver:driver-{i}",)),
                _outbox(i, k, batch),
            )
            for i in range(d)
        ]
        _own_cursors(server, devices, page)
        rss_before = server.rss_bytes()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            storm = runner.run(_storm(server.base, devices, page))
        peak = server.peak_rss_bytes()
        _check(server, tenant, devices, k, page, result, label)
    return StormRun(storm, rss_before, peak)


def record(result: Result, run: StormRun, d: int, k: int, rep: int, prefix: str = "") -> None:
    """Add one storm's figures to ``result``, each name after ``prefix``."""
    storm = run.storm
    lat = sorted(storm.latencies_ms)
    result.add(f"{prefix}drained and pulled to the end", storm.total_s, "s")
    result.add(f"{prefix}drained (last push acknowledged)", storm.drained_s, "s")
    result.add(f"{prefix}every device pushed and pulled once", storm.first_round_s, "s")
    result.add(f"{prefix}push p50", statistics.median(lat), "ms")
    result.add(f"{prefix}push p99", lat[min(len(lat) - 1, int(0.99 * len(lat)))], "ms")
    result.add(f"{prefix}push throughput while draining", d * k / storm.drained_s, "changes/s")
    result.add(f"{prefix}server RSS before the storm", run.rss_before / 2**20, "MiB")
    result.add(f"{prefix}peak server RSS", run.peak_rss / 2**20, "MiB")
    result.add(f"{prefix}entity views pulled by all devices", storm.pulled, "entities")
    result.add(f"{prefix}requests retried (429, 5xx, network)", storm.retries.total, "requests")
    if storm.retries.total:
        result.notes.append(f"{prefix}repetition {rep + 1}: devices retried {storm.retries.by_status} (status: count)")


def run(ctx: Context, result: Result) -> None:
    d, k = int(ctx.params["devices"]), int(ctx.params["changes_per_device"])
    batch, page = int(ctx.params["push_batch"]), int(ctx.params["page"])
    task = ctx.progress.add_task(f"storm {d:,} devices x {k} changes", total=ctx.reps)
    for rep in range(ctx.reps):
        storm = reconnect_storm(ctx.backend, d, k, batch, page, result, f"server-{rep}.log")
        record(result, storm, d, k, rep)
        result.series.setdefault("push latency (ms), every push of every repetition", []).extend(
            round(x, 3) for x in storm.storm.latencies_ms
        )
        ctx.progress.advance(task)
    if result.params.get("entities_visible_per_device", 0) > 1:
        result.notes.append(NOTE_UNSCOPED)
