"""`ivr demo`: the whole server with a simulated Asterisk placing calls.

The server runs as `ivr run` would (FastAGI, the self-service dialog in DTMF
mode, the AMI client, screen-pops, the wallboard, the web pages), pointed at
an AMI simulator in this process that holds the queues the routing rules use
(service levels from ``asterisk_conf/queues.conf``) with the CRM's first
agents as members.  A call generator then does what Asterisk and the callers
would:

1. a caller (mostly the seed's showcase and CRM numbers, some unknown) dials
   one of the lines; the call goes through the real FastAGI flow over TCP
   (`ivr.sim.fastagi_caller.place_call`): the caller presses keys when the dialog asks,
   asks for a person, or says nothing;
2. unless the self-service answered, it joins the queue the server chose in
   the simulator with the AGI call's uniqueid, ``QUEUE_PRIO`` and the
   ``IVR_CALL_ID`` / ``IVR_CUSTOMER_ID`` / ``IVR_SEGMENT`` channel variables;
3. after a short announcement it waits for a free member (callers ahead of it
   first; the agent idle longest rings, as ``strategy=leastrecent``; paused
   agents are skipped, so the wallboard's pause button works), the agent
   sometimes lets it ring out, answers, talks, hangs up, has a short wrap-up;
   callers whose patience runs out abandon.

Every AMI event reaches the server over the real manager protocol, so the
agents' pages pop cards and the wallboard moves.  Time is compressed: a call
every few seconds, 10-40 s of talk.  With the same seed each caller behaves
the same (the order of events still depends on timing).

The demo keeps to itself: its own SQLite file (``demo.sqlite3`` next to the
configured one, seeded on first start), no Redis (demo calls never reach real
nodes), FastAGI on a free loopback port, no speech models.  Web logins are
created when missing: ``supervisor`` and one per demo agent (``agent1001``
for PJSIP/1001 ...), all with the password ``demo-password``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import re
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ivr.sim.ami_server import AmiSimulator
from ivr.config import PROJECT_DIR, AmiSettings, Config
from ivr.sim.fastagi_caller import CallScript, place_call
from queues.variables import CALL_ID, CONTAINED, CUSTOMER_ID, EVENT_VARIABLES, INTENT, PRIORITY, QUEUE, SEGMENT

log = logging.getLogger(__name__)

DEMO_PASSWORD = "demo-password"
DEMO_MODEL_FILE = "demo-intent-model.joblib"
DEMO_DATABASE = "demo.sqlite3"
QUEUES_CONF = PROJECT_DIR / "asterisk_conf" / "queues.conf"
MEMBERS = 8  # agents taking calls in the demo
UNKNOWN_NUMBERS = ("+79161234567", "+74997770011", "anonymous", "+49301234000")
# What callers press in the self-service dialog, in the order it asks.
CALLER_HABITS = (["1", "1", "5"], ["1", "1", "4"], ["0"], ["2", "0"], [], ["2", "2"], ["1"], [])


# --------------------------------------------------------------------------
# what happened
# --------------------------------------------------------------------------


@dataclass
class DemoCall:
    """One simulated call, as the generator saw it."""

    n: int
    number: str
    line: str
    keys: list[str] = field(default_factory=list)  # what the caller presses when the dialog asks, in order
    uniqueid: str = ""
    variables: dict[str, str] = field(default_factory=dict)  # set by the FastAGI flow
    queue: str | None = None
    outcome: str = "in IVR"  # self-service, waiting, answered, completed, abandoned, error, stopped
    agent: str | None = None  # interface of the agent who answered
    rung: list[str] = field(default_factory=list)  # interfaces rung for it, in order

    @property
    def call_id(self) -> str | None:
        return self.variables.get(CALL_ID)


@dataclass
class DemoStats:
    calls: int = 0  # through FastAGI
    self_served: int = 0
    queued: int = 0
    answered: int = 0
    abandoned: int = 0
    no_answers: int = 0
    errors: int = 0
    log: list[DemoCall] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.calls} calls, {self.self_served} answered by self-service, {self.answered} by agents, "
                f"{self.abandoned} abandoned" + (f", {self.errors} errors" if self.errors else ""))


@dataclass(frozen=True)
class DemoAgent:
    id: int
    interface: str
    name: str
    login: str


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


def demo_config(config: Config, *, database: str | None = None, web_port: int | None = None) -> Config:
    """The demo's variant of `config`: its own database and learned model file (``demo-intent-model.joblib``
    beside the configured one), no Redis, FastAGI on a free loopback port.

    `database` defaults to ``demo.sqlite3`` beside the configured SQLite file
    (``var/demo.sqlite3`` from the working directory when the configured
    database is not SQLite).
    """
    if database is None:
        match = re.match(r"^sqlite(?:\+\w+)?:///(?P<path>.+)$", config.database_url)
        folder = Path(match["path"]).parent if match and match["path"] != ":memory:" else Path("var").resolve()
        database = f"sqlite+aiosqlite:///{folder / DEMO_DATABASE}"
    if database.startswith("sqlite"):
        path = database.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    web = config.web if web_port is None else replace(config.web, port=web_port)
    return replace(
        config,
        database_url=database,
        redis_url=None,
        agi=replace(config.agi, host="127.0.0.1", port=free_port(), workers=1,
                    allowed_hosts=("127.0.0.1",)),
        speech=replace(config.speech, models={}),  # the simulated callers press keys
        web=web,
        # the model learnt from the demo's calls, never in place of the one trained on the real CRM's
        prediction=replace(config.prediction,
                           model_file=config.prediction.model_file.with_name(DEMO_MODEL_FILE)),
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def service_levels(path: Path = QUEUES_CONF) -> dict[str, int]:
    """``servicelevel`` per queue from an Asterisk queues.conf (templates followed); {} when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    sections: dict[str, tuple[list[str], dict[str, str]]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        head = re.match(r"^\[(?P<name>[^\]]+)\](?:\((?P<parents>[^)]*)\))?", line)
        if head:
            parents = [p.strip() for p in (head["parents"] or "").split(",") if p.strip() and p.strip() != "!"]
            current = {}
            sections[head["name"].strip()] = (parents, current)
        elif current is not None and "=" in line and not line.startswith("member"):
            key, _, value = line.partition("=")
            current[key.strip().lower()] = value.lstrip(">").strip()

    def setting(name: str, key: str, seen: frozenset[str] = frozenset()) -> str | None:
        parents, values = sections.get(name, ([], {}))
        if key in values:
            return values[key]
        for parent in parents:
            if parent not in seen:
                found = setting(parent, key, seen | {name})
                if found is not None:
                    return found
        return None

    levels = {}
    for name in sections:
        value = setting(name, "servicelevel")
        if name != "general" and value and value.isdigit():
            levels[name] = int(value)
    return levels


def demo_queues(config: Config) -> list[str]:
    """The queues calls can be routed to: the rules' and the lines' defaults."""
    from queues.rules import load_rules

    names = set(load_rules(config.rules_file).queues) | {line.default_queue for line in config.lines}
    return sorted(names)


# --------------------------------------------------------------------------
# the database side: CRM, agents, logins
# --------------------------------------------------------------------------


async def seed_demo_if_empty(services: Any, customers: int = 2000) -> int:
    """Seed demo data into an empty database; the number of customers added."""
    from sqlalchemy import func, select

    from caller_id.models import Customer
    from caller_id.seed import seed

    async with services.db.session() as session:
        count = await session.scalar(select(func.count()).select_from(Customer))
    if count:
        return 0
    summary = await seed(services.db, customers, seed=1)
    return getattr(summary, "customers", customers)


DEMO_HISTORY_CALLS = 3000
DEMO_HISTORY_DAYS = 28.0
DEMO_HOLDOUT_DAYS = 7.0


async def demo_data(services: Any) -> None:
    """``ivr run --demo-data``: seed the demo CRM when empty, with a call history of the last weeks
    and the learned prediction trained on it, and create the demo logins."""
    added = await seed_demo_if_empty(services)
    if added:
        print(f"  demo data : seeded {added} customers (first start)", flush=True)
        calls = await seed_demo_history(services)
        print(f"  demo calls: {calls} calls over the last {DEMO_HISTORY_DAYS:.0f} days", flush=True)
        print(f"  {await train_demo_model(services)}", flush=True)
    logins = await ensure_demo_logins(services.db)
    print(f"  demo logins: {logins[0]}, {logins[1]} ... (password {DEMO_PASSWORD})", flush=True)


async def seed_demo_history(services: Any, calls: int = DEMO_HISTORY_CALLS) -> int:
    """A call history over the demo CRM (`caller_id.seed_history`), for the reports and the model."""
    from caller_id.seed_history import seed_history

    config = services.config
    history = await seed_history(services.db, services.catalogue, calls, seed=1, days=DEMO_HISTORY_DAYS,
                                 zone=config.timezone,
                                 queues={line.name: line.default_queue for line in config.lines})
    return history.calls


async def train_demo_model(services: Any) -> str:
    """Train the learned prediction on the demo's history, save it and rank with it when it beat
    the rules; what the server now predicts with."""
    from caller_id import learning

    config = services.config
    examples = await learning.load_examples(services.db, config.timezone)
    try:
        model = await asyncio.to_thread(learning.train, examples, services.catalogue,
                                        holdout_days=DEMO_HOLDOUT_DAYS)
    except learning.TrainingError as exc:
        return f"prediction: catalogue rules (no model trained: {exc})"
    await asyncio.to_thread(learning.save, model, config.prediction.model_file)
    choice = learning.choose_ranker(config.prediction.model_file, services.catalogue,
                                    enabled=config.prediction.enabled)
    services.ranker = choice.ranker
    services.notes[:] = [note for note in services.notes if not note.startswith("prediction:")] + [choice.note]
    return choice.note


async def ensure_demo_logins(db: Any) -> list[str]:
    """The demo's web logins (``supervisor``, ``agent1001``...), created when missing; their names."""
    from sqlalchemy import select

    from caller_id.models import Agent, User
    from ivr.web.auth import add_user

    async with db.session() as session:
        agents = (await session.scalars(select(Agent).order_by(Agent.id).limit(MEMBERS))).all()
        users = set((await session.scalars(select(User.username))).all())
    wanted = [("supervisor", "supervisor", None)] + [(login_of(a.interface), "agent", a.id) for a in agents]
    for username, role, agent_id in wanted:
        if username not in users:
            await add_user(db, username, DEMO_PASSWORD, role, agent_id)
    return [username for username, _, _ in wanted]


def login_of(interface: str) -> str:
    """``PJSIP/1001`` -> ``agent1001``."""
    return "agent" + re.sub(r"[^0-9A-Za-z_.-]", "", interface.rsplit("/", 1)[-1])


@dataclass
class Prepared:
    agents: list[DemoAgent]
    numbers: list[str]
    customers: dict[str, str]  # customer id -> name
    seeded: int  # customers added now (first start)


async def prepare(config: Config, say: Callable[[str], None] = print) -> Prepared:
    """Seed the CRM when empty, create the demo logins; the agents and the numbers to call from."""
    from sqlalchemy import func, select

    from caller_id.models import Agent, Customer, NumberRole, PhoneNumber
    from caller_id.seed import SHOWCASE
    from caller_id.store import display_url
    from ivr.services import build_services

    services = await build_services(config, speech=False)
    try:
        async with services.db.session() as session:
            empty = not await session.scalar(select(func.count()).select_from(Customer))
        if empty:
            say(f"demo: seeding a demo CRM into {display_url(config.database_url)} (first start, a few seconds) ...")
        seeded = await seed_demo_if_empty(services)
        await ensure_demo_logins(services.db)
        async with services.db.session() as session:
            agents = [DemoAgent(a.id, a.interface, a.name, login_of(a.interface))
                      for a in (await session.scalars(select(Agent).order_by(Agent.id).limit(MEMBERS))).all()]
            crm = list((await session.scalars(select(PhoneNumber.e164).order_by(PhoneNumber.id).limit(300))).all())
            showcase = [s["number"] for s in SHOWCASE]
            rows = await session.execute(
                select(Customer.id, Customer.name)
                .join(NumberRole, NumberRole.customer_id == Customer.id)
                .join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
                .where(PhoneNumber.e164.in_(crm + showcase)))
            customers = {str(cid): name for cid, name in rows.all()}
    finally:
        await services.close()
    if not agents:
        raise ValueError("the CRM has no agents to put in the queues (ivr db seed adds some)")
    # Mostly the showcase (the interesting cards), then the CRM at large, a few strangers.
    numbers = showcase * 10 + crm + list(UNKNOWN_NUMBERS) * 8
    return Prepared(agents, numbers, customers, seeded)


def simulator_for(agents: list[DemoAgent], queues: list[str],
                  levels: dict[str, int] | None = None) -> AmiSimulator:
    """An Asterisk with `queues`, every demo agent a static member of each."""
    levels = service_levels() if levels is None else levels
    sim = AmiSimulator(auth_delay=0.05, channelvars=EVENT_VARIABLES)
    for queue in queues:
        sim.add_queue(queue, strategy="leastrecent", servicelevel=levels.get(queue, 60))
        for agent in agents:
            sim.add_member(queue, agent.interface, agent.name, static=True)
    return sim


# --------------------------------------------------------------------------
# the callers and Asterisk's queues
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    """How long things take, in seconds (ranges are uniform)."""

    talk: tuple[float, float] = (10.0, 40.0)
    announcement: tuple[float, float] = (2.0, 8.0)  # in the queue before the first agent can ring
    ring: tuple[float, float] = (1.5, 4.0)
    patience: tuple[float, float] = (30.0, 120.0)  # how long a caller waits before hanging up
    wrapup: float = 3.0  # an agent's pause after a call
    retry: float = 1.0  # after a ring-out, before the caller's next agent rings
    no_answer: float = 0.12  # share of rings that ring out
    prompts_at_once: bool = False  # AGI prompts answered at once instead of after they play (tests)


class CallGenerator:
    """Asterisk and the callers: calls through FastAGI, then through the simulated queues."""

    def __init__(self, sim: AmiSimulator, config: Config, prepared: Prepared, *, seed: int = 1,
                 pace: Pace = Pace(), say: Callable[[str], None] = print):
        self.sim = sim
        self.config = config
        self.prepared = prepared
        self.agents = {a.interface: a for a in prepared.agents}
        self.seed = seed
        self.pace = pace
        self.say = say
        self.stats = DemoStats()
        self.busy: set[str] = set()  # ringing for someone
        self.talking: set[str] = set()  # in a call (a member's in_call is per queue)
        self.free_at: dict[str, float] = {}  # interface -> when the wrap-up ends / it was last offered a call
        self._order = {a.interface: n for n, a in enumerate(prepared.agents)}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: set[str] = set()  # callers past the announcement, who may be offered an agent
        self._changed = asyncio.Event()  # set (and replaced) when an agent or a place frees up

    async def run(self, calls_per_minute: float, duration: float | None, stop: asyncio.Event) -> DemoStats:
        loop = asyncio.get_running_loop()
        end = None if duration is None else loop.time() + duration
        arrivals = random.Random(f"{self.seed}:arrivals")
        n = 0
        try:
            while not stop.is_set():
                n += 1
                task = asyncio.ensure_future(self.one_call(n))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                gap = arrivals.expovariate(max(calls_per_minute, 0.01) / 60.0)
                if end is not None:
                    gap = min(gap, max(0.0, end - loop.time()))
                try:
                    await asyncio.wait_for(stop.wait(), gap)
                except asyncio.TimeoutError:
                    pass
                if end is not None and loop.time() >= end:
                    break
        finally:
            await self.hang_up_all()
        return self.stats

    async def hang_up_all(self) -> None:
        """Every call in progress ends: callers hang up, in the IVR or in the queue."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _line(self, rng: random.Random) -> Any:
        lines = list(self.config.lines)
        weights = [6 if line.name == self.config.default_line else 1 for line in lines]
        return rng.choices(lines, weights)[0]

    async def one_call(self, n: int) -> None:
        rng = random.Random(f"{self.seed}:call:{n}")
        number = rng.choice(self.prepared.numbers)
        line = self._line(rng)
        call = DemoCall(n, number, line.name, keys=list(rng.choice(CALLER_HABITS)))
        self.stats.log.append(call)
        # Russian trunks deliver 7XXXXXXXXXX or 8XXXXXXXXXX; the server normalises either.
        delivered = number
        if number.startswith("+7"):
            delivered = rng.choice((number[1:], "8" + number[2:], number))
        script = CallScript(number=delivered, line=line.name, dtmf=list(call.keys))
        try:
            result = await place_call("127.0.0.1", self.config.agi.port, script, timeout=120,
                                      fast=self.pace.prompts_at_once)
        except asyncio.CancelledError:
            call.outcome = "stopped"
            raise
        except Exception as exc:  # noqa: BLE001 - the demo goes on
            self._error(call, f"FastAGI call failed: {exc}")
            return
        self.stats.calls += 1
        call.uniqueid, call.variables = result.uniqueid, dict(result.variables)
        if result.error:
            self._error(call, result.error)
            return
        v = call.variables
        who = self._who(call)
        if v.get(CONTAINED) == "1":
            self.stats.self_served += 1
            call.outcome = "self-service"
            self._say(call, f"call from {who} answered by self-service ({v.get(INTENT, '-')})")
            return
        queue = v.get(QUEUE)
        if not queue:  # what the dialplan does: the line's default queue, set before the AGI
            self._error(call, f"no {QUEUE} from the server: the dialplan's default queue takes the call")
            queue = line.default_queue
        try:
            queue = self.sim.queue(queue).name
        except KeyError:  # a queue the rules gained while the demo runs
            self.sim.add_queue(queue, strategy="leastrecent", servicelevel=60)
            for agent in self.prepared.agents:
                self.sim.add_member(queue, agent.interface, agent.name, static=True)
        call.queue = queue
        variables = {k: v[k] for k in EVENT_VARIABLES if v.get(k)}
        digits = delivered if delivered != "anonymous" else ""
        self.sim.place_caller(queue, uniqueid=call.uniqueid, callerid=f'"" <{digits}>' if digits else "",
                              variables=variables, priority=int(v.get(PRIORITY) or 0))
        self.stats.queued += 1
        call.outcome = "waiting"
        predicted = f", predicted {v[INTENT]}" if v.get(INTENT) else ""
        self._say(call, f"call from {who} -> queue {queue}, priority {v.get(PRIORITY, '0')}{predicted}")
        try:
            await self.in_queue(call, rng)
        except asyncio.CancelledError:
            if call.uniqueid in self.sim.callers:
                self.sim.caller_hangs_up(call.uniqueid)
            if call.outcome in ("waiting", "answered"):
                call.outcome = "stopped"
            raise
        except (KeyError, ValueError) as exc:  # a supervisor removed the agent meanwhile, for example
            log.info("demo call %s: %s", call.uniqueid, exc)
            if call.uniqueid in self.sim.callers:
                self.sim.caller_hangs_up(call.uniqueid)
        finally:
            self._ready.discard(call.uniqueid)
            self._notify()

    async def in_queue(self, call: DemoCall, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        pace = self.pace
        joined = loop.time()
        patience = rng.uniform(*pace.patience)
        await asyncio.sleep(min(rng.uniform(*pace.announcement), patience))
        self._ready.add(call.uniqueid)
        while True:
            waited = loop.time() - joined
            if waited >= patience:
                self.sim.caller_hangs_up(call.uniqueid)
                self.stats.abandoned += 1
                call.outcome = "abandoned"
                self._say(call, f"caller hung up after {waited:.0f} s in queue {call.queue}")
                return
            agent = self._agent_for(call)
            if agent is None:
                try:  # until an agent frees up or someone ahead leaves, re-checking now and then
                    await asyncio.wait_for(self._changed.wait(), min(1.0, patience - waited))
                except asyncio.TimeoutError:
                    pass
                continue
            self.busy.add(agent)
            try:
                self.sim.ring_agent(call.uniqueid, agent)
                call.rung.append(agent)
                await asyncio.sleep(rng.uniform(*pace.ring))
                if rng.random() < pace.no_answer:
                    self.sim.agent_no_answer(call.uniqueid, agent)
                    self.stats.no_answers += 1
                    self.free_at[agent] = loop.time()  # the next caller tries someone else first
                    self._say(call, f"{self._name(agent)} did not answer")
                    self.busy.discard(agent)
                    self._notify()
                    await asyncio.sleep(pace.retry)
                    continue
                self.sim.agent_answers(call.uniqueid, agent)
            finally:
                self.busy.discard(agent)
                self._notify()
            self.talking.add(agent)
            self.stats.answered += 1
            call.outcome, call.agent = "answered", agent
            self._say(call, f"answered by {self._name(agent)} after {loop.time() - joined:.0f} s")
            try:
                await asyncio.sleep(rng.uniform(*pace.talk))
                self.sim.complete_call(call.uniqueid, reason=rng.choice(("caller", "agent")))
                call.outcome = "completed"
            finally:
                self.talking.discard(agent)
                self.free_at[agent] = loop.time() + pace.wrapup
                loop.call_later(pace.wrapup + 0.01, self._notify)
            return

    def _agent_for(self, call: DemoCall) -> str | None:
        """The member to ring for `call` now, or None (nobody free, or callers ahead take them)."""
        queue = self.sim.queue(call.queue or "")
        now = asyncio.get_running_loop().time()
        free = [i for i, m in queue.members.items()
                if i not in self.busy and i not in self.talking and not m.paused and self.free_at.get(i, 0.0) <= now]
        if not free:
            return None
        waiting = [c.uniqueid for c in queue.callers
                   if c.uniqueid in self._ready and not c.ringing and c.agent is None]
        if call.uniqueid not in waiting or waiting.index(call.uniqueid) >= len(free):
            return None  # autofill: as many callers from the head as there are free agents
        penalty = min(queue.members[i].penalty for i in free)
        tier = [i for i in free if queue.members[i].penalty == penalty]
        return min(tier, key=lambda i: (self.free_at.get(i, 0.0), self._order.get(i, 1 << 30), i))

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _error(self, call: DemoCall, text: str) -> None:
        self.stats.errors += 1
        call.outcome = "error"
        self._say(call, f"call from {call.number}: {text}")

    def _who(self, call: DemoCall) -> str:
        v = call.variables
        name = self.prepared.customers.get(v.get(CUSTOMER_ID, ""))
        if name is None:
            return f"{call.number} (unknown caller)" if not v.get(CUSTOMER_ID) else call.number
        segment = f", segment {v[SEGMENT]}" if v.get(SEGMENT) else ""
        return f"{call.number} ({name}{segment})"

    def _name(self, interface: str) -> str:
        agent = self.agents.get(interface)
        return f"{agent.name} [{agent.login}]" if agent else interface

    def _say(self, call: DemoCall, text: str) -> None:
        self.say(f"{dt.datetime.now():%H:%M:%S} #{call.n:<3} {text}")


# --------------------------------------------------------------------------
# the whole demo
# --------------------------------------------------------------------------


class Demo:
    """Server + simulated Asterisk + callers: `start()`, `run()`, `close()` (or `run_demo`)."""

    def __init__(self, config: Config, *, calls_per_minute: float = 12.0, seed: int = 1, pace: Pace = Pace(),
                 say: Callable[[str], None] = print):
        self.config = config
        self.calls_per_minute = calls_per_minute
        self.seed = seed
        self.pace = pace
        self.say = say
        self.sim: AmiSimulator | None = None
        self.prepared: Prepared | None = None
        self.generator: CallGenerator | None = None
        self._server: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._signals: list[int] = []

    @property
    def web_url(self) -> str | None:
        web = self.config.web
        if not web.enabled:
            return None
        host = "127.0.0.1" if web.host in ("0.0.0.0", "::", "") else web.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{web.port}"

    def stop(self) -> None:
        """Stop soon: the callers hang up, the server shuts down (`run` returns)."""
        self._stop.set()

    async def start(self, *, handle_signals: bool = False) -> None:
        from ivr.server import serve

        self.prepared = await prepare(self.config, self.say)
        queues = demo_queues(self.config)
        self.sim = simulator_for(self.prepared.agents, queues)
        await self.sim.start()
        self.config = replace(self.config, ami=AmiSettings(host="127.0.0.1", port=self.sim.port,
                                                           username=self.sim.username, secret=self.sim.secret))
        ready = asyncio.Event()
        self._server = asyncio.ensure_future(serve(self.config, ready=ready, web_required=True))
        waiter = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({self._server, waiter}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._server.done():
            self._server.result()  # the server could not start: its error
            raise RuntimeError("the server stopped while starting")
        if not ready.is_set():
            raise RuntimeError("the server did not start within 120 s")
        if handle_signals:  # after serve() set its own: Ctrl-C lets the callers hang up first
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
                self._signals.append(sig)
        self._introduce(queues)
        self.generator = CallGenerator(self.sim, self.config, self.prepared, seed=self.seed, pace=self.pace,
                                       say=self.say)

    def _introduce(self, queues: list[str]) -> None:
        assert self.prepared is not None
        agents = self.prepared.agents
        talk = self.pace.talk
        out = [f"demo: a simulated Asterisk with {len(agents)} agents in {len(queues)} queues "
               f"({', '.join(queues)}); about {self.calls_per_minute:g} calls a minute, "
               f"{talk[0]:g}-{talk[1]:g} s of talk"]
        if self.web_url:
            out.append(f"demo: open {self.web_url}/ and log in; every demo login's password is {DEMO_PASSWORD}")
            out.append(f"        {'supervisor':<12} the wallboard: queues, agents, pause and penalty")
            for agent in agents:
                out.append(f"        {agent.login:<12} the agent page of {agent.name} ({agent.interface})")
        else:
            out.append("demo: the web pages are off in the configuration (web.enabled)")
        out.append("demo: Ctrl-C stops")
        self.say("\n".join(out))

    async def run(self, duration: float | None = None) -> DemoStats:
        """Place calls until `duration` seconds passed, `stop()` or Ctrl-C; the figures."""
        if self.generator is None or self._server is None:
            raise RuntimeError("start() the demo first")
        calls = asyncio.ensure_future(self.generator.run(self.calls_per_minute, duration, self._stop))
        try:
            await asyncio.wait({self._server, calls}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not calls.done():  # the server stopped (or we are cancelled): the callers stop too
                self._stop.set()
            await asyncio.gather(calls, return_exceptions=True)
        if self._server.done():
            self._server.result()  # an error of the server is the demo's error
            self.say("demo: the server stopped")
        else:
            await asyncio.sleep(0.5)  # the last hang-ups reach the server over AMI before it stops
        return self.generator.stats

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        if self._server is not None:
            if not self._server.done():
                self._server.cancel()
            await asyncio.gather(self._server, return_exceptions=True)
        if self.sim is not None:
            await self.sim.close()


async def run_demo(config: Config, *, calls_per_minute: float = 12.0, duration: float | None = None,
                   seed: int = 1, pace: Pace = Pace(), say: Callable[[str], None] = print,
                   handle_signals: bool = False) -> DemoStats:
    """The whole demo on `config` as given (see `demo_config` for the demo's own variant)."""
    demo = Demo(config, calls_per_minute=calls_per_minute, seed=seed, pace=pace, say=say)
    try:
        await demo.start(handle_signals=handle_signals)
        started = time.monotonic()
        stats = await demo.run(duration)
        log.info("demo ran %.1f s: %s", time.monotonic() - started, stats.summary())
        return stats
    finally:
        await demo.close()
