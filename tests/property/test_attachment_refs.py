"""``refs_in_view``: which attachment references a pulled entity holds, for any view.

The function is a plain loop for speed (every entity of every pull passes it); this checks it
against the plain statement of the rule: every well-formed reference in a register's value and
siblings, in field order, each id once (the first one kept), nothing from other field kinds."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncproto.attachments import ATTACHMENT_KEY, AttachmentRef, attachment_ref, refs_in_view
from syncproto.messages import EntityView, FieldView, SiblingView

refs = st.builds(
    AttachmentRef,
    id=st.sampled_from(["a1", "a2", "a3"]),
    size=st.integers(min_value=0, max_value=10**9),
    sha256=st.sampled_from(["0" * 64, "f" * 64]),
    media_type=st.sampled_from(["image/jpeg", "image/png"]),
)
values = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(),
    refs.map(AttachmentRef.to_value),
    st.just({ATTACHMENT_KEY: {"id": "broken"}}),  # not a well-formed reference: never counted
    st.just({"note": "a plain object"}),
)
siblings = st.lists(st.builds(SiblingView, value=values, replica=st.just("r"), n=st.just(1)), max_size=3)
fields = st.builds(
    FieldView,
    kind=st.sampled_from(["register", "register", "counter", "set", "log"]),
    value=values,
    siblings=st.one_of(st.none(), siblings),
)
views = st.builds(
    EntityView,
    collection=st.just("deliveries"),
    entity=st.just("d1"),
    seq=st.just(1),
    vv=st.just({}),
    deleted=st.just(False),
    fields=st.dictionaries(st.sampled_from(["a", "b", "photo", "signature"]), fields, max_size=4),
)


def expected(view: EntityView) -> list[AttachmentRef]:
    found: dict[str, AttachmentRef] = {}
    for field in view.fields.values():
        if field.kind == "register":
            candidates: list[Any] = [field.value, *(s.value for s in field.siblings or ())]
            for ref in filter(None, map(attachment_ref, candidates)):
                found.setdefault(ref.id, ref)
    return list(found.values())


@given(views)
def test_refs_in_view_finds_each_well_formed_reference_once_in_field_order(view: EntityView) -> None:
    assert refs_in_view(view) == expected(view)
