"""Who may read and do what, route by route, over real TCP.

`EXPECTED` names every route the app serves (its router and its OpenAPI
description) with the status each principal gets when it asks, with ids that
belong to someone else: the agent anna asks for the customer, case and call
of dmitry's caller.  A route added without a line here fails the test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
import pytest
from sqlalchemy import func, select

from caller_id.models import Case, Customer, Organisation
from ivr.web.api import OPENAPI
from ivr.web.auth import add_user
from tests.ivr.web.conftest import PASSWORD, csrf_of
from tests.ivr.web.test_web import insert_call

PRINCIPALS = ("anonymous", "agent", "supervisor", "admin")


@dataclass
class Crm:
    """anna's caller (customer A, case A) and dmitry's (customer B, case B), an organisation of neither."""

    customer_a: Customer
    customer_b: Customer
    case_a: int
    case_b: int
    organisation: int


@dataclass(frozen=True)
class Probe:
    method: str
    path: Callable[[Crm], str]
    statuses: tuple[int, int, int, int]  # anonymous, agent, supervisor, admin
    json: Callable[[Crm, str], Any] | None = None  # the body, per principal
    form: dict[str, str] | None = None


def _pause(crm: Crm, who: str) -> dict:
    return {"interface": "PJSIP/1004", "paused": False, "queue": "support"}


EXPECTED: dict[tuple[str, str], Probe] = {
    # pages, the socket and the operations endpoints
    ("GET", "/"): Probe("GET", lambda c: "/", (302, 302, 302, 302)),
    ("GET", "/login"): Probe("GET", lambda c: "/login", (200, 200, 200, 200)),
    ("POST", "/login"): Probe("POST", lambda c: "/login", (403, 403, 403, 403),
                              form={"username": "anna", "password": PASSWORD}),  # no form token
    ("POST", "/logout"): Probe("POST", lambda c: "/logout", (302, 403, 403, 403), form={}),  # no CSRF token
    ("GET", "/agent"): Probe("GET", lambda c: "/agent", (302, 200, 302, 302)),
    ("GET", "/wallboard"): Probe("GET", lambda c: "/wallboard", (302, 403, 200, 200)),
    ("GET", "/reports"): Probe("GET", lambda c: "/reports", (302, 403, 200, 200)),
    ("GET", "/api/v1/reports/{dimension}"): Probe("GET", lambda c: "/api/v1/reports/segment", (401, 403, 200, 200)),
    ("GET", "/api/v1/reports/{dimension}/calls"): Probe("GET", lambda c: "/api/v1/reports/segment/calls?key=A",
                                                        (401, 403, 200, 200)),
    ("GET", "/ws"): Probe("GET", lambda c: "/ws?feed=wallboard", (401, 403, 101, 101)),
    ("GET", "/language"): Probe("GET", lambda c: "/language?to=en&next=/agent", (302, 302, 302, 302)),
    ("GET", "/healthz"): Probe("GET", lambda c: "/healthz", (200, 200, 200, 200)),
    ("GET", "/metrics"): Probe("GET", lambda c: "/metrics", (200, 200, 200, 200)),
    ("GET", "/static"): Probe("GET", lambda c: "/static/common.js", (200, 200, 200, 200)),
    # the API
    ("GET", "/api/v1/me"): Probe("GET", lambda c: "/api/v1/me", (401, 200, 200, 200)),
    ("GET", "/api/v1/me/state"): Probe("GET", lambda c: "/api/v1/me/state", (401, 200, 403, 403)),  # no agent
    ("POST", "/api/v1/me/pause"): Probe("POST", lambda c: "/api/v1/me/pause", (401, 200, 403, 403),
                                        json=lambda c, who: {"paused": False}),
    ("GET", "/api/v1/openapi.json"): Probe("GET", lambda c: "/api/v1/openapi.json", (200, 200, 200, 200)),
    ("GET", "/api/v1/intents"): Probe("GET", lambda c: "/api/v1/intents", (401, 200, 200, 200)),
    ("GET", "/api/v1/customers"): Probe("GET", lambda c: f"/api/v1/customers?q={c.customer_b.name}",
                                        (401, 200, 200, 200)),  # the agent's answer is empty: see below
    ("GET", "/api/v1/customers/{id}"): Probe("GET", lambda c: f"/api/v1/customers/{c.customer_b.id}",
                                             (401, 404, 200, 200)),
    ("GET", "/api/v1/cases"): Probe("GET", lambda c: f"/api/v1/cases?customer_id={c.customer_b.id}",
                                    (401, 404, 200, 200)),
    ("GET", "/api/v1/cases/{id}"): Probe("GET", lambda c: f"/api/v1/cases/{c.case_b}", (401, 404, 200, 200)),
    ("POST", "/api/v1/cases/{id}/notes"): Probe("POST", lambda c: f"/api/v1/cases/{c.case_b}/notes",
                                                (401, 404, 201, 201), json=lambda c, who: {"text": f"by {who}"}),
    ("GET", "/api/v1/calls"): Probe("GET", lambda c: "/api/v1/calls", (401, 200, 200, 200)),
    ("GET", "/api/v1/calls/{call_id}"): Probe("GET", lambda c: "/api/v1/calls/call-of-dmitry", (401, 404, 200, 200)),
    ("POST", "/api/v1/calls/{call_id}/disposition"): Probe(
        "POST", lambda c: "/api/v1/calls/call-of-dmitry/disposition", (401, 404, 200, 200),
        json=lambda c, who: {"intent": "card_pickup", "outcome": "resolved"}),
    ("GET", "/api/v1/predictions"): Probe("GET", lambda c: "/api/v1/predictions", (401, 403, 200, 200)),
    ("GET", "/api/v1/queues"): Probe("GET", lambda c: "/api/v1/queues", (401, 403, 200, 200)),
    ("GET", "/api/v1/agents"): Probe("GET", lambda c: "/api/v1/agents", (401, 403, 200, 200)),
    ("POST", "/api/v1/actions/pause"): Probe("POST", lambda c: "/api/v1/actions/pause", (401, 403, 200, 200),
                                             json=_pause),
    ("POST", "/api/v1/actions/add"): Probe(
        "POST", lambda c: "/api/v1/actions/add", (401, 403, 200, 200),
        json=lambda c, who: {"queue": "vip", "interface": {"supervisor": "PJSIP/1005"}.get(who, "PJSIP/1006")}),
    ("POST", "/api/v1/actions/remove"): Probe(
        "POST", lambda c: "/api/v1/actions/remove", (401, 403, 200, 200),
        json=lambda c, who: {"queue": "support", "interface": {"supervisor": "PJSIP/1003"}.get(who, "PJSIP/1004")}),
    ("POST", "/api/v1/actions/penalty"): Probe(
        "POST", lambda c: "/api/v1/actions/penalty", (401, 403, 200, 200),
        json=lambda c, who: {"interface": "PJSIP/1002", "penalty": 2, "queue": "support"}),
}


async def _crm(web_server) -> Crm:
    async with web_server.services.db.session() as session:
        with_cases = select(Case.customer_id).where(Case.organisation_id.is_(None)).group_by(Case.customer_id) \
            .having(func.count() >= 1).order_by(Case.customer_id)
        a_id, b_id = (await session.scalars(with_cases.limit(2))).all()
        customer_a, customer_b = await session.get(Customer, a_id), await session.get(Customer, b_id)
        case_a = await session.scalar(select(Case.id).where(Case.customer_id == a_id).limit(1))
        case_b = await session.scalar(select(Case.id).where(Case.customer_id == b_id).limit(1))
        organisation = await session.scalar(select(Organisation.id).order_by(Organisation.id.desc()).limit(1))
    await insert_call(web_server, "call-of-anna", web_server.agents["PJSIP/1001"], a_id)
    await insert_call(web_server, "call-of-dmitry", web_server.agents["PJSIP/1002"], b_id)
    return Crm(customer_a, customer_b, case_a, case_b, organisation)


async def _clients(web_server) -> dict[str, aiohttp.ClientSession]:
    await add_user(web_server.services.db, "root", PASSWORD, "admin")
    return {"anonymous": await web_server.client(), "agent": await web_server.client("anna"),
            "supervisor": await web_server.client("sup"), "admin": await web_server.client("root")}


async def _ask(client: aiohttp.ClientSession, probe: Probe, crm: Crm, who: str) -> tuple[int, str]:
    path = probe.path(crm)
    if path.startswith("/ws"):
        try:
            socket = await client.ws_connect(path)
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status, ""
        await socket.close()
        return 101, ""
    kwargs: dict[str, Any] = {"allow_redirects": False}
    if probe.method != "GET" and who != "anonymous" and not path.startswith(("/login", "/logout")):
        kwargs["headers"] = {"X-CSRF-Token": await csrf_of(client)}
    if probe.json is not None:
        kwargs["json"] = probe.json(crm, who)
    if probe.form is not None:
        kwargs["data"] = probe.form
    async with client.request(probe.method, path, **kwargs) as response:
        return response.status, await response.text()


def _served_routes(app) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"}


async def test_every_route_answers_each_principal_as_the_table_says(web_server, caplog):
    described = {(method.upper(), path) for path, ops in OPENAPI["paths"].items() for method in ops}
    served = _served_routes(web_server.runner.app)
    assert served - set(EXPECTED) == set(), "routes served without a line in EXPECTED"
    assert described - set(EXPECTED) == set(), "routes described without a line in EXPECTED"
    assert set(EXPECTED) - served == set(), "lines in EXPECTED for routes that are not served"

    crm = await _crm(web_server)
    clients = await _clients(web_server)
    wrong = []
    try:
        with caplog.at_level(logging.WARNING, logger="ivr.web.access"):
            for key, probe in EXPECTED.items():
                for who, expected in zip(PRINCIPALS, probe.statuses):
                    status, text = await _ask(clients[who], probe, crm, who)
                    if status != expected:
                        wrong.append((key, who, expected, status, text[:200]))
                    if who == "agent":  # whatever the status, nothing of dmitry's caller it did not send
                        for secret in (crm.customer_b.name, crm.customer_b.external_id, "call-of-dmitry"):
                            if secret and secret in text and secret not in probe.path(crm):
                                wrong.append((key, who, "leaks", secret))
    finally:
        for client in clients.values():
            await client.close()
    assert wrong == []
    denied = [r.getMessage() for r in caplog.records if r.name == "ivr.web.access"]
    assert len(denied) == 6  # customer, cases of the customer, case, note, call, disposition: 404 each
    assert all("access denied: user #" in m and "(agent)" in m for m in denied)
    assert not any(crm.customer_b.name in m for m in denied)


async def test_an_agent_enumerating_ids_gets_only_the_callers_that_rang_them(web_server):
    crm = await _crm(web_server)
    async with await web_server.client("anna") as anna:
        customers = {}
        for customer_id in range(1, 41):
            async with anna.get(f"/api/v1/customers/{customer_id}") as response:
                customers[customer_id] = response.status
        cases = {}
        async with web_server.services.db.session() as session:
            case_ids = (await session.scalars(select(Case.id).order_by(Case.id).limit(40))).all()
            own_cases = set((await session.scalars(select(Case.id).where(
                Case.customer_id == crm.customer_a.id))).all())
        for case_id in case_ids:
            async with anna.get(f"/api/v1/cases/{case_id}") as response:
                cases[case_id] = response.status
        async with anna.get("/api/v1/cases", params={"customer_id": crm.customer_a.id}) as response:
            listed = {c["id"] for c in (await response.json())["cases"]}
        async with anna.get("/api/v1/cases", params={"organisation_id": crm.organisation}) as response:
            assert response.status == 404
    assert {i for i, status in customers.items() if status == 200} == {crm.customer_a.id}
    assert set(customers.values()) == {200, 404}
    assert {i for i, status in cases.items() if status == 200} == own_cases & set(case_ids)
    assert listed == own_cases


async def test_the_agent_sees_a_caller_while_the_call_rings_and_for_the_history_period(web_server):
    from tests.ivr.web.conftest import call_into_queue

    async with await web_server.client("dmitry") as dmitry:
        uniqueid, variables = await call_into_queue(web_server, "+79000000003")
        customer_id = int(variables["IVR_CUSTOMER_ID"])
        async with dmitry.get(f"/api/v1/customers/{customer_id}") as response:
            assert response.status == 404  # not ringing dmitry
        socket = await dmitry.ws_connect("/ws?feed=agent")
        await socket.receive_json(timeout=5)
        web_server.sim.ring_agent(uniqueid, "PJSIP/1002")
        while (await socket.receive_json(timeout=5)).get("state") != "ringing":
            pass
        async with dmitry.get(f"/api/v1/customers/{customer_id}") as response:
            assert response.status == 200  # on his screen now
        await socket.close()

    # a call taken longer ago than web.agent_history_days no longer opens its customer
    import datetime as dt

    from sqlalchemy import update

    from caller_id.models import CallRecord

    await insert_call(web_server, "old-call-of-anna", web_server.agents["PJSIP/1001"], customer_id)
    async with await web_server.client("anna") as anna:
        async with anna.get(f"/api/v1/customers/{customer_id}") as response:
            assert response.status == 200
        async with web_server.services.db.session() as session:
            await session.execute(update(CallRecord).where(CallRecord.call_id == "old-call-of-anna").values(
                started_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)))
            await session.commit()
        async with anna.get(f"/api/v1/customers/{customer_id}") as response:
            assert response.status == 404
        async with anna.get("/api/v1/calls/old-call-of-anna") as response:
            assert response.status == 404


async def test_the_agent_who_answered_keeps_the_call_for_wrap_up_before_its_record_is_written(web_server,
                                                                                               monkeypatch):
    """Disposition and the customer card right after the caller hangs up, while the record writer lags."""
    from tests.ivr.web.conftest import call_into_queue

    async def held_back(*, everything: bool = False) -> int:
        return 0
    monkeypatch.setattr(web_server.agent_side.center.records, "flush", held_back)
    async with await web_server.client("dmitry") as dmitry, await web_server.client("anna") as anna:
        uniqueid, variables = await call_into_queue(web_server, "+79000000003")
        customer_id = int(variables["IVR_CUSTOMER_ID"])
        socket = await dmitry.ws_connect("/ws?feed=agent")
        await socket.receive_json(timeout=5)
        web_server.sim.ring_agent(uniqueid, "PJSIP/1002")
        web_server.sim.agent_answers(uniqueid, "PJSIP/1002")
        web_server.sim.complete_call(uniqueid)
        while (await socket.receive_json(timeout=5)).get("state") != "ended":
            pass
        await socket.close()
        path = f"/api/v1/calls/{variables['IVR_CALL_ID']}/disposition"
        body = {"intent": "card_pickup", "outcome": "resolved"}
        async with dmitry.post(path, headers={"X-CSRF-Token": await csrf_of(dmitry)}, json=body) as response:
            assert response.status == 200
        async with dmitry.get(f"/api/v1/customers/{customer_id}") as response:
            assert response.status == 200
        async with anna.post(path, headers={"X-CSRF-Token": await csrf_of(anna)}, json=body) as response:
            assert response.status == 404  # it never rang her


@pytest.mark.parametrize("query, status", [
    ("%%", 400), ("__", 400), ("%%%%", 400), ("___", 400), ("a%", 400), ("12", 400), ("ив", 400),
    ("Ив%ов", 200), ("И_ан", 200),
])
async def test_search_needs_a_meaningful_query_and_takes_wildcards_literally(web_server, query, status):
    async with await web_server.client("sup") as supervisor:
        async with supervisor.get("/api/v1/customers", params={"q": query, "limit": 100}) as response:
            assert response.status == status, await response.text()
            if status == 200:
                assert (await response.json())["customers"] == []  # no name has "%" or "_" in it


async def test_search_finds_by_part_of_a_number_or_a_name(web_server):
    crm = await _crm(web_server)
    async with await web_server.client("sup") as supervisor:
        async with supervisor.get("/api/v1/customers", params={"q": "0000003"}) as response:
            by_digits = (await response.json())["customers"]
        async with supervisor.get("/api/v1/customers", params={"q": crm.customer_b.name[:4]}) as response:
            by_name = (await response.json())["customers"]
    assert by_digits and crm.customer_b.id in {c["id"] for c in by_name}
    async with await web_server.client("anna") as anna:
        async with anna.get("/api/v1/customers", params={"q": crm.customer_b.name}) as response:
            assert (await response.json())["customers"] == []
        async with anna.get("/api/v1/customers", params={"q": crm.customer_a.name}) as response:
            assert [c["id"] for c in (await response.json())["customers"]] == [crm.customer_a.id]
