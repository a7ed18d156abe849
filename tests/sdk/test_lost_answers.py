"""A push whose answer is lost after the server processed it: the replay is told what happened the first time."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncclient import Event, MemoryServer, RejectedChange, TransportError
from syncproto.messages import PullRequest, PullResponse, PushRequest, PushResponse
from tests.sdk.test_mock_transport import SCHEMA, mock_client


async def test_a_refused_change_whose_answer_was_lost_is_reported_when_resent(tmp_path: Path) -> None:
    """The server refused the change (a counter on a register), and the answer never reached the device. When the
    device sends it again it must hear ``rejected`` again, not ``duplicate``: the write is reported as refused
    (an event, ``rejections()``), not dropped as if it had been delivered."""
    server = MemoryServer(SCHEMA)
    lost = [True]

    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        answer = server(request)
        if isinstance(request, PushRequest) and lost[0]:
            lost[0] = False
            raise TransportError("the connection dropped after the server committed")
        return answer

    client = mock_client(tmp_path, "phone-a", handler)
    events: list[Event] = []
    client.subscribe(events.append, RejectedChange)
    refused = client.collection("deliveries").inc("dlv-1", "status", 1)  # status is a register
    with pytest.raises(TransportError):
        await client.sync()
    assert client.pending_count() == 1
    assert len(server.dead_letters) == 1

    stats = await client.sync()

    assert (stats.rejected, stats.duplicates, stats.applied) == (1, 0, 0)
    assert [(e.id, e.code) for e in events if isinstance(e, RejectedChange)] == [(refused.id, "kind_mismatch")]
    assert [r.id for r in client.rejections()] == [refused.id]
    assert client.pending_count() == 0
    assert len(server.dead_letters) == 1
    await client.aclose()
