"""Who is logged in: password hashes, sessions in SQL, roles, CSRF, login throttling.

* Passwords: scrypt (hashlib, salted per user); the parameters travel in
  the stored string, ``scrypt$n$r$p$salt$hash``, so they can be raised later
  without invalidating old hashes.  One hash costs tens of milliseconds of
  CPU: the web app computes them in worker threads (`hash_password_async`,
  `verify_password_async`, at most `HASHING_THREADS` at a time) so a log-in
  never stalls the event loop that also serves calls.
* Sessions: the cookie carries a random token; the database keeps only its
  SHA-256, the user, a CSRF token and a sliding expiry (`session_ttl` of
  inactivity).  HttpOnly, SameSite=Lax, Secure behind HTTPS.
* CSRF: every request that changes something (not GET/HEAD/OPTIONS) must
  carry the session's token in ``X-CSRF-Token`` or the form field
  ``csrf_token``; WebSocket handshakes must come from this site's origin.
* Roles: agent < supervisor < admin; `require(role)` guards a handler.
* Log-in attempts: throttled per user name and address, per address and
  per user name (`ivr.web.throttle`), never locking a user out for everyone.
* Tokens that do not have the shape of the ones this app makes (cookie,
  CSRF header or field) count as no token: never an error.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import delete, select, update

from caller_id.models import Agent, User, WebSession, utcnow
from caller_id.store import as_utc
from ivr.web.inputs import FORM_TYPES, form_fields, is_token, refusal
from ivr.web.keys import SESSIONS, USER
from ivr.web.throttle import LoginThrottle

ROLES = ("agent", "supervisor", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}
COOKIE = "ivr_session"
MIN_PASSWORD = 8
MAX_USERNAME = 80
MAX_PASSWORD = 1024
HASHING_THREADS = 2
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_NO_SESSION = ("/static/", "/healthz", "/metrics")
SLIDE_EVERY = dt.timedelta(seconds=30)  # a session's expiry is pushed on at most this often


# --- passwords ---------------------------------------------------------------------------


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected), maxmem=2**26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_HASHING = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="password-hash")


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, function, *args)


async def hash_password_async(password: str) -> str:
    return await _in_thread(hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    return await _in_thread(verify_password, password, stored)


# --- users -------------------------------------------------------------------------------


async def add_user(db: Any, username: str, password: str, role: str, agent_id: int | None = None) -> int:
    """Create a user; ValueError with a clear message for anything wrong."""
    username = (username or "").strip()
    if not username or len(username) > MAX_USERNAME or not username.isprintable() \
            or any(c.isspace() for c in username):
        raise ValueError(f"the user name must be 1-{MAX_USERNAME} characters without spaces")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password may have at most {MAX_PASSWORD} characters")
    if role == "agent" and agent_id is None:
        raise ValueError("an agent user needs the agent it logs in as (--agent-id or --agent-interface)")
    hashed = await hash_password_async(password)
    async with db.session() as session:
        if agent_id is not None and await session.get(Agent, agent_id) is None:
            raise ValueError(f"no agent with id {agent_id}")
        if await session.scalar(select(User.id).where(User.username == username)) is not None:
            raise ValueError(f"the user {username!r} exists already")
        user = User(username=username, password_hash=hashed, role=role, agent_id=agent_id, active=True)
        session.add(user)
        await session.commit()
        return user.id


async def agent_id_for_interface(db: Any, interface: str) -> int:
    async with db.session() as session:
        found = await session.scalar(select(Agent.id).where(Agent.interface == interface))
    if found is None:
        raise ValueError(f"no agent with interface {interface!r}")
    return found


# --- sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    role: str
    agent_id: int | None
    csrf_token: str
    session_id: int

    def has(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role, "agent_id": self.agent_id}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Log-ins kept in SQL (shared by every node), with the log-in throttle (shared through Redis when given)."""

    def __init__(self, db: Any, ttl: float, *, secure: bool = False, redis: Any = None):
        self.db = db
        self.ttl = dt.timedelta(seconds=ttl)
        self.secure = secure
        self.throttle = LoginThrottle(redis)

    async def log_in(self, username: str, password: str, address: str) -> tuple[str, CurrentUser] | None:
        """A new session token for good credentials; None otherwise (a failure is counted)."""
        user = None
        if 0 < len(username.strip()) <= MAX_USERNAME:
            async with self.db.session() as session:
                user = await session.scalar(select(User).where(User.username == username.strip()))
        # an unknown name costs the same time as a known one
        ok = await verify_password_async(password[:MAX_PASSWORD],
                                         user.password_hash if user is not None else _DUMMY_HASH)
        if user is None or not ok or not user.active or len(password) > MAX_PASSWORD:
            await self.throttle.failed(username, address)
            return None
        await self.throttle.succeeded(username, address)
        token = secrets.token_urlsafe(32)
        now = utcnow()
        async with self.db.session() as session:
            row = WebSession(token_hash=_token_hash(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                             created_at=now, last_seen=now, expires_at=now + self.ttl)
            session.add(row)
            await session.execute(delete(WebSession).where(WebSession.expires_at < now))
            await session.commit()
            return token, CurrentUser(user.id, user.username, user.role, user.agent_id, row.csrf_token, row.id)

    async def user_for(self, token: str | None) -> CurrentUser | None:
        """The logged-in user of a session token, sliding its expiry; None when absent or expired."""
        if not is_token(token):
            return None
        now = utcnow()
        async with self.db.session() as session:
            found = (await session.execute(
                select(WebSession, User).join(User, User.id == WebSession.user_id)
                .where(WebSession.token_hash == _token_hash(token)))).first()
            if found is None:
                return None
            row, user = found
            if as_utc(row.expires_at) < now or not user.active:
                await session.execute(delete(WebSession).where(WebSession.id == row.id))
                await session.commit()
                return None
            if now - as_utc(row.last_seen) > SLIDE_EVERY:  # not a write per request
                await session.execute(update(WebSession).where(WebSession.id == row.id)
                                      .values(last_seen=now, expires_at=now + self.ttl))
                await session.commit()
            return CurrentUser(user.id, user.username, user.role, user.agent_id, row.csrf_token, row.id)

    async def log_out(self, token: str | None) -> int | None:
        """End the session of a token; its id (None when there was none)."""
        if not is_token(token):
            return None
        async with self.db.session() as session:
            found = await session.scalar(select(WebSession.id).where(WebSession.token_hash == _token_hash(token)))
            if found is not None:
                await session.execute(delete(WebSession).where(WebSession.id == found))
                await session.commit()
            return found

    def set_cookie(self, response: web.StreamResponse, token: str, *, name: str = COOKIE, path: str = "/",
                   max_age: float | None = None, samesite: str = "Lax") -> None:
        """Every cookie of this app: HttpOnly, and Secure when `web.secure_cookies` is on."""
        response.set_cookie(name, token, httponly=True, samesite=samesite, secure=self.secure, path=path,
                            max_age=int(self.ttl.total_seconds() if max_age is None else max_age))

    def clear_cookie(self, response: web.StreamResponse, *, name: str = COOKIE, path: str = "/",
                     samesite: str = "Lax") -> None:
        response.del_cookie(name, path=path, secure=self.secure, httponly=True, samesite=samesite)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


# --- the middleware and guards ---------------------------------------------------------------


def origin_ok(request: web.Request) -> bool:
    """The request comes from a page of this site (or says nothing about its origin)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1].rstrip("/") == request.host


@web.middleware
async def session_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
    if request.path.startswith(_NO_SESSION):  # scripts, styles, probes: no database round trip
        request[USER] = None
        return await handler(request)
    sessions: Sessions = request.app[SESSIONS]
    user = await sessions.user_for(request.cookies.get(COOKIE))
    request[USER] = user
    if request.method not in _SAFE_METHODS and user is not None and not request.path.startswith("/login"):
        sent = request.headers.get("X-CSRF-Token")
        if sent is None and request.content_type in FORM_TYPES:
            sent = (await form_fields(request)).get("csrf_token")
        if not is_token(sent) or not hmac.compare_digest(sent, user.csrf_token) or not origin_ok(request):
            raise refusal(request, 403, "missing or wrong CSRF token")
    return await handler(request)


def require(role: str) -> Callable:
    """Handler decorator: a logged-in user with at least `role` (pages redirect to the log-in)."""

    def wrap(handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            user: CurrentUser | None = request.get(USER)
            if user is None:
                if request.path.startswith("/api/") or request.path == "/ws":
                    raise refusal(request, 401, "log in first")
                raise web.HTTPFound(f"/login?next={quote(request.path)}")
            if not user.has(role):
                raise refusal(request, 403, f"this needs the {role} role")
            return await handler(request)

        return guarded

    return wrap
