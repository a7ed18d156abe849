"""The store's numbers (ADR 0033): a ``changes`` row names its tenant, replica and user by number, and
an ``entities`` or ``entity_channels`` row its tenant.

The change log is the largest table, and every row and each of its three secondary indexes repeated the
tenant id; the dot index repeated the replica id and the export index the user sub. Now:

* ``tenants.no`` numbers a tenant (assigned at creation, never reused while the tenant exists);
* ``log_names`` numbers each replica id and user sub of a tenant's log once, per tenant, under the
  tenant's lock (a push's write step is the only writer);
* every read of the log joins the strings back (``select_changes``), so the ``ChangeRecord`` a caller
  gets, and the bytes the hash chain covers, are what they were;
* a query of any table names the tenant with ``of_tenant``, by id or by number as the table holds it.

A name is a name: a replica and a user that happen to share a string share its number.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Table, and_, bindparam, func, insert, select

from syncstore.tables import changes, log_names, tenants

_TENANT = tenants.alias("log_tenant")
_REPLICA = log_names.alias("log_replica")
_USER = log_names.alias("log_user")

_JOINED = (
    changes.join(_TENANT, _TENANT.c.no == changes.c.tenant_no)
    .join(_REPLICA, and_(_REPLICA.c.tenant_id == _TENANT.c.id, _REPLICA.c.no == changes.c.replica_no))
    .join(_USER, and_(_USER.c.tenant_id == _TENANT.c.id, _USER.c.no == changes.c.user_no))
)

_COLUMNS = [
    *(c for c in changes.c if c.name not in ("tenant_no", "replica_no", "user_no")),
    _REPLICA.c.name.label("replica_id"),
    _USER.c.name.label("user_sub"),
]


def select_changes(tenant_id: Any, *columns: ColumnElement[Any]) -> Select[Any]:
    """Every change of the tenant with its replica id and user sub, for ``rows.change_from_row`` (or only
    ``columns``).

    Add ``where`` clauses on ``changes`` columns, ``replica_name`` and ``user_name``. ``tenant_id`` may be a
    value or a bind parameter."""
    return select(*(columns or _COLUMNS)).select_from(_JOINED).where(_TENANT.c.id == tenant_id)


replica_name = _REPLICA.c.name
"""The replica id column of ``select_changes``."""
user_name = _USER.c.name
"""The user sub column of ``select_changes``."""


TENANT_ROW = select(tenants).where(tenants.c.id == bindparam("tenant_id"))
"""The tenant row every pull reads first, built once."""


def tenant_no(tenant_id: Any) -> ColumnElement[int]:
    """The tenant's number, as a scalar subquery (one primary-key seek)."""
    return select(tenants.c.no).where(tenants.c.id == tenant_id).scalar_subquery()


def of_tenant(table: Table, tenant_id: Any) -> ColumnElement[bool]:
    """``table``'s rows of the tenant, whether it names tenants by id or (the log and entity tables) by
    number."""
    clause: ColumnElement[bool] = (
        table.c.tenant_no == tenant_no(tenant_id) if "tenant_no" in table.c else table.c.tenant_id == tenant_id
    )
    return clause


NEXT_TENANT_NO = select(func.coalesce(func.max(tenants.c.no), 0) + 1).scalar_subquery()
"""A new tenant's number: one above the highest, in a transaction that holds ``NUMBERING_LOCK``."""
NUMBERING_LOCK = select(func.pg_advisory_xact_lock(int.from_bytes(b"tenantno", "big")))
"""PostgreSQL: held until the creating transaction ends, so two creations never pick the same number."""

_LAST = log_names.alias("log_last")
_NUMBERS = (
    select(
        _TENANT.c.no,
        log_names.c.name,
        log_names.c.no.label("name_no"),
        select(func.max(_LAST.c.no)).where(_LAST.c.tenant_id == _TENANT.c.id).scalar_subquery().label("last_no"),
    )
    .select_from(
        _TENANT.outerjoin(
            log_names,
            and_(log_names.c.tenant_id == _TENANT.c.id, log_names.c.name.in_(bindparam("names", expanding=True))),
        )
    )
    .where(_TENANT.c.id == bindparam("tenant_id"))
)


_NEW_NAME = insert(log_names)


def numbers(conn: Connection, tenant_id: str, names: Collection[str]) -> tuple[int, dict[str, int]]:
    """The tenant's number and each name's, numbering the new ones. Run under the tenant's lock, in the
    transaction that writes the changes (so a rolled-back push leaves no number behind)."""
    found: dict[str, int] = {}
    tenant: int | None = None
    last = 0
    for row in conn.execute(_NUMBERS, {"tenant_id": tenant_id, "names": sorted(names)}):
        tenant, last = row.no, row.last_no or 0
        if row.name is not None:
            found[row.name] = row.name_no
    if tenant is None:
        raise LookupError(f"tenant {tenant_id!r} has no row")
    missing = sorted(set(names) - found.keys())
    if missing:
        new = {name: last + i for i, name in enumerate(missing, start=1)}
        # One statement, many parameter sets: a multi-row ``VALUES`` would be compiled anew for every count of
        # names (a third of a first push's time, for a fleet of new devices).
        conn.execute(_NEW_NAME, [{"tenant_id": tenant_id, "no": no, "name": n} for n, no in new.items()])
        found |= new
    return tenant, found
