"""The web app over real TCP: log-in, roles, CSRF, the live WebSocket, the REST API, AMI actions."""

from __future__ import annotations

import asyncio
import datetime as dt

import aiohttp
import pytest
from sqlalchemy import select, update

from caller_id.models import Agent, CallRecord, Case, User, WebSession
from ivr.agents.hub import WALLBOARD, agent_topic
from ivr.web.auth import add_user, hash_password, verify_password
from ivr.web.client import log_in
from ivr.web.api import OPENAPI
from tests.ivr.web.conftest import PASSWORD, csrf_of
from tests.waiting import eventually


def test_password_hash_round_trip_and_salt():
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("s3cret-pass", first) and verify_password("s3cret-pass", second)
    assert not verify_password("s3cret-pasS", first)
    assert not verify_password("s3cret-pass", "md5$garbage")


async def test_add_user_refuses_bad_input(web_server):
    db = web_server.services.db
    for args, message in (
        (("anna", PASSWORD, "agent", web_server.agents["PJSIP/1003"]), "exists already"),
        (("new", "short", "supervisor"), "at least 8"),
        (("new", PASSWORD, "boss"), "unknown role"),
        (("new", PASSWORD, "agent", 999_999), "no agent"),
        (("new", PASSWORD, "agent"), "needs the agent"),
        (("with space", PASSWORD, "admin"), "without spaces"),
    ):
        with pytest.raises(ValueError, match=message):
            await add_user(db, *args)
    async with db.session() as session:
        stored = await session.scalar(select(User.password_hash).where(User.username == "anna"))
    assert PASSWORD not in stored


async def test_login_logout_and_wrong_password(web_server):
    async with await web_server.client() as browser:
        async with browser.get("/agent", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"].startswith("/login")
        response = await log_in(browser, "anna", "nope")
        assert response.status == 401
        response = await log_in(browser, "anna", PASSWORD)
        assert response.status == 302 and response.headers["Location"] == "/agent"
        cookie = response.cookies["ivr_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        async with web_server.services.db.session() as session:
            name = (await session.get(Agent, web_server.agents["PJSIP/1001"])).name
        async with browser.get("/agent") as response:  # the header names the agent, not the log-in
            assert response.status == 200 and f'<b id="user-name">{name}</b>' in await response.text()
        token = await csrf_of(browser)
        async with browser.post("/logout", data={"csrf_token": token}, allow_redirects=False) as response:
            assert response.status == 302
        async with browser.get("/api/v1/me") as response:
            assert response.status == 401


async def test_repeated_failures_are_throttled(web_server):
    async with await web_server.client() as browser:
        for _ in range(5):
            assert (await log_in(browser, "sup", "wrong-one")).status == 401
        assert (await log_in(browser, "sup", PASSWORD)).status == 429


async def test_a_login_form_posted_from_elsewhere_is_refused(web_server):
    async with await web_server.client() as browser:
        async with browser.post("/login", data={"username": "anna", "password": PASSWORD},
                                allow_redirects=False) as response:
            assert response.status == 403 and "Форма входа устарела" in await response.text()  # web.language
            assert "ivr_session" not in response.cookies


async def test_writes_without_the_csrf_token_are_refused(web_server):
    async with await web_server.client("sup") as browser:
        async with browser.post("/api/v1/actions/pause", json={"interface": "PJSIP/1001"}) as response:
            assert response.status == 403 and "CSRF" in (await response.json())["error"]
        async with browser.post("/logout", allow_redirects=False) as response:
            assert response.status == 403
        token = await csrf_of(browser)
        async with browser.post("/api/v1/actions/pause", json={"interface": "PJSIP/1001"},
                                headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}) as response:
            assert response.status == 403


async def test_session_expires_after_inactivity(web_server):
    async with await web_server.client("anna") as browser:
        async with web_server.services.db.session() as session:
            await session.execute(update(WebSession).values(
                expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
            await session.commit()
        async with browser.get("/api/v1/me") as response:
            assert response.status == 401


async def test_agent_cannot_open_supervisor_pages_or_other_agents_calls(web_server):
    dmitry_id = web_server.agents["PJSIP/1002"]
    await insert_call(web_server, "call-of-dmitry", dmitry_id)
    async with await web_server.client("anna") as browser:
        for path in ("/wallboard", "/api/v1/queues", "/api/v1/agents", "/api/v1/predictions"):
            async with browser.get(path, allow_redirects=False) as response:
                assert response.status == 403, path
        async with browser.get("/api/v1/calls/call-of-dmitry") as response:
            assert response.status == 404  # as if there were no such call
        async with browser.get("/api/v1/calls") as response:
            assert all(c["call_id"] != "call-of-dmitry" for c in (await response.json())["calls"])
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await browser.ws_connect("/ws?feed=wallboard")
        assert refused.value.status == 403
    # the owner can
    async with await web_server.client("dmitry") as browser:
        async with browser.get("/api/v1/calls/call-of-dmitry") as response:
            assert response.status == 200


async def insert_call(web_server, call_id: str, agent_id: int | None, customer_id: int | None = 1) -> None:
    async with web_server.services.db.session() as session:
        session.add(CallRecord(call_id=call_id, agent_id=agent_id, customer_id=customer_id, queue="support",
                               predicted_intent="card_pickup", context={}))
        await session.commit()


async def test_screenpop_reaches_every_device_of_the_agent_and_no_one_else(web_server):
    anna = web_server.agents["PJSIP/1001"]
    hub = web_server.agent_side.hub
    phone, laptop, other = [await web_server.client(name) for name in ("anna", "anna", "dmitry")]
    try:
        sockets = [await c.ws_connect("/ws?feed=agent") for c in (phone, laptop)]
        dmitry_socket = await other.ws_connect("/ws?feed=agent")
        for socket in (*sockets, dmitry_socket):
            assert (await socket.receive_json(timeout=5))["type"] == "cards"
        await eventually(lambda: hub.subscribers(agent_topic(anna)) == 2)
        await hub.publish(agent_topic(anna), {"type": "screenpop", "call_id": "c1", "seq": 1, "state": "ringing"})
        for socket in sockets:
            message = await socket.receive_json(timeout=5)
            assert message["call_id"] == "c1" and message["state"] == "ringing"
        with pytest.raises(asyncio.TimeoutError):
            await dmitry_socket.receive_json(timeout=0.3)
    finally:
        for client in (phone, laptop, other):
            await client.close()


async def test_wallboard_socket_gets_a_snapshot_then_updates(web_server):
    async with await web_server.client("sup") as browser:
        async with browser.ws_connect("/ws?feed=wallboard") as socket:
            first = await socket.receive_json(timeout=5)
            assert first["type"] == "wallboard" and "support" in first["queues"]["queues"]
            assert first["ami"]["connected"] is True
            await web_server.agent_side.hub.publish(WALLBOARD, {"type": "wallboard", "marker": 1})
            while (message := await socket.receive_json(timeout=5)).get("marker") != 1:
                pass


async def test_websocket_from_another_site_is_refused(web_server):
    async with await web_server.client("anna") as browser:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await browser.ws_connect("/ws?feed=agent", headers={"Origin": "http://evil.example"})


async def test_supervisor_pause_goes_to_asterisk_and_changes_the_member(web_server):
    sim = web_server.sim
    async with await web_server.client("sup") as browser:
        token = await csrf_of(browser)
        headers = {"X-CSRF-Token": token}
        async with browser.post("/api/v1/actions/pause", headers=headers,
                                json={"interface": "PJSIP/1001", "paused": True, "reason": "lunch"}) as response:
            assert response.status == 200, await response.text()
        member = sim.queue("support").members["PJSIP/1001"]
        assert member.paused and member.reason_paused == "lunch"
        await eventually(lambda: _member(web_server, "PJSIP/1001")["paused"])
        assert _member(web_server, "PJSIP/1001")["paused_reason"] == "lunch"
        async with browser.post("/api/v1/actions/penalty", headers=headers,
                                json={"interface": "PJSIP/1001", "penalty": 3, "queue": "support"}) as response:
            assert response.status == 200
        assert sim.queue("support").members["PJSIP/1001"].penalty == 3
        async with browser.post("/api/v1/actions/add", headers=headers,
                                json={"queue": "vip", "interface": "PJSIP/1001", "penalty": 1}) as response:
            assert response.status == 200
        assert "PJSIP/1001" in sim.queue("vip").members
        async with browser.post("/api/v1/actions/add", headers=headers,
                                json={"queue": "vip", "interface": "PJSIP/1001"}) as response:
            assert response.status == 409 and "Already there" in (await response.json())["error"]
        async with browser.post("/api/v1/actions/remove", headers=headers,
                                json={"queue": "vip", "interface": "PJSIP/1001"}) as response:
            assert response.status == 200
        assert "PJSIP/1001" not in sim.queue("vip").members
        async with browser.post("/api/v1/actions/pause", headers=headers,
                                json={"interface": "PJSIP/1001\r\nAction: Logoff"}) as response:
            assert response.status == 400


def _member(web_server, interface: str) -> dict:
    queue = web_server.agent_side.queue_state.snapshot()["queues"]["support"]
    return next(m for m in queue["members"] if m["interface"] == interface)


async def test_agent_records_the_reason_and_a_case_note(web_server):
    anna = web_server.agents["PJSIP/1001"]
    async with web_server.services.db.session() as session:
        case = await session.scalar(select(Case).order_by(Case.id).limit(1))
    await insert_call(web_server, "call-of-anna", anna, case.customer_id)
    async with await web_server.client("anna") as browser:
        headers = {"X-CSRF-Token": await csrf_of(browser)}
        async with browser.post("/api/v1/calls/call-of-anna/disposition", headers=headers,
                                json={"intent": "card_pickup", "outcome": "resolved"}) as response:
            assert response.status == 200, await response.text()
        async with browser.post("/api/v1/calls/call-of-anna/disposition", headers=headers,
                                json={"intent": "no_such_intent", "outcome": "resolved"}) as response:
            assert response.status == 400
        async with browser.post(f"/api/v1/cases/{case.id}/notes", headers=headers,
                                json={"text": "Клиент придёт завтра"}) as response:
            assert response.status == 201
            assert (await response.json())["notes"].endswith("anna] Клиент придёт завтра")
    async with web_server.services.db.session() as session:
        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == "call-of-anna"))
    assert (record.actual_intent, record.outcome) == ("card_pickup", "resolved")
    async with await web_server.client("sup") as browser:
        async with browser.get("/api/v1/predictions") as response:
            stats = await response.json()
    assert stats["by_predicted"]["card_pickup"]["right"] == 1


async def test_agent_cannot_annotate_a_stranger_s_case(web_server):
    async with web_server.services.db.session() as session:
        case = await session.scalar(select(Case).order_by(Case.id.desc()).limit(1))
    async with await web_server.client("anna") as browser:
        headers = {"X-CSRF-Token": await csrf_of(browser)}
        async with browser.post(f"/api/v1/cases/{case.id}/notes", headers=headers, json={"text": "x"}) as response:
            assert response.status == 404
    async with web_server.services.db.session() as session:
        assert (await session.get(Case, case.id)).notes == case.notes


async def test_api_finds_customers_by_number_and_name(web_server):
    async with await web_server.client("sup") as supervisor:
        async with supervisor.get("/api/v1/customers", params={"q": "8 900 000-00-03"}) as response:
            found = (await response.json())["customers"]
    assert len(found) == 1
    await insert_call(web_server, "anna-talked-to-them", web_server.agents["PJSIP/1001"], found[0]["id"])
    async with await web_server.client("anna") as browser:
        async with browser.get("/api/v1/customers", params={"q": "8 900 000-00-03"}) as response:
            assert (await response.json())["customers"] == found
        async with browser.get(f"/api/v1/customers/{found[0]['id']}") as response:
            customer = await response.json()
        assert any(r["number"] == "+79000000003" for r in customer["roles"]) and customer["cases"]
        async with browser.get("/api/v1/customers", params={"q": found[0]["name"].lower()}) as response:
            assert [c["id"] for c in (await response.json())["customers"]] == [found[0]["id"]]
        async with browser.get("/api/v1/customers", params={"q": "x"}) as response:
            assert response.status == 400


async def test_openapi_describes_exactly_the_api_routes(web_server):
    async with await web_server.client() as browser:
        async with browser.get("/api/v1/openapi.json") as response:
            document = await response.json()
    assert document == OPENAPI
    app_routes = {(route.method.lower(), route.resource.canonical) for route in web_server.runner.app.router.routes()
                  if route.resource is not None and route.resource.canonical.startswith("/api/")
                  and route.method != "HEAD"}  # aiohttp answers HEAD on every GET route
    described = {(method, path) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert described == app_routes


async def test_metrics_and_healthz_need_no_login(web_server):
    async with await web_server.client() as browser:
        async with browser.get("/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}  # nothing more
        async with browser.get("/metrics") as response:
            text = await response.text()
    assert "ivr_calls_total" in text and 'ivr_component_events_total{component="screenpop"' in text
    assert "ivr_ami_connected 1.0" in text


async def test_the_agent_records_a_call_the_moment_it_ends(web_server):
    """The card is gone from the screen-pop once the call ends; the call is still the agent's to record."""
    from tests.ivr.web.conftest import call_into_queue

    async with await web_server.client("anna") as browser, await web_server.client("dmitry") as other:
        socket = await browser.ws_connect("/ws?feed=agent")
        assert (await socket.receive_json(timeout=5))["type"] == "cards"
        uniqueid, variables = await call_into_queue(web_server, "+79000000003")
        call_id = variables["IVR_CALL_ID"]
        web_server.sim.ring_agent(uniqueid, "PJSIP/1001")
        web_server.sim.agent_answers(uniqueid, "PJSIP/1001")
        web_server.sim.complete_call(uniqueid)
        while (message := await socket.receive_json(timeout=5)).get("state") != "ended":
            pass
        assert message["call_id"] == call_id
        headers = {"X-CSRF-Token": await csrf_of(browser)}
        async with browser.post(f"/api/v1/calls/{call_id}/disposition", headers=headers,
                                json={"intent": "card_pickup", "outcome": "resolved"}) as response:
            assert response.status == 200, await response.text()
        async with browser.get("/api/v1/calls", params={"limit": 5}) as response:
            mine = {c["call_id"]: c for c in (await response.json())["calls"]}
        assert mine[call_id]["outcome"] == "resolved" and mine[call_id]["agent_id"] == web_server.agents["PJSIP/1001"]
        async with other.get(f"/api/v1/calls/{call_id}") as response:
            assert response.status == 404
        await socket.close()
