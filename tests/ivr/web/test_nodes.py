"""Two server nodes sharing Redis and the database: a card published on one reaches a page served by the other."""

from __future__ import annotations

import uuid
from dataclasses import replace

import aiohttp
import pytest

from ivr.services import AgentSide
from ivr.agents.hub import agent_topic
from ivr.web.app import address_of, start_web
from ivr.web.auth import add_user
from ivr.web.client import log_in
from tests.ivr.web.conftest import PASSWORD
from tests.waiting import eventually


@pytest.mark.redis
async def test_a_card_published_on_one_node_reaches_the_agent_page_on_another(base_config, start_server, redis_url):
    config = replace(base_config, redis_url=f"{redis_url.rsplit('/', 1)[0]}/{uuid.uuid4().int % 16}")
    nodes = []
    for _ in range(2):
        server = await start_server(config)
        side = AgentSide(config, server.services)
        await side.start()
        nodes.append((server, side, await start_web(server.services, side, host="127.0.0.1", port=0)))
    try:
        (server_a, side_a, _), (_, side_b, web_b) = nodes
        await add_user(server_a.services.db, "anna", PASSWORD, "agent", 1)
        async with aiohttp.ClientSession(f"http://{address_of(web_b)}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            response = await log_in(browser, "anna", PASSWORD)
            assert response.status == 302  # the session written through node B's database is shared
            socket = await browser.ws_connect("/ws?feed=agent")
            assert (await socket.receive_json(timeout=5))["type"] == "cards"
            await eventually(lambda: side_b.hub.subscribers(agent_topic(1)) == 1)
            await side_b.hub.wait_connected(5)
            message = {"type": "screenpop", "call_id": "from-node-a", "seq": 1, "state": "ringing"}
            for _ in range(50):  # until node B's Redis subscription is in place
                await side_a.hub.publish(agent_topic(1), message)
                try:
                    received = await socket.receive_json(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail("the card never crossed the nodes")
            assert received["call_id"] == "from-node-a"
            await socket.close()
    finally:
        for _, side, web in nodes:
            await web.cleanup()
            await side.stop()
