"""Benchmark of the manager side: AMI events to screen-pop cards on the agents' WebSockets.

The simulated Asterisk manager (`ivr.sim.ami_server`) and the real AMI client,
call-center wiring, screen-pop, in-process hub and web app run in this
process, and so do 500 real WebSocket clients over loopback TCP: 50 agents
logged in, 10 open pages each.  Measured:

* AgentConnect written by Asterisk to the "answered" card received on the
  agent's WebSockets, p50/p99, while calls produce about 200 AMI events/s;
* how many AMI events per second the server ingests in a burst.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

AGENTS = 50
PAGES_PER_AGENT = 10
PASSWORD = "benchmark-password"


async def _rig(db_path: Path) -> dict[str, Any]:
    from sqlalchemy import insert

    from caller_id.models import Agent
    from caller_id.store import Database
    from ivr.asterisk.ami_client import AmiClient
    from ivr.sim.ami_server import AmiSimulator
    from ivr.agents.callcenter import CallCenter
    from ivr.call.context import InProcessContexts
    from ivr.agents.hub import InProcessHub
    from ivr.agents.screenpop import ScreenPop
    from ivr.agents.directory import AgentDirectory
    from queues.state import QueueState
    from queues.stats import QueueStatistics

    db = Database(f"sqlite+aiosqlite:///{db_path}")
    await db.migrate()
    interfaces = [f"PJSIP/{2000 + n}" for n in range(AGENTS)]
    async with db.session() as session:
        await session.execute(insert(Agent), [
            {"id": n + 1, "name": f"Агент {n + 1}", "interface": iface} for n, iface in enumerate(interfaces)])
        await session.commit()
    sim = AmiSimulator(host="127.0.0.1", port=0)
    sim.add_queue("support")
    for n, iface in enumerate(interfaces):
        sim.add_member("support", iface, f"Агент {n + 1}", static=True)
    await sim.start()
    hub = InProcessHub()
    contexts = InProcessContexts(ttl=3600)
    agents = AgentDirectory(db)
    screenpop = ScreenPop(contexts, hub, agents)
    ami = AmiClient("127.0.0.1", sim.port, sim.username, sim.secret)
    center = CallCenter(ami, db, contexts, hub, queue_state=QueueState(segment_of=screenpop.segment_of),
                        queue_stats=QueueStatistics(), screenpop=screenpop)
    await center.start()
    await ami.wait_connected(10)
    web = await _web(db, hub, screenpop, ami, center)
    return {"db": db, "sim": sim, "hub": hub, "contexts": contexts, "screenpop": screenpop, "ami": ami,
            "center": center, "interfaces": interfaces, "web": web}


async def _web(db: Any, hub: Any, screenpop: Any, ami: Any, center: Any) -> Any:
    """The web app on a free port with one agent login per agent."""
    from types import SimpleNamespace

    from ivr.config import Config
    from ivr.web.app import start_web
    from ivr.web.auth import add_user

    for agent in range(1, AGENTS + 1):
        await add_user(db, f"agent{agent}", PASSWORD, "agent", agent)
    services = SimpleNamespace(config=Config(), db=db, selfservice=None)
    agent_side = SimpleNamespace(hub=hub, screenpop=screenpop, ami=ami, center=center,
                                 queue_state=center.queue_state, queue_stats=center.queue_stats,
                                 describe=ami.state.describe)
    return await start_web(services, agent_side, host="127.0.0.1", port=0)


async def _pages(url: str) -> tuple[list[Any], list[Any]]:
    """Log every agent in once and open PAGES_PER_AGENT WebSockets on each login."""
    import aiohttp

    from ivr.web.client import log_in

    clients, sockets = [], []
    for agent in range(1, AGENTS + 1):
        client = aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        response = await log_in(client, f"agent{agent}", PASSWORD)
        if response.status != 302:
            raise RuntimeError(f"agent{agent} could not log in: {response.status}")
        clients.append(client)
        for _ in range(PAGES_PER_AGENT):
            socket = await client.ws_connect("/ws?feed=agent")
            await socket.receive_json()  # the cards on screen now
            sockets.append(socket)
    return clients, sockets


async def _close(rig: dict[str, Any]) -> None:
    await rig["web"].cleanup()
    await rig["center"].stop()
    await rig["screenpop"].close()
    await rig["ami"].close()
    await rig["sim"].close()
    await rig["hub"].close()
    await rig["db"].dispose()


async def _context(call_id: str, n: int) -> dict[str, Any]:
    return {"call_id": call_id, "uniqueid": f"bench.{n}", "line": "general", "outcome": "routed",
            "degraded": [], "dtmf": [], "decision": {
                "number": f"+7916{n:07d}", "customer": {"id": n, "name": f"Клиент {n}", "segment": "C",
                                                       "is_vip": False, "language": "ru", "manager": None},
                "roles": [], "role": None, "segment": "C", "is_vip": False, "manager": None,
                "open_cases": [], "recent_calls": [],
                "intents": [{"intent": "general_question", "score": 0.1, "reasons": ["звонок"], "case_id": None}],
                "route": {"queue": "support", "priority": 10, "rule": "bench"}}}


async def measure(calls_per_second: float = 42.0, seconds: float = 20.0, burst_calls: int = 400) -> dict[str, Any]:
    from aiohttp import WSMsgType

    from ivr.sim.fastagi_caller import percentile
    from ivr.web.app import address_of
    from queues.variables import CALL_ID

    with tempfile.TemporaryDirectory() as tmp:
        rig = await _rig(Path(tmp) / "crm.sqlite3")
        loop = asyncio.get_running_loop()
        answered_at: dict[str, float] = {}
        latencies: list[float] = []
        clients, sockets = await _pages(f"http://{address_of(rig['web'])}")

        async def page(socket: Any) -> None:
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = frame.json()
                if message.get("state") == "answered" and message.get("call_id") in answered_at:
                    latencies.append((loop.time() - answered_at[message["call_id"]]) * 1000)

        readers = [asyncio.create_task(page(socket)) for socket in sockets]
        sim, interfaces = rig["sim"], rig["interfaces"]
        events_before = rig["ami"].stats.get("events", 0) if hasattr(rig["ami"], "stats") else 0

        async def one_call(n: int) -> None:
            call_id = f"bench-call-{n}"
            await rig["contexts"].put(call_id, await _context(call_id, n), aliases=(f"bench.{n}",))
            uniqueid = f"bench.{n}"
            sim.place_caller("support", uniqueid, callerid=f'"Клиент {n}" <7916{n:07d}>',
                             variables={CALL_ID: call_id})
            iface = interfaces[n % len(interfaces)]
            await asyncio.sleep(0.2)
            sim.ring_agent(uniqueid, iface)
            await asyncio.sleep(0.3)
            answered_at[call_id] = loop.time()
            sim.agent_answers(uniqueid, iface)
            await asyncio.sleep(1.0)
            sim.complete_call(uniqueid)

        started = time.perf_counter()
        tasks = []
        total = int(calls_per_second * seconds)
        for n in range(total):
            tasks.append(asyncio.create_task(one_call(n)))
            await asyncio.sleep(1 / calls_per_second)
        await asyncio.gather(*tasks)
        await asyncio.sleep(1.0)
        steady_wall = time.perf_counter() - started
        steady_events = rig["center"].stats.get("events", 0)

        # Burst: as many calls at once as the simulator can write; time until the last card.
        burst_ids = []
        burst_start = time.perf_counter()
        before_burst = rig["center"].stats.get("events", 0)
        for n in range(total, total + burst_calls):
            call_id = f"bench-call-{n}"
            await rig["contexts"].put(call_id, await _context(call_id, n), aliases=(f"bench.{n}",))
            uniqueid = f"bench.{n}"
            sim.place_caller("support", uniqueid, callerid=f"7916{n:07d}", variables={CALL_ID: call_id})
            iface = interfaces[n % len(interfaces)]
            sim.ring_agent(uniqueid, iface)
            answered_at[call_id] = loop.time()
            sim.agent_answers(uniqueid, iface)
            sim.complete_call(uniqueid)
            burst_ids.append(call_id)
        deadline = time.perf_counter() + 30
        while rig["center"].stats.get("events", 0) - before_burst < burst_calls * 4 and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        burst_wall = time.perf_counter() - burst_start
        burst_events = rig["center"].stats.get("events", 0) - before_burst

        for socket in sockets:
            await socket.close()
        await asyncio.gather(*readers, return_exceptions=True)
        for client in clients:
            await client.close()
        await _close(rig)
    steady_connects = [x for x in latencies[: total * PAGES_PER_AGENT]]
    return {
        "pages": len(sockets),
        "steady": {
            "calls": total,
            "events_per_second": round((steady_events - events_before) / steady_wall, 1),
            "cards": len(steady_connects),
            "p50_ms": round(percentile(steady_connects, 50), 2) if steady_connects else None,
            "p99_ms": round(percentile(steady_connects, 99), 2) if steady_connects else None,
        },
        "burst": {"calls": burst_calls, "events": burst_events,
                  "events_per_second": round(burst_events / burst_wall, 1) if burst_wall else None},
    }


def main_agents() -> dict[str, Any]:
    return asyncio.run(measure())
