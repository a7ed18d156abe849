"""6. Text: replay a real editing trace through a collaborative text field, then read it back.

The trace (``shared/data/editing-traces/automerge-paper.json.gz``: Martin
Kleppmann writing a LaTeX paper, 259,778 single-character-ish edits; from
Joseph Gentle's editing-traces collection, originally automerge-perf; CC BY
4.0) is replayed by one writer client: every patch goes through
``syncproto.crdt.text.splice`` (code points to UTF-8, a Yjs update per edit),
and each change carries the merged update of ``edits_per_change`` consecutive
edits, pushed ``changes_per_push`` at a time into ``deliveries/<id>.notes``.
A second client is subscribed over the live channel (``/v1/sync/ws``) for the
whole replay and must end with exactly ``endContent`` (or, with ``edits`` set,
the text those first edits produce); a third client then pulls the entity and
must find the same, both as the pulled value and as the text of the pulled
Yjs state loaded into its own doc.

Reported: edits/s of the writer's ``splice`` calls (client CPU), edits/s the
server merged (pushes of pre-built changes), end to end, edits/s from the
first splice until the subscriber holds the final text, and the reader's pull.

**Peer: the Yjs WebSocket server** (``@y/websocket-server`` 0.1.1, ``yjs``
13): the same edits applied to a Y.Text by a writer doc, with a second doc
subscribed to the room; edits/s until the subscriber holds the final text.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from typing import Any

from pycrdt import Doc, Text, merge_updates

from benchmarks.peers import yjs
from benchmarks.results import ROOT, Result
from benchmarks.runner import Context, Skip, order
from benchmarks.server import our_server
from benchmarks.wire import Json, SyncClient, change, now_ms, push_bodies
from syncproto.crdt.text import ROOT as TEXT_ROOT
from syncproto.crdt.text import splice

TRACES = ROOT.parent / "shared" / "data" / "editing-traces"
DEFAULTS = {"trace": "automerge-paper", "edits": 0, "edits_per_change": 10, "changes_per_push": 500, "reps": 1}
QUICK = {"trace": "automerge-paper", "edits": 2_000, "edits_per_change": 1, "changes_per_push": 500, "reps": 1}
ENTITY = "paper"


def load_trace(name: str) -> dict[str, Any]:
    path = TRACES / f"{name}.json.gz"
    if not path.exists():
        raise Skip(f"the editing trace {path} is not there (it lives in the shared/ folder beside the repository)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        trace: dict[str, Any] = json.load(f)
    return trace


def patches(trace: dict[str, Any], limit: int) -> list[tuple[int, int, str]]:
    found = [(int(p[0]), int(p[1]), str(p[2])) for t in trace["txns"] for p in t["patches"]]
    return found[:limit] if limit else found


def expected_text(trace: dict[str, Any], edits: list[tuple[int, int, str]], complete: bool) -> str:
    if complete:
        return str(trace["endContent"])
    text = str(trace.get("startContent", ""))
    for pos, deleted, inserted in edits:
        text = text[:pos] + inserted + text[pos + deleted :]
    return text


def writer_changes(edits: list[tuple[int, int, str]], per_change: int) -> tuple[list[Json], float, int]:
    """One change per ``per_change`` edits, each made with ``splice``.

    Returns the changes, the seconds of client work, and the largest update of a
    one-character edit (a keystroke or a backspace) anywhere in the trace.
    """
    doc: Doc[Any] = Doc()
    doc.get(TEXT_ROOT, type=Text)
    changes: list[Json] = []
    largest = 0
    wall = now_ms()
    t0 = time.perf_counter()
    for first in range(0, len(edits), per_change):
        # Each splice returns its own transaction's update; one change carries their merge.
        batch = edits[first : first + per_change]
        updates = [splice(doc, pos, deleted, inserted) for pos, deleted, inserted in batch]
        largest = max([largest, *(len(u) for u, (_, d, i) in zip(updates, batch, strict=True) if d + len(i) == 1)])
        update = base64.b64encode(updates[0] if len(updates) == 1 else merge_updates(*updates)).decode()
        n = len(changes) + 1
        changes.append(change(n, ENTITY, [{"op": "text", "field": "notes", "update": update}], (wall, n)))
    return changes, time.perf_counter() - t0, largest


def run(ctx: Context, result: Result) -> None:
    trace = load_trace(str(ctx.params["trace"]))
    edits = patches(trace, int(ctx.params["edits"]))
    complete = len(edits) == sum(len(t["patches"]) for t in trace["txns"])
    want = expected_text(trace, edits, complete)
    result.params["edits_replayed"] = len(edits)
    result.notes.append(
        "Trace: automerge-paper (Martin Kleppmann; editing-traces collection by Joseph Gentle, originally "
        "automerge-perf), CC BY 4.0."
    )
    peer = ctx.yjs_ready(result)
    task = ctx.progress.add_task(f"text: {len(edits):,} edits", total=ctx.reps * (2 if peer else 1))
    for rep in range(ctx.reps):
        for side in order(rep, ["ours", "yjs"] if peer else ["ours"]):
            if side == "ours":
                _ours(ctx, result, edits, want, complete, rep)
            else:
                _yjs(ctx, result, len(edits))
            ctx.progress.advance(task)
    if peer:
        ours = result.figures.get("subscriber holds the final text")
        theirs = result.figures.get("Yjs: subscriber holds the final text")
        if ours and theirs:
            for a, b in zip(ours, theirs, strict=False):
                result.ratio("subscriber edits/s, ours ÷ Yjs", a, b)


def _ours(ctx: Context, result: Result, edits: list[tuple[int, int, str]], want: str, complete: bool, rep: int) -> None:
    per_change, per_push = int(ctx.params["edits_per_change"]), int(ctx.params["changes_per_push"])
    with our_server(ctx.backend, log_name=f"server-text-{rep}.log") as server:
        tenant = server.tenant("text")
        changes, splice_s, largest = writer_changes(edits, per_change)
        bodies = push_bodies(f"writer-{rep}", changes, per_push)
        with Subscriber(server.base, server.token(tenant, "subscriber"), want) as subscriber:
            with SyncClient(server.base, server.headers(tenant, "writer", "dispatcher")) as writer:
                t0 = time.perf_counter()
                push_s = writer.push_all(bodies)
            caught_up_s = subscriber.wait(timeout_s=300) - t0
        with SyncClient(server.base, server.headers(tenant, "reader", "dispatcher")) as reader:
            t1 = time.perf_counter()
            pulled: list[Json] = []
            reader.pull_to_end(None, 1000, on_page=pulled.extend)
            pull_s = time.perf_counter() - t1
    _check(result, pulled, want, complete)
    result.check("live subscriber ends with the final text", True, subscriber.text == want)
    result.add("writer splice (client)", len(edits) / splice_s, "edits/s")
    result.add("largest one-character splice update", largest, "bytes")
    result.add("server merge (push)", len(edits) / push_s, "edits/s")
    result.add("end to end (splice + push)", len(edits) / (splice_s + push_s), "edits/s")
    # Writer's work included, as in the Yjs peer's figure (its writer applies the edits in the same clock).
    result.add("subscriber holds the final text", len(edits) / (splice_s + caught_up_s), "edits/s")
    result.add("reader pull of the final document", pull_s * 1000, "ms")


def _yjs(ctx: Context, result: Result, edits: int) -> None:
    trace = TRACES / f"{ctx.params['trace']}.json.gz"
    with yjs.yjs_server(ctx.tmp) as url:
        found = yjs.text(url, trace, edits, timeout_s=600)
    result.check("Yjs: writer's text equals the expected text", True, found["final_equals_end"])
    result.check("Yjs: subscriber's text equals the writer's", True, found["subscriber_equals_writer"])
    result.add("Yjs: writer applies the edits", edits / float(found["writer_s"]), "edits/s")
    result.add("Yjs: subscriber holds the final text", float(found["edits_per_s"]), "edits/s")


class Subscriber:
    """A live-channel client (``websockets``, in a thread) that keeps the latest text of ``ENTITY``."""

    def __init__(self, base: str, token: str, want: str) -> None:
        self.url = base.replace("http://", "ws://") + "/v1/sync/ws"
        self.token = token
        self.want = want
        self.text: str | None = None
        self.done = threading.Event()
        self.done_at = 0.0
        self._thread = threading.Thread(target=self._listen, name="text-subscriber", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Subscriber:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the live subscriber did not reach synced within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait(self, timeout_s: float) -> float:
        """When the subscriber first held the wanted text (``perf_counter``)."""
        deadline = time.monotonic() + timeout_s
        while not self.done.wait(0.5):
            if self._error is not None:
                raise RuntimeError(f"the live subscriber failed: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                raise RuntimeError(f"the live subscriber did not get the final text within {timeout_s:g} s")
        return self.done_at

    def _listen(self) -> None:
        from websockets.sync.client import connect

        try:
            headers = {"Authorization": f"Bearer {self.token}"}
            with connect(self.url, additional_headers=headers, compression=None, max_size=None) as ws:
                ws.send('{"type":"hello","versions":[1]}')
                while not self._stop.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    message = json.loads(raw)
                    if message.get("type") == "ping":  # answer, or the server closes us as idle (4408)
                        ws.send(json.dumps({"type": "pong", "id": message.get("id")}))
                    elif message.get("type") == "synced":
                        self._ready.set()
                    elif message.get("type") == "changes":
                        for view in message["changes"]:
                            if view["entity"] == ENTITY:
                                self.text = view["fields"]["notes"]["value"]
                        if self.text == self.want and not self.done.is_set():
                            self.done_at = time.perf_counter()
                            self.done.set()
        except BaseException as exc:  # surfaced to the scenario through __enter__ / wait
            self._error = exc
            self._ready.set()


def _check(result: Result, pulled: list[Json], want: str, complete: bool) -> None:
    views = [v for v in pulled if v["entity"] == ENTITY]
    result.check("entities pulled by the reader", 1, len(views))
    notes = views[0]["fields"]["notes"]
    what = "endContent" if complete else "the text of the replayed prefix"
    got = notes["value"]
    result.check(f"pulled text equals {what} (length)", len(want), len(got))
    result.check(f"pulled text equals {what}", True, got == want)
    doc: Doc[Any] = Doc()
    text = doc.get(TEXT_ROOT, type=Text)
    doc.apply_update(base64.b64decode(notes["update"]))
    result.check("reader's own Yjs doc has the same text", True, str(text) == want)
