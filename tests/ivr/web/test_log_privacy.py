"""At IVR_LOG_LEVEL=DEBUG, after calls through the real FastAGI flow and the queue, and the pages and API
used as agents and supervisors use them, the log holds no customer or organisation name, no phone number,
no note, no session, CSRF or form token and no password hash."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select

from caller_id.models import Customer, NumberRole, Organisation, PhoneNumber, User
from ivr.server import setup_logging
from tests.ivr.web.conftest import PASSWORD, call_into_queue, csrf_of

NUMBERS = ("+79000000001", "+79000000002", "+79000000003", "+79000000005")
NOTE = "Клиент просил перезвонить после обеда, паспорт 4510 123456"


async def _customers_of(web_server, numbers: tuple[str, ...]) -> list[int]:
    async with web_server.services.db.session() as session:
        return list(await session.scalars(
            select(NumberRole.customer_id).join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
            .where(PhoneNumber.e164.in_(numbers)).distinct().order_by(NumberRole.customer_id)))


async def test_debug_logs_name_no_one_and_hold_no_secret(web_server, capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("DEBUG")  # as `ivr run` does with IVR_LOG_LEVEL=DEBUG: stderr, masked
    secrets: list[str] = []
    try:
        async with await web_server.client("anna") as anna, await web_server.client("sup") as sup:
            socket = await anna.ws_connect("/ws?feed=agent")
            await socket.receive_json(timeout=5)
            for number in NUMBERS:
                uniqueid, variables = await call_into_queue(web_server, number)
                web_server.sim.ring_agent(uniqueid, "PJSIP/1001")
                web_server.sim.agent_answers(uniqueid, "PJSIP/1001")
                web_server.sim.complete_call(uniqueid)
                while (await socket.receive_json(timeout=5)).get("state") != "ended":
                    pass
                headers = {"X-CSRF-Token": await csrf_of(anna)}
                async with anna.post(f"/api/v1/calls/{variables['IVR_CALL_ID']}/disposition", headers=headers,
                                     json={"intent": "card_pickup", "outcome": "resolved"}) as response:
                    assert response.status == 200
            await socket.close()
            customers = await _customers_of(web_server, NUMBERS)
            async with sup.get(f"/api/v1/customers/{customers[0]}") as response:
                card = await response.json()
            headers = {"X-CSRF-Token": await csrf_of(sup)}
            async with sup.post(f"/api/v1/cases/{card['cases'][0]['id']}/notes", headers=headers,
                                json={"text": NOTE}) as response:
                assert response.status == 201
            async with anna.get("/api/v1/customers/1") as response:  # someone else's: a logged denial
                pass
            async with sup.get("/api/v1/customers", params={"q": card["name"]}) as response:
                assert response.status == 200
            async with sup.get("/api/v1/calls") as response:
                assert response.status == 200
            secrets += [await csrf_of(anna), await csrf_of(sup)]
            for client in (anna, sup):
                secrets += [cookie.value for cookie in client.cookie_jar]
        async with await web_server.client() as stranger:
            async with stranger.get("/login") as response:
                secrets.append(response.cookies["ivr_login"].value)
            async with stranger.post("/login", data={"username": "anna", "password": "a wrong guess",
                                                     "login_token": secrets[-1]}) as response:
                assert response.status == 401
        await web_server.services.recorder.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    log = capsys.readouterr().err
    assert " DEBUG " in log and "ivr." in log  # the level was on, the server spoke

    async with web_server.services.db.session() as session:
        names = [(await session.get(Customer, cid)).name for cid in customers]
        organisations = list(await session.scalars(select(Organisation.name)))
        hashes = list(await session.scalars(select(User.password_hash)))
    found = []
    for secret in [*names, *organisations, *hashes, *(h.split("$")[-1] for h in hashes), *secrets, NOTE,
                   PASSWORD, "a wrong guess", *(n.lstrip("+") for n in NUMBERS), *(n[2:] for n in NUMBERS)]:
        if secret and secret in log:
            found.append(secret)
    assert found == []
    ids_and_times = r"[0-9a-f]{8}-[0-9a-f-]{27}|\b[0-9a-f]{32}\b|\d{10}\.\d+|\d{4}-\d\d-\d\d"
    assert not re.search(r"\d{7,}", re.sub(ids_and_times, "", log))  # no phone number in any form
