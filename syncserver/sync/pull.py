"""Delta pull: entities changed since a cursor, with only their changed fields.

Entities come back in the order of the seq of their latest change. Because a
push commits under the tenant lock, when a reader sees seq N every seq below N
is already committed, so paging by seq never skips a change.

A driver (a restricted ``Scope``) pulls through the channel rows
(``ChannelStore``): only entities in its channels, each sent whole if it entered
the driver's scope after the cursor, and an ``Eviction`` for each entity that
left it. Entities and evictions form one stream in seq order, cut at ``limit``,
all read in one snapshot with the tenant row (``ChannelStore.scoped_page``).
When nothing more is pending, the cursor moves to the tenant's last seq read
with them, so a driver does not rescan other drivers' changes. Channel rows are
only an index: an entity is sent, and an eviction too, only if the entity's own
state agrees.

A cursor is bound to the scope it was issued to (``cursor.scope_key``): under
another scope (the token's channels or role changed) the answer is ``reset``.
Whether the cursor is behind a tombstone purge is decided from a ``purged_seq``
read with or after the page, never before it.

The live channel must deliver to restricted principals through ``pull`` too: a
filter over a tenant-wide feed can neither send evictions nor know which
entities must be sent whole.
"""

from __future__ import annotations

from syncproto import errors
from syncproto.messages import EntityView, Eviction, PullRequest, PullResponse, Unavailable
from syncproto.schema import Collection, Schema
from syncproto.views import entity_view
from syncserver.auth.scopes import ChannelError, Scope, entity_channels
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.settings import Limits
from syncserver.sync import cursor, payloads
from syncserver.sync.payloads import StoredEntity
from syncserver.sync.view_cache import OpenedEntity, ViewCache, opened
from syncstore.channels import ChannelStore, EvictionRecord, ScopedEntity
from syncstore.records import EntityRecord, TenantRecord
from syncstore.store import Store


class PullService:
    def __init__(self, store: Store, ciphers: Ciphers, schema: Schema, limits: Limits) -> None:
        if not isinstance(store, ChannelStore):
            raise TypeError(f"{type(store).__name__} must implement ChannelStore for scoped pulls")
        self.store = store
        self.access: ChannelStore = store
        self.ciphers = ciphers
        self.schema = schema
        self.limits = limits
        self.view_cache = ViewCache()

    async def pull(self, principal: Principal, request: PullRequest) -> PullResponse:
        scope = Scope.of(principal)
        key = cursor.scope_key(scope)
        position = cursor.decode_for(principal.tenant, request.cursor, key)
        if position is None:
            # A cursor of another scope (the token lost or gained channels, or its role changed): the device holds
            # that scope's entities, neither evictions nor entities from a cursor could make it this one's.
            _known(await self.store.get_tenant(principal.tenant))
            return PullResponse(reset=True)
        after, since = position.seq, position.since
        limit = min(request.limit, self.limits.max_pull_limit)
        if scope.channels is not None:
            return await self._scoped(principal.tenant, scope.channels, key, request, position, limit)
        rows = await self.store.pull(principal.tenant, after, limit + 1, request.collections)
        # Read after the page: a purge that committed before the page was read (and took tombstones out of it) is
        # seen here, so the device is told to reset rather than never told of those deletes.
        tenant_row = _known(await self.store.get_tenant(principal.tenant))
        if _behind_purge(tenant_row, request, position):
            return PullResponse(reset=True)
        more = len(rows) > limit
        rows = rows[:limit]
        cipher = await self.ciphers.cipher(principal.tenant, {row.key_version for row in rows})
        # An entity met on this page may have changed before ``after`` too: the device was last whole at ``since``.
        views, unavailable = self.views(cipher, [(row, since) for row in rows])
        last = rows[-1].seq if rows else after
        floor = _floor(tenant_row, request, position)
        next_cursor = cursor.encode(principal.tenant, last, since if more else None, scope=key, floor=floor)
        response = PullResponse(changes=views, cursor=next_cursor, more=more)
        if unavailable:
            response.unavailable = unavailable
        return response

    async def _scoped(
        self,
        tenant: str,
        channels: frozenset[str],
        key: int,
        request: PullRequest,
        position: cursor.Position,
        limit: int,
    ) -> PullResponse:
        after, since = position.seq, position.since
        # The tenant row and both pages in one read and one snapshot (so the purge the reset is decided from is
        # the one the page shows); a device pulling from the start holds nothing to evict.
        page = await self.access.scoped_page(
            tenant, sorted(channels), after, limit + 1, request.collections, evictions=bool(after)
        )
        tenant_row = _known(page.tenant)
        if _behind_purge(tenant_row, request, position):
            return PullResponse(reset=True)
        head, found = tenant_row.last_seq, page.entities
        items: list[tuple[int, int, object]] = [(f.record.seq, 0, f) for f in found]
        items += [(g.seq, 1, g) for g in page.evictions]
        items.sort(key=lambda item: (item[0], item[1]))
        more = len(items) > limit
        items = items[:limit]
        wanted: list[tuple[EntityRecord, int]] = []
        gone: list[EvictionRecord] = []
        for _, _, item in items:
            if isinstance(item, ScopedEntity):
                # Entered the scope after the device was last whole: it has none of it yet.
                wanted.append((item.record, 0 if item.joined_seq > since else since))
            elif isinstance(item, EvictionRecord):
                gone.append(item)
        versions = {f.record.key_version for f in found} | {g.record.key_version for g in gone if g.record}
        cipher = await self.ciphers.cipher(tenant, versions)
        scope = Scope(channels)
        views, unavailable = self.views(cipher, wanted, scope)
        evictions = self._confirmed(cipher, gone, scope, unavailable) if gone else []
        last = items[-1][0] if items else after
        if not more:
            last = max(last, head)
        floor = _floor(tenant_row, request, position)
        next_cursor = cursor.encode(tenant, last, since if more else None, scope=key, floor=floor)
        response = PullResponse(changes=views, cursor=next_cursor, more=more, evictions=evictions)
        if unavailable:
            response.unavailable = unavailable
        return response

    def _confirmed(
        self, cipher: TenantCipher, gone: list[EvictionRecord], scope: Scope, unavailable: list[Unavailable]
    ) -> list[Eviction]:
        """The evictions whose entity's own state (``EvictionRecord.record``, opened, its channels worked out as
        a push works them out) puts it in none of ``scope``'s channels.

        Channel rows are only an index: an eviction they make that the state does not (an injected or stale
        row) is left out and counted like a foreign channel row, so no device drops an entity its token may
        see. An entity whose row fails its integrity check is added to ``unavailable`` instead (the device keeps
        what it holds and reads it again by id: 404 then drops it). An entity without a row (gone for good) is
        evicted. Evictions are rare: only their rows are opened, read with them (``ChannelStore.scoped_page``).
        """
        evictions: list[Eviction] = []
        for item in gone:
            row = item.record
            if row is not None:
                try:
                    entry = self.open(cipher, row, channels=True)
                except DecryptionError as exc:
                    unavailable.append(quarantine.unavailable_entity(cipher.tenant, row, exc))
                    continue
                if entry.channels is not None and scope.allows(entry.channels):
                    quarantine.foreign_channel_row(cipher.tenant, row)
                    continue
            evictions.append(Eviction(item.collection, item.entity_id, item.seq))
        return evictions

    def views(
        self,
        cipher: TenantCipher,
        rows: list[tuple[EntityRecord, int]],
        scope: Scope | None = None,
        *,
        share: bool = True,
    ) -> tuple[list[EntityView], list[Unavailable]]:
        """The view of each ``(row, after)`` (all fields when ``after`` is 0, else those changed after it).

        A row that fails its integrity check, or is not what the change log says is current (its read brought
        the seq of the entity's latest change along, ``row.latest_seq``), is set aside and named, not raised
        (see ``quarantine``). With a restricted ``scope`` (rows found through
        channel rows), an entity whose own state does not put it in one of the scope's channels is left out
        and counted: its channel row was not derived from it (an injected or stale row).

        ``share=False`` neither reads nor fills the ``view_cache``: for callers that share their pages
        themselves (the live feed), so the same views are not held twice.
        """
        views: list[EntityView] = []
        unavailable: list[Unavailable] = []
        for row, after in rows:
            try:
                entry = self.open(cipher, row, share=share, channels=scope is not None)
            except DecryptionError as exc:
                unavailable.append(quarantine.unavailable_entity(cipher.tenant, row, exc))
                continue
            if scope is not None and not (entry.channels is not None and scope.allows(entry.channels)):
                quarantine.foreign_channel_row(cipher.tenant, row)
                continue
            views.append(entry.view_for(after))
        return views, unavailable

    def open(
        self, cipher: TenantCipher, row: EntityRecord, *, share: bool = True, channels: bool = True
    ) -> OpenedEntity:
        """What pulls need of the row's state, opened once per entity version (``view_cache``).

        ``channels=False`` (a tenant-wide reader) may leave the entry's channels out, when it is not kept for
        others: working them out was a tenth of a dispatcher's first pull. Raises ``DecryptionError``
        (``NotCurrent`` included) like ``quarantine.open_current``: the check against the change log runs on
        every call, the cache holds only rows that opened.
        """
        quarantine.check_current(row)
        cache = self.view_cache
        entry = cache.get(cipher.tenant, row) if share else None
        if entry is None:
            stored = payloads.open_entity(cipher, row)  # current: checked above
            key = cache.admit(cipher.tenant, row) if share else None
            entry = opened(stored, self.schema.get(row.collection), row, channels=channels or key is not None)
            if key is not None:
                cache.keep(key, entry)
        return entry

    async def entity(self, principal: Principal, collection: str, entity_id: str) -> EntityView:
        row = await self.store.get_entity(principal.tenant, collection, entity_id)
        # Out of scope looks exactly like absent: a driver learns nothing about other drivers' entities.
        if row is None or not await self.visible(principal, collection, entity_id):
            raise ApiError(404, errors.NOT_FOUND, f"no entity {collection}/{entity_id}")
        cipher = await self.ciphers.cipher(principal.tenant, [row.key_version])
        stored = quarantine.open_current(cipher, row)  # raises: 500 data_integrity
        scope = Scope.of(principal)
        if not scope.unrestricted and not _in_scope(scope, self.schema.get(collection), stored):
            quarantine.foreign_channel_row(principal.tenant, row)
            raise ApiError(404, errors.NOT_FOUND, f"no entity {collection}/{entity_id}")
        return entity_view(stored.state, self.schema.get(collection), entity_id, row.seq, None)

    async def state_visible(self, principal: Principal, collection: str, entity_id: str) -> bool:
        """Whether ``principal`` may see the entity by its channel rows and its own decrypted state, current per
        the change log (an entity that fails its check is not shown to a restricted principal)."""
        try:
            await self.entity(principal, collection, entity_id)
        except (ApiError, DecryptionError):
            return False
        return True

    async def visible(self, principal: Principal, collection: str, entity_id: str) -> bool:
        """Whether ``principal`` may see the entity now (by its stored channel rows)."""
        scope = Scope.of(principal)
        if scope.unrestricted:
            return True
        return scope.allows(await self.access.entity_channels(principal.tenant, collection, entity_id))


def _known(tenant: TenantRecord | None) -> TenantRecord:
    """The token's tenant row; ``None`` (no such tenant) is a 401 ``tenant_unknown``."""
    if tenant is None:
        raise ApiError(401, errors.TENANT_UNKNOWN, "the token's tenant does not exist")
    return tenant


def _behind_purge(tenant: TenantRecord, request: PullRequest, position: cursor.Position) -> bool:
    """Whether tombstones the device may not have seen were collected (it must reset): any after the position it
    was whole at, or, in a pull from the start still under way, any since that pull began (``Position.floor``)."""
    return request.cursor is not None and position.floor < tenant.purged_seq


def _floor(tenant: TenantRecord, request: PullRequest, position: cursor.Position) -> int:
    """The ``floor`` of the next cursor: a pull from the start records the tenant's ``purged_seq`` as it begins
    (read in, or after, its first page's snapshot; a tombstone of an entity that page sent is younger than that
    read, far from the retention that would collect it), and carries it to its last page."""
    return tenant.purged_seq if request.cursor is None else position.floor


def _in_scope(scope: Scope, collection: Collection, stored: StoredEntity) -> bool:
    """Whether the entity's own state puts it in one of ``scope``'s channels (channel rows are only an index)."""
    try:
        return scope.allows(entity_channels(collection, stored.state))
    except ChannelError:
        return False  # no storable channels: tenant-wide roles only
