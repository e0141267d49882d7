"""Service statistics per queue and per customer segment, over a sliding window.

`QueueStatistics.apply(event)` takes the same AMI events as `QueueState`
(`queues.events.AmiEvent`) and counts, per queue and per customer
segment, the calls offered, answered and abandoned, their waits, talk and
handle times, over the last `window` seconds (24 h by default, or 60 min,
or anything else): figures slide continuously, there is no reset at
midnight.  Counts live in one bucket per `bucket_seconds` (a minute) with
running totals, so recording a call and reading the figures cost the same
at ten calls an hour or ten thousand; the window's far edge moves a bucket
at a time, so it spans between `window - bucket_seconds` and `window`.

What counts, and when (event time: the ``Timestamp`` header, else `clock()`):

- *answered*: AgentConnect, at its time; the wait is its ``HoldTime``
  (whole seconds, as Asterisk measures it), else the time since the
  caller's QueueCallerJoin.
- *abandoned*: QueueCallerAbandon (``HoldTime``, ``Position``,
  ``OriginalPosition``), and also a caller who leaves the queue without an
  agent: QueueCallerLeave with no AgentConnect after it.  Asterisk sends the
  Leave just *before* the Connect of an answered call, so a Leave waits
  `leave_grace` seconds for its Connect; the caller's Hangup, a
  ``QUEUESTATUS`` VarSet (``TIMEOUT``, ``LEAVEEMPTY``...; Queue() returned;
  or `queue_result()` when the dialplan reports it) or a join to another
  queue settles it at once.  ``reason`` says which:
  ``abandon`` (the caller hung up), ``timeout``, ``leaveempty``,
  ``leaveunavail``, ``withdraw``, or ``left`` (left without an agent, the
  reason not seen).  Every reason but ``abandon`` also counts in
  ``timeouts``.
- *offered* = answered + abandoned: the calls whose wait in the queue ended
  inside the window.  Callers still waiting are in `QueueState`, not here.
- *completed*: AgentComplete, at its time, with ``TalkTime``.

Figures (None when there is nothing to divide by; times in seconds)::

    service_level  = answered_within_T / (answered + abandoned - abandoned_within_T)
                     "within T" means wait <= T, T = the queue's service-level
                     threshold (20 s unless configured); callers who abandon
                     within T are left out of it, as Asterisk's own
                     ServicelevelPerf2 does (ServicelevelPerf counts them
                     against you).
    abandon_rate   = abandoned / offered
    average_wait   = (sum of waits of answered and abandoned) / offered
    average_answer_wait (ASA)  = sum of waits of answered / answered
    average_abandon_wait       = sum of waits of abandoned / abandoned
    longest_wait   = the longest wait among the offered calls
    average_talk   = sum of TalkTime / completed
    average_handle = (sum of TalkTime + after-call work) / completed, where the
                     after-call work of a call is its member's ``Wrapuptime``
                     (from QueueMember* events) when set, else the queue's
                     `wrapup_seconds` (0 unless configured)

A call counts once per queue: duplicates, a Leave after its Abandon, a
Connect replayed after a reconnection, are recognised by (queue, Uniqueid).
Each call is classified against the threshold in force when it is
recorded; `rebuild` reclassifies everything with the current thresholds.

The segment of a call is its ``IVR_SEGMENT`` channel variable if Asterisk
sends one, else `segment_of(call_id)` with the ``IVR_CALL_ID`` channel
variable; calls without one count under ``"unknown"``.

`rebuild(db, since)` recomputes the figures from the ``call_records`` table
after a restart.  The reports over any period ("learn and measure") are
`queues.reports`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import or_, select

from caller_id.models import CallRecord
from caller_id.store import as_utc
from queues.events import MAX_DURATION, AmiEvent, Handlers
from queues.state import masked_number
from queues.variables import CALL_ID, SEGMENT

log = logging.getLogger(__name__)

__all__ = ["UNKNOWN_SEGMENT", "QueueStatistics"]

UNKNOWN_SEGMENT = "unknown"
DEFAULT_SERVICE_LEVEL = 20.0
# How long a finished call is remembered to recognise its duplicates, and how
# long a join or an answered call may wait for its outcome or its end.
DEDUPE_SECONDS = 3600.0
OPEN_CALL_SECONDS = 86400.0
# QUEUESTATUS values that mean the caller left the queue without an agent.
_LEFT_STATUSES = {"TIMEOUT", "LEAVEEMPTY", "LEAVEUNAVAIL", "WITHDRAW"}
_PRUNE_EVERY = 1000
# In `rebuild`, how long before `since` a call may have started and still end inside the window.
REBUILD_LOOKBACK = dt.timedelta(hours=12)

_ALL = None  # the "every queue" / "every segment" key


@dataclass(slots=True)
class _Counts:
    answered: int = 0
    answered_in_sl: int = 0
    abandoned: int = 0
    abandoned_in_sl: int = 0
    timeouts: int = 0
    wait_answered_ms: int = 0
    wait_abandoned_ms: int = 0
    completed: int = 0
    talk_ms: int = 0
    handle_ms: int = 0
    longest_wait_ms: int = 0  # within one bucket; not summed

    def add(self, other: _Counts, sign: int = 1) -> None:
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + sign * getattr(other, name))


_SUMMED = tuple(f.name for f in fields(_Counts) if f.name != "longest_wait_ms")


@dataclass(slots=True)
class _Joined:
    at: float
    call_id: str | None
    segment: str
    number: str
    position: int | None


@dataclass(slots=True)
class _Answered:
    at: float
    segment: str
    interface: str | None
    hold_time: float | None


_handles = Handlers()  # QueueStatistics' handlers, by the events they count


class QueueStatistics:
    """Sliding-window queue figures per queue and per segment (see the module doc).

    window                 seconds (or a timedelta) the figures cover
    service_level_seconds  the threshold T: one number for every queue, or a
                           mapping queue -> seconds whose ``"*"`` entry (else 20)
                           is the default
    wrapup_seconds         after-call work added to the talk time for the
                           handle time, likewise a number or a mapping
    clock                  epoch seconds now (time.time); tests pass their own
    bucket_seconds         resolution of the sliding window
    segment_of             call id -> segment or None; cheap and non-blocking
    leave_grace            seconds a QueueCallerLeave waits for its AgentConnect
    max_abandoned_listed   how many abandoned calls the list keeps at most
    """

    def __init__(
        self,
        window: float | dt.timedelta = 86400.0,
        service_level_seconds: float | Mapping[str, float] = DEFAULT_SERVICE_LEVEL,
        *,
        wrapup_seconds: float | Mapping[str, float] = 0.0,
        clock: Callable[[], float] = time.time,
        bucket_seconds: float = 60.0,
        segment_of: Callable[[str], str | None] | None = None,
        leave_grace: float = 5.0,
        max_abandoned_listed: int = 10_000,
    ):
        seconds = window.total_seconds() if isinstance(window, dt.timedelta) else float(window)
        if not seconds > 0 or not bucket_seconds > 0:
            raise ValueError("window and bucket_seconds must be positive")
        self.window = seconds
        self.bucket_seconds = float(bucket_seconds)
        self._span = max(1, math.ceil(seconds / self.bucket_seconds))  # buckets in the window
        self._service_levels, self._default_service_level = _per_queue(service_level_seconds,
                                                                       DEFAULT_SERVICE_LEVEL)
        self._wrapups, self._default_wrapup = _per_queue(wrapup_seconds, 0.0)
        self._clock = clock
        self._segment_of = segment_of
        self.leave_grace = leave_grace
        self._max_listed = max_abandoned_listed
        self.counters: dict[str, int] = {
            "events": 0, "used": 0, "ignored": 0, "duplicates": 0, "late": 0, "bad": 0, "errors": 0,
        }
        self._latest = 0.0
        self._member_wrapup: dict[tuple[str, str], float] = {}
        self._reset()

    def _reset(self) -> None:
        self._buckets: dict[int, dict[tuple[str, str], _Counts]] = {}
        self._totals: dict[tuple[str | None, str | None], _Counts] = {}
        self._longest: dict[tuple[str | None, str | None], int] = {}  # cache, filled on demand
        self._expired_upto: int | None = None  # every bucket <= this one is gone
        self._abandoned: deque[dict[str, Any]] = deque()
        self._abandoned_by_uid: dict[str, tuple[dict[str, Any], int, tuple[str, str]]] = {}
        self._joins: dict[tuple[str, str], _Joined] = {}
        # Leave seen, Connect awaited: (leave time, position, our clock when the Leave arrived)
        self._pending: dict[tuple[str, str], tuple[float, int | None, float]] = {}
        self._answered: dict[tuple[str, str], _Answered] = {}
        self._done: dict[tuple[str, str], float] = {}       # outcome counted
        self._completed: dict[tuple[str, str], float] = {}  # talk counted

    # -- configuration -------------------------------------------------------
    def service_level_for(self, queue: str) -> float:
        return self._service_levels.get(queue, self._default_service_level)

    def set_service_level(self, queue: str, seconds: float) -> None:
        """Change a queue's threshold T; calls recorded from now on use it."""
        self._service_levels[queue] = float(seconds)

    def _wrapup_for(self, queue: str, interface: str | None) -> float:
        if interface is not None:
            member = self._member_wrapup.get((queue, interface))
            if member:
                return member
        return self._wrapups.get(queue, self._default_wrapup)

    # -- recording -----------------------------------------------------------
    def record_answered(self, queue: str, *, at: float, wait: float | None, segment: str | None = None) -> bool:
        """Count one answered call; False when `at` is already outside the window."""
        wait_ms = _ms(wait)
        within = wait_ms <= self.service_level_for(queue) * 1000

        def update(c: _Counts) -> None:
            c.answered += 1
            c.answered_in_sl += within
            c.wait_answered_ms += wait_ms

        return self._record(queue, segment, at, update, wait_ms) is not None

    def record_abandoned(
        self, queue: str, *, at: float, wait: float | None, segment: str | None = None,
        position: int | None = None, original_position: int | None = None, number: str | None = None,
        reason: str = "abandon", call_id: str | None = None, uniqueid: str | None = None,
    ) -> bool:
        """Count one abandoned call and list it; False when `at` is already outside the window.

        `number` is masked before it is kept.
        """
        wait_ms = _ms(wait)
        within = wait_ms <= self.service_level_for(queue) * 1000
        timed_out = reason != "abandon"

        def update(c: _Counts) -> None:
            c.abandoned += 1
            c.abandoned_in_sl += within
            c.wait_abandoned_ms += wait_ms
            c.timeouts += timed_out

        index = self._record(queue, segment, at, update, wait_ms)
        if index is None:
            return False
        entry = {
            "at": at, "queue": queue, "segment": _segment_key(segment),
            "position": position, "original_position": original_position,
            "wait": wait_ms / 1000, "number": masked_number(number) if number else "unknown",
            "reason": reason, "call_id": call_id,
        }
        self._abandoned.append(entry)
        while len(self._abandoned) > self._max_listed:
            self._abandoned.popleft()
        if uniqueid:
            self._abandoned_by_uid[uniqueid] = (entry, index, (queue, _segment_key(segment)))
        return True

    def record_completed(
        self, queue: str, *, at: float, talk: float | None, segment: str | None = None,
        wrapup: float | None = None, interface: str | None = None,
    ) -> bool:
        """Count one finished conversation (talk time, handle time)."""
        talk_ms = _ms(talk)
        handle_ms = talk_ms + _ms(self._wrapup_for(queue, interface) if wrapup is None else wrapup)

        def update(c: _Counts) -> None:
            c.completed += 1
            c.talk_ms += talk_ms
            c.handle_ms += handle_ms

        return self._record(queue, segment, at, update, None) is not None

    def _record(self, queue: str, segment: str | None, at: float, update: Callable[[_Counts], None],
                wait_ms: int | None) -> int | None:
        self._expire(self._clock())
        index = math.floor(at / self.bucket_seconds)
        if self._expired_upto is not None and index <= self._expired_upto:
            self.counters["late"] += 1
            return None
        seg = _segment_key(segment)
        bucket = self._buckets.setdefault(index, {})
        counts = bucket.get((queue, seg))
        if counts is None:
            counts = bucket[(queue, seg)] = _Counts()
        update(counts)
        for key in ((queue, seg), (queue, _ALL), (_ALL, seg), (_ALL, _ALL)):
            total = self._totals.get(key)
            if total is None:
                total = self._totals[key] = _Counts()
            update(total)
            if wait_ms is not None and self._longest:
                self._longest[key] = max(self._longest.get(key, 0), wait_ms)
        if wait_ms is not None:
            counts.longest_wait_ms = max(counts.longest_wait_ms, wait_ms)
        return index

    def _expire(self, now: float) -> None:
        """Drop the buckets that slid out of the window ending at `now`."""
        cutoff = math.floor(now / self.bucket_seconds) - self._span
        if self._expired_upto is not None and cutoff <= self._expired_upto:
            return
        start = self._expired_upto
        self._expired_upto = cutoff
        if start is None or cutoff - start > len(self._buckets):
            gone = [index for index in self._buckets if index <= cutoff]
        else:
            gone = [index for index in range(start + 1, cutoff + 1) if index in self._buckets]
        for index in gone:
            for (queue, seg), counts in self._buckets.pop(index).items():
                for key in ((queue, seg), (queue, _ALL), (_ALL, seg), (_ALL, _ALL)):
                    self._totals[key].add(counts, -1)
        if gone:
            self._longest.clear()
        horizon = (cutoff + 1) * self.bucket_seconds
        while self._abandoned and self._abandoned[0]["at"] < horizon:
            self._abandoned.popleft()

    # -- AMI events ----------------------------------------------------------
    def apply(self, event: AmiEvent) -> bool:
        """Count what one AMI event says; True when it was used.  Never raises."""
        self.counters["events"] += 1
        try:
            if not isinstance(event, AmiEvent):
                raise ValueError("not an AMI event")
            handler = _handles.get(event.name)
            if handler is None:
                self.counters["ignored"] += 1
                used = False
            else:
                when = event.at(self._clock)
                self._latest = max(self._latest, when)
                used = handler(self, event, when)
                self.counters["used" if used else "duplicates" if used is False else "ignored"] += 1
            self._settle_pending()
            if self.counters["events"] % _PRUNE_EVERY == 0:
                self._prune()
            return bool(used)
        except (ValueError, KeyError) as exc:
            self.counters["bad"] += 1
            log.debug("queue statistics: bad event: %s", exc)
        except Exception:  # noqa: BLE001 - one odd event must not stop the listener
            self.counters["errors"] += 1
            log.exception("queue statistics: could not count an event")
        return False

    def apply_all(self, events: Iterable[AmiEvent]) -> None:
        for event in events:
            self.apply(event)

    # Handlers return True (used), False (a duplicate) or None (nothing to count).

    @_handles("QueueCallerJoin")
    def _on_join(self, event: AmiEvent, when: float) -> bool | None:
        queue, uid = event.required("Queue"), event.required("Uniqueid")
        for key in [k for k in self._pending if k[1] == uid and k[0] != queue]:
            self._settle(key, "left")  # moved on to another queue
        key = (queue, uid)
        done = self._done.get(key)
        if done is not None:
            if done >= when:
                return False
            del self._done[key]  # the same channel queues again: a new offer
        if key in self._joins:
            return False
        call_id, segment = self._identify(event)
        self._joins[key] = _Joined(
            at=when, call_id=call_id, segment=segment,
            number=event.header("CallerIDNum") or "", position=event.integer("Position", low=0),
        )
        return True

    @_handles("QueueCallerAbandon")
    def _on_abandon(self, event: AmiEvent, when: float) -> bool | None:
        queue, uid = event.required("Queue"), event.required("Uniqueid")
        key = (queue, uid)
        if key in self._done:
            return False
        hold = _duration(event, "HoldTime")
        position, original = event.integer("Position", low=0), event.integer("OriginalPosition", low=0)
        self._finish_abandoned(key, when, hold, position, original, "abandon", event)
        return True

    @_handles("QueueCallerLeave")
    def _on_leave(self, event: AmiEvent, when: float) -> bool | None:
        queue, uid = event.required("Queue"), event.required("Uniqueid")
        key = (queue, uid)
        if key in self._done:
            return None  # the Leave after an Abandon or a Connect: nothing new
        if key in self._pending:
            return False
        self._pending[key] = (when, event.integer("Position", low=0), self._clock())
        if key not in self._joins:
            call_id, segment = self._identify(event)
            self._joins[key] = _Joined(at=math.nan, call_id=call_id, segment=segment,
                                       number=event.header("CallerIDNum") or "", position=None)
        return True

    @_handles("AgentConnect")
    def _on_connect(self, event: AmiEvent, when: float) -> bool | None:
        queue, uid = event.required("Queue"), event.required("Uniqueid")
        key = (queue, uid)
        if key in self._done:
            return False
        self._pending.pop(key, None)
        joined = self._joins.pop(key, None)
        hold = _duration(event, "HoldTime")
        wait = float(hold) if hold is not None else (
            when - joined.at if joined is not None and math.isfinite(joined.at) else None)
        segment = joined.segment if joined is not None else self._identify(event)[1]
        self._done[key] = when
        self._answered[key] = _Answered(at=when, segment=segment, interface=event.header("Interface"),
                                        hold_time=wait)
        self.record_answered(queue, at=when, wait=wait, segment=segment)
        return True

    @_handles("AgentComplete")
    def _on_complete(self, event: AmiEvent, when: float) -> bool | None:
        queue, uid = event.required("Queue"), event.required("Uniqueid")
        key = (queue, uid)
        if key in self._completed:
            return False
        answered = self._answered.pop(key, None)
        talk_time = _duration(event, "TalkTime")
        talk = float(talk_time) if talk_time is not None else (when - answered.at if answered else None)
        interface = event.header("Interface") or (answered.interface if answered else None)
        if answered is None:
            segment = self._identify(event)[1]
            if key not in self._done:  # its Connect was missed: count the answer now
                self._pending.pop(key, None)
                self._joins.pop(key, None)
                self._done[key] = when
                hold = _duration(event, "HoldTime")
                self.record_answered(queue, at=when - (talk or 0.0), wait=hold, segment=segment)
        else:
            segment = answered.segment
        self._completed[key] = when
        self.record_completed(queue, at=when, talk=talk, segment=segment, interface=interface)
        return True

    @_handles("VarSet")
    def _on_varset(self, event: AmiEvent, when: float) -> bool | None:
        if (event.header("Variable") or "").upper() != "QUEUESTATUS":
            return None
        return True if self.queue_result(event.required("Uniqueid"), event.header("Value") or "") else None

    def queue_result(self, uniqueid: str, status: str) -> bool:
        """What Queue() returned on channel `uniqueid` (its ``QUEUESTATUS``), when not seen as a VarSet.

        ``TIMEOUT``, ``LEAVEEMPTY``, ``LEAVEUNAVAIL`` or ``WITHDRAW`` settle a
        Leave still waiting for its Connect as an abandon with that reason,
        or relabel the caller's QueueCallerAbandon.  True when it changed something.
        """
        status = status.strip().upper()
        if status not in _LEFT_STATUSES:
            return False
        reason = status.lower()
        settled = False
        for key in [k for k in self._pending if k[1] == uniqueid]:
            self._settle(key, reason)
            settled = True
        return self._relabel(uniqueid, reason) or settled

    @_handles("Hangup")
    def _on_hangup(self, event: AmiEvent, when: float) -> bool | None:
        uid = event.header("Uniqueid")
        if not uid:
            return None
        keys = [k for k in self._pending if k[1] == uid]
        for key in keys:
            self._settle(key, None)
        for key in [k for k in self._joins if k[1] == uid and k not in self._pending]:
            del self._joins[key]  # a Join whose Leave never came
        return True if keys else None

    @_handles("QueueMemberAdded", "QueueMemberStatus", "QueueMemberPause", "QueueMemberPenalty",
              "QueueMemberRinginuse", "QueueMember")
    def _on_member(self, event: AmiEvent, when: float) -> bool | None:
        queue = event.header("Queue")
        interface = event.header("Interface") or event.header("Location")
        wrapup = _duration(event, "Wrapuptime")
        if not queue or not interface or wrapup is None:
            return None
        self._member_wrapup[(queue, interface)] = float(wrapup)
        return None

    EVENTS = _handles.events  # the events `apply` counts; everything else is ignored

    # -- settling ------------------------------------------------------------
    def _identify(self, event: AmiEvent) -> tuple[str | None, str]:
        variables = event.variables
        call_id = variables.get(CALL_ID)
        segment = variables.get(SEGMENT)
        if not segment and call_id and self._segment_of is not None:
            try:
                segment = self._segment_of(call_id)
            except Exception:  # noqa: BLE001 - counted as "unknown"
                log.debug("queue statistics: segment lookup failed for call %s", call_id, exc_info=True)
                segment = None
        return call_id, _segment_key(segment)

    def _finish_abandoned(self, key: tuple[str, str], when: float, hold: int | None, position: int | None,
                          original_position: int | None, reason: str, event: AmiEvent | None) -> None:
        queue, uid = key
        joined = self._joins.pop(key, None)
        self._pending.pop(key, None)
        if joined is None and event is not None:
            call_id, segment = self._identify(event)
            joined = _Joined(at=math.nan, call_id=call_id, segment=segment,
                             number=event.header("CallerIDNum") or "", position=None)
        wait: float | None = float(hold) if hold is not None else None
        if wait is None and joined is not None and math.isfinite(joined.at):
            wait = max(0.0, when - joined.at)
        number = (event.header("CallerIDNum") if event is not None else None) or (joined.number if joined else "")
        self._done[key] = when
        self.record_abandoned(
            queue, at=when, wait=wait, segment=joined.segment if joined else None,
            position=position, original_position=original_position or (joined.position if joined else None),
            number=number or None, reason=reason, call_id=joined.call_id if joined else None, uniqueid=uid,
        )

    def _settle(self, key: tuple[str, str], reason: str | None) -> None:
        """A Leave without a Connect: the caller left unanswered."""
        left_at, position, _ = self._pending[key]
        self._finish_abandoned(key, left_at, None, position, None, reason or "left", None)

    def _settle_pending(self) -> None:
        """Settle the Leaves whose Connect did not come within the grace.

        The grace is over when a later event is dated `leave_grace` after the
        Leave, or when our own clock says so counting from the Leave's
        arrival: two clocks never compared, so a skew between Asterisk's and
        ours cannot turn answered calls into abandons.
        """
        if not self._pending:
            return
        now, grace = self._clock(), self.leave_grace
        for key in [k for k, (left_at, _, arrived) in self._pending.items()
                    if left_at + grace <= self._latest or arrived + grace <= now]:
            self._settle(key, None)

    def _relabel(self, uid: str, reason: str) -> bool:
        """A QueueCallerAbandon that Queue() then reports as a timeout: say so."""
        found = self._abandoned_by_uid.get(uid)
        if found is None or found[0]["reason"] != "abandon":
            return False
        entry, index, (queue, seg) = found
        entry["reason"] = reason
        bucket = self._buckets.get(index)
        if bucket is not None and (queue, seg) in bucket:
            bucket[(queue, seg)].timeouts += 1
            for key in ((queue, seg), (queue, _ALL), (_ALL, seg), (_ALL, _ALL)):
                self._totals[key].timeouts += 1
        return True

    def flush(self) -> None:
        """Settle the Leaves that waited for their Connect longer than the grace."""
        self._settle_pending()

    def _prune(self) -> None:
        now = max(self._latest, self._clock())
        for table, age in ((self._done, DEDUPE_SECONDS), (self._completed, DEDUPE_SECONDS)):
            for key in [k for k, t in table.items() if t < now - age]:
                del table[key]
        for key in [k for k, j in self._joins.items()
                    if math.isfinite(j.at) and j.at < now - OPEN_CALL_SECONDS and k not in self._pending]:
            del self._joins[key]
        for key in [k for k, a in self._answered.items() if a.at < now - OPEN_CALL_SECONDS]:
            del self._answered[key]
        for uid in [u for u, (entry, _, _) in self._abandoned_by_uid.items() if entry["at"] < now - DEDUPE_SECONDS]:
            del self._abandoned_by_uid[uid]

    # -- figures -------------------------------------------------------------
    def figures(self, queue: str | None = None, segment: str | None = None) -> dict[str, Any]:
        """The figures of one queue (None: all) and one segment (None: all), as a dict."""
        self._expire(self._clock())
        self.flush()
        key = (queue, _segment_key(segment) if segment is not None else _ALL)
        counts = self._totals.get(key) or _Counts()
        threshold = self.service_level_for(queue) if queue is not None else None
        return _figures(counts, self._longest_wait(key), threshold)

    def _longest_wait(self, key: tuple[str | None, str | None]) -> int:
        if not self._longest:
            # Filled in one pass over the window after buckets expired; kept up to date by _record.
            longest: dict[tuple[str | None, str | None], int] = {}
            for bucket in self._buckets.values():
                for (queue, seg), counts in bucket.items():
                    wait = counts.longest_wait_ms
                    for k in ((queue, seg), (queue, _ALL), (_ALL, seg), (_ALL, _ALL)):
                        if wait > longest.get(k, -1):
                            longest[k] = wait
            longest.setdefault((_ALL, _ALL), 0)
            self._longest = longest
        return self._longest.get(key, 0)

    def queues(self) -> list[str]:
        return sorted({q for q, _ in self._totals if q is not None})

    def segments(self, queue: str | None = None) -> list[str]:
        return sorted({s for q, s in self._totals if s is not None and q == queue})

    def abandoned_calls(
        self, queue: str | None = None, segment: str | None = None, limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The abandoned calls in the window, newest first (numbers masked)."""
        self._expire(self._clock())
        self.flush()
        found = []
        for entry in reversed(self._abandoned):
            if (queue is None or entry["queue"] == queue) and (segment is None or entry["segment"] == segment):
                found.append(dict(entry))
                if limit is not None and len(found) >= limit:
                    break
        return found

    def snapshot(self, abandoned_limit: int = 50) -> dict[str, Any]:
        """Everything for the wallboard as JSON-able dicts."""
        now = self._clock()
        self._expire(now)
        self.flush()
        window_start = ((self._expired_upto or 0) + 1) * self.bucket_seconds
        return {
            "generated_at": now,
            "window_seconds": self.window,
            "bucket_seconds": self.bucket_seconds,
            "window_start": window_start,
            "total": self.figures(),
            "queues": {
                queue: {**self.figures(queue),
                        "segments": {seg: self.figures(queue, seg) for seg in self.segments(queue)}}
                for queue in self.queues()
            },
            "segments": {seg: self.figures(None, seg) for seg in self.segments(None)},
            "abandoned_calls": self.abandoned_calls(limit=abandoned_limit),
            "counters": dict(self.counters),
        }

    # -- after a restart -----------------------------------------------------
    async def rebuild(self, db: Any, since: float | dt.datetime | None = None) -> int:
        """Recompute the figures from ``call_records``; returns how many records counted.

        `since` (epoch seconds or a datetime; default: the window's start)
        limits what is read; nothing older than the window is kept anyway.
        The figures collected so far are replaced.  Call it before feeding
        live events: what arrives while the query runs is overwritten.

        How a record counts (a record is one call through the IVR):

        - answered  when ``answered_at`` is set: at ``answered_at``, its wait
          ``wait_seconds`` (0 when missing);
        - completed when ``talk_seconds`` is set too: at ``ended_at`` (else
          ``answered_at + talk_seconds``);
        - abandoned when it has a ``queue`` and a ``wait_seconds`` but no
          ``answered_at`` and was not ``self_served``: at ``ended_at`` (else
          ``started_at + wait_seconds``), with reason ``abandon`` and no position;
        - otherwise (self-served, hung up in the IVR, answered by the
          personal manager before any queue: ``result`` manager, no queue
          outcome written yet) it is not a queue call and is skipped.
        """
        now = self._clock()
        start = now - self.window
        if since is not None:
            start = max(start, _epoch(since))
        since_dt = dt.datetime.fromtimestamp(start, dt.timezone.utc)
        statement = (
            select(
                CallRecord.queue, CallRecord.segment, CallRecord.uniqueid, CallRecord.call_id,
                CallRecord.number, CallRecord.self_served, CallRecord.started_at, CallRecord.answered_at,
                CallRecord.ended_at, CallRecord.wait_seconds, CallRecord.talk_seconds,
            )
            .where(CallRecord.queue.is_not(None), CallRecord.started_at >= since_dt - REBUILD_LOOKBACK,
                   or_(CallRecord.result.is_(None), CallRecord.result != "manager"))
            .order_by(CallRecord.started_at)
        )
        async with db.session() as session:
            rows = (await session.execute(statement)).all()
        # No await from here on: the swap is atomic for the event loop.
        self._reset()
        used = 0
        for row in rows:
            used += self._count_record(row, start)
        return used

    def _count_record(self, row: Any, start: float) -> int:
        queue = row.queue
        uid = row.uniqueid or f"record:{row.call_id}"
        key = (queue, uid)
        answered_at = _epoch(row.answered_at) if row.answered_at is not None else None
        ended_at = _epoch(row.ended_at) if row.ended_at is not None else None
        counted = 0
        if answered_at is not None:
            if answered_at >= start and self.record_answered(queue, at=answered_at, wait=row.wait_seconds,
                                                             segment=row.segment):
                counted = 1
                self._done[key] = answered_at
            if row.talk_seconds is not None:
                done_at = ended_at if ended_at is not None else answered_at + row.talk_seconds
                if done_at >= start and self.record_completed(queue, at=done_at, talk=row.talk_seconds,
                                                              segment=row.segment):
                    counted = 1
                    self._completed[key] = done_at
            elif ended_at is None:
                # Still talking when the server stopped: its AgentComplete may come.
                self._answered[key] = _Answered(at=answered_at, segment=_segment_key(row.segment),
                                                interface=None, hold_time=row.wait_seconds)
                self._done[key] = answered_at
        elif row.wait_seconds is not None and not row.self_served:
            started = _epoch(row.started_at)
            at = ended_at if ended_at is not None else started + row.wait_seconds
            if at >= start and self.record_abandoned(
                queue, at=at, wait=row.wait_seconds, segment=row.segment, number=row.number,
                reason="abandon", call_id=row.call_id,
            ):
                counted = 1
                self._done[key] = at
        return counted


# --- small pure helpers -----------------------------------------------------------

def _figures(c: _Counts, longest_ms: int, threshold: float | None) -> dict[str, Any]:
    offered = c.answered + c.abandoned
    sl_base = offered - c.abandoned_in_sl
    return {
        "offered": offered,
        "answered": c.answered,
        "abandoned": c.abandoned,
        "timeouts": c.timeouts,
        "answered_within_threshold": c.answered_in_sl,
        "abandoned_within_threshold": c.abandoned_in_sl,
        "service_level": c.answered_in_sl / sl_base if sl_base else None,
        "service_level_seconds": threshold,
        "abandon_rate": c.abandoned / offered if offered else None,
        "average_wait": _seconds(c.wait_answered_ms + c.wait_abandoned_ms, offered),
        "average_answer_wait": _seconds(c.wait_answered_ms, c.answered),
        "average_abandon_wait": _seconds(c.wait_abandoned_ms, c.abandoned),
        "longest_wait": longest_ms / 1000 if offered else None,
        "completed": c.completed,
        "average_talk": _seconds(c.talk_ms, c.completed),
        "average_handle": _seconds(c.handle_ms, c.completed),
    }


def _seconds(total_ms: int, count: int) -> float | None:
    return round(total_ms / count / 1000, 3) if count else None


def _ms(seconds: float | None) -> int:
    if seconds is None:
        return 0
    value = float(seconds)
    return max(0, round(value * 1000)) if math.isfinite(value) else 0


def _segment_key(segment: str | None) -> str:
    return str(segment) if segment else UNKNOWN_SEGMENT


def _per_queue(value: float | Mapping[str, float], default: float) -> tuple[dict[str, float], float]:
    if isinstance(value, Mapping):
        table = {str(k): float(v) for k, v in value.items()}
        return table, table.pop("*", default)
    return {}, float(value)


def _duration(event: AmiEvent, name: str) -> int | None:
    """``HoldTime`` / ``TalkTime`` / ``Wrapuptime``: whole seconds, as Asterisk measures them."""
    return event.integer(name, low=0, high=MAX_DURATION)


def _epoch(value: float | dt.datetime) -> float:
    """Epoch seconds of a number or a datetime (a naive one is UTC, as SQLite returns them: `as_utc`)."""
    if isinstance(value, dt.datetime):
        return as_utc(value).timestamp()
    return float(value)
