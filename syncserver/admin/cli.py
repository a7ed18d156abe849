"""``syncserver admin``: the admin API as commands, with rich tables (``--json`` for scripts).

They work on the database directly (same ``SYNC_*`` settings as the server), as
the principal ``--as`` (default ``cli:$USER``) of ``--tenant``; every action is
audited under that name like one made in the web page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from syncproto import errors
from syncserver.admin.conflicts import ConflictFilters
from syncserver.admin.views import (
    AUDIT_ID_MAX,
    INDEX_MAX,
    LIMIT_MAX,
    AdminConflict,
    DeadLetterView,
    HistoryAttachment,
    OverrideRequest,
)
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.envelope import DecryptionError
from syncserver.services import Services, open_services
from syncserver.settings import Settings
from syncserver.transport.openapi import SAFE_INT_MAX
from syncstore.adminstore import DeadLetterQuery
from syncstore.store import TenantNotFound

T = TypeVar("T")
out = Console()
# The JSON API's bounds (``syncserver.admin.views``): a number out of range is a usage error, not a traceback.
LIMIT = click.IntRange(1, LIMIT_MAX)
SEQ = click.IntRange(0, SAFE_INT_MAX)
COUNTER = click.IntRange(1, SAFE_INT_MAX)


class Context(msgspec.Struct):
    settings: Settings
    tenant: str
    actor: str
    as_json: bool


def integrity_failure(exc: DecryptionError) -> click.ClickException:
    """The one-line, coded CLI error for a stored row that failed its integrity check (altered or moved)."""
    return click.ClickException(f"{errors.DATA_INTEGRITY}: a stored row failed its integrity check ({exc})")


def run(ctx: Context, fn: Callable[[Services, Principal], Awaitable[T]]) -> T:
    """Open the store, build the services, run ``fn`` as the admin, close; API errors become CLI errors."""
    settings = ctx.settings

    async def main() -> T:
        async with open_services(settings) as services:
            return await fn(services, Principal(ctx.tenant, ctx.actor, "admin"))

    try:
        return asyncio.run(main())
    except ApiError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    except TenantNotFound:
        raise click.ClickException(f"tenant {ctx.tenant!r} does not exist") from None
    except DecryptionError as exc:
        raise integrity_failure(exc) from None


def emit(ctx: Context, value: Any, table: Callable[[], Any]) -> None:
    """Print ``value`` as JSON with ``--json``, else the rich rendering."""
    if ctx.as_json:
        click.echo(msgspec.json.encode(value).decode())
    else:
        out.print(table())


def _ms(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    return int((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _v(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@click.group()
@click.option("--tenant", required=True, help="The tenant to work on.")
@click.option("--as", "actor", default=None, help="Who acts, for the audit log (default cli:$USER).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def admin(ctx: click.Context, tenant: str, actor: str | None, as_json: bool) -> None:
    """Conflicts, entity history, dead letters and the audit log of one tenant."""
    ctx.obj = Context(ctx.obj, tenant, actor or f"cli:{getpass.getuser()}", as_json)


@admin.group()
def conflicts() -> None:
    """The conflict log."""


def conflict_table(views: list[AdminConflict]) -> Table:
    table = Table("id", "when", "entity", "field", "kind", "rule", "values (user@replica)", "winner", "status")
    for c in views:
        values = "\n".join(f"{_v(v.value)} ({v.user}@{v.replica})" for v in c.values)
        winner = _v(c.winner.value) if c.winner else "-"
        table.add_row(
            c.id, c.created_at, f"{c.collection}/{c.entity}", c.field or "-", c.kind, c.rule, values, winner, c.status
        )
    return table


@conflicts.command("list")
@click.option("--collection")
@click.option("--entity")
@click.option("--field")
@click.option("--kind", type=click.Choice(["register", "delete_update", "clock_skew"]))
@click.option("--status", type=click.Choice(["open", "overridden"]))
@click.option("--replica", help="A replica that wrote one of the values.")
@click.option("--user", help="A user that wrote one of the values.")
@click.option("--since", type=click.DateTime(), help="From this time (UTC), inclusive.")
@click.option("--until", type=click.DateTime(), help="Before this time (UTC).")
@click.option("--after", help="Continue after this conflict id.")
@click.option("--limit", default=50, show_default=True, type=LIMIT)
@click.pass_obj
def conflicts_list(ctx: Context, /, **o: Any) -> None:
    """List conflicts, oldest first."""
    filters = ConflictFilters(
        o["collection"],
        o["entity"],
        o["field"],
        o["kind"],
        o["status"],
        o["replica"],
        o["user"],
        _ms(o["since"]),
        _ms(o["until"]),
    )
    page = run(ctx, lambda svc, who: svc.conflict_admin.list_conflicts(who, filters, o["after"], o["limit"]))

    def render() -> Any:
        table = conflict_table(page.conflicts)
        if page.next:
            table.caption = f"more: --after {page.next}"
        return table

    emit(ctx, page, render)
    if page.unavailable:
        names = ", ".join(page.unavailable)
        raise click.ClickException(f"{errors.DATA_INTEGRITY}: conflicts that failed their integrity check: {names}")


@conflicts.command("show")
@click.argument("conflict_id")
@click.pass_obj
def conflicts_show(ctx: Context, conflict_id: str) -> None:
    """Show one conflict with its competing values side by side."""
    c = run(ctx, lambda svc, who: svc.conflict_admin.get_conflict(who, conflict_id))

    def render() -> Any:
        table = Table(title=f"{c.id}: {c.collection}/{c.entity} {c.field or ''} ({c.kind}, rule {c.rule}, {c.status})")
        table.add_column("")
        for i, _ in enumerate(c.values):
            table.add_column(f"value {i}")
        table.add_row("value", *[_v(v.value) for v in c.values])
        table.add_row("user", *[v.user for v in c.values])
        table.add_row("replica / n", *[f"{v.replica} / {v.n}" for v in c.values])
        table.add_row("HLC", *[f"{v.hlc[0]}.{v.hlc[1]}" for v in c.values])
        table.add_row("winner", *["yes" if c.winner == v else "" for v in c.values])
        if c.override:
            table.caption = f"overridden by {c.override.actor} at {c.override.at} (seq {c.override.change_seq})"
        return table

    emit(ctx, c, render)


@conflicts.command("override")
@click.argument("conflict_id")
@click.option("--pick", type=click.IntRange(0, INDEX_MAX), help="Keep value number PICK (see `show`).")
@click.option("--value", "value_json", help="Write this JSON value instead.")
@click.option("--field", help="delete/update conflicts: the field to write to keep the entity.")
@click.pass_obj
def conflicts_override(
    ctx: Context, conflict_id: str, pick: int | None, value_json: str | None, field: str | None
) -> None:
    """Override a conflict: a server change that collapses every value."""
    if (pick is None) == (value_json is None):
        raise click.UsageError("give exactly one of --pick or --value")
    try:
        value = msgspec.UNSET if value_json is None else json.loads(value_json)
    except ValueError:
        raise click.BadParameter("--value must be JSON, e.g. '\"delivered\"' or 42") from None
    choice = OverrideRequest(pick=pick, value=value, field=field)
    result = run(ctx, lambda svc, who: svc.conflict_admin.override(who, conflict_id, choice))
    emit(ctx, result, lambda: f"[green]overridden[/]: server change seq {result.change.seq} ({result.change.replica})")


@admin.command("history")
@click.argument("collection")
@click.argument("entity")
@click.option("--after", default=0, show_default=True, type=SEQ, help="Only changes after this seq.")
@click.option("--limit", default=200, show_default=True, type=LIMIT)
@click.pass_obj
def history(ctx: Context, collection: str, entity: str, after: int, limit: int) -> None:
    """An entity's change log, decrypted, with its rejected changes and the attachments each referenced."""
    h = run(ctx, lambda svc, who: svc.entity_history.history(who, collection, entity, after, limit))

    def render() -> Any:
        table = Table(
            "seq",
            "when",
            "result",
            "user",
            "replica / n",
            "HLC",
            "ops",
            "conflicts",
            "attachments",
            title=f"{collection}/{entity}",
        )
        rows: list[tuple[str, list[str]]] = []
        for c in h.changes:
            ops = "\n".join(_v(op) for op in c.ops) if c.ops is not None else "(fails its integrity check)"
            hlc = f"{c.hlc[0]}.{c.hlc[1]}"
            cells = [
                str(c.seq),
                c.created_at,
                c.result,
                c.user,
                f"{c.replica} / {c.n}",
                hlc,
                ops,
                " ".join(c.conflicts),
                _attachments(c.attachments),
            ]
            rows.append((c.created_at, cells))
        for d in h.rejected:
            ops = "\n".join(_v(op) for op in (d.change or {}).get("ops", []))
            result = f"rejected: {d.code} ({d.status})"
            cells = [
                "-",
                d.created_at,
                result,
                d.user,
                f"{d.replica} / {d.n}",
                "",
                ops,
                "",
                _attachments(d.attachments),
            ]
            rows.append((d.created_at, cells))
        for _, cells in sorted(rows, key=lambda r: r[0]):
            table.add_row(*cells)
        return table

    emit(ctx, h, render)
    broken = [str(c.seq) for c in h.changes if c.ops is None]
    if broken or h.current_unavailable:
        what = [f"changes {', '.join(broken)}"] if broken else []
        what += ["the entity's state (syncserver repair rebuilds it)"] if h.current_unavailable else []
        raise click.ClickException(f"{errors.DATA_INTEGRITY}: failed their integrity check: {'; '.join(what)}")


def _attachments(found: list[HistoryAttachment]) -> str:
    return "\n".join(f"{a.field}: {a.status}" + (f" ({a.code})" if a.code else "") for a in found)


@admin.group("dead-letters")
def dead_letters() -> None:
    """Rejected changes."""


def letter_table(views: list[DeadLetterView]) -> Table:
    table = Table("when", "replica / n", "user", "entity", "code", "message", "status")
    for d in views:
        table.add_row(
            d.created_at, f"{d.replica} / {d.n}", d.user, f"{d.collection}/{d.entity}", d.code, d.message, d.status
        )
    return table


@dead_letters.command("list")
@click.option("--status", type=click.Choice(["open", "replayed", "discarded"]))
@click.option("--code")
@click.option("--replica")
@click.option("--user")
@click.option("--collection")
@click.option("--entity")
@click.option("--since", type=click.DateTime(), help="From this time (UTC), inclusive.")
@click.option("--until", type=click.DateTime(), help="Before this time (UTC).")
@click.option("--before", help="Continue with letters older than this cursor.")
@click.option("--limit", default=50, show_default=True, type=LIMIT)
@click.pass_obj
def dead_letters_list(ctx: Context, /, **o: Any) -> None:
    """List dead letters, newest first."""
    query = DeadLetterQuery(
        o["status"], o["code"], o["replica"], o["user"], o["collection"], o["entity"], _ms(o["since"]), _ms(o["until"])
    )
    page = run(ctx, lambda svc, who: svc.dead_letter_admin.list_dead_letters(who, query, o["before"], o["limit"]))
    emit(ctx, page, lambda: letter_table(page.dead_letters))


@dead_letters.command("show")
@click.argument("replica")
@click.argument("n", type=COUNTER)
@click.pass_obj
def dead_letters_show(ctx: Context, replica: str, n: int) -> None:
    """Show one dead letter and the change as it was pushed."""
    d = run(ctx, lambda svc, who: svc.dead_letter_admin.get_dead_letter(who, replica, n))
    emit(ctx, d, lambda: _letter_detail(d))


def _letter_detail(d: DeadLetterView) -> Any:
    table = letter_table([d])
    table.caption = msgspec.json.format(msgspec.json.encode(d.change), indent=2).decode()
    return table


@dead_letters.command("replay")
@click.argument("replica")
@click.argument("n", type=COUNTER)
@click.pass_obj
def dead_letters_replay(ctx: Context, replica: str, n: int) -> None:
    """Apply a dead letter's change now (at most once)."""
    result = run(ctx, lambda svc, who: svc.dead_letter_admin.replay(who, replica, n))
    if result.error is not None and not ctx.as_json:
        raise click.ClickException(f"still rejected: {result.error.code}: {result.error.message}")
    seq = result.change.seq if result.change else None
    emit(ctx, result, lambda: f"[green]{result.outcome}[/]: server change seq {seq}")


@dead_letters.command("discard")
@click.argument("replica")
@click.argument("n", type=COUNTER)
@click.pass_obj
def dead_letters_discard(ctx: Context, replica: str, n: int) -> None:
    """Mark a dead letter discarded."""
    d = run(ctx, lambda svc, who: svc.dead_letter_admin.discard(who, replica, n))
    emit(ctx, d, lambda: f"[green]discarded[/] {d.id}")


@admin.command("audit")
@click.option("--target", help="Only entries about this conflict id or dead letter (replica/n).")
@click.option("--before", type=click.IntRange(1, AUDIT_ID_MAX), help="Only entries older than this id.")
@click.option("--limit", default=100, show_default=True, type=LIMIT)
@click.pass_obj
def audit(ctx: Context, target: str | None, before: int | None, limit: int) -> None:
    """The audit log of admin actions, newest first."""
    page = run(ctx, lambda svc, who: svc.audit_log.audit(who, target, before, limit))

    def render() -> Any:
        table = Table("id", "when", "who", "action", "target", "details")
        for e in page.entries:
            table.add_row(str(e.id), e.at, e.actor, e.action, e.target, _v(e.details))
        return table

    emit(ctx, page, render)
