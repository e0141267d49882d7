"""The HTML pages: log-in, the agent's screen, the supervisors' wallboard and reports.

Pages are small shells (``templates/*.html``) filled with the user's name,
role and CSRF token (``$name``) and the words of the page's language
(``{{key}}``, from ``static/i18n``: see `ivr.web.i18n`); the live content is
drawn by ``static/*.js`` from the WebSocket and the REST API in the same
language.  A shell takes in another with ``<!--#include file="x.html" -->``:
the agent's screen, the wallboard and the reports share ``head.html``, which loads the
page's own script, ``static/<page>.js`` for ``<page>.html``.
``/language?to=en`` switches a browser's language.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import math
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from aiohttp import web
from msgspec import Meta
from sqlalchemy import select

from caller_id.models import Agent
from ivr.web import i18n
from ivr.web.auth import COOKIE, MAX_PASSWORD, MAX_USERNAME, require
from ivr.web.inputs import Input, Nothing, form_body, is_token, params, text
from ivr.web.keys import SERVICES, SESSIONS, SOCKETS, USER

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
LOGIN_COOKIE = "ivr_login"
SERVICE_LEVEL_TARGET = 0.8  # the wallboard shows a service level below this as breached
LANGUAGE_COOKIE_AGE = 365 * 86400
routes = web.RouteTableDef()
_cache: dict[str, str] = {}
_SLOTS = re.compile(r"\$([a-z_]+)|\{\{\s*([a-z0-9_.]+)\s*\}\}")
_INCLUDE = re.compile(r'<!--#include file="([a-z0-9_-]+\.html)" -->\n?')


def _static_version() -> str:
    """Changes whenever a static file does: pages link ``/static/x.js?v=...``, so no browser keeps
    an old script after an upgrade."""
    digest = hashlib.sha256()
    for path in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(STATIC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


STATIC_VERSION = _static_version()


def _shell(name: str) -> str:
    """The shell `name` with the shells it includes in place (read once)."""
    template = _cache.get(name)
    if template is None:
        text = (TEMPLATES / name).read_text(encoding="utf-8")
        template = _cache[name] = _INCLUDE.sub(lambda found: _shell(found.group(1)), text)
    return template


def render(name: str, language: str, **values: Any) -> web.Response:
    """The shell `name` with ``$value`` and ``{{translation}}`` slots filled, every one HTML-escaped."""
    template = _shell(name)
    values.setdefault("static", STATIC_VERSION)
    values.setdefault("lang", language)

    def fill(found: re.Match[str]) -> str:
        if found.group(1) is not None:
            return html.escape(str(values[found.group(1)]))
        return html.escape(i18n.translate(language, found.group(2)))

    return web.Response(text=_SLOTS.sub(fill, template), content_type="text/html", charset="utf-8")


def language_of(request: web.Request) -> str:
    return i18n.choose(request, request.app[SERVICES].config.web.language)


def _switch(request: web.Request, language: str) -> str:
    """Where the header's language link goes: the other language, back to this page."""
    return f"/language?to={language}&next={quote(request.path_qs, safe='/')}"


async def _display_name(request: web.Request) -> str:
    """The agent's name for the header (the log-in name when the user is no agent, or it cannot be read)."""
    user = request[USER]
    if user.agent_id is None:
        return user.username
    try:
        async with request.app[SERVICES].db.session() as session:
            name = await session.scalar(select(Agent.name).where(Agent.id == user.agent_id))
    except Exception:  # noqa: BLE001 - the page works with the log-in name
        return user.username
    return name or user.username


async def _page(request: web.Request, name: str, title_key: str) -> web.Response:
    """The page `name` (``<page>.html``, drawn by ``static/<page>.js``) for the logged-in user."""
    user = request[USER]
    language = language_of(request)
    other = next((lang for lang in i18n.LANGUAGES if lang != language), language)
    return render(name, language, script=name.removesuffix(".html"), title=i18n.translate(language, title_key),
                  username=user.username, display_name=await _display_name(request),
                  role=i18n.translate(language, f"role.{user.role}"),
                  csrf=user.csrf_token, agent_id=user.agent_id if user.agent_id is not None else "",
                  agent_link="" if user.agent_id is not None else "hidden",
                  wallboard_link="" if user.has("supervisor") else "hidden",
                  sl_target=SERVICE_LEVEL_TARGET, timezone=request.app[SERVICES].config.timezone,
                  other_language=other, other_language_name=i18n.translate(other, "language.name"),
                  switch_language=_switch(request, other))


def home_of(user: Any) -> str:
    return "/wallboard" if user.has("supervisor") else "/agent"


def _safe_next(target: str | None) -> str | None:
    """A local path to go back to after logging in (never another site)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


_Target = text(2000, min_length=0)


class LoginQuery(Input):
    next: _Target = ""


class LoginForm(Input):
    username: text(MAX_USERNAME, min_length=0) = ""
    password: Annotated[str, Meta(max_length=MAX_PASSWORD)] = ""
    login_token: Annotated[str, Meta(max_length=128)] = ""
    next: _Target = ""


class LogoutForm(Input):
    csrf_token: Annotated[str, Meta(max_length=128)] = ""


def _login_page(request: web.Request, error: str, target: str, status: int = 200,
                headers: dict[str, str] | None = None, **values: Any) -> web.Response:
    """The log-in form with a fresh token, also set as a cookie: a form posted from another site lacks it.
    `error` is the key of its message."""
    token = secrets.token_urlsafe(24)
    language = language_of(request)
    other = next((lang for lang in i18n.LANGUAGES if lang != language), language)
    response = render("login.html", language, error=i18n.translate(language, error, **values) if error else "",
                      next=target, login_token=token, other_language=other,
                      other_language_name=i18n.translate(other, "language.name"),
                      switch_language=_switch(request, other))
    request.app[SESSIONS].set_cookie(response, token, name=LOGIN_COOKIE, path="/login", max_age=3600,
                                     samesite="Strict")
    response.set_status(status)
    response.headers.update(headers or {})
    return response


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return _login_page(request, "", _safe_next(params(request, LoginQuery).next) or "")


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    try:
        form = await form_body(request, LoginForm)
    except web.HTTPException as exc:
        if exc.status == 413:
            raise
        return _login_page(request, "login.error.unacceptable", "", exc.status)
    target = _safe_next(form.next) or ""
    sessions = request.app[SESSIONS]
    address = request.remote or "?"
    expected = request.cookies.get(LOGIN_COOKIE)
    if not is_token(expected) or not is_token(form.login_token) or not hmac.compare_digest(form.login_token,
                                                                                           expected):
        return _login_page(request, "login.error.expired", target, 403)
    verdict = await sessions.throttle.check(form.username, address)
    if verdict.wait > 0:
        wait = math.ceil(verdict.wait)
        return _login_page(request, "login.error.throttled", target, 429, {"Retry-After": str(wait)},
                           seconds=wait)
    if verdict.delay > 0:  # a name under attack from many addresses: slower, never shut
        await asyncio.sleep(verdict.delay)
    found = await sessions.log_in(form.username, form.password, address)
    if found is None:
        return _login_page(request, "login.error.wrong", target, 401)
    token, user = found
    response = web.HTTPFound(target or home_of(user))
    sessions.set_cookie(response, token)
    sessions.clear_cookie(response, name=LOGIN_COOKIE, path="/login", samesite="Strict")
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    if request.body_exists:
        await form_body(request, LogoutForm)  # the CSRF token was checked on the way in
    sessions = request.app[SESSIONS]
    ended = await sessions.log_out(request.cookies.get(COOKIE))
    if ended is not None:  # this node's pages of that session; other nodes notice within live.RECHECK
        await request.app[SOCKETS].close_session(ended)
    response = web.HTTPFound("/login")
    sessions.clear_cookie(response)
    raise response


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    params(request, Nothing)
    user = request[USER]
    raise web.HTTPFound("/login" if user is None else home_of(user))


@routes.get("/agent")
@require("agent")
async def agent_page(request: web.Request) -> web.Response:
    params(request, Nothing)
    user = request[USER]
    if user.agent_id is None:  # a supervisor or admin who takes no calls
        if user.has("supervisor"):
            raise web.HTTPFound("/wallboard")
        raise web.HTTPForbidden(text=i18n.translate(language_of(request), "agent.not_linked"))
    return await _page(request, "agent.html", "agent.title")


@routes.get("/wallboard")
@require("supervisor")
async def wallboard_page(request: web.Request) -> web.Response:
    params(request, Nothing)
    return await _page(request, "wallboard.html", "wallboard.title")


@routes.get("/reports")
@require("supervisor")
async def reports_page(request: web.Request) -> web.Response:
    """The reports (`ivr.web.reports`): the page keeps its filters in its own address, so no parameter is
    the server's."""
    return await _page(request, "reports.html", "reports.title")


class LanguageQuery(Input):
    to: Literal[i18n.LANGUAGES]  # type: ignore[valid-type]
    next: _Target = ""


@routes.get("/language")
async def switch_language(request: web.Request) -> web.StreamResponse:
    """Keep the language this browser chose (a cookie, a year) and go back to the page."""
    query = params(request, LanguageQuery)
    response = web.HTTPFound(_safe_next(query.next) or "/")
    request.app[SESSIONS].set_cookie(response, query.to, name=i18n.COOKIE, max_age=LANGUAGE_COOKIE_AGE)
    raise response
