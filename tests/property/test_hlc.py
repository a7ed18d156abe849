"""Hybrid logical clocks: monotonic whatever the wall clock does, and a device with a
clock in the future is clamped so that it cannot win forever."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from syncproto.crdt.register import Register, Sibling
from syncproto.hlc import HybridClock, clamp
from syncproto.merge import EntityState, apply_change, join
from syncproto.messages import Change, SetOp
from syncproto.rules import LWW
from tests.property.sim import ENTITY, canonical, canonical_view, make_collection, view

walls = st.integers(0, 2**45)
stamps = st.tuples(walls, st.integers(0, 2**16))


def _wall(values: list[int]) -> Iterator[int]:
    yield from values


@given(st.lists(st.one_of(walls.map(lambda w: ("tick", w)), stamps.map(lambda s: ("observe", s))), max_size=60))
def test_tick_is_strictly_monotonic_even_when_the_wall_clock_goes_backwards(
    events: list[tuple[str, object]],
) -> None:
    now = [0]
    clock = HybridClock(wall=lambda: now[0])
    last = clock.last
    for kind, arg in events:
        if kind == "observe":
            assert isinstance(arg, tuple)
            clock.observe(arg)
            stamp = clock.tick()
            assert stamp > arg, "a local event after a receipt is later than what was received"
        else:
            assert isinstance(arg, int)
            now[0] = arg
            stamp = clock.tick()
            assert stamp[0] >= arg, "a stamp never lags the wall clock"
        assert stamp > last
        last = stamp


@given(stamps, walls, st.integers(0, 10**7))
def test_clamp_bounds_a_future_stamp_and_leaves_others_alone(hlc: tuple[int, int], now: int, max_skew: int) -> None:
    used, clamped = clamp(hlc, now, max_skew)
    assert used[0] <= max(hlc[0], now + max_skew)
    assert used <= hlc
    assert clamped == (hlc[0] > now + max_skew)
    assert used == ((now + max_skew, hlc[1]) if clamped else hlc)


def _change(n: int, hlc: tuple[int, int], value: str, context: dict[str, int]) -> Change:
    return Change(f"c{n}", n, "jobs", ENTITY, hlc, context, [SetOp("title", value)])


@given(
    start=st.integers(10**12, 2 * 10**12),
    ahead=st.integers(1, 10**11),
    max_skew=st.integers(0, 600_000),
    gaps=st.lists(st.integers(1, 3_600_000), min_size=1, max_size=8),
    late=st.integers(1, 10**6),
)
def test_a_clamped_device_cannot_beat_a_later_correct_write_forever(
    start: int, ahead: int, max_skew: int, gaps: list[int], late: int
) -> None:
    """Device ``bad`` runs ``ahead`` ms fast and keeps writing; the server clamps each
    stamp to ``now + max_skew``. A correct write made more than ``max_skew`` after
    the bad device's latest write wins by LWW, even though neither saw the other."""
    collection = make_collection()
    now = start
    bad_clock = HybridClock(wall=lambda: now + ahead)
    state = EntityState()
    for n, gap in enumerate(gaps, start=1):
        now += gap
        change = _change(n, bad_clock.tick(), f"bad-{n}", dict(state.vv))
        stamp, was_clamped = clamp(change.hlc, now, max_skew)
        assert was_clamped == (ahead > max_skew)
        state = apply_change(state, change, "bad", collection, hlc=stamp).state

    good_now = now + max_skew + late
    good_clock = HybridClock(wall=lambda: good_now)
    good = _change(1, good_clock.tick(), "good", {})  # has not seen the bad writes: concurrent
    stamp, _ = clamp(good.hlc, good_now, max_skew)
    outcome = apply_change(state, good, "good", collection, hlc=stamp)
    (conflict,) = outcome.conflicts
    assert conflict.winner is not None
    assert conflict.winner.value == "good"
    assert view(outcome.state, collection).fields["title"].value == "good"
    reg = outcome.state.fields["title"]
    assert isinstance(reg, Register)
    assert LWW.pick(reg.siblings).value == "good"


@given(
    ahead=st.integers(1, 10**11),
    max_skew=st.integers(0, 600_000),
    late=st.integers(1, 10**6),
)
def test_a_device_that_pulls_its_clamped_write_sees_the_servers_winner(ahead: int, max_skew: int, late: int) -> None:
    """The server stores the clamped stamp of a write whose device keeps the original.
    Joining the two states must not depend on the order, and the device must then
    show what the server shows."""
    collection = make_collection()
    now = 1_700_000_000_000
    bad = _change(1, (now + ahead, 0), "bad", {})
    device = apply_change(EntityState(), bad, "bad", collection).state
    stamp, _ = clamp(bad.hlc, now, max_skew)
    server = apply_change(EntityState(), bad, "bad", collection, hlc=stamp).state
    good = _change(1, (now + max_skew + late, 0), "good", {})
    server = apply_change(server, good, "good", collection).state

    pulled = join(device, server)
    assert canonical(pulled) == canonical(join(server, device))
    assert canonical_view(view(pulled, collection)) == canonical_view(view(server, collection))
    assert view(pulled, collection).fields["title"].value == "good"


def test_lww_orders_by_stamp_then_replica_then_counter() -> None:
    a = Sibling("a", "phone-a", 1, (5, 0))
    b = Sibling("b", "phone-b", 1, (5, 0))
    c = Sibling("c", "phone-a", 2, (5, 0))
    d = Sibling("d", "phone-a", 1, (5, 1))
    assert LWW.pick([a, b]).value == "b"
    assert LWW.pick([a, c]).value == "c"
    assert LWW.pick([a, b, c, d]).value == "d"
