"""The live WebSocket: screen-pop cards for agents, queue snapshots for supervisors.

``/ws?feed=agent`` follows the logged-in agent's own topic (every device the
agent is logged in on gets the same cards); ``/ws?feed=wallboard`` (supervisors)
follows the wallboard.  A page that (re)connects first gets what is on
screen now (the agent's current cards, the current wallboard), then every
message as the hub delivers it, so a reconnect never loses a card.  The
handshake must come from this site (Origin), with a logged-in session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ivr.hub import WALLBOARD, agent_topic
from ivr.web.auth import origin_ok, require
from ivr.web.keys import AGENT_SIDE, SOCKETS, USER

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
HEARTBEAT = 20.0


def wallboard_now(agent_side: Any) -> dict[str, Any]:
    """The wallboard message as it would be published now, with or without AMI."""
    if agent_side.center is not None:
        return agent_side.center.wallboard()
    import time

    return {"type": "wallboard", "at": time.time(), "queues": agent_side.queue_state.snapshot(),
            "stats": agent_side.queue_stats.snapshot(), "ami": {"connected": False, "since": None,
                                                                 "last_error": "AMI not configured"}}


@routes.get("/ws")
@require("agent")
async def websocket(request: web.Request) -> web.StreamResponse:
    if not origin_ok(request):
        raise web.HTTPForbidden(text="cross-site WebSocket refused")
    user = request[USER]
    feed = request.query.get("feed", "agent")
    agent_side = request.app[AGENT_SIDE]
    if feed == "wallboard":
        if not user.has("supervisor"):
            raise web.HTTPForbidden(text="the wallboard needs the supervisor role")
        topic, first = WALLBOARD, [wallboard_now(agent_side)]
    elif feed == "agent":
        if user.agent_id is None:
            raise web.HTTPForbidden(text="this user is not linked to an agent")
        topic = agent_topic(user.agent_id)
        first = [{"type": "cards", "cards": agent_side.screenpop.cards_for(user.agent_id)}]
    else:
        raise web.HTTPBadRequest(text="feed must be agent or wallboard")

    socket = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4096)
    subscription = agent_side.hub.subscribe(topic)  # before the snapshot: nothing falls in between
    try:
        await socket.prepare(request)
        request.app[SOCKETS].add(socket)
        for message in first:
            await socket.send_json(message)
        sender = asyncio.ensure_future(_forward(subscription, socket))
        try:
            async for incoming in socket:  # pings are answered by aiohttp; pages send nothing else
                if incoming.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    finally:
        subscription.close()
    return socket


async def _forward(subscription: Any, socket: web.WebSocketResponse) -> None:
    try:
        async for message in subscription:
            await socket.send_json(message)
    except (ConnectionError, RuntimeError) as exc:  # the page went away mid-send
        log.debug("WebSocket closed while sending: %s", exc)
    finally:
        if not socket.closed:
            await socket.close()
