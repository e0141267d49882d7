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
caller's Uniqueid): ``queue`` on QueueCallerJoin; ``answered_at``,
``wait_seconds`` (HoldTime), ``agent_id`` (from Interface) and ``queue`` on
AgentConnect; ``talk_seconds`` and ``ended_at`` on AgentComplete;
``wait_seconds`` and ``ended_at`` with ``answered_at`` left NULL on
QueueCallerAbandon.  Updates are merged per call and written in batches by
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
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ivr.agents.hub import WALLBOARD, Hub
from ivr.asterisk.ami import AmiError, Message
from ivr.asterisk.ami_client import AmiClient
from ivr.agents.screenpop import ScreenPop
from ivr.call.records import RecordUpdates
from queues.events import MAX_DURATION, AmiEvent, Handlers
from queues.state import QueueState
from queues.stats import QueueStatistics
from queues.variables import CALL_ID

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
# What a handler says: the columns to set, the columns to fill where NULL, the member whose agent it was.
_Outcome = tuple[dict[str, Any], dict[str, Any], str | None]


@_outcomes("QueueCallerJoin")
def _joined(event: AmiEvent, at: dt.datetime) -> _Outcome:
    return {}, {}, None


@_outcomes("AgentConnect")
def _answered(event: AmiEvent, at: dt.datetime) -> _Outcome:
    return _waited(event, {"answered_at": at}), {}, event.member()


@_outcomes("AgentComplete")
def _completed(event: AmiEvent, at: dt.datetime) -> _Outcome:
    values: dict[str, Any] = {"ended_at": at}
    fill = _waited(event, {})
    talk = _seconds(event, "TalkTime")
    if talk is not None:
        values["talk_seconds"] = talk
        fill["answered_at"] = at - dt.timedelta(seconds=talk)  # its AgentConnect was missed
    return values, fill, event.member()


@_outcomes("QueueCallerAbandon")
def _abandoned(event: AmiEvent, at: dt.datetime) -> _Outcome:
    return _waited(event, {"ended_at": at}), {}, None


def _waited(event: AmiEvent, columns: dict[str, Any]) -> dict[str, Any]:
    """`columns` with ``wait_seconds``: the event's HoldTime, when it has a usable one."""
    hold = _seconds(event, "HoldTime")
    if hold is not None:
        columns["wait_seconds"] = hold
    return columns


def _seconds(event: AmiEvent, name: str) -> float | None:
    return event.number(name, low=0.0, high=MAX_DURATION)


class QueueOutcomes(RecordUpdates):
    """The call records' queue outcomes, from AMI events (see the module docstring)."""

    EVENTS = _outcomes.events  # the events `note` records; everything else is ignored
    WHAT = "queue outcomes"

    def note(self, event: AmiEvent) -> None:
        outcome = _outcomes.get(event.name)
        if outcome is None:
            return
        call_id = event.variables.get(CALL_ID)
        uid = event.header("Uniqueid")
        if not call_id and not uid:
            return
        at = _utc(event.at(self._clock))
        queue = event.header("Queue") or None
        values, fill, interface = outcome(event, at)
        if queue:
            values["queue"] = queue
        self.change(call_id=call_id, uniqueid=uid, values=values, fill=fill, interface=interface)


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
