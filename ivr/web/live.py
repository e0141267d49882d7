"""The live WebSocket: screen-pop cards for agents, queue snapshots for supervisors.

``/ws?feed=agent`` follows the logged-in agent's own topic (every device the
agent is logged in on gets the same cards) and, with ``&states=true``, the
agent's own state in the queues (``{"type": "agent_state", "state": {...} |
null, "connected": <Asterisk is>, "at": ...}``: first, then whenever a wallboard snapshot shows it
changed, not for the seconds that tick); ``/ws?feed=wallboard`` (supervisors)
follows the wallboard.  A page that (re)connects first gets what is on
screen now (the agent's current cards, the current wallboard), then every
message as the hub delivers it, so a reconnect never loses a card.  The
handshake must come from this site (Origin), with a logged-in session.

A socket lives no longer than its session: logging out closes the sockets
of that session at once, and every `RECHECK` seconds each socket looks its
session up again (expired, logged out on another node, user deactivated),
closing with code `SESSION_ENDED` when it is gone, which sends the page
to the log-in.  When the hub has nothing to say for `KEEPALIVE` seconds
the page gets ``{"type": "alive"}``, so a page can tell a quiet feed from a
dead connection and reconnect on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy import select

from caller_id.models import Agent
from ivr.agents.callcenter import wallboard
from ivr.agents.hub import WALLBOARD, SubscriptionClosed, agent_topic
from ivr.services import AgentSide
from ivr.web.auth import COOKIE, origin_ok, require
from ivr.web.inputs import Input, params, refusal
from ivr.web.keys import AGENT_SIDE, SERVICES, SESSIONS, SOCKETS, USER

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
HEARTBEAT = 20.0  # WebSocket pings; a page that stops answering is dropped
KEEPALIVE = 15.0  # an "alive" message after this long without any other
RECHECK = 30.0  # the session behind a socket is looked up again this often
SESSION_ENDED = 4401  # close code: log in again


class LiveSockets:
    """The open WebSockets of this app, by the session that opened them."""

    def __init__(self) -> None:
        self._by_session: dict[int, set[web.WebSocketResponse]] = {}

    def __len__(self) -> int:
        return sum(len(sockets) for sockets in self._by_session.values())

    def __iter__(self) -> Iterator[web.WebSocketResponse]:
        return iter([s for sockets in self._by_session.values() for s in sockets])

    def add(self, session_id: int, socket: web.WebSocketResponse) -> None:
        self._by_session.setdefault(session_id, set()).add(socket)

    def discard(self, session_id: int, socket: web.WebSocketResponse) -> None:
        sockets = self._by_session.get(session_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._by_session[session_id]

    async def close_session(self, session_id: int) -> int:
        """Close the sockets of one session (it logged out); how many."""
        sockets = list(self._by_session.get(session_id, ()))
        await asyncio.gather(*(s.close(code=SESSION_ENDED, message=b"logged out") for s in sockets),
                             return_exceptions=True)
        return len(sockets)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for s in self),
                             return_exceptions=True)


def wallboard_now(agent_side: AgentSide) -> dict[str, Any]:
    """The wallboard message as it would be published now, with or without AMI."""
    return wallboard(agent_side.queue_state, agent_side.queue_stats, agent_side.ami, time.time())


class Feed(Input):
    feed: Literal["agent", "wallboard"] = "agent"
    states: bool = False  # the agent feed: also the agent's own state


@routes.get("/ws")
@require("agent")
async def websocket(request: web.Request) -> web.StreamResponse:
    if not origin_ok(request):
        raise refusal(request, 403, "cross-site WebSocket refused")
    user = request[USER]
    query = params(request, Feed)
    feed = query.feed
    agent_side = request.app[AGENT_SIDE]
    if feed == "wallboard":
        if not user.has("supervisor"):
            raise refusal(request, 403, "the wallboard needs the supervisor role")
        topic = WALLBOARD
    else:
        if user.agent_id is None:
            raise refusal(request, 403, "this user is not linked to an agent")
        topic = agent_topic(user.agent_id)

    interface = await _interface_of(request, user.agent_id) if feed == "agent" and query.states else None
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4096)
    sockets: LiveSockets = request.app[SOCKETS]
    subscription = agent_side.hub.subscribe(topic)  # before the snapshot: nothing falls in between
    states = agent_side.hub.subscribe(WALLBOARD) if interface is not None else None
    try:
        await socket.prepare(request)
        sockets.add(user.session_id, socket)
        if feed == "wallboard":
            first = wallboard_now(agent_side)
        else:
            first = {"type": "cards", "cards": agent_side.screenpop.cards_for(user.agent_id)}
        await socket.send_str(json.dumps(first, ensure_ascii=False))
        helpers = [asyncio.ensure_future(_forward(subscription, socket)),
                   asyncio.ensure_future(_watch_session(request, socket))]
        if states is not None:
            helpers.append(asyncio.ensure_future(_forward_state(agent_side, states, interface, socket)))
        try:
            async for incoming in socket:  # pings are answered by aiohttp; pages send nothing else
                if incoming.type == WSMsgType.ERROR:
                    break
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
    except (ConnectionError, RuntimeError) as exc:  # the page went away during the first send
        log.debug("WebSocket closed early: %s", exc)
    finally:
        subscription.close()
        if states is not None:
            states.close()
        sockets.discard(user.session_id, socket)
    return socket


async def _interface_of(request: web.Request, agent_id: int) -> str | None:
    """The queue member interface of an agent (None when the database cannot say: no state is sent)."""
    try:
        async with request.app[SERVICES].db.session() as session:
            return await session.scalar(select(Agent.interface).where(Agent.id == agent_id))
    except Exception as exc:  # noqa: BLE001 - the cards still come
        log.warning("WebSocket: cannot read agent %s's interface (%s); no state on the page", agent_id, exc)
        return None


def _steady(state: dict[str, Any] | None) -> Any:
    """What of an agent's state the page shows apart from the seconds that tick."""
    if state is None:
        return None
    return {**{k: v for k, v in state.items() if k != "for"},
            "calls": [{k: v for k, v in call.items() if k != "talking_for"} for call in state.get("calls") or ()]}


async def _forward_state(agent_side: AgentSide, subscription: Any, interface: str,
                         socket: web.WebSocketResponse) -> None:
    """The agent's own state: now, then each time a wallboard snapshot shows it changed."""
    state = agent_side.queue_state.agent(interface)
    ami = agent_side.ami
    connected = bool(ami is not None and ami.state.connected)
    shown = (_steady(state), connected)
    try:
        await socket.send_str(json.dumps({"type": "agent_state", "state": state, "connected": connected,
                                          "at": time.time()}, ensure_ascii=False))
        while not socket.closed:
            message = await subscription.get()
            if message.get("type") != "wallboard":
                continue
            state = ((message.get("queues") or {}).get("agents") or {}).get(interface)
            connected = bool((message.get("ami") or {}).get("connected"))
            steady = (_steady(state), connected)
            if steady != shown:
                shown = steady
                await socket.send_str(json.dumps({"type": "agent_state", "state": state, "connected": connected,
                                                  "at": message.get("at")}, ensure_ascii=False))
    except SubscriptionClosed:
        pass
    except (ConnectionError, RuntimeError) as exc:
        log.debug("WebSocket closed while sending a state: %s", exc)


async def _forward(subscription: Any, socket: web.WebSocketResponse) -> None:
    """Hub messages to the page, and "alive" when there is none for a while."""
    try:
        while not socket.closed:
            message = subscription.get_nowait()
            if message is None:
                try:
                    message = await subscription.get(timeout=KEEPALIVE)
                except TimeoutError:
                    message = {"type": "alive", "at": time.time()}
            await socket.send_str(_encoded(message))
    except SubscriptionClosed:  # the hub is closing: the page reconnects
        pass
    except (ConnectionError, RuntimeError) as exc:  # the page went away mid-send
        log.debug("WebSocket closed while sending: %s", exc)
    finally:
        if not socket.closed:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"feed ended")


_recent: OrderedDict[int, tuple[dict[str, Any], str]] = OrderedDict()


def _encoded(message: dict[str, Any]) -> str:
    """The JSON text of a message, made once for all the pages that get the same message object
    (every supervisor gets the same wallboard, every device of an agent the same card)."""
    key = id(message)
    found = _recent.get(key)
    if found is not None and found[0] is message:  # holding the message keeps its id unique
        return found[1]
    text = json.dumps(message, ensure_ascii=False)
    _recent[key] = (message, text)
    if len(_recent) > 32:
        _recent.popitem(last=False)
    return text


async def _watch_session(request: web.Request, socket: web.WebSocketResponse) -> None:
    """Close the socket once its session is gone (expired, logged out elsewhere, user deactivated)."""
    sessions = request.app[SESSIONS]
    token = request.cookies.get(COOKIE)
    while not socket.closed:
        await asyncio.sleep(RECHECK)
        try:
            user = await sessions.user_for(token)
        except Exception as exc:  # noqa: BLE001 - a database hiccup does not log anyone out
            log.warning("WebSocket: cannot check the session (%s); keeping the socket", exc)
            continue
        if user is None:
            await socket.close(code=SESSION_ENDED, message=b"session ended")
            return
