"""The platform's pages: sign-in, activities, users, your account, the audit log.

Views only gather what a template shows and hand changes to the same
functions the API uses (``cloud_bridge.views.async_*``), so a page and its API
call cannot disagree. Every page is a :class:`~cloud_bridge.access.Route` in
:data:`PAGES` with the action it needs; forms post back and answer with a
redirect (post/redirect/get), so no page needs JavaScript.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cloud_bridge import audit, identity, people, views
from cloud_bridge.access import ACCESS_KEY, SESSION_COOKIE, Route, async_sign_in, register
from cloud_bridge.app_keys import RUNNER_KEY
from cloud_bridge.errors import CentralError
from cloud_bridge.models import (
    CANCELED,
    OFFLINE,
    ONLINE,
    Activity,
    ActivityType,
    Gateway,
    Record,
    User,
)
from cloud_bridge.permissions import ROLE_HELP, ROLES, Action, scope
from cloud_bridge.web import fleet_pages, render, review_pages
from cloud_bridge.web.activity_page import activity_page, attachment
from cloud_bridge.web.render import page, see_other

logger = logging.getLogger(__name__)
A = Action

LIST_LIMIT = 100  # a page of the list; older ones behind a link (500 cost ~40 ms of CPU)
TABS = (
    ("online", "Online"),
    ("offline", "Offline"),
    ("completed", "Completed"),
    ("canceled", "Canceled"),
)


async def _tx(request: web.Request, fn: Any) -> Any:
    return await request.app[RUNNER_KEY].async_tx(fn)


async def form_of(request: web.Request) -> Mapping[str, str]:
    data = await request.post()
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def _problem(exc: CentralError) -> str:
    return exc.message


# --- the frame: start, stylesheet, sign-in, sign-out --------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    actor = views.actor_of(request)
    if not actor.signed_in:
        raise see_other("/signin")
    links = render.nav_for(request.app, actor)
    raise see_other(links[0][1] if links else "/account")


async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        render.STATIC / "platform.css",
        headers={"Content-Type": "text/css; charset=utf-8", "Cache-Control": "max-age=300"},
    )


async def signin_form(request: web.Request) -> web.StreamResponse:
    if views.actor_of(request).signed_in:
        raise see_other(render.safe_next(request.query.get("next")))
    return page(
        request,
        "signin.html",
        title="Sign in",
        next=render.safe_next(request.query.get("next")),
        username="",
        error=None,
    )


async def signin(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    username = form.get("username", "").strip()[:64]
    password = form.get("password", "")[:1024]
    nxt = render.safe_next(form.get("next"))
    if not username or not password:
        return page(
            request,
            "signin.html",
            400,
            title="Sign in",
            next=nxt,
            username=username,
            error="Enter your user name and password.",
        )
    try:
        done = await async_sign_in(request, username, password, "web")
    except CentralError as exc:
        response = page(
            request,
            "signin.html",
            exc.status,
            title="Sign in",
            next=nxt,
            username=username,
            error=exc.message,
        )
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    response = see_other(nxt)
    response.set_cookie(
        SESSION_COOKIE,
        done.token,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=request.app[ACCESS_KEY].policy.session_max_s,
    )
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    actor = views.actor_of(request)
    if actor.session_hash is not None:
        token_hash = actor.session_hash

        def work(s: Session) -> None:
            identity.end_session(s, token_hash)
            audit.record(s, actor, "session.sign_out", "user", actor.username, "signed out")

        await _tx(request, work)
    response = see_other("/signin", "signed_out")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# --- your account: password and API tokens ---------------------------------------


async def account(
    request: web.Request,
    *,
    error: str | None = None,
    new_token: str | None = None,
    status: int = 200,
) -> web.Response:
    actor = views.actor_of(request)
    assert actor.username is not None

    def work(s: Session) -> dict[str, Any]:
        user = people.get_user(s, actor.username or "")
        return {
            "user": user,
            "sites": people.sites_of(s, user.username),
            "tokens": identity.tokens_of(s, user.username),
        }

    data = await _tx(request, work)
    return page(
        request,
        "account.html",
        status,
        title="Your account",
        error=error,
        new_token=new_token,
        role_help=ROLE_HELP,
        **data,
    )


async def account_page(request: web.Request) -> web.Response:
    return await account(request)


async def account_password(request: web.Request) -> web.StreamResponse:
    actor = views.actor_of(request)
    assert actor.username is not None
    form = await form_of(request)
    current, new, again = form.get("current", ""), form.get("new", ""), form.get("again", "")
    if len(new) < 8 or len(new) > 1024:
        return await account(
            request, error="A new password needs 8 to 1024 characters.", status=400
        )
    if new != again:
        return await account(request, error="The two new passwords differ.", status=400)
    from cloud_bridge.access import async_check_password

    try:
        ok = await async_check_password(request, actor.username, current)
    except CentralError as exc:
        return await account(request, error=exc.message, status=exc.status)
    if ok is None:
        return await account(request, error="Your current password is not right.", status=403)
    await views.async_put_user(request, actor.username, people.UserChange(password=new))
    raise see_other("/account", "password_changed")


async def account_token_create(request: web.Request) -> web.StreamResponse:
    actor = views.actor_of(request)
    form = await form_of(request)
    name = form.get("name", "").strip()[:100]
    if not name:
        return await account(
            request, error="Give the token a name (what script uses it).", status=400
        )
    token = await _create_token(request, actor.username or "", name)
    return await account(request, new_token=token, status=201)


async def _create_token(request: web.Request, owner: str, name: str) -> str:
    actor = views.actor_of(request)

    def work(s: Session) -> str:
        people.get_user(s, owner)
        token, row = identity.create_token(s, owner, name, actor.username)
        audit.record(
            s,
            actor,
            "token.create",
            "user",
            owner,
            f"created API token {name!r} ({row.id}) for {owner!r}",
            token_id=row.id,
        )
        return token

    token: str = await _tx(request, work)
    return token


async def _revoke(request: web.Request, owner: str | None) -> None:
    actor = views.actor_of(request)
    token_id = request.match_info["token_id"]

    def work(s: Session) -> None:
        from cloud_bridge.models import ApiToken

        row = s.get(ApiToken, token_id)
        if row is None or (owner is not None and row.username != owner):
            raise CentralError("not_found", f"No API token {token_id!r} exists.", 404)
        identity.revoke_token(s, token_id)
        audit.record(
            s,
            actor,
            "token.revoke",
            "user",
            row.username,
            f"revoked API token {row.name!r} ({row.id}) of {row.username!r}",
            token_id=row.id,
        )

    await _tx(request, work)


async def account_token_revoke(request: web.Request) -> web.StreamResponse:
    await _revoke(request, views.actor_of(request).username)
    raise see_other("/account", "token_revoked")


# --- activities ---------------------------------------------------------------------


def _after(before: str) -> tuple[datetime, str] | None:
    """A page's "older" bound: ``<updated_at ISO>~<id>`` of its last row (None if unreadable)."""
    when, sep, aid = before.partition("~")
    try:
        at = datetime.fromisoformat(when)
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC), aid) if sep and aid else None


def _activity_rows(
    s: Session, tab: str, query: Mapping[str, str], actor: Any, before: str = ""
) -> list[dict[str, Any]]:
    """Up to LIST_LIMIT + 1 rows (the extra one says there are older ones)."""
    completed = select(Record.activity_id).where(Record.status == "completed")
    stmt = select(Activity).order_by(Activity.updated_at.desc(), Activity.id).limit(LIST_LIMIT + 1)
    if (bound := _after(before)) is not None:
        at, aid = bound
        stmt = stmt.where(
            or_(Activity.updated_at < at, and_(Activity.updated_at == at, Activity.id > aid))
        )
    if tab == "online":
        stmt = stmt.where(Activity.state == ONLINE, Activity.id.not_in(completed))
    elif tab == "offline":
        stmt = stmt.where(Activity.state == OFFLINE)
    elif tab == "completed":
        stmt = stmt.where(Activity.state == ONLINE, Activity.id.in_(completed))
    elif tab == "canceled":
        stmt = stmt.where(Activity.state == CANCELED)
    if q := query.get("q", "").strip()[:200]:
        like = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(func.lower(Activity.title).like(like), func.lower(Activity.id).like(like))
        )
    for name, column in (
        ("type", Activity.type),
        ("responsible", Activity.responsible),
        ("gateway", Activity.holder_gateway),
    ):
        if value := query.get(name, "").strip()[:64]:
            stmt = stmt.where(column == value)
    if scope(actor, A.ACTIVITIES_READ) == "own":
        stmt = stmt.where(
            or_(Activity.responsible == actor.username, Activity.holder_user == actor.username)
        )
    acts = list(s.scalars(stmt))
    statuses = (
        dict(
            s.execute(
                select(Record.activity_id, Record.status).where(
                    Record.activity_id.in_([a.id for a in acts])
                )
            ).all()
        )
        if acts
        else {}
    )
    return [{"a": a, "record_status": statuses.get(a.id)} for a in acts]


async def activities(request: web.Request) -> web.Response:
    actor = views.actor_of(request)
    tab = request.query.get("state", "online")
    if tab not in dict(TABS):
        tab = "online"
    query = {k: request.query.get(k, "") for k in ("q", "type", "responsible", "gateway")}

    before = request.query.get("before", "")[:120]

    def work(s: Session) -> dict[str, Any]:
        counts = dict(
            s.execute(select(Activity.state, func.count()).group_by(Activity.state)).all()
        )
        return {
            "rows": _activity_rows(s, tab, query, actor, before),
            "types": list(s.scalars(select(ActivityType.name).order_by(ActivityType.name))),
            "counts": counts,
        }

    data = await _tx(request, work)
    older = None
    if len(data["rows"]) > LIST_LIMIT:
        del data["rows"][LIST_LIMIT:]
        last = data["rows"][-1]["a"]
        keep = {k: v for k, v in query.items() if v}
        older = "/activities?" + urlencode(
            {"state": tab, **keep, "before": f"{last.updated_at.isoformat()}~{last.id}"}
        )
    return page(
        request,
        "activities.html",
        title="Activities",
        tab=tab,
        tabs=TABS,
        query=query,
        older=older,
        paged=_after(before) is not None,
        **data,
    )


async def activity_new(
    request: web.Request,
    *,
    error: str | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    def work(s: Session) -> dict[str, Any]:
        return {
            "types": list(s.scalars(select(ActivityType).order_by(ActivityType.name))),
            "users": list(
                s.scalars(select(User).where(User.disabled.is_(False)).order_by(User.username))
            ),
        }

    data = await _tx(request, work)
    return page(
        request,
        "activity_new.html",
        status,
        title="New activity",
        error=error,
        values=values or {},
        **data,
    )


async def activity_new_page(request: web.Request) -> web.Response:
    return await activity_new(request)


async def activity_create(request: web.Request) -> web.StreamResponse:
    actor = views.actor_of(request)
    form = await form_of(request)
    title = form.get("title", "").strip()
    type_name = form.get("type", "")
    responsible = form.get("responsible", "")
    if not title or len(title) > 300:
        return await activity_new(
            request, error="An activity needs a title of 1-300 characters.", values=form, status=400
        )
    try:
        a = await _tx(
            request,
            lambda s: views.create_activity_tx(s, actor, title, type_name, responsible, None),
        )
    except CentralError as exc:
        return await activity_new(request, error=exc.message, values=form, status=exc.status)
    raise see_other(f"/activities/{a.id}", "created")


async def _act(request: web.Request, fn: Any, done: str) -> web.StreamResponse:
    aid = request.match_info["activity_id"]
    try:
        await fn(aid)
    except CentralError as exc:
        return await activity_page(request, error=exc.message, status=exc.status)
    raise see_other(f"/activities/{aid}", done)


async def activity_approve(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    return await _act(
        request,
        lambda aid: views.async_approve(request, aid, form.get("password", "")[:1024], None),
        "approved",
    )


async def activity_dispatch(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    gateway_id = form.get("gateway_id", "").strip()[:64]
    return await _act(
        request, lambda aid: views.async_dispatch(request, aid, gateway_id), "dispatched"
    )


async def activity_recall(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    reason = form.get("reason", "").strip()[:2000] or "Recalled by central."
    return await _act(request, lambda aid: views.async_cancel(request, aid, reason), "recalled")


# --- users ----------------------------------------------------------------------------


async def users(request: web.Request) -> web.Response:
    q = request.query.get("q", "").strip()[:64].lower()
    role = request.query.get("role", "")

    def work(s: Session) -> dict[str, Any]:
        sites = people.all_sites(s)
        rows = [
            {"u": u, "sites": sites.get(u.username, {})}
            for u in people.list_users(s)
            if (not q or q in u.username.lower() or q in (u.display_name or "").lower())
            and (not role or u.role == role)
        ]
        return {"rows": rows}

    data = await _tx(request, work)
    return page(request, "users.html", title="Users", q=q, role=role, roles=ROLES, **data)


def _gateways(s: Session) -> list[str]:
    return list(s.scalars(select(Gateway.id).order_by(Gateway.id)))


async def user_form(
    request: web.Request,
    username: str | None,
    *,
    error: str | None = None,
    values: Mapping[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    def work(s: Session) -> dict[str, Any]:
        user = people.get_user(s, username) if username else None
        return {
            "user": user,
            "sites": people.sites_of(s, username) if username else {},
            "gateways": _gateways(s),
            "tokens": identity.tokens_of(s, username) if username else [],
            "history": audit.entries(
                s, audit.Filter(target_type="user", target_id=username, limit=20)
            )
            if username
            else [],
        }

    data = await _tx(request, work)
    return page(
        request,
        "user.html",
        status,
        title=username or "New user",
        error=error,
        values=values,
        roles=ROLES,
        role_help=ROLE_HELP,
        **data,
    )


async def user_new_page(request: web.Request) -> web.Response:
    return await user_form(request, None)


async def user_page(request: web.Request) -> web.Response:
    return await user_form(request, request.match_info["username"])


def _change_from(form: Any, new: bool) -> people.UserChange:
    sites_text = form.get("sites", "")
    chosen = form.getall("site", [])
    sites = sorted(
        {*chosen, *(w.strip() for w in sites_text.replace(",", " ").split() if w.strip())}
    )
    lead = sorted(set(form.getall("lead", [])))
    password = str(form.get("password", "")) or None
    return people.UserChange(
        password=password,
        offline=form.get("offline") == "on",
        display_name=str(form.get("display_name", "")).strip()[:200] or None,
        role=str(form.get("role", "crew")),
        sites=[str(x) for x in sites],
        site_lead=[str(x) for x in lead if x in sites],
        disabled=form.get("disabled") == "on",
    )


async def user_save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    new = request.path == "/users"
    username = (
        str(form.get("username", "")).strip()
        if request.path == "/users"
        else request.match_info["username"]
    )
    change = _change_from(form, new)
    if change.password is not None and not 8 <= len(change.password) <= 1024:
        return await user_form(
            request,
            None if request.path == "/users" else username,
            error="A password needs 8 to 1024 characters.",
            values=dict(form),
            status=400,
        )
    if request.path == "/users":
        exists = await _tx(request, lambda s: s.get(User, username) is not None)
        if exists:
            return await user_form(
                request,
                None,
                error=f"A user {username!r} already exists.",
                values=dict(form),
                status=409,
            )
    try:
        done = await views.async_put_user(request, username, change)
    except CentralError as exc:
        return await user_form(
            request,
            None if request.path == "/users" else username,
            error=exc.message,
            values=dict(form),
            status=exc.status,
        )
    raise see_other(f"/users/{username}", "created" if done.created else "saved")


async def user_token_create(request: web.Request) -> web.StreamResponse:
    username = request.match_info["username"]
    form = await form_of(request)
    name = form.get("name", "").strip()[:100]
    if not name:
        return await user_form(request, username, error="Give the token a name.", status=400)
    token = await _create_token(request, username, name)
    # Shown once: the page that answers the form is the only place it appears.
    return page(
        request,
        "token_created.html",
        201,
        title="Token created",
        token=token,
        owner=username,
        back=f"/users/{username}",
    )


async def user_token_revoke(request: web.Request) -> web.StreamResponse:
    username = request.match_info["username"]
    await _revoke(request, username)
    raise see_other(f"/users/{username}", "token_revoked")


# --- the audit log ---------------------------------------------------------------------


async def audit_page(request: web.Request) -> web.Response:
    try:
        f = views.audit_filter(request.query)
    except CentralError as exc:
        return render.error_page(request, 400, exc.message)
    entries = await _tx(request, lambda s: audit.entries(s, f))
    query = {
        k: request.query.get(k, "")
        for k in ("actor", "action", "target_type", "target_id", "from", "to", "q")
    }
    older = None
    if len(entries) == f.limit:
        older = "/audit?" + urlencode(
            {**{k: v for k, v in query.items() if v}, "before": entries[-1].id}
        )
    return page(
        request,
        "audit.html",
        title="Audit log",
        entries=entries,
        query=query,
        who=audit.who,
        older=older,
    )


PAGES: list[Route] = [
    Route("GET", "/", index, "Start: your first page", A.PUBLIC, page=True),
    Route("GET", "/static/platform.css", stylesheet, "The stylesheet", A.PUBLIC, page=True),
    Route("GET", "/signin", signin_form, "Sign-in form", A.PUBLIC, page=True),
    Route("POST", "/signin", signin, "Sign in", A.PUBLIC, page=True),
    Route("POST", "/signout", signout, "Sign out", A.SIGNED_IN, page=True),
    Route("GET", "/account", account_page, "Your account and API tokens", A.SIGNED_IN, page=True),
    Route(
        "POST",
        "/account/password",
        account_password,
        "Change your password",
        A.SIGNED_IN,
        page=True,
    ),
    Route(
        "POST",
        "/account/tokens",
        account_token_create,
        "Create an API token",
        A.SIGNED_IN,
        page=True,
    ),
    Route(
        "POST",
        "/account/tokens/{token_id}/revoke",
        account_token_revoke,
        "Revoke your token",
        A.SIGNED_IN,
        page=True,
    ),
    Route("GET", "/activities", activities, "Activities", A.ACTIVITIES_READ, page=True),
    Route(
        "GET",
        "/activities/new",
        activity_new_page,
        "New activity form",
        A.ACTIVITIES_WRITE,
        page=True,
    ),
    Route(
        "POST", "/activities", activity_create, "Create an activity", A.ACTIVITIES_WRITE, page=True
    ),
    Route(
        "GET",
        "/activities/{activity_id}",
        activity_page,
        "One activity",
        A.ACTIVITIES_READ,
        page=True,
    ),
    Route(
        "POST",
        "/activities/{activity_id}/approve",
        activity_approve,
        "Approve",
        A.ACTIVITIES_APPROVE,
        page=True,
    ),
    Route(
        "POST",
        "/activities/{activity_id}/dispatch",
        activity_dispatch,
        "Dispatch",
        A.ACTIVITIES_DISPATCH,
        page=True,
    ),
    Route(
        "POST",
        "/activities/{activity_id}/recall",
        activity_recall,
        "Recall",
        A.ACTIVITIES_DISPATCH,
        page=True,
    ),
    Route(
        "GET",
        "/attachments/{sha256}",
        attachment,
        "A photo or signature",
        A.ACTIVITIES_READ,
        page=True,
    ),
    Route("GET", "/users", users, "Users", A.USERS_READ, page=True),
    Route("GET", "/users/new", user_new_page, "New user form", A.USERS_WRITE, page=True),
    Route("POST", "/users", user_save, "Create a user", A.USERS_WRITE, page=True),
    Route("GET", "/users/{username}", user_page, "One user", A.USERS_READ, page=True),
    Route("POST", "/users/{username}", user_save, "Change a user", A.USERS_WRITE, page=True),
    Route(
        "POST",
        "/users/{username}/tokens",
        user_token_create,
        "Create a token for a user",
        A.TOKENS_MANAGE,
        page=True,
    ),
    Route(
        "POST",
        "/users/{username}/tokens/{token_id}/revoke",
        user_token_revoke,
        "Revoke a user's token",
        A.TOKENS_MANAGE,
        page=True,
    ),
    Route("GET", "/audit", audit_page, "The audit log", A.AUDIT_READ, page=True),
    *fleet_pages.PAGES,
    *review_pages.PAGES,
]


def add_routes(app: web.Application) -> None:
    register(app, PAGES)
