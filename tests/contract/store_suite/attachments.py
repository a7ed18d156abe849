"""The AttachmentStore contract, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

from msgspec.structs import replace

from syncstore import AttachmentRecord, AttachmentRefRecord, AttachmentStore, Store, attachment_store_for


def record(tenant: str, attachment_id: str, **changes: object) -> AttachmentRecord:
    base = AttachmentRecord(
        tenant_id=tenant,
        id=attachment_id,
        user_sub="driver-1",
        size=1000,
        media_type="image/jpeg",
        mac="m" * 64,
        mac_version=1,
        key_version=1,
        state="uploading",
        upload_offset=0,
        chunk_bytes=256,
        created_at=1,
        updated_at=1,
        expires_at=10,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def meta_of(store: Store) -> AttachmentStore:
    meta = attachment_store_for(store)
    assert isinstance(meta, AttachmentStore)
    return meta


async def test_create_is_idempotent_and_never_overwrites(store: Store, tenant: str) -> None:
    meta = meta_of(store)
    first = await meta.create_attachment(record(tenant, "a1"))
    again = await meta.create_attachment(record(tenant, "a1", size=5, user_sub="other"))
    assert again == first
    assert await meta.get_attachment(tenant, "a1") == first
    assert await meta.get_attachment(tenant, "a2") is None


async def test_update_is_compare_and_set_on_state_offset_and_key_version(store: Store, tenant: str) -> None:
    meta = meta_of(store)
    row = await meta.create_attachment(record(tenant, "a1"))
    moved = replace(row, upload_offset=256)
    assert await meta.update_attachment(row, moved)
    assert not await meta.update_attachment(row, replace(row, upload_offset=512))  # stale
    assert (await meta.get_attachment(tenant, "a1")) == moved
    done = replace(moved, upload_offset=1000, state="available", blob_owner="a1")
    assert await meta.update_attachment(moved, done)
    assert await meta.attachment_states(tenant, ["a1", "zz"]) == {"a1": "available"}


async def test_update_does_not_write_into_a_row_created_again_under_the_same_id(store: Store, tenant: str) -> None:
    """A PATCH that read the row, then the row deleted (tus termination) and created again: same state, offset and
    key version, but another row; the PATCH's write must not land in it."""
    meta = meta_of(store)
    old = await meta.create_attachment(record(tenant, "a1"))
    assert await meta.delete_attachment(tenant, "a1")
    new = await meta.create_attachment(record(tenant, "a1", size=50, mac="n" * 64, created_at=2))
    assert not await meta.update_attachment(old, replace(old, upload_offset=256))
    assert await meta.get_attachment(tenant, "a1") == new


async def test_update_compares_the_chunk_tokens_too(store: Store, tenant: str) -> None:
    """Two PATCHes at one offset that wrote nothing new past it (a tail sealed again under each one's token) leave
    the offset where it was: the tokens tell them apart, so only one moves the row."""
    meta = meta_of(store)
    row = await meta.create_attachment(record(tenant, "a1"))
    first = replace(row, chunk_tokens="0:aaaaaaaaaaaa")
    assert await meta.update_attachment(row, first)
    assert not await meta.update_attachment(row, replace(row, chunk_tokens="0:bbbbbbbbbbbb"))  # read before
    second = replace(first, upload_offset=300, chunk_tokens="0:aaaaaaaaaaaa,1:cccccccccccc")
    assert await meta.update_attachment(first, second)
    assert await meta.get_attachment(tenant, "a1") == second
    assert await meta.update_attachment(second, replace(second, chunk_tokens=None))  # re-encrypted: no tokens
    assert (await meta.get_attachment(tenant, "a1")).chunk_tokens is None  # type: ignore[union-attr]


async def test_find_blob_returns_only_available_owners_of_that_mac(store: Store, tenant: str) -> None:
    meta = meta_of(store)
    await meta.create_attachment(record(tenant, "a1", mac="x" * 64))
    assert await meta.find_blob(tenant, "x" * 64) is None  # still uploading
    await meta.create_attachment(record(tenant, "a2", mac="x" * 64, state="available", blob_owner="a2"))
    await meta.create_attachment(record(tenant, "a3", mac="x" * 64, state="available", blob_owner="a2"))
    found = await meta.find_blob(tenant, "x" * 64)
    assert found is not None
    assert found.id == "a2"
    assert await meta.blob_users(tenant, "a2") == 2
    assert await meta.blob_users(tenant, "a2", key_version=1) == 2
    assert await meta.blob_users(tenant, "a2", key_version=2) == 0
    assert await meta.find_blob(tenant, "y" * 64) is None


async def test_list_filters_by_state_and_pages_by_id(store: Store, tenant: str) -> None:
    meta = meta_of(store)
    for i in range(5):
        await meta.create_attachment(record(tenant, f"a{i}", state="refused" if i % 2 else "uploading"))
    assert [r.id for r in await meta.list_attachments(tenant, state="refused")] == ["a1", "a3"]
    assert [r.id for r in await meta.list_attachments(tenant, after="a1", limit=2)] == ["a2", "a3"]


async def test_refs_are_recorded_once_and_deleted_with_the_attachment(store: Store, tenant: str) -> None:
    meta = meta_of(store)
    await meta.create_attachment(record(tenant, "a1"))
    ref = AttachmentRefRecord("a1", "deliveries", "dlv-1")
    await meta.add_refs(tenant, [ref, ref], 5)
    await meta.add_refs(tenant, [ref, AttachmentRefRecord("a1", "deliveries", "dlv-2")], 6)
    assert [r.entity_id for r in await meta.refs(tenant, "a1")] == ["dlv-1", "dlv-2"]
    await meta.mark_referenced(tenant, ["a1"], 42)
    found = await meta.get_attachment(tenant, "a1")
    assert found is not None
    assert found.referenced_at == 42
    assert await meta.delete_attachment(tenant, "a1")
    assert not await meta.delete_attachment(tenant, "a1")
    assert await meta.refs(tenant, "a1") == []


async def test_tenants_do_not_see_each_others_attachments(store: Store, tenant: str) -> None:
    from tests.contract import factories

    other = factories.new_tenant_id()
    await store.create_tenant(other, factories.key(other), factories.NOW)
    meta = meta_of(store)
    await meta.create_attachment(record(tenant, "a1", state="available", blob_owner="a1"))
    assert await meta.get_attachment(other, "a1") is None
    assert await meta.attachment_states(other, ["a1"]) == {}
    assert await meta.find_blob(other, "m" * 64) is None


async def test_refs_of_reads_the_refs_of_many_attachments_at_once(store: Store, tenant: str) -> None:
    from tests.contract import factories

    meta = meta_of(store)
    other = factories.new_tenant_id()
    await store.create_tenant(other, factories.key(other), factories.NOW)
    await meta.add_refs(tenant, [AttachmentRefRecord("a2", "deliveries", "dlv-9")], 5)
    await meta.add_refs(
        tenant, [AttachmentRefRecord("a1", "deliveries", "dlv-2"), AttachmentRefRecord("a1", "deliveries", "dlv-1")], 5
    )
    await meta.add_refs(tenant, [AttachmentRefRecord("a3", "deliveries", "dlv-3")], 5)
    await meta.add_refs(other, [AttachmentRefRecord("a1", "deliveries", "dlv-7")], 5)
    found = await meta.refs_of(tenant, ["a2", "a1", "zz", "a1"])
    assert [(r.attachment_id, r.entity_id) for r in found] == [("a1", "dlv-1"), ("a1", "dlv-2"), ("a2", "dlv-9")]
    assert await meta.refs_of(other, ["a1", "a2"]) == [AttachmentRefRecord("a1", "deliveries", "dlv-7")]
    assert await meta.refs_of(tenant, []) == []
