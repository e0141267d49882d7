"""For operations: /healthz for load balancers, /metrics for Prometheus (no log-in)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import text
from ivr.web.keys import SERVICES, AGENT_SIDE, SOCKETS

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers; AMI and the hub are reported (their loss does not stop calls)."""
    services, agent_side = request.app[SERVICES], request.app[AGENT_SIDE]
    checks: dict[str, Any] = {}
    healthy = True
    try:
        async with asyncio.timeout(2.0):
            async with services.db.session() as session:
                await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"failing: {type(exc).__name__}: {exc}"
        healthy = False
    checks["ami"] = agent_side.describe()
    checks["hub"] = "connected" if getattr(agent_side.hub, "connected", True) else "reconnecting"
    return web.json_response({"status": "ok" if healthy else "failing", "checks": checks},
                             status=200 if healthy else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    _COLLECTOR.app = weakref.ref(request.app)
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


class AgentSideCollector:
    """The counters the agent side keeps in `stats` dicts, as Prometheus metrics at scrape time.

    One per process (the registry is), reading the web app that served the last scrape.
    """

    def __init__(self) -> None:
        self.app: Any = lambda: None

    def collect(self) -> Any:
        app = self.app()
        if app is None:
            return
        agent_side, services = app[AGENT_SIDE], app[SERVICES]
        sources = {
            "hub": getattr(agent_side.hub, "stats", None),
            "screenpop": agent_side.screenpop.stats,
            "callcenter": agent_side.center.stats if agent_side.center is not None else None,
            "ami": agent_side.ami.stats if agent_side.ami is not None and hasattr(agent_side.ami, "stats") else None,
            "selfservice": services.selfservice.stats if services.selfservice is not None else None,
        }
        counters = CounterMetricFamily("ivr_component_events", "Counters the server's components keep",
                                       labels=["component", "counter"])
        for component, stats in sources.items():
            for name, value in (stats or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    counters.add_metric([component, name], value)
        yield counters
        gauge = GaugeMetricFamily("ivr_ami_connected", "1 while the AMI connection is up")
        gauge.add_metric([], 1.0 if agent_side.ami is not None and agent_side.ami.connected else 0.0)
        yield gauge
        sockets = GaugeMetricFamily("ivr_web_sockets", "Open agent and wallboard WebSockets")
        sockets.add_metric([], len(app[SOCKETS]))
        yield sockets
        calls = GaugeMetricFamily("ivr_screenpop_calls", "Calls the screen-pop follows now")
        calls.add_metric([], agent_side.screenpop.calls)
        yield calls


_COLLECTOR = AgentSideCollector()
REGISTRY.register(_COLLECTOR)
