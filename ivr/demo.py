"""`ivr demo`: the whole server with a simulated Asterisk placing calls.

The server runs as `ivr run` would (FastAGI, the self-service dialog, the
AMI client, screen-pops, the wallboard, the web pages), pointed at an AMI
simulator in this process that holds the contact center's queues with the
CRM's agents as members.  A call generator then does what Asterisk and the
callers would: each call goes through the real FastAGI flow over TCP (the
caller answers the dialog's keys, asks for a person, or says nothing), then
joins the queue the server chose in the simulator, waits, rings a free
agent (who sometimes does not answer), talks and hangs up, or abandons.
Every AMI event reaches the server over the real manager protocol, so the
agents' pages pop cards and the wallboard moves.

Web logins are created on first start: ``supervisor`` and one per agent of
the first queue members (``agent1001`` for PJSIP/1001 ...), all with the
password ``demo-password``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ivr.ami_simulator import AmiSimulator
from ivr.config import AmiSettings, Config
from ivr.simulate import CallScript, place_call

log = logging.getLogger(__name__)

DEMO_PASSWORD = "demo-password"
QUEUES = ("vip", "key_accounts", "b2b", "b2c", "support", "english", "after_hours")
MEMBERS = 8  # agents taking calls in the demo
UNKNOWN_NUMBERS = ("+79161234567", "+74997770011", "anonymous", "+49301234000")
# What callers do in the self-service dialog (keys, in order of the questions).
CALLER_HABITS = (["1", "1", "5"], ["1", "1", "4"], ["0"], ["2", "0"], [], ["2", "2"])


@dataclass
class DemoStats:
    calls: int = 0
    self_served: int = 0
    queued: int = 0
    answered: int = 0
    abandoned: int = 0
    errors: int = 0
    lines: list[str] = field(default_factory=list)


class CallGenerator:
    """Asterisk and the callers: calls through FastAGI, then through the simulated queues."""

    def __init__(self, sim: AmiSimulator, agi_port: int, numbers: list[str], names: dict[str, str], *,
                 rng: random.Random, talk: tuple[float, float] = (10.0, 40.0), wait: tuple[float, float] = (2.0, 12.0),
                 say: Callable[[str], None] = print):
        self.sim = sim
        self.agi_port = agi_port
        self.numbers = numbers
        self.names = names  # interface -> agent name
        self.rng = rng
        self.talk = talk
        self.wait = wait
        self.say = say
        self.busy: set[str] = set()
        self.stats = DemoStats()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, calls_per_minute: float, duration: float | None) -> DemoStats:
        loop = asyncio.get_running_loop()
        end = None if duration is None else loop.time() + duration
        try:
            while end is None or loop.time() < end:
                task = asyncio.ensure_future(self.one_call())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                await asyncio.sleep(self.rng.expovariate(calls_per_minute / 60.0))
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.stats

    async def one_call(self) -> None:
        number = self.rng.choice(self.numbers)
        habit = self.rng.choice(CALLER_HABITS)
        try:
            result = await place_call("127.0.0.1", self.agi_port,
                                      CallScript(number=number, line="general", dtmf=list(habit)), timeout=120)
        except Exception as exc:  # noqa: BLE001 - the demo goes on
            self.stats.errors += 1
            log.warning("demo call from %s failed: %s", number, exc)
            return
        self.stats.calls += 1
        v = result.variables
        if result.error:
            self.stats.errors += 1
            self.say(f"call from {number}: {result.error}")
            return
        if v.get("IVR_CONTAINED") == "1":
            self.stats.self_served += 1
            self.say(f"call from {number}: answered by self-service ({v.get('IVR_INTENT', '-')})")
            return
        queue = v.get("IVR_QUEUE") or "support"
        if queue not in self.sim.queues:
            queue = "support"
        variables = {k: v[k] for k in ("IVR_CALL_ID", "IVR_CUSTOMER_ID", "IVR_SEGMENT") if k in v}
        self.sim.place_caller(queue, uniqueid=result.uniqueid, callerid=f'"" <{number.lstrip("+")}>',
                              variables=variables, priority=int(v.get("QUEUE_PRIO") or 0))
        self.stats.queued += 1
        self.say(f"call from {number} -> queue {queue} (intent {v.get('IVR_INTENT', '-')})")
        await self.in_queue(result.uniqueid, queue, number)

    async def in_queue(self, uniqueid: str, queue: str, number: str) -> None:
        patience = self.rng.uniform(25.0, 90.0)
        waited = 0.0
        try:
            while True:
                step = self.rng.uniform(*self.wait)
                await asyncio.sleep(step)
                waited += step
                if waited > patience:
                    self.sim.caller_hangs_up(uniqueid)
                    self.stats.abandoned += 1
                    self.say(f"call from {number} abandoned {queue} after {waited:.0f} s")
                    return
                agent = self.free_agent(queue)
                if agent is None:
                    continue
                self.busy.add(agent)
                try:
                    self.sim.ring_agent(uniqueid, agent)
                    await asyncio.sleep(self.rng.uniform(1.5, 4.0))
                    if self.rng.random() < 0.15:
                        self.sim.agent_no_answer(uniqueid, agent)
                        continue
                    self.sim.agent_answers(uniqueid, agent)
                    self.stats.answered += 1
                    self.say(f"call from {number} answered by {self.names.get(agent, agent)}")
                    await asyncio.sleep(self.rng.uniform(*self.talk))
                    self.sim.complete_call(uniqueid, reason=self.rng.choice(("caller", "agent")))
                    return
                finally:
                    self.busy.discard(agent)
        except asyncio.CancelledError:
            if uniqueid in self.sim.callers:
                self.sim.caller_hangs_up(uniqueid)
            raise
        except (KeyError, ValueError) as exc:  # a supervisor removed the agent meanwhile, for example
            log.info("demo call %s: %s", uniqueid, exc)

    def free_agent(self, queue: str) -> str | None:
        members = self.sim.queue(queue).members
        free = [i for i, m in members.items() if i not in self.busy and not m.paused and not m.in_call]
        return self.rng.choice(sorted(free)) if free else None


async def prepare(config: Config) -> tuple[list[tuple[int, str, str]], list[str]]:
    """Seed the CRM when empty and create the demo logins; the agents and the numbers to call from."""
    from sqlalchemy import select

    from caller_id.models import Agent, PhoneNumber
    from caller_id.seed import SHOWCASE
    from ivr.server import seed_demo_if_empty
    from ivr.services import build_services

    services = await build_services(config, speech=False)
    try:
        await seed_demo_if_empty(services)
        await ensure_demo_logins(services.db)
        async with services.db.session() as session:
            agents = [(a.id, a.interface, a.name)
                      for a in (await session.scalars(select(Agent).order_by(Agent.id).limit(MEMBERS))).all()]
            seeded = list((await session.scalars(select(PhoneNumber.e164).order_by(PhoneNumber.id).limit(300))).all())
    finally:
        await services.close()
    numbers = [s["number"] for s in SHOWCASE] * 3 + seeded + list(UNKNOWN_NUMBERS)
    return agents, numbers


async def ensure_demo_logins(db: Any) -> list[str]:
    """The demo's web logins (``supervisor``, ``agent1001``...), created when missing; their names."""
    from sqlalchemy import select

    from caller_id.models import Agent, User
    from ivr.web.auth import add_user

    async with db.session() as session:
        agents = (await session.scalars(select(Agent).order_by(Agent.id).limit(MEMBERS))).all()
        users = set((await session.scalars(select(User.username))).all())
    wanted = [("supervisor", "supervisor", None)] + [
        ("agent" + a.interface.rsplit("/", 1)[-1], "agent", a.id) for a in agents]
    for username, role, agent_id in wanted:
        if username not in users:
            await add_user(db, username, DEMO_PASSWORD, role, agent_id)
    return [username for username, _, _ in wanted]


def simulator_for(agents: list[tuple[int, str, str]]) -> AmiSimulator:
    sim = AmiSimulator(auth_delay=0.05, channelvars=("IVR_CALL_ID", "IVR_CUSTOMER_ID", "IVR_SEGMENT"))
    for queue in QUEUES:
        sim.add_queue(queue, servicelevel=20)
    for n, (_id, interface, name) in enumerate(agents):
        for queue in QUEUES:
            if queue in ("support", "after_hours") or n % 3 == QUEUES.index(queue) % 3:
                sim.add_member(queue, interface, name, static=True)
    return sim


async def run_demo(config: Config, *, calls_per_minute: float = 12.0, duration: float | None = None,
                   seed: int = 1, talk: tuple[float, float] = (10.0, 40.0),
                   say: Callable[[str], None] = print) -> DemoStats:
    from ivr.server import serve

    agents, numbers = await prepare(config)
    sim = simulator_for(agents)
    await sim.start()
    config = replace(config, ami=AmiSettings(host="127.0.0.1", port=sim.port, username=sim.username,
                                             secret=sim.secret))
    ready = asyncio.Event()
    server = asyncio.ensure_future(serve(config, ready=ready))
    try:
        await asyncio.wait({server, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # the server could not start: its error
        say(f"demo: simulated Asterisk with {len(agents)} agents in {len(QUEUES)} queues; "
            f"about {calls_per_minute:g} calls a minute. Log in as supervisor / {DEMO_PASSWORD} "
            f"or agent{agents[0][1].rsplit('/', 1)[-1]} / {DEMO_PASSWORD}.")
        generator = CallGenerator(sim, config.agi.port, numbers, {i: n for _, i, n in agents},
                                  rng=random.Random(seed), talk=talk, say=say)
        calls = asyncio.ensure_future(generator.run(calls_per_minute, duration))
        await asyncio.wait({server, calls}, return_when=asyncio.FIRST_COMPLETED)
        if not calls.done():
            calls.cancel()
        await asyncio.gather(calls, return_exceptions=True)
        return generator.stats
    finally:
        if not server.done():
            server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await sim.close()
