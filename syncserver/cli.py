"""The ``syncserver`` command: serve, migrate, manage tenants, issue tokens, collect tombstones."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from syncserver.admin.cli import admin as admin_commands
from syncserver.admin.tenants import InvalidTenantId, TenantRecentlyErased, create_tenant
from syncserver.attachments.cli import attachments as attachment_commands
from syncserver.auth.tokens import ROLES, TokenVerifier
from syncserver.integrity import cli as integrity_cli
from syncserver.keys import cli as keys_cli
from syncserver.keys import devsecrets
from syncserver.keys.cli import run_services
from syncserver.services import Services
from syncserver.settings import Settings
from syncserver.sync.compaction import CompactResult, PayloadCompactor
from syncstore.keystore import KeyStore
from syncstore.migrate import upgrade
from syncstore.store import TenantExists, TenantNotFound

console = Console(stderr=True)
gc_log = logging.getLogger("syncserver.gc")
DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    unit = value[-1:]
    if unit in DURATIONS and value[:-1].isdigit():
        return int(value[:-1]) * DURATIONS[unit]
    if value.isdigit():
        return int(value)
    raise click.BadParameter(f"{value!r} is not a duration like 3600, 90m, 12h or 30d")


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Offline-first sync server. Configuration comes from SYNC_* environment variables."""
    ctx.obj = Settings.from_env()


@main.command()
@click.option("--host", default=None, help="Interface to bind (default SYNC_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default SYNC_PORT or 8000).")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None, workers: int) -> None:
    """Run the server (migrates the database first)."""
    import uvicorn

    devsecrets.master_key_b64(settings)
    devsecrets.admin_secret(settings)  # created before the workers start (and only when tokens are HS256)
    if settings.migrate_on_start:
        run_services(settings, lambda services: asyncio.sleep(0))
        os.environ["SYNC_MIGRATE_ON_START"] = "0"  # workers must not race to migrate
    host = host or settings.host
    port = port or settings.port
    console.print(f"[bold green]syncserver[/] on http://{host}:{port}  database: {_redact(settings.database_url)}")
    uvicorn.run(
        "syncserver.asgi:app",
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        log_level="info",
        # Deflate costs ~75 KiB per idle socket and ~1.7x CPU per send (benchmarks/bench_fanout.py).
        ws_per_message_deflate=False,
    )


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
    return url


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Apply migrations up to the newest (safe to run from several processes)."""
    asyncio.run(upgrade(settings.database_url))
    console.print("[green]database is at the newest schema[/]")


@main.group()
def tenant() -> None:
    """Tenants."""


@tenant.command("create")
@click.argument("tenant_id")
@click.pass_obj
def tenant_create(settings: Settings, tenant_id: str) -> None:
    """Create a tenant and its first data key."""
    try:
        record = run_services(settings, lambda s: create_tenant(s.store, s.keyring, tenant_id))
    except TenantExists:
        raise click.ClickException(f"tenant {tenant_id!r} already exists") from None
    except (InvalidTenantId, TenantRecentlyErased) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(record.id)


@tenant.command("list")
@click.pass_obj
def tenant_list(settings: Settings) -> None:
    """List tenants."""
    tenants = run_services(settings, lambda s: s.store.list_tenants())
    table = Table("tenant", "created", "last seq", "purged through")
    for t in tenants:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t.created_at / 1000))
        table.add_row(t.id, created, str(t.last_seq), str(t.purged_seq))
    Console().print(table)


@main.group()
def token() -> None:
    """Bearer tokens."""


@token.command("issue")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id (the 'tid' claim).")
@click.option("--sub", required=True, help="User id (the 'sub' claim).")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--channel", "channels", multiple=True, help="A channel the token may see (repeatable).")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime: seconds or 90m, 12h, 30d.")
@click.pass_obj
def token_issue(settings: Settings, tenant_id: str, sub: str, role: Any, channels: tuple[str, ...], ttl: str) -> None:
    """Print a signed bearer token (HS256, signed with SYNC_JWT_SECRET)."""
    verifier = TokenVerifier(devsecrets.jwt_secret(settings), settings.jwt_issuer, settings.jwt_audience)
    click.echo(verifier.issue(tenant_id, sub, role, channels, parse_duration(ttl)))


@main.command()
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.pass_obj
def gc(settings: Settings, tenant_id: str | None) -> None:
    """Collect tombstones older than SYNC_TOMBSTONE_RETENTION_S, attachments unreferenced for
    SYNC_ATTACHMENT_RETENTION_S and uploads abandoned past their expiry.

    Tenants are collected one by one; one that fails does not stop the others. In a tenant with an entity
    row that fails its integrity check (set aside and logged at ERROR, as a pull does), what that row
    references is unknown: no unreferenced attachment of that tenant is deleted this run (abandoned uploads
    still are). Run `syncserver repair` there. The exit status is 1 when any tenant had damaged rows or
    failed, and the last line names them."""
    now = int(time.time() * 1000)
    cutoff = now - settings.tombstone_retention_s * 1000
    totals = {"tombstones": 0, "attachments": 0, "abandoned": 0}
    damaged: dict[str, int] = {}
    failed: dict[str, str] = {}

    async def collect(s: Services) -> None:
        ids = [tenant_id] if tenant_id else [t.id for t in await s.store.list_tenants()]
        for t in ids:
            try:
                totals["tombstones"] += await s.store.purge_tombstones(t, cutoff)
                result = await s.attachment_gc.collect(t, now)
            except TenantNotFound:
                if tenant_id:
                    raise  # the one tenant asked for: a usage error (run_services)
                continue  # erased since the list was read
            except Exception as exc:  # one tenant's failure must not stop the others
                gc_log.exception("gc failed for a tenant", extra={"tenant": t})
                failed[t] = f"{type(exc).__name__}: {exc}"
                continue
            totals["attachments"] += result.deleted
            totals["abandoned"] += result.abandoned
            if result.damaged:
                damaged[t] = len(result.damaged)

    run_services(settings, collect)
    console.print(
        f"collected {totals['tombstones']} tombstones, {totals['attachments']} attachments, "
        f"{totals['abandoned']} abandoned uploads"
    )
    for t, reason in failed.items():
        console.print(f"[red]{t}: gc failed: {escape(reason)}[/]", soft_wrap=True)
    if damaged or failed:
        parts = [f"{t} ({n} entity rows failed their integrity check)" for t, n in damaged.items()]
        parts += [f"{t} (failed)" for t in failed]
        if damaged:
            console.print(
                "[yellow]no unreferenced attachment was deleted in a tenant with damaged rows: "
                "run `syncserver repair --tenant T`, then gc again[/]",
                soft_wrap=True,
            )
        console.print(f"[red]gc incomplete for: {', '.join(parts)}[/]", soft_wrap=True)
        raise SystemExit(1)


@main.command()
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.option("--batch-size", default=500, show_default=True, help="Rows per transaction.")
@click.option("--restart", is_flag=True, help="Ignore the saved position and scan every row again.")
@click.pass_obj
def compact(settings: Settings, tenant_id: str | None, batch_size: int, restart: bool) -> None:
    """Rewrite rows stored before compact payloads (ADR 0029) in the compact, compressed format.

    Online and resumable: interrupt it and run it again; the position is kept under SYNC_DATA_DIR/compact.
    Rows written by this release are left as they are."""

    async def run(s: Services) -> list[CompactResult]:
        if not isinstance(s.store, KeyStore):
            raise click.ClickException("this store keeps no sealed rows to compact")
        compactor = PayloadCompactor(s.store, s.keyring, settings.data_dir / "compact")
        ids = [tenant_id] if tenant_id else [t.id for t in await s.store.list_tenants()]
        results = []
        with keys_cli.progress_bar() as bar:
            for t in ids:
                totals = await compactor.rows_to_scan(t)
                tasks = {table: bar.add_task(f"{t} {table}", total=n) for table, n in totals.items()}
                step = functools.partial(keys_cli.advance_table, bar, tasks)
                results.append(await compactor.compact(t, batch_size=batch_size, restart=restart, progress=step))
        return results

    results = run_services(settings, run)
    failed = 0
    for r in results:
        saved = r.bytes_before - r.bytes_after
        console.print(
            f"{r.tenant}: {r.rewritten} rows rewritten ({saved:,} bytes of ciphertext fewer), "
            f"{r.already} already compact, {r.skipped} changed meanwhile, {r.failed} did not open"
        )
        failed += r.failed
    if failed:
        console.print(f"[red]{failed} rows did not open or decode: run `syncserver verify`[/]")
        raise SystemExit(1)


main.add_command(admin_commands)
main.add_command(integrity_cli.repair)
main.add_command(integrity_cli.verify)
main.add_command(attachment_commands)

main.add_command(keys_cli.keys)
main.add_command(keys_cli.export_user)
main.add_command(keys_cli.channels)
tenant.add_command(keys_cli.tenant_erase)

if __name__ == "__main__":
    main()
