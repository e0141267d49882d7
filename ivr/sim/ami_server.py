"""Asterisk's side of AMI, for tests and demos: a manager server with app_queue behaviour.

`AmiSimulator` is an asyncio TCP server that speaks the manager protocol the
way Asterisk 23 does in the recorded traces (``tests/data/asterisk-traces``):
the ``Asterisk Call Manager/12.0.0`` banner; Login (``FullyBooted`` in the
same write as the response, then ``SuccessfulAuth``), ``Permission denied``
before login, a wrong secret answered after ``auth_delay`` seconds and the
socket closed; Logoff, Ping, CoreStatus, Command; QueueStatus and
QueueSummary as list responses; QueueAdd / QueueRemove / QueuePause /
QueuePenalty with app_queue's exact messages.  The events an acting session
causes reach it after its response, as Asterisk delivers them.

It holds a model of queues, members (device ``Status`` 1/2/3/5/6/8, paused,
penalty, calls taken) and callers, and tests or the demo drive calls with
`place_caller`, `ring_agent`, `agent_no_answer`, `agent_answers`,
`caller_hangs_up` and `complete_call`, which emit app_queue's events with
the traces' field names and order: caller channel fields (``Uniqueid``,
``Linkedid``, ``ChanVariable: NAME=value`` for every name in
`channelvars`), the member channel as ``Dest*`` fields, ``Queue``,
``Interface``, ``MemberName``, and HoldTime/TalkTime in seconds,
AgentRingNoAnswer's RingTime in milliseconds.  app_queue's member dials
come with their DialBegin (``DialString`` the member's interface) and
DialEnd (ANSWER, NOANSWER, CANCEL) as recorded.

A caller channel lives from `incoming_call` (or `place_caller`) to its
``Hangup`` (Cause 16, ``Normal Clearing``), which `caller_hangs_up` sends
wherever the caller is, and `complete_call` after AgentComplete (app_queue
hangs the caller up when the call ends, unless it was transferred).  Around
the queue: `ring_manager` / `manager_answers` / `manager_no_answer` are
the dialplan's ``Dial(${IVR_MANAGER},...)`` before the queue (app_dial's
DialBegin names the resource without its technology, its DialEnd no
DialString); `caller_times_out` leaves a queue with nobody answering
(QueueCallerLeave, no abandon) and the channel goes on; `blind_transfer`
and `attended_transfer` are the agent's transfers: BlindTransfer /
AttendedTransfer with the channel and bridge snapshots Asterisk writes
(``Transferer*``, ``Transferee*``, ``OrigTransferer*``, ``OrigBridge*``,
``SecondTransferer*``, ``TransferTarget*``...), then app_queue's
AgentComplete with Reason ``transfer``; the caller talks on until
`caller_hangs_up`.  Member changes emit
QueueMemberStatus for every queue the device is in, as device state does;
a ringing ``Local/`` member shows Status 2 (as recorded), a phone 6.
A call is addressed by the caller's uniqueid after `place_caller`::

    sim = AmiSimulator.like_traces()          # ringtest, support, vip, b2b as recorded
    await sim.start()                         # sim.port; clock=... for exact times
    caller = sim.place_caller("support", callerid='"Иванов Пётр" <79161234567>',
                              variables={"IVR_CALL_ID": "call-1"}, priority=5)
    sim.ring_agent(caller.uniqueid, "Local/100@agents")
    sim.agent_answers(caller.uniqueid, "Local/100@agents")
    sim.complete_call(caller.uniqueid)        # or caller_hangs_up() at any point

Failure modes: `restart()` (Shutdown event, sockets closed, connections
refused for a while, then a fresh boot: callers, dynamic members and
statistics gone), `go_silent()` (half-open: sockets stay, nothing is
answered), `send_malformed()` (garbage, truncated messages, invalid UTF-8),
`action_delays` (answer an action late) and `split_utf8_writes` (every write
with non-ASCII text is cut inside a UTF-8 character and sent as two TCP
segments).

Not modelled: other channels and bridges (no Newchannel, Newexten,
BridgeEnter, the agents' and Local channels' Hangups, the consultation call
of an attended transfer...), the ring strategies (tests say who rings), wrap-up time,
autopause, queue-level device states other than ``Queue:<q>_pause_<iface>``
and ``Queue:<q>_avail``, MD5 challenge login, and most of the CLI.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ivr.asterisk.ami import AmiParser, Item, Message
from queues.variables import CALL_ID, CUSTOMER_ID


def iter_messages(data: bytes, chunks: Iterable[int] | None = None) -> Iterator[Item]:
    """Parse a whole recorded stream (optionally fed in pieces of the given sizes)."""
    parser = AmiParser()
    if chunks is None:
        yield from parser.feed(data)
    else:
        offset = 0
        for size in chunks:
            yield from parser.feed(data[offset: offset + size])
            offset += size
        yield from parser.feed(data[offset:])
    yield from parser.close()

MAX_ACTION_LINE = 1024  # Asterisk's manager input buffer (inbuf[1025])


MAX_ACTION_HEADERS = 128  # AST_MAX_MANHEADERS


class ActionParser:
    """The client's bytes as Asterisk's manager reads them (Asterisk's side).

    Lines end with ``\\n`` (a ``\\r`` before it is dropped); a blank line ends
    the action, even one without headers (Asterisk answers that with
    ``Missing action in request``).  A line over 1024 bytes or more than 128
    lines are dropped and noted in the action's `junk` (``"line too long"``,
    ``"too many lines"``), which Asterisk answers with an error.
    Values are read the way ``astman_get_header`` does: leading blanks skipped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[str, str]] = []
        self._problems: list[str] = []

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        actions: list[Message] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > MAX_ACTION_LINE:
                    self._buffer = self._buffer[-1:]
                    self._note("line too long")
                return actions
            raw = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_ACTION_LINE:
                self._note("line too long")
                continue
            line = raw.decode("utf-8", "replace")
            if line == "":
                actions.append(Message(tuple(self._lines), junk=tuple(self._problems)))
                self._lines, self._problems = [], []
                continue
            if len(self._lines) >= MAX_ACTION_HEADERS:
                self._note("too many lines")
                continue
            key, sep, value = line.partition(":")
            if sep and key.strip():
                self._lines.append((key.strip(), value.lstrip(" \t")))
            # A line without a colon can never match a header lookup: Asterisk ignores it.

    def _note(self, problem: str) -> None:
        if problem not in self._problems:
            self._problems.append(problem)

log = logging.getLogger(__name__)

BANNER_VERSION = "12.0.0"
ASTERISK_VERSION = "23.4.1"

# Member (device) status numbers, as in QueueMember / QueueMemberStatus.
UNKNOWN, NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD = range(9)

HANGUP_CAUSES = {0: "Unknown", 16: "Normal Clearing", 17: "User busy", 19: "No user responding",
                 21: "Call Rejected"}  # Cause -> Cause-txt, as ast_cause2str says them

_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}
_EVENT_CLASSES = {"system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf",
                  "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test", "security",
                  "message"}

MALFORMED: dict[str, bytes] = {
    # Bytes that are no manager message at all.
    "garbage": b"\x00\x01\xfe\xff binary junk \x80\x81\x82\r\n\r\n",
    # Lines without a colon.
    "no_colon": b"this line has no colon\r\nneither has this one\r\n\r\n",
    # Well-formed lines, but neither an event nor a response.
    "headless": b"Foo: bar\r\nBaz: qux\r\n\r\n",
    # An event cut short at a line end: the next message begins before its blank line.
    "truncated": b"Event: QueueMemberStatus\r\nPrivilege: agent,all\r\nQueue: support\r\nMemberName: Agen\r\n",
    # A complete event whose value is not UTF-8 (and ends inside a Cyrillic character).
    "invalid_utf8": b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: malformed\r\nData: \xff\xfe\xd0\r\n\r\n",
    # Stray blank lines between messages.
    "blank_lines": b"\r\n\r\n\r\n",
}


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def parse_callerid(text: str) -> tuple[str, str]:
    """``"Name" <number>`` / ``Name <number>`` / ``number`` / ``name`` -> (name, number)."""
    match = re.match(r'^\s*(?:"(?P<quoted>[^"]*)"|(?P<plain>[^<]*?))\s*<(?P<num>[^>]*)>\s*$', text)
    if match:
        name = match["quoted"] if match["quoted"] is not None else (match["plain"] or "").strip()
        return name, match["num"].strip()
    text = text.strip()
    if text and all(c.isdigit() or c in "+*#" for c in text):
        return "", text
    return text, ""


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------


@dataclass
class SimChannel:
    name: str
    uniqueid: str
    linkedid: str
    cid_num: str = ""
    cid_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    context: str = "default"
    exten: str = "s"
    priority: int = 1
    state: int = 6  # 6 Up, 0 Down
    variables: dict[str, str] = field(default_factory=dict)
    language: str = "en"
    accountcode: str = ""


@dataclass
class SimMember:
    interface: str
    name: str
    state_interface: str
    penalty: int = 0
    paused: bool = False
    reason_paused: str = ""
    dynamic: bool = False
    calls: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = 0
    in_call: bool = False
    ringinuse: int = 1
    wrapuptime: int = 0
    configured_penalty: int = 0


@dataclass
class SimAttempt:
    """One member being rung for (or talking to) one caller."""

    member: SimMember
    channel: SimChannel
    started: float


@dataclass
class SimCaller:
    channel: SimChannel
    queue: str
    priority: int
    joined: float
    original_position: int
    ringing: dict[str, SimAttempt] = field(default_factory=dict)
    agent: SimAttempt | None = None
    connected_at: float = 0.0
    bridge: str = ""  # the bridge of the caller and the agent, once connected

    @property
    def uniqueid(self) -> str:
        return self.channel.uniqueid


@dataclass
class SimQueue:
    name: str
    strategy: str = "ringall"
    servicelevel: int = 0
    weight: int = 0
    maxlen: int = 0
    members: dict[str, SimMember] = field(default_factory=dict)
    callers: list[SimCaller] = field(default_factory=list)
    holdtime: int = 0
    talktime: int = 0
    completed: int = 0
    abandoned: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0

    def reset_statistics(self) -> None:
        self.holdtime = self.talktime = self.completed = self.abandoned = 0
        self.completed_in_sl = self.abandoned_in_sl = 0


# --------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------


def _fmt_ts(t: float) -> str:
    return f"{int(t)}.{int(round((t - int(t)) * 1_000_000)) % 1_000_000:06d}"


def _fmt_tv(t: float | None) -> str:
    if t is None:
        return "1970-01-01T00:00:00.000+0000"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}+0000"


class _Session:
    def __init__(self, sim: AmiSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.username = ""
        self.classes: frozenset[str] = frozenset()
        self.silent = sim._silent_new
        self.closed = False
        self.holding = False  # an action is running: its events wait for its response
        self.held: list[bytes] = []
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.id = f"0x{id(self):x}"
        self.started: float | None = None
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        self.remote = f"IPV4/TCP/{peer[0]}/{peer[1]}"
        self.local = f"IPV4/TCP/{local[0]}/{local[1]}"

    def wants(self, privilege: str) -> bool:
        return self.authenticated and not self.closed and (privilege in self.classes)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.outbox.put_nowait(data)

    def deliver_event(self, data: bytes) -> None:
        if self.holding:
            self.held.append(data)
        else:
            self.send(data)

    def flush_held(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for data in held:
            self.send(data)

    def finish(self) -> None:
        """Close once everything queued so far is written."""
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)

    async def run(self) -> None:
        sim = self.sim
        writer_task = asyncio.get_running_loop().create_task(self._write_loop())
        self.send(f"Asterisk Call Manager/{sim.banner_version}\r\n".encode())
        parser = ActionParser()
        deadline = asyncio.get_running_loop().time() + sim.auth_timeout
        try:
            while not self.closed:
                try:
                    if self.authenticated:
                        data = await self.reader.read(65536)
                    else:
                        async with asyncio.timeout_at(deadline):
                            data = await self.reader.read(65536)
                except TimeoutError:
                    break  # did not log in within auth_timeout
                if not data:
                    break
                if self.silent:
                    continue
                for action in parser.feed(data):
                    if self.silent or self.closed:
                        break
                    name = (action.get("Action") or "").lower()
                    delay = sim.action_delays.get(name)
                    if delay:
                        await asyncio.sleep(delay)
                    self.holding = True
                    try:
                        keep = await sim._handle_action(self, action)
                    finally:
                        self.flush_held()
                    if not keep:
                        self.finish()
                        break
        except (ConnectionError, OSError):
            pass
        except Exception:  # a bug in the simulator: say so, drop this session only
            log.exception("AMI simulator: session failed")
        finally:
            self.finish()
            try:
                await asyncio.wait_for(writer_task, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                writer_task.cancel()
            sim._sessions.discard(self)

    async def _write_loop(self) -> None:
        sim = self.sim
        try:
            while True:
                data = await self.outbox.get()
                if data is None:
                    break
                if self.silent:
                    continue
                cut = _utf8_cut(data) if sim.split_utf8_writes else None
                if cut is None:
                    self.writer.write(data)
                    await self.writer.drain()
                else:
                    self.writer.write(data[:cut])
                    await self.writer.drain()
                    await asyncio.sleep(sim.split_pause)
                    self.writer.write(data[cut:])
                    await self.writer.drain()
        except (ConnectionError, OSError):
            self.closed = True
        finally:
            self.writer.close()


def _utf8_cut(data: bytes) -> int | None:
    """An offset inside the first multi-byte UTF-8 character, or None."""
    for index, byte in enumerate(data):
        if byte >= 0xC0:
            return index + 1
    return None


# --------------------------------------------------------------------------
# the simulator
# --------------------------------------------------------------------------


class AmiSimulator:
    """A manager server with app_queue's behaviour; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "ivr",
        secret: str = "ivrsecret",
        auth_delay: float = 1.0,
        auth_timeout: float = 30.0,
        channelvars: Iterable[str] = (CALL_ID, CUSTOMER_ID),
        clock: Callable[[], float] = time.time,
        split_utf8_writes: bool = False,
        split_pause: float = 0.01,
        banner_version: str = BANNER_VERSION,
    ):
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.auth_delay = auth_delay
        self.auth_timeout = auth_timeout
        self.channelvars = tuple(channelvars)
        self.clock = clock
        self.split_utf8_writes = split_utf8_writes
        self.split_pause = split_pause
        self.banner_version = banner_version
        self.action_delays: dict[str, float] = {}  # lower-case action name -> seconds before answering
        self.queues: dict[str, SimQueue] = {}
        self.device_status: dict[str, int] = {}
        self.callers: dict[str, SimCaller] = {}  # in a queue or talking to its member, by Uniqueid
        self.channels: dict[str, SimChannel] = {}  # every caller channel up, by Uniqueid
        self.manager_legs: dict[str, SimChannel] = {}  # caller Uniqueid -> the manager's channel, ringing or up
        self.boot_time = clock()
        self.reload_time = self.boot_time
        self.processed_calls = 0
        self.connections = 0  # TCP connections accepted, all time
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._silent_new = False
        self._seq = itertools.count(1)

    @classmethod
    def like_traces(cls, **kwargs: object) -> AmiSimulator:
        """The queues of the recorded Asterisk (``asterisk-config/queues.conf``), in its order."""
        sim = cls(**kwargs)  # type: ignore[arg-type]
        sim.add_queue("ringtest", strategy="linear")
        sim.add_member("ringtest", "Local/101@agents-noanswer", "Agent NoAnswer", static=True)
        sim.add_member("ringtest", "Local/100@agents", "Agent Answer", static=True)
        for name in ("support", "vip", "b2b"):
            sim.add_queue(name)
            sim.add_member(name, "Local/100@agents", static=True)
        return sim

    # -- server ----------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_listening(self) -> bool:
        return self._server is not None

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in list(self._sessions):
            session.finish()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=3)

    async def __aenter__(self) -> AmiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    # -- failure modes -------------------------------------------------------------
    async def restart(self, down_for: float = 1.0) -> None:
        """``core restart now``: Shutdown event, sockets closed, refused for `down_for` s, fresh boot."""
        shutdown = self._event("Shutdown", "system", [("Shutdown", "Cleanly"), ("Restart", "True")])
        for session in list(self._sessions):
            if session.wants("system"):
                session.send(shutdown)
            session.finish()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=3)
        self._reboot()
        await asyncio.sleep(down_for)
        self._silent_new = False
        await self.start()

    def go_silent(self, *, new_connections: bool = False) -> None:
        """Half-open: the current sessions keep their sockets but answer nothing, ever.

        With `new_connections` new ones are accepted and stay silent too (no banner).
        """
        for session in self._sessions:
            session.silent = True
        self._silent_new = new_connections

    def send_malformed(self, kind: str = "all") -> None:
        """Write malformed bytes (see `MALFORMED`) to every logged-in session."""
        kinds = list(MALFORMED) if kind == "all" else [kind]
        data = b"".join(MALFORMED[k] for k in kinds)
        for session in self._sessions:
            if session.authenticated:
                session.send(data)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every logged-in session."""
        for session in self._sessions:
            if session.authenticated:
                session.send(data)

    def _reboot(self) -> None:
        now = self.clock()
        self.boot_time = self.reload_time = now
        self.callers.clear()
        self.channels.clear()
        self.manager_legs.clear()
        self.device_status.clear()
        self.processed_calls = 0
        for queue in self.queues.values():
            queue.callers.clear()
            queue.reset_statistics()
            queue.members = {k: m for k, m in queue.members.items() if not m.dynamic}
            for member in queue.members.values():
                member.paused, member.reason_paused = False, ""
                member.calls = member.last_call = member.last_pause = 0
                member.in_call = False
                member.penalty = member.configured_penalty
                member.login_time = int(now)

    # -- events --------------------------------------------------------------------
    def _event(self, name: str, privilege: str, fields: list[tuple[str, str]], *, timestamp: bool = True) -> bytes:
        headers = [("Event", name), ("Privilege", f"{privilege},all")]
        if timestamp:
            headers.append(("Timestamp", _fmt_ts(self.clock())))
        return Message(tuple(headers + fields)).encode()

    def _broadcast(self, name: str, privilege: str, fields: list[tuple[str, str]]) -> None:
        data = self._event(name, privilege, fields)
        for session in list(self._sessions):
            if session.wants(privilege) and not session.silent:
                session.deliver_event(data)

    def emit(self, name: str, fields: Iterable[tuple[str, str]] | dict[str, str], privilege: str = "user") -> None:
        """Send any event to the logged-in sessions (for tests and demos)."""
        pairs = list(fields.items()) if isinstance(fields, dict) else list(fields)
        self._broadcast(name, privilege, [(k, str(v)) for k, v in pairs])

    def _security(self, session: _Session, name: str, severity: str, version: int,
                  account: str, extra: list[tuple[str, str]], session_tv: float | None) -> None:
        now = self.clock()
        fields = [("EventTV", _fmt_tv(now)), ("Severity", severity), ("Service", "AMI"),
                  ("EventVersion", str(version)), ("AccountID", account), ("SessionID", session.id),
                  ("LocalAddress", session.local), ("RemoteAddress", session.remote),
                  *extra, ("SessionTV", _fmt_tv(session_tv))]
        self._broadcast(name, "security", fields)

    def _channel_fields(self, channel: SimChannel, prefix: str = "") -> list[tuple[str, str]]:
        state_desc = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}.get(channel.state, "Unknown")
        fields = [
            ("Channel", channel.name),
            ("ChannelState", str(channel.state)),
            ("ChannelStateDesc", state_desc),
            ("CallerIDNum", channel.cid_num or "<unknown>"),
            ("CallerIDName", channel.cid_name or "<unknown>"),
            ("ConnectedLineNum", channel.connected_num or "<unknown>"),
            ("ConnectedLineName", channel.connected_name or "<unknown>"),
            ("Language", channel.language),
            ("AccountCode", channel.accountcode),
            ("Context", channel.context),
            ("Exten", channel.exten),
            ("Priority", str(channel.priority)),
            ("Uniqueid", channel.uniqueid),
            ("Linkedid", channel.linkedid),
        ]
        fields += [("ChanVariable", f"{name}={channel.variables.get(name, '')}") for name in self.channelvars]
        return [(prefix + key, value) for key, value in fields]

    def _member_fields(self, queue: SimQueue, member: SimMember) -> list[tuple[str, str]]:
        return [
            ("Queue", queue.name),
            ("MemberName", member.name),
            ("Interface", member.interface),
            ("StateInterface", member.state_interface),
            ("Membership", "dynamic" if member.dynamic else "static"),
            ("Penalty", str(member.penalty)),
            ("CallsTaken", str(member.calls)),
            ("LastCall", str(member.last_call)),
            ("LastPause", str(member.last_pause)),
            ("LoginTime", str(member.login_time)),
            ("InCall", "1" if member.in_call else "0"),
            ("Status", str(self.status_of(member))),
            ("Paused", "1" if member.paused else "0"),
            ("PausedReason", member.reason_paused),
            ("Ringinuse", str(member.ringinuse)),
            ("Wrapuptime", str(member.wrapuptime)),
        ]

    def _member_event(self, name: str, queue: SimQueue, member: SimMember) -> None:
        self._broadcast(name, "agent", self._member_fields(queue, member))

    def _devstate(self, device: str, state: str) -> None:
        self._broadcast("DeviceStateChange", "call", [("Device", device), ("State", state)])

    # -- model: queues and members ----------------------------------------------------
    def add_queue(self, name: str, *, strategy: str = "ringall", servicelevel: int = 0,
                  weight: int = 0, maxlen: int = 0) -> SimQueue:
        queue = SimQueue(name, strategy, servicelevel, weight, maxlen)
        self.queues[name] = queue
        return queue

    def queue(self, name: str) -> SimQueue:
        for queue in self.queues.values():
            if queue.name.lower() == name.lower():
                return queue
        raise KeyError(f"no queue {name!r}")

    def status_of(self, member: SimMember) -> int:
        return self.device_status.get(member.state_interface, NOT_INUSE)

    def members_of(self, interface: str) -> list[tuple[SimQueue, SimMember]]:
        return [(q, q.members[interface]) for q in self.queues.values() if interface in q.members]

    def add_member(self, queue: str, interface: str, name: str | None = None, *, penalty: int = 0,
                   paused: bool = False, reason: str = "", static: bool = False,
                   state_interface: str | None = None) -> SimMember:
        """A queue member: `static` as from queues.conf (no event), else as QueueAdd does."""
        target = self.queue(queue)
        if interface in target.members:
            raise ValueError(f"{interface} is already in {queue}")
        now = int(self.clock())
        member = SimMember(interface, name or interface, state_interface or interface, penalty=penalty,
                           paused=paused, reason_paused=reason if paused else "", dynamic=not static,
                           last_pause=now if paused else 0, login_time=int(self.boot_time) if static else now,
                           configured_penalty=penalty)
        before = self._available(target)
        target.members[interface] = member
        if not static:
            self._devstate(f"Queue:{target.name}_pause_{interface}", "INUSE" if paused else "NOT_INUSE")
            self._avail_changed(target, before)
            self._member_event("QueueMemberAdded", target, member)
        return member

    def remove_member(self, queue: str, interface: str) -> None:
        target = self.queue(queue)
        member = target.members.pop(interface)
        self._member_event("QueueMemberRemoved", target, member)

    def pause_member(self, interface: str, paused: bool, reason: str = "", queue: str | None = None) -> int:
        """QueuePause: in `queue` or in every queue; returns how many memberships changed."""
        found = [(q, m) for q, m in self.members_of(interface) if queue is None or q.name.lower() == queue.lower()]
        for target, member in found:
            before = self._available(target)
            was = member.paused
            member.paused = paused
            if paused:
                member.last_pause = int(self.clock())
            member.reason_paused = reason if paused and reason else ""
            if was != paused:
                self._devstate(f"Queue:{target.name}_pause_{interface}", "INUSE" if paused else "NOT_INUSE")
            self._avail_changed(target, before)
            self._member_event("QueueMemberPause", target, member)
        return len(found)

    def set_penalty(self, interface: str, penalty: int, queue: str | None = None) -> int:
        found = [(q, m) for q, m in self.members_of(interface) if queue is None or q.name.lower() == queue.lower()]
        for target, member in found:
            member.penalty = penalty
            self._member_event("QueueMemberPenalty", target, member)
        return len(found)

    def set_device_state(self, interface: str, status: int, *, always: bool = False) -> None:
        """The member's device changed (1 free, 2 in use, 3 busy, 5 unavailable, 6 ringing, 8 on hold)."""
        affected = [(q, m) for q in self.queues.values() for m in q.members.values() if m.state_interface == interface]
        before = {q.name: self._available(q) for q, _ in affected}
        old = self.device_status.get(interface, NOT_INUSE)
        self.device_status[interface] = status
        if old == status and not always:
            return
        for target, member in affected:
            self._member_event("QueueMemberStatus", target, member)
        for target, _ in affected:
            self._avail_changed(target, before[target.name])

    def _available(self, queue: SimQueue) -> bool:
        return any(not m.paused and self.status_of(m) not in (INVALID, UNAVAILABLE) for m in queue.members.values())

    def _avail_changed(self, queue: SimQueue, before: bool) -> None:
        after = self._available(queue)
        if after != before:
            self._devstate(f"Queue:{queue.name}_avail", "NOT_INUSE" if after else "INUSE")

    # -- model: callers ---------------------------------------------------------------
    def place_caller(
        self,
        queue: str,
        uniqueid: str | None = None,
        linkedid: str | None = None,
        callerid: str = "",
        variables: dict[str, str] | None = None,
        *,
        priority: int = 0,
        channel: str | None = None,
        context: str = "from-test-queue",
        exten: str = "200",
        dialplan_priority: int = 6,
    ) -> SimCaller:
        """A call enters `queue` (QueueCallerJoin).  Higher `priority` (QUEUE_PRIO) waits ahead.

        The channel `uniqueid` names when it is up already (`incoming_call`, a manager who did not
        answer, an earlier queue), with `variables` added; else a new one (`incoming_call`'s arguments)."""
        target = self.queue(queue)
        if uniqueid is not None and uniqueid in self.callers:
            raise ValueError(f"caller {uniqueid} is already in a queue")
        chan = self.channels.get(uniqueid) if uniqueid is not None else None
        if chan is None:
            chan = self.incoming_call(uniqueid, linkedid, callerid, variables, channel=channel, context=context,
                                      exten=exten, dialplan_priority=dialplan_priority)
        elif variables:
            chan.variables.update(variables)
        uniqueid = chan.uniqueid
        index = len(target.callers)
        for i, other in enumerate(target.callers):
            if priority > other.priority:
                index = i
                break
        caller = SimCaller(chan, target.name, priority, self.clock(), index + 1)
        target.callers.insert(index, caller)
        self.callers[uniqueid] = caller
        self.processed_calls += 1
        self._broadcast("QueueCallerJoin", "agent", self._channel_fields(chan) + [
            ("Queue", target.name), ("Position", str(index + 1)), ("Count", str(len(target.callers)))])
        return caller

    def incoming_call(
        self,
        uniqueid: str | None = None,
        linkedid: str | None = None,
        callerid: str = "",
        variables: dict[str, str] | None = None,
        *,
        channel: str | None = None,
        context: str = "from-test-queue",
        exten: str = "200",
        dialplan_priority: int = 6,
    ) -> SimChannel:
        """A caller channel that is up (after the IVR: `variables` are what it set), in no queue yet."""
        seq = next(self._seq)
        uniqueid = uniqueid or f"{int(self.clock())}.{seq}"
        if uniqueid in self.channels:
            raise ValueError(f"channel {uniqueid} is already up")
        name, number = parse_callerid(callerid)
        chan = SimChannel(
            channel or f"Local/{exten}@{context}-{seq:08x};2", uniqueid, linkedid or uniqueid,
            cid_num=number, cid_name=name, connected_num=number, connected_name=name,
            context=context, exten=exten, priority=dialplan_priority, variables=dict(variables or {}),
        )
        self.channels[uniqueid] = chan
        return chan

    def _channel(self, uniqueid: str) -> SimChannel:
        chan = self.channels.get(uniqueid)
        if chan is None:
            raise KeyError(f"no caller channel {uniqueid}")
        return chan

    def _dial_event(self, caller: SimChannel, dest: SimChannel, *, dial_string: str | None = None,
                    status: str | None = None, name: str = "DialEnd") -> None:
        """DialBegin (with the `dial_string`) or, with a `status`, DialEnd (or DialState): caller and
        Dest* fields."""
        fields = self._channel_fields(caller) + self._channel_fields(dest, "Dest")
        if status is None:
            self._broadcast("DialBegin", "call", fields + [("DialString", dial_string or "")])
        else:
            self._broadcast(name, "call", fields + [("DialStatus", status)])

    def _hangup(self, chan: SimChannel, cause: int = 16) -> None:
        """A channel is gone (the caller's, or a manager's leg): its Hangup, as manager_channels.c writes it."""
        self.channels.pop(chan.uniqueid, None)
        self.manager_legs.pop(chan.uniqueid, None)
        self._broadcast("Hangup", "call", self._channel_fields(chan) + [
            ("Cause", str(cause)), ("Cause-txt", HANGUP_CAUSES.get(cause, "Unknown"))])

    def _bridge_fields(self, bridge: str, prefix: str = "", channels: int = 2) -> list[tuple[str, str]]:
        """A basic two-party bridge's snapshot, as manager_bridges.c writes it."""
        return [(prefix + key, value) for key, value in (
            ("BridgeUniqueid", bridge), ("BridgeType", "basic"), ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", "<unknown>"), ("BridgeName", "<unknown>"), ("BridgeNumChannels", str(channels)),
            ("BridgeVideoSourceMode", "none"))]

    def _new_leg(self, interface: str, caller: SimChannel, state: int = 0) -> SimChannel:
        """An outgoing channel to `interface` for `caller` (named as Asterisk names it)."""
        seq = next(self._seq)
        local = re.match(r"^Local/[^@]+@(?P<context>[^/]+)", interface, re.IGNORECASE)
        return SimChannel(
            f"{interface}-{seq:08x};1" if local else f"{interface}-{seq:08x}",
            f"{int(self.clock())}.{seq}", caller.linkedid,
            cid_num=caller.cid_num, cid_name=caller.cid_name,
            connected_num=caller.cid_num, connected_name=caller.cid_name,
            context=local["context"] if local else "default", exten=caller.exten, priority=1, state=state,
        )

    # -- model: around the queue ----------------------------------------------------------
    def ring_manager(self, uniqueid: str, interface: str) -> SimChannel:
        """The dialplan's ``Dial(${IVR_MANAGER},...)`` rings the personal manager (app_dial's DialBegin:
        DialString is the resource, without the technology)."""
        caller = self._channel(uniqueid)
        if uniqueid in self.callers or uniqueid in self.manager_legs:
            raise ValueError(f"caller {uniqueid} is in a queue or dialling already")
        leg = self._new_leg(interface, caller)
        self.manager_legs[uniqueid] = leg
        self._dial_event(caller, leg, dial_string=interface.partition("/")[2] or interface)
        leg.state = 5
        return leg

    def manager_answers(self, uniqueid: str) -> SimChannel:
        """The manager answers (DialEnd ANSWER); the call goes on until `caller_hangs_up`."""
        caller, leg = self._channel(uniqueid), self.manager_legs.get(uniqueid)
        if leg is None or leg.state == 6:
            raise ValueError(f"no manager ringing for {uniqueid}")
        leg.state = 6
        self._dial_event(caller, leg, status="ANSWER")
        return leg

    def manager_hangs_up(self, uniqueid: str, cause: int = 16) -> None:
        """The manager who answered hangs up (their channel's Hangup); the caller goes on in the dialplan
        (``Dial(...,g)``: the survey) until `caller_hangs_up`."""
        leg = self.manager_legs.get(uniqueid)
        if leg is None or leg.state != 6:
            raise ValueError(f"no manager talking to {uniqueid}")
        del self.manager_legs[uniqueid]
        self._hangup(leg, cause)

    def manager_no_answer(self, uniqueid: str, status: str = "NOANSWER") -> None:
        """The manager's Dial ends unanswered (DialEnd NOANSWER, BUSY, CHANUNAVAIL...): on to the queue."""
        caller, leg = self._channel(uniqueid), self.manager_legs.pop(uniqueid, None)
        if leg is None or leg.state == 6:
            raise ValueError(f"no manager ringing for {uniqueid}")
        self._dial_event(caller, leg, status=status)

    def caller_times_out(self, uniqueid: str) -> None:
        """The caller leaves the queue with nobody answering (its Queue() timeout: QueueCallerLeave, no
        abandon); the channel goes on in the dialplan (the next queue, voicemail, goodbye)."""
        caller, queue = self._caller(uniqueid)
        if caller.agent is not None:
            raise ValueError(f"caller {uniqueid} is connected")
        position = queue.callers.index(caller) + 1
        queue.callers.remove(caller)
        del self.callers[uniqueid]
        self._stop_ringing(caller)
        self._broadcast("QueueCallerLeave", "agent", self._channel_fields(caller.channel) + [
            ("Queue", queue.name), ("Position", str(position)), ("Count", str(len(queue.callers)))])

    def _stop_ringing(self, caller: SimCaller) -> None:
        for attempt in caller.ringing.values():
            self._dial_event(caller.channel, attempt.channel, status="CANCEL")
            self.set_device_state(attempt.member.state_interface, NOT_INUSE)
        caller.ringing = {}

    def blind_transfer(self, uniqueid: str, exten: str, context: str = "from-agents", *,
                       external: bool = False) -> None:
        """The agent transfers the caller to `exten`@`context` without consulting (BlindTransfer, then
        AgentComplete Reason transfer); the caller goes on there."""
        caller, _queue = self._caller(uniqueid)
        attempt = caller.agent
        if attempt is None:
            raise ValueError(f"caller {uniqueid} is not connected to an agent")
        self._broadcast("BlindTransfer", "call", [("Result", "Success")]
                        + self._channel_fields(attempt.channel, "Transferer")
                        + self._channel_fields(caller.channel, "Transferee")
                        + self._bridge_fields(caller.bridge)
                        + [("IsExternal", "Yes" if external else "No"), ("Context", context), ("Extension", exten)])
        self.complete_call(uniqueid, reason="transfer")
        caller.channel.context, caller.channel.exten, caller.channel.priority = context, exten, 1

    def attended_transfer(self, uniqueid: str, target: str, *, external: bool = False) -> SimChannel:
        """The agent calls `target` (an interface), talks, and joins the caller to it: AttendedTransfer
        (DestType Bridge: the caller's bridge survives), then AgentComplete Reason transfer; the
        caller talks to the target until `caller_hangs_up`.  Returns the target's channel."""
        caller, _queue = self._caller(uniqueid)
        attempt = caller.agent
        if attempt is None:
            raise ValueError(f"caller {uniqueid} is not connected to an agent")
        second = self._new_leg(attempt.member.interface, caller.channel, state=6)  # the agent's consultation call
        target_leg = self._new_leg(target, caller.channel, state=6)
        consultation = str(uuid.UUID(int=next(self._seq)))
        self._broadcast("AttendedTransfer", "call", [("Result", "Success")]
                        + self._channel_fields(attempt.channel, "OrigTransferer")
                        + self._bridge_fields(caller.bridge, "Orig")
                        + self._channel_fields(second, "SecondTransferer")
                        + self._bridge_fields(consultation, "Second")
                        + self._channel_fields(caller.channel, "Transferee")
                        + self._channel_fields(target_leg, "TransferTarget")
                        + [("IsExternal", "Yes" if external else "No"), ("DestType", "Bridge"),
                           ("DestBridgeUniqueid", caller.bridge)])
        self.complete_call(uniqueid, reason="transfer")
        return target_leg

    def _caller(self, uniqueid: str) -> tuple[SimCaller, SimQueue]:
        caller = self.callers.get(uniqueid)
        if caller is None:
            raise KeyError(f"no caller {uniqueid} in any queue")
        return caller, self.queue(caller.queue)

    def _agent_fields(self, caller: SimCaller, attempt: SimAttempt) -> list[tuple[str, str]]:
        return (self._channel_fields(caller.channel) + self._channel_fields(attempt.channel, "Dest")
                + [("Queue", caller.queue), ("Interface", attempt.member.interface),
                   ("MemberName", attempt.member.name)])

    def _ring_status(self, member: SimMember) -> int:
        # A Local channel's device is "in use" as soon as it exists (the traces
        # show Status 2 while Local members ring); a phone shows "ringing".
        return INUSE if member.state_interface.lower().startswith("local/") else RINGING

    def _start_attempt(self, caller: SimCaller, queue: SimQueue, interface: str) -> SimAttempt:
        member = queue.members.get(interface)
        if member is None:
            raise KeyError(f"{interface} is not a member of {queue.name}")
        if interface in caller.ringing:
            raise ValueError(f"{interface} is already ringing for {caller.uniqueid}")
        chan = self._new_leg(interface, caller.channel)
        attempt = SimAttempt(member, chan, self.clock())
        caller.ringing[interface] = attempt
        self._broadcast("AgentCalled", "agent", self._agent_fields(caller, attempt))
        self._dial_event(caller.channel, chan, dial_string=interface)  # app_queue: the whole interface
        return attempt

    def ring_agent(self, uniqueid: str, interface: str) -> SimAttempt:
        """app_queue rings a member for the caller (AgentCalled, then the member's device state)."""
        caller, queue = self._caller(uniqueid)
        if caller.agent is not None:
            raise ValueError(f"caller {uniqueid} is already connected")
        attempt = self._start_attempt(caller, queue, interface)
        attempt.channel.state = 5  # Down in AgentCalled, Ringing from then on (as recorded)
        self._dial_event(caller.channel, attempt.channel, status="RINGING", name="DialState")
        self.set_device_state(attempt.member.state_interface, self._ring_status(attempt.member))
        return attempt

    def agent_no_answer(self, uniqueid: str, interface: str, ring_time_ms: int | None = None) -> None:
        """The member did not answer in time (AgentRingNoAnswer, RingTime in ms)."""
        caller, _queue = self._caller(uniqueid)
        attempt = caller.ringing.pop(interface, None)
        if attempt is None:
            raise KeyError(f"{interface} is not ringing for {uniqueid}")
        ring_ms = ring_time_ms if ring_time_ms is not None else int(round((self.clock() - attempt.started) * 1000))
        self._broadcast("AgentRingNoAnswer", "agent", self._agent_fields(caller, attempt) + [("RingTime", str(ring_ms))])
        self._dial_event(caller.channel, attempt.channel, status="NOANSWER")
        self._dial_event(caller.channel, attempt.channel, status="CANCEL")  # app_queue hangs the leg up (recorded)
        self.set_device_state(attempt.member.state_interface, NOT_INUSE)

    def agent_answers(self, uniqueid: str, interface: str) -> SimAttempt:
        """The member answers (rung first if it was not): QueueCallerLeave, AgentConnect, member status."""
        caller, queue = self._caller(uniqueid)
        if caller.agent is not None:
            raise ValueError(f"caller {uniqueid} is already connected")
        attempt = caller.ringing.pop(interface, None) or self._start_attempt(caller, queue, interface)
        caller.ringing.pop(interface, None)
        others, caller.ringing = caller.ringing, {}
        now = self.clock()
        position = queue.callers.index(caller) + 1
        queue.callers.remove(caller)
        attempt.channel.state = 6
        self._dial_event(caller.channel, attempt.channel, status="ANSWER")
        for other in others.values():
            self._dial_event(caller.channel, other.channel, status="CANCEL")
        self._broadcast("QueueCallerLeave", "agent", self._channel_fields(caller.channel) + [
            ("Queue", queue.name), ("Position", str(position)), ("Count", str(len(queue.callers)))])
        caller.agent, caller.connected_at = attempt, now
        caller.bridge = str(uuid.UUID(int=next(self._seq)))
        holdtime = int(now - caller.joined)
        self._broadcast("AgentConnect", "agent", self._agent_fields(caller, attempt) + [
            ("HoldTime", str(holdtime)), ("RingTime", str(int(now - attempt.started)))])
        if queue.completed + queue.abandoned == 0:
            queue.holdtime = holdtime
        else:
            queue.holdtime = (queue.holdtime * 3 + holdtime) >> 2
        attempt.member.in_call = True
        self.set_device_state(attempt.member.state_interface, INUSE, always=True)
        for other in others.values():  # ringall: the others stop ringing
            self.set_device_state(other.member.state_interface, NOT_INUSE)
        return attempt

    def caller_hangs_up(self, uniqueid: str, cause: int = 16) -> None:
        """The caller hangs up: abandoned while waiting, the end of a connected call, or wherever else its
        channel is (talking to the manager or a transfer's target, after the queue); then its Hangup."""
        if uniqueid not in self.callers:
            chan, leg = self._channel(uniqueid), self.manager_legs.get(uniqueid)
            if leg is not None and leg.state != 6:  # hung up while the manager's phone rang
                self._dial_event(chan, leg, status="CANCEL")
            self._hangup(chan, cause)
            if leg is not None and leg.state == 6:  # hung up on the manager: their channel goes too
                self._hangup(leg, cause)
            return
        caller, queue = self._caller(uniqueid)
        if caller.agent is not None:
            self.complete_call(uniqueid, reason="caller", cause=cause)
            return
        now = self.clock()
        position = queue.callers.index(caller) + 1
        holdtime = int(now - caller.joined)
        self._broadcast("QueueCallerAbandon", "agent", self._channel_fields(caller.channel) + [
            ("Queue", queue.name), ("Position", str(position)),
            ("OriginalPosition", str(caller.original_position)), ("HoldTime", str(holdtime))])
        queue.abandoned += 1
        if holdtime <= queue.servicelevel:
            queue.abandoned_in_sl += 1
        queue.callers.remove(caller)
        del self.callers[uniqueid]
        self._broadcast("QueueCallerLeave", "agent", self._channel_fields(caller.channel) + [
            ("Queue", queue.name), ("Position", str(position)), ("Count", str(len(queue.callers)))])
        self._stop_ringing(caller)
        self._hangup(caller.channel, cause)

    def complete_call(self, uniqueid: str, reason: str = "caller", cause: int = 16) -> None:
        """A connected call ends (AgentComplete; Reason ``caller``, ``agent`` or ``transfer``), and the
        caller channel with it (its Hangup), unless it was transferred."""
        caller, queue = self._caller(uniqueid)
        attempt = caller.agent
        if attempt is None:
            raise ValueError(f"caller {uniqueid} is not connected to an agent")
        now = self.clock()
        holdtime = int(caller.connected_at - caller.joined)
        talktime = int(now - caller.connected_at)
        self._broadcast("AgentComplete", "agent", self._agent_fields(caller, attempt) + [
            ("HoldTime", str(holdtime)), ("TalkTime", str(talktime)), ("Reason", reason)])
        del self.callers[uniqueid]
        member = attempt.member
        member.calls += 1
        member.last_call = int(now)
        member.in_call = False
        queue.completed += 1
        if holdtime <= queue.servicelevel:
            queue.completed_in_sl += 1
        queue.talktime = talktime if queue.completed == 1 else (queue.talktime * 3 + talktime) >> 2
        self.set_device_state(member.state_interface, NOT_INUSE, always=True)
        if reason != "transfer":
            self._hangup(caller.channel, cause)

    # -- actions ------------------------------------------------------------------------
    async def _handle_action(self, session: _Session, m: Message) -> bool:
        """Answer one action; False closes the session."""
        if "line too long" in m.junk:
            session.send(self._response(m, "Error", "Failed to parse message: line too long"))
            return True
        if "too many lines" in m.junk:
            session.send(self._response(m, "Error", "Too many lines in message or allocation failure"))
            return True
        action = (m.get("Action") or "").strip()
        if not action:
            session.send(self._response(m, "Error", "Missing action in request"))
            return True
        name = action.lower()
        if not session.authenticated and name not in ("login", "logoff", "challenge"):
            self._security(session, "RequestNotAllowed", "Error", 1, "",
                           [("RequestType", f"Action: {action}")], None)
            session.send(self._response(m, "Error", "Permission denied"))
            return True
        handler = getattr(self, f"_action_{name}", None)
        if handler is None:
            session.send(self._response(m, "Error", f"Invalid/unknown command: {action}. "
                                                    "Use Action: ListCommands to show available commands."))
            return True
        return await handler(session, m)

    @staticmethod
    def _response(m: Message, response: str, message: str | None, *, listflag: str | None = None,
                  extra: Iterable[tuple[str, str]] = ()) -> bytes:
        headers = [("Response", response)]
        action_id = m.get("ActionID")
        if action_id:
            headers.append(("ActionID", action_id))
        if listflag:
            headers.append(("EventList", listflag))
        if message is not None:
            headers.append(("Message", message))
        headers.extend(extra)
        return Message(tuple(headers)).encode()

    @staticmethod
    def _list_item(m: Message, name: str, fields: list[tuple[str, str]]) -> bytes:
        action_id = m.get("ActionID")
        tail = [("ActionID", action_id)] if action_id else []
        return Message(tuple([("Event", name)] + fields + tail)).encode()

    @staticmethod
    def _list_complete(m: Message, name: str, count: int) -> bytes:
        action_id = m.get("ActionID")
        headers = [("Event", name)] + ([("ActionID", action_id)] if action_id else [])
        return Message(tuple(headers + [("EventList", "Complete"), ("ListItems", str(count))])).encode()

    async def _action_login(self, session: _Session, m: Message) -> bool:
        if session.authenticated:
            session.send(self._response(m, "Success", "Already authenticated"))
            return True
        username = m.get("Username") or ""
        if username.lower() != self.username.lower() or m.get("Secret") != self.secret:
            self._security(session, "InvalidPassword", "Error", 2, username, [], None)
            await asyncio.sleep(self.auth_delay)
            session.send(self._response(m, "Error", "Authentication failed"))
            return False
        session.authenticated = True
        session.username = username
        session.started = self.clock()
        events = (m.get("Events") or "on").strip().lower()
        if events in _TRUE or events == "all":
            session.classes = frozenset(_EVENT_CLASSES)
        elif events in _FALSE:
            session.classes = frozenset()
        else:
            session.classes = frozenset(c.strip() for c in events.split(",")) & _EVENT_CLASSES
        data = self._response(m, "Success", "Authentication accepted")
        if "system" in session.classes:
            now = self.clock()
            data += Message.of(("Event", "FullyBooted"), ("Privilege", "system,all"),
                               ("Uptime", str(int(now - self.boot_time))),
                               ("LastReload", str(int(now - self.reload_time))),
                               ("Status", "Fully Booted")).encode()
        session.send(data)
        self._security(session, "SuccessfulAuth", "Informational", 1, username,
                       [("UsingPassword", "0")], session.started)
        return True

    async def _action_logoff(self, session: _Session, m: Message) -> bool:
        session.send(self._response(m, "Goodbye", "Thanks for all the fish."))
        return False

    async def _action_ping(self, session: _Session, m: Message) -> bool:
        session.send(self._response(m, "Success", None, extra=[("Ping", "Pong"), ("Timestamp", _fmt_ts(self.clock()))]))
        return True

    async def _action_corestatus(self, session: _Session, m: Message) -> bool:
        boot, reload = time.localtime(self.boot_time), time.localtime(self.reload_time)
        session.send(self._response(m, "Success", None, extra=[
            ("CoreStartupDate", time.strftime("%Y-%m-%d", boot)),
            ("CoreStartupTime", time.strftime("%H:%M:%S", boot)),
            ("CoreReloadDate", time.strftime("%Y-%m-%d", reload)),
            ("CoreReloadTime", time.strftime("%H:%M:%S", reload)),
            ("CoreCurrentCalls", str(len(self.callers))),
            ("CoreProcessedCalls", str(self.processed_calls)),
        ]))
        return True

    async def _action_command(self, session: _Session, m: Message) -> bool:
        command = (m.get("Command") or "").strip()
        if not command:
            session.send(self._response(m, "Error", "No command provided"))
            return True
        if command.lower() == "core show version":
            lines, response = [f"Asterisk {ASTERISK_VERSION} (simulated manager)"], "Success"
        elif command.lower() == "queue show":
            lines, response = self._queue_show(), "Success"
        else:
            lines = [f"No such command '{command}' (type 'core show help {command}' for other possible commands)"]
            response = "Error"
        session.send(self._response(m, response, "Command output follows", extra=[("Output", line) for line in lines]))
        return True

    def _queue_show(self) -> list[str]:
        lines: list[str] = []
        for queue in self.queues.values():
            lines.append(f"{queue.name} has {len(queue.callers)} calls (max unlimited) in '{queue.strategy}' strategy "
                         f"({queue.holdtime}s holdtime, {queue.talktime}s talktime), W:{queue.weight}, "
                         f"C:{queue.completed}, A:{queue.abandoned}, SL:0.0%, SL2:0.0% within {queue.servicelevel}s")
            lines.append("   Members: " if queue.members else "   No Members")
            for member in queue.members.values():
                lines.append(f"      {member.name} ({member.interface}) with penalty {member.penalty}"
                             + (" (paused)" if member.paused else "") + f" has taken {member.calls} calls")
            lines.append("   Callers: " if queue.callers else "   No Callers")
            lines.append("")
        return lines

    async def _action_queuestatus(self, session: _Session, m: Message) -> bool:
        queue_filter = (m.get("Queue") or "").lower()
        member_filter = m.get("Member") or ""
        now = self.clock()
        out = [self._response(m, "Success", "Queue status will follow", listflag="start")]
        items = 0
        for queue in self.queues.values():
            if queue_filter and queue.name.lower() != queue_filter:
                continue
            sl = 100.0 * queue.completed_in_sl / queue.completed if queue.completed else 0.0
            done = queue.completed + queue.abandoned
            sl2 = 100.0 * (queue.abandoned_in_sl + queue.completed_in_sl) / done if done else 0.0
            out.append(self._list_item(m, "QueueParams", [
                ("Queue", queue.name), ("Max", str(queue.maxlen)), ("Strategy", queue.strategy),
                ("Calls", str(len(queue.callers))), ("Holdtime", str(queue.holdtime)),
                ("TalkTime", str(queue.talktime)), ("Completed", str(queue.completed)),
                ("Abandoned", str(queue.abandoned)), ("ServiceLevel", str(queue.servicelevel)),
                ("ServicelevelPerf", f"{sl:.1f}"), ("ServicelevelPerf2", f"{sl2:.1f}"),
                ("Weight", str(queue.weight))]))
            items += 1
            for member in queue.members.values():
                if member_filter and member_filter not in (member.interface, member.name):
                    continue
                out.append(self._list_item(m, "QueueMember", [
                    ("Queue", queue.name), ("Name", member.name), ("Location", member.interface),
                    ("StateInterface", member.state_interface),
                    ("Membership", "dynamic" if member.dynamic else "static"),
                    ("Penalty", str(member.penalty)), ("CallsTaken", str(member.calls)),
                    ("LastCall", str(member.last_call)), ("LastPause", str(member.last_pause)),
                    ("LoginTime", str(member.login_time)), ("InCall", "1" if member.in_call else "0"),
                    ("Status", str(self.status_of(member))), ("Paused", "1" if member.paused else "0"),
                    ("PausedReason", member.reason_paused), ("Wrapuptime", str(member.wrapuptime))]))
                items += 1
            for position, caller in enumerate(queue.callers, 1):
                chan = caller.channel
                out.append(self._list_item(m, "QueueEntry", [
                    ("Queue", queue.name), ("Position", str(position)), ("Channel", chan.name),
                    ("Uniqueid", chan.uniqueid), ("CallerIDNum", chan.cid_num or "unknown"),
                    ("CallerIDName", chan.cid_name or "unknown"),
                    ("ConnectedLineNum", chan.connected_num or "unknown"),
                    ("ConnectedLineName", chan.connected_name or "unknown"),
                    ("Wait", str(int(now - caller.joined))), ("Priority", str(caller.priority))]))
                items += 1
        out.append(self._list_complete(m, "QueueStatusComplete", items))
        session.send(out[0])
        session.send(b"".join(out[1:]))
        return True

    async def _action_queuesummary(self, session: _Session, m: Message) -> bool:
        queue_filter = (m.get("Queue") or "").lower()
        now = self.clock()
        out = [self._response(m, "Success", "Queue summary will follow", listflag="start")]
        count = 0
        for queue in self.queues.values():
            if queue_filter and queue.name.lower() != queue_filter:
                continue
            statuses = [(self.status_of(mem), mem.paused) for mem in queue.members.values()]
            logged_in = sum(1 for status, _ in statuses if status not in (UNAVAILABLE, INVALID))
            available = sum(1 for status, paused in statuses if status in (NOT_INUSE, UNKNOWN) and not paused)
            longest = max((int(now - c.joined) for c in queue.callers), default=0)
            out.append(self._list_item(m, "QueueSummary", [
                ("Queue", queue.name), ("LoggedIn", str(logged_in)), ("Available", str(available)),
                ("Callers", str(len(queue.callers))), ("HoldTime", str(queue.holdtime)),
                ("TalkTime", str(queue.talktime)), ("LongestHoldTime", str(longest))]))
            count += 1
        out.append(self._list_complete(m, "QueueSummaryComplete", count))
        session.send(out[0])
        session.send(b"".join(out[1:]))
        return True

    async def _action_queueadd(self, session: _Session, m: Message) -> bool:
        queue_name, interface = m.get("Queue") or "", m.get("Interface") or ""
        if not queue_name:
            session.send(self._response(m, "Error", "'Queue' not specified."))
            return True
        if not interface:
            session.send(self._response(m, "Error", "'Interface' not specified."))
            return True
        try:
            queue = self.queue(queue_name)
        except KeyError:
            session.send(self._response(m, "Error", "Unable to add interface to queue: No such queue"))
            return True
        if interface in queue.members:
            session.send(self._response(m, "Error", "Unable to add interface: Already there"))
            return True
        try:
            penalty = max(0, int(m.get("Penalty") or 0))
        except ValueError:
            penalty = 0
        paused = is_true(m.get("Paused"))
        self.add_member(queue.name, interface, m.get("MemberName") or None, penalty=penalty, paused=paused,
                        reason=m.get("Reason") or "", state_interface=m.get("StateInterface") or None)
        session.send(self._response(m, "Success", "Added interface to queue"))
        return True

    async def _action_queueremove(self, session: _Session, m: Message) -> bool:
        queue_name, interface = m.get("Queue") or "", m.get("Interface") or ""
        if not queue_name or not interface:
            session.send(self._response(m, "Error", "Need 'Queue' and 'Interface' parameters."))
            return True
        try:
            queue = self.queue(queue_name)
        except KeyError:
            session.send(self._response(m, "Error", "Unable to remove interface from queue: No such queue"))
            return True
        member = queue.members.get(interface)
        if member is None:
            session.send(self._response(m, "Error", "Unable to remove interface: Not there"))
            return True
        if not member.dynamic:
            session.send(self._response(m, "Error", "Member not dynamic"))
            return True
        self.remove_member(queue.name, interface)
        session.send(self._response(m, "Success", "Removed interface from queue"))
        return True

    async def _action_queuepause(self, session: _Session, m: Message) -> bool:
        interface, paused_text = m.get("Interface") or "", m.get("Paused") or ""
        if not interface or not paused_text:
            session.send(self._response(m, "Error", "Need 'Interface' and 'Paused' parameters."))
            return True
        paused = is_true(paused_text)
        if not self.pause_member(interface, paused, m.get("Reason") or "", m.get("Queue") or None):
            session.send(self._response(m, "Error", "Interface not found"))
            return True
        message = "Interface paused successfully" if paused else "Interface unpaused successfully"
        session.send(self._response(m, "Success", message))
        return True

    async def _action_queuepenalty(self, session: _Session, m: Message) -> bool:
        interface, penalty_text = m.get("Interface") or "", m.get("Penalty") or ""
        if not interface or not penalty_text:
            session.send(self._response(m, "Error", "Need 'Interface' and 'Penalty' parameters."))
            return True
        try:
            penalty = int(penalty_text)
        except ValueError:
            penalty = 0
        if penalty < 0 or not self.set_penalty(interface, penalty, m.get("Queue") or None):
            session.send(self._response(m, "Error", "Invalid interface, queuename or penalty"))
            return True
        session.send(self._response(m, "Success", "Interface penalty set successfully"))
        return True
