"""CallCenter over real TCP: resync on (re)connect, wallboard, call records, two nodes."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import insert, select

from caller_id.models import CallRecord
from caller_id.store import as_utc
from ivr.asterisk.ami import Message
from ivr.agents.callcenter import ami_event
from ivr.agents.hub import RedisHub
from queues.events import AmiEvent
from tests.ivr.agents.test_screenpop import ANNA, BORIS, NUMBER, Rig, eventually, make_context, next_pop


async def add_records(db: Any, *rows: dict[str, Any]) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    async with db.session() as session:
        await session.execute(insert(CallRecord), [{"started_at": now, "queue": "support", **row} for row in rows])
        await session.commit()


async def record(db: Any, call_id: str) -> CallRecord:
    async with db.session() as session:
        return (await session.execute(select(CallRecord).where(CallRecord.call_id == call_id))).scalar_one()


def queue_view(rig: Rig) -> dict[str, Any]:
    """What QueueState says about the queues: callers waiting, connected calls, members."""
    snapshot = rig.state.snapshot()
    return {
        "callers": {name: [c["uniqueid"] for c in q["callers"]] for name, q in snapshot["queues"].items()},
        "calls": sorted(c["uniqueid"] for c in snapshot["calls"]),
        "members": {name: sorted(m["interface"] for m in q["members"]) for name, q in snapshot["queues"].items()},
    }


def simulator_view(rig: Rig) -> dict[str, Any]:
    sim = rig.sim
    return {
        "callers": {name: [c.uniqueid for c in q.callers] for name, q in sim.queues.items()},
        "calls": sorted(uid for uid, c in sim.callers.items() if c.agent is not None),
        "members": {name: sorted(q.members) for name, q in sim.queues.items()},
    }


@asynccontextmanager
async def running(db: Any, **kwargs: Any):
    rig = Rig(db, **kwargs)
    await rig.start()
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
async def rig(sqlite_db):
    async with running(sqlite_db) as rig:
        yield rig


# --- resync -------------------------------------------------------------------------------

async def test_queue_status_on_connect_fills_the_state_with_what_was_there_before(sqlite_db):
    rig = Rig(sqlite_db)
    await rig.sim.start()
    rig.call("1800.1", call_id="call-1")
    rig.call("1800.2", call_id="call-2", queue="vip")
    await rig.sim.close()
    rig.sim.port = 0
    try:
        await rig.start()  # the callers were waiting before we connected
        assert queue_view(rig) == simulator_view(rig)
        assert queue_view(rig)["callers"] == {"support": ["1800.1"], "vip": ["1800.2"]}
    finally:
        await rig.close()


async def test_asterisk_restart_resyncs_the_state_ends_vanished_calls_and_pops_still_work(rig: Rig):
    anna, boris = rig.subscribe(ANNA), rig.subscribe(BORIS)
    await rig.contexts.put("call-1", make_context("call-1", "1800.3"), aliases=("1800.3",))
    rig.call("1800.3", call_id="call-1")
    rig.sim.ring_agent("1800.3", ANNA)
    rig.sim.agent_answers("1800.3", ANNA)
    rig.call("1800.4", call_id="call-2")
    assert [(await next_pop(anna))["state"] for _ in range(2)] == ["ringing", "answered"]
    await eventually(lambda: queue_view(rig)["calls"] == ["1800.3"])

    await rig.sim.restart(down_for=0.2)  # calls and callers gone, no AgentComplete ever
    await rig.resynced(2)
    assert rig.ami.state.connects == 2
    assert queue_view(rig) == simulator_view(rig)
    assert queue_view(rig)["calls"] == [] and queue_view(rig)["callers"]["support"] == []
    ended = await next_pop(anna)
    assert (ended["state"], ended["reason"], ended["call_id"]) == ("ended", "lost", "call-1")

    await rig.contexts.put("call-3", make_context("call-3", "1800.5"), aliases=("1800.5",))
    rig.call("1800.5", call_id="call-3")
    rig.sim.ring_agent("1800.5", BORIS)
    pop = await next_pop(boris)
    assert (pop["state"], pop["call_id"]) == ("ringing", "call-3")
    assert pop["card"]["context"] == "found"
    await eventually(lambda: queue_view(rig) == simulator_view(rig))


async def test_a_silent_asterisk_is_noticed_reconnected_and_resynced(rig: Rig):
    anna = rig.subscribe(ANNA)
    rig.call("1800.6", call_id="call-6")
    rig.sim.go_silent()  # half-open: the socket stays, nothing answers
    rig.sim.caller_hangs_up("1800.6")  # never reaches us on the silent connection
    await rig.resynced(2)
    assert rig.ami.state.connects >= 2
    assert queue_view(rig)["callers"]["support"] == []  # QueueStatus said so

    await rig.contexts.put("call-7", make_context("call-7", "1800.7"), aliases=("1800.7",))
    rig.call("1800.7", call_id="call-7")
    rig.sim.ring_agent("1800.7", ANNA)
    assert (await next_pop(anna))["call_id"] == "call-7"


async def test_a_queue_status_that_times_out_is_retried(sqlite_db):
    async with running(sqlite_db, center_kwargs={"resync_timeout": 0.3}) as rig:
        rig.sim.action_delays["queuestatus"] = 1.0
        rig.call("1800.8", call_id="call-8")
        before = rig.center.stats["resync_failures"]
        rig.ami._conn.fail("test: drop the connection")  # noqa: SLF001 - force a reconnect
        await eventually(lambda: rig.center.stats["resync_failures"] > before)
        rig.sim.action_delays.clear()
        await rig.resynced(2)
        assert queue_view(rig)["callers"]["support"] == ["1800.8"]


# --- wallboard --------------------------------------------------------------------------------

async def test_wallboard_updates_are_coalesced_during_a_burst(sqlite_db):
    gap = 0.1
    async with running(sqlite_db, center_kwargs={"wallboard_interval": 0.5, "wallboard_min_gap": gap}) as rig:
        board = rig.hub.subscribe("wallboard")
        await board.get(5)  # the first snapshot after start
        while board.get_nowait() is not None:
            pass
        events_before = rig.center.stats["events"]
        started = time.monotonic()
        # 100 important AMI events (50 joins, 50 abandons), a few milliseconds apart, so
        # that each is dispatched on its own rather than in one TCP read.
        for n in range(50):
            rig.sim.place_caller("support", f"1900.{n}", callerid=f"7916000{n:04d}")
            await asyncio.sleep(0.003)
        for n in range(50):
            rig.sim.caller_hangs_up(f"1900.{n}")
            await asyncio.sleep(0.003)
        messages = []
        while True:
            message = await board.get(5)
            messages.append(message)
            if message["stats"]["queues"].get("support", {}).get("abandoned") == 50:
                break
        elapsed = time.monotonic() - started
        assert rig.center.stats["events"] - events_before >= 100
        # At most one snapshot per gap, however many events came.
        assert len(messages) <= math.ceil(elapsed / gap) + 2, (len(messages), elapsed)
        last = messages[-1]
        assert last["type"] == "wallboard" and last["queues"]["queues"]["support"]["callers_waiting"] == 0
        assert last["ami"]["connected"] is True
        numbers = [c["number"] for c in last["stats"]["abandoned_calls"]]
        assert numbers and all("*" in number for number in numbers)  # masked for supervisors


async def test_a_caller_joining_reaches_the_wallboard_before_the_regular_interval(sqlite_db):
    async with running(sqlite_db, center_kwargs={"wallboard_interval": 30.0, "wallboard_min_gap": 0.05,
                                                 "wallboard_idle": 30.0}) as rig:
        board = rig.hub.subscribe("wallboard")
        rig.call("1900.100", call_id="call-100")
        while True:
            message = await board.get(5)  # a 30 s interval would time this out
            if message["queues"]["queues"]["support"]["callers_waiting"] == 1:
                break


# --- call records -------------------------------------------------------------------------------

async def test_call_records_follow_the_call_answered_and_abandoned(rig: Rig):
    await add_records(rig.db, {"call_id": "call-a", "uniqueid": "1800.20"},
                      {"call_id": "call-b", "uniqueid": "1800.21"})
    joined = rig.clock.now
    rig.call("1800.20", call_id="call-a", queue="vip")
    rig.call("1800.21", call_id="call-b")
    rig.clock.advance(7)
    rig.sim.ring_agent("1800.20", ANNA)
    rig.sim.agent_answers("1800.20", ANNA)
    answered_at = rig.clock.now
    rig.clock.advance(5)
    rig.sim.caller_hangs_up("1800.21")
    abandoned_at = rig.clock.now
    rig.clock.advance(37)
    rig.sim.complete_call("1800.20")
    ended_at = rig.clock.now

    async def updated() -> bool:
        a, b = await record(rig.db, "call-a"), await record(rig.db, "call-b")
        return a.talk_seconds is not None and b.ended_at is not None

    async with asyncio.timeout(5):
        while not await updated():
            await asyncio.sleep(0.02)
    a, b = await record(rig.db, "call-a"), await record(rig.db, "call-b")
    assert a.queue == "vip" and a.agent_id == 1
    assert a.wait_seconds == 7 and a.talk_seconds == 42
    assert as_utc(a.answered_at).timestamp() == pytest.approx(answered_at, abs=0.01)
    assert as_utc(a.ended_at).timestamp() == pytest.approx(ended_at, abs=0.01)
    assert b.answered_at is None and b.agent_id is None
    assert b.wait_seconds == 12
    assert as_utc(b.ended_at).timestamp() == pytest.approx(abandoned_at, abs=0.01)
    assert joined < answered_at


async def test_an_outcome_waits_for_its_record_to_be_written(rig: Rig):
    rig.call("1800.22", call_id="call-late")
    rig.sim.caller_hangs_up("1800.22")
    await eventually(lambda: rig.center.records.stats["retries"] >= 2)
    await add_records(rig.db, {"call_id": "call-late", "uniqueid": "1800.22"})

    async def done() -> bool:
        return (await record(rig.db, "call-late")).ended_at is not None

    async with asyncio.timeout(5):
        while not await done():
            await asyncio.sleep(0.02)
    assert rig.center.records.pending == 0


async def test_a_missed_agent_connect_is_made_up_from_agent_complete_without_overwriting(rig: Rig):
    await add_records(rig.db, {"call_id": "call-m", "uniqueid": "1800.26"},
                      {"call_id": "call-n", "uniqueid": "1800.27"})
    now = time.time()
    common = {"Queue": "support", "Interface": BORIS, "HoldTime": "9", "TalkTime": "30"}
    # call-m: only its AgentComplete was seen (the connection was down at AgentConnect).
    rig.center.handle({"Event": "AgentComplete", "Uniqueid": "1800.26", "ChanVariable": {"IVR_CALL_ID": "call-m"},
                       "Timestamp": f"{now:.6f}", **common})
    # call-n: its AgentConnect was written first; AgentComplete must not move answered_at.
    rig.center.handle({"Event": "AgentConnect", "Uniqueid": "1800.27", "ChanVariable": {"IVR_CALL_ID": "call-n"},
                       "Timestamp": f"{now - 29.5:.6f}", **common})
    await eventually(lambda: rig.center.records.pending == 0)
    rig.center.handle({"Event": "AgentComplete", "Uniqueid": "1800.27", "ChanVariable": {"IVR_CALL_ID": "call-n"},
                       "Timestamp": f"{now:.6f}", **common})
    await eventually(lambda: rig.center.records.pending == 0)
    m, n = await record(rig.db, "call-m"), await record(rig.db, "call-n")
    assert as_utc(m.answered_at).timestamp() == pytest.approx(now - 30, abs=0.01)
    assert (m.wait_seconds, m.talk_seconds, m.agent_id) == (9, 30, 2)
    assert as_utc(n.answered_at).timestamp() == pytest.approx(now - 29.5, abs=0.01)
    assert as_utc(n.ended_at).timestamp() == pytest.approx(now, abs=0.01)



async def test_only_a_callers_own_events_change_its_record(migrated_db):
    """Hang-ups of other channels, failed transfers, dials that are not the manager's: nothing written;
    a transfer target too long for its column is left out, the transfer kept; one that fits is kept
    (SQLite and PostgreSQL)."""
    async with running(migrated_db) as rig:
        await add_records(rig.db, {"call_id": "call-o", "uniqueid": "1800.30"},
                          {"call_id": "call-p", "uniqueid": "1800.34"})
        now = time.time()
        caller = {"Uniqueid": "1800.30", "ChanVariable": {"IVR_CALL_ID": "call-o", "IVR_MANAGER": "PJSIP/1003"},
                  "Timestamp": f"{now:.6f}"}
        records = rig.center.records
        noted = records.stats["noted"]
        rig.center.handle({"Event": "Hangup", "Uniqueid": "1800.31", "Cause": "16"})  # an agent's leg
        rig.center.handle({"Event": "BlindTransfer", "Result": "Fail", "TransfereeUniqueid": "1800.30",
                           "TransfereeChanVariable": {"IVR_CALL_ID": "call-o"}, "Extension": "1", "Context": "x"})
        # app_queue's dial of the manager's phone (the whole interface), and a DialEnd whose DialBegin was missed
        rig.center.handle({"Event": "DialBegin", **caller, "DestUniqueid": "1800.32", "DialString": "PJSIP/1003"})
        rig.center.handle({"Event": "DialEnd", **caller, "DestUniqueid": "1800.32", "DialStatus": "ANSWER"})
        rig.center.handle({"Event": "DialEnd", **caller, "DestUniqueid": "1800.33", "DialStatus": "ANSWER"})
        assert records.stats["noted"] == noted and records.pending == 0

        rig.center.handle({"Event": "AttendedTransfer", "Result": "Success", "TransfereeUniqueid": "1800.30",
                           "TransfereeChanVariable": {"IVR_CALL_ID": "call-o"},
                           "TransferTargetChannel": "Local/" + "9" * 100 + "@agents-0000000a;1"})
        longest = "9" * (80 - len("@from-agents")) + "@from-agents"
        rig.center.handle({"Event": "BlindTransfer", "Result": "Success", "TransfereeUniqueid": "1800.34",
                           "TransfereeChanVariable": {"IVR_CALL_ID": "call-p"}, "Extension": longest[:-12],
                           "Context": "from-agents"})
        await eventually(lambda: records.pending == 0)
        o, p = await record(rig.db, "call-o"), await record(rig.db, "call-p")
        assert (o.result, o.transferred_to, o.ended_at, o.agent_id) == ("transferred", None, None, None)
        assert (p.result, p.transferred_to) == ("transferred", longest)
        assert records.stats["rejected"] == 0


def test_what_the_outcomes_follow_between_events_stays_bounded(sqlite_db):
    from ivr.agents.callcenter import MAX_TRACKED, QueueOutcomes

    outcomes = QueueOutcomes(sqlite_db)
    for n in range(MAX_TRACKED + 50):
        variables = {"IVR_CALL_ID": f"call-{n}", "IVR_MANAGER": "PJSIP/1003"}
        outcomes.note(ami_event({"Event": "DialBegin", "Uniqueid": f"1.{n}", "ChanVariable": variables,
                                 "DestUniqueid": f"2.{n}", "DialString": "1003"}))
        outcomes.note(ami_event({"Event": "QueueCallerJoin", "Uniqueid": f"1.{n}", "ChanVariable": variables,
                                 "Queue": "support"}))
    assert len(outcomes._dials) == len(outcomes._queued) == MAX_TRACKED  # noqa: SLF001 - the bound itself
    assert "2.0" not in outcomes._dials and f"2.{MAX_TRACKED + 49}" in outcomes._dials  # noqa: SLF001

class FlakyDb:
    """The real database behind a switch that makes every session fail."""

    def __init__(self, db: Any):
        self.db = db
        self.down = False

    def session(self):
        if self.down:
            raise ConnectionRefusedError("database down")
        return self.db.session()


async def test_a_database_outage_delays_call_records_but_not_cards(sqlite_db):
    flaky = FlakyDb(sqlite_db)
    async with running(sqlite_db) as rig:
        rig.center.records._db = flaky  # noqa: SLF001 - only the record writer loses its database
        await add_records(sqlite_db, {"call_id": "call-db", "uniqueid": "1800.23"})
        anna = rig.subscribe(ANNA)
        flaky.down = True
        await rig.contexts.put("call-db", make_context("call-db", "1800.23"), aliases=("1800.23",))
        rig.call("1800.23", call_id="call-db")
        rig.clock.advance(3)
        rig.sim.ring_agent("1800.23", ANNA)
        rig.sim.agent_answers("1800.23", ANNA)
        assert [(await next_pop(anna))["state"] for _ in range(2)] == ["ringing", "answered"]
        await eventually(lambda: rig.center.records.stats["db_errors"] >= 1)
        assert (await record(sqlite_db, "call-db")).answered_at is None
        flaky.down = False

        async def written() -> bool:
            return (await record(sqlite_db, "call-db")).answered_at is not None

        async with asyncio.timeout(15):
            while not await written():
                await asyncio.sleep(0.05)
        assert (await record(sqlite_db, "call-db")).wait_seconds == 3


async def test_start_rebuilds_statistics_from_call_records_before_live_events(sqlite_db):
    now = dt.datetime.now(dt.timezone.utc)
    await add_records(
        sqlite_db,
        {"call_id": "old-1", "uniqueid": "1.1", "answered_at": now - dt.timedelta(minutes=30),
         "wait_seconds": 4.0, "talk_seconds": 60.0, "ended_at": now - dt.timedelta(minutes=29)},
        {"call_id": "old-2", "uniqueid": "1.2", "wait_seconds": 30.0, "ended_at": now - dt.timedelta(minutes=20)},
    )
    async with running(sqlite_db) as rig:
        figures = rig.stats.figures("support")
        assert (figures["answered"], figures["abandoned"], figures["completed"]) == (1, 1, 1)
        rig.call("1800.24", call_id="call-24")
        rig.clock.advance(2)
        rig.sim.caller_hangs_up("1800.24")
        await eventually(lambda: rig.stats.figures("support")["abandoned"] == 2)


async def test_stop_detaches_from_the_ami_client(rig: Rig):
    anna = rig.subscribe(ANNA)
    await rig.center.stop()
    rig.call("1800.25", call_id="call-25")
    rig.sim.ring_agent("1800.25", ANNA)
    await rig.ami.ping()  # everything sent before the Pong has been dispatched
    await asyncio.sleep(0.05)
    assert anna.pending == 0 and queue_view(rig)["callers"].get("support") == []
    rig.center = None  # already stopped


def test_an_ami_message_is_read_once_keeping_every_channel_variable():
    message = Message.of(("Event", "AgentCalled"), ("ChanVariable", "IVR_CALL_ID=call-1"),
                         ("ChanVariable", "IVR_CUSTOMER_ID=5"), ("DestChanVariable", "X=1"), Queue="support")
    event = ami_event(message)
    assert event.name == "AgentCalled" and event.header("Queue") == "support"
    assert event.variables == {"IVR_CALL_ID": "call-1", "IVR_CUSTOMER_ID": "5"}
    assert event.dest_variables == {"X": "1"}
    assert ami_event(event) is event
    as_mapping = {"Event": "AgentCalled", "Queue": "support"}  # a replay's or a test's
    assert ami_event(as_mapping) == AmiEvent.of(as_mapping)


# --- two nodes ----------------------------------------------------------------------------------

@pytest.mark.redis
async def test_an_agent_on_another_node_gets_the_card_through_redis(sqlite_db, redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    options = dict(prefix=prefix, ping_interval=0.5, ping_timeout=0.5, reconnect_initial=0.05, reconnect_max=0.2)
    node_a, node_b = RedisHub(redis_url, **options), RedisHub(redis_url, **options)
    try:
        async with running(sqlite_db, hub=node_a) as rig:  # node A listens to Asterisk
            anna_on_b = node_b.subscribe("agent:1")  # Anna's browser is connected to node B
            board_on_b = node_b.subscribe("wallboard")
            assert await anna_on_b.wait_ready(5) and await board_on_b.wait_ready(5)
            await rig.contexts.put("call-1", make_context("call-1", "1800.30"), aliases=("1800.30",))
            rig.call("1800.30", call_id="call-1")
            rig.sim.ring_agent("1800.30", ANNA)
            pop = await next_pop(anna_on_b)
            assert (pop["state"], pop["call_id"]) == ("ringing", "call-1")
            assert pop["card"]["customer"]["name"] == make_context("call-1")["decision"]["customer"]["name"]
            assert pop["card"]["number"] == "+" + NUMBER
            message = await board_on_b.get(5)
            assert message["type"] == "wallboard"
    finally:
        await node_b.close()
