"""Operations and edges of the web app over real TCP: /healthz states, /metrics figures, JSON errors,
roles, and supervisor actions when Asterisk is not there."""

from __future__ import annotations

import re
from dataclasses import replace

import aiohttp
import pytest
from sqlalchemy import select

from caller_id.models import Case
from caller_id.store import Database
from ivr.services import AgentSide
from ivr.config import AmiSettings
from ivr.web.app import address_of, start_web
from ivr.web.auth import add_user
from ivr.web.client import log_in
from tests.ivr.web.conftest import PASSWORD, csrf_of
from tests.servers import free_port
from tests.waiting import eventually


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format (labels must match exactly)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        found = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if found is None or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(2) or ""))
        if have == labels:
            return float(found.group(3))
    return None


async def test_metrics_carry_live_queues_and_component_counters(web_server):
    sim = web_server.sim
    sim.pause_member("PJSIP/1004", True, "lunch", "support")
    sim.place_caller("support", callerid='"" <79000000003>')
    await eventually(lambda: web_server.agent_side.queue_state.snapshot()["queues"]["support"]["callers_waiting"])
    async with await web_server.client() as anonymous:
        async with anonymous.get("/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            text = await response.text()
    assert _sample(text, "ivr_queue_callers_waiting", queue="support") == 1
    assert _sample(text, "ivr_queue_agents", queue="support", state="available") == 3
    assert _sample(text, "ivr_queue_agents", queue="support", state="paused") == 1
    assert _sample(text, "ivr_queue_agents", queue="vip", state="logged_in") == 0
    assert _sample(text, "ivr_queue_longest_wait_seconds", queue="support") >= 0
    assert _sample(text, "ivr_queue_window_calls", queue="", segment="", outcome="answered") == 0
    assert _sample(text, "ivr_ami_connected") == 1 and _sample(text, "ivr_hub_connected") == 1
    assert _sample(text, "ivr_component_events_total", component="ami", counter="events") > 0
    assert _sample(text, "ivr_component_events_total", component="callcenter", counter="events") > 0
    assert "# TYPE ivr_calls_total counter" in text  # the call path's own metrics are there too


async def test_healthz_says_degraded_without_asterisk_and_failing_without_the_database(web_server):
    async with await web_server.client("sup") as supervisor, await web_server.client() as anonymous:
        await web_server.sim.close()
        await eventually(lambda: not web_server.agent_side.ami.connected)
        async with supervisor.get("/healthz") as response:
            health = await response.json()
        assert response.status == 200 and health["status"] == "degraded"
        assert health["checks"]["ami_connected"] is False and health["checks"]["database"] == "ok"
        async with anonymous.get("/healthz") as response:
            assert await response.json() == {"status": "degraded"}

    # a database server that is not there (nothing listens on the port)
    broken = replace(web_server.services, db=Database(f"postgresql+asyncpg://ivr@127.0.0.1:{free_port()}/ivr"))
    runner = await start_web(broken, web_server.agent_side, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession(f"http://{address_of(runner)}") as anonymous:
            async with anonymous.get("/healthz") as response:
                health = await response.json()
            assert response.status == 503 and health == {"status": "failing"}
    finally:
        await runner.cleanup()
        await broken.db.dispose()


async def test_supervisor_actions_say_clearly_when_asterisk_is_not_there(web_server):
    async with await web_server.client("sup") as browser:
        headers = {"X-CSRF-Token": await csrf_of(browser)}
        await web_server.sim.close()
        await eventually(lambda: not web_server.agent_side.ami.connected)
        async with browser.post("/api/v1/actions/pause", headers=headers,
                                json={"interface": "PJSIP/1001", "reason": "lunch"}) as response:
            assert response.status == 503
            assert "Asterisk is not connected" in (await response.json())["error"]

    # a node configured without AMI at all
    config = replace(web_server.services.config, ami=AmiSettings(host=None))
    side = AgentSide(config, web_server.services)
    runner = await start_web(web_server.services, side, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession(f"http://{address_of(runner)}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            assert (await log_in(browser, "sup", PASSWORD)).status == 302
            headers = {"X-CSRF-Token": await csrf_of(browser)}
            async with browser.post("/api/v1/actions/add", headers=headers,
                                    json={"queue": "vip", "interface": "PJSIP/1001"}) as response:
                assert response.status == 503 and "no AMI connection" in (await response.json())["error"]
            async with browser.get("/api/v1/queues") as response:  # the wallboard still answers
                assert response.status == 200 and (await response.json())["ami"]["connected"] is False
    finally:
        await runner.cleanup()
        await side.stop()


async def test_roles_nest_admin_over_supervisor_over_agent(web_server):
    await add_user(web_server.services.db, "root", PASSWORD, "admin")
    async with await web_server.client("root") as admin:
        async with admin.get("/", allow_redirects=False) as response:
            assert response.headers["Location"] == "/wallboard"
        for path in ("/wallboard", "/api/v1/queues", "/api/v1/agents", "/api/v1/calls"):
            async with admin.get(path) as response:
                assert response.status == 200, path
        async with admin.get("/agent", allow_redirects=False) as response:  # takes no calls
            assert response.status == 302 and response.headers["Location"] == "/wallboard"
    async with await web_server.client("anna") as agent:
        headers = {"X-CSRF-Token": await csrf_of(agent)}
        async with agent.post("/api/v1/actions/pause", headers=headers, json={"interface": "PJSIP/1002"}) as response:
            assert response.status == 403 and "supervisor" in (await response.json())["error"]
        assert not web_server.sim.queue("support").members["PJSIP/1002"].paused


async def test_api_errors_are_json(web_server):
    async with await web_server.client("anna") as browser:
        headers = {"X-CSRF-Token": await csrf_of(browser)}
        for method, path, kwargs, status in (
            ("GET", "/api/v1/no-such-thing", {}, 404),
            ("DELETE", "/api/v1/calls", {"headers": headers}, 405),
            ("POST", "/api/v1/calls/x/disposition", {"headers": {**headers, "Content-Type": "application/json"},
                                                     "data": b"not json"}, 400),
            ("POST", "/api/v1/calls/x/disposition", {"headers": headers, "data": b"not json"}, 415),
            ("POST", "/api/v1/cases/1/notes", {"headers": headers, "json": {"text": "x" * 70_000}}, 413),
            ("GET", "/api/v1/customers/abc", {}, 400),
            ("GET", "/api/v1/cases/999999", {}, 404),
        ):
            async with browser.request(method, path, **kwargs) as response:
                assert response.status == status, (method, path, response.status)
                assert response.content_type == "application/json", (method, path)
                assert (await response.json())["error"], (method, path)
    async with await web_server.client() as anonymous:
        async with anonymous.get("/api/v1/calls") as response:
            assert response.status == 401 and "log in" in (await response.json())["error"]


async def test_cases_of_a_customer_open_or_all(web_server):
    from tests.ivr.web.test_web import insert_call

    async with web_server.services.db.session() as session:
        case = await session.scalar(select(Case).where(Case.status == "closed").limit(1))
    await insert_call(web_server, "anna-and-the-customer", web_server.agents["PJSIP/1001"], case.customer_id)
    async with await web_server.client("anna") as browser:
        async with browser.get("/api/v1/cases", params={"customer_id": case.customer_id}) as response:
            every = (await response.json())["cases"]
        async with browser.get("/api/v1/cases", params={"customer_id": case.customer_id, "open": "true"}) as response:
            still_open = (await response.json())["cases"]
        async with browser.get("/api/v1/cases") as response:
            assert response.status == 400
    assert case.id in {c["id"] for c in every} and case.id not in {c["id"] for c in still_open}
    assert all(c["customer_id"] == case.customer_id for c in every)


async def test_pages_forbid_framing_inline_code_and_caching(web_server):
    async with await web_server.client("sup") as browser:
        async with browser.get("/wallboard") as response:
            page = await response.text()
            headers = response.headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    assert "<script>" not in page and " style=" not in page  # nothing the policy would block
    async with await web_server.client() as anonymous:
        async with anonymous.get("/wallboard", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["X-Frame-Options"] == "DENY"


_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + "-shm", os.O_RDWR)
# The WAL index's write, checkpoint, recovery and read-mark locks, as another process holding the
# file would have them: no connection can read or write until they are released.
fcntl.lockf(fd, fcntl.LOCK_EX, 8, 120)
print("locked", flush=True)
sys.stdin.read()
"""


async def test_healthz_answers_in_time_while_the_database_is_locked(web_server):
    import asyncio
    import sys
    import time

    path = web_server.services.db.url.database
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", _HOLD_LOCK, path,
                                                  stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(holder.stdout.readline(), 10)).strip() == b"locked"
        async with await web_server.client() as anonymous:
            for _ in range(4):
                began = time.monotonic()
                async with anonymous.get("/healthz", timeout=aiohttp.ClientTimeout(total=5)) as response:
                    assert response.status == 503 and await response.json() == {"status": "failing"}
                assert time.monotonic() - began < 3.0
    finally:
        holder.stdin.close()
        await holder.wait()
    async with await web_server.client("sup") as supervisor:  # and once the lock is gone, it recovers
        for _ in range(100):
            async with supervisor.get("/healthz") as response:
                health = await response.json()
            if response.status == 200:
                break
            await asyncio.sleep(0.2)
        assert health["checks"]["database"] == "ok"


async def test_healthz_details_with_the_configured_token(web_server):
    from dataclasses import replace

    config = web_server.services.config
    web_server.services.config = replace(config, web=replace(config.web, healthz_token="operators-probe-token"))
    async with await web_server.client() as anonymous:
        async with anonymous.get("/healthz", headers={"Authorization": "Bearer operators-probe-token"}) as response:
            assert (await response.json())["checks"]["database"] == "ok"
        for wrong in ("Bearer wrong", "operators-probe-token", "Bearer \u00e9"):
            async with anonymous.get("/healthz", headers={"Authorization": wrong}) as response:
                assert await response.json() == {"status": "ok"}


def _assert_secure_headers(headers, what: str, *, cacheable: bool = False) -> None:
    policy = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, what
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "same-origin", what
    assert headers.get("X-Frame-Options") == "DENY", what
    if cacheable:
        assert "no-store" not in headers.get("Cache-Control", ""), what
    else:
        assert headers.get("Cache-Control") == "no-store", what


async def test_every_kind_of_answer_carries_the_security_headers(web_server):
    async with await web_server.client("anna") as browser, await web_server.client() as anonymous:
        csrf = await csrf_of(browser)
        for client, method, path, kwargs in (
            (anonymous, "GET", "/login", {}),
            (anonymous, "GET", "/", {}),
            (anonymous, "GET", "/api/v1/me", {}),
            (browser, "GET", "/api/v1/me", {}),
            (browser, "GET", "/api/v1/calls", {}),
            (browser, "GET", "/agent", {}),
            (browser, "GET", "/wallboard", {}),
            (browser, "GET", "/api/v1/no-such-route", {}),
            (browser, "GET", "/no-such-page", {}),
            (browser, "DELETE", "/api/v1/calls", {"headers": {"X-CSRF-Token": csrf}}),
            (browser, "GET", "/api/v1/customers/abc", {}),
            (browser, "POST", "/api/v1/cases/1/notes", {"headers": {"X-CSRF-Token": csrf}, "data": b"x"}),
            (browser, "POST", "/api/v1/cases/1/notes", {"headers": {"X-CSRF-Token": csrf},
                                                        "json": {"text": "x" * 70_000}}),
            (browser, "GET", "/ws?feed=wallboard", {}),  # refused: not a supervisor
            (browser, "GET", "/static/no-such-file.js", {}),
            (anonymous, "GET", "/healthz", {}),
            (anonymous, "GET", "/metrics", {}),
        ):
            async with client.request(method, path, allow_redirects=False, **kwargs) as response:
                _assert_secure_headers(response.headers, f"{method} {path} -> {response.status}")
        async with anonymous.get("/static/agent.js") as response:
            assert response.status == 200
            _assert_secure_headers(response.headers, "static", cacheable=True)


async def test_with_secure_cookies_every_cookie_is_secure(web_server):
    from dataclasses import replace

    config = web_server.services.config
    services = replace(web_server.services, config=replace(config, web=replace(config.web, secure_cookies=True)))
    runner = await start_web(services, web_server.agent_side, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession(f"http://{address_of(runner)}") as browser:
            async with browser.get("/login") as response:
                form_cookie = response.cookies["ivr_login"]
                token = (await response.text()).split('name="login_token" value="', 1)[1].split('"', 1)[0]
                assert response.headers["Strict-Transport-Security"].startswith("max-age=")
            async with browser.post("/login", allow_redirects=False,
                                    data={"username": "sup", "password": PASSWORD, "login_token": token},
                                    headers={"Cookie": f"ivr_login={form_cookie.value}"}) as response:
                assert response.status == 302
                session_cookie, cleared = response.cookies["ivr_session"], response.cookies["ivr_login"]
            async with browser.post("/logout", allow_redirects=False, data={"csrf_token": "x" * 20},
                                    headers={"Cookie": f"ivr_session={session_cookie.value}"}) as response:
                assert response.status == 403  # wrong CSRF token: refused, nothing cleared
            for cookie in (form_cookie, session_cookie, cleared):
                assert cookie["secure"] and cookie["httponly"], cookie.key
    finally:
        await runner.cleanup()
