"""Push and pull throughput beside the storage engine's raw rate: the ``ingest`` and ``pull`` scenarios.

    python -m benchmarks.bench_push_pull --backend sqlite --changes 20000 --reps 3
    python -m benchmarks.bench_push_pull --backend postgres [--pg-url postgresql+psycopg://postgres@127.0.0.1/test]

Kept as the short entry point it has always been; the logic now lives in
``benchmarks/scenarios/ingest.py`` and ``pull.py`` (run them with
``python -m benchmarks run ingest|pull``). Here ingest runs with pushes of 500
only. Raw baselines and the PouchDB-server peer (when installed) run in the
same repetitions, alternating (A B A B), and results go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.results import RESULTS_DIR
from benchmarks.runner import Options, run_scenario
from benchmarks.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--changes", type=int, default=20_000, help="entities created, then updated; and pulled")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pg-url", default=None, help="an existing database instead of a private one")
    parser.add_argument("--no-peers", action="store_true", help="skip PouchDB-server")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    failed = False
    for name, overrides in (
        ("ingest", {"entities": args.changes, "batches": "500", "reps": args.reps}),
        ("pull", {"entities": args.changes, "reps": args.reps}),
    ):
        options = Options(
            backend=args.backend,
            overrides=overrides,
            pg_url=args.pg_url,
            peers=not args.no_peers,
            results_dir=args.results_dir,
        )
        failed |= run_scenario(SCENARIOS[name], options) == "failed"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
