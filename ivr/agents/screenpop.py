"""Screen-pop: the customer card on the agent's screen while the call rings and connects.

`ScreenPop.on_event(event)` takes app_queue's AMI events (the
`queues.events.AmiEvent` that `ivr.agents.callcenter` reads from each AMI
message and hands to `QueueState` too) and publishes on the hub topic
``agent:<agent_id>`` of the agent the event names (``Interface``, else
``MemberName``, resolved to an agent id by `agents`)::

    {"type": "screenpop", "state": "ringing" | "answered" | "ended",
     "reason": None, or for "ended": "completed", "answered_elsewhere", "no_answer",
               "dumped", "abandoned", "left" (timeout / empty queue), "hangup", "lost",
     "call_id": ..., "uniqueid": ..., "queue": ..., "interface": ..., "agent_id": ...,
     "card": {...}, "at": <epoch seconds of the event>, "seq": <per call, growing>}

AgentCalled pops a ``ringing`` card, AgentConnect turns it ``answered`` (and
ends the card of every other member that rang for the call), AgentComplete
ends it; AgentRingNoAnswer / AgentDump end the card of that member; the
caller abandoning (QueueCallerAbandon, a Hangup, or a QueueCallerLeave
without an AgentConnect within `leave_grace`) ends the cards that still ring.

``call_id`` is the key a page updates a card in place by: the
``IVR_CALL_ID`` channel variable whenever Asterisk sends it, else the call
id of the context found at the first event, else the caller's Uniqueid; it
stays the same for the whole call.

The card comes from the call context the IVR stored (`ivr.call.context`),
looked up by ``IVR_CALL_ID``, then the caller channel's ``Uniqueid``, then
its ``Linkedid``; the lookup starts at QueueCallerJoin, before any agent
rings.  When the context is not there yet (another node may store it a few
milliseconds later) the card says so (``"context": "pending"``) and carries
the number from ``CallerIDNum``, so the agent can still greet the caller;
the lookup is retried for a few seconds (`retry_delays`) and every card
already shown is published again with the full card, same ``call_id``.
If it never comes the card turns ``"missing"``.

Everything runs off the AMI dispatcher: `on_event` only queues the event
for its call (events of one call are handled in order, calls in parallel)
and returns; nothing here ever raises into the AMI client (errors are
logged and counted in `stats`).

`ivr.agents.directory.AgentDirectory` is the usual `agents` resolver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from caller_id.normalise import mask
from ivr.agents.hub import Hub, agent_topic
from ivr.call.context import _number, build_card
from queues.events import AmiEvent, Handlers
from queues.variables import CALL_ID

log = logging.getLogger(__name__)

__all__ = ["ScreenPop"]

AgentResolver = Callable[[str], Awaitable[Any]]

RINGING, ANSWERED, ENDED = "ringing", "answered", "ended"
# How long a call nobody ended is kept (its end events were lost).
KEEP_SECONDS = 4 * 3600.0
WRAP_UP_SECONDS = 900.0  # an answered call stays the agent's (disposition, notes) this long after it ends
_WRAP_UP_CARDS = 20  # per agent
_PRUNE_EVERY = 1000  # events

_handles = Handlers()  # ScreenPop's handlers, by the events they turn into cards
# The events that start following a call no card was shown for yet.
_OPENING = frozenset({"QueueCallerJoin", "AgentCalled", "AgentConnect", "AgentComplete"})


@dataclass(slots=True)
class _AgentCard:
    interface: str
    agent_id: Any
    state: str
    message: dict[str, Any] | None = None


@dataclass(slots=True)
class _Call:
    uniqueid: str
    key: str
    linkedid: str | None = None
    call_id_var: str | None = None
    queue: str | None = None
    number: str | None = None
    caller_name: str | None = None
    context: dict[str, Any] | None = None
    status: str = "pending"  # of the context: found / pending / missing
    card: dict[str, Any] = field(default_factory=dict)
    agents: dict[str, _AgentCard] = field(default_factory=dict)  # interface -> card shown
    connected: str | None = None  # the interface that answered
    left: bool = False  # QueueCallerLeave seen, AgentConnect not (yet)
    at: float = 0.0
    seq: int = 0
    touched: float = 0.0  # monotonic
    retry: asyncio.Task[None] | None = None
    leave_timer: asyncio.Task[None] | None = None


class ScreenPop:
    """Customer cards to agents' screens from AMI queue events (see the module docstring).

    contexts      `ivr.call.context.CallContexts` (get by call id or channel id)
    hub           where cards are published (``agent:<id>``)
    agents        async interface -> agent id (None when unknown); `AgentDirectory`
    clock         epoch seconds, for events without a ``Timestamp``
    retry_delays  pauses between lookups of a context that is not there yet
    leave_grace   seconds a QueueCallerLeave waits for its AgentConnect
    lookup_timeout  one context lookup may take this long
    """

    def __init__(
        self,
        contexts: Any,
        hub: Hub,
        agents: AgentResolver,
        clock: Callable[[], float] = time.time,
        *,
        retry_delays: Iterable[float] = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5),
        leave_grace: float = 2.0,
        lookup_timeout: float = 0.5,
        keep_seconds: float = KEEP_SECONDS,
    ):
        self.contexts = contexts
        self.hub = hub
        self.agents = agents
        self._clock = clock
        self.retry_delays = tuple(retry_delays)
        self.leave_grace = leave_grace
        self.lookup_timeout = lookup_timeout
        self.keep_seconds = keep_seconds
        self._calls: dict[str, _Call] = {}
        self._lanes: dict[str, deque[tuple[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unknown_agents: set[str] = set()
        self._segments: dict[str, str] = {}  # call key -> segment, while the call is followed
        # agent id -> (ended at, card) of the calls the agent answered lately, newest last
        self._wrap_up: dict[Any, deque[tuple[float, dict[str, Any]]]] = {}
        self._lookup_failing = False
        self._closed = False
        self.stats: dict[str, int] = {
            "events": 0, "published": 0, "pending_cards": 0, "late_contexts": 0, "missing_contexts": 0,
            "unknown_agents": 0, "errors": 0, "publish_errors": 0, "lookup_errors": 0,
        }

    # -- input ---------------------------------------------------------------
    def on_event(self, event: AmiEvent) -> None:
        """Queue one AMI event for its call; returns at once, never raises."""
        try:
            if self._closed:
                return
            name = event.name
            if name not in _handles:
                return
            uid = event.header("Uniqueid")
            if not uid:
                return
            if name == "Hangup" and uid not in self._calls and uid not in self._lanes:
                return  # not a caller we show (the common case for Hangup)
            self.stats["events"] += 1
            self._enqueue(uid, ("event", event))
            if self.stats["events"] % _PRUNE_EVERY == 0:
                self._prune()
        except Exception:  # noqa: BLE001 - never into the AMI client
            self.stats["errors"] += 1
            log.exception("screen-pop: could not take an event")

    def reconcile(self, active: Iterable[str], *, before: float) -> int:
        """End the cards of calls Asterisk no longer has (after a resync).

        `active`: caller Uniqueids waiting or connected now; `before`: a
        `time.monotonic()` taken when the resync began (calls seen since are
        left alone).  Returns how many calls were ended.
        """
        alive = set(active)
        gone = [uid for uid, call in self._calls.items() if uid not in alive and call.touched < before]
        for uid in gone:
            self._enqueue(uid, ("lost", None))
        return len(gone)

    def cards_for(self, agent_id: Any) -> list[dict[str, Any]]:
        """The cards an agent has on screen now (ringing or answered), for a page that just opened."""
        found = []
        for call in self._calls.values():
            for card in call.agents.values():
                if card.agent_id == agent_id and card.state != ENDED and card.message is not None:
                    found.append(card.message)
        return sorted(found, key=lambda m: m["at"])

    def wrapped_up_by(self, agent_id: Any) -> list[dict[str, Any]]:
        """The cards of the calls this agent answered that ended in the last `WRAP_UP_SECONDS`.

        Their records may not be written yet; the agent still owns them (disposition, notes)."""
        cards = self._wrap_up.get(agent_id)
        if not cards:
            return []
        horizon = time.monotonic() - WRAP_UP_SECONDS
        while cards and cards[0][0] < horizon:
            cards.popleft()
        return [card for _, card in cards]

    def segment_of(self, call_id: str) -> str | None:
        """The customer segment of a call whose context was found (for `QueueState(segment_of=...)`)."""
        return self._segments.get(call_id)

    @property
    def calls(self) -> int:
        """Calls followed now."""
        return len(self._calls)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued event is handled (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            while self._lanes:
                await asyncio.sleep(0.001)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._calls.clear()
        self._lanes.clear()
        self._segments.clear()

    # -- lanes: one call's events in order ------------------------------------------
    def _enqueue(self, uid: str, item: tuple[str, Any]) -> None:
        lane = self._lanes.get(uid)
        if lane is not None:
            lane.append(item)
            return
        lane = self._lanes[uid] = deque((item,))
        self._spawn(self._run_lane(uid, lane), f"screenpop-{uid}")

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_lane(self, uid: str, lane: deque[tuple[str, Any]]) -> None:
        try:
            while lane:
                kind, data = lane[0]
                try:
                    await self._handle(uid, kind, data)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the next event still gets its turn
                    self.stats["errors"] += 1
                    log.exception("screen-pop: failed on a %s for channel %s", _kind_name(kind, data), uid)
                lane.popleft()
        finally:
            if self._lanes.get(uid) is lane:
                del self._lanes[uid]

    # -- handling ----------------------------------------------------------------------
    async def _handle(self, uid: str, kind: str, data: Any) -> None:
        call = self._calls.get(uid)
        if kind == "context":
            if call is not None and call.status != "found":
                self.stats["late_contexts"] += 1
                self._set_context(call, data, "found")
                await self._republish(call)
            return
        if kind == "missing":
            if call is not None and call.status == "pending":
                self.stats["missing_contexts"] += 1
                log.info("screen-pop: no call context for channel %s (number %s); card stays without it",
                         uid, mask(call.number))
                call.status = "missing"
                self._rebuild_card(call)
                await self._republish(call)
            return
        if kind == "left":
            if call is not None and call.left and call.connected is None:
                await self._end_call(call, "left")
            return
        if kind == "lost":
            if call is not None:
                await self._end_call(call, "lost", self._clock())
            return

        event: AmiEvent = data
        at = event.at(self._clock)
        if call is None:
            if event.name not in _OPENING:
                return  # nothing on anybody's screen for this call
            call = await self._new_call(uid, event)
        call.touched = time.monotonic()
        call.at = at
        self._fill(call, event)
        await _handles[event.name](self, call, event, at)

    # Each handler takes the call (followed, filled from the event), the event and its time.

    @_handles("QueueCallerJoin")
    async def _on_join(self, call: _Call, event: AmiEvent, at: float) -> None:
        if call.left and call.connected is None:
            # Left one queue without an agent and joined another: the old rings are over.
            call.left = False
            if call.leave_timer is not None:
                call.leave_timer.cancel()
            for card in list(call.agents.values()):
                if card.state == RINGING:
                    await self._show(call, card.interface, None, ENDED, "left", at)

    @_handles("AgentCalled")
    async def _on_called(self, call: _Call, event: AmiEvent, at: float) -> None:
        await self._show(call, event.member() or "", event, RINGING, None, at)

    @_handles("AgentConnect")
    async def _on_connect(self, call: _Call, event: AmiEvent, at: float) -> None:
        interface = event.member() or ""
        call.connected = interface
        call.left = False
        if call.leave_timer is not None:
            call.leave_timer.cancel()
        await self._show(call, interface, event, ANSWERED, None, at)
        for other in list(call.agents.values()):
            if other.interface != interface and other.state == RINGING:
                await self._show(call, other.interface, None, ENDED, "answered_elsewhere", at)

    @_handles("AgentComplete")
    async def _on_complete(self, call: _Call, event: AmiEvent, at: float) -> None:
        await self._show(call, event.member() or "", event, ENDED, "completed", at)
        await self._end_call(call, "completed")

    @_handles("AgentRingNoAnswer", "AgentDump")
    async def _on_not_answered(self, call: _Call, event: AmiEvent, at: float) -> None:
        interface = event.member() or ""
        card = call.agents.get(interface)
        if card is not None and card.state != ENDED:
            reason = "no_answer" if event.name == "AgentRingNoAnswer" else "dumped"
            await self._show(call, interface, event, ENDED, reason, at)

    @_handles("QueueCallerAbandon")
    async def _on_abandon(self, call: _Call, event: AmiEvent, at: float) -> None:
        await self._end_call(call, "abandoned")

    @_handles("QueueCallerLeave")
    async def _on_leave(self, call: _Call, event: AmiEvent, at: float) -> None:
        if call.connected is None:
            # Asterisk sends the Leave of an answered call just before its AgentConnect.
            call.left = True
            if call.leave_timer is None or call.leave_timer.done():
                call.leave_timer = self._spawn(self._leave_later(call.uniqueid), f"screenpop-leave-{call.uniqueid}")

    @_handles("Hangup")
    async def _on_hangup(self, call: _Call, event: AmiEvent, at: float) -> None:
        await self._end_call(call, "hangup")

    EVENTS = _handles.events  # the events `on_event` takes; everything else is ignored cheaply

    async def _new_call(self, uid: str, event: AmiEvent) -> _Call:
        call_id_var = event.variables.get(CALL_ID)
        linkedid = event.header("Linkedid")
        call = _Call(uniqueid=uid, key=call_id_var or uid, linkedid=linkedid, call_id_var=call_id_var,
                     touched=time.monotonic())
        self._fill(call, event)
        self._calls[uid] = call
        context = await self._lookup(call)
        if context is not None:
            if not call_id_var and context.get("call_id"):
                call.key = str(context["call_id"])
            self._set_context(call, context, "found")
        else:
            self._rebuild_card(call)
            if self.retry_delays:
                call.retry = self._spawn(self._retry(uid), f"screenpop-retry-{uid}")
            else:
                call.status = "missing"
                self._rebuild_card(call)
        return call

    def _fill(self, call: _Call, event: AmiEvent) -> None:
        call.queue = event.header("Queue") or call.queue
        call.linkedid = call.linkedid or event.header("Linkedid")
        number = _number(event.header("CallerIDNum"))
        name = _number(event.header("CallerIDName"))
        changed = False
        if number and number != call.number:
            call.number, changed = number, True
        if name and name != call.caller_name:
            call.caller_name, changed = name, True
        if not call.call_id_var:
            call.call_id_var = event.variables.get(CALL_ID)
        if changed and call.status != "found":
            self._rebuild_card(call)

    def _set_context(self, call: _Call, context: dict[str, Any], status: str) -> None:
        call.context = context
        call.status = status
        segment = (context.get("decision") or {}).get("segment")
        if segment:
            self._segments[call.key] = str(segment)
        if call.retry is not None:
            call.retry.cancel()
            call.retry = None
        self._rebuild_card(call)

    def _rebuild_card(self, call: _Call) -> None:
        call.card = build_card(call.context, number=call.number, caller_name=call.caller_name, status=call.status)

    def _keys(self, call: _Call) -> list[str]:
        keys: list[str] = []
        for key in (call.call_id_var, call.uniqueid, call.linkedid):
            if key and key not in keys:
                keys.append(key)
        return keys

    async def _lookup(self, call: _Call) -> dict[str, Any] | None:
        for key in self._keys(call):
            try:
                async with asyncio.timeout(self.lookup_timeout):
                    context = await self.contexts.get(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the card goes out without a context
                self.stats["lookup_errors"] += 1
                if not self._lookup_failing:
                    self._lookup_failing = True
                    log.warning("screen-pop: call context lookups fail (%s); cards show the caller's number "
                                "until they work again", exc or type(exc).__name__)
                continue
            if self._lookup_failing:
                self._lookup_failing = False
                log.info("screen-pop: call context lookups work again")
            if context is not None:
                return context
        return None

    async def _retry(self, uid: str) -> None:
        for delay in self.retry_delays:
            await asyncio.sleep(delay)
            call = self._calls.get(uid)
            if call is None or call.status == "found":
                return
            context = await self._lookup(call)
            if context is not None:
                self._enqueue(uid, ("context", context))
                return
        if uid in self._calls:
            self._enqueue(uid, ("missing", None))

    async def _leave_later(self, uid: str) -> None:
        await asyncio.sleep(self.leave_grace)
        self._enqueue(uid, ("left", None))

    # -- publishing ------------------------------------------------------------------
    async def _show(self, call: _Call, interface: str, event: AmiEvent | None, state: str,
                    reason: str | None, at: float) -> None:
        if not interface:
            return
        card = call.agents.get(interface)
        if card is None:
            agent_id = await self._agent_id(interface, event.header("MemberName") if event is not None else None)
            if agent_id is None:
                return
            card = call.agents[interface] = _AgentCard(interface, agent_id, state)
        if state == RINGING and card.state == ANSWERED:
            return  # a late duplicate AgentCalled
        card.state = state
        await self._publish(call, card, reason, at)

    async def _republish(self, call: _Call) -> None:
        """Send the current card again to every agent that has it on screen."""
        for card in list(call.agents.values()):
            if card.state != ENDED and card.message is not None:
                await self._publish(call, card, None, card.message["at"])

    async def _publish(self, call: _Call, card: _AgentCard, reason: str | None, at: float) -> None:
        call.seq += 1
        message = {
            "type": "screenpop",
            "state": card.state,
            "reason": reason,
            "call_id": call.key,
            "uniqueid": call.uniqueid,
            "queue": call.queue,
            "interface": card.interface,
            "agent_id": card.agent_id,
            "card": call.card,
            "at": at,
            "seq": call.seq,
        }
        card.message = message
        if call.status == "pending":
            self.stats["pending_cards"] += 1
        try:
            await self.hub.publish(agent_topic(card.agent_id), message)
            self.stats["published"] += 1
        except Exception:  # noqa: BLE001 - the next event tries again
            self.stats["publish_errors"] += 1
            log.exception("screen-pop: could not publish a card for agent %s", card.agent_id)

    async def _agent_id(self, interface: str, member_name: str | None) -> Any:
        for candidate in (interface, member_name):
            if not candidate:
                continue
            try:
                agent_id = await self.agents(candidate)
            except Exception as exc:  # noqa: BLE001
                self.stats["errors"] += 1
                log.warning("screen-pop: agent lookup for %s failed: %s", candidate, exc)
                agent_id = None
            if agent_id is not None:
                return agent_id
        self.stats["unknown_agents"] += 1
        if interface not in self._unknown_agents:
            self._unknown_agents.add(interface)
            log.warning("screen-pop: member %s (%s) is no known agent; no card shown to it",
                        interface, member_name or "-")
        return None

    async def _end_call(self, call: _Call, reason: str, at: float | None = None) -> None:
        for card in list(call.agents.values()):
            if card.state != ENDED:
                await self._show(call, card.interface, None, ENDED, reason, call.at if at is None else at)
        answered = call.agents.get(call.connected) if call.connected else None
        if answered is not None and answered.agent_id is not None and answered.message is not None:
            cards = self._wrap_up.setdefault(answered.agent_id, deque(maxlen=_WRAP_UP_CARDS))
            cards.append((time.monotonic(), answered.message))
        self._forget(call)

    def _forget(self, call: _Call) -> None:
        for task in (call.retry, call.leave_timer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._calls.pop(call.uniqueid, None)
        self._segments.pop(call.key, None)

    def _prune(self) -> None:
        horizon = time.monotonic() - self.keep_seconds
        for call in [c for c in self._calls.values() if c.touched < horizon]:
            self._forget(call)


def _kind_name(kind: str, data: Any) -> str:
    if kind == "event" and isinstance(data, AmiEvent):
        return data.name or "event"
    return kind
