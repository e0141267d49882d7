"""Hostile and malformed input, over real TCP: every route answers 400, 401, 403, 413 or 415 with a JSON error,
changes nothing (no AMI action, no note, no disposition) and leaves no error or traceback in the log.

The wrong values are made from the OpenAPI description of each route, so a new route or field is covered
as soon as it is described.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from sqlalchemy import select
from yarl import URL

from caller_id.models import CallRecord, Case
from ivr.web.api import OPENAPI
from ivr.web.inputs import MAX_BODY
from tests.ivr.web.conftest import csrf_of
from tests.ivr.web.test_web import insert_call
from tests.waiting import within

DEEP = "[" * 30_000 + "]" * 30_000
NOT_JSON_NUMBERS = ("Infinity", "-Infinity", "NaN", "1e400", "-1e400", "9" * 5001)
VALID = {  # a body each write route accepts, into which one wrong value at a time is put
    "/api/v1/cases/{id}/notes": {"text": "a note"},
    "/api/v1/calls/{call_id}/disposition": {"intent": "card_pickup", "outcome": "resolved"},
    "/api/v1/actions/pause": {"interface": "PJSIP/1001", "paused": True, "queue": "support", "reason": "lunch"},
    "/api/v1/actions/add": {"queue": "vip", "interface": "PJSIP/1001", "penalty": 1, "name": "Anna"},
    "/api/v1/actions/remove": {"queue": "support", "interface": "PJSIP/1001"},
    "/api/v1/actions/penalty": {"interface": "PJSIP/1001", "penalty": 3, "queue": "support"},
    "/api/v1/me/pause": {"paused": True, "reason": "lunch"},
}
AMI_WRITES = {"QueuePause", "QueueAdd", "QueueRemove", "QueuePenalty"}


def _kind(schema: dict[str, Any]) -> tuple[str, bool]:
    """(JSON type, may be null) of a property's schema."""
    options = schema.get("anyOf", [schema])
    kinds = [option.get("type", "string") for option in options]
    return next(k for k in kinds if k != "null"), "null" in kinds


def _wrong_values(schema: dict[str, Any], required: bool) -> list[str]:
    """JSON texts that are wrong for a property: of another type, out of range, not JSON numbers, bad text."""
    kind, nullable = _kind(schema)
    values = ["[]", "{}", DEEP]
    if not nullable:
        values.append("null")
    if kind == "integer":
        values += ['"5"', "true", "false", "1.9", "1.0", "-1", "100000000000", *NOT_JSON_NUMBERS]
    elif kind == "boolean":
        values += ['"true"', "1", "0", *NOT_JSON_NUMBERS]
    else:
        values += ["123", "true", "1e400", *NOT_JSON_NUMBERS, '""', '"   "', json.dumps("a\u0000b"), '"\\ud800"',
                   json.dumps("x" * 5000), json.dumps("bell\u0007")]
        if "enum" in json.dumps(schema):
            values.append('"no such value"')
    return values


def _body_with(valid: dict[str, Any], field: str, raw: str) -> bytes:
    text = json.dumps({**valid, field: "__PLACE__"}, ensure_ascii=False)
    return text.replace('"__PLACE__"', raw).encode("utf-8", "surrogatepass")


def _writes() -> list[tuple[str, dict[str, Any]]]:
    found = []
    schemas = OPENAPI["components"]["schemas"]
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                found.append((path, schemas[name]))
    return found


def _concrete(path: str, case_id: int) -> str:
    return path.replace("{id}", str(case_id)).replace("{call_id}", "call-for-hostile-input")


@pytest.fixture
def ami_actions(web_server, monkeypatch) -> list[str]:
    """The queue-changing actions the AMI simulator was asked to do."""
    seen: list[str] = []
    sim = web_server.sim
    handle = sim._handle_action

    async def recording(session, message):
        action = (message.get("Action") or "").strip()
        if action in AMI_WRITES:
            seen.append(action)
        return await handle(session, message)

    monkeypatch.setattr(sim, "_handle_action", recording)
    return seen


def _no_errors(caplog) -> None:
    bad = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == []
    assert "Traceback" not in caplog.text


async def test_every_write_route_refuses_every_wrong_value(web_server, ami_actions, caplog):
    assert {path for path, _ in _writes()} == set(VALID)  # a new write route needs its valid body here
    async with web_server.services.db.session() as session:
        case = await session.scalar(select(Case).order_by(Case.id).limit(1))
    await insert_call(web_server, "call-for-hostile-input", web_server.agents["PJSIP/1001"], case.customer_id)
    caplog.set_level(logging.DEBUG)
    refused: list[tuple] = []
    async with await web_server.client("sup") as supervisor:
        headers = {"X-CSRF-Token": await csrf_of(supervisor), "Content-Type": "application/json"}
        for path, schema in _writes():
            url, valid = _concrete(path, case.id), VALID[path]
            required = set(schema.get("required", ()))
            bodies = [_body_with(valid, field, raw) for field, prop in schema["properties"].items()
                      for raw in _wrong_values(prop, field in required)]
            bodies += [json.dumps({k: v for k, v in valid.items() if k != field}).encode() for field in required]
            bodies += [json.dumps({**valid, "unexpected": 1}).encode(), DEEP.encode(), b"[]", b'"text"', b"",
                       b"{", b'{"a": 1} trailing', b"\xff\xfe", json.dumps(valid).encode("utf-16")]
            for body in bodies:
                async with supervisor.post(url, data=body, headers=headers) as response:
                    refused.append((response.status, response.content_type, path, body[:60]))
            for content_type in ("application/json; charset=x-bogus", "application/json; charset=latin-1",
                                 "text/plain", "application/x-www-form-urlencoded"):
                async with supervisor.post(url, data=json.dumps(valid).encode(),
                                           headers={**headers, "Content-Type": content_type}) as response:
                    refused.append((response.status, response.content_type, path, content_type))
            async with supervisor.post(url, data=json.dumps({**valid, "pad": "x" * MAX_BODY}).encode(),
                                       headers=headers) as response:
                refused.append((response.status, response.content_type, path, "too large"))
    wrong = [r for r in refused if r[0] not in (400, 413, 415) or r[1] != "application/json"]
    assert wrong == []
    assert {status for status, *_ in refused} == {400, 413, 415}
    assert ami_actions == []  # nothing reached Asterisk
    async with web_server.services.db.session() as session:
        assert (await session.get(Case, case.id)).notes == case.notes
        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == "call-for-hostile-input"))
        assert record.outcome is None and record.actual_intent is None
    _no_errors(caplog)


@pytest.mark.parametrize("field, value", [("queue", []), ("reason", {}), ("queue", ""), ("paused", "false"),
                                          ("paused", 0), ("interface", "PJSIP/1001\u0000")])
async def test_a_pause_with_a_wrong_type_pauses_nobody(web_server, ami_actions, field, value):
    async with await web_server.client("sup") as supervisor:
        headers = {"X-CSRF-Token": await csrf_of(supervisor)}
        async with supervisor.post("/api/v1/actions/pause", headers=headers,
                                   json={"interface": "PJSIP/1001", field: value}) as response:
            assert response.status == 400
            assert field in (await response.json())["error"]
    assert ami_actions == []
    assert not any(m.paused for q in ("support", "vip", "b2b") for m in web_server.sim.queue(q).members.values())


@pytest.mark.parametrize("text", [None, [], {}, 123, True, "", "   ", "a\u0000", "x" * 2001])
async def test_a_note_of_the_wrong_type_is_refused_and_not_stored(web_server, text):
    async with web_server.services.db.session() as session:
        case = await session.scalar(select(Case).order_by(Case.id).limit(1))
    async with await web_server.client("sup") as supervisor:
        headers = {"X-CSRF-Token": await csrf_of(supervisor)}
        async with supervisor.post(f"/api/v1/cases/{case.id}/notes", headers=headers, json={"text": text}) as response:
            assert response.status == 400
    async with web_server.services.db.session() as session:
        assert (await session.get(Case, case.id)).notes == case.notes


async def test_query_and_path_parameters_of_the_wrong_form_are_refused(web_server, caplog):
    caplog.set_level(logging.DEBUG)
    async with await web_server.client("sup") as supervisor:
        for path in ("/api/v1/customers/abc", "/api/v1/customers/0", "/api/v1/customers/" + "9" * 5001,
                     "/api/v1/customers/1e400", "/api/v1/cases/-1", "/api/v1/cases/Infinity",
                     "/api/v1/calls?limit=1e400", "/api/v1/calls?limit=NaN", "/api/v1/calls?limit=0",
                     "/api/v1/calls?limit=5&limit=6", "/api/v1/calls?queue=a%00b", "/api/v1/calls?nonsense=1",
                     "/api/v1/cases?customer_id=1&open=maybe", "/api/v1/cases?customer_id=1&status=In%20Progress",
                     "/api/v1/cases?customer_id=1&organisation_id=1", "/api/v1/customers?q=" + "x" * 101,
                     "/api/v1/customers?q=%00%00%00", "/api/v1/me?x=1", "/ws?feed=nonsense", "/healthz?x=%ff",
                     "/login?next=%0d%0a", "/api/v1/calls/" + "x" * 65, "/api/v1/calls/a%20b"):
            async with supervisor.get(path, allow_redirects=False) as response:
                assert response.status == 400, (path, response.status, await response.text())
    _no_errors(caplog)


async def _raw(web_server, request: bytes, *, read: bool = True) -> bytes:
    host, port = web_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await within(reader.read(65536), 10) if read else b""
    finally:
        writer.close()


async def test_a_body_announced_too_large_is_refused_at_once(web_server, caplog):
    caplog.set_level(logging.DEBUG)
    async with await web_server.client("sup") as supervisor:
        csrf = await csrf_of(supervisor)
        cookie = supervisor.cookie_jar.filter_cookies(URL(web_server.url))["ivr_session"].value
    answer = await _raw(web_server, (
        "POST /api/v1/actions/pause HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Cookie: ivr_session={cookie}\r\nX-CSRF-Token: {csrf}\r\nContent-Length: 2147483648\r\n\r\n"
        '{"a": 1}  ').encode())
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'{"error": ' in answer
    answer = await _raw(web_server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                                    b"urlencoded\r\nContent-Length: 2147483648\r\n\r\nusername=a")
    assert answer.startswith(b"HTTP/1.1 413 ")
    _no_errors(caplog)


async def test_a_client_that_leaves_mid_body_leaves_no_error(web_server, caplog):
    caplog.set_level(logging.DEBUG)
    async with await web_server.client("sup") as supervisor:
        csrf = await csrf_of(supervisor)
        cookie = supervisor.cookie_jar.filter_cookies(URL(web_server.url))["ivr_session"].value
    for path, kind in (("/api/v1/actions/pause", "application/json"), ("/login", "application/x-www-form-urlencoded"),
                       ("/logout", "application/x-www-form-urlencoded")):
        await _raw(web_server, (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\nCookie: ivr_session={cookie}\r\n"
            f"X-CSRF-Token: {csrf}\r\nContent-Length: 1000\r\n\r\n" + '{"interface": "PJS').encode(), read=False)
    await asyncio.sleep(0.5)
    _no_errors(caplog)


async def test_bytes_that_are_not_text_in_cookies_headers_and_forms_are_refused_cleanly(web_server, caplog):
    caplog.set_level(logging.DEBUG)
    for request in (b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nCookie: ivr_session=\xff\xfe\r\n\r\n",
                    b"GET /agent HTTP/1.1\r\nHost: x\r\nCookie: ivr_session=\xff\xfe; ivr_login=\xff\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: ivr_session=\xff\xfe\r\n"
                    b"Authorization: Bearer \xff\r\n\r\n"):
        answer = await _raw(web_server, request)
        assert answer.split(b" ", 2)[1] in (b"401", b"302", b"200"), answer[:200]
    async with await web_server.client("sup") as supervisor:
        cookie = supervisor.cookie_jar.filter_cookies(URL(web_server.url))["ivr_session"].value
    answer = await _raw(web_server, (
        "POST /api/v1/actions/pause HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Cookie: ivr_session={cookie}\r\nX-CSRF-Token: é\r\nContent-Length: 2\r\n\r\n{{}}").encode("utf-8"))
    assert answer.startswith(b"HTTP/1.1 403 ")
    async with await web_server.client() as browser:
        async with browser.get("/login") as form:
            token = (await form.text()).split('name="login_token" value="', 1)[1].split('"', 1)[0]
        for body in (b"username=anna\xff&password=x&login_token=" + token.encode(),
                     b"username=anna%ff&password=x&login_token=" + token.encode(),
                     b"username=" + b"a" * 60_000 + b"&password=x&login_token=" + token.encode(),
                     b"username=anna&username=dmitry&password=x&login_token=" + token.encode(),
                     b"username=anna&password=x&login_token=\xc3\xa9"):
            async with browser.post("/login", data=body, allow_redirects=False,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
                assert response.status in (400, 403), (body[:40], response.status)
                assert "ivr_session" not in response.cookies
    _no_errors(caplog)
