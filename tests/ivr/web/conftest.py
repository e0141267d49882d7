"""A running web app over real TCP: real services on a seeded SQLite CRM, the hub, and an AMI simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from caller_id.models import Agent
from ivr.sim.ami_server import AmiSimulator
from ivr.services import AgentSide
from ivr.config import AmiSettings
from ivr.web.app import address_of, start_web
from ivr.web.auth import add_user
from ivr.sim.fastagi_caller import CallScript, place_call
from ivr.web.client import log_in

PASSWORD = "correct horse battery"
QUEUES = ("support", "vip", "b2b")


@dataclass
class WebServer:
    url: str
    services: Any
    agent_side: Any
    sim: AmiSimulator
    agents: dict[str, int]  # interface -> agent id
    agi_port: int  # the FastAGI server of the same services
    runner: Any  # the web app's aiohttp runner (runner.app is the application)

    async def client(self, username: str | None = None, password: str = PASSWORD) -> aiohttp.ClientSession:
        """A browser-like session (cookies kept), logged in as `username` when given."""
        session = aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        if username is not None:
            response = await log_in(session, username, password)
            assert response.status == 302, response.status
        return session


async def csrf_of(session: aiohttp.ClientSession) -> str:
    async with session.get("/api/v1/me") as response:
        return (await response.json())["csrf_token"]


@pytest.fixture
async def web_server(base_config, start_server) -> AsyncIterator[WebServer]:
    sim = AmiSimulator(auth_delay=0.05, channelvars=("IVR_CALL_ID", "IVR_CUSTOMER_ID", "IVR_SEGMENT"))
    await sim.start()
    # The shipped 0.15 s lookup budget fails open to "unknown caller" on a busy machine; these tests
    # are about the web app, not that budget.
    config = replace(base_config, ami=AmiSettings(host="127.0.0.1", port=sim.port, username="ivr",
                                                  secret="ivrsecret"),
                     lookup=replace(base_config.lookup, timeout=10.0))
    server = await start_server(config)
    services = server.services
    async with services.db.session() as session:
        agents = {a.interface: a.id for a in (await session.scalars(select(Agent).order_by(Agent.id))).all()}
    for queue in QUEUES:
        sim.add_queue(queue)
    for interface in list(agents)[:4]:
        sim.add_member("support", interface, interface.replace("PJSIP/", "agent "))
    agent_side = AgentSide(config, services)
    await agent_side.start()
    await agent_side.ami.wait_connected(10)
    runner = await start_web(services, agent_side, host="127.0.0.1", port=0)
    await add_user(services.db, "sup", PASSWORD, "supervisor")
    await add_user(services.db, "anna", PASSWORD, "agent", agents["PJSIP/1001"])
    await add_user(services.db, "dmitry", PASSWORD, "agent", agents["PJSIP/1002"])
    try:
        yield WebServer(f"http://{address_of(runner)}", services, agent_side, sim, agents, server.port, runner)
    finally:
        await runner.cleanup()
        await agent_side.stop()
        await sim.close()


async def call_into_queue(web_server, number: str) -> tuple[str, dict]:
    """A call through the real FastAGI flow, then into the simulated queue; (uniqueid, AGI variables)."""
    result = await place_call("127.0.0.1", web_server.agi_port, CallScript(number=number, line="general"))
    assert result.error is None and result.variables.get("IVR_CALL_ID")
    variables = {k: result.variables[k] for k in ("IVR_CALL_ID", "IVR_CUSTOMER_ID", "IVR_SEGMENT")
                 if k in result.variables}
    web_server.sim.place_caller("support", uniqueid=result.uniqueid, callerid=f'"" <{number[1:]}>',
                                variables=variables)
    return result.uniqueid, result.variables
