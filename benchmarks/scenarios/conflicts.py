"""5. Conflicts: E deliveries edited concurrently offline by V devices, merged by the server.

A dispatcher creates E deliveries in one depot; every driver of that depot
(a token with channel ``depot:depot-1``) saw them (context ``{dispatch: i}``),
went offline and edited every one: two registers
(``status`` with its precedence rule, ``eta`` with LWW), a counter and a set.
All devices then push at once. Each register write that arrives while another
device's write is still a sibling is a concurrent write, so the conflict log
must hold exactly E x 2 x (V - 1) ``register`` entries, and nothing else.

Reported: merge throughput (changes/s while all devices push) and the rate of
reading the whole conflict log back through ``GET /v1/conflicts`` (pages of 500).
Checked: the conflict count, that the last conflict per field lists all V
values, and the merged state of every delivery (siblings, precedence winner,
LWW winner, counter sum, set union).
"""

from __future__ import annotations

import asyncio
import time

import uvloop

from benchmarks.results import Result
from benchmarks.runner import Context
from benchmarks.server import OurServer, our_server
from benchmarks.wire import AsyncSyncClient, Json, Retries, SyncClient, async_http, change, now_ms, push_bodies

DEFAULTS = {"entities": 2_000, "devices": 4, "push_batch": 500, "reps": 3}
QUICK = {"entities": 200, "devices": 3, "push_batch": 500, "reps": 1}
PRECEDENCE = ("delivered", "failed", "out_for_delivery", "pending")  # config/collections.toml, strongest first
DEVICE_STATUS = ("failed", "out_for_delivery", "delivered")
DISPATCH = "dispatch-web"
REGISTERS = ("status", "eta")
DEPOT = "depot-1"
"""Every delivery is in channel ``depot:depot-1`` (config/collections.toml), which every driver's token holds."""


def _status(v: int) -> str:
    return DEVICE_STATUS[v % len(DEVICE_STATUS)]


def _device_changes(v: int, e: int, wall: int) -> list[Json]:
    return [
        change(
            i + 1,
            f"dlv-{i}",
            [
                {"op": "set", "field": "status", "value": _status(v)},
                {"op": "set", "field": "eta", "value": f"{10 + v}:00"},
                {"op": "inc", "field": "cod_cents", "by": 100 * (v + 1)},
                {"op": "add", "field": "scanned", "value": f"parcel-{v}-{i}"},
            ],
            (wall + v, i),  # distinct stamps: LWW picks the last device
            {DISPATCH: i + 1},
        )
        for i in range(e)
    ]


def _seed(server: OurServer, tenant: str, e: int) -> None:
    wall = now_ms() - 60_000
    ops = [{"op": "set", "field": "status", "value": "pending"}, {"op": "set", "field": "depot", "value": DEPOT}]
    changes = [change(i + 1, f"dlv-{i}", ops, (wall, i)) for i in range(e)]
    with SyncClient(server.base, server.headers(tenant, "dispatcher")) as client:
        client.push_all(push_bodies(DISPATCH, changes, 1000))


async def _push_all_devices(base: str, devices: list[tuple[dict[str, str], list[bytes]]], retries: Retries) -> float:
    async with async_http(base, connections=len(devices)) as http:

        async def device(headers: dict[str, str], bodies: list[bytes]) -> None:
            client = AsyncSyncClient(http, headers, retries)
            for body in bodies:
                await client.push(body)

        t0 = time.perf_counter()
        await asyncio.gather(*(device(h, b) for h, b in devices))
        return time.perf_counter() - t0


def run(ctx: Context, result: Result) -> None:
    e, v, batch = int(ctx.params["entities"]), int(ctx.params["devices"]), int(ctx.params["push_batch"])
    expected_conflicts = e * len(REGISTERS) * (v - 1)
    result.params["expected_register_conflicts"] = expected_conflicts
    task = ctx.progress.add_task(f"conflicts: {e:,} deliveries x {v} devices", total=ctx.reps)
    with our_server(ctx.backend) as server:
        for _ in range(ctx.reps):
            tenant = server.tenant("conflicts")
            _seed(server, tenant, e)
            wall = now_ms()
            devices = [
                (
                    server.headers(tenant, f"driver-{d}", "driver", (f"depot:{DEPOT}",)),
                    push_bodies(f"phone-{d}", _device_changes(d, e, wall), batch),
                )
                for d in range(v)
            ]
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                retries = Retries()
                seconds = runner.run(_push_all_devices(server.base, devices, retries))
            result.add("merge (all devices pushing at once)", e * v / seconds, "changes/s")
            result.add("requests retried (429, 5xx, network)", retries.total, "requests")
            with SyncClient(server.base, server.headers(tenant, "admin", "admin")) as admin:
                t0 = time.perf_counter()
                log = admin.conflicts()
                read_s = time.perf_counter() - t0
                result.add("conflict log read (GET /v1/conflicts)", len(log) / read_s, "conflicts/s")
                _check(admin, log, e, v, expected_conflicts, result)
            ctx.progress.advance(task)


def _check(admin: SyncClient, log: list[Json], e: int, v: int, expected: int, result: Result) -> None:
    kinds = {c["kind"] for c in log}
    result.check("register conflicts logged", expected, sum(1 for c in log if c["kind"] == "register"))
    result.check("conflict kinds", {"register"} if expected else set(), kinds)
    widest: dict[tuple[str, str], int] = {}
    for c in log:
        key = (c["entity"], c["field"])
        widest[key] = max(widest.get(key, 0), len(c["values"]))
    result.check(
        "fields whose last conflict lists all devices", e * len(REGISTERS), sum(1 for n in widest.values() if n == v)
    )
    views: dict[str, Json] = {}
    admin.pull_to_end(None, 1000, on_page=lambda items: views.update((x["entity"], x) for x in items))
    present = {_status(d) for d in range(v)}
    winner = next(s for s in PRECEDENCE if s in present)
    want = {
        "status": (winner, v),
        "eta": (f"{10 + v - 1}:00", v),
        "cod_cents": sum(100 * (d + 1) for d in range(v)),
    }
    wrong = 0
    for i in range(e):
        f = views[f"dlv-{i}"]["fields"]
        got = {
            "status": (f["status"]["value"], len(f["status"].get("siblings", []))),
            "eta": (f["eta"]["value"], len(f["eta"].get("siblings", []))),
            "cod_cents": f["cod_cents"]["value"],
        }
        scanned_ok = f["scanned"]["value"] == sorted(f"parcel-{d}-{i}" for d in range(v))
        if got != want or not scanned_ok:
            wrong += 1
    result.check("deliveries with the expected merged state", 0, wrong, f"of {e}")
