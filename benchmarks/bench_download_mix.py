"""Large downloads beside small requests: what a streamed attachment costs everyone else.

    python -m benchmarks.bench_download_mix [--mib 20] [--downloads 3] [--requests 300]

One server on SQLite and the filesystem blob store. Three ``--mib`` MiB attachments are
uploaded; then one client downloads them one after another (``--rounds`` downloads, the
median printed: a streamed download alone). Then ``--downloads`` clients download them in
a loop while another client makes ``--requests`` small pulls, 5 ms apart: their p50, p90
and p99 as that client sees them (``http.client``). The same pulls with no download running
are printed first, for comparison within the run.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from benchmarks.backends import open_backend
from benchmarks.lean_http import LeanHttp
from benchmarks.scenarios.attachments import MiB, download_sha256, upload
from benchmarks.server import OurServer, our_server
from benchmarks.wire import SyncClient

PULL = b'{"limit": 10}'


def _pulls(server: OurServer, headers: dict[str, str], count: int) -> list[float]:
    latencies = []
    with SyncClient(server.base, headers) as client:
        for _ in range(count):
            t0 = time.perf_counter()
            status, body = client.http.call("POST", "/v1/sync/pull", client.json_headers, PULL)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise AssertionError(f"a pull answered {status}: {body[:200]!r}")
            time.sleep(0.005)
    return sorted(latencies)


def _quantiles(latencies: list[float]) -> str:
    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return f"p50 {at(0.5):.1f} ms, p90 {at(0.9):.1f} ms, p99 {at(0.99):.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--downloads", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    with (
        TemporaryDirectory() as tmp,
        open_backend("sqlite", Path(tmp), "mix") as backend,
        our_server(backend) as server,
    ):
        tenant = server.tenant("mix")
        headers = server.headers(tenant, "dispatcher")
        with LeanHttp(server.base) as http:
            ids = [upload(http, headers, i, args.mib * MiB, MiB) for i in range(3)]
            alone = []
            for i in range(args.rounds):
                t0 = time.perf_counter()
                download_sha256(http, headers, ids[i % 3])
                alone.append((time.perf_counter() - t0) * 1000)
        print(f"one {args.mib} MiB download alone: median {statistics.median(alone):.1f} ms")
        print(f"small pulls, nothing else running: {_quantiles(_pulls(server, headers, args.requests))}")
        stop = threading.Event()
        failures: list[BaseException] = []

        def loader(i: int) -> None:
            try:
                with LeanHttp(server.base) as client:
                    while not stop.is_set():
                        download_sha256(client, headers, ids[i % 3])
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=loader, args=(i,)) for i in range(args.downloads)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        try:
            during = _pulls(server, headers, args.requests)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        if failures:
            raise failures[0]
        print(f"small pulls during {args.downloads} looping {args.mib} MiB downloads: {_quantiles(during)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
