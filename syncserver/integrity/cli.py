"""``syncserver repair`` and ``syncserver verify``: rebuild damaged entity states; check a tenant's chain."""

from __future__ import annotations

import functools

import click
from rich.console import Console

from syncserver.integrity.rebuild import RepairReport
from syncserver.integrity.verify import Report
from syncserver.keys.cli import advance_table, progress_bar, run_services
from syncserver.services import Services
from syncserver.settings import Settings

console = Console(stderr=True)


@click.command()
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.option("--entity", default=None, metavar="COLLECTION/ID", help="Only this entity (with --tenant).")
@click.pass_obj
def repair(settings: Settings, tenant_id: str | None, entity: str | None) -> None:
    """Rebuild entity states that fail their integrity check from the change log (the truth).

    Devices told the entity was unavailable read it again; nothing new is logged. Exits 1 if an
    entity could not be rebuilt (its own change rows fail their check)."""
    only: tuple[str, str] | None = None
    if entity is not None:
        collection, sep, entity_id = entity.partition("/")
        if not sep or not collection or not entity_id or tenant_id is None:
            raise click.BadParameter("give --tenant and --entity COLLECTION/ID", param_hint="--entity")
        only = (collection, entity_id)

    async def run(s: Services) -> list[tuple[str, RepairReport]]:
        ids = [tenant_id] if tenant_id else [t.id for t in await s.store.list_tenants()]
        return [(t, await s.repair.repair(t, only)) for t in ids]

    failed = 0
    for tenant, report in run_services(settings, run):
        for collection, entity_id in report.repaired:
            console.print(f"{tenant}: rebuilt {collection}/{entity_id} from the change log")
        for collection, entity_id in report.channels:
            console.print(f"{tenant}: rewrote the channel rows of {collection}/{entity_id} from its state")
        for (collection, entity_id), reason in report.failed:
            console.print(f"[red]{tenant}: cannot rebuild {collection}/{entity_id}: {reason}[/red]")
        console.print(f"{tenant}: checked {report.checked} entities, rebuilt {len(report.repaired)}")
        failed += len(report.failed)
    if failed:
        raise SystemExit(1)


@click.command()
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.option("--from", "from_seq", default=0, type=click.IntRange(min=0), help="Start after this seq.")
@click.pass_obj
def verify(settings: Settings, tenant_id: str | None, from_seq: int) -> None:
    """Walk the change log's hash chain and every derived row; print what is broken and where.

    Exits 1 if anything is. Each run is kept for the admin API and page."""

    async def run(s: Services) -> list[Report]:
        ids = [tenant_id] if tenant_id else [t.id for t in await s.store.list_tenants()]
        reports = []
        with progress_bar() as bar:
            for tid in ids:
                record = await s.store.get_tenant(tid)
                total = max(0, record.last_seq - from_seq) if record is not None else None
                tasks = {
                    "changes": bar.add_task(f"{tid}: change log", total=total),
                    "entities": bar.add_task(f"{tid}: entities", total=None),
                }
                step = functools.partial(advance_table, bar, tasks)
                reports.append(await s.integrity.verify(tid, from_seq, progress=step))
        return reports

    broken = 0
    for report in run_services(settings, run):
        for problem in report.problems:
            console.print(f"[red]{report.tenant}: {problem.kind} at {problem.where}: {problem.detail}[/red]")
        legacy = f", {report.legacy} from before the chain" if report.legacy else ""
        verdict = "[green]ok[/green]" if report.ok else f"[red]{len(report.problems)} problems[/red]"
        console.print(
            f"{report.tenant}: {verdict}: {report.changes} changes up to seq {report.to_seq}{legacy}, "
            f"{report.checkpoints} checkpoints, {report.entities} entities"
        )
        broken += len(report.problems)
    if broken:
        raise SystemExit(1)
