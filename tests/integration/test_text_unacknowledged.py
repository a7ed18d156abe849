"""A text update that depends on content the server has not acknowledged is refused, not half-applied.

The four steps a new user found over plain HTTP: device A inserts text and
holds it; device B learns A's Yjs update out of band, deletes part of it and
pushes. Yjs would keep B's deletion "pending" and the server's re-encoding
would drop it, so B's push must be rejected (``invalid_text_update``, a dead
letter), not answered ``applied``. Once A's insert is on the server, B's resend
applies and every replica reads the same text.
"""

from __future__ import annotations

import base64

from pycrdt import Doc, Text

from syncproto.crdt import text
from syncproto.crdt.text import TextState
from tests.integration.conftest import Server, change


def notes_change(n: int, update: bytes) -> dict[str, object]:
    return change(n, "dlv-1", [{"op": "text", "field": "notes", "update": base64.b64encode(update).decode()}])


async def test_a_delete_of_content_the_server_lacks_is_a_dead_letter_until_the_content_arrives(
    server: Server,
) -> None:
    tenant = await server.tenant()
    h = server.headers(tenant, "dispatcher-1")

    # 1. A inserts and does not push yet.
    doc_a: Doc[object] = Doc()
    insert = text.splice(doc_a, 0, 0, "keep DELETE-ME keep")
    # 2. B learns A's update out of band, deletes "DELETE-ME " and pushes.
    doc_b: Doc[object] = Doc()
    doc_b.apply_update(insert)
    delete = text.splice(doc_b, 5, 10, "")
    assert str(doc_b.get(text.ROOT, type=Text)) == "keep keep"
    early = await server.push(h, "phone-b", [notes_change(1, delete)])
    assert early[0]["status"] == "rejected"
    assert early[0]["error"]["code"] == "invalid_text_update"
    dead = await server.app.state.store.dead_letters(tenant, 10)
    assert [(d.replica_id, d.n, d.code) for d in dead] == [("phone-b", 1, "invalid_text_update")]
    pulled, _ = await server.pull_all(h)
    assert pulled == []  # nothing of B's change was stored

    # 3. A pushes its insert.
    res = await server.push(h, "phone-a", [notes_change(1, insert)])
    assert res[0]["status"] == "applied"
    # 4. B resends its deletion as its next change; now it applies in full.
    res = await server.push(h, "phone-b", [notes_change(2, delete)])
    assert res[0]["status"] == "applied"

    entity = (await server.client.get("/v1/entities/deliveries/dlv-1", headers=h)).json()
    assert entity["fields"]["notes"]["value"] == "keep keep"
    pulled, _ = await server.pull_all(h)
    notes = pulled[0]["fields"]["notes"]
    assert notes["value"] == "keep keep"
    # Every replica that merges the server's state reads what the server reads.
    server_state = base64.b64decode(notes["update"])
    for doc in (doc_a, doc_b):
        doc.apply_update(server_state)
        assert str(doc.get(text.ROOT, type=Text)) == "keep keep"
    assert text.value(TextState(server_state)) == "keep keep"
