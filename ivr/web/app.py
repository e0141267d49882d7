"""The web application for agents and supervisors (aiohttp).

`build_app(services, agent_side)` wires the pages (`ivr.web.pages`), the
live WebSocket (`ivr.web.live`), the REST API (`ivr.web.api`, with the
reports of `ivr.web.reports`) and the operations endpoints (`ivr.web.ops`)
behind the session middleware (`ivr.web.auth`); `start_web` runs it on ``web.host:web.port`` and returns
the runner to clean up with.  Static files (CSS, JavaScript) are served from
``ivr/web/static`` (Chart.js, for the reports' charts, in ``static/vendor``);
nothing is loaded from elsewhere.

Every answer of the app, errors and static files included, carries the
security headers (`security_headers`): a Content-Security-Policy without
inline script or style attributes that forbids framing, nosniff, a strict
Referrer-Policy; and ``Cache-Control: no-store`` on everything but the
versioned static files, since pages and API answers carry personal data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from ivr.services import AgentSide, Services
from ivr.web import api, live, ops, pages, reports  # noqa: F401 - reports declares its routes in api's
from ivr.web.auth import Sessions, session_middleware
from ivr.web.inputs import MAX_BODY, ClientGone, refusal, too_large
from ivr.web.keys import AGENT_SIDE, SERVICES, SESSIONS, SOCKETS
from ivr.web.live import LiveSockets
from ivr.web.pages import STATIC

log = logging.getLogger(__name__)
_REBUILD = web.AppKey("answered_rebuild", list)  # the task counting answered calls per agent from call records
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")


def build_app(services: Services, agent_side: AgentSide) -> web.Application:
    settings = services.config.web
    app = web.Application(middlewares=[_bodies, api.json_errors, session_middleware], client_max_size=MAX_BODY)
    app[SERVICES] = services
    app[AGENT_SIDE] = agent_side
    app[SESSIONS] = Sessions(services.db, settings.session_ttl, secure=settings.secure_cookies,
                             redis=services.redis)
    app[SOCKETS] = LiveSockets()
    app[_REBUILD] = []
    app.add_routes(pages.routes)
    app.add_routes(live.routes)
    app.add_routes(api.routes)
    app.add_routes(ops.routes)
    ops.install(app)
    app.router.add_static("/static", STATIC)
    app.on_response_prepare.append(security_headers)
    app.on_startup.append(_count_agents_answered)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_stop_counting)
    return app


REBUILD_TIMEOUT = 30.0


async def _count_agents_answered(app: web.Application) -> None:
    """The wallboard's answered calls per agent since the window's start, from the call records (in the
    background: the pages open meanwhile), as the queue figures are rebuilt when the server starts."""
    agent_side = app[AGENT_SIDE]
    if getattr(agent_side, "center", None) is None:
        return

    async def rebuild() -> None:
        try:
            async with asyncio.timeout(REBUILD_TIMEOUT):
                counted = await agent_side.queue_state.rebuild_answered(app[SERVICES].db)
            log.info("wallboard: %d answered calls per agent counted from call records", counted)
        except Exception as exc:  # noqa: BLE001 - the counts start from the live events instead
            log.warning("wallboard: answered calls per agent not read from call records (%s)", exc)

    app[_REBUILD].append(asyncio.get_running_loop().create_task(rebuild(), name="answered-per-agent"))


async def _stop_counting(app: web.Application) -> None:
    for task in app[_REBUILD]:
        task.cancel()
    await asyncio.gather(*app[_REBUILD], return_exceptions=True)


@web.middleware
async def _bodies(request: web.Request, handler: Any) -> web.StreamResponse:
    """A body announced too large is refused before it is read; a client gone mid-body is no error."""
    if too_large(request):
        refused = refusal(request, 413, f"the body may have at most {MAX_BODY} bytes")
        refused.force_close()  # the rest of the body is never read
        raise refused
    try:
        return await handler(request)
    except ClientGone:
        response = web.Response(status=400, text="incomplete body")
        response.force_close()
        return response


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")  # "no-referrer" would make forms send Origin: null
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if request.app[SESSIONS].secure:  # served over HTTPS: browsers keep to it
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.path.startswith("/static/") and response.status in (200, 304):
        headers.setdefault("Cache-Control", "public, max-age=86400")  # asked for by version (pages.STATIC_VERSION)
    else:
        headers["Cache-Control"] = "no-store"


async def _close_sockets(app: web.Application) -> None:
    await app[SOCKETS].close_all()


async def start_web(services: Services, agent_side: AgentSide, *, host: str | None = None,
                    port: int | None = None) -> web.AppRunner:
    """Serve the app; the runner's `addresses` say where (port 0 picks a free one)."""
    settings = services.config.web
    runner = web.AppRunner(build_app(services, agent_side), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host or settings.host, settings.port if port is None else port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def address_of(runner: web.AppRunner) -> str:
    """host:port of the first address the runner listens on."""
    host, port = runner.addresses[0][:2]
    return f"{host}:{port}"
