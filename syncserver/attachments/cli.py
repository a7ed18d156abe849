"""``syncserver attachments``: list attachments (refused ones are dead letters), show one, replay a refused upload."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from syncserver.attachments.admin import AttachmentAdminView, admin_view
from syncserver.attachments.uploads import UploadService
from syncserver.errors import ApiError
from syncserver.services import open_services
from syncserver.settings import Settings

T = TypeVar("T")
out = Console()


def _run(settings: Settings, fn: Callable[[UploadService], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_services(settings) as services:
            return await fn(services.uploads)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


def _print(views: list[AttachmentAdminView], as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(views).decode())
        return
    table = Table("id", "user", "size", "type", "status", "received", "code", "entities")
    for v in views:
        table.add_row(
            v.id, v.user, str(v.size), v.media_type, v.status, str(v.received), v.code or "", " ".join(v.entities)
        )
    out.print(table)


@click.group()
def attachments() -> None:
    """Attachments: uploads in progress, refused uploads (dead letters), replay."""


@attachments.command("list")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--state", type=click.Choice(["uploading", "available", "refused"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def list_command(settings: Settings, tenant_id: str, state: str | None, as_json: bool) -> None:
    """List a tenant's attachments (``--state refused``: the dead letters)."""

    async def run(uploads: UploadService) -> list[AttachmentAdminView]:
        rows = await uploads.meta.list_attachments(tenant_id, state=state, limit=10_000)  # type: ignore[arg-type]
        return [await admin_view(uploads, r) for r in rows]

    _print(_run(settings, run), as_json)


@attachments.command("replay")
@click.option("--tenant", "tenant_id", required=True)
@click.argument("attachment_id")
@click.pass_obj
def replay_command(settings: Settings, tenant_id: str, attachment_id: str) -> None:
    """Re-admit a refused upload so its device uploads it again."""

    async def run(uploads: UploadService) -> AttachmentAdminView:
        return await admin_view(uploads, await uploads.replay(tenant_id, attachment_id))

    view = _run(settings, run)
    out.print(f"{view.id}: {view.state}" + (f" ({view.code})" if view.code else ""))
