"""Protocol v1 over HTTP for benchmarks: push bodies encoded before the clock starts, pulls to the end.

Responses are decoded with msgspec, as a real client would, so the client's
decoding cost is part of what is measured (on both sides of every comparison).
Every push result is checked: a benchmark that silently lost changes would
report a flattering, meaningless number.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import msgspec

from benchmarks.lean_http import LeanHttp

JSON_HEADERS = {"Content-Type": "application/json"}
TIMEOUT = httpx.Timeout(300.0, connect=60.0)
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

Json = dict[str, Any]
OnPage = Callable[[list[Json]], None]
MAX_BODY_BYTES = 3 * 1024 * 1024
"""Below the server's default 4 MiB body limit (``SYNC_MAX_BODY_BYTES``)."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_ATTEMPTS = 10
RETRY_BASE_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 5.0


class PushNotApplied(RuntimeError):
    """A push came back with results other than the ones the benchmark expects."""


def _not_reset(page: Json) -> None:
    """A benchmark device is never told to reset: if it is, it would measure another workload than it says."""
    if page.get("reset"):
        raise PushNotApplied("the server answered reset: this device's cursor is not one of its own scope")


def change(
    n: int,
    entity: str,
    ops: list[Json],
    hlc: tuple[int, int],
    context: dict[str, int] | None = None,
    collection: str = "deliveries",
    change_id: str | None = None,
) -> Json:
    return {
        "id": change_id or uuid.uuid4().hex,
        "n": n,
        "collection": collection,
        "entity": entity,
        "hlc": list(hlc),
        "context": context or {},
        "ops": ops,
    }


def push_bodies(replica: str, changes: list[Json], batch: int, max_bytes: int = MAX_BODY_BYTES) -> list[bytes]:
    """Encode ``changes`` as push requests of at most ``batch`` changes and ``max_bytes`` bytes each."""
    head, tail = b'{"replica":' + _encode(replica) + b',"changes":[', b"]}"
    bodies: list[bytes] = []
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for item in changes:
        encoded = _encode(item)
        if parts and (len(parts) == batch or size + len(encoded) + 1 > max_bytes):
            bodies.append(head + b",".join(parts) + tail)
            parts, size = [], len(head) + len(tail)
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        bodies.append(head + b",".join(parts) + tail)
    return bodies


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_results(content: bytes, expect: Iterable[str] = ("applied",)) -> list[Json]:
    results: list[Json] = _decode(content)["results"]
    allowed = set(expect)
    bad = [r for r in results if r["status"] not in allowed]
    if bad:
        raise PushNotApplied(f"{len(bad)} of {len(results)} changes not {sorted(allowed)}: {bad[:3]}")
    return results


@dataclass
class PullEnd:
    cursor: str | None
    entities: int
    requests: int


class SyncClient:
    """A blocking client on one keep-alive connection (sequential pushes and pulls).

    It speaks through ``benchmarks.lean_http`` (the standard library's ``http.client``): one device's
    sequential requests wait on every microsecond the client spends, and httpx's pure-Python parsing
    cost about as much per small push as the server's work (ADR 0035).
    """

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.http = LeanHttp(base, timeout=TIMEOUT.read or 300.0)
        self.headers = dict(headers)
        self.json_headers = {**headers, **JSON_HEADERS}

    def __enter__(self) -> SyncClient:
        return self

    def use(self, headers: dict[str, str]) -> None:
        """Send the next requests with ``headers`` (another device's token on this connection)."""
        self.headers = dict(headers)
        self.json_headers = {**headers, **JSON_HEADERS}

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _post(self, path: str, body: bytes) -> bytes:
        status, content = self.http.call("POST", path, self.json_headers, body)
        if status != 200:
            raise PushNotApplied(f"POST {path} answered {status}: {content[:300]!r}")
        return content

    def _get(self, path: str, params: dict[str, str | int] | None = None) -> bytes:
        status, content = self.http.call("GET", f"{path}?{urlencode(params)}" if params else path, self.headers)
        if status != 200:
            raise PushNotApplied(f"GET {path} answered {status}: {content[:300]!r}")
        return content

    def push(self, body: bytes, expect: Iterable[str] = ("applied",)) -> list[Json]:
        return check_results(self._post("/v1/sync/push", body), expect)

    def push_all(self, bodies: list[bytes]) -> float:
        """Push every body in order; seconds elapsed."""
        t0 = time.perf_counter()
        for body in bodies:
            self.push(body)
        return time.perf_counter() - t0

    def pull_to_end(
        self, cursor: str | None = None, limit: int = 1000, on_page: OnPage | None = None, up_to: int | None = None
    ) -> PullEnd:
        """Pull page by page until ``more`` is false, or until at least ``up_to`` entities have arrived."""
        count = requests = 0
        while True:
            page = _decode(self._post("/v1/sync/pull", _encode({"cursor": cursor, "limit": limit})))
            _not_reset(page)
            requests += 1
            count += len(page["changes"])
            if on_page is not None:
                on_page(page["changes"])
            cursor = page["cursor"]
            if not page["more"] or (up_to is not None and count >= up_to):
                return PullEnd(cursor, count, requests)

    def conflicts(self, kind: str | None = None, page_size: int = 500) -> list[Json]:
        """The whole conflict log, page by page (keyset pagination with ``after``)."""
        found: list[Json] = []
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if kind:
                params["kind"] = kind
            if after:
                params["after"] = after
            page = _decode(self._get("/v1/conflicts", params))
            found += page["conflicts"]
            after = page["next"]
            if after is None:
                return found

    def entity(self, collection: str, entity: str) -> Json:
        view: Json = _decode(self._get(f"/v1/entities/{collection}/{entity}"))
        return view


@dataclass
class Retries:
    """What a fleet of devices retried, by HTTP status (``"network"`` for transport errors)."""

    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class Answer:
    """A response read whole (status, the ``Retry-After`` header, body)."""

    status_code: int
    retry_after: str | None
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class AsyncSyncClient:
    """A non-blocking client: one per simulated device, sharing nothing but the server.

    Like a real device (PROTOCOL.md, launch checklist), it retries 429, 5xx and
    network errors with exponential backoff and jitter, honouring
    ``Retry-After``; replays are safe. Every retry is counted in ``retries``, so
    a benchmark reports them instead of hiding them.
    """

    def __init__(self, http: aiohttp.ClientSession, headers: dict[str, str], retries: Retries | None = None) -> None:
        self.http = http
        self.headers = {**JSON_HEADERS, **headers}
        self.retries = retries if retries is not None else Retries()

    async def _post(self, path: str, body: bytes) -> Answer:
        for attempt in range(RETRY_ATTEMPTS):
            try:
                async with self.http.post(path, data=body, headers=self.headers) as response:
                    r = Answer(response.status, response.headers.get("retry-after"), await response.read())
            except (aiohttp.ClientError, TimeoutError):
                status, wait = "network", None
            else:
                if r.status_code not in RETRY_STATUSES or attempt == RETRY_ATTEMPTS - 1:
                    return r
                status, wait = str(r.status_code), r.retry_after
            self.retries.add(status)
            delay = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2**attempt) * random.uniform(0.5, 1.5)
            if wait and wait.isdigit():
                delay = max(delay, float(wait))
            await asyncio.sleep(delay)
        raise PushNotApplied(f"{path}: no answer after {RETRY_ATTEMPTS} attempts")

    async def push(self, body: bytes, expect: Iterable[str] = ("applied",)) -> list[Json]:
        r = await self._post("/v1/sync/push", body)
        if r.status_code != 200:
            raise PushNotApplied(f"push answered {r.status_code}: {r.text[:300]}")
        return check_results(r.content, expect)

    async def pull_to_end(self, cursor: str | None = None, limit: int = 1000, on_page: OnPage | None = None) -> PullEnd:
        count = requests = 0
        while True:
            r = await self._post("/v1/sync/pull", _encode({"cursor": cursor, "limit": limit}))
            if r.status_code != 200:
                raise PushNotApplied(f"pull answered {r.status_code}: {r.text[:300]}")
            page = _decode(r.content)
            _not_reset(page)
            requests += 1
            count += len(page["changes"])
            if on_page is not None:
                on_page(page["changes"])
            cursor = page["cursor"]
            if not page["more"]:
                return PullEnd(cursor, count, requests)


def async_http(base: str, connections: int) -> aiohttp.ClientSession:
    """The many-device load generator's HTTP client: aiohttp, one keep-alive connection per device.

    Not httpx: with a thousand connections, its pool walks every connection on each request and response,
    and h11 parses in pure Python. The storm's load generator then spent its whole core on itself while
    the server idled (ADR 0035), which measured the client, not the server.
    """
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT.read, connect=TIMEOUT.connect)
    return aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout, auto_decompress=False)
