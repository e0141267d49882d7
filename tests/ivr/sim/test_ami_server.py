"""The AMI simulator (ivr.sim.ami_server) against the recorded Asterisk 23.

Two ways of comparing:

* replay: the client side of a recording (``server->asterisk`` chunks of
  ``ami-login-and-status``, ``ami-member-management``, ``ami-restart``) is
  sent to the simulator over TCP, each action only once the simulator has
  written as many messages as Asterisk had by then.  Every message must have
  the recorded keys in the recorded order and the recorded values, except
  values that differ from run to run (times, session ids, addresses);
* call scenarios: the queue scenarios (answered, abandoned, ring-no-answer)
  are driven with the model methods on a clock that follows the recording,
  and their queue events (QueueCaller*, Agent*, QueueMember*) must match the
  recording queue by queue and, for the caller, in order.

Then the protocol corners: permission denied, unknown and missing actions,
Asterisk's line reading, Events: off, login timeout, restart, silence,
malformed output and split writes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest

from ivr.asterisk.ami import AmiParser, Banner, Message, encode_action
from ivr.sim.ami_server import iter_messages
from ivr.sim.ami_server import INUSE, MALFORMED, RINGING, AmiSimulator, parse_callerid
from tests.ivr import traces

LIMIT = 5.0
TRACES = traces.trace_dir()

# Values that differ between any two runs of Asterisk (or depend on the machine).
VOLATILE = {
    "Timestamp", "EventTV", "SessionTV", "SessionID", "LocalAddress", "RemoteAddress", "LoginTime",
    "LastCall", "LastPause", "Uptime", "LastReload", "CoreStartupDate", "CoreStartupTime",
    "CoreReloadDate", "CoreReloadTime", "CoreProcessedCalls", "DestChannel", "DestUniqueid",
}


def masked(item: object) -> object:
    if isinstance(item, Message):
        return [(k, "*" if k in VOLATILE else v) for k, v in item.headers]
    return item


class Clock:
    def __init__(self, t: float = 1795333700.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class RawAmi:
    """A bare manager connection: bytes out, parsed items in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.parser = AmiParser()
        self.items: list[object] = []
        self.chunks: list[bytes] = []
        self.eof = False
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, port: int, *, retry_for: float = 0.0) -> RawAmi:
        deadline = asyncio.get_running_loop().time() + retry_for
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                return cls(reader, writer)
            except ConnectionRefusedError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.chunks.append(data)
                self.items += self.parser.feed(data)
                self._changed.set()
        except ConnectionError:
            pass
        self.items += self.parser.close()
        self.eof = True
        self._changed.set()

    @property
    def messages(self) -> list[Message]:
        return [i for i in self.items if isinstance(i, Message)]

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def action(self, fields: dict, action_id: str) -> None:
        self.send(encode_action(fields, action_id))

    async def until(self, predicate: Callable[[RawAmi], bool], limit: float = LIMIT) -> None:
        async with asyncio.timeout(limit):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def answer(self, action_id: str) -> Message:
        await self.until(lambda c: any(m.action_id == action_id and m.is_response for m in c.messages))
        return next(m for m in self.messages if m.action_id == action_id and m.is_response)

    async def login(self, events: str = "on", secret: str = "ivrsecret") -> None:
        self.action({"Action": "Login", "Username": "ivr", "Secret": secret, "Events": events}, "login-1")
        await self.answer("login-1")

    def events(self, *names: str) -> list[Message]:
        return [m for m in self.messages if m.event in names]

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def connections():
    opened: list[RawAmi] = []

    async def open_(port: int, **kwargs) -> RawAmi:
        conn = await RawAmi.open(port, **kwargs)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.close()


# --- replaying the recorded client side ------------------------------------------------------------


async def replay(sim: AmiSimulator, name: str, open_, *, on_event: dict[str, Callable[[], None]] | None = None
                 ) -> tuple[dict[int, RawAmi], dict[int, list[object]]]:
    """Send the recording's client side to `sim`; return our connections and the recorded items."""
    expected: dict[int, list[object]] = {}
    parsers: dict[int, AmiParser] = {}
    eofs: set[int] = set()
    conns: dict[int, RawAmi] = {}

    async def caught_up() -> None:
        for conn_id, items in expected.items():
            await conns[conn_id].until(lambda c, n=len(items): len(c.items) >= n)

    for chunk in traces.load(name):
        conn_id = chunk.conn
        if conn_id not in conns:
            await caught_up()
            conns[conn_id] = await open_(sim.port, retry_for=LIMIT)  # refused while a restart is under way
            parsers[conn_id] = AmiParser()
            expected[conn_id] = []
        if chunk.from_asterisk and chunk.data:
            for item in parsers[conn_id].feed(chunk.data):
                trigger = (on_event or {}).get(getattr(item, "event", None) or "")
                if trigger is not None:  # something outside AMI caused this event: cause it now
                    await caught_up()
                    trigger()
                expected[conn_id].append(item)
        elif chunk.from_asterisk and chunk.eof:
            eofs.add(conn_id)
        elif chunk.from_server and chunk.data:
            await caught_up()
            conns[conn_id].send(chunk.data)
    await caught_up()
    for conn_id in eofs:
        await conns[conn_id].until(lambda c: c.eof)
    return conns, expected


async def test_login_status_ping_and_refused_login_replay_like_the_recording(connections) -> None:
    async with AmiSimulator.like_traces(auth_delay=0.3) as sim:
        conns, expected = await replay(sim, "ami-login-and-status", connections)
    for conn_id, items in expected.items():
        assert [masked(i) for i in conns[conn_id].items] == [masked(i) for i in items], f"conn {conn_id}"
    assert conns[2].eof and conns[1].eof  # refused login and Logoff both close the socket
    # The refused login is answered only after Asterisk's delay, but the security event is at once.
    (error,) = [m for m in conns[2].messages if m.action_id == "login-2"]
    assert error["Message"] == "Authentication failed"


async def test_member_management_replays_like_the_recording(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        # The recording was made after one 4-second call had been answered in `support`.
        support = sim.queue("support")
        support.completed, support.completed_in_sl, support.talktime = 1, 1, 4
        conns, expected = await replay(sim, "ami-member-management", connections)
    got, want = conns[1].items, expected[1]
    assert [masked(i) for i in got] == [masked(i) for i in want]
    messages = [m for m in got if isinstance(m, Message)]
    assert [m["Message"] for m in messages if m.is_response and m.response == "Error"] == [
        "Unable to add interface: Already there", "Unable to remove interface: Not there", "Interface not found"]
    added = next(m for m in messages if m.event == "QueueMemberAdded")
    assert added["LoginTime"] != "0" and added["Membership"] == "dynamic"


async def test_restart_replays_like_the_recording(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        tasks: list[asyncio.Task[None]] = []
        conns, expected = await replay(
            sim, "ami-restart", connections,
            on_event={"Shutdown": lambda: tasks.append(asyncio.create_task(sim.restart(down_for=0.3)))})
        await asyncio.gather(*tasks)
    for conn_id, items in expected.items():
        assert [masked(i) for i in conns[conn_id].items] == [masked(i) for i in items], f"conn {conn_id}"
    shutdown = conns[1].events("Shutdown")[0]
    assert (shutdown["Shutdown"], shutdown["Restart"]) == ("Cleanly", "True")
    assert conns[1].eof and conns[1].items[-1] == shutdown  # nothing after Shutdown, then the close
    booted = conns[2].events("FullyBooted")[0]
    assert int(booted["Uptime"]) <= 5  # a new start, not the old process


# --- the queue scenarios -------------------------------------------------------------------------------


def queue_events(items: list) -> list[Message]:
    return [m for m in items if isinstance(m, Message) and (m.event or "").startswith(("Queue", "Agent"))]


def recorded_queue_events(name: str) -> list[Message]:
    return queue_events(list(iter_messages((TRACES / f"{name}.ami.raw").read_bytes())))


def by_queue(events: list[Message]) -> dict[str, list[object]]:
    grouped: dict[str, list[object]] = {}
    for event in events:
        grouped.setdefault(event["Queue"], []).append(masked(event))
    return grouped


def caller_sequence(events: list[Message], uniqueid: str) -> list[str]:
    return [e.event or "" for e in events if e.get("Uniqueid") == uniqueid]


def trace_start(name: str) -> float:
    """The wall-clock time of the recording's t=0, from its first Timestamp header."""
    first = next(m for m in iter_messages((TRACES / f"{name}.ami.raw").read_bytes())
                 if isinstance(m, Message) and m.get("Timestamp"))
    chunk = next(c for c in traces.load(name) if c.from_asterisk and b"Timestamp: " + first["Timestamp"].encode()
                 in c.data)
    return float(first["Timestamp"]) - chunk.t


def stub_variables(name: str) -> dict[str, str]:
    """IVR_* variables the recording's FastAGI stub set on the caller channel."""
    found = {}
    for chunk in traces.load(f"{name}.agi"):
        match = re.match(r"SET VARIABLE (\w+) \"?([^\"\n]*)\"?\n", chunk.data.decode()) if chunk.from_server else None
        if match:
            found[match[1]] = match[2]
    return found


def client_action_times(name: str) -> dict[str, float]:
    times = {}
    for chunk in traces.load(name):
        if chunk.from_server and chunk.data:
            action = re.search(rb"Action: (\w+)", chunk.data)[1].decode()
            times.setdefault(action, chunk.t)
    return times


async def observer(sim: AmiSimulator, open_) -> RawAmi:
    conn = await open_(sim.port)
    await conn.login()
    return conn


async def test_answered_call_emits_the_recorded_queue_events(connections) -> None:
    name = "ami-queue-answered"
    clock = Clock(trace_start(name))
    t0, times = clock.t, client_action_times(name)
    want = recorded_queue_events(name)
    join = next(e for e in want if e.event == "QueueCallerJoin")
    variables = stub_variables(name)
    assert variables == {"IVR_CALL_ID": "call-0001", "IVR_CUSTOMER_ID": "cust-12345", "IVR_QUEUE": "support"}
    async with AmiSimulator.like_traces(clock=clock) as sim:
        conn = await observer(sim, connections)
        clock.t = t0 + times["Originate"]
        sim.place_caller("support", join["Uniqueid"], join["Linkedid"], '"Test Caller" <79161234567>', variables,
                         channel=join["Channel"], exten="200")
        sim.agent_answers(join["Uniqueid"], "Local/100@agents")  # Local/100@agents answers at once
        clock.t = t0 + times["Hangup"]
        sim.caller_hangs_up(join["Uniqueid"])
        await conn.until(lambda c: len(queue_events(c.items)) >= len(want))
    got = queue_events(conn.items)
    assert by_queue(got) == by_queue(want)
    assert caller_sequence(got, join["Uniqueid"]) == caller_sequence(want, join["Uniqueid"]) == [
        "QueueCallerJoin", "AgentCalled", "QueueCallerLeave", "AgentConnect", "AgentComplete"]
    # The recording has one race: ringtest's member status arrived before the caller left.
    assert sorted(map(str, map(masked, got))) == sorted(map(str, map(masked, want)))


async def test_abandoned_call_replays_pause_and_abandon_like_the_recording(connections) -> None:
    name = "ami-queue-abandoned"
    clock = Clock(trace_start(name))
    t0 = clock.t
    want_all = list(iter_messages((TRACES / f"{name}.ami.raw").read_bytes()))
    join = next(e for e in recorded_queue_events(name) if e.event == "QueueCallerJoin")
    async with AmiSimulator.like_traces(clock=clock) as sim:
        conn = await connections(sim.port)
        for chunk in traces.load(name):  # the client side, with the calls done through the model
            if not (chunk.from_server and chunk.data):
                continue
            clock.t = t0 + chunk.t
            action = re.search(rb"Action: (\w+)", chunk.data)[1]
            if action == b"Originate":
                sim.place_caller("b2b", join["Uniqueid"], join["Linkedid"], '"Test Caller" <79161234567>',
                                 stub_variables(name), channel=join["Channel"], exten="201")
            elif action == b"Hangup":
                sim.caller_hangs_up(join["Uniqueid"])
            else:
                conn.send(chunk.data)
                action_id = re.search(rb"ActionID: (\S+)", chunk.data)[1].decode()
                await conn.answer(action_id)
        await conn.until(lambda c: c.eof)

    def modelled(items: list) -> list[object]:
        keep = []
        for item in items:
            if isinstance(item, Banner):
                keep.append(item)
            elif isinstance(item, Message) and (
                (item.is_response and not re.match(r"(originate|hangup)-", item.action_id or ""))
                or (item.event or "").startswith(("Queue", "Agent"))
                or item.event in ("FullyBooted", "SuccessfulAuth")
                or (item.event == "DeviceStateChange" and re.match(r"Queue:.+_(pause_.+|avail)$", item["Device"]))
            ):
                keep.append(masked(item))
        return keep

    assert modelled(conn.items) == modelled(want_all)
    abandon = conn.events("QueueCallerAbandon")[0]
    assert (abandon["Position"], abandon["OriginalPosition"], abandon["HoldTime"]) == ("1", "1", "4")


async def test_ring_no_answer_then_answer_emits_the_recorded_queue_events(connections) -> None:
    name = "ami-queue-ringnoanswer"
    clock = Clock(trace_start(name))
    t0, times = clock.t, client_action_times(name)
    want = recorded_queue_events(name)
    join = next(e for e in want if e.event == "QueueCallerJoin")
    async with AmiSimulator.like_traces(clock=clock) as sim:
        # Recorded after the answered scenario: Local/100@agents had taken one call in support.
        sim.queue("support").members["Local/100@agents"].calls = 1
        conn = await observer(sim, connections)
        clock.t = t0 + times["Originate"]
        sim.place_caller("ringtest", join["Uniqueid"], join["Linkedid"], '"Test Caller" <79161234567>',
                         stub_variables(name), channel=join["Channel"], exten="202")
        sim.ring_agent(join["Uniqueid"], "Local/101@agents-noanswer")  # linear: the first member
        clock.t += 4.0  # timeout = 4
        sim.agent_no_answer(join["Uniqueid"], "Local/101@agents-noanswer")
        clock.t += 1.0  # retry = 1
        sim.agent_answers(join["Uniqueid"], "Local/100@agents")
        clock.t = t0 + times["Hangup"]
        sim.caller_hangs_up(join["Uniqueid"])
        await conn.until(lambda c: len(queue_events(c.items)) >= len(want))
    got = queue_events(conn.items)
    assert [masked(e) for e in got] == [masked(e) for e in want]  # same events, same order
    rna = next(e for e in got if e.event == "AgentRingNoAnswer")
    connect = next(e for e in got if e.event == "AgentConnect")
    complete = next(e for e in got if e.event == "AgentComplete")
    assert rna["RingTime"] == "4000" and (connect["HoldTime"], connect["RingTime"]) == ("5", "0")
    assert (complete["HoldTime"], complete["TalkTime"], complete["Reason"]) == ("5", "3", "caller")


# --- the model ---------------------------------------------------------------------------------------------


async def test_priorities_positions_and_queue_status_entries(connections) -> None:
    clock = Clock()
    async with AmiSimulator.like_traces(clock=clock) as sim:
        conn = await observer(sim, connections)
        first = sim.place_caller("support", callerid="100")
        clock.t += 10
        second = sim.place_caller("support", callerid='"Второй" <200>')
        vip = sim.place_caller("support", callerid="300", priority=5)  # QUEUE_PRIO: higher goes first
        clock.t += 2
        conn.action({"Action": "QueueStatus", "Queue": "support"}, "qs-1")
        await conn.until(lambda c: bool(c.events("QueueStatusComplete")))
        entries = [(e["Position"], e["Uniqueid"], e["Wait"], e["Priority"]) for e in conn.events("QueueEntry")]
        assert entries == [("1", vip.uniqueid, "2", "5"), ("2", first.uniqueid, "12", "0"),
                           ("3", second.uniqueid, "2", "0")]
        assert [e["CallerIDName"] for e in conn.events("QueueEntry")] == ["unknown", "unknown", "Второй"]
        sim.caller_hangs_up(first.uniqueid)
        await conn.until(lambda c: len(c.events("QueueCallerLeave")) == 1)
        joins = [(e["Position"], e["Count"]) for e in conn.events("QueueCallerJoin")]
        assert joins == [("1", "1"), ("2", "2"), ("1", "3")]
        abandon = conn.events("QueueCallerAbandon")[0]
        assert (abandon["Position"], abandon["OriginalPosition"], abandon["HoldTime"]) == ("2", "1", "12")
        leave = conn.events("QueueCallerLeave")[0]
        assert (leave["Position"], leave["Count"]) == ("2", "2")
        conn.action({"Action": "QueueSummary", "Queue": "support"}, "sum-1")
        await conn.until(lambda c: bool(c.events("QueueSummaryComplete")))
        summary = conn.events("QueueSummary")[0]
        assert (summary["Callers"], summary["LongestHoldTime"], summary["Available"]) == ("2", "2", "1")


async def test_ringing_statuses_and_ringall_cancellation(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        sim.add_member("support", "PJSIP/201", "Анна", static=True)
        conn = await observer(sim, connections)
        caller = sim.place_caller("support")
        sim.ring_agent(caller.uniqueid, "PJSIP/201")
        sim.ring_agent(caller.uniqueid, "Local/100@agents")
        sim.agent_answers(caller.uniqueid, "Local/100@agents")
        await conn.until(lambda c: bool(c.events("AgentConnect")))
        await conn.until(lambda c: any(e["Interface"] == "PJSIP/201" and e["Status"] == "1"
                                       for e in c.events("QueueMemberStatus")))
        phone = [e["Status"] for e in conn.events("QueueMemberStatus") if e["Interface"] == "PJSIP/201"]
        assert phone == [str(RINGING), "1"]  # a phone rings (6), then stops when another member answers
        local = [e["Status"] for e in conn.events("QueueMemberStatus") if e["Interface"] == "Local/100@agents"]
        assert set(local) == {str(INUSE)}  # a Local channel is "in use" while it rings (as recorded)
        sim.set_device_state("PJSIP/201", 5)
        await conn.until(lambda c: any(e.get("Status") == "5" for e in c.events("QueueMemberStatus")))


async def test_static_members_cannot_be_removed_and_unknown_queues_are_refused(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        conn = await observer(sim, connections)
        cases = {
            "r-1": ({"Action": "QueueRemove", "Queue": "support", "Interface": "Local/100@agents"}, "Member not dynamic"),
            "r-2": ({"Action": "QueueRemove", "Queue": "nosuch", "Interface": "X"},
                    "Unable to remove interface from queue: No such queue"),
            "a-1": ({"Action": "QueueAdd", "Queue": "nosuch", "Interface": "X"},
                    "Unable to add interface to queue: No such queue"),
            "a-2": ({"Action": "QueueAdd", "Interface": "X"}, "'Queue' not specified."),
            "p-1": ({"Action": "QueuePause", "Interface": "X"}, "Need 'Interface' and 'Paused' parameters."),
            "n-1": ({"Action": "QueuePenalty", "Interface": "Local/100@agents", "Penalty": "-1"},
                    "Invalid interface, queuename or penalty"),
        }
        for action_id, (fields, _) in cases.items():
            conn.action(fields, action_id)
        for action_id, (_, message) in cases.items():
            answer = await conn.answer(action_id)
            assert (answer.response, answer["Message"]) == ("Error", message)
        conn.action({"Action": "QueuePause", "Interface": "Local/100@agents", "Paused": "yes", "Reason": "обед"}, "p-2")
        assert (await conn.answer("p-2"))["Message"] == "Interface paused successfully"
        await conn.until(lambda c: len(c.events("QueueMemberPause")) == 4)  # no Queue: every queue
        assert {e["PausedReason"] for e in conn.events("QueueMemberPause")} == {"обед"}


# --- protocol corners --------------------------------------------------------------------------------------


async def test_permission_denied_unknown_and_missing_actions(connections) -> None:
    async with AmiSimulator() as sim:
        conn = await connections(sim.port)
        conn.send(b"Action: Ping\nActionID: early\n\n")  # bare \n line ends, as Asterisk accepts
        assert (await conn.answer("early"))["Message"] == "Permission denied"
        await conn.login()
        conn.send(b"Action: NoSuchThing\r\nActionID: u-1\r\n\r\n\r\n")
        unknown = await conn.answer("u-1")
        assert unknown["Message"] == ("Invalid/unknown command: NoSuchThing. "
                                      "Use Action: ListCommands to show available commands.")
        await conn.until(lambda c: any(m.get("Message") == "Missing action in request" for m in c.messages))
        conn.send(b"Action: Login\r\nActionID: again\r\nUsername: ivr\r\nSecret: x\r\n\r\n")
        assert (await conn.answer("again"))["Message"] == "Already authenticated"
        conn.send(b"Action: Ping\r\nActionID: long\r\nX: " + b"y" * 1100 + b"\r\n\r\n")
        await conn.until(lambda c: any("line too long" in (m.get("Message") or "") for m in c.messages))
        conn.action({"Action": "CoreStatus"}, "cs")
        assert (await conn.answer("cs"))["CoreCurrentCalls"] == "0"


async def test_events_off_and_event_classes(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        quiet = await connections(sim.port)
        await quiet.login(events="off")
        agents_only = await connections(sim.port)
        await agents_only.login(events="agent")
        sim.place_caller("vip")
        sim.emit("UserEvent", {"UserEvent": "x"})
        await agents_only.until(lambda c: bool(c.events("QueueCallerJoin")))
        quiet.action({"Action": "Ping"}, "p")
        await quiet.answer("p")
        assert quiet.events("QueueCallerJoin", "FullyBooted", "UserEvent") == []
        assert agents_only.events("FullyBooted", "UserEvent", "SuccessfulAuth") == []


async def test_login_timeout_closes_the_socket(connections) -> None:
    async with AmiSimulator(auth_timeout=0.2) as sim:
        conn = await connections(sim.port)
        await conn.until(lambda c: c.eof)
        assert conn.items == [Banner("Asterisk Call Manager/12.0.0")]


async def test_restart_refuses_connections_while_down(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        conn = await observer(sim, connections)
        conn.action({"Action": "QueueAdd", "Queue": "vip", "Interface": "PJSIP/9"}, "add")
        await conn.answer("add")
        restart = asyncio.create_task(sim.restart(down_for=0.3))
        await conn.until(lambda c: c.eof)
        assert conn.messages[-1].event == "Shutdown"
        with pytest.raises(ConnectionRefusedError):
            await RawAmi.open(sim.port)
        await restart
        fresh = await observer(sim, connections)
        fresh.action({"Action": "QueueStatus", "Queue": "vip"}, "qs")
        await fresh.until(lambda c: bool(c.events("QueueStatusComplete")))
        assert [e["Location"] for e in fresh.events("QueueMember")] == ["Local/100@agents"]


async def test_silent_simulator_keeps_the_socket_and_answers_nothing(connections) -> None:
    async with AmiSimulator() as sim:
        conn = await observer(sim, connections)
        count = len(conn.items)
        sim.go_silent()
        conn.action({"Action": "Ping"}, "p-1")
        sim.emit("UserEvent", {"UserEvent": "nobody hears this"})
        await asyncio.sleep(0.3)
        assert len(conn.items) == count and not conn.eof
        other = await observer(sim, connections)  # a new connection is served normally
        other.action({"Action": "Ping"}, "p-2")
        assert (await other.answer("p-2"))["Ping"] == "Pong"


async def test_malformed_bytes_are_written_as_documented(connections) -> None:
    async with AmiSimulator() as sim:
        conn = await observer(sim, connections)
        before = b"".join(conn.chunks)
        sim.send_malformed("all")
        expected = b"".join(MALFORMED.values())
        await conn.until(lambda c: len(b"".join(c.chunks)) >= len(before) + len(expected))
        assert b"".join(conn.chunks)[len(before):] == expected


async def test_split_writes_cut_inside_a_utf8_character(connections) -> None:
    async with AmiSimulator(split_utf8_writes=True) as sim:
        conn = await observer(sim, connections)
        sim.emit("UserEvent", {"Name": "Иванов Пётр"})
        await conn.until(lambda c: bool(c.events("UserEvent")))
        assert conn.events("UserEvent")[0]["Name"] == "Иванов Пётр"
        undecodable = []
        for chunk in conn.chunks:
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                undecodable.append(chunk)
        assert undecodable and undecodable[0].endswith("Иванов Пётр".encode()[:1])


@pytest.mark.parametrize(("text", "expected"), [
    ('"Иванов Пётр" <89161234567>', ("Иванов Пётр", "89161234567")),
    ('"" <>', ("", "")),
    ("anonymous", ("anonymous", "")),
    ('"Anonymous" <anonymous>', ("Anonymous", "anonymous")),
    ("Test Caller <79161234567>", ("Test Caller", "79161234567")),
    ("+79161234567", ("", "+79161234567")),
])
def test_callerid_strings_split_like_asterisk(text: str, expected: tuple[str, str]) -> None:
    assert parse_callerid(text) == expected


# --- the caller channel: app_queue's dials and the hang-up ------------------------------------------------


def caller_channel_events(items: list, uniqueid: str) -> list[Message]:
    """The Dial* events of the caller channel and its Hangup, in order."""
    return [m for m in items if isinstance(m, Message) and m.event in ("DialBegin", "DialState", "DialEnd", "Hangup")
            and m.get("Uniqueid") == uniqueid]


@pytest.mark.parametrize("name", ["ami-queue-answered", "ami-queue-ringnoanswer"])
async def test_member_dials_and_the_callers_hangup_are_sent_as_recorded(connections, name) -> None:
    clock = Clock(trace_start(name))
    t0, times = clock.t, client_action_times(name)
    recorded = list(iter_messages((TRACES / f"{name}.ami.raw").read_bytes()))
    join = next(e for e in queue_events(recorded) if e.event == "QueueCallerJoin")
    want = caller_channel_events(recorded, join["Uniqueid"])
    queue = join["Queue"]
    async with AmiSimulator.like_traces(clock=clock) as sim:
        conn = await observer(sim, connections)
        clock.t = t0 + times["Originate"]
        sim.place_caller(queue, join["Uniqueid"], join["Linkedid"], '"Test Caller" <79161234567>',
                         stub_variables(name), channel=join["Channel"], exten=join["Exten"])
        if queue == "ringtest":
            sim.ring_agent(join["Uniqueid"], "Local/101@agents-noanswer")
            sim.agent_no_answer(join["Uniqueid"], "Local/101@agents-noanswer")
        sim.agent_answers(join["Uniqueid"], "Local/100@agents")
        clock.t = t0 + times["Hangup"]
        sim.caller_hangs_up(join["Uniqueid"])
        await conn.until(lambda c: bool(caller_channel_events(c.items, join["Uniqueid"])[-1:])
                         and caller_channel_events(c.items, join["Uniqueid"])[-1].event == "Hangup")
        got = caller_channel_events(conn.items, join["Uniqueid"])
    assert [e.event for e in want][-1] == "Hangup"
    assert [masked(e) for e in got] == [masked(e) for e in want]
    assert sim.channels == {} and sim.callers == {}


def snapshot_keys(prefix: str = "") -> list[str]:
    """The headers of one channel snapshot but its ChanVariable lines, in the order of the recorded
    QueueCallerJoin (the channel part: what comes before Queue), with `prefix`, as
    ast_manager_build_channel_state_string_prefix writes them."""
    join = next(e for e in recorded_queue_events("ami-queue-answered") if e.event == "QueueCallerJoin")
    keys = [k for k, _ in join.headers]
    return [prefix + k for k in keys[keys.index("Timestamp") + 1: keys.index("Queue")] if k != "ChanVariable"]


def bridge_keys(prefix: str = "") -> list[str]:
    """A bridge snapshot's headers, in the order of the recorded BridgeEnter."""
    recorded = list(iter_messages((TRACES / "ami-queue-answered.ami.raw").read_bytes()))
    enter = next(m for m in recorded if isinstance(m, Message) and m.event == "BridgeEnter")
    return [prefix + k for k, _ in enter.headers if k.startswith("Bridge")]


async def test_the_managers_dial_comes_before_the_queues_and_names_the_resource_only(connections) -> None:
    async with AmiSimulator.like_traces(channelvars=("IVR_CALL_ID", "IVR_MANAGER")) as sim:
        sim.add_member("support", "PJSIP/1003", static=True)
        conn = await observer(sim, connections)
        first = sim.incoming_call(variables={"IVR_CALL_ID": "call-1", "IVR_MANAGER": "PJSIP/1003"})
        sim.ring_manager(first.uniqueid, "PJSIP/1003")
        sim.manager_no_answer(first.uniqueid)
        sim.place_caller("support", first.uniqueid)  # the same channel, now in the queue
        sim.ring_agent(first.uniqueid, "PJSIP/1003")  # the manager is a member too
        sim.agent_answers(first.uniqueid, "PJSIP/1003")
        sim.complete_call(first.uniqueid)
        second = sim.incoming_call(variables={"IVR_CALL_ID": "call-2", "IVR_MANAGER": "PJSIP/1003"})
        sim.ring_manager(second.uniqueid, "PJSIP/1003")
        leg = sim.manager_answers(second.uniqueid)
        sim.caller_hangs_up(second.uniqueid)  # on the manager: their channel goes too
        await conn.until(lambda c: len(c.events("Hangup")) == 3)
    dials = [(e.event, e["Uniqueid"], e.get("DialString"), e.get("DialStatus")) for e in conn.items
             if isinstance(e, Message) and (e.event or "").startswith("Dial")]
    assert dials == [
        ("DialBegin", first.uniqueid, "1003", None), ("DialEnd", first.uniqueid, None, "NOANSWER"),  # app_dial
        ("DialBegin", first.uniqueid, "PJSIP/1003", None),  # app_queue: the member's whole interface
        ("DialState", first.uniqueid, None, "RINGING"), ("DialEnd", first.uniqueid, None, "ANSWER"),
        ("DialBegin", second.uniqueid, "1003", None), ("DialEnd", second.uniqueid, None, "ANSWER"),
    ]
    begin = conn.events("DialBegin")[0]
    assert [k for k, _ in begin.headers][3:] == (snapshot_keys() + ["ChanVariable"] * 2 + snapshot_keys("Dest")
                                                 + ["DestChanVariable"] * 2 + ["DialString"])
    assert begin["DestChannel"].startswith("PJSIP/1003-")
    assert ("ChanVariable", "IVR_MANAGER=PJSIP/1003") in begin.headers
    hangups = conn.events("Hangup")
    assert [(h["Uniqueid"], h["Cause"], h["Cause-txt"]) for h in hangups] == [
        (first.uniqueid, "16", "Normal Clearing"), (second.uniqueid, "16", "Normal Clearing"),
        (leg.uniqueid, "16", "Normal Clearing")]
    assert hangups[2]["Channel"].startswith("PJSIP/1003-") and ("ChanVariable", "IVR_CALL_ID=") in hangups[2].headers
    assert sim.channels == {} and sim.manager_legs == {}


async def test_transfers_carry_every_snapshot_asterisk_writes_then_agent_complete(connections) -> None:
    variables = ("IVR_CALL_ID", "IVR_CUSTOMER_ID")
    async with AmiSimulator.like_traces(channelvars=variables) as sim:
        conn = await observer(sim, connections)
        blind = sim.place_caller("support", variables={"IVR_CALL_ID": "call-b"})
        sim.agent_answers(blind.uniqueid, "Local/100@agents")
        sim.blind_transfer(blind.uniqueid, "1002", "from-agents")
        attended = sim.place_caller("vip", variables={"IVR_CALL_ID": "call-a"})
        sim.agent_answers(attended.uniqueid, "Local/100@agents")
        target = sim.attended_transfer(attended.uniqueid, "PJSIP/1002")
        await conn.until(lambda c: len(c.events("AgentComplete")) == 2)
        assert set(sim.channels) == {blind.uniqueid, attended.uniqueid}  # both callers talk on
        assert sim.channels[blind.uniqueid].exten == "1002"  # the blind one in the dialplan there
        sim.caller_hangs_up(blind.uniqueid)
        sim.caller_hangs_up(attended.uniqueid)
        await conn.until(lambda c: len(c.events("Hangup")) == 2)

    def snapshot(prefix: str) -> list[str]:
        return snapshot_keys(prefix) + [f"{prefix}ChanVariable"] * len(variables)

    event = conn.events("BlindTransfer")[0]
    assert [k for k, _ in event.headers] == ["Event", "Privilege", "Timestamp", "Result", *snapshot("Transferer"),
                                            *snapshot("Transferee"), *bridge_keys(), "IsExternal", "Context",
                                            "Extension"]
    assert (event["Result"], event["Context"], event["Extension"], event["IsExternal"]) == (
        "Success", "from-agents", "1002", "No")
    assert event["TransfereeUniqueid"] == blind.uniqueid
    assert ("TransfereeChanVariable", "IVR_CALL_ID=call-b") in event.headers
    assert event["TransfererChannel"].startswith("Local/100@agents-")

    event = conn.events("AttendedTransfer")[0]
    assert [k for k, _ in event.headers] == [
        "Event", "Privilege", "Timestamp", "Result", *snapshot("OrigTransferer"), *bridge_keys("Orig"),
        *snapshot("SecondTransferer"), *bridge_keys("Second"), *snapshot("Transferee"), *snapshot("TransferTarget"),
        "IsExternal", "DestType", "DestBridgeUniqueid"]
    assert event["DestType"] == "Bridge" and event["DestBridgeUniqueid"] == event["OrigBridgeUniqueid"]
    assert event["TransferTargetChannel"] == target.name and target.name.startswith("PJSIP/1002-")
    assert ("TransfereeChanVariable", "IVR_CALL_ID=call-a") in event.headers

    order = [(e.event, e.get("Uniqueid") or e.get("TransfereeUniqueid")) for e in conn.items
             if isinstance(e, Message) and e.event in ("BlindTransfer", "AttendedTransfer", "AgentComplete", "Hangup")]
    assert order == [("BlindTransfer", blind.uniqueid), ("AgentComplete", blind.uniqueid),
                     ("AttendedTransfer", attended.uniqueid), ("AgentComplete", attended.uniqueid),
                     ("Hangup", blind.uniqueid), ("Hangup", attended.uniqueid)]
    assert [e["Reason"] for e in conn.events("AgentComplete")] == ["transfer", "transfer"]


async def test_a_caller_timing_out_leaves_the_queue_without_abandoning_and_hangs_up_later(connections) -> None:
    async with AmiSimulator.like_traces() as sim:
        conn = await observer(sim, connections)
        caller = sim.place_caller("support")
        sim.ring_agent(caller.uniqueid, "Local/100@agents")
        sim.caller_times_out(caller.uniqueid)
        assert sim.callers == {} and caller.uniqueid in sim.channels
        sim.place_caller("vip", caller.uniqueid)  # the fallback queue: the same channel
        sim.caller_hangs_up(caller.uniqueid)
        await conn.until(lambda c: bool(c.events("Hangup")))
    names = [e.event for e in conn.items if isinstance(e, Message) and e.get("Uniqueid") == caller.uniqueid]
    assert names == ["QueueCallerJoin", "AgentCalled", "DialBegin", "DialState", "DialEnd", "QueueCallerLeave",
                     "QueueCallerJoin", "QueueCallerAbandon", "QueueCallerLeave", "Hangup"]
    assert conn.events("DialEnd")[0]["DialStatus"] == "CANCEL"
    assert [e["Queue"] for e in conn.events("QueueCallerAbandon")] == ["vip"]
