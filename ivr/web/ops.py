"""For operations: /healthz for load balancers, /metrics for Prometheus (no log-in).

``/healthz`` answers 200 while this node can serve (the database answers),
with ``"status": "ok"``, or ``"degraded"`` when Asterisk's manager or the
hub between nodes is down (calls still flow then; pages are not live);
503 with ``"failing"`` when the database does not answer within
`DB_TIMEOUT` seconds.  It answers within that time whatever the database
does: the check reads a table through the pool like any request would, and
runs on its own, so a stuck connection delays only the check (polls that come
meanwhile wait for the same check, never for a pile of them).

Anonymous callers get the status alone.  The details (what failed, the
manager's address and version, open sockets) are for a logged-in supervisor
or administrator, or for ``Authorization: Bearer <web.healthz_token>`` when
that token is configured.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, Awaitable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from ivr.metrics import AgentSideCollector, exposition
from ivr.web.auth import COOKIE
from ivr.web.inputs import Nothing, params
from ivr.web.keys import AGENT_SIDE, SERVICES, SESSIONS, SOCKETS

routes = web.RouteTableDef()
METRICS = web.AppKey("metrics", CollectorRegistry)
DB_TIMEOUT = 2.0


class DatabaseCheck:
    """One check of the database at a time, shared by the polls that come while it runs."""

    def __init__(self, db: Any):
        self._db = db
        self._running: asyncio.Future | None = None

    async def result(self, timeout: float) -> str:
        if self._running is None or self._running.done():
            self._running = _detached(self._db.crm_version())
        outcome = await _within(self._running, timeout)
        if outcome is _LATE:
            return f"failing: no answer within {timeout:g} s"
        if isinstance(outcome, BaseException):
            return f"failing: {type(outcome).__name__}: {outcome}" if str(outcome) else \
                f"failing: {type(outcome).__name__}"
        return "ok"

    async def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)


HEALTH = web.AppKey("health", DatabaseCheck)
_LATE = object()


def _detached(awaitable: Awaitable[Any]) -> asyncio.Future:
    """A task whose failure is kept as its result: nobody may be waiting for it any more."""
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


async def _within(task: asyncio.Future, timeout: float) -> Any:
    """The task's result or exception, or _LATE once `timeout` passed (the task goes on)."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        return _LATE
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


def install(app: web.Application) -> None:
    """The metrics registry of this app (the agent side it serves, read at each scrape) and its health check."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentSideCollector(app[AGENT_SIDE], app[SERVICES], sockets=lambda: len(app[SOCKETS])))
    app[METRICS] = registry
    app[HEALTH] = DatabaseCheck(app[SERVICES].db)

    async def close(app: web.Application) -> None:
        await app[HEALTH].close()

    app.on_cleanup.append(close)


async def _may_see_details(request: web.Request, deadline: float) -> bool:
    token = request.app[SERVICES].config.web.healthz_token
    sent = request.headers.get("Authorization", "")
    if token and sent.startswith("Bearer ") and hmac.compare_digest(
            sent[7:].encode("utf-8", "surrogateescape"), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return False
    loop = asyncio.get_running_loop()
    user = await _within(_detached(request.app[SESSIONS].user_for(cookie)), max(0.0, deadline - loop.time()))
    return user is not _LATE and not isinstance(user, BaseException) and user is not None and user.has("supervisor")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    params(request, Nothing)
    agent_side = request.app[AGENT_SIDE]
    deadline = asyncio.get_running_loop().time() + DB_TIMEOUT
    database, details = await asyncio.gather(request.app[HEALTH].result(DB_TIMEOUT),
                                             _may_see_details(request, deadline))
    ami = agent_side.ami
    ami_connected = None if ami is None else bool(ami.connected)
    hub_up = bool(getattr(agent_side.hub, "connected", True))
    status = "failing" if database != "ok" else "degraded" if ami_connected is False or not hub_up else "ok"
    answer: dict[str, Any] = {"status": status}
    if details:
        answer["checks"] = {"database": database, "ami": agent_side.describe(), "ami_connected": ami_connected,
                            "hub": "connected" if hub_up else "reconnecting",
                            "web_sockets": len(request.app[SOCKETS])}
    return web.json_response(answer, status=503 if status == "failing" else 200)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    params(request, Nothing)
    return web.Response(body=exposition(request.app[METRICS]), headers={"Content-Type": CONTENT_TYPE_LATEST})
