"""Reading the conflict log: decrypted, filtered, keyset-paginated."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from syncproto import errors
from syncproto.hlc import iso
from syncproto.messages import ConflictPage, ConflictView
from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync import payloads
from syncstore.channels import ChannelStore
from syncstore.records import ConflictFilter, ConflictRecord
from syncstore.store import Store

StateVisible = Callable[[Principal, str, str], Awaitable[bool]]


def conflict_id(seq: int, idx: int) -> str:
    return f"c{seq}.{idx}"


def parse_conflict_id(value: str) -> tuple[int, int]:
    try:
        seq, idx = value.removeprefix("c").split(".")
        return int(seq), int(idx)
    except ValueError as exc:
        raise ApiError(400, errors.INVALID_REQUEST, f"'{value}' is not a conflict id") from exc


class ConflictService:
    def __init__(self, store: Store, ciphers: Ciphers, state_visible: StateVisible | None = None) -> None:
        """``state_visible`` confirms, from an entity's decrypted state, what its channel rows say a restricted
        principal may see (``PullService.state_visible``): the rows are an index, not the authority."""
        self.state_visible = state_visible
        if not isinstance(store, ChannelStore):
            raise TypeError(f"{type(store).__name__} must implement ChannelStore for scoped reads")
        self.store = store
        self.access: ChannelStore = store
        self.ciphers = ciphers

    async def list(self, principal: Principal, filters: ConflictFilter, after: str | None, limit: int) -> ConflictPage:
        start = parse_conflict_id(after) if after else None
        scope = Scope.of(principal)
        if scope.channels is None:
            rows = await self.store.conflicts(principal.tenant, start, limit + 1, filters)
        else:
            rows = await self.access.conflicts_in_channels(
                principal.tenant, sorted(scope.channels), start, limit + 1, filters
            )
        nxt = conflict_id(rows[limit - 1].seq, rows[limit - 1].idx) if len(rows) > limit else None
        shown = rows[:limit]
        if scope.channels is not None and self.state_visible is not None:
            seen: dict[tuple[str, str], bool] = {}
            for r in shown:
                key = (r.collection, r.entity_id)
                if key not in seen:
                    seen[key] = await self.state_visible(principal, *key)
            shown = [r for r in shown if seen[(r.collection, r.entity_id)]]
        cipher = await self.ciphers.cipher(principal.tenant, {r.key_version for r in shown})
        page: list[ConflictView] = []
        unavailable: list[str] = []
        for r in shown:
            view = self.view_or_none(cipher, r)
            if view is None:
                unavailable.append(conflict_id(r.seq, r.idx))
            else:
                page.append(view)
        result = ConflictPage(page, nxt)
        if unavailable:
            result.unavailable = unavailable
        return result

    async def get(self, principal: Principal, conflict: str) -> ConflictView:
        seq, idx = parse_conflict_id(conflict)
        row = await self.store.get_conflict(principal.tenant, seq, idx)
        if row is None or not await self._visible(principal, row):
            raise ApiError(404, errors.NOT_FOUND, f"no conflict {conflict}")
        return self.view(await self.ciphers.cipher(principal.tenant, [row.key_version]), row)

    async def _visible(self, principal: Principal, row: ConflictRecord) -> bool:
        scope = Scope.of(principal)
        if scope.unrestricted:
            return True
        if not scope.allows(await self.access.entity_channels(principal.tenant, row.collection, row.entity_id)):
            return False
        return self.state_visible is None or await self.state_visible(principal, row.collection, row.entity_id)

    @staticmethod
    def view_or_none(cipher: TenantCipher, row: ConflictRecord) -> ConflictView | None:
        """``view``, or None (logged and counted) when the stored record fails its integrity check."""
        try:
            return ConflictService.view(cipher, row)
        except DecryptionError as exc:
            quarantine.failed("conflicts", cipher.tenant, conflict_id(row.seq, row.idx), exc)
            return None

    @staticmethod
    def view(cipher: TenantCipher, row: ConflictRecord) -> ConflictView:
        body = payloads.open_conflict(
            cipher, row.collection, row.entity_id, row.seq, row.idx, row.key_version, row.details
        )
        return ConflictView(
            id=conflict_id(row.seq, row.idx),
            collection=row.collection,
            entity=row.entity_id,
            field=row.field,
            kind=row.kind,  # type: ignore[arg-type]
            rule=row.rule,
            seq=row.seq,
            created_at=iso(row.created_at),
            status=row.status,
            values=body.values,
            winner=body.winner,
            note=body.note,
        )
