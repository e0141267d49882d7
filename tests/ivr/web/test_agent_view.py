"""What the wallboard's agent grid and the agent's own state are made of (`queues.state`): each agent
once across its queues, since when it is in its state, and the calls it answered in the statistics'
window, which add up to the answered figure."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from caller_id.models import Agent, CallRecord
from queues.events import AmiEvent
from queues.state import QueueState
from queues.stats import QueueStatistics

T0 = 1_760_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def member(queue: str, interface: str, at: float, **fields: str) -> dict[str, str]:
    return {"Event": "QueueMemberStatus", "Queue": queue, "Interface": interface, "MemberName": "Анна Смирнова",
            "Status": "1", "Paused": "0", "Membership": "static", "Timestamp": str(at), **fields}


def caller_event(name: str, queue: str, uid: str, at: float, **fields: str) -> dict[str, str]:
    return {"Event": name, "Queue": queue, "Uniqueid": uid, "CallerIDNum": "79161234567", "Timestamp": str(at),
            **fields}


def agent_event(name: str, queue: str, uid: str, interface: str, at: float, **fields: str) -> dict[str, str]:
    return caller_event(name, queue, uid, at, Interface=interface, MemberName="Анна Смирнова", **fields)


def feed(*states, events) -> None:
    for fields in events:
        event = AmiEvent.of(fields)
        for state in states:
            state.apply(event)


def test_an_agent_in_two_queues_is_one_agent_with_the_time_of_its_state() -> None:
    clock = Clock(T0 + 1000)
    state = QueueState(clock=clock)
    iface = "PJSIP/1001"
    feed(state, events=[member("support", iface, T0), member("vip", iface, T0), member("vip", "PJSIP/1002", T0)])
    agents = state.snapshot()["agents"]
    assert list(agents) == [iface, "PJSIP/1002"]  # by name, then interface; each once
    anna = agents[iface]
    assert anna["state"] == "available" and anna["since"] == T0 and anna["for"] == 1000
    assert [q["queue"] for q in anna["queues"]] == ["support", "vip"]

    feed(state, events=[caller_event("QueueCallerJoin", "support", "c1", T0 + 100),
                        agent_event("AgentCalled", "support", "c1", iface, T0 + 110)])
    assert state.agent(iface)["state"] == "ringing" and state.agent(iface)["since"] == T0 + 110
    feed(state, events=[caller_event("QueueCallerLeave", "support", "c1", T0 + 120),
                        agent_event("AgentConnect", "support", "c1", iface, T0 + 120, HoldTime="20"),
                        member("support", iface, T0 + 121, Status="2", InCall="1"),
                        member("vip", iface, T0 + 121, Status="2")])
    anna = state.agent(iface)
    assert anna["state"] == "in_call" and anna["since"] == T0 + 120  # in a call in support, busy in vip: one word
    assert [q["state"] for q in anna["queues"]] == ["in_call", "busy"]
    assert anna["calls"][0]["queue"] == "support" and anna["calls"][0]["number"] == "*******4567"

    feed(state, events=[agent_event("AgentComplete", "support", "c1", iface, T0 + 300, TalkTime="180"),
                        member("support", iface, T0 + 300, Status="1", InCall="0"),
                        member("vip", iface, T0 + 300, Status="1")])
    assert (state.agent(iface)["state"], state.agent(iface)["since"]) == ("available", T0 + 300)

    feed(state, events=[member("support", iface, T0 + 400, Paused="1", PausedReason="lunch")])
    anna = state.agent(iface)
    assert anna["state"] == "available" and not anna["paused"] and anna["paused_in"] == ["support"]
    feed(state, events=[member("vip", iface, T0 + 450, Paused="1", PausedReason="lunch")])
    anna = state.agent(iface)
    assert (anna["state"], anna["since"], anna["paused"], anna["paused_reason"]) == ("paused", T0 + 450, True, "lunch")
    assert anna["paused_since"] == T0 + 400
    feed(state, events=[member("support", iface, T0 + 500, Status="5"), member("vip", iface, T0 + 500, Status="5")])
    assert (state.agent(iface)["state"], state.agent(iface)["since"]) == ("unavailable", T0 + 500)
    feed(state, events=[{"Event": "QueueMemberRemoved", "Queue": q, "Interface": iface, "Timestamp": str(T0 + 600)}
                        for q in ("support", "vip")])
    assert state.agent(iface) is None and iface not in state.snapshot()["agents"]


def test_a_state_found_by_a_resync_counts_from_the_resync_and_keeps_its_time_while_it_holds() -> None:
    clock = Clock(T0)
    state = QueueState(clock=clock)
    state.begin_resync()
    feed(state, events=[{"Event": "QueueMember", "Queue": "support", "Location": "PJSIP/1001", "Name": "Анна",
                         "Status": "1", "Paused": "1", "PausedReason": "break", "LastPause": str(int(T0 - 90))},
                        {"Event": "QueueMember", "Queue": "support", "Location": "PJSIP/1002", "Name": "Борис",
                         "Status": "1"},
                        {"Event": "QueueStatusComplete"}])
    clock.now = T0 + 30
    agents = state.snapshot()["agents"]
    assert (agents["PJSIP/1001"]["state"], agents["PJSIP/1001"]["since"]) == ("paused", T0 - 90)  # LastPause
    assert (agents["PJSIP/1002"]["state"], agents["PJSIP/1002"]["since"]) == ("available", T0)
    state.begin_resync()  # the same answer again after a reconnection: nothing restarts
    feed(state, events=[{"Event": "QueueMember", "Queue": "support", "Location": "PJSIP/1002", "Name": "Борис",
                         "Status": "1"},
                        {"Event": "QueueStatusComplete"}])
    assert state.agent("PJSIP/1002")["since"] == T0


def test_the_agents_answered_calls_add_up_to_the_answered_figure_in_the_same_window() -> None:
    clock = Clock(T0)
    state, stats = QueueState(clock=clock), QueueStatistics(clock=clock)
    events = [member("support", "PJSIP/1001", T0 - 90_000), member("vip", "PJSIP/1001", T0 - 90_000),
              member("support", "PJSIP/1002", T0 - 90_000)]
    calls = [("old", "support", "PJSIP/1001", T0 - 86_500),  # before the window
             ("a", "support", "PJSIP/1001", T0 - 3600), ("b", "vip", "PJSIP/1001", T0 - 1800),
             ("c", "support", "PJSIP/1002", T0 - 600)]
    for uid, queue, iface, at in calls:
        events += [caller_event("QueueCallerJoin", queue, uid, at - 10), caller_event("QueueCallerLeave", queue, uid, at),
                   agent_event("AgentConnect", queue, uid, iface, at, HoldTime="10"),
                   agent_event("AgentComplete", queue, uid, iface, at + 60, TalkTime="60")]
    clock.now = T0 - 86_500
    feed(state, stats, events=events[:7])
    clock.now = T0
    feed(state, stats, events=events[7:])
    feed(state, stats, events=[agent_event("AgentConnect", "vip", "b", "PJSIP/1001", T0 - 1800)])  # a replay
    snapshot = state.snapshot()
    agents = snapshot["agents"]
    assert agents["PJSIP/1001"]["answered"] == 2 and agents["PJSIP/1002"]["answered"] == 1
    assert {q["queue"]: q["answered"] for q in agents["PJSIP/1001"]["queues"]} == {"support": 1, "vip": 1}
    figures = stats.snapshot()
    assert sum(a["answered"] for a in agents.values()) == figures["total"]["answered"] == 3
    assert snapshot["answered_window"]["start"] == figures["window_start"]
    clock.now = T0 + 86_400 - 1200  # "a" and "b" slid out, "c" not yet
    assert state.snapshot()["agents"]["PJSIP/1001"]["answered"] == 0
    assert state.snapshot()["agents"]["PJSIP/1002"]["answered"] == stats.snapshot()["total"]["answered"] == 1


async def test_after_a_restart_the_answered_calls_come_back_from_the_call_records(web_server) -> None:
    db = web_server.services.db
    now = dt.datetime.now(dt.timezone.utc)
    async with db.session() as session:
        anna = await session.scalar(select(Agent).where(Agent.interface == "PJSIP/1001"))
        session.add_all([
            CallRecord(call_id="r1", uniqueid="u1", agent_id=anna.id, queue="support", answered_at=now - dt.timedelta(hours=2)),
            CallRecord(call_id="r2", uniqueid="u2", agent_id=anna.id, queue="vip", answered_at=now - dt.timedelta(hours=1)),
            CallRecord(call_id="r3", uniqueid="u3", agent_id=anna.id, queue="support", answered_at=now - dt.timedelta(days=2)),
            CallRecord(call_id="r4", uniqueid="u4", agent_id=None, queue="support", answered_at=now),
            CallRecord(call_id="r5", uniqueid="u5", agent_id=anna.id, queue="support"),  # never answered
        ])
        await session.commit()
    state = QueueState()
    feed(state, events=[member("support", "PJSIP/1001", now.timestamp() - 10),
                        agent_event("AgentConnect", "support", "u1", "PJSIP/1001",
                                    now.timestamp() - 7200)])  # seen live too
    assert await state.rebuild_answered(db) == 1
    assert await state.rebuild_answered(db) == 0  # again: nothing counted twice
    assert state.agent("PJSIP/1001")["answered"] == 2
