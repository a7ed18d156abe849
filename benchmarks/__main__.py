"""``python -m benchmarks``: run scenarios, write results, build the README tables.

python -m benchmarks run SCENARIO [--backend sqlite|postgres] [--quick] [--reps N] [--param KEY=VALUE ...]
python -m benchmarks run all [--backend ...] [--quick]     (or several: run ingest,storm)
python -m benchmarks run report
python -m benchmarks list
python -m benchmarks profile [--changes N] [--batch N] [--backend sqlite|postgres]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks.backends import BACKENDS
from benchmarks.results import RESULTS_DIR
from benchmarks.runner import Options, Outcome, Scenario, console, run_scenario
from benchmarks.scenarios import ALIASES, SCENARIOS


def _value(raw: str) -> Any:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param takes KEY=VALUE, got {pair!r}")
        params[key.strip()] = _value(value.strip())
    return params


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario, 'all', or 'report' (rebuild the README tables)")
    run.add_argument("scenario", help=f"one of {', '.join(SCENARIOS)}; several, comma-separated; all; report")
    run.add_argument("--backend", choices=BACKENDS, default="sqlite")
    run.add_argument("--quick", action="store_true", help="small sizes for a smoke test (CI); asserts no speed")
    run.add_argument("--reps", type=int, default=None, help="repetitions (default: the scenario's)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    run.add_argument("--pg-url", default=None, help="use this PostgreSQL database instead of a private one")
    run.add_argument("--no-peers", action="store_true", help="skip PouchDB-server")
    run.add_argument(
        "--install-peers", action="store_true", default=None, help="npm-install missing peers even with --quick"
    )
    run.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    run.add_argument("--no-plot", action="store_true", help="write JSON only")
    sub.add_parser("list", help="list the scenarios and their parameters")
    prof = sub.add_parser("profile", help="profile the push hot path: the real server process under pyinstrument")
    prof.add_argument("--changes", type=int, default=10_000)
    prof.add_argument("--batch", type=int, default=500, help="changes per push")
    prof.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    prof.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p


def _list() -> int:
    table = Table("#", "scenario", "what", "unit", "defaults", "--quick")
    for s in SCENARIOS.values():
        status = f"[yellow]{s.needs}[/]" if s.needs else ", ".join(f"{k}={v}" for k, v in s.defaults.items())
        quick = ", ".join(f"{k}={v}" for k, v in s.quick.items())
        table.add_row(str(s.number), s.name, s.title, s.unit, status, quick)
    console.print(table)
    return 0


def _selected(spec: str) -> list[Scenario]:
    """``all``, one name, or a comma-separated list of names."""
    if spec == "all":
        return list(SCENARIOS.values())
    names = [ALIASES.get(n.strip(), n.strip()) for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise SystemExit(f"unknown scenario {spec!r}; choose from {', '.join(SCENARIOS)}, all, report")
    return [SCENARIOS[n] for n in names]


def _run(args: argparse.Namespace) -> int:
    name = ALIASES.get(args.scenario, args.scenario)
    if name == "report":
        from benchmarks.report import README, update_readme

        count = update_readme(args.results_dir)
        console.print(f"rebuilt the results tables of {README} from {count} result(s) in {args.results_dir}")
        return 0
    overrides = _params(args.param)
    if args.reps is not None:
        overrides["reps"] = args.reps
    options = Options(
        backend=args.backend,
        quick=args.quick,
        overrides=overrides,
        pg_url=args.pg_url,
        peers=not args.no_peers,
        install_peers=args.install_peers,
        results_dir=args.results_dir,
        plot=not args.no_plot,
    )
    scenarios = _selected(name)
    if len(scenarios) == 1:
        return 1 if run_scenario(scenarios[0], options) == "failed" else 0
    unknown = set(overrides) - {k for s in scenarios for k in s.defaults}
    if unknown:
        raise SystemExit(f"no scenario in {args.scenario!r} has the parameter(s) {', '.join(sorted(unknown))}")
    outcomes: dict[str, Outcome] = {}
    for scenario in scenarios:
        # With several scenarios, each takes only the overrides it knows.
        known = {k: v for k, v in overrides.items() if k in scenario.defaults}
        outcomes[scenario.name] = run_scenario(scenario, replace(options, overrides=known))
    table = Table(
        "scenario", "outcome", title=f"run {args.scenario} on {args.backend}{' (quick)' if args.quick else ''}"
    )
    colours = {"passed": "green", "skipped": "yellow", "failed": "red"}
    for scenario_name, outcome in outcomes.items():
        table.add_row(scenario_name, f"[{colours[outcome]}]{outcome}[/]")
    console.print(table)
    return 1 if "failed" in outcomes.values() else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "profile":
        from benchmarks.profile_push import profile

        profile(args.changes, args.batch, args.results_dir, args.backend)
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
