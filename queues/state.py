"""Live queue and agent state, fed by AMI events.

`QueueState.apply(event)` takes one AMI event (a `queues.events.AmiEvent`)
and keeps, per queue, who is waiting (position, since when, call id,
segment) and what every member is doing (logged in, available, ringing, in a
call, paused with its reason and since when).  `snapshot()` turns it into plain JSON-able
dicts for the wallboard; `agent_for_call()` tells the screen-pop which member
interface is talking to a call.

Events it understands (field names as Asterisk 23 sends them, see
``asterisk-traces/ami-queue-*.ami.raw``):

- callers: QueueCallerJoin, QueueCallerLeave, QueueCallerAbandon;
- members and calls: AgentCalled, AgentConnect, AgentComplete,
  AgentRingNoAnswer, AgentDump;
- membership: QueueMemberAdded, QueueMemberRemoved, QueueMemberStatus,
  QueueMemberPause (Paused, PausedReason), QueueMemberPenalty,
  QueueMemberRinginuse;
- the answer to the QueueStatus action: QueueParams, QueueMember (``Name``,
  ``Location``), QueueEntry (``Wait``), QueueStatusComplete;
- Hangup, only to forget a caller or a call whose end events were lost.

Everything else is counted as ignored.  A bad event (not an `AmiEvent`, a
missing queue or channel id) is counted and dropped; a header that is not a
usable number reads as missing (`queues.events` judges what Asterisk sends);
`apply` never raises.

Resync: after a (re)connection, send ``Action: QueueStatus`` and call
`begin_resync(action_id=...)`; the QueueParams / QueueMember / QueueEntry answers
then build a fresh state on the side and `end_resync()` (called by the
QueueStatusComplete event, or explicitly) swaps it in at once.  Callers and
members that the answer does not list disappear.  Live events that arrive
during the resync go to both states.  What QueueStatus does not say is
carried over from the old state when the new one confirms it: a waiting
caller's call id, segment and exact join time; a member's current call when
the member is still ``InCall``.  Outside a resync the same three events
update the live state without removing anything (a filtered QueueStatus).

Times: the ``Timestamp`` header (epoch seconds, with ``timestampevents =
yes``) when present, never later than `clock()` plus
`queues.events.MAX_CLOCK_SKEW`, else `clock()` (QueueStatus answers never
carry one).
Events older than what the state already knows about the same caller or
member are stale and skipped, so replays, duplicates and events out of order
do not bring back callers who left or members who were removed.

Member status codes (``Status``): 0 unknown, 1 not in use, 2 in use, 3 busy,
4 invalid, 5 unavailable, 6 ringing, 7 ringing while in use, 8 on hold.

Each member of a queue gets one ``state`` word, the first that holds:
``unavailable`` (status 4 or 5: not logged in), ``in_call`` (connected to a
caller of this queue, or ``InCall: 1``), ``ringing`` (an AgentCalled without
its outcome yet, or status 6/7; Local channels report 2 while ringing),
``paused``, ``busy`` (status 2/3/8: occupied by something else, such as a
call from another queue), ``available``.  A queue's ``agents`` counts each
word once per member, plus ``logged_in`` (all but unavailable) and
``paused`` (every paused member logged in, even one finishing a call).

Agents, each once (`snapshot()["agents"]`, `agent(interface)`): one word
for the agent across its queues (``unavailable`` when logged out of every
queue, ``in_call`` with a call in any queue, ``ringing``, ``paused`` when
paused in every queue it is logged in to, ``busy``, ``available``), since
when it holds (the time of the event that changed it: the call's connect,
the first ring, the pause; for the state a resync or a first sight found,
that moment), and how many calls the agent answered (AgentConnect, once per
queue and caller, as `queues.stats` counts ``answered``) in the same sliding
window as the statistics, so the agents' counts add up to the answered
figure.  `rebuild_answered(db)` fills those counts from ``call_records``
after a restart, as `QueueStatistics.rebuild` does for the figures.

Feed it every AMI event: it picks what it needs and ignores the rest cheaply.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from caller_id.models import Agent, CallRecord
from caller_id.normalise import mask
from caller_id.store import as_utc
from queues.events import MAX_DURATION, AmiEvent, BadEvent, Handlers
from queues.variables import CALL_ID, SEGMENT

log = logging.getLogger(__name__)

__all__ = ["AGENT_STATES", "MEMBER_STATUS", "QueueState", "masked_number"]

MEMBER_STATUS = {
    0: "unknown",
    1: "not_in_use",
    2: "in_use",
    3: "busy",
    4: "invalid",
    5: "unavailable",
    6: "ringing",
    7: "ringinuse",
    8: "on_hold",
}
_NOT_LOGGED_IN = {4, 5}
_RINGING = {6, 7}
_OCCUPIED = {2, 3, 8}

# How long facts about departed callers, ended calls and removed members are
# kept to recognise late duplicates (seconds of event time).
TOMBSTONE_SECONDS = 3600.0
# A ring with no outcome at all (events lost) stops counting after this long.
RING_TIMEOUT_SECONDS = 300.0
_PRUNE_EVERY = 1000  # events
# The words an agent's (or a member's) state takes, the busiest first.
AGENT_STATES = ("in_call", "ringing", "paused", "busy", "available", "unavailable")
# The answered counts per agent slide like `queues.stats.QueueStatistics` (same defaults).
ANSWERED_WINDOW = 86400.0
ANSWERED_BUCKET = 60.0
# Events after which an agent's state may have changed without the event naming the agent's interface.
_CALLER_EVENTS = frozenset({"QueueCallerLeave", "QueueCallerAbandon", "AgentConnect", "AgentDump", "Hangup"})


# --- the model ------------------------------------------------------------------

@dataclass(slots=True)
class _Caller:
    uniqueid: str
    queue: str
    since: float
    updated_at: float
    linkedid: str | None = None
    channel: str | None = None
    call_id: str | None = None
    segment: str | None = None
    number: str = "unknown"  # masked
    priority: int | None = None
    original_position: int | None = None
    since_exact: bool = True  # False when estimated from a QueueEntry's whole-second Wait


@dataclass(slots=True)
class _Member:
    interface: str
    updated_at: float
    name: str | None = None
    state_interface: str | None = None
    membership: str | None = None
    penalty: int | None = None
    calls_taken: int | None = None
    last_call: int | None = None
    last_pause: int | None = None
    login_time: int | None = None
    in_call: bool = False
    status: int | None = None
    paused: bool = False
    paused_reason: str = ""
    paused_since: float | None = None
    ringinuse: bool | None = None
    wrapuptime: int | None = None
    ringing: dict[str, float] = field(default_factory=dict)  # caller uniqueid -> since
    ring_no_answer: int = 0
    last_ring_no_answer: dict[str, Any] | None = None


@dataclass(slots=True)
class _Call:
    """A caller connected to a member."""

    uniqueid: str
    queue: str
    interface: str
    since: float
    member_name: str | None = None
    linkedid: str | None = None
    call_id: str | None = None
    segment: str | None = None
    member_channel: str | None = None
    member_uniqueid: str | None = None
    hold_time: int | None = None
    number: str = "unknown"


@dataclass(slots=True)
class _Queue:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # waiting callers' uniqueids, position 1 first
    callers: dict[str, _Caller] = field(default_factory=dict)
    members: dict[str, _Member] = field(default_factory=dict)


@dataclass(slots=True)
class _Model:
    queues: dict[str, _Queue] = field(default_factory=dict)
    calls: dict[str, _Call] = field(default_factory=dict)  # caller uniqueid -> call
    # when a caller left a queue / a call ended / a member was removed
    left: dict[tuple[str, str], float] = field(default_factory=dict)
    left_by: dict[tuple[str, str], str] = field(default_factory=dict)  # the event that said so
    ended: dict[str, float] = field(default_factory=dict)
    removed: dict[tuple[str, str], float] = field(default_factory=dict)

    def queue(self, name: str) -> _Queue:
        found = self.queues.get(name)
        if found is None:
            found = self.queues[name] = _Queue(name)
        return found


# --- the state ------------------------------------------------------------------

_handles = Handlers()  # QueueState's handlers, by the events they apply

class QueueState:
    """Live state of every queue, its waiting callers and its members.

    `segment_of(call_id)` (optional) returns the customer segment of a call
    ("A".."D") or None; it is called once per caller when the call id is
    first seen (and again for a snapshot while it still answered None), so
    it must be cheap and must not block (a dict or cache lookup).  Its
    errors are swallowed.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        segment_of: Callable[[str], str | None] | None = None,
        answered_window: float = ANSWERED_WINDOW,
        answered_bucket: float = ANSWERED_BUCKET,
    ):
        if not answered_window > 0 or not answered_bucket > 0:
            raise ValueError("answered_window and answered_bucket must be positive")
        self._clock = clock
        self._segment_of = segment_of
        self.answered_window = float(answered_window)
        self.answered_bucket = float(answered_bucket)
        self._answered_span = max(1, math.ceil(self.answered_window / self.answered_bucket))
        self._agent_since: dict[str, tuple[str, float]] = {}  # interface -> (agent state, since)
        self._answered: dict[tuple[str, str], float] = {}  # (queue, caller uniqueid) -> answered at
        self._answered_by: dict[str, list[tuple[float, str]]] = {}  # interface -> [(at, queue)], sorted
        self._model = _Model()
        self._staging: _Model | None = None
        self._resync_scope: set[str] | None = None
        self._resync_action: str | None = None
        self._latest = 0.0  # newest event time seen
        self.counters: dict[str, int] = {
            "events": 0,       # everything given to apply()
            "applied": 0,      # changed (or confirmed) the state
            "ignored": 0,      # not a queue event
            "stale": 0,        # older than what is known (out of order, replayed)
            "duplicates": 0,   # said again what was already known
            "unmatched": 0,    # about a caller or call the state does not know
            "bad": 0,          # malformed: missing or unparsable headers, not a mapping
            "errors": 0,       # an unexpected exception while applying (a bug)
            "resyncs": 0,
        }

    # -- input ---------------------------------------------------------------
    def apply(self, event: AmiEvent) -> bool:
        """Apply one AMI event; True when it was a queue event that was used.

        Never raises: malformed events are counted in ``counters["bad"]``.
        """
        self.counters["events"] += 1
        try:
            if not isinstance(event, AmiEvent):
                raise BadEvent("not an AMI event")
            name = event.name
            handler = _handles.get(name)
            if handler is None:
                self.counters["ignored"] += 1
                return False
            when = self._when(event, name in self._STATUS_EVENTS)
            if name in self._STATUS_EVENTS:
                mine = self._staging is not None and (
                    self._resync_action is None or event.header("ActionID") == self._resync_action)
                outcome = handler(self, self._staging if mine else self._model, event, when, True)
                if name == "QueueStatusComplete" and mine:
                    self.end_resync()
                elif not mine and outcome == "applied":
                    self._note_agents(self._touched(self._model, event, name), when)
            else:
                touched = self._touched(self._model, event, name)
                outcome = handler(self, self._model, event, when, False)
                if self._staging is not None:
                    handler(self, self._staging, event, when, False)
                if name == "AgentConnect":
                    self._count_answered(event, when)
                if outcome == "applied":
                    self._note_agents(touched, when)
            self.counters[outcome] += 1
            if self.counters["events"] % _PRUNE_EVERY == 0:
                self._prune()
            return outcome == "applied"
        except BadEvent as exc:
            self.counters["bad"] += 1
            log.debug("queue state: bad %s event: %s", _event_name(event), exc)
        except Exception:  # noqa: BLE001 - one odd event must not stop the listener
            self.counters["errors"] += 1
            log.exception("queue state: could not apply a %s event", _event_name(event))
        return False

    def _when(self, event: AmiEvent, is_status_answer: bool) -> float:
        """The time of an event: its Timestamp (see `timestamp`), else the clock.

        A QueueStatus answer never has a Timestamp; in a stream that has them
        it is dated by the newest Timestamp seen, so that comparing it with
        the live events that follow does not depend on the two machines'
        clocks agreeing; but never later than now, so live events after it
        are newer even when the newest Timestamp was ahead of our clock.
        """
        now = self._clock()
        stamp = event.timestamp(now)
        if stamp is not None:
            self._latest = max(self._latest, stamp)
            return stamp
        if is_status_answer and self._latest:
            return min(self._latest, now)
        return now

    def apply_all(self, events: Iterable[AmiEvent]) -> None:
        for event in events:
            self.apply(event)

    # -- resync --------------------------------------------------------------
    def begin_resync(self, queue: str | None = None, action_id: str | None = None) -> None:
        """Start building a fresh state from a QueueStatus answer.

        With `queue`, only that queue is replaced at the end (the answer to
        ``QueueStatus Queue: <name>``); the others stay as they are.  With
        `action_id`, only the answer events carrying that ActionID build it
        (the answers to other QueueStatus actions update the live state).
        Calling it again while a resync runs starts over.
        """
        self._staging = _Model()
        self._resync_scope = {queue} if queue else None
        self._resync_action = action_id

    @property
    def resyncing(self) -> bool:
        return self._staging is not None

    def abort_resync(self) -> None:
        """Drop a resync that will not complete (the connection was lost)."""
        self._staging = None
        self._resync_scope = None
        self._resync_action = None

    def end_resync(self) -> None:
        """Replace the state by the one built since `begin_resync()` (no-op if none)."""
        staged, scope, old = self._staging, self._resync_scope, self._model
        if staged is None:
            return
        self._staging = None
        self._resync_scope = None
        self._resync_action = None
        new = _Model(
            queues=dict(staged.queues),
            left={**old.left, **staged.left},
            left_by={**old.left_by, **staged.left_by},
            ended={**old.ended, **staged.ended},
            removed={**old.removed, **staged.removed},
        )
        if scope is not None:
            for name, queue in old.queues.items():
                if name not in scope:
                    new.queues[name] = queue
        for queue in new.queues.values():
            previous = old.queues.get(queue.name)
            if previous is None or (scope is not None and queue.name not in scope):
                continue
            for uid, caller in queue.callers.items():
                known = previous.callers.get(uid)
                if known is not None:
                    _carry_caller(known, caller)
            for interface, member in queue.members.items():
                known_member = previous.members.get(interface)
                if known_member is None:
                    continue
                for uid, since in known_member.ringing.items():
                    if uid in queue.callers:
                        member.ringing.setdefault(uid, since)
                member.ring_no_answer = known_member.ring_no_answer
                member.last_ring_no_answer = known_member.last_ring_no_answer
                if member.paused and known_member.paused and known_member.paused_since is not None:
                    member.paused_since = known_member.paused_since
        # Calls: those seen during the resync, plus the old ones the answer confirms.
        new.calls = dict(staged.calls)
        for uid, call in old.calls.items():
            if uid in new.calls:
                continue
            queue = new.queues.get(call.queue)
            member = queue.members.get(call.interface) if queue else None
            in_scope = scope is None or call.queue in scope
            if not in_scope or (member is not None and (member.in_call or member.status in _OCCUPIED)):
                new.calls[uid] = call
        for queue in new.queues.values():
            for uid in list(queue.callers):
                if uid in new.calls and new.calls[uid].queue == queue.name:
                    _remove_caller(queue, uid)
        self._model = new
        self.counters["resyncs"] += 1
        self._note_agents(None, self._clock())

    # -- event handlers ------------------------------------------------------
    # Each returns the name of the counter to bump.

    @_handles("QueueCallerJoin")
    def _on_join(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        position = event.integer("Position", low=0)
        if model.left.get((name, uid), -math.inf) >= when or model.ended.get(uid, -math.inf) >= when:
            return "stale"
        call = model.calls.get(uid)
        if call is not None and call.queue == name and call.since >= when:
            return "stale"
        queue = model.queue(name)
        caller = queue.callers.get(uid)
        outcome = "applied"
        if caller is None:
            caller = _Caller(uniqueid=uid, queue=name, since=when, updated_at=when)
            queue.callers[uid] = caller
            index = len(queue.order) if position is None else min(max(position - 1, 0), len(queue.order))
            queue.order.insert(index, uid)
            caller.original_position = position
        else:
            outcome = "duplicates"
            caller.since = min(caller.since, when)
        self._fill_caller(caller, event)
        return outcome

    @_handles("QueueCallerLeave", "QueueCallerAbandon")
    def _on_leave(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        queue = model.queues.get(name)
        known = model.left.get((name, uid))
        model.left[(name, uid)] = max(known or when, when)
        kind = event.name or ""
        if queue is None or uid not in queue.callers:
            if known is None:
                return "unmatched"
            # QueueCallerAbandon is followed by QueueCallerLeave: that one is expected.
            repeated = model.left_by.get((name, uid)) == kind
            model.left_by[(name, uid)] = kind
            return "duplicates" if repeated else "applied"
        model.left_by[(name, uid)] = kind
        if queue.callers[uid].since > when:
            return "stale"  # a leave older than the join we know
        _remove_caller(queue, uid)
        _stop_ringing(queue, uid)
        return "applied"

    @_handles("AgentCalled")
    def _on_agent_called(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        interface = event.required("Interface")
        if model.left.get((name, uid), -math.inf) >= when or model.ended.get(uid, -math.inf) >= when:
            return "stale"
        queue = model.queue(name)
        member = self._member_for(model, queue, interface, event, when)
        if member is None:
            return "stale"
        if uid in member.ringing:
            return "duplicates"
        member.ringing[uid] = when
        caller = queue.callers.get(uid)
        if caller is not None:
            self._fill_caller(caller, event)
        return "applied"

    @_handles("AgentRingNoAnswer")
    def _on_ring_no_answer(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        interface = event.required("Interface")
        ring_ms = event.integer("RingTime", low=0, high=MAX_DURATION * 1000)
        queue = model.queues.get(name)
        member = queue.members.get(interface) if queue else None
        if member is None:
            return "unmatched"
        if member.ringing.pop(uid, None) is None and (member.last_ring_no_answer or {}).get("uniqueid") == uid:
            return "duplicates"
        member.ring_no_answer += 1
        member.last_ring_no_answer = {
            "at": when, "uniqueid": uid,
            "ring_time": None if ring_ms is None else ring_ms / 1000.0,
        }
        return "applied"

    @_handles("AgentConnect")
    def _on_connect(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        interface = event.required("Interface")
        if model.ended.get(uid, -math.inf) >= when:
            return "stale"
        existing = model.calls.get(uid)
        if existing is not None and existing.interface == interface and existing.queue == name:
            return "duplicates"
        queue = model.queue(name)
        caller = queue.callers.get(uid)
        call = _Call(uniqueid=uid, queue=name, interface=interface, since=when)
        if caller is not None:
            call.linkedid, call.call_id, call.segment, call.number = (
                caller.linkedid, caller.call_id, caller.segment, caller.number)
            _remove_caller(queue, uid)
        model.left[(name, uid)] = max(model.left.get((name, uid), when), when)
        model.left_by.setdefault((name, uid), "AgentConnect")
        _stop_ringing(queue, uid)
        call.member_name = event.header("MemberName") or None
        call.member_channel = event.header("DestChannel") or None
        call.member_uniqueid = event.header("DestUniqueid") or None
        call.hold_time = event.integer("HoldTime", low=0, high=MAX_DURATION)
        call.linkedid = event.header("Linkedid") or call.linkedid
        number = event.header("CallerIDNum")
        if number and call.number == "unknown":
            call.number = masked_number(number)
        variables = event.variables
        call.call_id = variables.get(CALL_ID) or call.call_id
        call.segment = variables.get(SEGMENT) or call.segment or self._lookup_segment(call.call_id)
        model.calls[uid] = call
        self._member_for(model, queue, interface, event, when)
        return "applied"

    @_handles("AgentComplete")
    def _on_complete(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        known = model.ended.get(uid)
        model.ended[uid] = max(known or when, when)
        call = model.calls.get(uid)
        if call is None or call.queue != name:
            return "duplicates" if known is not None else "unmatched"
        if call.since > when:
            return "stale"
        del model.calls[uid]
        return "applied"

    @_handles("AgentDump")
    def _on_dump(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        interface = event.header("Interface")
        queue = model.queues.get(name)
        changed = False
        if queue is not None:
            for member in queue.members.values():
                if (interface is None or member.interface == interface) and member.ringing.pop(uid, None) is not None:
                    changed = True
        call = model.calls.get(uid)
        if call is not None and call.queue == name and (interface is None or call.interface == interface):
            del model.calls[uid]
            model.ended[uid] = when
            changed = True
        return "applied" if changed else "unmatched"

    @_handles("Hangup")
    def _on_hangup(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        uid = event.header("Uniqueid")
        if not uid:
            return "ignored"
        changed = False
        for queue in model.queues.values():
            if uid in queue.callers:
                _remove_caller(queue, uid)
                _stop_ringing(queue, uid)
                model.left[(queue.name, uid)] = when
                model.left_by[(queue.name, uid)] = "Hangup"
                changed = True
        call = model.calls.pop(uid, None)
        if call is not None:
            model.ended[uid] = when
            changed = True
        else:
            for caller_uid, call in list(model.calls.items()):
                if call.member_uniqueid == uid:
                    del model.calls[caller_uid]
                    model.ended[caller_uid] = when
                    changed = True
        return "applied" if changed else "ignored"

    @_handles("QueueMemberAdded", "QueueMemberStatus", "QueueMemberPause", "QueueMemberPenalty",
              "QueueMemberRinginuse", "QueueMember",
              "QueueMemberPaused")  # QueueMemberPause's name before Asterisk 12
    def _on_member(self, model: _Model, event: AmiEvent, when: float, status: bool) -> str:
        name = event.required("Queue")
        interface = event.header("Interface") or event.header("Location")
        if not interface:
            raise BadEvent("Interface missing")
        queue = model.queue(name)
        member = queue.members.get(interface)
        if member is not None and when < member.updated_at:
            return "stale"
        if member is None:
            if not status and model.removed.get((name, interface), -math.inf) >= when:
                return "stale"
            member = queue.members[interface] = _Member(interface=interface, updated_at=when)
            model.removed.pop((name, interface), None)
        _update_member(member, event, when)
        return "applied"

    @_handles("QueueMemberRemoved")
    def _on_member_removed(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name = event.required("Queue")
        interface = event.required("Interface")
        queue = model.queues.get(name)
        known = model.removed.get((name, interface))
        model.removed[(name, interface)] = max(known or when, when)
        member = queue.members.get(interface) if queue else None
        if member is None:
            return "duplicates" if known is not None else "unmatched"
        if when < member.updated_at:
            return "stale"
        del queue.members[interface]
        return "applied"

    @_handles("QueueParams")
    def _on_params(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        queue = model.queue(event.required("Queue"))
        params: dict[str, Any] = {"updated_at": when}
        for key in ("Strategy",):
            value = event.header(key)
            if value is not None:
                params[key.lower()] = value
        for key, out in (("Max", "max"), ("Calls", "calls"), ("Holdtime", "holdtime"),
                         ("TalkTime", "talktime"), ("Completed", "completed"), ("Abandoned", "abandoned"),
                         ("ServiceLevel", "service_level"), ("Weight", "weight")):
            value = event.integer(key)
            if value is not None:
                params[out] = value
        for key, out in (("ServicelevelPerf", "service_level_perf"), ("ServicelevelPerf2", "service_level_perf2")):
            perf = event.number(key, low=0.0, high=100.0)  # a percentage
            if perf is not None:
                params[out] = perf
        queue.params = params
        return "applied"

    @_handles("QueueEntry")
    def _on_entry(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        name, uid = event.required("Queue"), event.required("Uniqueid")
        position = event.integer("Position", low=0)
        wait = event.integer("Wait", 0, low=0, high=MAX_DURATION) or 0
        queue = model.queue(name)
        caller = queue.callers.get(uid)
        if caller is None and (name, uid) in model.left:
            return "stale"  # it left while the answer was on its way
        if caller is None:
            since = self._clock() - wait
            caller = _Caller(uniqueid=uid, queue=name, since=since, updated_at=when, since_exact=False)
            queue.callers[uid] = caller
        elif uid in queue.order:
            queue.order.remove(uid)
        index = len(queue.order) if position is None else min(max(position - 1, 0), len(queue.order))
        queue.order.insert(index, uid)
        caller.priority = event.integer("Priority", caller.priority)
        self._fill_caller(caller, event)
        return "applied"

    @_handles("QueueStatusComplete")
    def _on_status_complete(self, model: _Model, event: AmiEvent, when: float, _status: bool) -> str:
        return "applied"

    _STATUS_EVENTS = frozenset({"QueueParams", "QueueMember", "QueueEntry", "QueueStatusComplete"})
    EVENTS = _handles.events  # the events `apply` uses; everything else is ignored

    # -- helpers -------------------------------------------------------------
    def _member_for(self, model: _Model, queue: _Queue, interface: str, event: AmiEvent,
                    when: float) -> _Member | None:
        """The member an agent event names, created when unknown (None if it was removed since)."""
        member = queue.members.get(interface)
        if member is None:
            if model.removed.get((queue.name, interface), -math.inf) >= when:
                return None
            member = queue.members[interface] = _Member(interface=interface, updated_at=-math.inf)
        name = event.header("MemberName")
        if name and not member.name:
            member.name = name
        return member

    def _fill_caller(self, caller: _Caller, event: AmiEvent) -> None:
        caller.linkedid = event.header("Linkedid") or caller.linkedid
        caller.channel = event.header("Channel") or caller.channel
        number = event.header("CallerIDNum")
        if number:
            caller.number = masked_number(number)
        variables = event.variables
        call_id = variables.get(CALL_ID)
        if call_id and call_id != caller.call_id:
            caller.call_id = call_id
            caller.segment = None
        caller.segment = variables.get(SEGMENT) or caller.segment or self._lookup_segment(caller.call_id)

    def _lookup_segment(self, call_id: str | None) -> str | None:
        if not call_id or self._segment_of is None:
            return None
        try:
            segment = self._segment_of(call_id)
        except Exception:  # noqa: BLE001 - the wallboard does without a segment
            log.debug("queue state: segment lookup failed for call %s", call_id, exc_info=True)
            return None
        return str(segment) if segment else None

    # -- agents: state since when, answered calls ---------------------------
    @staticmethod
    def _touched(model: _Model, event: AmiEvent, name: str) -> set[str]:
        """The interfaces whose agent state an event may change (looked at before it is applied)."""
        found = {value for value in (event.header("Interface"), event.header("Location")) if value}
        if name in _CALLER_EVENTS:
            uid = event.header("Uniqueid")
            if uid:
                call = model.calls.get(uid)
                if call is not None:
                    found.add(call.interface)
                elif name == "Hangup":
                    found.update(c.interface for c in model.calls.values() if c.member_uniqueid == uid)
                queue_name = event.header("Queue")
                if queue_name and name != "Hangup":
                    queues = [model.queues[queue_name]] if queue_name in model.queues else []
                else:
                    queues = [q for q in model.queues.values() if uid in q.callers]
                for queue in queues:
                    found.update(m.interface for m in queue.members.values() if uid in m.ringing)
        return found

    def _note_agents(self, interfaces: Iterable[str] | None, when: float) -> None:
        """Record when the agents' states changed (`interfaces` None: every agent, after a resync)."""
        model = self._model
        if interfaces is None:
            interfaces = {i for q in model.queues.values() for i in q.members} | set(self._agent_since)
        for interface in interfaces:
            state = _agent_state_of(model, interface)
            if state is None:
                self._agent_since.pop(interface, None)
                continue
            known = self._agent_since.get(interface)
            if known is None or known[0] != state:
                self._agent_since[interface] = (state, _fact_since(model, interface, state) or when)

    def _count_answered(self, event: AmiEvent, when: float) -> None:
        """One answered call for the agent, once per (queue, caller), as the statistics count it."""
        queue, uid, interface = event.header("Queue"), event.header("Uniqueid"), event.header("Interface")
        if queue and uid and interface:
            self._add_answered(queue, uid, interface, when)

    def _add_answered(self, queue: str, uid: str, interface: str, at: float) -> bool:
        key = (queue, uid)
        if key in self._answered or at < self.answered_window_start():
            return False
        self._answered[key] = at
        bisect.insort(self._answered_by.setdefault(interface, []), (at, queue))
        return True

    def answered_window_start(self, now: float | None = None) -> float:
        """Where the answered counts' window starts now: bucket by bucket, as the statistics slide."""
        now = self._clock() if now is None else now
        return (math.floor(now / self.answered_bucket) - self._answered_span + 1) * self.answered_bucket

    def _answered_of(self, interface: str, start: float) -> dict[str, int]:
        """Calls answered by `interface` since `start`, per queue (older ones are dropped)."""
        times = self._answered_by.get(interface)
        if not times:
            return {}
        cut = bisect.bisect_left(times, (start, ""))
        if cut:
            del times[:cut]
        counts: dict[str, int] = {}
        for _, queue in times:
            counts[queue] = counts.get(queue, 0) + 1
        return counts

    async def rebuild_answered(self, db: Any) -> int:
        """Count the answered calls of the window from ``call_records`` (those with an agent), keeping
        what live events counted already; how many records were added.  Safe to call more than once."""
        start = self.answered_window_start()
        since = dt.datetime.fromtimestamp(start, dt.timezone.utc)
        statement = (select(CallRecord.queue, CallRecord.uniqueid, CallRecord.call_id, CallRecord.answered_at,
                            Agent.interface)
                     .join(Agent, Agent.id == CallRecord.agent_id)
                     .where(CallRecord.queue.is_not(None), CallRecord.answered_at.is_not(None),
                            CallRecord.answered_at >= since))
        async with db.session() as session:
            rows = (await session.execute(statement)).all()
        added = 0
        for queue, uniqueid, call_id, answered_at, interface in rows:
            added += self._add_answered(queue, uniqueid or f"record:{call_id}", interface,
                                        as_utc(answered_at).timestamp())
        return added

    def _prune(self) -> None:
        horizon = self._latest - TOMBSTONE_SECONDS
        start = self.answered_window_start()
        for key in [k for k, at in self._answered.items() if at < start - TOMBSTONE_SECONDS]:
            del self._answered[key]
        for interface in [i for i, times in self._answered_by.items() if not self._answered_of(i, start)]:
            del self._answered_by[interface]
        for model in (self._model, self._staging):
            if model is None:
                continue
            for table in (model.left, model.ended, model.removed):
                for key in [k for k, t in table.items() if t < horizon]:
                    del table[key]
            for key in [k for k in model.left_by if k not in model.left]:
                del model.left_by[key]
            ring_horizon = self._latest - RING_TIMEOUT_SECONDS
            for queue in model.queues.values():
                for member in queue.members.values():
                    for uid in [u for u, t in member.ringing.items() if t < ring_horizon]:
                        del member.ringing[uid]

    # -- output --------------------------------------------------------------
    def queue_names(self) -> list[str]:
        return sorted(self._model.queues)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Every queue, the connected calls and the counters, as JSON-able dicts."""
        now = self._clock() if now is None else now
        queues = {name: self._queue_snapshot(self._model.queues[name], now) for name in sorted(self._model.queues)}
        start = self.answered_window_start(now)
        return {
            "generated_at": now,
            "queues": queues,
            "agents": self._agents_snapshot(queues, now, start),
            "answered_window": {"seconds": self.answered_window, "start": start},
            "calls": [self._call_dict(call, now) for call in
                      sorted(self._model.calls.values(), key=lambda c: (c.since, c.uniqueid))],
            "counters": dict(self.counters),
            "resyncing": self.resyncing,
        }

    def agent(self, interface: str, now: float | None = None) -> dict[str, Any] | None:
        """One agent as in ``snapshot()["agents"]``, or None when it is a member of no queue."""
        now = self._clock() if now is None else now
        queues = {}
        for name in sorted(self._model.queues):
            queue = self._model.queues[name]
            if interface in queue.members:
                queues[name] = self._queue_snapshot(queue, now, only=interface)
        return self._agents_snapshot(queues, now, self.answered_window_start(now)).get(interface)

    def _agents_snapshot(self, queues: dict[str, dict[str, Any]], now: float, start: float) -> dict[str, Any]:
        """Each agent once, from the queues' member dicts: its state across queues and since when."""
        memberships: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for name, queue in queues.items():
            for member in queue["members"]:
                memberships.setdefault(member["interface"], []).append((name, member))
        agents = {}
        for interface, found in memberships.items():
            members = [m for _, m in found]
            state = _combined_state(members)
            known = self._agent_since.get(interface)
            if known is None or known[0] != state:  # changed without an event naming it (a ring timed out)
                known = self._agent_since[interface] = (state, _fact_since(self._model, interface, state) or now)
            logged_in = [(q, m) for q, m in found if m["state"] != "unavailable"]
            paused = [(q, m) for q, m in logged_in if m["paused"]]
            named = next((m["name"] for m in members if m["name"] != interface), interface)
            answered = self._answered_of(interface, start)
            pause_starts = [m["paused_since"] for _, m in paused if m["paused_since"]]
            agents[interface] = {
                "interface": interface,
                "name": named,
                "state": state,
                "since": known[1],
                "for": max(0.0, now - known[1]),
                "paused": bool(logged_in) and len(paused) == len(logged_in),
                "paused_in": [q for q, _ in paused],
                "paused_reason": next((m["paused_reason"] for _, m in paused if m["paused_reason"]), None),
                "paused_since": min(pause_starts) if pause_starts else None,
                "queues": [{"queue": q, "state": m["state"], "penalty": m["penalty"], "paused": m["paused"],
                            "paused_reason": m["paused_reason"], "calls_taken": m["calls_taken"],
                            "membership": m["membership"], "answered": answered.get(q, 0)} for q, m in found],
                "calls": members[0]["calls"],
                "ringing": sorted({q for q, m in found if m["ringing_for"]}
                                  or {q for q, m in found if m["state"] == "ringing"}),  # for whose caller
                "answered": sum(answered.values()),
            }
        return dict(sorted(agents.items(), key=lambda item: (item[1]["name"].lower(), item[0])))

    def queue_snapshot(self, name: str, now: float | None = None) -> dict[str, Any] | None:
        """One queue as in `snapshot()`, or None when the queue is unknown."""
        queue = self._model.queues.get(name)
        if queue is None:
            return None
        return self._queue_snapshot(queue, self._clock() if now is None else now)

    def _queue_snapshot(self, queue: _Queue, now: float, only: str | None = None) -> dict[str, Any]:
        callers = []
        for position, uid in enumerate(queue.order, start=1):
            caller = queue.callers[uid]
            if caller.segment is None and caller.call_id:
                caller.segment = self._lookup_segment(caller.call_id)
            callers.append({
                "position": position,
                "uniqueid": caller.uniqueid,
                "linkedid": caller.linkedid,
                "call_id": caller.call_id,
                "segment": caller.segment,
                "number": caller.number,
                "priority": caller.priority,
                "since": caller.since,
                "wait": max(0.0, now - caller.since),
            })
        calls_of: dict[str, list[dict[str, Any]]] = {}
        in_call_here = set()
        for call in self._model.calls.values():
            calls_of.setdefault(call.interface, []).append(self._call_dict(call, now))
            if call.queue == queue.name:
                in_call_here.add(call.interface)
        members = []
        counts = dict.fromkeys(("logged_in", "available", "ringing", "in_call", "busy", "paused", "unavailable"), 0)
        for interface in sorted(queue.members, key=lambda i: ((queue.members[i].name or i).lower(), i)):
            if only is not None and interface != only:
                continue
            member = queue.members[interface]
            state = _member_state(member, interface in in_call_here)
            counts[state] += 1
            if state != "unavailable":
                counts["logged_in"] += 1
                if member.paused and state != "paused":
                    counts["paused"] += 1
            members.append(self._member_dict(member, state, now, calls_of.get(interface, [])))
        return {
            "queue": queue.name,
            "callers_waiting": len(callers),
            "longest_wait": max((c["wait"] for c in callers), default=0.0),
            "callers": callers,
            "agents": counts,
            "members": members,
            "params": dict(queue.params),
        }

    @staticmethod
    def _member_dict(member: _Member, state: str, now: float, calls: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "interface": member.interface,
            "name": member.name or member.interface,
            "state": state,
            "status": member.status,
            "status_text": MEMBER_STATUS.get(member.status, "unknown") if member.status is not None else None,
            "paused": member.paused,
            "paused_reason": member.paused_reason or None,
            "paused_since": member.paused_since if member.paused else None,
            "paused_for": max(0.0, now - member.paused_since) if member.paused and member.paused_since else None,
            "in_call": member.in_call or bool(calls),
            "ringing_for": sorted(member.ringing),
            "penalty": member.penalty,
            "calls_taken": member.calls_taken,
            "last_call": member.last_call or None,
            "login_time": member.login_time or None,
            "membership": member.membership,
            "state_interface": member.state_interface,
            "ringinuse": member.ringinuse,
            "wrapuptime": member.wrapuptime,
            "ring_no_answer": member.ring_no_answer,
            "last_ring_no_answer": dict(member.last_ring_no_answer) if member.last_ring_no_answer else None,
            "calls": calls,
        }

    @staticmethod
    def _call_dict(call: _Call, now: float) -> dict[str, Any]:
        return {
            "queue": call.queue,
            "interface": call.interface,
            "member_name": call.member_name,
            "uniqueid": call.uniqueid,
            "linkedid": call.linkedid,
            "call_id": call.call_id,
            "segment": call.segment,
            "number": call.number,
            "member_channel": call.member_channel,
            "member_uniqueid": call.member_uniqueid,
            "since": call.since,
            "talking_for": max(0.0, now - call.since),
            "hold_time": call.hold_time,
        }

    # -- who is talking to whom ----------------------------------------------
    def agent_for_call(
        self, call_id: str | None = None, *, uniqueid: str | None = None, linkedid: str | None = None,
    ) -> dict[str, Any] | None:
        """The connected call (with the member ``interface``) of a call id, channel or linked id."""
        now = self._clock()
        for call in self._model.calls.values():
            if ((call_id and call.call_id == call_id) or (uniqueid and call.uniqueid == uniqueid)
                    or (linkedid and call.linkedid == linkedid)):
                return self._call_dict(call, now)
        return None

    def calls_of_agent(self, interface: str) -> list[dict[str, Any]]:
        """The calls a member interface is connected to now (usually one)."""
        now = self._clock()
        return [self._call_dict(call, now) for call in self._model.calls.values() if call.interface == interface]

    def ringing_agents(self, call_id: str | None = None, *, uniqueid: str | None = None) -> list[dict[str, str]]:
        """The members being rung for a waiting caller: ``[{"queue", "interface", "name"}]``."""
        uids = set()
        if uniqueid:
            uids.add(uniqueid)
        if call_id:
            uids.update(c.uniqueid for q in self._model.queues.values() for c in q.callers.values()
                        if c.call_id == call_id)
        found = []
        for queue in self._model.queues.values():
            for member in queue.members.values():
                if uids.intersection(member.ringing):
                    found.append({"queue": queue.name, "interface": member.interface,
                                  "name": member.name or member.interface})
        return found


# --- small pure helpers -----------------------------------------------------------

def _event_name(event: Any) -> str:
    if isinstance(event, AmiEvent):
        return event.name or "unnamed"
    return type(event).__name__


def masked_number(number: str) -> str:
    """A caller number fit for the wallboard and logs (``<unknown>`` gives ``unknown``)."""
    if number.startswith("<") and number.endswith(">"):  # <unknown>
        return "unknown"
    return mask(number)


def _remove_caller(queue: _Queue, uid: str) -> None:
    if queue.callers.pop(uid, None) is not None:
        try:
            queue.order.remove(uid)
        except ValueError:
            pass


def _stop_ringing(queue: _Queue, uid: str) -> None:
    for member in queue.members.values():
        member.ringing.pop(uid, None)


def _carry_caller(known: _Caller, fresh: _Caller) -> None:
    """Keep what the live state knew and QueueEntry does not tell."""
    fresh.linkedid = fresh.linkedid or known.linkedid
    fresh.call_id = fresh.call_id or known.call_id
    fresh.segment = fresh.segment or known.segment
    if fresh.number == "unknown":
        fresh.number = known.number
    fresh.original_position = known.original_position
    if known.since_exact:
        fresh.since, fresh.since_exact = known.since, True


def _update_member(member: _Member, event: AmiEvent, when: float) -> None:
    member.updated_at = when
    member.name = event.header("MemberName") or event.header("Name") or member.name
    member.state_interface = event.header("StateInterface") or member.state_interface
    member.membership = event.header("Membership") or member.membership
    member.penalty = event.integer("Penalty", member.penalty)
    member.calls_taken = event.integer("CallsTaken", member.calls_taken)
    member.last_call = event.integer("LastCall", member.last_call)
    member.last_pause = event.integer("LastPause", member.last_pause)
    member.login_time = event.integer("LoginTime", member.login_time)
    member.wrapuptime = event.integer("Wrapuptime", member.wrapuptime, low=0, high=MAX_DURATION)
    in_call = event.flag("InCall")
    if in_call is not None:
        member.in_call = in_call
    member.status = event.integer("Status", member.status)
    ringinuse = event.flag("Ringinuse")
    if ringinuse is not None:
        member.ringinuse = ringinuse
    paused = event.flag("Paused")
    if paused is not None:
        if paused and not member.paused:
            fresh = member.paused_since is None and event.header("Timestamp") is None
            member.paused_since = min(float(member.last_pause), when) if fresh and member.last_pause else when
        elif not paused:
            member.paused_since = None
        member.paused = paused
    reason = event.header("PausedReason")
    if reason is None:
        reason = event.header("Reason")  # QueueMemberPaused before Asterisk 12
    if not member.paused:
        member.paused_reason = ""
    elif reason is not None:
        member.paused_reason = reason


def _member_state(member: _Member, has_call_here: bool) -> str:
    """One word for the wallboard, in this order of precedence:

    unavailable (status 4/5: not logged in) > in_call (connected to a caller
    of this queue, or Asterisk says InCall) > ringing > paused > busy (in use
    for something else: another queue, a direct call) > available.
    """
    if member.status in _NOT_LOGGED_IN:
        return "unavailable"
    if has_call_here or member.in_call:
        return "in_call"
    if member.ringing or member.status in _RINGING:
        return "ringing"
    if member.paused:
        return "paused"
    if member.status in _OCCUPIED:
        return "busy"
    return "available"


def _agent_state_of(model: _Model, interface: str) -> str | None:
    """The agent's one word across its queues (see `_combined_state`); None when in no queue."""
    calls = [c for c in model.calls.values() if c.interface == interface]
    members = []
    for queue in model.queues.values():
        member = queue.members.get(interface)
        if member is not None:
            state = _member_state(member, any(c.queue == queue.name for c in calls))
            members.append({"state": state, "paused": member.paused, "calls": calls})
    return _combined_state(members) if members else None


def _combined_state(members: list[dict[str, Any]]) -> str:
    """One word for an agent from its memberships' states: logged out of every queue, in a call
    anywhere, ringing anywhere, paused wherever logged in, busy, else available."""
    logged_in = [m for m in members if m["state"] != "unavailable"]
    if not logged_in:
        return "unavailable"
    states = {m["state"] for m in logged_in}
    if "in_call" in states or any(m["calls"] for m in logged_in):
        return "in_call"
    if "ringing" in states:
        return "ringing"
    if all(m["paused"] for m in logged_in):
        return "paused"
    return "busy" if "busy" in states else "available"


def _fact_since(model: _Model, interface: str, state: str) -> float | None:
    """When the state began, as far as the model knows it: the call's connect, the first ring, the pause
    (in the last of its queues)."""
    if state == "in_call":
        times = [c.since for c in model.calls.values() if c.interface == interface]
    elif state == "ringing":
        times = [t for q in model.queues.values() if interface in q.members
                 for t in q.members[interface].ringing.values()]
    elif state == "paused":  # paused everywhere since the last of its queues paused it
        times = [q.members[interface].paused_since for q in model.queues.values()
                 if interface in q.members and q.members[interface].paused_since is not None]
        return max(times) if times else None
    else:
        return None
    return min(times) if times else None
