"""The driver's-day example runs end to end and its numbers add up."""

from __future__ import annotations

from examples.driver_day import DayParams, fetch_conflicts, print_report, run_day
from tests.sdk.conftest import InProcServer


async def test_the_driver_day_converges_and_logs_the_dispatchers_concurrent_edits(
    server: InProcServer, capsys: object
) -> None:
    driver = server.client("phone-17", sub="driver-17", role="driver")
    dispatcher = server.client("web-1", sub="dispatcher-1", role="dispatcher")
    params = DayParams(deliveries=8, tunnels=3, dispatcher_edits=3, seed=5)

    stats = await run_day(driver, dispatcher, params)

    assert stats.converged
    assert stats.rejected == 0
    assert stats.offline_writes > 0
    assert stats.max_queue >= stats.offline_writes // 3
    assert driver.pending_count() == dispatcher.pending_count() == 0
    deliveries = driver.collection("deliveries").list()
    assert sorted(deliveries) == stats.deliveries
    assert sum(d.get("cod_cents", 0) for d in deliveries.values()) == stats.cod_expected > 0
    assert all(len(d["scanned"]) == params.parcels for d in deliveries.values())
    assert all(len(d["trail"]) == params.gps_points for d in deliveries.values())

    conflicts = await fetch_conflicts(server.transport("dispatcher-1", "dispatcher"), params.prefix)
    status = [c for c in conflicts if c.field == "status"]
    # Each edited delivery: the dispatcher's "failed" was concurrent with the driver's statuses.
    assert len({c.entity for c in status}) == params.dispatcher_edits
    assert all(c.rule == "precedence" for c in status)
    assert stats.conflicts_seen >= params.dispatcher_edits
    print_report(driver, stats, conflicts)
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "converged: True" in out
    await driver.aclose()
    await dispatcher.aclose()
