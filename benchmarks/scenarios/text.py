"""6. Text: replay a real editing trace through a collaborative text field, then read it back.

The trace (``shared/data/editing-traces/automerge-paper.json.gz``: Martin
Kleppmann writing a LaTeX paper, 259,778 single-character-ish edits; from
Joseph Gentle's editing-traces collection, originally automerge-perf; CC BY
4.0) is replayed by one writer client: every patch goes through
``syncproto.crdt.text.splice`` (code points to UTF-8, a Yjs update per edit),
and each change carries the merged update of ``edits_per_change`` consecutive
edits, pushed ``changes_per_push`` at a time into ``deliveries/<id>.notes``.
A second client then pulls the entity and must find exactly ``endContent``
(or, with ``edits`` set, the text those first edits produce), both as the
pulled value and as the text of the pulled Yjs state loaded into its own doc.

Reported: edits/s of the writer's ``splice`` calls (client CPU), edits/s the
server merged (pushes of pre-built changes), end to end, and the reader's pull.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from typing import Any

from pycrdt import Doc, Text

from benchmarks.results import ROOT, Result
from benchmarks.runner import Context, Skip
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


def writer_changes(edits: list[tuple[int, int, str]], per_change: int) -> tuple[list[Json], float]:
    """One change per ``per_change`` edits, each made with ``splice``; (changes, seconds of client work)."""
    doc: Doc[Any] = Doc()
    doc.get(TEXT_ROOT, type=Text)
    changes: list[Json] = []
    wall = now_ms()
    t0 = time.perf_counter()
    for first in range(0, len(edits), per_change):
        before = doc.get_state()
        for pos, deleted, inserted in edits[first : first + per_change]:
            splice(doc, pos, deleted, inserted)
        update = base64.b64encode(doc.get_update(before)).decode()
        n = len(changes) + 1
        changes.append(change(n, ENTITY, [{"op": "text", "field": "notes", "update": update}], (wall, n)))
    return changes, time.perf_counter() - t0


def run(ctx: Context, result: Result) -> None:
    trace = load_trace(str(ctx.params["trace"]))
    edits = patches(trace, int(ctx.params["edits"]))
    complete = len(edits) == sum(len(t["patches"]) for t in trace["txns"])
    want = expected_text(trace, edits, complete)
    per_change, per_push = int(ctx.params["edits_per_change"]), int(ctx.params["changes_per_push"])
    result.params["edits_replayed"] = len(edits)
    result.notes.append(
        "Trace: automerge-paper (Martin Kleppmann; editing-traces collection by Joseph Gentle, originally "
        "automerge-perf), CC BY 4.0."
    )
    task = ctx.progress.add_task(f"text: {len(edits):,} edits", total=ctx.reps)
    with our_server(ctx.backend) as server:
        for rep in range(ctx.reps):
            tenant = server.tenant("text")
            changes, splice_s = writer_changes(edits, per_change)
            bodies = push_bodies(f"writer-{rep}", changes, per_push)
            with SyncClient(server.base, server.headers(tenant, "writer", "dispatcher")) as writer:
                push_s = writer.push_all(bodies)
            with SyncClient(server.base, server.headers(tenant, "reader", "dispatcher")) as reader:
                t0 = time.perf_counter()
                pulled: list[Json] = []
                reader.pull_to_end(None, 1000, on_page=pulled.extend)
                pull_s = time.perf_counter() - t0
            _check(result, pulled, want, complete)
            result.add("writer splice (client)", len(edits) / splice_s, "edits/s")
            result.add("server merge (push)", len(edits) / push_s, "edits/s")
            result.add("end to end (splice + push)", len(edits) / (splice_s + push_s), "edits/s")
            result.add("reader pull of the final document", pull_s * 1000, "ms")
            ctx.progress.advance(task)


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
