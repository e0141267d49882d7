"""For operations: /healthz for load balancers, /metrics for Prometheus (no log-in).

``/healthz`` answers 200 while this node can serve (the database answers),
with ``"status": "ok"``, or ``"degraded"`` when Asterisk's manager or the
hub between nodes is down (calls still flow then; pages are not live);
503 with ``"failing"`` when the database does not answer within
`DB_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from sqlalchemy import text

from ivr.metrics import AgentSideCollector, exposition
from ivr.web.keys import AGENT_SIDE, SERVICES, SOCKETS

routes = web.RouteTableDef()
METRICS = web.AppKey("metrics", CollectorRegistry)
DB_TIMEOUT = 2.0


def install_metrics(app: web.Application) -> None:
    """A registry of this app's own: the agent side it serves, read at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentSideCollector(app[AGENT_SIDE], app[SERVICES], sockets=lambda: len(app[SOCKETS])))
    app[METRICS] = registry


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    services, agent_side = request.app[SERVICES], request.app[AGENT_SIDE]
    checks: dict[str, Any] = {}
    status = "ok"
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            async with services.db.session() as session:
                await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"failing: {type(exc).__name__}: {exc}" if str(exc) else f"failing: {type(exc).__name__}"
        status = "failing"
    ami = agent_side.ami
    checks["ami"] = agent_side.describe()
    checks["ami_connected"] = None if ami is None else bool(ami.connected)
    hub_up = bool(getattr(agent_side.hub, "connected", True))
    checks["hub"] = "connected" if hub_up else "reconnecting"
    checks["web_sockets"] = len(request.app[SOCKETS])
    if status == "ok" and (checks["ami_connected"] is False or not hub_up):
        status = "degraded"
    return web.json_response({"status": status, "checks": checks}, status=503 if status == "failing" else 200,
                             headers={"Cache-Control": "no-store"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=exposition(request.app[METRICS]), headers={"Content-Type": CONTENT_TYPE_LATEST})
