"""Resolution rules pick one winner among siblings, the same on every replica."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncproto.crdt.register import Register, Sibling
from syncproto.merge import field_value
from syncproto.messages import FieldView, SiblingView
from syncproto.rules import LWW, Lww, Precedence, Resolver, Rule
from syncproto.schema import Collection
from syncproto.views import field_view

ORDER = ["delivered", "failed", "pending"]


@st.composite
def sibling_sets(draw: st.DrawFn) -> list[Sibling]:
    """One to six siblings with distinct dots; stamps often tie so tie-breaks matter."""
    dots = draw(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c", "phone-9"]), st.integers(1, 4)),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    return [
        Sibling(
            draw(st.sampled_from([*ORDER, "lost", 3, None])),
            replica,
            n,
            (draw(st.integers(0, 2)), draw(st.integers(0, 1))),
            draw(st.sampled_from(["", "u1"])),
        )
        for replica, n in dots
    ]


def longest_value(siblings: list[Sibling]) -> Sibling:
    return max(siblings, key=lambda s: len(str(s.value)))  # the first of the longest, in the order given


def first_given(siblings: list[Sibling]) -> Sibling:
    return siblings[0]


def raises(siblings: list[Sibling]) -> Sibling:
    raise RuntimeError("resolver bug")


def foreign(siblings: list[Sibling]) -> Sibling:
    s = siblings[0]
    return Sibling("made up", s.replica, s.n, s.hlc, s.user)


class Weird:
    def __eq__(self, other: object) -> bool:
        raise TypeError("cannot compare")

    __hash__ = None  # type: ignore[assignment]


def weird(siblings: list[Sibling]) -> Any:
    return Weird()


RULES: dict[str, Rule] = {
    "lww": Lww(),
    "precedence": Precedence(ORDER),
    "python-longest": Resolver(longest_value, "tests:longest_value"),
    "python-first": Resolver(first_given, "tests:first_given"),
}


@given(sibling_sets(), st.randoms(use_true_random=False))
def test_every_pick_is_independent_of_sibling_order(siblings: list[Sibling], rng: Any) -> None:
    shuffled = list(siblings)
    rng.shuffle(shuffled)
    for name, rule in RULES.items():
        assert rule.pick(shuffled) == rule.pick(siblings), name
        assert rule.pick(siblings) in siblings, name


@given(sibling_sets())
def test_lww_picks_the_highest_stamp_then_replica_then_counter(siblings: list[Sibling]) -> None:
    best = LWW.pick(siblings)
    for s in siblings:
        assert (s.hlc, s.replica, s.n) <= (best.hlc, best.replica, best.n)


@given(sibling_sets())
def test_precedence_picks_the_strongest_listed_value_then_lww(siblings: list[Sibling]) -> None:
    best = Precedence(ORDER).pick(siblings)
    listed = [s for s in siblings if s.value in ORDER]
    if listed:
        strongest = min(ORDER.index(s.value) for s in listed)
        assert best.value == ORDER[strongest]
        assert best == LWW.pick([s for s in listed if s.value == ORDER[strongest]])
    else:
        assert best == LWW.pick(siblings)


@given(sibling_sets())
def test_a_resolver_sees_siblings_in_canonical_order(siblings: list[Sibling]) -> None:
    seen: list[list[Sibling]] = []

    def spy(given: list[Sibling]) -> Sibling:
        seen.append(list(given))
        return given[-1]

    chosen = Resolver(spy, "tests:spy").pick(list(reversed(siblings)))
    assert seen == [sorted(siblings, key=lambda s: (s.replica, s.n))]
    assert chosen == seen[0][-1]


@given(sibling_sets())
def test_a_resolver_that_fails_or_returns_a_foreign_value_falls_back_to_lww(siblings: list[Sibling]) -> None:
    bad: list[Callable[[list[Sibling]], Any]] = [raises, foreign, weird, lambda _s: None, lambda _s: "delivered"]
    for fn in bad:
        assert Resolver(fn, "tests:bad").pick(siblings) == LWW.pick(siblings)


@given(sibling_sets())
def test_a_registers_value_is_the_rules_pick_also_with_a_single_sibling(siblings: list[Sibling]) -> None:
    # field_value skips the rule when a register holds one sibling (every pull opens thousands of them):
    # the shortcut must show what every rule, and a resolver that fails or makes up a value, would pick.
    rules: dict[str, Rule] = {**RULES, "python-raises": Resolver(raises, "tests:raises")}
    rules["python-foreign"] = Resolver(foreign, "tests:foreign")
    for register in (Register(siblings), Register(siblings[:1])):
        for name, rule in rules.items():
            assert field_value(register, rule) == rule.pick(register.siblings).value, name
    assert field_value(Register([]), LWW) is None


@given(sibling_sets())
def test_a_registers_view_is_its_value_by_the_rule_and_lists_siblings_only_when_there_are_several(
    siblings: list[Sibling],
) -> None:
    # field_view answers a register of one sibling without asking for its rule (most fields of every pull):
    # the view must be the one the rule's pick gives, for every rule, with siblings listed only beside others.
    rules: dict[str, Rule] = {**RULES, "python-raises": Resolver(raises, "tests:raises")}
    for name, rule in rules.items():
        collection = Collection("c", kinds={"f": "register"}, rules={"f": rule})
        for register in (Register(siblings), Register(siblings[:1])):
            listed = [SiblingView(s.value, s.replica, s.n, s.hlc) for s in register.siblings]
            expected = FieldView("register", rule.pick(register.siblings).value, listed if len(listed) > 1 else None)
            assert field_view(register, collection, "f") == expected, name
