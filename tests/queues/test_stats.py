"""Queue statistics: the real traces, service level, the sliding window, rebuild from SQL, 10,000 calls."""

from __future__ import annotations

import datetime as dt
import heapq
import json
import math
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caller_id.models import CallRecord
from queues.events import AmiEvent
from queues.state import QueueState, masked_number
from queues.stats import QueueStatistics
from tests.queues.test_state import (
    SEGMENTS,
    Clock,
    Replay,
    abandon,
    agent_event,
    join,
    leave,
    member_event,
    read_trace,
)

UTC = dt.timezone.utc


def at(text: str) -> float:
    """Epoch seconds of an ISO time in UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def connect(queue: str, uid: str, when: float, hold: int, interface: str = "PJSIP/1", **kw: Any) -> dict[str, Any]:
    return agent_event("AgentConnect", queue, uid, interface, when, HoldTime=hold, RingTime=1, **kw)


def complete(queue: str, uid: str, when: float, hold: int, talk: int, interface: str = "PJSIP/1",
             **kw: Any) -> dict[str, Any]:
    return agent_event("AgentComplete", queue, uid, interface, when, HoldTime=hold, TalkTime=talk,
                       Reason="caller", **kw)


def queue_status(uid: str, value: str, when: float) -> dict[str, Any]:
    return {"Event": "VarSet", "Timestamp": f"{when:.6f}", "Channel": f"PJSIP/trunk-{uid}", "Uniqueid": uid,
            "Variable": "QUEUESTATUS", "Value": value}


def answered_call(queue: str, uid: str, joined: float, wait: int, talk: int, **kw: Any) -> list[dict[str, Any]]:
    """The events of an answered call in the order Asterisk sends them (Leave before Connect)."""
    return [
        join(queue, uid, joined, **kw),
        agent_event("AgentCalled", queue, uid, "PJSIP/1", joined + 0.1, **kw),
        leave(queue, uid, joined + wait, **kw),
        connect(queue, uid, joined + wait + 0.0001, wait, **kw),
        complete(queue, uid, joined + wait + talk, wait, talk, **kw),
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock(at("2026-11-22T12:00:00"))


@pytest.fixture
def stats(clock: Clock) -> QueueStatistics:
    return QueueStatistics(window=3600, clock=clock, segment_of=SEGMENTS.get)


def feed(stats: QueueStatistics, clock: Clock, events: list[dict[str, Any]]) -> None:
    for event in events:
        clock.now = max(clock.now, float(event.get("Timestamp", clock.now)))
        stats.apply(AmiEvent.of(event))


def assert_clean(stats: QueueStatistics) -> None:
    assert stats.counters["bad"] == 0 and stats.counters["errors"] == 0
    json.dumps(stats.snapshot())


# --- the real traces ----------------------------------------------------------------

def test_answered_trace_counts_the_call_once_it_connects(clock: Clock) -> None:
    stats = QueueStatistics(window=3600, clock=clock, segment_of=SEGMENTS.get)
    state = QueueState(clock=clock, segment_of=SEGMENTS.get)
    replay = Replay(read_trace("ami-queue-answered"), clock, state, stats)

    replay.until("QueueCallerJoin")
    assert state.queue_snapshot("support")["callers_waiting"] == 1
    assert stats.figures("support")["offered"] == 0  # still waiting: live state, not statistics

    replay.until("QueueCallerLeave")
    # Asterisk sends the Leave before the Connect: not an abandon
    assert stats.figures("support")["abandoned"] == 0

    replay.until("AgentConnect")
    support = stats.figures("support")
    assert support["offered"] == 1 and support["answered"] == 1 and support["abandoned"] == 0
    assert support["average_answer_wait"] == 0.0  # HoldTime: 0
    assert support["service_level"] == 1.0
    assert stats.figures("support", "A")["answered"] == 1  # call-0001 is segment A

    replay.until("AgentComplete")
    support = stats.figures("support")
    assert support["completed"] == 1
    assert support["average_talk"] == 4.0  # TalkTime: 4
    assert support["average_handle"] == 4.0  # no wrap-up configured or set on the member

    replay.rest()
    clock.advance(60)
    assert stats.figures("support")["abandoned"] == 0
    assert stats.figures()["offered"] == 1
    assert_clean(stats)


def test_abandoned_trace_lists_the_call_with_position_wait_and_masked_number(stats: QueueStatistics,
                                                                            clock: Clock) -> None:
    replay = Replay(read_trace("ami-queue-abandoned"), clock, stats)
    abandoned = replay.until("QueueCallerAbandon")
    replay.rest()

    b2b = stats.figures("b2b")
    assert b2b["offered"] == 1 and b2b["abandoned"] == 1 and b2b["answered"] == 0
    assert b2b["abandon_rate"] == 1.0
    assert b2b["average_abandon_wait"] == 4.0  # HoldTime: 4
    assert b2b["abandoned_within_threshold"] == 1  # 4 s <= 20 s: a short abandon
    assert b2b["service_level"] is None  # nothing answered, no long abandon
    assert b2b["timeouts"] == 0
    assert stats.figures("b2b", "B")["abandoned"] == 1
    (call,) = stats.abandoned_calls("b2b")
    assert call == {
        "at": float(abandoned["Timestamp"]), "queue": "b2b", "segment": "B", "position": 1,
        "original_position": 1, "wait": 4.0, "number": masked_number("79161234567"), "reason": "abandon",
        "call_id": "call-0002",
    }
    assert stats.snapshot()["abandoned_calls"] == [call]
    assert_clean(stats)


def test_ring_no_answer_trace_is_one_answered_call_with_its_hold_time(stats: QueueStatistics,
                                                                     clock: Clock) -> None:
    Replay(read_trace("ami-queue-ringnoanswer"), clock, stats).rest()
    ringtest = stats.figures("ringtest")
    assert ringtest["offered"] == 1 and ringtest["answered"] == 1
    assert ringtest["average_answer_wait"] == 5.0  # HoldTime: 5, across the missed ring
    assert ringtest["longest_wait"] == 5.0
    assert ringtest["average_talk"] == 3.0
    assert stats.figures("ringtest", "C")["answered"] == 1
    assert_clean(stats)


def test_the_three_traces_add_up(stats: QueueStatistics, clock: Clock) -> None:
    for name in ("ami-queue-answered", "ami-queue-abandoned", "ami-queue-ringnoanswer"):
        Replay(read_trace(name), clock, stats).rest()
    total = stats.figures()
    assert (total["offered"], total["answered"], total["abandoned"]) == (3, 2, 1)
    assert total["abandon_rate"] == pytest.approx(1 / 3)
    assert total["average_wait"] == pytest.approx((0 + 5 + 4) / 3, abs=1e-3)
    assert total["average_talk"] == 3.5
    assert set(stats.snapshot()["segments"]) == {"A", "B", "C"}
    assert stats.queues() == ["b2b", "ringtest", "support"]


# --- leaving without an agent ------------------------------------------------------------

def test_a_leave_without_connect_becomes_an_abandon_after_the_grace(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t, call_id="call-0001"), leave("support", "u1", t + 30)])
    assert stats.figures("support")["abandoned"] == 0  # its Connect may still come
    clock.advance(stats.leave_grace)
    support = stats.figures("support")
    assert support["abandoned"] == 1 and support["timeouts"] == 1
    assert support["average_abandon_wait"] == 30.0  # from the join: a Leave has no HoldTime
    (call,) = stats.abandoned_calls()
    assert call["reason"] == "left" and call["position"] == 1 and call["segment"] == "A"


def test_queue_status_timeout_settles_a_leave_at_once(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t), leave("support", "u1", t + 60),
                        queue_status("u1", "TIMEOUT", t + 60.001)])
    support = stats.figures("support")
    assert support["abandoned"] == 1 and support["timeouts"] == 1
    assert stats.abandoned_calls()[0]["reason"] == "timeout"


def test_queue_result_reported_by_the_dialplan_settles_a_leave(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t), leave("support", "u1", t + 60)])
    assert stats.queue_result("u1", "CONTINUE") is False
    assert stats.queue_result("u1", "leaveempty") is True
    assert stats.abandoned_calls()[0]["reason"] == "leaveempty"


def test_an_abandon_that_queue_reports_as_a_timeout_is_relabelled_not_counted_twice(
        stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t), abandon("support", "u1", t + 60, hold=60),
                        leave("support", "u1", t + 60), queue_status("u1", "TIMEOUT", t + 60.01)])
    clock.advance(60)
    support = stats.figures("support")
    assert support["abandoned"] == 1 and support["timeouts"] == 1
    assert stats.abandoned_calls()[0]["reason"] == "timeout"


def test_a_caller_hanging_up_after_a_leave_is_settled_at_once(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t), leave("support", "u1", t + 8),
                        {"Event": "Hangup", "Timestamp": f"{t + 8.01}", "Uniqueid": "u1"}])
    assert stats.figures("support")["abandoned"] == 1


def test_a_connect_within_the_grace_is_an_answer(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t), leave("support", "u1", t + 8)])
    clock.advance(stats.leave_grace / 2)
    feed(stats, clock, [connect("support", "u1", clock.now, 8)])
    clock.advance(60)
    support = stats.figures("support")
    assert support["answered"] == 1 and support["abandoned"] == 0


def test_moving_to_another_queue_settles_the_first(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [join("support", "u1", t), leave("support", "u1", t + 30), join("overflow", "u1", t + 30.1)])
    assert stats.figures("support")["abandoned"] == 1
    assert stats.figures("overflow")["offered"] == 0


# --- service level --------------------------------------------------------------------------

def test_service_level_counts_answers_within_the_threshold_and_leaves_out_short_abandons(clock: Clock) -> None:
    stats = QueueStatistics(window=3600, service_level_seconds={"*": 20, "vip": 10}, clock=clock)
    t = clock.now - 600
    events: list[dict[str, Any]] = []
    for n, wait in enumerate((5, 20, 21, 30)):
        events += answered_call("support", f"a{n}", t + n, wait, talk=60)
    events += [join("support", "s1", t), abandon("support", "s1", t + 10, hold=10)]  # within T: left out
    events += [join("support", "l1", t), abandon("support", "l1", t + 25, hold=25)]  # after T: counts against
    for n, wait in enumerate((5, 15)):
        events += answered_call("vip", f"v{n}", t + n, wait, talk=60)
    for event in sorted(events, key=lambda e: float(e["Timestamp"])):
        stats.apply(AmiEvent.of(event))
    clock.advance(60)

    support = stats.figures("support")
    assert support["answered_within_threshold"] == 2  # 5 s and exactly 20 s
    assert support["abandoned_within_threshold"] == 1
    assert support["service_level"] == pytest.approx(2 / (4 + 2 - 1))
    assert support["service_level_seconds"] == 20
    assert support["abandon_rate"] == pytest.approx(2 / 6)
    assert support["average_answer_wait"] == pytest.approx((5 + 20 + 21 + 30) / 4)
    assert support["average_wait"] == pytest.approx((5 + 20 + 21 + 30 + 10 + 25) / 6)
    assert support["longest_wait"] == 30
    vip = stats.figures("vip")
    assert vip["service_level"] == 0.5 and vip["service_level_seconds"] == 10
    # over every queue, each call was judged against its own queue's threshold
    assert stats.figures()["service_level"] == pytest.approx((2 + 1) / (6 - 1 + 2))
    assert stats.figures()["service_level_seconds"] is None


def test_a_new_threshold_applies_to_calls_recorded_after_it(stats: QueueStatistics, clock: Clock) -> None:
    stats.record_answered("support", at=clock.now, wait=15)
    stats.set_service_level("support", 10)
    stats.record_answered("support", at=clock.now, wait=15)
    assert stats.figures("support")["answered_within_threshold"] == 1
    assert stats.service_level_for("support") == 10 and stats.service_level_for("other") == 20


def test_handle_time_adds_the_members_wrap_up_or_the_queues(clock: Clock) -> None:
    stats = QueueStatistics(window=3600, clock=clock, wrapup_seconds={"support": 15})
    t = clock.now
    feed(stats, clock, [member_event("QueueMemberStatus", "sales", "PJSIP/2", t, Wrapuptime=30)])
    feed(stats, clock, answered_call("support", "u1", t, 5, 100))
    feed(stats, clock, [join("sales", "u2", t), leave("sales", "u2", t + 1),
                        connect("sales", "u2", t + 1, 1, interface="PJSIP/2"),
                        complete("sales", "u2", t + 61, 1, 60, interface="PJSIP/2")])
    assert stats.figures("support")["average_handle"] == 115.0
    assert stats.figures("sales")["average_handle"] == 90.0
    assert stats.figures()["average_talk"] == 80.0


# --- the sliding window ----------------------------------------------------------------------

def test_the_window_slides_across_midnight_without_a_reset() -> None:
    clock = Clock(at("2026-11-22T23:00:00"))
    stats = QueueStatistics(window=dt.timedelta(minutes=60), clock=clock)

    def answered_at(when: str, wait: int) -> None:
        clock.now = at(when)
        stats.record_answered("support", at=clock.now, wait=wait)

    answered_at("2026-11-22T23:10:00", 5)
    answered_at("2026-11-22T23:50:00", 25)
    clock.now = at("2026-11-22T23:59:59")
    before = stats.figures("support")
    assert before["answered"] == 2
    clock.now = at("2026-11-23T00:00:01")
    assert stats.figures("support") == before  # midnight changes nothing

    answered_at("2026-11-23T00:20:00", 40)
    clock.now = at("2026-11-23T00:30:00")
    after = stats.figures("support")
    assert after["answered"] == 2  # 23:10 slid out, 00:20 came in
    assert after["average_answer_wait"] == (25 + 40) / 2
    assert after["longest_wait"] == 40

    clock.now = at("2026-11-23T00:51:00")
    assert stats.figures("support")["answered"] == 1  # only 00:20
    clock.now = at("2026-11-23T01:21:00")
    empty = stats.figures("support")
    assert empty["answered"] == 0 and empty["service_level"] is None and empty["longest_wait"] is None
    assert stats.snapshot()["window_start"] == at("2026-11-23T00:22:00")


def test_the_abandoned_list_slides_with_the_window(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    stats.record_abandoned("support", at=t, wait=40, number="+79161234567", position=3)
    clock.advance(1800)
    stats.record_abandoned("support", at=clock.now, wait=50, number="89161234567", position=1)
    assert [c["position"] for c in stats.abandoned_calls()] == [1, 3]  # newest first
    assert [c["number"] for c in stats.abandoned_calls()] == [
        masked_number("89161234567"), masked_number("+79161234567")]
    clock.advance(1800 + 60)
    assert [c["position"] for c in stats.abandoned_calls()] == [1]
    assert stats.figures("support")["abandoned"] == 1


def test_a_call_older_than_the_window_is_not_counted(stats: QueueStatistics, clock: Clock) -> None:
    assert stats.record_answered("support", at=clock.now - 7200, wait=3) is False
    assert stats.figures("support")["answered"] == 0
    assert stats.counters["late"] == 1


# --- segments -------------------------------------------------------------------------------

def test_figures_per_segment_and_per_queue_and_segment(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    events = (answered_call("support", "u1", t, 5, 60, call_id="call-0001")        # A
              + answered_call("support", "u2", t, 50, 60, call_id="call-0003")     # C
              + answered_call("vip", "u3", t, 2, 30, call_id="call-0001")          # A
              + answered_call("support", "u4", t, 9, 60, call_id="call-none")      # unknown
              + [join("support", "u5", t, call_id="call-0003"), abandon("support", "u5", t + 40, hold=40,
                                                                         call_id="call-0003")])
    feed(stats, clock, sorted(events, key=lambda e: float(e["Timestamp"])))
    clock.advance(60)
    snap = stats.snapshot()
    assert set(snap["segments"]) == {"A", "C", "unknown"}
    assert snap["segments"]["A"]["answered"] == 2
    assert snap["segments"]["C"]["abandon_rate"] == 0.5
    assert snap["segments"]["C"]["service_level"] == 0.0
    assert snap["queues"]["support"]["segments"]["A"]["answered"] == 1
    assert snap["queues"]["support"]["segments"]["C"]["abandoned"] == 1
    assert snap["queues"]["vip"]["segments"] == {"A": stats.figures("vip", "A")}
    assert snap["total"]["offered"] == 5
    json.dumps(snap)


# --- duplicates and events out of order ---------------------------------------------------------

def test_duplicates_count_once(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    call = answered_call("support", "u1", t, 5, 60)
    feed(stats, clock, call + call + [abandon("support", "u1", t + 5, hold=5)])
    clock.advance(60)
    support = stats.figures("support")
    assert (support["offered"], support["answered"], support["abandoned"], support["completed"]) == (1, 1, 0, 1)
    assert stats.counters["duplicates"] >= 4


def test_a_connect_or_complete_without_a_join_still_counts(stats: QueueStatistics, clock: Clock) -> None:
    t = clock.now
    feed(stats, clock, [connect("support", "u1", t, 12)])
    feed(stats, clock, [complete("support", "u2", t + 100, 7, 90)])  # its Connect was missed
    support = stats.figures("support")
    assert support["answered"] == 2 and support["completed"] == 1
    assert support["average_answer_wait"] == pytest.approx((12 + 7) / 2)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.sampled_from(["QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentConnect", "AgentComplete",
                     "VarSet", "Hangup", "QueueMemberStatus", "Newexten"]),
    st.dictionaries(st.sampled_from(["Queue", "Uniqueid", "Timestamp", "HoldTime", "TalkTime", "Position",
                                     "Variable", "Value", "Interface", "Wrapuptime", "ChanVariable"]),
                    st.one_of(st.text(max_size=6), st.sampled_from(["u1", "support", "QUEUESTATUS", "TIMEOUT"]),
                              st.integers(-10, 2_000_000_000).map(str), st.none(),
                              st.lists(st.text(max_size=8), max_size=2)), max_size=8)), max_size=25))
def test_random_events_never_raise(events: list[tuple[str, dict[str, Any]]]) -> None:
    stats = QueueStatistics(window=3600, clock=Clock())
    for name, fields in events:
        stats.apply(AmiEvent.of({"Event": name, **fields}))
    assert stats.counters["errors"] == 0
    json.dumps(stats.snapshot())


# --- after a restart --------------------------------------------------------------------------

def record(call_id: str, **columns: Any) -> CallRecord:
    columns.setdefault("uniqueid", f"uid-{call_id}")
    return CallRecord(call_id=call_id, **columns)


async def test_rebuild_from_call_records_gives_the_figures_back(migrated_db: Any) -> None:
    now = dt.datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    clock = Clock(now.timestamp())
    minutes = lambda n: now - dt.timedelta(minutes=n)  # noqa: E731
    async with migrated_db.session() as session:
        session.add_all([
            record("c1", queue="support", segment="A", number="+79161234567", started_at=minutes(30),
                   answered_at=minutes(29), ended_at=minutes(25), wait_seconds=15, talk_seconds=240),
            record("c2", queue="support", segment="B", started_at=minutes(20), answered_at=minutes(19),
                   ended_at=minutes(10), wait_seconds=45, talk_seconds=540),
            record("c3", queue="support", segment="A", number="+79161234568", started_at=minutes(15),
                   ended_at=minutes(14), wait_seconds=50),  # abandoned
            record("c4", queue="support", segment="A", started_at=minutes(12), self_served=True),
            record("c5", queue=None, segment="A", started_at=minutes(11)),  # hung up in the IVR
            record("c6", queue="vip", segment="A", started_at=minutes(5), answered_at=minutes(4),
                   wait_seconds=3),  # still talking
            record("c7", queue="support", segment="A", started_at=minutes(200), answered_at=minutes(199),
                   ended_at=minutes(190), wait_seconds=1, talk_seconds=500),  # out of the window
            record("c8", queue="vip", segment="A", started_at=minutes(9), answered_at=minutes(9), ended_at=minutes(6),
                   wait_seconds=8, talk_seconds=180, result="manager"),  # the personal manager took it, not vip
        ])
        await session.commit()

    stats = QueueStatistics(window=3600, clock=clock)
    stats.record_answered("support", at=clock.now, wait=1)  # replaced by the rebuild
    assert await stats.rebuild(migrated_db) == 4

    support = stats.figures("support")
    assert (support["offered"], support["answered"], support["abandoned"]) == (3, 2, 1)
    assert support["service_level"] == pytest.approx(1 / 3)
    assert support["average_talk"] == (240 + 540) / 2
    assert support["average_answer_wait"] == 30.0
    (lost,) = stats.abandoned_calls()
    assert lost["number"] == masked_number("+79161234568") and lost["wait"] == 50 and lost["call_id"] == "c3"
    assert lost["at"] == minutes(14).timestamp()
    assert stats.figures(None, "A")["offered"] == 3
    assert stats.figures("vip")["answered"] == 1 and stats.figures("vip")["completed"] == 0

    # the live events that follow neither repeat what the records said nor lose what they finish
    stats.apply(AmiEvent.of(connect("vip", "uid-c6", minutes(4).timestamp(), 3)))
    stats.apply(AmiEvent.of(complete("vip", "uid-c6", clock.now, 3, 240)))
    stats.apply(AmiEvent.of(connect("support", "uid-c2", minutes(19).timestamp(), 45)))
    vip = stats.figures("vip")
    assert vip["answered"] == 1 and vip["completed"] == 1 and vip["average_talk"] == 240
    assert stats.figures("support")["answered"] == 2

    # a narrower `since`
    # c2's end (answered before, finished after), c3, and c6 answered at -4 min
    assert await stats.rebuild(migrated_db, since=minutes(16)) == 3
    assert stats.figures("support")["answered"] == 0 and stats.figures("support")["completed"] == 1


# --- 10,000 calls -------------------------------------------------------------------------------

@dataclass
class SyntheticCall:
    queue: str
    uid: str
    call_id: str
    segment: str
    joined: float
    wait: int
    outcome: str  # answered / abandon / timeout / left
    talk: int

    @property
    def ended_wait(self) -> float:
        return self.joined + self.wait

    def counted_by(self, now: float, grace: float) -> bool:
        """Whether the statistics know the outcome at `now` (a bare Leave waits for the grace)."""
        delay = {"answered": 0.0001, "abandon": 0.0, "timeout": 0.001, "left": grace}[self.outcome]
        return self.ended_wait + delay <= now


def synthetic_calls(count: int, start: float, rng: random.Random) -> list[SyntheticCall]:
    calls = []
    for n in range(count):
        outcome = rng.choices(["answered", "abandon", "timeout", "left"], weights=[80, 12, 5, 3])[0]
        calls.append(SyntheticCall(
            queue=rng.choice(["support", "vip", "b2b"]), uid=f"17953{n:05d}.{n}", call_id=f"call-{n}",
            segment=rng.choice(["A", "B", "C", "D"]), joined=start + n * 1.08 + rng.random(),
            wait=rng.choice([0, 1, 3, 8, 15, 19, 20, 21, 30, 45, 90, 200]), outcome=outcome,
            talk=rng.randint(10, 900)))
    return calls


def events_of(call: SyntheticCall) -> list[tuple[float, int, dict[str, Any]]]:
    q, uid, t, kw = call.queue, call.uid, call.joined, {"call_id": call.call_id}
    end = call.ended_wait
    events = [join(q, uid, t, **kw), agent_event("AgentCalled", q, uid, "PJSIP/1", t + 0.01, **kw)]
    if call.outcome == "answered":
        interface = f"PJSIP/{int(call.uid.split('.')[1]) % 50}"
        events += [leave(q, uid, end, **kw),
                   agent_event("AgentConnect", q, uid, interface, end + 0.0001, HoldTime=call.wait, **kw),
                   agent_event("AgentComplete", q, uid, interface, end + call.talk, HoldTime=call.wait,
                               TalkTime=call.talk, **kw)]
    elif call.outcome == "abandon":
        events += [abandon(q, uid, end, hold=call.wait, **kw), leave(q, uid, end + 0.0001, **kw)]
    elif call.outcome == "timeout":
        events += [leave(q, uid, end, **kw), queue_status(uid, "TIMEOUT", end + 0.001)]
    else:
        events += [leave(q, uid, end, **kw), {"Event": "Hangup", "Timestamp": f"{end + 30:.6f}", "Uniqueid": uid}]
    return [(float(e["Timestamp"]), n, e) for n, e in enumerate(events)]


def expected_figures(calls: list[SyntheticCall], now: float, window: float, bucket: float,
                     queue: str | None, segment: str | None) -> dict[str, Any]:
    """The figures worked out the slow way, call by call."""
    first_bucket = math.floor(now / bucket) - math.ceil(window / bucket) + 1
    inside = lambda t: math.floor(t / bucket) >= first_bucket and t <= now  # noqa: E731
    mine = [c for c in calls if (queue is None or c.queue == queue) and (segment is None or c.segment == segment)]
    answered = [c for c in mine if c.outcome == "answered" and inside(c.ended_wait + 0.0001)]
    abandoned = [c for c in mine if c.outcome != "answered" and inside(c.ended_wait)]
    completed = [c for c in mine if c.outcome == "answered" and inside(c.ended_wait + c.talk)]
    offered = len(answered) + len(abandoned)
    short = sum(c.wait <= 20 for c in abandoned)
    base = offered - short
    return {
        "offered": offered, "answered": len(answered), "abandoned": len(abandoned),
        "timeouts": sum(c.outcome != "abandon" for c in abandoned),
        "service_level": sum(c.wait <= 20 for c in answered) / base if base else None,
        "abandon_rate": len(abandoned) / offered if offered else None,
        "average_wait": round(sum(c.wait for c in answered + abandoned) / offered, 3) if offered else None,
        "longest_wait": float(max(c.wait for c in answered + abandoned)) if offered else None,
        "completed": len(completed),
        "average_talk": round(sum(c.talk for c in completed) / len(completed), 3) if completed else None,
    }


def test_ten_thousand_calls_add_up_to_what_each_call_says() -> None:
    rng = random.Random(20261122)
    clock = Clock(at("2026-11-22T21:00:00"))
    calls = synthetic_calls(10_000, clock.now, rng)  # three hours, across midnight
    segment_of = {c.call_id: c.segment for c in calls}.get
    stats = QueueStatistics(window=3600, clock=clock, segment_of=segment_of, leave_grace=5)
    state = QueueState(clock=clock, segment_of=segment_of)
    stream = heapq.merge(*(events_of(c) for c in calls))
    checkpoints = [at("2026-11-22T22:30:00"), at("2026-11-23T00:00:30"), math.inf]
    checked = 0
    for when, _, event in stream:
        while when > checkpoints[0]:
            clock.now = checkpoints.pop(0)
            check(stats, calls, clock.now)
            checked += 1
        clock.now = when
        stats.apply(AmiEvent.of(event))
        state.apply(AmiEvent.of(event))
    clock.now += 3600  # everything finished: settle the last leaves, let the window hold the end
    check(stats, calls, clock.now)
    assert checked == 2
    assert stats.counters["bad"] == stats.counters["errors"] == 0
    assert state.counters["bad"] == state.counters["errors"] == 0
    assert all(q["callers_waiting"] == 0 for q in state.snapshot()["queues"].values())
    assert state.snapshot()["calls"] == []
    assert len(stats.snapshot()["abandoned_calls"]) <= 50


def check(stats: QueueStatistics, calls: list[SyntheticCall], now: float) -> None:
    done = [c for c in calls if c.counted_by(now, stats.leave_grace)]
    for queue in (None, "support", "vip"):
        for segment in (None, "A", "D"):
            got = stats.figures(queue, segment)
            want = expected_figures(done, now, stats.window, stats.bucket_seconds, queue, segment)
            assert {k: got[k] for k in want} == pytest.approx(want), (queue, segment)
