"""Live queue state: the real Asterisk 23 queue traces, resync, and events that misbehave."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queues.events import MAX_CLOCK_SKEW, AmiEvent, BadEvent, Handlers
from queues.state import QueueState, masked_number
from tests.ivr import traces

TRACES = traces.TRACES

CALLER = "Local/200@from-test-queue-0000000b;2"
AGENT = "Local/100@agents"
NO_ANSWER = "Local/101@agents-noanswer"
SEGMENTS = {"call-0001": "A", "call-0002": "B", "call-0003": "C"}


# --- the traces -------------------------------------------------------------------

def parse_ami(raw: bytes) -> list[dict[str, Any]]:
    """The messages of an AMI byte stream: "Key: value" lines, a blank line between messages.

    A header that repeats (``ChanVariable``) becomes a list of its values; the
    ``ChanVariable`` family is always a list.  The banner line is skipped.
    """
    messages = []
    for block in raw.decode("utf-8").split("\r\n\r\n"):
        message: dict[str, Any] = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(": ")
            if not sep:
                if not line.endswith(":"):
                    continue  # the banner
                key, value = line[:-1], ""
            if key in message:
                if not isinstance(message[key], list):
                    message[key] = [message[key]]
                message[key].append(value)
            elif "ChanVariable" in key:
                message[key] = [value]
            else:
                message[key] = value
        if message:
            messages.append(message)
    return messages


def read_trace(name: str) -> list[dict[str, Any]]:
    """The events (not the responses) of ``<name>.ami.raw``."""
    path = traces.trace_dir() / f"{name}.ami.raw"
    return [m for m in parse_ami(path.read_bytes()) if "Event" in m]


class Clock:
    """A clock the test moves; replaying a trace sets it to each event's Timestamp."""

    def __init__(self, now: float = 1_795_333_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Replay:
    """Feeds a trace's events to consumers, stopping where the test wants to look."""

    def __init__(self, events: list[dict[str, Any]], clock: Clock, *consumers: Any):
        self.events = events
        self.clock = clock
        self.consumers = consumers
        self.index = 0

    def until(self, name: str, nth: int = 1, **fields: str) -> dict[str, Any]:
        """Apply events up to and including the `nth` one named `name` with these header values."""
        seen = 0
        while self.index < len(self.events):
            event = self.play_one()
            if event["Event"] == name and all(event.get(k) == v for k, v in fields.items()):
                seen += 1
                if seen == nth:
                    return event
        raise AssertionError(f"no {name} {fields} in the rest of the trace")

    def rest(self) -> None:
        while self.index < len(self.events):
            self.play_one()

    def play_one(self) -> dict[str, Any]:
        event = self.events[self.index]
        self.index += 1
        if "Timestamp" in event:
            self.clock.now = float(event["Timestamp"])
        for consumer in self.consumers:
            consumer.apply(AmiEvent.of(event))
        return event


def member(snapshot: Mapping[str, Any], queue: str, interface: str) -> dict[str, Any] | None:
    for found in snapshot["queues"][queue]["members"]:
        if found["interface"] == interface:
            return found
    return None


def waiting(state: QueueState, queue: str) -> int:
    snapshot = state.queue_snapshot(queue)
    return 0 if snapshot is None else snapshot["callers_waiting"]


def assert_clean(state: QueueState) -> None:
    assert state.counters["bad"] == 0
    assert state.counters["errors"] == 0
    json.dumps(state.snapshot())


# --- synthetic events, shaped like the traces ---------------------------------------

def caller_event(name: str, queue: str, uid: str, at: float | None, *, call_id: str | None = None,
                 number: str = "79161234567", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "Event": name, "Privilege": "agent,all", "Channel": f"PJSIP/trunk-{uid}",
        "CallerIDNum": number, "CallerIDName": "Caller", "Uniqueid": uid, "Linkedid": f"L{uid}",
        "ChanVariable": [f"IVR_CALL_ID={call_id or ''}", "IVR_CUSTOMER_ID="], "Queue": queue,
    }
    if at is not None:
        event["Timestamp"] = f"{at:.6f}"
    event.update({k: str(v) for k, v in extra.items()})
    return event


def join(queue: str, uid: str, at: float | None, position: int = 1, **kw: Any) -> dict[str, Any]:
    return caller_event("QueueCallerJoin", queue, uid, at, Position=position, Count=position, **kw)


def leave(queue: str, uid: str, at: float | None, position: int = 1, **kw: Any) -> dict[str, Any]:
    return caller_event("QueueCallerLeave", queue, uid, at, Position=position, Count=0, **kw)


def abandon(queue: str, uid: str, at: float, hold: int, position: int = 1, **kw: Any) -> dict[str, Any]:
    return caller_event("QueueCallerAbandon", queue, uid, at, Position=position, OriginalPosition=position,
                        HoldTime=hold, **kw)


def agent_event(name: str, queue: str, uid: str, interface: str, at: float, **extra: Any) -> dict[str, Any]:
    return caller_event(name, queue, uid, at, Interface=interface, MemberName=f"Agent {interface}",
                        DestChannel=f"{interface}-0001;1", DestUniqueid=f"D{uid}", **extra)


def member_event(name: str, queue: str, interface: str, at: float | None, *, status: int = 1, paused: int = 0,
                 reason: str = "", penalty: int = 0, in_call: int = 0, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "Event": name, "Queue": queue, "MemberName": f"Agent {interface}", "Interface": interface,
        "StateInterface": interface, "Membership": "dynamic", "Penalty": str(penalty), "CallsTaken": "0",
        "LastCall": "0", "LastPause": "0", "LoginTime": "1795333000", "InCall": str(in_call),
        "Status": str(status), "Paused": str(paused), "PausedReason": reason, "Ringinuse": "1",
        "Wrapuptime": "0",
    }
    if at is not None:
        event["Timestamp"] = f"{at:.6f}"
    event.update({k: str(v) for k, v in extra.items()})
    return event


def status_member(queue: str, interface: str, *, status: int = 1, in_call: int = 0, paused: int = 0,
                  reason: str = "", last_pause: int = 0) -> dict[str, Any]:
    """A QueueMember answer to QueueStatus (``Name``/``Location``, no Timestamp)."""
    return {
        "Event": "QueueMember", "Queue": queue, "Name": f"Agent {interface}", "Location": interface,
        "StateInterface": interface, "Membership": "static", "Penalty": "0", "CallsTaken": "0",
        "LastCall": "0", "LastPause": str(last_pause), "LoginTime": "1795333000", "InCall": str(in_call),
        "Status": str(status), "Paused": str(paused), "PausedReason": reason, "Wrapuptime": "0",
        "ActionID": "qs-1",
    }


def status_entry(queue: str, uid: str, position: int, wait: int) -> dict[str, Any]:
    return {
        "Event": "QueueEntry", "Queue": queue, "Position": str(position), "Channel": f"PJSIP/trunk-{uid}",
        "Uniqueid": uid, "CallerIDNum": "79161234567", "CallerIDName": "Caller",
        "ConnectedLineNum": "unknown", "ConnectedLineName": "unknown", "Wait": str(wait), "Priority": "0",
        "ActionID": "qs-1",
    }


def params(queue: str) -> dict[str, Any]:
    return {"Event": "QueueParams", "Queue": queue, "Max": "0", "Strategy": "ringall", "Calls": "0",
            "Holdtime": "0", "TalkTime": "0", "Completed": "0", "Abandoned": "0", "ServiceLevel": "20",
            "ServicelevelPerf": "0.0", "ServicelevelPerf2": "0.0", "Weight": "0", "ActionID": "qs-1"}


COMPLETE = {"Event": "QueueStatusComplete", "ActionID": "qs-1", "EventList": "Complete", "ListItems": "0"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> QueueState:
    return QueueState(clock=clock, segment_of=SEGMENTS.get)


# --- reading events ---------------------------------------------------------------

def test_channel_variables_are_read_from_a_list_a_dict_or_one_string() -> None:
    def variables(**event: Any) -> dict[str, str]:
        return dict(AmiEvent.of(event).variables)

    assert variables(ChanVariable=["IVR_CALL_ID=call-1", "IVR_CUSTOMER_ID="]) == {"IVR_CALL_ID": "call-1"}
    assert variables(ChanVariable={"IVR_CALL_ID": "call-2", "X": ""}) == {"IVR_CALL_ID": "call-2"}
    assert variables(ChanVariable="IVR_CALL_ID=call-3") == {"IVR_CALL_ID": "call-3"}
    assert AmiEvent.of({"ChanVariable(Local/1@x;1)": ["IVR_CALL_ID=call-4"]}).variables == {"IVR_CALL_ID": "call-4"}
    # the member's leg is not the caller's
    leg = AmiEvent.of({"DestChanVariable": ["IVR_CALL_ID=other"]})
    assert leg.variables == {} and leg.dest_variables == {"IVR_CALL_ID": "other"}


def test_an_event_is_read_from_its_header_lines_as_from_a_mapping() -> None:
    lines = [("Event", "AgentCalled"), ("ChanVariable", "IVR_CALL_ID=call-1"), ("ChanVariable", "IVR_CUSTOMER_ID=5"),
             ("DestChanVariable", "X=1"), ("Queue", " support "), ("queue", "other")]
    event = AmiEvent.from_headers(lines)
    assert event.name == "AgentCalled" and event.header("Queue") == "support"  # the first value, stripped
    assert event.variables == {"IVR_CALL_ID": "call-1", "IVR_CUSTOMER_ID": "5"} and event.dest_variables == {"X": "1"}
    assert event == AmiEvent.of({"Event": "AgentCalled", "ChanVariable": ["IVR_CALL_ID=call-1", "IVR_CUSTOMER_ID=5"],
                                 "DestChanVariable": "X=1", "Queue": ["support", "other"]})


def test_headers_are_found_whatever_their_case() -> None:
    assert AmiEvent.of({"uniqueid": " 17.2 "}).header("Uniqueid") == "17.2"
    assert AmiEvent.of({"Uniqueid": ["17.3", "17.4"]}).header("UNIQUEID") == "17.3"
    assert AmiEvent.of({"Uniqueid": b"17.5", "Position": 3}).header("Uniqueid") == "17.5"
    assert AmiEvent.of({}).header("Uniqueid") is None and AmiEvent.of({}).name == ""


def test_ids_longer_than_their_columns_read_as_missing(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="queues.events"):
        event = AmiEvent.of({"Event": "QueueCallerJoin", "Uniqueid": "u" * 65, "Queue": "support",
                             "ChanVariable": {"IVR_CALL_ID": "c" * 65, "IVR_CUSTOMER_ID": "7"}})
    assert event.header("Uniqueid") is None and event.header("Queue") == "support"
    assert event.variables == {"IVR_CUSTOMER_ID": "7"}
    assert "Uniqueid of 65 characters" in caplog.text and "IVR_CALL_ID of 65 characters" in caplog.text


def test_numbers_times_and_flags_are_bounded() -> None:
    event = AmiEvent.of({"Event": "AgentComplete", "HoldTime": "7", "TalkTime": "1e400", "Position": "-1",
                         "Paused": "Yes", "InCall": "", "Timestamp": "4102444800"})
    assert event.integer("HoldTime", low=0) == 7 and event.number("TalkTime") is None
    assert event.integer("Position", 0, low=0) == 0  # out of range: the default
    assert event.flag("Paused") is True and event.flag("InCall") is None and event.flag("Ringinuse") is None
    assert event.timestamp(1000.0) == 1000.0 + MAX_CLOCK_SKEW  # never from the future
    assert event.at(lambda: 2000.0) == 2000.0 + MAX_CLOCK_SKEW
    assert AmiEvent.of({"Timestamp": "0"}).at(lambda: 5.0) == 5.0
    with pytest.raises(BadEvent):
        event.required("Queue")


def test_a_handler_table_refuses_an_event_handled_twice() -> None:
    table = Handlers()

    @table("QueueCallerJoin", "QueueCallerLeave")
    def first(event: AmiEvent) -> None:
        pass

    assert table.events == {"QueueCallerJoin", "QueueCallerLeave"} and table["QueueCallerLeave"] is first
    with pytest.raises(ValueError, match="QueueCallerJoin"):
        table("QueueCallerJoin")(lambda event: None)


def test_the_trace_parser_reads_repeated_channel_variables() -> None:
    join_event = next(e for e in read_trace("ami-queue-answered") if e["Event"] == "QueueCallerJoin")
    assert join_event["ChanVariable"] == ["IVR_CALL_ID=call-0001", "IVR_CUSTOMER_ID=cust-12345"]
    assert join_event["Queue"] == "support" and join_event["Position"] == "1"


# --- the real traces ----------------------------------------------------------------

def test_answered_trace_shows_the_caller_waiting_then_talking_to_the_agent(state: QueueState, clock: Clock) -> None:
    replay = Replay(read_trace("ami-queue-answered"), clock, state)

    joined = replay.until("QueueCallerJoin")
    clock.advance(3.0)
    support = state.queue_snapshot("support")
    assert support is not None
    assert support["callers_waiting"] == 1
    (caller,) = support["callers"]
    assert caller["position"] == 1
    assert caller["call_id"] == "call-0001"
    assert caller["segment"] == "A"
    assert caller["uniqueid"] == "1795333729.23" and caller["linkedid"] == "1795333729.22"
    assert caller["since"] == float(joined["Timestamp"])
    assert caller["number"] == masked_number("79161234567")  # masked on the wallboard
    assert support["longest_wait"] == pytest.approx(3.0)

    replay.until("AgentCalled")
    snap = state.snapshot()
    ringing = member(snap, "support", AGENT)
    assert ringing is not None and ringing["state"] == "ringing"
    assert ringing["ringing_for"] == ["1795333729.23"]
    assert state.ringing_agents("call-0001") == [{"queue": "support", "interface": AGENT, "name": AGENT}]

    replay.until("QueueCallerLeave")
    assert state.queue_snapshot("support")["callers_waiting"] == 0

    connect = replay.until("AgentConnect")
    talking = state.agent_for_call("call-0001")
    assert talking is not None
    assert talking["interface"] == AGENT
    assert talking["queue"] == "support"
    assert talking["uniqueid"] == "1795333729.23"
    assert talking["member_channel"] == "Local/100@agents-0000000c;1"
    assert talking["segment"] == "A"
    assert talking["hold_time"] == 0
    assert talking["since"] == float(connect["Timestamp"])
    assert state.agent_for_call(linkedid="1795333729.22")["interface"] == AGENT
    assert state.agent_for_call(uniqueid="1795333729.23")["interface"] == AGENT
    assert [c["call_id"] for c in state.calls_of_agent(AGENT)] == ["call-0001"]

    replay.until("QueueMemberStatus", Queue="b2b")
    snap = state.snapshot()
    assert member(snap, "support", AGENT)["state"] == "in_call"
    assert snap["queues"]["support"]["agents"]["in_call"] == 1
    # the same device is in use in the other queues: busy there, not in a call of theirs
    assert member(snap, "vip", AGENT)["state"] == "busy"
    assert snap["queues"]["vip"]["agents"]["available"] == 0

    replay.until("AgentComplete")
    assert state.agent_for_call("call-0001") is None
    replay.rest()
    snap = state.snapshot()
    assert snap["calls"] == []
    for queue in ("support", "vip", "b2b"):
        agent = member(snap, queue, AGENT)
        assert agent["state"] == "available" and agent["status"] == 1
    assert member(snap, "support", AGENT)["calls_taken"] == 1
    assert_clean(state)


def test_abandoned_trace_shows_the_pause_reason_and_the_caller_leaving(state: QueueState, clock: Clock) -> None:
    replay = Replay(read_trace("ami-queue-abandoned"), clock, state)

    pause = replay.until("QueueMemberPause")
    paused = member(state.snapshot(), "b2b", AGENT)
    assert paused["state"] == "paused"
    assert paused["paused"] is True and paused["paused_reason"] == "break"
    assert paused["paused_since"] == float(pause["Timestamp"])
    assert state.queue_snapshot("b2b")["agents"]["paused"] == 1
    assert state.queue_snapshot("b2b")["agents"]["available"] == 0

    replay.until("QueueCallerJoin")
    clock.advance(2.0)
    b2b = state.queue_snapshot("b2b")
    assert [c["call_id"] for c in b2b["callers"]] == ["call-0002"]
    assert b2b["callers"][0]["segment"] == "B"
    assert b2b["longest_wait"] == pytest.approx(2.0)
    assert member(state.snapshot(), "b2b", AGENT)["paused_for"] == pytest.approx(
        clock.now - float(pause["Timestamp"]))

    replay.until("QueueCallerAbandon")
    assert state.queue_snapshot("b2b")["callers_waiting"] == 0
    replay.until("QueueCallerLeave")  # follows the abandon: not a duplicate, not an error
    assert state.counters["duplicates"] == 0

    replay.rest()
    unpaused = member(state.snapshot(), "b2b", AGENT)
    assert unpaused["state"] == "available"
    assert unpaused["paused_reason"] is None and unpaused["paused_since"] is None
    assert_clean(state)


def test_ring_no_answer_moves_on_to_the_next_member(state: QueueState, clock: Clock) -> None:
    replay = Replay(read_trace("ami-queue-ringnoanswer"), clock, state)
    uid = "1795333750.29"

    replay.until("AgentCalled")
    snap = state.snapshot()
    assert member(snap, "ringtest", NO_ANSWER)["state"] == "ringing"
    assert member(snap, "ringtest", NO_ANSWER)["name"] == "Agent NoAnswer"
    assert snap["queues"]["ringtest"]["agents"]["ringing"] == 1

    replay.until("AgentRingNoAnswer")
    missed = member(state.snapshot(), "ringtest", NO_ANSWER)
    assert missed["state"] != "ringing" and missed["ringing_for"] == []
    assert missed["ring_no_answer"] == 1
    assert missed["last_ring_no_answer"]["ring_time"] == 4.0  # RingTime is in ms
    assert missed["last_ring_no_answer"]["uniqueid"] == uid
    assert state.queue_snapshot("ringtest")["callers_waiting"] == 1  # still waiting

    replay.until("AgentCalled", nth=1, Interface=AGENT)
    snap = state.snapshot()
    assert member(snap, "ringtest", AGENT)["state"] == "ringing"
    assert member(snap, "ringtest", NO_ANSWER)["state"] == "available"
    assert state.ringing_agents(uniqueid=uid) == [{"queue": "ringtest", "interface": AGENT, "name": "Agent Answer"}]

    replay.until("AgentConnect")
    talking = state.agent_for_call("call-0003")
    assert talking["interface"] == AGENT and talking["member_name"] == "Agent Answer"
    assert talking["hold_time"] == 5
    assert state.queue_snapshot("ringtest")["callers_waiting"] == 0
    assert member(state.snapshot(), "ringtest", AGENT)["state"] == "in_call"

    replay.rest()
    assert state.snapshot()["calls"] == []
    assert member(state.snapshot(), "ringtest", AGENT)["calls_taken"] == 1
    assert_clean(state)


def test_member_management_trace_adds_pauses_penalises_and_removes(state: QueueState, clock: Clock) -> None:
    replay = Replay(read_trace("ami-member-management"), clock, state)
    smith = "Local/300@agents"

    added = replay.until("QueueMemberAdded")
    agent = member(state.snapshot(), "support", smith)
    assert agent["name"] == "Agent Smith" and agent["membership"] == "dynamic"
    assert agent["penalty"] == 1 and agent["state"] == "available"
    assert agent["login_time"] == 1795333762

    pause = replay.until("QueueMemberPause")
    agent = member(state.snapshot(), "support", smith)
    assert agent["state"] == "paused" and agent["paused_reason"] == "lunch break"
    assert agent["paused_since"] == float(pause["Timestamp"])
    assert float(pause["Timestamp"]) > float(added["Timestamp"])

    replay.until("QueueMemberPause")
    assert member(state.snapshot(), "support", smith)["state"] == "available"

    replay.until("QueueMemberPenalty")
    assert member(state.snapshot(), "support", smith)["penalty"] == 3

    # a QueueStatus filtered by queue and member, outside a resync: updates, removes nothing
    replay.until("QueueStatusComplete")
    assert member(state.snapshot(), "support", smith)["penalty"] == 3
    assert state.queue_snapshot("support")["params"]["strategy"] == "ringall"
    assert state.queue_snapshot("support")["params"]["completed"] == 1

    replay.until("QueueMemberRemoved")
    assert member(state.snapshot(), "support", smith) is None
    replay.rest()
    assert_clean(state)


def test_resync_from_the_queue_status_answer_matches_asterisks_own_summary(state: QueueState, clock: Clock) -> None:
    events = read_trace("ami-login-and-status")
    state.begin_resync()
    Replay(events, clock, state).until("QueueStatusComplete")
    assert not state.resyncing
    summaries = {e["Queue"]: e for e in events if e["Event"] == "QueueSummary"}
    assert set(state.queue_names()) == set(summaries) == {"ringtest", "support", "vip", "b2b"}
    for name, summary in summaries.items():
        queue = state.queue_snapshot(name)
        assert queue["agents"]["logged_in"] == int(summary["LoggedIn"])
        assert queue["agents"]["available"] == int(summary["Available"])
        assert queue["callers_waiting"] == int(summary["Callers"])
    assert [m["name"] for m in state.queue_snapshot("ringtest")["members"]] == ["Agent Answer", "Agent NoAnswer"]
    assert state.counters["resyncs"] == 1
    assert_clean(state)


# --- resync ------------------------------------------------------------------------

def test_resync_replaces_stale_callers_members_and_calls(state: QueueState, clock: Clock) -> None:
    t = clock.now
    for event in [
        member_event("QueueMemberAdded", "support", "PJSIP/1", t),
        member_event("QueueMemberAdded", "support", "PJSIP/2", t),
        member_event("QueueMemberAdded", "support", "PJSIP/3", t),
        join("support", "u1", t + 1, 1, call_id="call-0001"),
        join("support", "u2", t + 2, 2, call_id="call-0002"),
        join("sales", "u9", t + 2, 1),
        agent_event("AgentConnect", "support", "u3", "PJSIP/2", t + 3, HoldTime=1, RingTime=0),
        agent_event("AgentConnect", "support", "u4", "PJSIP/3", t + 3, HoldTime=1, RingTime=0),
    ]:
        state.apply(AmiEvent.of(event))
    clock.now = t + 10
    assert {c["uniqueid"] for c in state.snapshot()["calls"]} == {"u3", "u4"}

    state.begin_resync()
    for event in [params("support"),
                  status_member("support", "PJSIP/1"),
                  status_member("support", "PJSIP/2", status=2, in_call=1),
                  status_member("support", "PJSIP/3"),  # says it is no longer in a call
                  status_entry("support", "u2", 1, wait=8)]:
        state.apply(AmiEvent.of(event))
    # while the answer is on its way, the old state is still what the wallboard sees
    assert state.resyncing
    assert state.queue_snapshot("support")["callers_waiting"] == 2
    state.apply(AmiEvent.of(COMPLETE))
    assert not state.resyncing

    support = state.queue_snapshot("support")
    assert [c["uniqueid"] for c in support["callers"]] == ["u2"]  # u1 left unseen
    caller = support["callers"][0]
    assert caller["position"] == 1
    assert caller["call_id"] == "call-0002"  # carried over: QueueEntry has no channel variables
    assert caller["segment"] == "B"
    assert caller["since"] == t + 2  # the exact join time, not now - Wait
    assert state.queue_names() == ["support"]  # sales is not in the answer
    assert {m["interface"] for m in support["members"]} == {"PJSIP/1", "PJSIP/2", "PJSIP/3"}
    assert [c["uniqueid"] for c in state.snapshot()["calls"]] == ["u3"]  # still InCall
    assert state.agent_for_call(uniqueid="u4") is None
    assert_clean(state)


def test_resync_learns_callers_it_never_saw_join(state: QueueState, clock: Clock) -> None:
    state.begin_resync()
    state.apply(AmiEvent.of(params("vip")))
    state.apply(AmiEvent.of(status_entry("vip", "u7", 1, wait=42)))
    state.end_resync()
    (caller,) = state.queue_snapshot("vip")["callers"]
    assert caller["since"] == clock.now - 42 and caller["wait"] == 42
    assert caller["number"] == masked_number("79161234567")


def test_live_events_during_a_resync_are_kept(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(join("support", "u1", t, 1)))
    state.begin_resync()
    state.apply(AmiEvent.of(params("support")))
    state.apply(AmiEvent.of(join("support", "u2", t + 1, 2, call_id="call-0002")))  # between answer items
    state.apply(AmiEvent.of(leave("support", "u1", t + 2)))                    # left before its entry arrived
    state.apply(AmiEvent.of(status_entry("support", "u1", 1, wait=3)))
    state.apply(AmiEvent.of(COMPLETE))
    assert [c["uniqueid"] for c in state.queue_snapshot("support")["callers"]] == ["u2"]


def test_a_resync_of_one_queue_keeps_the_others(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(join("support", "u1", t, 1)))
    state.apply(AmiEvent.of(join("vip", "u2", t, 1)))
    state.begin_resync("vip")
    state.apply(AmiEvent.of(params("vip")))
    state.end_resync()
    assert state.queue_snapshot("support")["callers_waiting"] == 1
    assert state.queue_snapshot("vip")["callers_waiting"] == 0


def test_a_resync_takes_only_the_answer_to_its_own_action(state: QueueState, clock: Clock) -> None:
    state.apply(AmiEvent.of(join("support", "u1", clock.now, 1)))
    state.begin_resync(action_id="qs-9")
    state.apply(AmiEvent.of({**status_member("support", "PJSIP/5"), "ActionID": "other"}))  # someone else's QueueStatus
    state.apply(AmiEvent.of({**COMPLETE, "ActionID": "other"}))
    assert state.resyncing
    assert member(state.snapshot(), "support", "PJSIP/5") is not None  # it updated the live state
    state.apply(AmiEvent.of({**params("support"), "ActionID": "qs-9"}))
    state.apply(AmiEvent.of({**status_member("support", "PJSIP/6"), "ActionID": "qs-9"}))
    state.apply(AmiEvent.of({**COMPLETE, "ActionID": "qs-9"}))
    assert not state.resyncing
    assert [m["interface"] for m in state.queue_snapshot("support")["members"]] == ["PJSIP/6"]
    assert waiting(state, "support") == 0


def test_an_aborted_resync_changes_nothing(state: QueueState, clock: Clock) -> None:
    state.apply(AmiEvent.of(join("support", "u1", clock.now, 1)))
    state.begin_resync()
    state.apply(AmiEvent.of(params("vip")))
    state.abort_resync()
    state.end_resync()  # nothing to end
    assert state.queue_names() == ["support"]


def test_a_resynced_member_keeps_its_pause_time_and_learns_it_from_last_pause(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(member_event("QueueMemberPause", "support", "PJSIP/1", t, paused=1, reason="lunch")))
    state.begin_resync()
    state.apply(AmiEvent.of(status_member("support", "PJSIP/1", paused=1, reason="lunch", last_pause=int(t) - 5)))
    state.apply(AmiEvent.of(status_member("support", "PJSIP/2", paused=1, reason="meeting", last_pause=int(t) - 60)))
    state.end_resync()
    snap = state.snapshot()
    assert member(snap, "support", "PJSIP/1")["paused_since"] == t
    assert member(snap, "support", "PJSIP/2")["paused_since"] == int(t) - 60
    assert member(snap, "support", "PJSIP/2")["paused_reason"] == "meeting"


# --- positions -----------------------------------------------------------------------

def test_positions_follow_joins_with_priority_and_leaves(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(join("support", "a", t, 1)))
    state.apply(AmiEvent.of(join("support", "b", t + 1, 2)))
    state.apply(AmiEvent.of(join("support", "c", t + 2, 3)))
    state.apply(AmiEvent.of(join("support", "vip", t + 3, 1)))  # a higher priority goes to the front
    order = lambda: [(c["position"], c["uniqueid"]) for c in state.queue_snapshot("support")["callers"]]  # noqa: E731
    assert order() == [(1, "vip"), (2, "a"), (3, "b"), (4, "c")]
    state.apply(AmiEvent.of(leave("support", "a", t + 4, 2)))
    assert order() == [(1, "vip"), (2, "b"), (3, "c")]
    clock.now = t + 10
    assert state.queue_snapshot("support")["longest_wait"] == 9.0  # b, since "a" left


# --- events out of order, duplicated, or broken -------------------------------------------

def test_duplicates_are_counted_not_repeated(state: QueueState, clock: Clock) -> None:
    t = clock.now
    for _ in range(2):
        state.apply(AmiEvent.of(join("support", "u1", t, 1, call_id="call-0001")))
        state.apply(AmiEvent.of(agent_event("AgentCalled", "support", "u1", "PJSIP/1", t + 1)))
    assert state.queue_snapshot("support")["callers_waiting"] == 1
    for _ in range(2):
        state.apply(AmiEvent.of(leave("support", "u1", t + 2)))
        state.apply(AmiEvent.of(agent_event("AgentConnect", "support", "u1", "PJSIP/1", t + 2, HoldTime=2, RingTime=1)))
    assert len(state.snapshot()["calls"]) == 1
    for _ in range(2):
        state.apply(AmiEvent.of(agent_event("AgentComplete", "support", "u1", "PJSIP/1", t + 9, HoldTime=2,
                                            TalkTime=7, Reason="caller")))
    assert state.snapshot()["calls"] == []
    assert state.counters["duplicates"] == 5  # join, ring, leave, connect, complete
    assert_clean(state)


def test_a_late_join_does_not_bring_back_a_caller_who_left(state: QueueState, clock: Clock) -> None:
    t = clock.now - 60  # all received by now
    state.apply(AmiEvent.of(leave("support", "u1", t + 5)))
    state.apply(AmiEvent.of(join("support", "u1", t, 1)))  # older than the leave: arrived late
    assert waiting(state, "support") == 0
    state.apply(AmiEvent.of(join("support", "u1", t + 30, 1)))  # the same channel queuing again, later
    assert waiting(state, "support") == 1
    assert state.counters["stale"] == 1


def test_a_late_connect_after_complete_does_not_leave_a_call_behind(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(agent_event("AgentComplete", "support", "u1", "PJSIP/1", t + 60, TalkTime=50, HoldTime=3)))
    state.apply(AmiEvent.of(agent_event("AgentConnect", "support", "u1", "PJSIP/1", t + 10, HoldTime=3)))
    state.apply(AmiEvent.of(join("support", "u1", t, 1)))
    assert state.snapshot()["calls"] == []
    assert waiting(state, "support") == 0
    # a Join older than the connection it led to is stale too
    state.apply(AmiEvent.of(agent_event("AgentConnect", "support", "u2", "PJSIP/1", t + 10, HoldTime=3)))
    state.apply(AmiEvent.of(join("support", "u2", t, 1)))
    assert waiting(state, "support") == 0


def test_an_older_member_status_does_not_overwrite_a_newer_one(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(member_event("QueueMemberStatus", "support", "PJSIP/1", t + 2, status=1)))
    state.apply(AmiEvent.of(member_event("QueueMemberStatus", "support", "PJSIP/1", t + 1, status=5)))
    assert member(state.snapshot(), "support", "PJSIP/1")["state"] == "available"
    assert state.counters["stale"] == 1


def test_a_removed_member_is_not_revived_by_a_late_event(state: QueueState, clock: Clock) -> None:
    t = clock.now - 60  # all received by now
    state.apply(AmiEvent.of(member_event("QueueMemberAdded", "support", "PJSIP/1", t)))
    state.apply(AmiEvent.of(member_event("QueueMemberRemoved", "support", "PJSIP/1", t + 5)))
    state.apply(AmiEvent.of(member_event("QueueMemberPause", "support", "PJSIP/1", t + 3, paused=1)))
    state.apply(AmiEvent.of(agent_event("AgentCalled", "support", "u1", "PJSIP/1", t + 4)))
    assert member(state.snapshot(), "support", "PJSIP/1") is None
    state.apply(AmiEvent.of(member_event("QueueMemberAdded", "support", "PJSIP/1", t + 9)))  # added back, later
    assert member(state.snapshot(), "support", "PJSIP/1") is not None


def test_events_for_unknown_queues_and_members_create_them(state: QueueState, clock: Clock) -> None:
    state.apply(AmiEvent.of(agent_event("AgentConnect", "overflow", "u1", "PJSIP/9", clock.now, HoldTime=12)))
    snap = state.snapshot()
    assert member(snap, "overflow", "PJSIP/9")["state"] == "in_call"
    assert state.agent_for_call(uniqueid="u1")["queue"] == "overflow"


def test_a_hangup_forgets_a_caller_and_a_call_whose_end_was_lost(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(join("support", "u1", t, 1)))
    state.apply(AmiEvent.of(agent_event("AgentConnect", "support", "u2", "PJSIP/1", t, HoldTime=1)))
    state.apply(AmiEvent.of({"Event": "Hangup", "Timestamp": f"{t + 9}", "Uniqueid": "u1", "Cause": "16"}))
    # the member's leg:
    state.apply(AmiEvent.of({"Event": "Hangup", "Timestamp": f"{t + 9}", "Uniqueid": "Du2", "Cause": "16"}))
    assert state.queue_snapshot("support")["callers_waiting"] == 0
    assert state.snapshot()["calls"] == []


def test_an_agent_dump_stops_the_ringing_and_the_call(state: QueueState, clock: Clock) -> None:
    t = clock.now
    state.apply(AmiEvent.of(join("support", "u1", t, 1)))
    state.apply(AmiEvent.of(agent_event("AgentCalled", "support", "u1", "PJSIP/1", t + 1)))
    state.apply(AmiEvent.of(agent_event("AgentDump", "support", "u1", "PJSIP/1", t + 2)))
    assert member(state.snapshot(), "support", "PJSIP/1")["state"] == "available"
    state.apply(AmiEvent.of(agent_event("AgentConnect", "support", "u1", "PJSIP/2", t + 3, HoldTime=3)))
    state.apply(AmiEvent.of(agent_event("AgentDump", "support", "u1", "PJSIP/2", t + 4)))
    assert state.snapshot()["calls"] == []


def test_without_timestamps_the_clock_dates_events(clock: Clock) -> None:
    state = QueueState(clock=clock)
    state.apply(AmiEvent.of(join("support", "u1", None, 1)))
    clock.advance(7)
    assert state.queue_snapshot("support")["callers"][0]["wait"] == 7


def test_a_failing_segment_lookup_leaves_the_segment_unknown(clock: Clock) -> None:
    def broken(call_id: str) -> str:
        raise RuntimeError("cache down")

    state = QueueState(clock=clock, segment_of=broken)
    state.apply(AmiEvent.of(join("support", "u1", clock.now, 1, call_id="call-9")))
    assert state.queue_snapshot("support")["callers"][0]["segment"] is None
    assert_clean(state)


def test_a_segment_channel_variable_wins(clock: Clock) -> None:
    state = QueueState(clock=clock, segment_of=lambda call_id: "C")
    event = join("support", "u1", clock.now, 1)
    event["ChanVariable"] = {"IVR_CALL_ID": "call-1", "IVR_SEGMENT": "A"}
    state.apply(AmiEvent.of(event))
    assert state.queue_snapshot("support")["callers"][0]["segment"] == "A"


@pytest.mark.parametrize("event", [
    None,
    "Event: QueueCallerJoin",
    {"Event": "QueueCallerJoin"},
    {"Event": "QueueCallerJoin", "Queue": "support"},
    {"Event": "AgentConnect", "Queue": "support", "Uniqueid": "u1"},
    {"Event": "QueueMemberStatus", "Queue": "support"},
    {"Event": "QueueCallerJoin", "Queue": "support", "Uniqueid": "u" * 65},  # longer than any channel id
    {"Event": "QueueMemberStatus", "Queue": "q" * 81, "Interface": "PJSIP/1"},
])
def test_a_bad_event_is_counted_and_never_raises(state: QueueState, event: Any) -> None:
    assert state.apply(AmiEvent.of(event) if isinstance(event, dict) else event) is False
    assert state.counters["bad"] == 1
    assert state.counters["errors"] == 0


@pytest.mark.parametrize("event, field, key", [
    ({"Event": "QueueCallerJoin", "Queue": "support", "Uniqueid": "u1", "Position": "first"}, "Position", None),
    ({"Event": "QueueCallerJoin", "Queue": "support", "Uniqueid": "u1", "Position": "inf"}, "Position", None),
    ({"Event": "QueueMemberStatus", "Queue": "support", "Interface": "PJSIP/1", "Status": "busy"}, "Status",
     "status"),
    ({"Event": "QueueMemberPenalty", "Queue": "support", "Interface": "PJSIP/1", "Penalty": "1e400"}, "Penalty",
     "penalty"),
    ({"Event": "QueueMemberStatus", "Queue": "support", "Interface": "PJSIP/1", "CallsTaken": "nan"},
     "CallsTaken", "calls_taken"),
    ({"Event": "QueueEntry", "Queue": "support", "Uniqueid": "u1", "Wait": "long"}, "Wait", None),
    ({"Event": "QueueParams", "Queue": "support", "ServicelevelPerf": "n/a"}, "ServicelevelPerf", None),
    ({"Event": "QueueParams", "Queue": "support", "ServicelevelPerf": "1e15"}, "ServicelevelPerf", None),
])
def test_an_unusable_number_is_a_missing_field_and_the_event_still_counts(
        state: QueueState, event: dict[str, str], field: str, key: str | None, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="queues.state"):
        assert state.apply(AmiEvent.of(event)) is True
    assert state.counters["bad"] == 0 and state.counters["errors"] == 0
    assert f"{field} " in caplog.text and "read as missing" in caplog.text
    assert not [r for r in caplog.records if r.exc_info]
    if key is not None:
        assert member(state.snapshot(), "support", "PJSIP/1")[key] is None
    json.dumps(state.snapshot())


def test_messages_that_are_not_queue_events_are_ignored(state: QueueState) -> None:
    for message in ({}, {"Response": "Success", "ActionID": "x"}, {"Event": "Newexten", "Uniqueid": "u1"}):
        assert state.apply(AmiEvent.of(message)) is False
    assert state.counters["ignored"] == 3 and state.counters["bad"] == 0


def test_a_bad_timestamp_falls_back_to_the_clock(state: QueueState, clock: Clock) -> None:
    event = join("support", "u1", None, 1)
    event["Timestamp"] = "yesterday"
    state.apply(AmiEvent.of(event))
    assert state.queue_snapshot("support")["callers"][0]["since"] == clock.now


_names = st.sampled_from(sorted(QueueState.EVENTS) + ["Newchannel", "VarSet"])
_values = st.one_of(st.text(max_size=8), st.integers(-5, 10).map(str), st.sampled_from(["u1", "u2", "support"]),
                    st.lists(st.text(max_size=12), max_size=3), st.none(), st.integers(),
                    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
_keys = st.sampled_from(["Queue", "Uniqueid", "Interface", "Location", "Position", "Status", "Paused",
                         "Timestamp", "ChanVariable", "Wait", "HoldTime", "RingTime", "Penalty", "InCall",
                         "Linkedid", "MemberName", "PausedReason", "DestUniqueid", "Priority"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_names, st.dictionaries(_keys, _values, max_size=8)), max_size=30),
       st.booleans())
def test_random_events_never_raise_and_the_snapshot_stays_json(events: list[tuple[str, dict[str, Any]]],
                                                              resync: bool) -> None:
    state = QueueState(clock=Clock())
    if resync:
        state.begin_resync()
    for name, fields in events:
        assert state.apply(AmiEvent.of({"Event": name, **fields})) in (True, False)
    state.end_resync()
    assert state.counters["errors"] == 0
    json.dumps(state.snapshot())


def iterate_trace_names() -> Iterator[str]:
    yield from ("ami-queue-answered", "ami-queue-abandoned", "ami-queue-ringnoanswer", "ami-member-management")


@pytest.mark.parametrize("name", list(iterate_trace_names()))
def test_every_trace_replayed_twice_ends_in_the_same_state(name: str, clock: Clock) -> None:
    once = QueueState(clock=clock, segment_of=SEGMENTS.get)
    Replay(read_trace(name), clock, once).rest()
    twice = QueueState(clock=clock, segment_of=SEGMENTS.get)
    Replay(read_trace(name) * 2, clock, twice).rest()
    def strip(snapshot: dict[str, Any]) -> dict[str, Any]:
        del snapshot["counters"]
        for queue in snapshot["queues"].values():
            queue["params"].pop("updated_at", None)  # dated by the newest event seen
        return snapshot

    assert strip(once.snapshot()) == strip(twice.snapshot())
