"""`ivr demo` for a few seconds, checked through real interfaces.

The demo runs the real server (FastAGI, AMI client, screen-pop, hub, web app)
against the AMI simulator and places calls over real TCP.  The test watches
it as outsiders would: its own manager session on the simulator (the events
Asterisk sent), the agent's and the supervisor's WebSockets after logging in
over HTTP (cards, wallboard), the supervisor's pause through the REST API,
and the SQLite file (call records, logins).  Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from caller_id.seed import SHOWCASE
from ivr.sim.demo import (DEMO_DATABASE, DEMO_PASSWORD, Demo, DemoCall, Pace, demo_config, demo_queues, free_port,
                      login_of, service_levels)
from ivr.web.auth import verify_password
from ivr.web.client import log_in
from tests.waiting import eventually

PROJECT = Path(__file__).resolve().parents[3]
_SCRIPT = Path(sys.executable).with_name("ivr")
IVR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ivr.cli"]

# Compressed further than the demo's default so that a few seconds hold every kind of call
# (prompts too: their real timing is proven in tests/ivr/test_inbound.py and test_simulate.py).
FAST = Pace(talk=(0.5, 2.0), announcement=(0.3, 1.0), ring=(0.15, 0.4), patience=(0.3, 3.0), wrapup=0.2,
            retry=0.2, no_answer=0.15, prompts_at_once=True)


# --- outsiders' views ----------------------------------------------------------------


class ManagerSession:
    """A second AMI session on the simulator, logged in the way any manager client is: every event."""

    def __init__(self) -> None:
        self.events: list[list[tuple[str, str]]] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int, username: str, secret: str) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await asyncio.wait_for(reader.readline(), 5)
        assert banner.startswith(b"Asterisk Call Manager/"), banner
        self._writer.write(f"Action: Login\r\nActionID: t1\r\nUsername: {username}\r\nSecret: {secret}\r\n"
                           "Events: on\r\n\r\n".encode())
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Response: Success" in first, first
        self._task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                pairs = [tuple(line.split(": ", 1)) for line in raw.decode("utf-8").split("\r\n") if ": " in line]
                if pairs and pairs[0][0] == "Event":
                    self.events.append(pairs)  # type: ignore[arg-type]
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def named(self, name: str) -> list[dict[str, Any]]:
        """Events called `name`, one dict each; ChanVariable lines as a dict under that key."""
        found = []
        for pairs in self.events:
            if pairs[0][1] != name:
                continue
            event: dict[str, Any] = {"ChanVariable": {}}
            for key, value in pairs:
                if key == "ChanVariable":
                    var, _, val = value.partition("=")
                    event["ChanVariable"][var] = val
                else:
                    event.setdefault(key, value)
            found.append(event)
        return found

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Browser:
    """A logged-in browser: cookies, the CSRF token, one WebSocket whose messages are kept."""

    def __init__(self, url: str):
        self.session = aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.messages: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def log_in(self, username: str, password: str = DEMO_PASSWORD) -> None:
        response = await log_in(self.session, username, password)
        assert response.status == 302, response.status

    async def follow(self, feed: str) -> None:
        socket = await self.session.ws_connect(f"/ws?feed={feed}")

        async def read() -> None:
            async for message in socket:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(message.json())

        self._reader = asyncio.ensure_future(read())

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.session.get("/api/v1/me") as response:
            token = (await response.json())["csrf_token"]
        async with self.session.post(path, json=body, headers={"X-CSRF-Token": token}) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()


def rows(path: str, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def config(base_config):
    """The demo's variant of the test configuration, on the seeded CRM copy, with the DTMF dialog on."""
    config = demo_config(base_config, database=base_config.database_url, web_port=free_port())
    return replace(config, lines=tuple(replace(line, self_service="dtmf") for line in config.lines))


# --- the whole demo ------------------------------------------------------------------


async def test_demo_calls_reach_fastagi_ami_records_and_the_pages(config):
    said: list[str] = []
    demo = Demo(config, calls_per_minute=240, seed=3, pace=FAST, say=said.append)
    manager = ManagerSession()
    agent, supervisor = None, None
    try:
        await demo.start()
        sim = demo.sim
        agents = {a.interface: a for a in demo.prepared.agents}
        first, second = demo.prepared.agents[0], demo.prepared.agents[1]
        await manager.connect(sim.port, sim.username, sim.secret)
        agent, supervisor = Browser(demo.web_url), Browser(demo.web_url)
        await agent.log_in(first.login)
        await agent.follow("agent")
        await supervisor.log_in("supervisor")
        await supervisor.follow("wallboard")
        # The supervisor pauses the second agent (the one the demo would ring next): Asterisk obeys, the demo too.
        await supervisor.post("/api/v1/actions/pause", {"interface": second.interface, "paused": True,
                                                        "reason": "training"})
        assert all(q.members[second.interface].paused for q in sim.queues.values())

        stats = await demo.run(duration=8)
        await eventually(lambda: any(m.get("type") == "screenpop" for m in agent.messages))
    finally:
        for closing in (agent, supervisor, manager):
            if closing is not None:
                await closing.close()
        await demo.close()

    log: list[DemoCall] = stats.log
    report = "\n".join(said)
    assert stats.errors == 0, report
    assert stats.calls >= 10 and stats.queued >= 5, report
    assert stats.answered >= 3 and stats.self_served >= 1 and stats.abandoned >= 1, report
    assert {c.number for c in log} & {s["number"] for s in SHOWCASE}
    assert re.search(r"call from \+\d+ \(.+\) -> queue \w+", report)
    assert re.search(r"answered by \w+ \w+ \[agent\d+\]", report)

    # FastAGI: every call that got through the IVR has the server's call id and routing.
    through = [c for c in log if c.uniqueid]
    assert len(through) == stats.calls
    assert all(c.call_id and re.fullmatch(r"[0-9a-f]{32}", c.call_id) for c in through)
    assert all(c.variables.get("IVR_QUEUE") for c in through)  # self-served calls are routed too (fail open)
    queued = [c for c in through if c.queue]
    assert all(c.variables.get("IVR_QUEUE") == c.queue for c in queued)
    assert {c.queue for c in queued} <= set(demo_queues(config))

    # Asterisk's side: what the simulator told every manager session.
    joins = {e["Uniqueid"]: e for e in manager.named("QueueCallerJoin")}
    for call in queued:
        assert joins[call.uniqueid]["ChanVariable"]["IVR_CALL_ID"] == call.call_id
        assert joins[call.uniqueid]["Queue"] == call.queue
    answered = [c for c in log if c.agent]
    connects = {e["Uniqueid"]: e for e in manager.named("AgentConnect")}
    for call in answered:
        assert connects[call.uniqueid]["Interface"] == call.agent
        assert connects[call.uniqueid]["MemberName"] == agents[call.agent].name  # Cyrillic intact
    abandons = {e["Uniqueid"] for e in manager.named("QueueCallerAbandon")}
    assert {c.uniqueid for c in log if c.outcome == "abandoned"} <= abandons
    assert second.interface not in {e["Interface"] for e in manager.named("AgentCalled")}
    assert any(e["Interface"] == second.interface and e["Paused"] == "1" for e in manager.named("QueueMemberPause"))
    assert manager.named("AgentConnect")[0]["Interface"] == first.interface  # the agent idle longest first

    # Call records, written by the server from FastAGI and AMI.
    database = config.database_url.split("///", 1)[1]
    records = {r[0]: r for r in rows(database, "SELECT call_id, uniqueid, queue, agent_id, answered_at, "
                                               "self_served, wait_seconds, talk_seconds FROM call_records")}
    for call in through:
        record = records[call.call_id]
        assert record[1] == call.uniqueid
        if call.outcome == "self-service":
            assert record[5]
        elif call.outcome == "completed":
            assert record[2] == call.queue and record[3] == agents[call.agent].id
            assert record[4] is not None and record[7] is not None
        elif call.outcome == "abandoned":
            assert record[2] == call.queue and record[4] is None and record[6] is not None
    users = dict(rows(database, "SELECT username, password_hash FROM users"))
    assert verify_password(DEMO_PASSWORD, users["supervisor"])
    assert {a.login for a in demo.prepared.agents} <= set(users)

    # The first agent's page: a card for each call that rang them, with the caller the IVR identified.
    pops = [m for m in agent.messages if m.get("type") == "screenpop"]
    theirs = {c.uniqueid: c for c in log if first.interface in c.rung}
    assert pops and {m["uniqueid"] for m in pops} <= set(theirs)
    assert all(m["agent_id"] == first.id for m in pops)
    for message in pops:
        call = theirs[message["uniqueid"]]
        card = message["card"]
        if card["context"] == "found":
            assert card["call_id"] == call.call_id
            customer = call.variables.get("IVR_CUSTOMER_ID")
            assert (card["customer"] or {}).get("id") == (int(customer) if customer else None)
    taken = [c for c in log if c.agent == first.interface]
    assert taken
    for call in taken:
        assert any(m["uniqueid"] == call.uniqueid and m["state"] == "answered" for m in pops), call
    assert any(m["state"] == "answered" and m["card"]["context"] == "found" and m["card"]["known"] for m in pops)

    # The supervisor's wallboard moved: callers waited, answers were counted.
    boards = [m for m in supervisor.messages if m.get("type") == "wallboard"]
    assert len(boards) >= 3
    assert any(q["callers"] for b in boards for q in b["queues"]["queues"].values())
    assert boards[-1]["stats"]["total"]["answered"] >= 1


# --- pieces ------------------------------------------------------------------------


def test_demo_config_keeps_the_demo_to_itself(base_config, tmp_path):
    configured = replace(base_config, database_url=f"sqlite+aiosqlite:///{tmp_path}/var/ivr.sqlite3",
                         redis_url="redis://127.0.0.1:6379/0",
                         speech=replace(base_config.speech, models={"ru": "/opt/vosk/model"}))
    config = demo_config(configured)
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path}/var/{DEMO_DATABASE}"
    assert (tmp_path / "var").is_dir()
    assert config.redis_url is None and config.speech.models == {}
    assert config.agi.host == "127.0.0.1" and config.agi.port > 0 and config.agi.allowed_hosts == ("127.0.0.1",)
    assert config.web == configured.web
    assert demo_config(configured, web_port=18099).web.port == 18099
    given = demo_config(configured, database="postgresql+asyncpg://ivr@db/ivr")
    assert given.database_url == "postgresql+asyncpg://ivr@db/ivr"
    elsewhere = demo_config(replace(configured, database_url="postgresql+asyncpg://ivr@db/ivr"))
    assert elsewhere.database_url == f"sqlite+aiosqlite:///{Path('var').resolve() / DEMO_DATABASE}"


def test_service_levels_follow_queue_templates(base_config, tmp_path):
    shipped = service_levels()
    assert shipped["vip"] == 20 and shipped["b2b"] == 30 and shipped["after_hours"] == 120
    assert set(demo_queues(base_config)) == {"vip", "key_accounts", "b2b", "b2c", "support", "english",
                                             "after_hours"} <= set(shipped)
    conf = tmp_path / "queues.conf"
    conf.write_text("[general]\npersistentmembers=yes\n[base](!)\nservicelevel = 45 ; seconds\n"
                    "[a](base)\nmember => PJSIP/1,0,A\n[b](base)\nservicelevel=15\n[c]\nstrategy=ringall\n",
                    encoding="utf-8")
    assert service_levels(conf) == {"base": 45, "a": 45, "b": 15}
    assert service_levels(tmp_path / "missing.conf") == {}
    assert login_of("PJSIP/1001") == "agent1001" and login_of("Local/100@agents") == "agent100agents"


# --- the command -------------------------------------------------------------------


def test_ivr_demo_command_prints_the_tour_and_stops_on_ctrl_c(base_config, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(IVR_PROMPTS_DIR=str(tmp_path / "prompts"), PYTHONUTF8="1", IVR_SELF_SERVICE="dtmf",
               IVR_MODEL_FILE=str(tmp_path / "intent-model.joblib"))
    out_path = tmp_path / "out.txt"
    with open(out_path, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [*IVR, "demo", "--config", str(PROJECT / "config" / "ivr.yaml"), "--database", base_config.database_url,
             "--web-port", str(port), "--calls-per-minute", "120", "--talk", "0.5-1", "--seed", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while not re.search(r"answered by .+ \[agent\d+\]", out_path.read_text(encoding="utf-8")):
                assert process.poll() is None, out_path.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, out_path.read_text(encoding="utf-8")
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
            assert process.wait(20) == 0, out_path.read_text(encoding="utf-8")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = out_path.read_text(encoding="utf-8")
    assert f"web       : http://127.0.0.1:{port}/" in text
    assert f"open http://127.0.0.1:{port}/ and log in; every demo login's password is {DEMO_PASSWORD}" in text
    assert re.search(r"^\s+supervisor\s+the wallboard", text, re.M)
    assert re.search(r"^\s+agent1001\s+the agent page of \w+ \w+ \(PJSIP/1001\)", text, re.M)
    assert re.search(r"call from \S+ .*-> queue \w+", text)
    assert re.search(r"^demo: \d+ calls, \d+ answered by self-service, \d+ by agents, \d+ abandoned$", text, re.M)
    assert "Traceback" not in text
    assert not (tmp_path / "var").exists()  # --database given: no demo file of its own


def test_ivr_demo_command_says_when_the_web_port_is_taken(base_config, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
        env.update(IVR_PROMPTS_DIR=str(tmp_path / "prompts"), PYTHONUTF8="1",
                   IVR_MODEL_FILE=str(tmp_path / "intent-model.joblib"))
        result = subprocess.run([*IVR, "demo", "--database", base_config.database_url, "--web-port", str(port),
                                 "--duration", "5"], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is `ivr run` still running? --web-port picks another port" in result.stderr
    assert "Traceback" not in result.stderr
