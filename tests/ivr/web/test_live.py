"""The live WebSocket over real TCP: it lives no longer than its session, says it is alive, closes at shutdown."""

from __future__ import annotations

import datetime as dt

import aiohttp
from aiohttp import WSMsgType
from sqlalchemy import update

from caller_id.models import WebSession
from ivr.agents.hub import agent_topic
from ivr.web import live
from ivr.web.app import address_of, start_web
from ivr.web.client import log_in
from ivr.web.keys import SOCKETS
from tests.ivr.web.conftest import PASSWORD, csrf_of
from tests.waiting import eventually


async def _close_code(socket: aiohttp.ClientWebSocketResponse) -> int | None:
    """The code of the server's close frame, skipping whatever the feed sent before it (None: no frame)."""
    while True:
        message = await socket.receive(timeout=5)
        if message.type == WSMsgType.CLOSE:
            return message.data
        if message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            return None


async def test_logging_out_closes_that_session_s_sockets_only(web_server):
    async with await web_server.client("anna") as phone, await web_server.client("anna") as laptop:
        phone_socket = await phone.ws_connect("/ws?feed=agent")
        laptop_socket = await laptop.ws_connect("/ws?feed=agent")
        for socket in (phone_socket, laptop_socket):
            assert (await socket.receive_json(timeout=5))["type"] == "cards"
        async with phone.post("/logout", data={"csrf_token": await csrf_of(phone)},
                              allow_redirects=False) as response:
            assert response.status == 302
        assert await _close_code(phone_socket) == live.SESSION_ENDED
        # the laptop's own session goes on, and still gets the cards
        anna = web_server.agents["PJSIP/1001"]
        await eventually(lambda: web_server.agent_side.hub.subscribers(agent_topic(anna)) == 1)
        await web_server.agent_side.hub.publish(agent_topic(anna), {"type": "screenpop", "call_id": "c9", "seq": 1})
        assert (await laptop_socket.receive_json(timeout=5))["call_id"] == "c9"


async def test_a_socket_ends_when_its_session_expires(web_server, monkeypatch):
    monkeypatch.setattr(live, "RECHECK", 0.05)
    async with await web_server.client("sup") as browser:
        socket = await browser.ws_connect("/ws?feed=wallboard")
        assert (await socket.receive_json(timeout=5))["type"] == "wallboard"
        async with web_server.services.db.session() as session:
            await session.execute(update(WebSession).values(
                expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
            await session.commit()
        assert await _close_code(socket) == live.SESSION_ENDED


async def test_a_quiet_feed_says_it_is_alive(web_server, monkeypatch):
    monkeypatch.setattr(live, "KEEPALIVE", 0.05)
    async with await web_server.client("anna") as browser:
        async with browser.ws_connect("/ws?feed=agent") as socket:
            assert (await socket.receive_json(timeout=5))["type"] == "cards"
            message = await socket.receive_json(timeout=5)
            assert message["type"] == "alive" and isinstance(message["at"], float)


async def test_websocket_needs_a_login_and_a_known_feed(web_server):
    async with await web_server.client() as anonymous:
        try:
            await anonymous.ws_connect("/ws?feed=agent")
        except aiohttp.WSServerHandshakeError as refused:
            assert refused.status == 401
        else:
            raise AssertionError("an anonymous WebSocket was accepted")
    async with await web_server.client("sup") as supervisor:
        for feed, status in (("agent", 403), ("nonsense", 400)):  # "sup" takes no calls
            try:
                await supervisor.ws_connect(f"/ws?feed={feed}")
            except aiohttp.WSServerHandshakeError as refused:
                assert refused.status == status
            else:
                raise AssertionError(f"feed {feed} was accepted")


async def test_stopping_the_web_app_closes_its_sockets(web_server):
    runner = await start_web(web_server.services, web_server.agent_side, host="127.0.0.1", port=0)
    stopped = False
    try:
        async with aiohttp.ClientSession(f"http://{address_of(runner)}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            assert (await log_in(browser, "sup", PASSWORD)).status == 302
            socket = await browser.ws_connect("/ws?feed=wallboard")
            assert (await socket.receive_json(timeout=5))["type"] == "wallboard"
            assert len(runner.app[SOCKETS]) == 1
            await runner.cleanup()
            stopped = True
            assert await _close_code(socket) == aiohttp.WSCloseCode.GOING_AWAY
    finally:
        if not stopped:
            await runner.cleanup()
