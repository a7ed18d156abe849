"""Text edits count code points for the user, whatever UTF-8 bytes Yjs counts underneath."""

from __future__ import annotations

import pytest

from syncclient import SyncClient
from tests.sdk.conftest import InProcServer

BASE_TEXT = "café 😀 世界"  # é: 2 bytes, 😀: 4 bytes, 世界: 3 bytes each


async def notes(client: SyncClient) -> str:
    record = client.collection("deliveries").get("dlv-1")
    assert record is not None
    value = record["notes"]
    assert isinstance(value, str)
    return value


async def test_concurrent_edits_around_multibyte_characters_converge(server: InProcServer) -> None:
    a = server.client("phone-a")
    b = server.client("phone-b")
    a.collection("deliveries").edit_text("dlv-1", "notes", 0, 0, BASE_TEXT)
    await a.sync()
    await b.sync()
    assert await notes(b) == BASE_TEXT

    # Offline on both: A inserts after "café" and after the emoji; B replaces 世界 and prepends.
    a.collection("deliveries").edit_text("dlv-1", "notes", 4, 0, "!")  # "café!"
    a.collection("deliveries").edit_text("dlv-1", "notes", 7, 0, "🚚")  # after "😀" (now at index 6)
    b.collection("deliveries").edit_text("dlv-1", "notes", 7, 2, "日本")
    b.collection("deliveries").edit_text("dlv-1", "notes", 0, 0, "é ")
    assert await notes(a) == "café! 😀🚚 世界"  # optimistic, code-point positions
    assert await notes(b) == "é café 😀 日本"

    await a.sync()
    await b.sync()
    await a.sync()
    merged = "é café! 😀🚚 日本"
    assert await notes(a) == merged
    assert await notes(b) == merged
    assert (await server.views())[("deliveries", "dlv-1")].fields["notes"].value == merged
    await a.aclose()
    await b.aclose()


async def test_deleting_an_emoji_deletes_one_code_point(server: InProcServer) -> None:
    a = server.client("phone-a")
    d = a.collection("deliveries")
    d.edit_text("dlv-1", "notes", 0, 0, "a😀b👍🏽c")  # 👍🏽 is two code points: thumbs up + skin tone
    d.edit_text("dlv-1", "notes", 1, 1, "")
    assert await notes(a) == "ab👍🏽c"
    d.edit_text("dlv-1", "notes", 3, 1, "")  # the skin-tone modifier only
    await a.sync()
    assert await notes(a) == "ab👍c"
    with pytest.raises(IndexError):
        d.edit_text("dlv-1", "notes", 5, 0, "x")  # past the end: 4 code points
    await a.aclose()
