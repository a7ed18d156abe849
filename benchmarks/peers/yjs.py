"""Peer: the Yjs WebSocket server (``@y/websocket-server`` 0.1.1 with ``yjs`` 13), run locally.

Installed with npm into ``benchmarks/.peers/yjs`` once and cached there, together
with the stock Yjs client (``y-websocket`` 3.0.0's ``WebsocketProvider``, the
client release that came with the server's split into ``@y/websocket-server``)
and ``ws`` for Node (the same ``^6.2.1`` the server itself depends on). Each run
starts the server on a free loopback port, in memory (no ``YPERSISTENCE``)::

    HOST=127.0.0.1 PORT=P node node_modules/@y/websocket-server/src/server.js    # cwd: benchmarks/.peers/yjs

and stops it by PID. The server keeps one Y.Doc per room and relays every
update it receives to every connection of the room (y-protocols sync and
awareness messages over WebSocket). The clients are ``yjs_client.mjs`` beside
this file, run with the install directory as working directory:

- :func:`fanout`: ``client_procs`` subscriber processes (``yjs_client.mjs
  subscribe``, M docs spread as evenly as possible) join a fresh room, finish
  the sync handshake and each print a ``ready`` line; then a writer process
  (``yjs_client.mjs write``, one doc) connects and makes N changes
  ``interval_ms`` apart (one transaction each: a Y.Map's ``status`` =
  ``"v<i>"`` and the send time), and every subscriber doc records when each
  change arrives. Once every subscriber process reports all its arrivals, or
  ``SETTLE_S`` after the last change, all processes are told to stop (a line
  ``stop`` on stdin, then end of stdin) and print their send and arrival times;
  this module matches them up. All times are ``process.hrtime.bigint()``,
  which on Linux is CLOCK_MONOTONIC, one clock for every process on the
  machine, so arrival minus send is a latency across processes. Splitting the
  subscribers matters: at M = 1000 one Node process spends a whole core
  decoding, and its queue would count as latency (our server's fan-out spreads
  its subscribers the same way, ``client_procs`` of them).
- :func:`text`: one Node process (``yjs_client.mjs text``, printing one JSON
  line): a writer doc replays an editing trace into a Y.Text (one Yjs
  transaction per trace transaction) while a second doc is subscribed to the
  same room; ``writer_s`` is the writer's loop, ``converged_s`` runs from its
  first edit until the subscriber holds the writer's final text. Trace
  positions count code points and Y.Text counts UTF-16 code units; the client
  converts when the trace has characters outside the BMP (``automerge-paper``
  is ASCII, so it does not).

Presence is switched off (every doc's awareness state is null) and so is
y-websocket's in-process BroadcastChannel, so every update goes through the
server. If node/npm are missing or the install fails, :class:`PeerUnavailable`
says why and the peer is skipped: never faked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.peers import npm
from benchmarks.peers.npm import PeerUnavailable
from syncserver.testing import free_port, stop

__all__ = ["PeerUnavailable", "fanout", "install", "installed_version", "is_installed", "text", "yjs_server"]

VERSION = "0.1.1"
DEPENDENCIES = {"@y/websocket-server": VERSION, "yjs": "^13.6.0", "y-websocket": "3.0.0", "ws": "^6.2.1"}
PEER_DIR = Path(__file__).resolve().parents[1] / ".peers" / "yjs"
PACKAGE = PEER_DIR / "node_modules" / "@y" / "websocket-server"
SERVER = Path("node_modules") / "@y" / "websocket-server" / "src" / "server.js"
CLIENT = Path(__file__).resolve().parent / "yjs_client.mjs"
READY_TIMEOUT_S = 30.0
RESULT_GRACE_S = 30.0
"""How much longer than the client's own time limit the subprocess may run before it is killed (text); how long
the fan-out clients have to report once told to stop."""
SETTLE_S = 10.0
"""Fan-out: how long after the writer's last change arrivals are still waited for (less once all are in)."""


def installed_version() -> str | None:
    return npm.package_version(PACKAGE)


def is_installed() -> bool:
    if installed_version() != VERSION:
        return False
    modules = PEER_DIR / "node_modules"
    return all((modules / name / "package.json").exists() for name in DEPENDENCIES)


def install() -> None:
    """``npm install @y/websocket-server@0.1.1 yjs@^13.6.0 y-websocket@3.0.0 ws@^6.2.1`` into the cache directory."""
    npm.install(PEER_DIR, "Yjs WebSocket server", DEPENDENCIES, is_installed)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailable("Yjs WebSocket server skipped: node is not installed on this machine")
    return node


@contextmanager
def yjs_server(tmp: Path) -> Iterator[str]:
    """Start the Yjs WebSocket server on a free loopback port; yield ``ws://127.0.0.1:PORT``; stop it by PID."""
    if not is_installed():
        raise PeerUnavailable(f"Yjs WebSocket server {VERSION} is not installed in {PEER_DIR}")
    node = _node()
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    for name in ("YPERSISTENCE", "CALLBACK_URL", "GC"):  # in memory, no callbacks, default garbage collection
        env.pop(name, None)
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"yjs-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([node, str(SERVER)], cwd=PEER_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, proc, log)
            yield f"ws://127.0.0.1:{port}"
        finally:
            stop(proc)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerUnavailable(f"Yjs WebSocket server exited at start: {log.read_text(errors='replace')[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise PeerUnavailable(f"Yjs WebSocket server was not accepting connections within {READY_TIMEOUT_S:.0f} s")


def fanout(
    base_url: str,
    subscribers: int,
    changes: int,
    interval_ms: float,
    timeout_s: float = 120,
    client_procs: int = 2,
) -> dict[str, Any]:
    """M subscribers spread over ``client_procs`` Node processes, one writer in another: N changes in a fresh room.

    Returns ``subscribers``, ``changes``, ``interval_ms``, ``client_procs`` (as used: at most M),
    ``latencies_ms`` (all M x N arrivals, arrival minus the writer's change, ms), ``missing``, ``duplicates``,
    ``unexpected``, ``p50_ms``, ``p99_ms``, ``max_ms``, ``connect_s`` (from the first subscriber process
    starting to connect until the last one has all its docs synced) and ``reconnects`` (all processes).
    Changes still missing ``SETTLE_S`` after the writer made the last one count in ``missing``.
    ``timeout_s`` bounds connecting and writing; stopping and collecting results get ``RESULT_GRACE_S`` more.
    """
    if subscribers <= 0 or changes <= 0 or interval_ms < 0:
        raise ValueError("fanout needs subscribers > 0, changes > 0 and interval_ms >= 0")
    procs = max(1, min(int(client_procs), subscribers))
    shares = [subscribers // procs + (1 if k < subscribers % procs else 0) for k in range(procs)]
    room = f"fanout-{uuid.uuid4().hex[:12]}"
    backstop = timeout_s + SETTLE_S + 2 * RESULT_GRACE_S  # each client's own time limit; yjs.py stops them first
    deadline = time.monotonic() + timeout_s
    with _Clients(base_url, room, backstop) as clients:
        subs = [
            clients.start(f"subscribe#{k}", ["--subscribers", str(share), "--changes", str(changes)])
            for k, share in enumerate(shares)
        ]
        ready = clients.wait_for("ready", subs, deadline, f"{subscribers} subscribers to connect and sync")
        writer = clients.start("write", ["--changes", str(changes), "--interval-ms", f"{interval_ms:g}"])
        done = clients.wait_for("done", [writer], deadline, f"the writer's {changes} changes")
        sent_us: list[int] = done[writer]["sent_us"]
        # Until every subscriber process has all its arrivals, or the grace period is over.
        clients.wait_for("complete", subs, time.monotonic() + SETTLE_S, "", required=False)
        results = clients.stop_all(time.monotonic() + RESULT_GRACE_S)
    latencies = [
        round((at - sent) / 1000, 3)
        for name in subs
        for mine in results[name]["arrivals_us"]
        for at, sent in zip(mine, sent_us, strict=True)
        if at >= 0
    ]
    ordered = sorted(latencies)
    return {
        "subscribers": subscribers,
        "changes": changes,
        "interval_ms": interval_ms,
        "client_procs": procs,
        "latencies_ms": latencies,
        "missing": subscribers * changes - len(latencies),
        "duplicates": sum(int(results[name]["duplicates"]) for name in subs),
        "unexpected": sum(int(results[name]["unexpected"]) for name in subs),
        "p50_ms": _percentile(ordered, 0.5),
        "p99_ms": _percentile(ordered, 0.99),
        "max_ms": ordered[-1] if ordered else None,
        "connect_s": round(
            (max(ready[n]["ready_us"] for n in subs) - min(ready[n]["start_us"] for n in subs)) / 1e6, 3
        ),
        "reconnects": sum(int(result["reconnects"]) for result in results.values()),
    }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` of all values at or below it."""
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


class _Clients:
    """``yjs_client.mjs`` processes of one fan-out run, each named, on one room.

    Each prints JSON events a line on stdout; a thread per process puts them on a shared queue, another keeps
    its stderr for the error message. On leaving, any process still running is killed by PID.
    """

    def __init__(self, base_url: str, room: str, timeout_s: float) -> None:
        if not is_installed():
            raise PeerUnavailable(f"Yjs WebSocket server {VERSION} is not installed in {PEER_DIR}")
        self.node = _node()
        self.common = ["--url", base_url, "--room", room, "--timeout-s", f"{timeout_s:g}"]
        self.env = {**os.environ, "NODE_PATH": str(PEER_DIR / "node_modules")}
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.stderr: dict[str, list[str]] = {}
        self.threads: list[threading.Thread] = []
        self.events: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
        self.got: dict[str, dict[str, dict[str, Any]]] = {}

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        failed = exc[0] is not None
        for proc in self.procs.values():
            if proc.poll() is None:
                if not failed:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for thread in self.threads:
            thread.join(timeout=5)

    def start(self, name: str, args: list[str]) -> str:
        """Start ``yjs_client.mjs <mode> ARGS`` (the mode is ``name`` up to a ``#``); returns ``name``."""
        mode = name.split("#")[0]
        self.stderr[name] = []
        self.got[name] = {}
        proc = subprocess.Popen(
            [self.node, str(CLIENT), mode, *args, *self.common],
            cwd=PEER_DIR,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs[name] = proc
        for target in (self._read, self._read_stderr):
            thread = threading.Thread(target=target, args=(name, proc), daemon=True)
            thread.start()
            self.threads.append(thread)
        return name

    def _read(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and "event" in event:
                    self.events.put((name, event))
        self.events.put((name, None))

    def _read_stderr(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr[name].append(line)

    def wait_for(
        self, event: str, names: list[str], deadline: float, what: str, required: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Until each of ``names`` has printed ``event``; returns name -> that event.

        Past ``deadline`` that raises RuntimeError, or (``required=False``) returns what has come. A process
        that ends its output before its ``result``, any of them, raises RuntimeError with its stderr.
        """
        pending = [name for name in names if event not in self.got[name]]
        while pending:
            try:
                name, found = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if not required:
                    break
                raise RuntimeError(
                    f"yjs_client.mjs: timed out waiting for {what} ({', '.join(pending)} not there)"
                    + "".join(f"\n{n}: {self._tail(n)}" for n in pending if self.stderr[n])
                ) from None
            if found is None:
                if "result" in self.got[name]:  # it has reported and exited, as it should once stopped
                    continue
                proc = self.procs[name]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                raise RuntimeError(f"yjs_client.mjs {name} failed (exit {proc.poll()}): {self._tail(name)}")
            self.got[name][found["event"]] = found
            if found["event"] == event and name in pending:
                pending.remove(name)
        return {name: self.got[name][event] for name in names if event in self.got[name]}

    def stop_all(self, deadline: float) -> dict[str, dict[str, Any]]:
        """Tell every process to stop (a line ``stop``, then end of stdin); returns name -> its ``result``."""
        for proc in self.procs.values():
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write("stop\n")
                    proc.stdin.close()
        return self.wait_for("result", list(self.procs), deadline, "the clients' results")

    def _tail(self, name: str) -> str:
        return _shown("".join(self.stderr[name]))


def _shown(stderr: str) -> str:
    """The message first, then the tail."""
    err = stderr.strip().splitlines()
    return "\n".join(err if len(err) <= 15 else [*err[:5], "...", *err[-10:]])


def text(base_url: str, trace_path: Path, edits: int = 0, timeout_s: float = 600) -> dict[str, Any]:
    """Replay the first ``edits`` patches of a trace (0: all) from a writer doc, a second doc subscribed.

    Returns ``edits``, ``writer_s``, ``converged_s``, ``edits_per_s`` (edits / converged_s),
    ``final_equals_end`` (writer's text equals ``endContent``, or the replayed prefix's text),
    ``subscriber_equals_writer``, ``final_length``, ``utf16_conversion`` and ``reconnects``.
    """
    args = ["text", "--trace", str(Path(trace_path).resolve()), "--edits", str(edits)]
    return _run_client(base_url, f"text-{uuid.uuid4().hex[:12]}", args, timeout_s)


def _run_client(base_url: str, room: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    if not is_installed():
        raise PeerUnavailable(f"Yjs WebSocket server {VERSION} is not installed in {PEER_DIR}")
    argv = [_node(), str(CLIENT), *args, "--url", base_url, "--room", room, "--timeout-s", f"{timeout_s:g}"]
    env = {**os.environ, "NODE_PATH": str(PEER_DIR / "node_modules")}
    try:
        out = subprocess.run(
            argv,
            cwd=PEER_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s + RESULT_GRACE_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"yjs_client.mjs {args[0]} was killed after {timeout_s + RESULT_GRACE_S:g} s") from exc
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"yjs_client.mjs {args[0]} failed (exit {out.returncode}): {_shown(out.stderr)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
