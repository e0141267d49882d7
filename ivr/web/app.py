"""The web application for agents and supervisors (aiohttp).

`build_app(services, agent_side)` wires the pages (`ivr.web.pages`), the
live WebSocket (`ivr.web.live`), the REST API (`ivr.web.api`) and the
operations endpoints (`ivr.web.ops`) behind the session middleware
(`ivr.web.auth`); `start_web` runs it on ``web.host:web.port`` and returns
the runner to clean up with.  Static files (CSS, JavaScript) are served from
``ivr/web/static``; nothing is loaded from elsewhere.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.web import api, live, ops, pages
from ivr.web.auth import Sessions, session_middleware
from ivr.web.keys import AGENT_SIDE, SERVICES, SESSIONS, SOCKETS
from ivr.web.live import LiveSockets
from ivr.web.pages import STATIC


def build_app(services: Any, agent_side: Any) -> web.Application:
    settings = services.config.web
    app = web.Application(middlewares=[_security_headers, api.json_errors, session_middleware],
                          client_max_size=64 * 1024)
    app[SERVICES] = services
    app[AGENT_SIDE] = agent_side
    app[SESSIONS] = Sessions(services.db, settings.session_ttl, secure=settings.secure_cookies)
    app[SOCKETS] = LiveSockets()
    app.add_routes(pages.routes)
    app.add_routes(live.routes)
    app.add_routes(api.routes)
    app.add_routes(ops.routes)
    ops.install_metrics(app)
    app.router.add_static("/static", STATIC)
    app.on_shutdown.append(_close_sockets)
    return app


@web.middleware
async def _security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and refusals carry them too
        _secure(request, exc)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # a WebSocket: its headers are sent already
        return
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'")
    if request.path.startswith("/static/"):  # pages ask for them by version (pages.STATIC_VERSION)
        headers.setdefault("Cache-Control", "public, max-age=86400")
    else:  # pages and API answers carry personal data
        headers.setdefault("Cache-Control", "no-store")


async def _close_sockets(app: web.Application) -> None:
    await app[SOCKETS].close_all()


async def start_web(services: Any, agent_side: Any, *, host: str | None = None,
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
    host, port = runner.addresses[0][:2]
    return f"{host}:{port}"
