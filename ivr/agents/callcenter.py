"""The AMI listener: queue events into live state, statistics, screen-pops, wallboard and call records.

::

    ami = AmiClient(host, port, user, secret)
    center = CallCenter(ami, db, contexts, hub, queue_state=QueueState(), queue_stats=QueueStatistics(),
                        screenpop=ScreenPop(contexts, hub, AgentDirectory(db)))
    await center.start()      # statistics from call records, handlers, then the AMI connection
    ...
    await center.stop()

One synchronous handler sees every AMI event once, reads it into one
`queues.events.AmiEvent` and hands that to `QueueState`, `QueueStatistics`,
the `ScreenPop` (which queues it and returns), the call-record updater and
the wallboard; none of them waits on I/O, so the AMI dispatcher never stalls
on a database, Redis or a browser.  Each of them lists the events it handles
beside its handlers (its ``EVENTS``); the listener reads only the events in
their union, and the rest (VarSet storms, Newexten...) stop at one set lookup.

After every (re)connection a ``QueueStatus`` resync rebuilds `QueueState`
(``begin_resync`` / ``end_resync``; live events keep flowing meanwhile and
go to both states), retried a few times if Asterisk does not answer in
time; then cards of calls Asterisk no longer knows are ended.

The wallboard (topic ``wallboard``) gets a snapshot of the queues and the
statistics at most once per `wallboard_interval` while something changes,
sooner after an important event (a caller joining or abandoning, an agent
answering, a member paused or logged in or out) but never more often than
once per `wallboard_min_gap`; and at least every `wallboard_idle` seconds,
so a page opened on another node is never blank for long.

Call records are updated as the call goes (by ``IVR_CALL_ID``, else by the
caller's Uniqueid): how it ended (``result``: answered, manager, transferred,
abandoned, unanswered), the queue, wait, agent, talk time and end, from the
queue events, the personal manager's Dial, the transfer events and the
caller channel's Hangup (every call ends: `QueueOutcomes` says which event
writes what).  Updates are merged per call and written in batches by
a background task (an `ivr.call.records.RecordUpdates`); the record itself
may not be there yet (the FastAGI side inserts in batches too), so an update
that matches no row is retried for `record_max_age` seconds.  A database
outage only delays them; an update the database refuses
(`ivr.call.records.is_refused_row`) is dropped with a log line, and the
others are written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from caller_id.models import CallRecord
from ivr.agents.hub import WALLBOARD, Hub
from ivr.asterisk.ami import AmiError, Message
from ivr.asterisk.ami_client import AmiClient
from ivr.agents.screenpop import ScreenPop
from ivr.call.records import RecordUpdates
from queues.events import MAX_DURATION, AmiEvent, Handlers
from queues.state import QueueState
from queues.stats import QueueStatistics
from queues.variables import CALL_ID, MANAGER

log = logging.getLogger(__name__)

__all__ = ["CallCenter", "QueueOutcomes", "ami_event", "wallboard"]

# Events after which the wallboard is sent soon rather than at the next interval.
_IMPORTANT = frozenset({
    "QueueCallerJoin", "QueueCallerAbandon", "AgentConnect", "AgentComplete", "QueueMemberAdded",
    "QueueMemberRemoved", "QueueMemberPause", "QueueMemberPaused",
})


def ami_event(message: Message | Mapping[str, Any] | AmiEvent) -> AmiEvent:
    """The `AmiEvent` of an AMI message (or of a mapping of header to value: replays, tests)."""
    if isinstance(message, AmiEvent):
        return message
    if isinstance(message, Message):
        return AmiEvent.from_headers(message.headers)
    return AmiEvent.of(message)


# --------------------------------------------------------------------------
# call records
# --------------------------------------------------------------------------


_outcomes = Handlers()  # QueueOutcomes' handlers, by the events whose outcome they record

TRANSFER_LENGTH = CallRecord.__table__.c.transferred_to.type.length
MAX_TRACKED = 10_000  # manager dials, answered manager calls and queued calls followed at once, each at most
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]+(;[12])?$")  # "PJSIP/1001-0000001a", "Local/100@agents-0000000c;1"


@dataclass(slots=True)
class _Change:
    """What a handler says: the record (by call id, else by the caller's Uniqueid), the columns to set,
    the columns to fill where NULL, and the member (or manager) whose agent it was."""

    call_id: str | None
    uniqueid: str | None
    values: dict[str, Any] = field(default_factory=dict)
    fill: dict[str, Any] = field(default_factory=dict)
    interface: str | None = None


@dataclass(slots=True)
class _ManagerDial:
    call_id: str
    uniqueid: str | None
    interface: str  # the manager's, as IVR_MANAGER names it
    began: float  # epoch


def _caller(event: AmiEvent, **columns: Any) -> _Change:
    """A change to the record of the event's caller channel (its IVR_CALL_ID, else its Uniqueid)."""
    return _Change(event.variables.get(CALL_ID), event.header("Uniqueid"), **columns)


def _waited(event: AmiEvent, columns: dict[str, Any]) -> dict[str, Any]:
    """`columns` with ``wait_seconds``: the event's HoldTime, when it has a usable one."""
    hold = _seconds(event, "HoldTime")
    if hold is not None:
        columns["wait_seconds"] = hold
    return columns


def _seconds(event: AmiEvent, name: str) -> float | None:
    return event.number(name, low=0.0, high=MAX_DURATION)


def _interface(channel: str | None) -> str | None:
    """The interface a channel was dialled as: its name without Asterisk's sequence suffix."""
    return _CHANNEL_SUFFIX.sub("", channel) if channel else None


def _bounded(text: str | None, event: AmiEvent) -> str | None:
    if text and len(text) > TRANSFER_LENGTH:
        log.warning("AMI %s: a transfer target of %d characters is longer than the record keeps (%d); "
                    "left out", event.name, len(text), TRANSFER_LENGTH)
        return None
    return text or None


def _manager_targets(dial_string: str) -> dict[str, str]:
    """What app_dial's DialBegin names as DialString (the part after ``tech/``) for each interface
    of an IVR_MANAGER dial string (``PJSIP/1001``, or several joined by ``&``) -> that interface."""
    targets = {}
    for interface in dial_string.split("&"):
        _tech, slash, resource = interface.strip().partition("/")
        if slash and resource:
            targets[resource] = interface.strip()
    return targets


class QueueOutcomes(RecordUpdates):
    """How each call went after the IVR, from AMI events, into its call record.

    The columns each event writes (values set, ``fill`` only where NULL):

    =====================  =========================================================================
    QueueCallerJoin        queue
    AgentConnect           result answered, answered_at, wait_seconds (HoldTime), agent_id
                           (Interface), queue (a call transferred into a queue and answered there
                           reads as answered by that agent)
    AgentComplete          talk_seconds, ended_at (fill answered_at, wait_seconds); Reason transfer:
                           result transferred and no ended_at (the caller talks on)
    QueueCallerAbandon     result abandoned, wait_seconds, ended_at
    DialBegin / DialEnd    the personal manager's Dial (see below): result manager, answered_at,
                           wait_seconds (the ringing), agent_id (the manager's interface)
    BlindTransfer          result transferred, transferred_to ``extension@context``
    AttendedTransfer       result transferred, transferred_to: the target's interface (or the
                           application it ran)
    QueueCallerLeave       (nothing written: the time in the queue is counted)
    Hangup                 of the caller channel (one with IVR_CALL_ID): fill ended_at, fill result
                           unanswered (it left the queues with nobody answering) and fill
                           wait_seconds (its time in the queues); talk_seconds of an answered
                           manager call
    =====================  =========================================================================

    The dialplan rings the manager (``Dial(${IVR_MANAGER},...)``) before the queue; app_queue
    dials its members from the same caller channel.  The events tell them apart by DialString:
    app_dial's DialBegin names the dialled resource without its technology (``1001`` for
    ``PJSIP/1001``), app_queue's the member's whole interface, so a manager who is also a queue
    member is still told apart.  The caller channel carries IVR_MANAGER (manager.conf
    channelvars); DialEnd names no DialString, so the manager's leg is followed by its
    DestUniqueid from DialBegin to DialEnd, and an answered manager call until the caller's
    Hangup; and a queued call's time in the queues until it is answered, abandoned or hung up
    (each bounded by `MAX_TRACKED`, the oldest forgotten).
    """

    WHAT = "queue outcomes"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._dials: OrderedDict[str, _ManagerDial] = OrderedDict()  # the manager leg's Uniqueid -> its dial
        self._manager_calls: OrderedDict[str, float] = OrderedDict()  # call id -> when the manager answered
        # the answered manager leg's Uniqueid -> its call (id, caller's Uniqueid): its Hangup ends the call
        self._manager_legs: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        # call id -> (when it joined the queue it is in, or None; seconds in earlier queues), until an
        # agent answers, it abandons or hangs up
        self._queued: OrderedDict[str, tuple[float | None, float]] = OrderedDict()

    def note(self, event: AmiEvent) -> None:
        handler = _outcomes.get(event.name)
        if handler is None:
            return
        change = handler(self, event, _utc(event.at(self._clock)))
        if change is None or not (change.call_id or change.uniqueid):
            return
        queue = event.header("Queue")
        if queue:
            change.values["queue"] = queue
        self.change(call_id=change.call_id, uniqueid=change.uniqueid, values=change.values, fill=change.fill,
                    interface=change.interface)

    # -- queue events -----------------------------------------------------------------
    @_outcomes("QueueCallerJoin")
    def _joined(self, event: AmiEvent, at: dt.datetime) -> _Change:
        call_id = event.variables.get(CALL_ID)
        if call_id:
            _remember(self._queued, call_id, (at.timestamp(), self._queued.get(call_id, (None, 0.0))[1]))
        return _caller(event)

    @_outcomes("QueueCallerLeave")
    def _left(self, event: AmiEvent, at: dt.datetime) -> None:
        queued = self._queued.get(event.variables.get(CALL_ID) or "")
        if queued is not None and queued[0] is not None:
            self._queued[event.variables[CALL_ID]] = (None, queued[1] + max(0.0, at.timestamp() - queued[0]))
        return None

    @_outcomes("AgentConnect")
    def _answered(self, event: AmiEvent, at: dt.datetime) -> _Change:
        self._queued.pop(event.variables.get(CALL_ID) or "", None)
        return _caller(event, values=_waited(event, {"answered_at": at, "result": "answered"}),
                       interface=event.member())

    @_outcomes("AgentComplete")
    def _completed(self, event: AmiEvent, at: dt.datetime) -> _Change:
        transferred = (event.header("Reason") or "").lower() == "transfer"
        values: dict[str, Any] = {"result": "transferred"} if transferred else {"ended_at": at}
        fill = _waited(event, {})
        talk = _seconds(event, "TalkTime")
        if talk is not None:
            values["talk_seconds"] = talk
            fill["answered_at"] = at - dt.timedelta(seconds=talk)  # its AgentConnect was missed
        return _caller(event, values=values, fill=fill, interface=event.member())

    @_outcomes("QueueCallerAbandon")
    def _abandoned(self, event: AmiEvent, at: dt.datetime) -> _Change:
        self._queued.pop(event.variables.get(CALL_ID) or "", None)
        return _caller(event, values=_waited(event, {"ended_at": at, "result": "abandoned"}))

    # -- the personal manager ---------------------------------------------------------------
    @_outcomes("DialBegin")
    def _dial_began(self, event: AmiEvent, at: dt.datetime) -> None:
        call_id, manager = event.variables.get(CALL_ID), event.variables.get(MANAGER)
        leg = event.header("DestUniqueid")
        if not (call_id and manager and leg):
            return None
        interface = _manager_targets(manager).get(event.header("DialString") or "")
        if interface is not None:
            _remember(self._dials, leg, _ManagerDial(call_id, event.header("Uniqueid"), interface, at.timestamp()))
        return None

    @_outcomes("DialEnd")
    def _dial_ended(self, event: AmiEvent, at: dt.datetime) -> _Change | None:
        dial = self._dials.pop(event.header("DestUniqueid") or "", None)
        if dial is None or (event.header("DialStatus") or "").upper() != "ANSWER":
            return None  # not the manager's, or not answered: the queue comes next
        _remember(self._manager_calls, dial.call_id, at.timestamp())
        _remember(self._manager_legs, event.header("DestUniqueid") or "", (dial.call_id, dial.uniqueid))
        return _Change(dial.call_id, dial.uniqueid, interface=dial.interface, values={
            "result": "manager", "answered_at": at, "wait_seconds": max(0.0, at.timestamp() - dial.began)})

    # -- transfers ---------------------------------------------------------------------------
    @_outcomes("BlindTransfer", "AttendedTransfer")
    def _transferred(self, event: AmiEvent, at: dt.datetime) -> _Change | None:
        if (event.header("Result") or "").lower() != "success":
            return None
        call_id, uniqueid = event.party("Transferee").get(CALL_ID), event.header("TransfereeUniqueid")
        if call_id is None:  # the caller may be another party of the event (one who transferred)
            other = next((v[CALL_ID] for v in event.party_variables.values() if CALL_ID in v), None)
            if other is not None:
                call_id, uniqueid = other, None
        if event.name == "BlindTransfer":
            exten, context = event.header("Extension"), event.header("Context")
            target = f"{exten}@{context}" if exten and context else exten
        else:
            target = _interface(event.header("TransferTargetChannel")) or event.header("DestApp")
        # The personal manager who passes the caller on stays the one who took the call (result manager):
        # "transferred" is a queue agent's, and counts as answered by the queue in the reports.
        values: dict[str, Any] = {} if call_id in self._manager_calls else {"result": "transferred"}
        target = _bounded(target, event)
        if target:
            values["transferred_to"] = target
        return _Change(call_id, uniqueid, values=values)

    # -- the end -----------------------------------------------------------------------------
    @_outcomes("Hangup")
    def _hung_up(self, event: AmiEvent, at: dt.datetime) -> _Change | None:
        leg = self._manager_legs.pop(event.header("Uniqueid") or "", None)
        if leg is not None:  # the manager hung up: the call is over for the company (the survey may follow)
            return self._manager_done(*leg, at)
        call_id = event.variables.get(CALL_ID)
        if not call_id:
            return None  # not a caller channel: agents' legs, Local halves, transfer targets
        if call_id in self._manager_calls:  # the caller hung up on the manager
            return self._manager_done(call_id, event.header("Uniqueid"), at)
        queued = self._queued.pop(call_id, None)
        # Every call ends; one that reached no queue and no person hung up on the way (the manager's
        # phone ringing, the announcement, before Queue()), one that left the queues unanswered did not.
        change = _caller(event, fill={"ended_at": at, "result": "unanswered" if queued is not None else "ivr_hangup"})
        if queued is not None:  # queued, and nobody answered: its wait is all its time in the queues
            joined, total = queued
            change.fill["wait_seconds"] = min(MAX_DURATION, total + (at.timestamp() - joined if joined else 0.0))
        return change

    def _manager_done(self, call_id: str, uniqueid: str | None, at: dt.datetime) -> _Change | None:
        """The call the personal manager answered ends now: its talk time and end (once)."""
        answered = self._manager_calls.pop(call_id, None)
        if answered is None:
            return None  # ended already (the other side hung up first)
        return _Change(call_id, uniqueid, values={
            "ended_at": at, "talk_seconds": min(MAX_DURATION, max(0.0, at.timestamp() - answered))})

    EVENTS = _outcomes.events  # the events `note` records (their handlers are above); the rest is ignored


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


# --------------------------------------------------------------------------
# the call center
# --------------------------------------------------------------------------


class CallCenter:
    """AMI events to queue state, statistics, screen-pops, wallboard and call records.

    ami                 the `AmiClient` (started by `start()` when not connected yet)
    db                  `caller_id.store.Database`: statistics rebuild, call records
    contexts, hub       the call contexts and the message hub
    queue_state         `QueueState`
    queue_stats         `QueueStatistics`
    screenpop           `ScreenPop`
    wallboard_interval  at most one wallboard snapshot per this many seconds while things change
    wallboard_min_gap   important events send sooner, but not more often than this
    wallboard_idle      a snapshot at least this often even when nothing changes
    resync_timeout      seconds QueueStatus may take
    agents              interface -> agent id for call records (default: the screen-pop's)
    """

    def __init__(
        self,
        ami: AmiClient,
        db: Any,
        contexts: Any,
        hub: Hub,
        *,
        queue_state: QueueState,
        queue_stats: QueueStatistics,
        screenpop: ScreenPop,
        wallboard_interval: float = 1.0,
        wallboard_min_gap: float | None = None,
        wallboard_idle: float | None = None,
        resync_timeout: float = 10.0,
        resync_attempts: int = 3,
        rebuild_timeout: float = 30.0,
        agents: Callable[[str], Any] | None = None,
        record_interval: float = 0.2,
        record_max_age: float = 120.0,
        clock: Callable[[], float] = time.time,
    ):
        self.ami = ami
        self.db = db
        self.contexts = contexts
        self.hub = hub
        self.queue_state = queue_state
        self.queue_stats = queue_stats
        self.screenpop = screenpop
        self.wallboard_interval = wallboard_interval
        self.wallboard_min_gap = (min(0.25, wallboard_interval / 4) if wallboard_min_gap is None
                                  else wallboard_min_gap)
        self.wallboard_idle = wallboard_idle if wallboard_idle is not None else max(5.0, wallboard_interval)
        self.resync_timeout = resync_timeout
        self.resync_attempts = resync_attempts
        self.rebuild_timeout = rebuild_timeout
        self._clock = clock
        resolver = agents if agents is not None else getattr(screenpop, "agents", None)
        self.records = QueueOutcomes(db, resolver, interval=record_interval, max_age=record_max_age, clock=clock)
        # The events anything here handles: only these are read.
        self._events = QueueState.EVENTS | QueueStatistics.EVENTS | QueueOutcomes.EVENTS | ScreenPop.EVENTS
        self._previous_hook: Any = None
        self._started = False
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_ids = itertools.count(1)
        self._wallboard_task: asyncio.Task[None] | None = None
        self._wallboard_wake = asyncio.Event()
        self._dirty = False
        self._urgent = False
        self._last_wallboard = -float("inf")  # monotonic
        self.stats: dict[str, int] = {
            "events": 0, "errors": 0, "resyncs": 0, "resync_failures": 0, "wallboards": 0,
            "reconciled": 0,
        }

    # -- life cycle ------------------------------------------------------------
    async def start(self, *, connect: bool = True) -> None:
        """Statistics from call records, then handlers, then (with `connect`) the AMI connection."""
        if self._started:
            return
        self._started = True
        try:
            async with asyncio.timeout(self.rebuild_timeout):
                counted = await self.queue_stats.rebuild(self.db)
            log.info("queue statistics rebuilt from %d call records", counted)
        except Exception as exc:  # noqa: BLE001 - live figures start from zero instead
            log.error("queue statistics: rebuild from call records failed (%s); counting from now", exc)
        reload = getattr(getattr(self.screenpop, "agents", None), "reload", None)
        if reload is not None:
            await reload()
        self.ami.on_event("*", self._on_event)
        self._previous_hook = self.ami.on_connected
        self.ami.on_connected = self._on_connected
        self.records.start()
        self._wallboard_task = asyncio.get_running_loop().create_task(self._wallboard_loop(), name="wallboard")
        if self.ami.connected:
            self._begin_resync()
        elif connect:
            self.ami.start()

    async def stop(self) -> None:
        """Stop listening and flush the call records (the AMI client, hub and db stay open)."""
        if not self._started:
            return
        self._started = False
        self.ami.remove_handler("*", self._on_event)
        if self.ami.on_connected == self._on_connected:
            self.ami.on_connected = self._previous_hook
        for task in (self._resync_task, self._wallboard_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._resync_task, self._wallboard_task) if t is not None),
                             return_exceptions=True)
        self._resync_task = self._wallboard_task = None
        if self.queue_state.resyncing:
            self.queue_state.abort_resync()
        await self.records.close()

    # -- events ------------------------------------------------------------------
    def _on_event(self, message: Message | Mapping[str, Any] | AmiEvent) -> None:
        """Every AMI event comes here once; nothing in it waits."""
        try:
            if isinstance(message, Message) and message.event not in self._events:
                return  # not read at all
            event = ami_event(message)
            if event.name not in self._events:
                return
        except Exception:  # noqa: BLE001
            self.stats["errors"] += 1
            log.exception("AMI listener: unreadable event")
            return
        self.stats["events"] += 1
        for step in (self.queue_state.apply, self.queue_stats.apply, self.screenpop.on_event, self.records.note):
            try:
                step(event)
            except Exception:  # noqa: BLE001 - the others still get the event
                self.stats["errors"] += 1
                log.exception("AMI listener: %s failed on a %s event", getattr(step, "__qualname__", step),
                              event.name)
        self._touch_wallboard(event.name in _IMPORTANT)

    def handle(self, event: Message | Mapping[str, Any] | AmiEvent) -> None:
        """Feed one event by hand (replays, tests): the same path as a live one."""
        self._on_event(event)

    # -- resync ------------------------------------------------------------------
    async def _on_connected(self, client: AmiClient) -> None:
        self._begin_resync()
        if self._previous_hook is not None:
            result = self._previous_hook(client)
            if inspect.isawaitable(result):
                await result

    def _begin_resync(self) -> None:
        if self._resync_task is not None and not self._resync_task.done():
            self._resync_task.cancel()
        self._resync_task = asyncio.get_running_loop().create_task(self._resync(), name="queue-resync")

    async def _resync(self) -> None:
        """QueueStatus into QueueState; live events flow meanwhile (to both states)."""
        for attempt in range(1, self.resync_attempts + 1):
            action_id = f"resync-{next(self._resync_ids)}-{uuid.uuid4().hex[:8]}"
            began = time.monotonic()
            self.queue_state.begin_resync(action_id=action_id)
            try:
                result = await self.ami.action({"Action": "QueueStatus", "ActionID": action_id},
                                               timeout=self.resync_timeout)
                if not result.ok:
                    raise AmiError(f"QueueStatus refused: {result.message}")
                for item in result.events:
                    self.queue_state.apply(ami_event(item))
                if result.complete is not None:
                    self.queue_state.apply(ami_event(result.complete))
                self.queue_state.end_resync()
            except asyncio.CancelledError:
                self.queue_state.abort_resync()
                raise
            except Exception as exc:  # noqa: BLE001 - AmiTimeout, lost connection ...
                self.queue_state.abort_resync()
                self.stats["resync_failures"] += 1
                if not self.ami.connected:
                    log.warning("queue resync: connection lost during QueueStatus (%s); next connect retries", exc)
                    return
                log.warning("queue resync: QueueStatus attempt %d of %d failed: %s",
                            attempt, self.resync_attempts, exc)
                await asyncio.sleep(min(1.0 * attempt, 5.0))
                continue
            self.stats["resyncs"] += 1
            ended = self._reconcile(began)
            log.info("queue resync: %d queues from QueueStatus (%d events)%s",
                     len(self.queue_state.queue_names()), len(result.events),
                     f"; {ended} cards of vanished calls ended" if ended else "")
            self._touch_wallboard(True)
            return
        log.error("queue resync: QueueStatus failed %d times; live state is built from events only",
                  self.resync_attempts)

    def _reconcile(self, began: float) -> int:
        reconcile = getattr(self.screenpop, "reconcile", None)
        if reconcile is None:
            return 0
        snapshot = self.queue_state.snapshot()
        active = {c["uniqueid"] for q in snapshot["queues"].values() for c in q["callers"]}
        active |= {c["uniqueid"] for c in snapshot["calls"]}
        ended = reconcile(active, before=began)
        self.stats["reconciled"] += ended
        return ended

    # -- wallboard -------------------------------------------------------------------

    def _touch_wallboard(self, important: bool) -> None:
        self._dirty = True
        if important:
            self._urgent = True
        if important or time.monotonic() - self._last_wallboard >= self.wallboard_interval:
            self._wallboard_wake.set()

    async def _wallboard_loop(self) -> None:
        while True:
            try:
                now = time.monotonic()
                since = now - self._last_wallboard
                if self._urgent:
                    wait = self.wallboard_min_gap - since
                elif self._dirty:
                    wait = self.wallboard_interval - since
                else:
                    wait = self.wallboard_idle - since
                if wait > 0:
                    self._wallboard_wake.clear()
                    try:
                        async with asyncio.timeout(wait):
                            await self._wallboard_wake.wait()
                    except TimeoutError:
                        pass
                    continue
                self._dirty = self._urgent = False
                self._last_wallboard = time.monotonic()
                await self.hub.publish(WALLBOARD, wallboard(self.queue_state, self.queue_stats, self.ami,
                                                            self._clock()))
                self.stats["wallboards"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next snapshot tries again
                self.stats["errors"] += 1
                log.exception("wallboard: snapshot failed")
                await asyncio.sleep(self.wallboard_interval)


def wallboard(queue_state: QueueState, queue_stats: QueueStatistics, ami: AmiClient | None,
              at: float) -> dict[str, Any]:
    """The wallboard message (topic ``wallboard``): the queues, the statistics and the AMI connection.

    `ami` is None when no AMI host is configured: the connection then reads as
    not connected, "AMI not configured".
    """
    if ami is None:
        link: dict[str, Any] = {"connected": False, "since": None, "last_error": "AMI not configured"}
    else:
        state = ami.state
        link = {"connected": state.connected, "since": state.since, "last_error": state.last_error}
    return {"type": "wallboard", "at": at, "queues": queue_state.snapshot(), "stats": queue_stats.snapshot(),
            "ami": link}
