"""The admin web pages under ``/admin``: server-rendered Jinja templates, plain forms, no JavaScript.

Sign-in: the admin pastes a token with the ``admin`` role (``syncserver token issue
--role admin``). It is kept in an HttpOnly, SameSite=Strict cookie scoped to
``/admin`` and checked on every request like a bearer token. Every form carries
a CSRF token (Litestar's ``CSRFMiddleware`` on this router only: the JSON API
uses bearer tokens, which browsers never send by themselves).

Every response under ``/admin`` carries a strict Content-Security-Policy
(``CONTENT_SECURITY_POLICY``): the pages load one same-origin stylesheet
(``/admin/static/admin.css``) and nothing else, so no script, inline style,
frame, plugin or foreign form target is allowed.

Attachments: the entity history shows each change's attachment references with
their status, and images as thumbnails. The bytes come from this origin
(``/admin/attachments/{id}/content``, signed in like every page, so
``img-src 'self'`` covers them); only the raster types in ``THUMBNAIL_TYPES`` are
served inline, anything else as a download, so no uploaded file is ever rendered
as a document under ``/admin``. ``/admin/attachments`` lists uploads in progress
and refused ones (the attachments' dead letters) with a replay button.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Stream, Template
from litestar.static_files import create_static_files_router
from litestar.types import Message, Scope

from syncproto.attachments import attachment_ref
from syncserver.admin.api import to_ms
from syncserver.admin.audit import AuditLog
from syncserver.admin.conflicts import ConflictAdmin, ConflictFilters
from syncserver.admin.dead_letters import DeadLetterAdmin
from syncserver.admin.history import EntityHistoryService
from syncserver.admin.views import AUDIT_ID_MAX, INDEX_MAX, OverrideRequest, whole
from syncserver.attachments.admin import admin_view
from syncserver.attachments.download import CACHE_CONTROL, AttachmentReader, open_range
from syncserver.attachments.uploads import UploadService
from syncserver.auth.tokens import Principal, TokenVerifier
from syncserver.errors import ApiError
from syncserver.integrity.verify import Verifier, integrity_status
from syncstore.adminstore import DeadLetterQuery
from syncstore.attachments import AttachmentState
from syncstore.store import TenantNotFound

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
"""No script at all, styles only from our stylesheet, forms only to this server, never framed."""
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
TOKEN_COOKIE = "sync_admin"  # noqa: S105 - a cookie name, not a secret
CSRF_COOKIE = "sync_admin_csrf"
PAGE = 50
THUMBNAIL_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""Raster images, shown inline as thumbnails; never SVG (a document that can carry script)."""
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
WebRequest = Request[Any, Any, Any]


class SignInRequired(Exception):
    """No valid admin token in the cookie: the handler answers with the sign-in page."""


def csrf_secret(shared_secret: str) -> str:
    """The CSRF signing secret, derived from a secret every replica shares (``devsecrets.admin_secret``)."""
    return hmac.new(shared_secret.encode(), b"syncserver admin csrf", hashlib.sha256).hexdigest()


def signed_in(request: WebRequest) -> Principal:
    """Dependency: the admin whose token is in the cookie."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise SignInRequired
    verifier: TokenVerifier = request.app.state.verifier
    try:
        principal = verifier.verify(token)
    except ApiError as exc:
        raise SignInRequired from exc
    if principal.role != "admin":
        raise SignInRequired
    return principal


def _secure(request: WebRequest) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def _page(name: str, status_code: int = 200, **context: Any) -> Template:
    return Template(template_name=f"admin/{name}", context=context, status_code=status_code)


def _iso_input(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"'{value}' is not a date and time like 2026-11-22T10:00") from exc


def _parse_value(text: str) -> Any:
    """A typed value from the form: JSON when it parses (``42``, ``"x"``, ``null``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@get("/", summary="Admin home", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/admin/conflicts")


@get("/login", summary="Sign-in page", include_in_schema=False)
async def login_page() -> Template:
    return _page("login.html")


@post("/login", summary="Sign in with an admin token", include_in_schema=False, status_code=303)
async def login(request: WebRequest, data: Form, audit_log: NamedDependency[AuditLog]) -> Response[Any]:
    token = data.get("token", "").strip()
    verifier: TokenVerifier = request.app.state.verifier
    try:
        principal = verifier.verify(token)
    except ApiError as exc:
        return _page("login.html", 401, error=exc.message)
    if principal.role != "admin":
        return _page("login.html", 403, error="this token does not have the admin role")
    await audit_log.record_sign_in(principal)
    cookie = Cookie(
        key=TOKEN_COOKIE, value=token, path="/admin", httponly=True, samesite="strict", secure=_secure(request)
    )
    return Redirect("/admin/conflicts", status_code=303, cookies=[cookie])


@post("/logout", summary="Sign out", include_in_schema=False, status_code=303)
async def logout() -> Redirect:
    response = Redirect("/admin/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/admin")
    return response


@get("/conflicts", summary="Conflict list", include_in_schema=False)
async def conflicts(
    admin: NamedDependency[Principal],
    conflict_admin: NamedDependency[ConflictAdmin],
    collection: FromQuery[str | None] = None,
    entity: FromQuery[str | None] = None,
    field: FromQuery[str | None] = None,
    kind: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    replica: FromQuery[str | None] = None,
    user: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
) -> Template:
    raw = {
        "collection": collection,
        "entity": entity,
        "field": field,
        "kind": kind,
        "status": status,
        "replica": replica,
        "user": user,
        "since": since,
        "until": until,
    }
    f = {k: (v or None) for k, v in raw.items()}
    filters = ConflictFilters(
        f["collection"],
        f["entity"],
        f["field"],
        f["kind"],
        f["status"],
        f["replica"],
        f["user"],
        to_ms(_iso_input(f["since"])),
        to_ms(_iso_input(f["until"])),
    )
    page = await conflict_admin.list_conflicts(admin, filters, after or None, PAGE)
    query = {k: v for k, v in f.items() if v}
    return _page("conflicts.html", admin=admin, page=page, filters=f, query=query)


@get("/conflicts/{conflict_id:str}", summary="Conflict detail", include_in_schema=False)
async def conflict(
    admin: NamedDependency[Principal],
    conflict_admin: NamedDependency[ConflictAdmin],
    conflict_id: FromPath[str],
    done: FromQuery[int | None] = None,
) -> Template:
    view = await conflict_admin.get_conflict(admin, conflict_id)
    return _page("conflict.html", admin=admin, c=view, done=done, error=None)


@post("/conflicts/{conflict_id:str}/override", summary="Override a conflict", include_in_schema=False)
async def override(
    admin: NamedDependency[Principal],
    conflict_admin: NamedDependency[ConflictAdmin],
    conflict_id: FromPath[str],
    data: Form,
) -> Response[Any]:
    choice = data.get("choice", "")
    try:
        if choice.startswith("pick:"):
            request = OverrideRequest(pick=whole(choice[5:], "pick", 0, INDEX_MAX))
        else:
            request = OverrideRequest(value=_parse_value(data.get("value", "")), field=data.get("field") or None)
        result = await conflict_admin.override(admin, conflict_id, request)
    except ApiError as exc:
        view = await conflict_admin.get_conflict(admin, conflict_id)
        return _page("conflict.html", exc.status, admin=admin, c=view, done=None, error=exc.message)
    return Redirect(f"/admin/conflicts/{conflict_id}", query_params={"done": str(result.change.seq)}, status_code=303)


@get("/entities/{collection:str}/{entity:str}", summary="Entity history", include_in_schema=False)
async def entity(
    admin: NamedDependency[Principal],
    entity_history: NamedDependency[EntityHistoryService],
    collection: FromPath[str],
    entity: FromPath[str],
) -> Template:
    history = await entity_history.history(admin, collection, entity, 0, 500)
    timeline: list[tuple[str, str, Any]] = [(c.created_at, "applied", c) for c in history.changes]
    timeline += [(d.created_at, "rejected", d) for d in history.rejected]
    timeline.sort(key=lambda item: item[0])
    return _page(
        "entity.html",
        admin=admin,
        h=history,
        timeline=timeline,
        dumps=_dumps,
        line=_line,
        ref=attachment_ref,
        codes={a.id: a.code for c in history.changes for a in c.attachments if a.code},
        thumbnail_types=THUMBNAIL_TYPES,
    )


@get("/attachments", summary="Uploads in progress and refused", include_in_schema=False)
async def attachments(
    admin: NamedDependency[Principal],
    upload_service: NamedDependency[UploadService],
    uploading_after: FromQuery[str | None] = None,
    refused_after: FromQuery[str | None] = None,
    done: FromQuery[str | None] = None,
) -> Template:
    pages = {}
    wanted: list[tuple[AttachmentState, str | None]] = [("uploading", uploading_after), ("refused", refused_after)]
    for state, after in wanted:
        rows = await upload_service.meta.list_attachments(
            admin.tenant, state=state, after=after or None, limit=PAGE + 1
        )
        views = [await admin_view(upload_service, r) for r in rows[:PAGE]]
        pages[state] = (views, rows[PAGE - 1].id if len(rows) > PAGE else None)
    return _page("attachments.html", admin=admin, pages=pages, done=done)


@get("/attachments/{attachment_id:str}/content", summary="An attachment's bytes", include_in_schema=False)
async def attachment_content(
    admin: NamedDependency[Principal],
    attachment_reader: NamedDependency[AttachmentReader],
    attachment_id: FromPath[str],
) -> Response[Any]:
    row = await attachment_reader.readable(admin, attachment_id)
    body = await open_range(await attachment_reader.sealed(row), row, 0, row.size)
    disposition = "inline" if row.media_type in THUMBNAIL_TYPES else f'attachment; filename="{row.id}"'
    headers = {
        "Content-Length": str(row.size),
        "ETag": f'"{row.id}"',
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": disposition,
    }
    return Stream(body, media_type=row.media_type, headers=headers)


@post("/attachments/{attachment_id:str}/replay", summary="Replay a refused upload", include_in_schema=False)
async def attachment_replay(
    admin: NamedDependency[Principal],
    upload_service: NamedDependency[UploadService],
    audit_log: NamedDependency[AuditLog],
    attachment_id: FromPath[str],
) -> Redirect:
    row = await upload_service.replay(admin.tenant, attachment_id)
    await audit_log.record(admin, "attachment.replay", attachment_id, {"state": row.state, "code": row.code})
    done = "re-admitted: the device uploads it again" if row.code is None else f"still refused: {row.code}"
    return Redirect("/admin/attachments", query_params={"done": f"{attachment_id} {done}"}, status_code=303)


@get("/integrity", summary="Verification runs and rows set aside", include_in_schema=False)
async def integrity(admin: NamedDependency[Principal], integrity_verifier: NamedDependency[Verifier]) -> Template:
    return _page("integrity.html", admin=admin, status=await integrity_status(integrity_verifier, admin.tenant))


@get("/dead-letters", summary="Dead letters", include_in_schema=False)
async def dead_letters(
    admin: NamedDependency[Principal],
    dead_letter_admin: NamedDependency[DeadLetterAdmin],
    status: FromQuery[str | None] = "open",
    code: FromQuery[str | None] = None,
    replica: FromQuery[str | None] = None,
    user: FromQuery[str | None] = None,
    entity: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
    done: FromQuery[str | None] = None,
) -> Template:
    f = {
        "status": status or None,
        "code": code or None,
        "replica": replica or None,
        "user": user or None,
        "entity": entity or None,
        "since": since or None,
        "until": until or None,
    }
    query = DeadLetterQuery(
        status=f["status"],
        code=f["code"],
        replica_id=f["replica"],
        user=f["user"],
        entity_id=f["entity"],
        since_ms=to_ms(_iso_input(f["since"])),
        until_ms=to_ms(_iso_input(f["until"])),
    )
    page = await dead_letter_admin.list_dead_letters(admin, query, before or None, PAGE)
    kept = {k: v for k, v in f.items() if v}
    return _page("dead_letters.html", admin=admin, page=page, filters=f, query=kept, done=done)


@get("/dead-letters/{replica:str}/{n:int}", summary="Dead letter detail", include_in_schema=False)
async def dead_letter(
    admin: NamedDependency[Principal],
    dead_letter_admin: NamedDependency[DeadLetterAdmin],
    replica: FromPath[str],
    n: FromPath[int],
    done: FromQuery[str | None] = None,
) -> Template:
    view = await dead_letter_admin.get_dead_letter(admin, replica, n)
    return _page("dead_letter.html", admin=admin, d=view, done=done, dumps=_dumps)


@post("/dead-letters/{replica:str}/{n:int}/replay", summary="Replay a dead letter", include_in_schema=False)
async def replay(
    admin: NamedDependency[Principal],
    dead_letter_admin: NamedDependency[DeadLetterAdmin],
    replica: FromPath[str],
    n: FromPath[int],
) -> Redirect:
    result = await dead_letter_admin.replay(admin, replica, n)
    done = result.outcome if result.error is None else f"rejected: {result.error.code}"
    return Redirect(f"/admin/dead-letters/{replica}/{n}", query_params={"done": done}, status_code=303)


@post("/dead-letters/{replica:str}/{n:int}/discard", summary="Discard a dead letter", include_in_schema=False)
async def discard(
    admin: NamedDependency[Principal],
    dead_letter_admin: NamedDependency[DeadLetterAdmin],
    replica: FromPath[str],
    n: FromPath[int],
) -> Redirect:
    await dead_letter_admin.discard(admin, replica, n)
    return Redirect(f"/admin/dead-letters/{replica}/{n}", query_params={"done": "discarded"}, status_code=303)


@get("/audit", summary="Audit log", include_in_schema=False)
async def audit(
    admin: NamedDependency[Principal],
    audit_log: NamedDependency[AuditLog],
    target: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> Template:
    page = await audit_log.audit(admin, target or None, whole(before, "before", 1, AUDIT_ID_MAX), 100)
    return _page("audit.html", admin=admin, page=page, target=target or "")


def _line(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _dumps(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _to_sign_in(_: WebRequest, __: Exception) -> Response[Any]:
    return Redirect("/admin/login", status_code=303)


def _error_page(_: WebRequest, exc: ApiError) -> Response[Any]:
    return _page("error.html", exc.status, status=exc.status, code=exc.code, message=exc.message)


def _unknown_tenant(_: WebRequest, __: Exception) -> Response[Any]:
    return _page("error.html", 401, status=401, code="tenant_unknown", message="the token's tenant does not exist")


async def content_security_policy(message: Message, scope: Scope) -> None:
    """``before_send`` hook: every response under ``/admin`` (pages, redirects, errors) gets the security headers."""
    if message["type"] != "http.response.start" or not scope["path"].startswith("/admin"):
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value


def admin_router(shared_secret: str, *, secure_cookies: bool = False) -> Router:
    """The ``/admin`` pages with their own cookie sign-in and CSRF protection (keyed by ``shared_secret``)."""
    csrf = CSRFConfig(
        secret=csrf_secret(shared_secret),
        cookie_name=CSRF_COOKIE,
        cookie_path="/admin",
        cookie_httponly=True,
        cookie_samesite="strict",
        cookie_secure=secure_cookies,
    )
    return Router(
        path="/admin",
        route_handlers=[
            home,
            login_page,
            login,
            logout,
            conflicts,
            conflict,
            override,
            entity,
            attachments,
            attachment_content,
            attachment_replay,
            integrity,
            dead_letters,
            dead_letter,
            replay,
            discard,
            audit,
            create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False),
        ],
        dependencies={"admin": Provide(signed_in, sync_to_thread=False)},
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf)],
        exception_handlers={SignInRequired: _to_sign_in, ApiError: _error_page, TenantNotFound: _unknown_tenant},
        include_in_schema=False,
    )
