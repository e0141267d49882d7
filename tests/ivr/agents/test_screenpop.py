"""Screen-pops over real TCP: AmiSimulator (Asterisk's side) -> AmiClient -> CallCenter -> hub.

`Rig` (also used by test_callcenter.py) wires the real parts: a simulated
Asterisk manager with a ``support`` and a ``vip`` queue, the AMI client, a
migrated SQLite CRM with three agents, in-process call contexts, a hub,
QueueState, QueueStatistics, ScreenPop and CallCenter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert

from caller_id.directory import LookupResult
from caller_id.models import Agent
from caller_id.predict import Intent
from caller_id.profile import Case, CallerProfile, Customer, Manager, Organisation, RecentCall, Role
from ivr.asterisk.ami_client import AmiClient
from ivr.sim.ami_server import AmiSimulator
from ivr.agents.callcenter import CallCenter
from ivr.config import Line
from ivr.call.context import InProcessContexts
from ivr.call.decision import Decision
from ivr.agents.hub import InProcessHub, Subscription
from ivr.agents.screenpop import ScreenPop
from ivr.agents.directory import AgentDirectory
from ivr.call.context import build_card
from queues.rules import RouteDecision
from queues.state import QueueState
from queues.stats import QueueStatistics
from tests.waiting import eventually

ANNA, BORIS, VERA = "PJSIP/1001", "PJSIP/1002", "PJSIP/1003"
AGENTS = {ANNA: (1, "Анна Смирнова"), BORIS: (2, "Борис Петров"), VERA: (3, "Вера Соколова")}
NUMBER = "79161234567"
CUSTOMER = "Иванов Пётр Сергеевич"
COMPANY = "ООО «Ромашка»"


class FakeClock:
    """The simulated Asterisk's clock: starts now, moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def next_pop(sub: Subscription, timeout: float = 5.0) -> dict[str, Any]:
    message = await sub.get(timeout)
    assert message["type"] == "screenpop"
    return message


def make_context(call_id: str, uniqueid: str | None = None, *, name: str = CUSTOMER,
                 company: str = COMPANY) -> dict[str, Any]:
    """A call context shaped exactly as ivr.call.inbound stores it, from a real Decision."""
    manager = Manager(7, "Ольга Кузнецова", "PJSIP/2001")
    org = Organisation(70, company, "A", is_vip=True, manager=manager)
    now = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.timezone.utc)
    case = Case(11, "metal_card", "Перевыпуск металлической карты", "in_progress", 2,
                opened_at=now - dt.timedelta(days=10), updated_at=now - dt.timedelta(days=1),
                due_at=now - dt.timedelta(days=2), organisation_id=70)
    customer = Customer(5, name, "C", language="ru", cases=(case,))
    role = Role("director", 5, org)
    profile = CallerProfile("+" + NUMBER, (customer,), (role,),
                            (RecentCall(now - dt.timedelta(days=3), line="b2b", intent="card_status", queue="vip"),))
    decision = Decision(
        lookup=LookupResult("+" + NUMBER, profile, "crm"),
        line=Line("b2b", default_queue="b2b"),
        view=profile.view(role),
        intents=(Intent("card_status", 0.87, ("Срок выпуска карты прошёл 2 дня назад",), case_id=11),
                 Intent("other", 0.1, ())),
        route=RouteDecision("vip", 10, "vip-first"),
    )
    return {
        "call_id": call_id, "uniqueid": uniqueid, "channel": "PJSIP/trunk-00000001", "line": "b2b",
        "started_at": now.isoformat(), "outcome": "routed", "degraded": [],
        "dtmf": [{"step": "role", "pressed": "2"}],
        "role_question": {"asked": ["private", f"director of {company}"], "pressed": "2",
                          "chosen": f"director of {company}"},
        "transcript": [{"speaker": "caller", "text": "где моя карта"}],
        "recent_calls": [{"started_at": (now - dt.timedelta(days=3)).isoformat(), "intent": "card_status"}],
        "decision": decision.to_dict(),
    }


class Rig:
    def __init__(self, db: Any, *, sim_kwargs: dict[str, Any] | None = None, hub: Any = None,
                 screenpop_kwargs: dict[str, Any] | None = None, center_kwargs: dict[str, Any] | None = None):
        self.db = db
        self.clock = FakeClock()
        self.sim = AmiSimulator(clock=self.clock, **(sim_kwargs or {}))
        for queue in ("support", "vip"):
            self.sim.add_queue(queue, servicelevel=20)
            for interface, (_, name) in AGENTS.items():
                self.sim.add_member(queue, interface, name, static=True)
        self.hub = hub or InProcessHub()
        self.contexts = InProcessContexts(ttl=600)
        self.agents = AgentDirectory(db, miss_refresh=0.0)
        options = dict(retry_delays=(0.02, 0.05, 0.1, 0.2, 0.4), leave_grace=0.5)
        options.update(screenpop_kwargs or {})
        # The listener reads the time from the simulated Asterisk's clock: the two agree, as
        # with NTP, and an event is never from the listener's future.
        self.screenpop = ScreenPop(self.contexts, self.hub, self.agents, clock=self.clock, **options)
        self.state = QueueState(segment_of=self.screenpop.segment_of, clock=self.clock)
        self.stats = QueueStatistics(clock=self.clock)
        self.ami: AmiClient | None = None
        self.center: CallCenter | None = None
        self._center_kwargs = center_kwargs or {}

    async def start(self) -> Rig:
        async with self.db.session() as session:
            await session.execute(insert(Agent), [
                {"id": agent_id, "name": name, "interface": interface}
                for interface, (agent_id, name) in AGENTS.items()])
            await session.commit()
        await self.sim.start()
        self.ami = AmiClient(
            "127.0.0.1", self.sim.port, self.sim.username, self.sim.secret,
            connect_timeout=1.0, login_timeout=1.0, action_timeout=2.0, ping_interval=0.2, ping_timeout=0.3,
            backoff_initial=0.05, backoff_max=0.2, stable_after=0.1,
        )
        options = dict(queue_state=self.state, queue_stats=self.stats, screenpop=self.screenpop,
                       wallboard_interval=0.5, record_interval=0.05, clock=self.clock)
        options.update(self._center_kwargs)
        self.center = CallCenter(self.ami, self.db, self.contexts, self.hub, **options)
        await self.center.start()
        await self.ami.wait_connected(5)
        await self.resynced()
        return self

    async def resynced(self, count: int = 1) -> None:
        await eventually(lambda: self.center.stats["resyncs"] >= count and not self.state.resyncing)

    def subscribe(self, interface: str) -> Subscription:
        return self.hub.subscribe(f"agent:{AGENTS[interface][0]}")

    def call(self, uniqueid: str, call_id: str | None = "call-1", queue: str = "support",
             callerid: str = f'"Иванов Пётр" <{NUMBER}>'):
        variables = {"IVR_CALL_ID": call_id} if call_id else {}
        return self.sim.place_caller(queue, uniqueid, callerid=callerid, variables=variables)

    async def close(self) -> None:
        if self.center is not None:
            await self.center.stop()
        await self.screenpop.close()
        if self.ami is not None:
            await self.ami.close()
        await self.sim.close()
        await self.hub.close()


@pytest.fixture
async def rig(sqlite_db) -> AsyncIterator[Rig]:
    rig = Rig(sqlite_db)
    await rig.start()
    yield rig
    await rig.close()


# --- the card through a whole call -------------------------------------------------

async def test_ringing_card_turns_answered_then_ends_with_the_same_call_id(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.1"), aliases=("1700.1",))
    rig.call("1700.1")
    rig.sim.ring_agent("1700.1", ANNA)

    ringing = await next_pop(anna)
    assert ringing["state"] == "ringing" and ringing["reason"] is None
    assert ringing["call_id"] == "call-1" and ringing["uniqueid"] == "1700.1"
    assert ringing["queue"] == "support" and ringing["agent_id"] == 1 and ringing["interface"] == ANNA
    card = ringing["card"]
    assert card["context"] == "found" and card["known"] is True
    assert card["customer"]["name"] == CUSTOMER
    assert card["role"]["kind"] == "director" and card["organisation"]["name"] == COMPANY
    assert card["segment"] == "A" and card["is_vip"] is True
    assert card["manager"]["name"] == "Ольга Кузнецова"
    assert [c["title"] for c in card["open_cases"]] == ["Перевыпуск металлической карты"]
    assert card["reason"]["intent"] == "card_status"
    assert card["reason"]["reasons"] == ["Срок выпуска карты прошёл 2 дня назад"]
    assert card["reason"]["case"]["id"] == 11
    assert card["ivr"]["dtmf"] == [{"step": "role", "pressed": "2"}]
    assert card["ivr"]["role_question"]["chosen"] == f"director of {COMPANY}"
    assert card["ivr"]["transcript"] == [{"speaker": "caller", "text": "где моя карта"}]
    assert card["previous_calls"][0]["intent"] == "card_status"
    assert card["number"] == "+" + NUMBER

    rig.sim.agent_answers("1700.1", ANNA)
    answered = await next_pop(anna)
    assert (answered["state"], answered["call_id"]) == ("answered", "call-1")
    assert answered["card"]["customer"]["name"] == CUSTOMER
    assert answered["seq"] > ringing["seq"]

    rig.sim.complete_call("1700.1")
    ended = await next_pop(anna)
    assert (ended["state"], ended["reason"], ended["call_id"]) == ("ended", "completed", "call-1")
    await rig.screenpop.drain()
    assert anna.pending == 0 and rig.screenpop.calls == 0


async def test_two_pages_of_one_agent_both_get_the_card_and_another_agent_gets_nothing(rig: Rig):
    tab1, tab2, boris = rig.subscribe(ANNA), rig.subscribe(ANNA), rig.subscribe(BORIS)
    await rig.contexts.put("call-1", make_context("call-1", "1700.2"), aliases=("1700.2",))
    rig.call("1700.2")
    rig.sim.ring_agent("1700.2", ANNA)
    rig.sim.agent_answers("1700.2", ANNA)
    rig.sim.complete_call("1700.2")
    for tab in (tab1, tab2):
        states = [(await next_pop(tab))["state"] for _ in range(3)]
        assert states == ["ringing", "answered", "ended"]
    await rig.screenpop.drain()
    assert boris.pending == 0


async def test_answering_ends_the_card_of_the_other_members_that_rang(rig: Rig):
    anna, boris, vera = rig.subscribe(ANNA), rig.subscribe(BORIS), rig.subscribe(VERA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.3"), aliases=("1700.3",))
    rig.call("1700.3")
    rig.sim.ring_agent("1700.3", ANNA)
    rig.sim.ring_agent("1700.3", BORIS)
    rig.sim.agent_answers("1700.3", BORIS)
    assert [(await next_pop(boris))["state"] for _ in range(2)] == ["ringing", "answered"]
    first, second = await next_pop(anna), await next_pop(anna)
    assert first["state"] == "ringing"
    assert (second["state"], second["reason"], second["call_id"]) == ("ended", "answered_elsewhere", "call-1")
    await rig.screenpop.drain()
    assert vera.pending == 0


async def test_the_leave_before_agent_connect_does_not_flash_the_card_away(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.4"), aliases=("1700.4",))
    rig.call("1700.4")
    rig.sim.ring_agent("1700.4", ANNA)
    rig.sim.agent_answers("1700.4", ANNA)  # QueueCallerLeave, then AgentConnect
    assert [(await next_pop(anna))["state"] for _ in range(2)] == ["ringing", "answered"]
    await asyncio.sleep(rig.screenpop.leave_grace + 0.2)
    assert anna.pending == 0  # no "ended" after the grace either


async def test_a_caller_who_abandons_while_ringing_ends_the_card(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.5"), aliases=("1700.5",))
    rig.call("1700.5")
    rig.sim.ring_agent("1700.5", ANNA)
    assert (await next_pop(anna))["state"] == "ringing"
    rig.sim.caller_hangs_up("1700.5")
    ended = await next_pop(anna)
    assert (ended["state"], ended["reason"], ended["call_id"]) == ("ended", "abandoned", "call-1")


async def test_a_member_that_does_not_answer_loses_the_card_the_next_one_gets_it(rig: Rig):
    anna, boris = rig.subscribe(ANNA), rig.subscribe(BORIS)
    await rig.contexts.put("call-1", make_context("call-1", "1700.6"), aliases=("1700.6",))
    rig.call("1700.6")
    rig.sim.ring_agent("1700.6", ANNA)
    rig.sim.agent_no_answer("1700.6", ANNA)
    rig.sim.ring_agent("1700.6", BORIS)
    assert [(m["state"], m["reason"]) for m in [await next_pop(anna), await next_pop(anna)]] == \
        [("ringing", None), ("ended", "no_answer")]
    assert (await next_pop(boris))["card"]["customer"]["name"] == CUSTOMER


async def test_a_caller_who_leaves_without_an_agent_loses_the_ringing_card_after_the_grace(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.16"), aliases=("1700.16",))
    rig.call("1700.16")
    rig.sim.ring_agent("1700.16", ANNA)
    assert (await next_pop(anna))["state"] == "ringing"
    # Queue() timed out (no AgentConnect follows): as Asterisk reports it.
    rig.sim.emit("QueueCallerLeave", {"Channel": "Local/200@from-test-queue-00000001;2", "Uniqueid": "1700.16",
                                      "Linkedid": "1700.16", "Queue": "support", "Position": "1", "Count": "0"},
                 privilege="agent")
    ended = await next_pop(anna)
    assert (ended["state"], ended["reason"], ended["call_id"]) == ("ended", "left", "call-1")


async def test_a_caller_moved_to_another_queue_ends_the_old_rings_at_once(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.17"), aliases=("1700.17",))
    rig.call("1700.17")
    rig.sim.ring_agent("1700.17", ANNA)
    assert (await next_pop(anna))["state"] == "ringing"
    leave = {"Event": "QueueCallerLeave", "Uniqueid": "1700.17", "Queue": "support",
             "ChanVariable": {"IVR_CALL_ID": "call-1"}}
    rig.center.handle(leave)
    rig.center.handle({**leave, "Event": "QueueCallerJoin", "Queue": "vip", "Position": "1"})
    await rig.screenpop.drain()  # the events are handled; the leave timer has not fired
    ended = anna.get_nowait()
    assert ended is not None and (ended["state"], ended["reason"]) == ("ended", "left")
    rig.center.handle({**leave, "Event": "AgentCalled", "Queue": "vip", "Interface": ANNA})
    again = await next_pop(anna)
    assert (again["state"], again["queue"], again["call_id"]) == ("ringing", "vip", "call-1")


# --- the context is late or missing ---------------------------------------------------

async def test_a_context_stored_after_agent_called_updates_the_card_in_place(rig: Rig):
    anna = rig.subscribe(ANNA)
    rig.call("1700.7", call_id="call-7")
    rig.sim.ring_agent("1700.7", ANNA)
    first = await next_pop(anna)
    assert first["state"] == "ringing" and first["call_id"] == "call-7"
    assert first["card"]["context"] == "pending" and first["card"]["number"] == NUMBER

    await asyncio.sleep(0.05)  # another node stores the context 50 ms later
    await rig.contexts.put("call-7", make_context("call-7", "1700.7"), aliases=("1700.7",))
    update = await next_pop(anna)
    assert (update["state"], update["call_id"]) == ("ringing", "call-7")
    assert update["card"]["context"] == "found"
    assert update["card"]["customer"]["name"] == CUSTOMER
    assert update["seq"] > first["seq"]
    assert rig.screenpop.stats["late_contexts"] == 1

    rig.sim.agent_answers("1700.7", ANNA)
    answered = await next_pop(anna)
    assert answered["state"] == "answered" and answered["card"]["customer"]["name"] == CUSTOMER


async def test_an_unknown_caller_card_carries_the_number_and_says_when_the_lookup_gave_up(rig: Rig):
    anna = rig.subscribe(ANNA)
    rig.call("1700.8", call_id="call-8", callerid='"Сидоров" <74951112233>')
    rig.sim.ring_agent("1700.8", ANNA)
    first = await next_pop(anna)
    card = first["card"]
    assert card["context"] == "pending" and card["known"] is False
    assert card["number"] == "74951112233" and card["caller_name"] == "Сидоров"
    assert card["customer"] is None and card["open_cases"] == []
    final = await next_pop(anna)
    assert (final["state"], final["call_id"]) == ("ringing", "call-8")
    assert final["card"]["context"] == "missing" and final["card"]["number"] == "74951112233"


async def test_a_call_without_ivr_call_id_is_found_by_its_channel(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-9", make_context("call-9", "1700.9"), aliases=("1700.9",))
    rig.call("1700.9", call_id=None)
    rig.sim.ring_agent("1700.9", ANNA)
    pop = await next_pop(anna)
    assert pop["call_id"] == "call-9"  # the context's id, found by Uniqueid
    assert pop["card"]["customer"]["name"] == CUSTOMER


async def test_a_failing_context_store_still_pops_a_card_and_never_reaches_the_ami_client(rig: Rig):
    class Broken:
        async def get(self, key: str) -> None:
            raise ConnectionError("context store down")

    rig.screenpop.contexts = Broken()
    rig.screenpop.retry_delays = (0.01,)
    anna = rig.subscribe(ANNA)
    rig.call("1700.10", call_id="call-10")
    rig.sim.ring_agent("1700.10", ANNA)
    pop = await next_pop(anna)
    assert pop["card"]["number"] == NUMBER and pop["card"]["context"] == "pending"
    assert rig.screenpop.stats["lookup_errors"] >= 1
    assert rig.ami.stats["handler_errors"] == 0


async def test_a_member_who_is_no_agent_gets_no_card_and_nothing_breaks(rig: Rig):
    rig.sim.add_member("support", "PJSIP/9999", "Стажёр", static=True)
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.11"), aliases=("1700.11",))
    rig.call("1700.11")
    rig.sim.ring_agent("1700.11", "PJSIP/9999")
    rig.sim.ring_agent("1700.11", ANNA)
    assert (await next_pop(anna))["state"] == "ringing"
    assert rig.screenpop.stats["unknown_agents"] == 1
    assert rig.ami.stats["handler_errors"] == 0


# --- the wire misbehaves -----------------------------------------------------------------

async def test_malformed_bytes_in_the_middle_of_a_call_lose_no_card(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.12"), aliases=("1700.12",))
    rig.call("1700.12")
    rig.sim.ring_agent("1700.12", ANNA)
    assert (await next_pop(anna))["state"] == "ringing"
    rig.sim.send_malformed()
    rig.sim.agent_answers("1700.12", ANNA)
    rig.sim.send_malformed("truncated")
    rig.sim.complete_call("1700.12")
    assert [(await next_pop(anna))["state"] for _ in range(2)] == ["answered", "ended"]
    assert rig.ami.stats["malformed"] >= 1
    assert rig.ami.connected


@pytest.mark.parametrize("split", [True])
async def test_cyrillic_names_arrive_intact_even_when_split_across_tcp_reads(sqlite_db, split):
    rig = Rig(sqlite_db, sim_kwargs={"split_utf8_writes": split, "split_pause": 0.005})
    await rig.start()
    try:
        anna = rig.subscribe(ANNA)
        rig.call("1700.13", call_id="call-13", callerid='"Ёлкина Юлия" <79160000013>')
        rig.sim.ring_agent("1700.13", ANNA)
        pending = await next_pop(anna)
        assert pending["card"]["caller_name"] == "Ёлкина Юлия"
        await rig.contexts.put("call-13", make_context("call-13", "1700.13", name="Ёлкина Юлия Эдуардовна",
                                                        company="АО «Щука и Ёж»"), aliases=("1700.13",))
        found = await next_pop(anna)
        assert found["card"]["customer"]["name"] == "Ёлкина Юлия Эдуардовна"
        assert found["card"]["organisation"]["name"] == "АО «Щука и Ёж»"
        assert rig.ami.stats["invalid_utf8"] == 0
    finally:
        await rig.close()


# --- pieces --------------------------------------------------------------------------------

async def test_cards_for_tells_a_page_that_just_opened_what_is_on_screen(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.contexts.put("call-1", make_context("call-1", "1700.14"), aliases=("1700.14",))
    rig.call("1700.14")
    rig.sim.ring_agent("1700.14", ANNA)
    await next_pop(anna)
    rig.sim.agent_answers("1700.14", ANNA)
    await next_pop(anna)
    [card] = rig.screenpop.cards_for(1)
    assert card["state"] == "answered" and card["call_id"] == "call-1"
    assert rig.screenpop.cards_for(2) == []
    rig.sim.complete_call("1700.14")
    await next_pop(anna)
    assert rig.screenpop.cards_for(1) == []


def test_build_card_without_a_context_shows_what_asterisk_said():
    card = build_card(None, number="74950000000", caller_name=None)
    assert card["context"] == "pending" and card["known"] is False
    assert card["number"] == "74950000000" and card["reason"] is None and card["ivr"]["dtmf"] == []


def test_build_card_of_a_context_without_a_decision_keeps_the_ivr_part():
    context = {"call_id": "c", "line": "general", "dtmf": [{"step": "menu", "pressed": "0"}],
               "outcome": "fail_open", "degraded": ["decision_timeout"]}
    card = build_card(context, number="74950000000")
    assert card["context"] == "found" and card["known"] is False and card["number"] == "74950000000"
    assert card["ivr"]["degraded"] == ["decision_timeout"] and card["line"] == "general"


async def test_agent_directory_finds_agents_added_later_and_survives_a_database_outage(sqlite_db):
    async with sqlite_db.session() as session:
        await session.execute(insert(Agent), [{"id": 1, "name": "Анна", "interface": "PJSIP/1001"}])
        await session.commit()
    agents = AgentDirectory(sqlite_db, miss_refresh=0.0)
    assert await agents("PJSIP/1001") == 1
    assert await agents("pjsip/1001") == 1
    assert await agents("анна") == 1  # MemberName
    assert await agents("PJSIP/1002") is None
    async with sqlite_db.session() as session:
        await session.execute(insert(Agent), [{"id": 2, "name": "Борис", "interface": "PJSIP/1002"}])
        await session.commit()
    assert await agents("PJSIP/1002") == 2

    class Down:
        def session(self):
            raise ConnectionRefusedError("database down")

    agents._db = Down()
    assert await agents.reload() is False
    assert await agents("PJSIP/1001") == 1  # the last known map


async def test_a_hanging_database_does_not_hold_a_card_back(sqlite_db):
    async with sqlite_db.session() as session:
        await session.execute(insert(Agent), [{"id": 1, "name": "Анна", "interface": "PJSIP/1001"}])
        await session.commit()
    agents = AgentDirectory(sqlite_db, refresh=0.0, miss_refresh=0.0, miss_wait=0.05)
    assert await agents("PJSIP/1001") == 1
    never = asyncio.Event()

    class Hanging:
        def session(self):
            return self

        async def __aenter__(self):
            await never.wait()

        async def __aexit__(self, *exc_info):
            return False

    agents._db = Hanging()
    # The map is due for a refresh and the reload hangs: known agents are still answered,
    # an unknown one after a short wait, while the reload goes on in the background.
    assert await asyncio.wait_for(agents("PJSIP/1001"), 1) == 1
    assert await asyncio.wait_for(agents("PJSIP/7777"), 1) is None
    agents._loading.cancel()


async def test_the_wallboard_shows_the_segment_of_a_waiting_caller_once_the_context_is_found(rig: Rig):
    await rig.contexts.put("call-1", make_context("call-1", "1700.15"), aliases=("1700.15",))
    rig.call("1700.15")

    def waiting() -> list[tuple[str, str | None]]:
        return [(c["call_id"], c["segment"]) for c in rig.state.snapshot()["queues"]["support"]["callers"]]

    await eventually(lambda: waiting() == [("call-1", "A")])
