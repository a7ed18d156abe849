"""CLI for key lifecycle and data-subject requests: ``keys``, ``tenant erase``, ``export-user``, ``channels``.

Each command opens the store named by ``SYNC_DATABASE_URL``, runs one
``KeyOps`` or ``SubjectRequests`` action and writes the audit log as ``cli:<os user>``. Output that
scripts read goes to stdout; progress and messages go to stderr.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from types import FrameType
from typing import BinaryIO, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from syncproto import errors
from syncserver.admin.cli import integrity_failure
from syncserver.attachments.chunks import ChunkError
from syncserver.attachments.keyops import AttachmentGone
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.operations import KeyOpError, KeyOps
from syncserver.keys.providers import KeyProviderError
from syncserver.keys.subjects import ExportSummary
from syncserver.services import Services, open_services
from syncserver.settings import Settings
from syncstore.store import TenantNotFound

T = TypeVar("T")
console = Console(stderr=True)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def run_services(settings: Settings, fn: Callable[[Services], Awaitable[T]]) -> T:
    """Open the services, run ``fn``; map expected failures to clean CLI errors."""

    async def main() -> T:
        async with open_services(settings) as services:
            return await fn(services)

    try:
        return asyncio.run(main())
    except TenantNotFound as exc:
        raise click.ClickException(f"no tenant {exc.args[0]!r} (or it has no usable key)") from None
    except (KeyOpError, KeyProviderError) as exc:
        raise click.ClickException(str(exc)) from None
    except DecryptionError as exc:
        raise integrity_failure(exc) from None


def run_ops(settings: Settings, fn: Callable[[KeyOps], Awaitable[T]]) -> T:
    """Run ``fn`` on the key operations."""
    return run_services(settings, lambda services: fn(services.key_ops))


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _advance(bar: Progress, task: TaskID, _: str, n: int) -> None:
    bar.advance(task, n)


def advance_table(bar: Progress, tasks: dict[str, TaskID], table: str, n: int) -> None:
    bar.advance(tasks[table], n)


@click.group()
def keys() -> None:
    """Tenant data keys and the master key (every action is audited)."""


@keys.command("status")
@click.option("--tenant", "tenant_id", required=True)
@click.pass_obj
def keys_status(settings: Settings, tenant_id: str) -> None:
    """Show a tenant's key versions and how many rows each one sealed."""
    status = run_ops(settings, lambda ops: ops.status(tenant_id))
    table = Table("version", "state", "master key", "created", "rows", "dictionary")
    for v in status.versions:
        table.add_row(
            str(v.version), v.state, v.master_key_id, v.created_at, str(v.rows), "yes" if v.dictionary else ""
        )
    Console().print(table)
    console.print(f"active version {status.active_version}; {status.stale_rows} rows under older versions")


@keys.command("rotate")
@click.option("--tenant", "tenant_id", required=True)
@click.pass_obj
def keys_rotate(settings: Settings, tenant_id: str) -> None:
    """Add a data-key version; new writes use it at once, old rows still decrypt."""
    result = run_ops(settings, lambda ops: ops.rotate(tenant_id, actor()))
    click.echo(result.version)
    console.print(
        f"[green]tenant {tenant_id}: key version {result.version} is active[/] (was {result.previous})"
        f"{', with the compression dictionary of the previous version' if result.dictionary else ''}. "
        f"Running servers switch within SYNC_KEY_CACHE_TTL_S ({settings.key_cache_ttl_s} s); "
        "run `syncserver keys reencrypt` after that."
    )


@keys.command("reencrypt")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.option("--batch-size", default=500, show_default=True, help="Rows per transaction.")
@click.option("--pause-ms", default=0, show_default=True, help="Pause between batches, to spare a busy database.")
@click.pass_obj
def keys_reencrypt(settings: Settings, tenant_id: str | None, batch_size: int, pause_ms: int) -> None:
    """Move every row to its tenant's active key version. Resumable: interrupt it and run it again."""

    async def reencrypt(ops: KeyOps) -> int:
        tenants = [tenant_id] if tenant_id else [t.id for t in await ops.store.list_tenants()]
        remaining = 0
        with progress_bar() as bar:
            for tid in tenants:
                stale = await ops.stale_rows(tid)
                tasks = {t: bar.add_task(f"{tid} {t}", total=n) for t, n in stale.items()}
                result = await ops.reencrypt(
                    tid,
                    actor(),
                    batch_size=batch_size,
                    pause_s=pause_ms / 1000,
                    progress=functools.partial(advance_table, bar, tasks),
                )
                remaining += result.remaining
                if result.failed:
                    console.print(f"[red]{tid}: {result.failed} rows did not decrypt under their recorded key[/]")
        return remaining

    remaining = run_ops(settings, reencrypt)
    if remaining:
        console.print(f"[yellow]{remaining} rows are still under an older version (written meanwhile): run again[/]")
        sys.exit(1)
    console.print("[green]every row is under its tenant's active key version[/]")


@keys.command("destroy")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--version", type=int, required=True)
@click.pass_obj
def keys_destroy(settings: Settings, tenant_id: str, version: int) -> None:
    """Destroy a retired key version once no row is sealed under it."""
    run_ops(settings, lambda ops: ops.destroy_version(tenant_id, version, actor()))
    console.print(f"[green]tenant {tenant_id}: key version {version} destroyed[/]")


@keys.command("rotate-master")
@click.pass_obj
def keys_rotate_master(settings: Settings) -> None:
    """Rewrap every data key under SYNC_MASTER_KEY (SYNC_MASTER_KEY_PREVIOUS must hold the old one)."""

    async def rotate(ops: KeyOps) -> int:
        tenants = await ops.store.list_tenants()
        with progress_bar() as bar:
            task = bar.add_task("rewrapping data keys", total=len(tenants))
            result = await ops.rotate_master(actor(), progress=lambda _, n: bar.advance(task, n))
        console.print(f"[green]{result.rewrapped} data keys rewrapped under master key {result.master_key_id}[/]")
        return result.rewrapped

    run_ops(settings, rotate)
    console.print("Remove SYNC_MASTER_KEY_PREVIOUS from every server, then destroy the old master key.")


@click.command("erase")
@click.argument("tenant_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def tenant_erase(settings: Settings, tenant_id: str, yes: bool) -> None:
    """Crypto-shred a tenant: destroy its data keys, then delete all its rows. Cannot be undone."""
    if not yes:
        typed = click.prompt(f"This destroys all data of tenant {tenant_id!r}. Type the tenant id to confirm")
        if typed != tenant_id:
            raise click.ClickException("confirmation did not match; nothing was erased")
    result = run_services(settings, lambda s: s.subjects.erase_tenant(tenant_id, actor()))
    rows = sum(result.rows_deleted.values())
    console.print(f"[green]tenant {tenant_id}: {result.keys_destroyed} keys destroyed, {rows} rows deleted[/]")


@click.command("export-user")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--sub", required=True, help="The user (the token's 'sub' claim).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
@click.pass_obj
def export_user(settings: Settings, tenant_id: str, sub: str, output: Path | None) -> None:
    """Export every change, dead letter and attachment of a user, decrypted, as JSON (GDPR access request).

    Written as it is read, one element of each list per line: memory stays small however much the user has.
    With --output, the export goes to a private (0600) file beside it, which becomes --output only once the
    document is complete: an export that fails or is stopped (SIGTERM, Ctrl-C) leaves no file behind, and an
    earlier file at --output as it was.
    """
    try:
        partial = None if output is None else _PartialFile.beside(output)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    sink = sys.stdout.buffer if partial is None else partial.file

    async def export(services: Services) -> ExportSummary:
        stream = await services.subjects.export_user_stream(tenant_id, sub, actor())
        async with aclosing(stream):  # stopped part way, its closing audit row says so
            async for piece in stream:
                sink.write(piece)
        return stream.summary

    with _terminated_by_sigterm():  # also around the cleanup: a second SIGTERM does not cut it short
        try:
            summary = run_services(settings, export)
            sink.write(b"\n")
            if partial is None:
                sink.flush()
            else:
                partial.complete()
        except BaseException as exc:
            if partial is not None:
                partial.discard()
            if isinstance(exc, AttachmentGone):
                raise click.ClickException(f"{exc}; the export was stopped: run it again") from None
            if isinstance(exc, ChunkError):
                # An attachment's bytes changed after their check: the stream stopped before writing them.
                detail = f"stored attachment data changed while it was exported ({exc}); the export was stopped"
                raise click.ClickException(f"{errors.DATA_INTEGRITY}: {detail}") from None
            if isinstance(exc, Terminated):
                stopped = "terminated: the export was stopped" + ("" if output is None else "; no file written")
                console.print(f"[red]{stopped}[/]")
            raise
    if output is not None:
        console.print(f"{summary.changes} changes, {summary.dead_letters} dead letters -> {output}")
    if summary.unavailable:
        names = ", ".join(summary.unavailable)
        raise click.ClickException(f"{errors.DATA_INTEGRITY}: rows that failed their integrity check: {names}")


class Terminated(SystemExit):
    """SIGTERM arrived during an export (``systemctl stop``, ``timeout``, a pod's shutdown): exit 143 after cleanup.

    A ``SystemExit``, so that asyncio lets it through (it stops the event loop, which then cancels the export and
    runs its cleanup) and no ``except Exception`` on the way swallows it.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextmanager
def _terminated_by_sigterm() -> Iterator[None]:
    """Within this block SIGTERM raises ``Terminated`` (once: a second one during the cleanup is ignored), so the
    cleanup runs instead of the process dying with a partial file and no closing audit row."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    raised = False

    def terminate(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _PartialFile:
    """An export being written: a private file beside its destination, renamed onto it once complete."""

    def __init__(self, output: Path, path: Path, file: BinaryIO) -> None:
        self.output = output
        self.path = path
        self.file = file

    @classmethod
    def beside(cls, output: Path) -> _PartialFile:
        """A new file in ``output``'s directory, readable by its owner only (``mkstemp``: ``O_EXCL``, 0600)."""
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
        try:
            os.fchmod(fd, 0o600)
            return cls(output, Path(name), os.fdopen(fd, "wb"))
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise

    def complete(self) -> None:
        """Flush and sync it, then put it at its destination in one step (an earlier file there is replaced)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.path, self.output)
        _sync_directory(self.output.parent)

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _sync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (where directories can be opened: not on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@click.group()
def channels() -> None:
    """Channel membership of entities (access control)."""


@channels.command("reindex")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.pass_obj
def channels_reindex(settings: Settings, tenant_id: str | None) -> None:
    """Rebuild channel rows from entity state (after upgrading, or after changing channel templates)."""

    async def reindex(ops: KeyOps) -> int:
        tenants = [tenant_id] if tenant_id else [t.id for t in await ops.store.list_tenants()]
        total = 0
        with progress_bar() as bar:
            for tid in tenants:
                task = bar.add_task(tid, total=None)
                step = functools.partial(_advance, bar, task)
                total += await ops.reindex_channels(tid, actor(), progress=step)
        return total

    console.print(f"[green]{run_ops(settings, reindex)} entities reindexed[/]")
