"""The SDK treats the per-change bound codes (value_out_of_range, value_too_deep, forbidden for a
channel the token lacks) as rejections: a RejectedChange event, out of the outbox, never retried,
and the changes behind them go through."""

from __future__ import annotations

from typing import Any

from syncclient import Event, RejectedChange
from syncproto import errors
from syncproto.values import MAX_VALUE_DEPTH
from tests.sdk.conftest import InProcServer


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"v": value}
    return value


async def test_out_of_range_and_too_deep_changes_are_rejections_not_retries(server: InProcServer) -> None:
    phone = server.client("phone-a")
    d = phone.collection("deliveries")
    events: list[Event] = []
    phone.subscribe(events.append, RejectedChange)
    d.inc("dlv-1", "cod_cents", 2**63 - 1)
    overflow = d.inc("dlv-1", "cod_cents", 1)
    too_big = d.set("dlv-1", "weight", 2**64)
    too_deep = d.set("dlv-1", "recipient", nested(MAX_VALUE_DEPTH + 1))
    d.set("dlv-1", status="delivered")

    stats = await phone.sync()

    assert (stats.applied, stats.rejected, phone.pending_count()) == (2, 3, 0)
    assert [(e.id, e.code) for e in events if isinstance(e, RejectedChange)] == [
        (overflow.id, errors.VALUE_OUT_OF_RANGE),
        (too_big.id, errors.VALUE_OUT_OF_RANGE),
        (too_deep.id, errors.VALUE_TOO_DEEP),
    ]
    # Nothing is left to retry: another round pushes nothing.
    again = await phone.sync()
    assert (again.pushes, again.rejected) == (0, 0)
    views = await server.views()
    fields = views[("deliveries", "dlv-1")].fields
    assert (fields["cod_cents"].value, fields["status"].value) == (2**63 - 1, "delivered")
    await phone.aclose()


async def test_a_driver_publishing_into_another_drivers_channel_gets_a_rejection(server: InProcServer) -> None:
    phone = server.client("phone-d1", "d1", "driver")
    d = phone.collection("deliveries")
    events: list[Event] = []
    phone.subscribe(events.append, RejectedChange)
    shared = d.set("dlv-1", driver_id=["d1", "d2"], status="pending")
    d.set("dlv-2", driver_id="d1", status="pending")

    stats = await phone.sync()

    assert (stats.applied, stats.rejected, phone.pending_count()) == (1, 1, 0)
    assert [(e.id, e.code) for e in events if isinstance(e, RejectedChange)] == [(shared.id, errors.FORBIDDEN)]
    assert set(await server.views()) == {("deliveries", "dlv-2")}
    await phone.aclose()
