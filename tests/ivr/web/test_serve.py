"""`serve()` with the web app, in this process: start-up line, clean shutdown, and calls served
even when the web port is taken."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from dataclasses import replace

import aiohttp

from caller_id.store import Database
from ivr.server import serve
from ivr.sim.fastagi_caller import CallScript, place_call
from ivr.web.auth import add_user
from ivr.web.client import log_in
from tests.ivr.web.conftest import PASSWORD
from tests.servers import free_port
from tests.waiting import within


async def _running(config, capsys) -> tuple[asyncio.Task, str]:
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve(config, ready=ready))
    waiting = asyncio.ensure_future(ready.wait())
    await within(asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED), 60)
    waiting.cancel()
    if task.done():
        task.result()  # serve() failed: raise it here
    return task, capsys.readouterr().out


async def _stop(task: asyncio.Task) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # serve() handles it on its loop
    await within(task, 30)


async def test_serve_announces_the_web_app_and_closes_its_sockets_at_shutdown(base_config, capsys):
    db = Database(base_config.database_url)
    try:
        await db.migrate()
        await add_user(db, "sup", PASSWORD, "supervisor")
    finally:
        await db.dispose()
    port = free_port()
    config = replace(base_config, web=replace(base_config.web, host="127.0.0.1", port=port))
    task, out = await _running(config, capsys)
    try:
        line = next(line for line in out.splitlines() if line.strip().startswith("web"))
        assert line == f"  web       : http://127.0.0.1:{port}/  (agents /agent, supervisors /wallboard)"
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            assert (await log_in(browser, "sup", PASSWORD)).status == 302
            ws = await browser.ws_connect("/ws?feed=wallboard")
            assert (await ws.receive_json(timeout=5))["type"] == "wallboard"
            await _stop(task)
            while (message := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
                pass
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
    finally:
        if not task.done():
            await _stop(task)


async def test_calls_are_served_when_the_web_port_is_taken(base_config, capsys):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = replace(base_config, web=replace(base_config.web, host="127.0.0.1", port=port))
        task, out = await _running(config, capsys)
        try:
            assert f"web       : NOT serving: cannot listen on 127.0.0.1:{port}" in out
            agi_port = int(re.search(r"agi://[\d.]+:(\d+)/inbound", out).group(1))
            result = await place_call("127.0.0.1", agi_port, CallScript(number="+79000000003", line="general"))
            assert result.error is None and result.variables.get("IVR_QUEUE")
        finally:
            await _stop(task)
