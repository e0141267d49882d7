"""The JSON REST API under /api/v1, described by /api/v1/openapi.json.

Same log-in as the pages (session cookie; the CSRF token in X-CSRF-Token on
writes).  Agents see their own calls only and may record a call's real
reason and outcome, and add a note to a case of a customer they talk to;
supervisors see everything and act on the queues through AMI (pause,
add/remove a member, penalty).  Errors are ``{"error": "..."}`` with the
HTTP status that fits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import func, or_, select, update

from caller_id.models import Agent, CallRecord, Case, Customer, NumberRole, Organisation, PhoneNumber
from caller_id.lookup import CLOSED_STATUSES
from caller_id.normalise import normalise
from ivr.web.auth import require
from ivr.web.live import wallboard_now
from ivr.web.openapi import OPENAPI
from ivr.web.keys import SERVICES, AGENT_SIDE, USER

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
PREFIX = "/api/v1"
OUTCOMES = ("resolved", "follow_up", "transferred", "callback", "complaint", "other")
MAX_NOTE = 2000


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Under /api/ every error is ``{"error": ...}``: unknown paths, wrong methods, oversized bodies, bugs."""
    if not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        exc.text = json.dumps({"error": message}, ensure_ascii=False)
        exc.content_type = "application/json"
        raise
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:  # noqa: BLE001 - logged; the client gets a JSON 500
        log.exception("API: %s %s failed", request.method, request.path)
        raise web.HTTPInternalServerError(text=json.dumps({"error": "internal error (logged on the server)"}),
                                          content_type="application/json") from None


def fail(status: int, message: str) -> web.HTTPException:
    kinds = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
             409: web.HTTPConflict, 502: web.HTTPBadGateway, 503: web.HTTPServiceUnavailable}
    return kinds[status](text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json")


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=_json))


def _json(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


async def body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise fail(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise fail(400, "the body must be a JSON object")
    return data


def _int(value: Any, what: str, low: int = 0, high: int = 10**9) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise fail(400, f"{what} must be a whole number") from None
    if not low <= number <= high:
        raise fail(400, f"{what} must be between {low} and {high}")
    return number


def _db(request: web.Request) -> Any:
    return request.app[SERVICES].db


# --- who am I -----------------------------------------------------------------------------


@routes.get(PREFIX + "/me")
@require("agent")
async def me(request: web.Request) -> web.Response:
    return reply({**request[USER].to_dict(), "csrf_token": request[USER].csrf_token})


@routes.get(PREFIX + "/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return reply(OPENAPI)


@routes.get(PREFIX + "/intents")
@require("agent")
async def intents(request: web.Request) -> web.Response:
    """The reasons an agent can pick, with their titles in the catalogue's languages."""
    catalogue = request.app[SERVICES].catalogue
    return reply({"intents": [{"name": spec.name, "title": dict(spec.title), "self_service": spec.is_self_service}
                              for spec in catalogue.intents], "outcomes": list(OUTCOMES)})


# --- customers and cases -----------------------------------------------------------------------


def customer_dict(customer: Customer) -> dict[str, Any]:
    return {"id": customer.id, "name": customer.name, "segment": customer.segment, "is_vip": customer.is_vip,
            "language": customer.language, "manager_id": customer.manager_id, "external_id": customer.external_id}


def case_dict(case: Case) -> dict[str, Any]:
    return {"id": case.id, "customer_id": case.customer_id, "organisation_id": case.organisation_id,
            "product": case.product, "title": case.title, "status": case.status, "priority": case.priority,
            "opened_at": case.opened_at, "updated_at": case.updated_at, "due_at": case.due_at,
            "customer_owes_next_step": case.customer_owes_next_step, "facts": case.facts, "notes": case.notes}


@routes.get(PREFIX + "/customers")
@require("agent")
async def customers(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    if len(query) < 2:
        raise fail(400, "q: give a number or at least two letters of a name")
    limit = _int(request.query.get("limit", 20), "limit", 1, 100)
    services = request.app[SERVICES]
    number = normalise(query, region=services.config.region)
    async with _db(request).session() as session:
        statement = select(Customer)
        if number:
            statement = (statement.join(NumberRole, NumberRole.customer_id == Customer.id)
                         .join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
                         .where(PhoneNumber.e164 == number).distinct())
        else:
            # SQLite's lower() knows only ASCII: also try the query as written and in title case
            statement = statement.where(or_(Customer.name.contains(query), Customer.name.contains(query.title()),
                                            func.lower(Customer.name).contains(query.lower())))
        found = (await session.scalars(statement.order_by(Customer.id).limit(limit))).all()
    return reply({"customers": [customer_dict(c) for c in found]})


@routes.get(PREFIX + "/customers/{id}")
@require("agent")
async def customer(request: web.Request) -> web.Response:
    customer_id = _int(request.match_info["id"], "id")
    async with _db(request).session() as session:
        found = await session.get(Customer, customer_id)
        if found is None:
            raise fail(404, f"no customer {customer_id}")
        roles = (await session.execute(
            select(NumberRole.kind, PhoneNumber.e164, Organisation.id, Organisation.name)
            .join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
            .outerjoin(Organisation, Organisation.id == NumberRole.organisation_id)
            .where(NumberRole.customer_id == customer_id))).all()
        cases = (await session.scalars(select(Case).where(Case.customer_id == customer_id)
                                       .order_by(Case.updated_at.desc()))).all()
    return reply({**customer_dict(found),
                  "roles": [{"kind": k, "number": n, "organisation": {"id": oid, "name": oname} if oid else None}
                            for k, n, oid, oname in roles],
                  "cases": [case_dict(c) for c in cases]})


@routes.get(PREFIX + "/cases")
@require("agent")
async def cases(request: web.Request) -> web.Response:
    """Cases of a customer or an organisation, newest first; ``open=true`` leaves out closed ones."""
    statement = select(Case)
    if "customer_id" in request.query:
        statement = statement.where(Case.customer_id == _int(request.query["customer_id"], "customer_id"))
    elif "organisation_id" in request.query:
        statement = statement.where(Case.organisation_id == _int(request.query["organisation_id"],
                                                                   "organisation_id"))
    else:
        raise fail(400, "give customer_id or organisation_id")
    flag = request.query.get("open", "false").lower()
    if flag not in ("true", "false"):
        raise fail(400, "open: true or false")
    if flag == "true":
        statement = statement.where(Case.status.not_in(CLOSED_STATUSES))
    if "status" in request.query:
        statement = statement.where(Case.status == request.query["status"])
    limit = _int(request.query.get("limit", 50), "limit", 1, 500)
    async with _db(request).session() as session:
        found = (await session.scalars(statement.order_by(Case.updated_at.desc(), Case.id.desc())
                                       .limit(limit))).all()
    return reply({"cases": [case_dict(c) for c in found]})


@routes.get(PREFIX + "/cases/{id}")
@require("agent")
async def case(request: web.Request) -> web.Response:
    case_id = _int(request.match_info["id"], "id")
    async with _db(request).session() as session:
        found = await session.get(Case, case_id)
    if found is None:
        raise fail(404, f"no case {case_id}")
    return reply(case_dict(found))


@routes.post(PREFIX + "/cases/{id}/notes")
@require("agent")
async def add_note(request: web.Request) -> web.Response:
    user = request[USER]
    case_id = _int(request.match_info["id"], "id")
    text = str((await body(request)).get("text", "")).strip()
    if not text or len(text) > MAX_NOTE:
        raise fail(400, f"text: a note of 1-{MAX_NOTE} characters")
    async with _db(request).session() as session:
        found = await session.get(Case, case_id)
        if found is None:
            raise fail(404, f"no case {case_id}")
        if not user.has("supervisor") and not await _talks_to(request, session, found.customer_id):
            raise fail(403, "agents add notes to the cases of customers on their own calls")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        line = f"[{stamp} {user.username}] {text}"
        found.notes = f"{found.notes}\n{line}" if found.notes else line
        await session.commit()
        return reply(case_dict(found), status=201)


async def _talks_to(request: web.Request, session: Any, customer_id: int) -> bool:
    agent_id = request[USER].agent_id
    for card in request.app[AGENT_SIDE].screenpop.cards_for(agent_id):
        if ((card.get("card") or {}).get("customer") or {}).get("id") == customer_id:
            return True
    found = await session.scalar(select(CallRecord.id).where(CallRecord.agent_id == agent_id,
                                                             CallRecord.customer_id == customer_id).limit(1))
    return found is not None


# --- calls ----------------------------------------------------------------------------------------


def call_dict(record: CallRecord) -> dict[str, Any]:
    columns = ("call_id", "uniqueid", "number", "line", "customer_id", "role_kind", "organisation_id", "segment",
               "predicted_intent", "predicted_score", "actual_intent", "outcome", "self_served", "queue",
               "priority", "rule", "agent_id", "started_at", "answered_at", "ended_at", "wait_seconds",
               "talk_seconds", "rating", "degraded")
    data = {column: getattr(record, column) for column in columns}
    context = record.context or {}
    data["transcript"] = context.get("transcript")
    return data


async def _settle(request: web.Request) -> None:
    """Write what this node still holds about calls: the IVR's new records, and the queue outcomes
    (which agent answered) that the call center writes in batches; a call that just ended is then
    found, and found to be this agent's."""
    await request.app[SERVICES].recorder.flush()
    center = request.app[AGENT_SIDE].center
    if center is not None:
        try:
            await center.records.flush(everything=True)
        except Exception as exc:  # noqa: BLE001 - they stay pending; the answer may lag behind
            log.warning("API: queue outcomes not written yet: %s", exc)


def _own_call_ids(request: web.Request) -> set[str]:
    return {card["call_id"] for card in request.app[AGENT_SIDE].screenpop.cards_for(request[USER].agent_id)}


@routes.get(PREFIX + "/calls")
@require("agent")
async def calls(request: web.Request) -> web.Response:
    user = request[USER]
    limit = _int(request.query.get("limit", 50), "limit", 1, 500)
    statement = select(CallRecord).order_by(CallRecord.started_at.desc()).limit(limit)
    if not user.has("supervisor"):
        statement = statement.where(or_(CallRecord.agent_id == user.agent_id,
                                        CallRecord.call_id.in_(_own_call_ids(request) or {""})))
    elif "agent_id" in request.query:
        statement = statement.where(CallRecord.agent_id == _int(request.query["agent_id"], "agent_id"))
    if "queue" in request.query:
        statement = statement.where(CallRecord.queue == request.query["queue"])
    await _settle(request)
    async with _db(request).session() as session:
        found = (await session.scalars(statement)).all()
    return reply({"calls": [call_dict(r) for r in found]})


async def _call_for(request: web.Request, session: Any, call_id: str) -> CallRecord:
    record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
    if record is None:
        raise fail(404, f"no call {call_id}")
    user = request[USER]
    if not user.has("supervisor") and record.agent_id != user.agent_id and call_id not in _own_call_ids(request):
        raise fail(403, "this call is not yours")
    return record


@routes.get(PREFIX + "/calls/{call_id}")
@require("agent")
async def call(request: web.Request) -> web.Response:
    await _settle(request)
    async with _db(request).session() as session:
        record = await _call_for(request, session, request.match_info["call_id"])
    data = call_dict(record)
    data["context"] = record.context
    return reply(data)


@routes.post(PREFIX + "/calls/{call_id}/disposition")
@require("agent")
async def disposition(request: web.Request) -> web.Response:
    """The agent's word on the call: the real reason and how it ended."""
    data = await body(request)
    catalogue = request.app[SERVICES].catalogue
    intent, outcome = data.get("intent"), data.get("outcome")
    if intent not in catalogue.names:
        raise fail(400, f"intent: one of {', '.join(catalogue.names)}")
    if outcome not in OUTCOMES:
        raise fail(400, f"outcome: one of {', '.join(OUTCOMES)}")
    await _settle(request)
    async with _db(request).session() as session:
        record = await _call_for(request, session, request.match_info["call_id"])
        values: dict[str, Any] = {"actual_intent": intent, "outcome": outcome}
        if record.agent_id is None and request[USER].agent_id is not None:
            values["agent_id"] = request[USER].agent_id
        await session.execute(update(CallRecord).where(CallRecord.id == record.id).values(**values))
        await session.commit()
    return reply({"call_id": request.match_info["call_id"], **values})


@routes.get(PREFIX + "/predictions")
@require("supervisor")
async def predictions(request: web.Request) -> web.Response:
    """How often the predicted reason was the real one, per predicted intent (agents' dispositions)."""
    async with _db(request).session() as session:
        rows = (await session.execute(
            select(CallRecord.predicted_intent, CallRecord.actual_intent, func.count())
            .where(CallRecord.actual_intent.is_not(None))
            .group_by(CallRecord.predicted_intent, CallRecord.actual_intent))).all()
    by_intent: dict[str, dict[str, Any]] = {}
    for predicted, actual, count in rows:
        entry = by_intent.setdefault(predicted or "-", {"calls": 0, "right": 0, "actual": {}})
        entry["calls"] += count
        entry["right"] += count if predicted == actual else 0
        entry["actual"][actual] = entry["actual"].get(actual, 0) + count
    total = sum(e["calls"] for e in by_intent.values())
    right = sum(e["right"] for e in by_intent.values())
    return reply({"calls": total, "accuracy": right / total if total else None, "by_predicted": by_intent})


# --- queues and agents ---------------------------------------------------------------------------


@routes.get(PREFIX + "/queues")
@require("supervisor")
async def queues(request: web.Request) -> web.Response:
    return reply(wallboard_now(request.app[AGENT_SIDE]))


@routes.get(PREFIX + "/agents")
@require("supervisor")
async def agents(request: web.Request) -> web.Response:
    async with _db(request).session() as session:
        found = (await session.scalars(select(Agent).order_by(Agent.id))).all()
    live = wallboard_now(request.app[AGENT_SIDE])["queues"]["queues"]
    membership: dict[str, list[dict[str, Any]]] = {}
    for name, queue in live.items():
        for member in queue["members"]:
            membership.setdefault(member["interface"], []).append(
                {"queue": name, "state": member["state"], "paused": member["paused"],
                 "paused_reason": member["paused_reason"], "penalty": member["penalty"]})
    return reply({"agents": [{"id": a.id, "name": a.name, "interface": a.interface, "extension": a.extension,
                              "team": a.team, "is_manager": a.is_manager,
                              "queues": membership.get(a.interface, [])} for a in found]})


async def _ami(request: web.Request, fields: dict[str, str]) -> web.Response:
    from ivr.ami import AmiActionError, AmiError, AmiNotConnected

    ami = request.app[AGENT_SIDE].ami
    if ami is None:
        raise fail(503, "no AMI connection is configured (ami.host)")
    try:
        result = await ami.action(fields, check=True, timeout=5.0)
    except AmiNotConnected as exc:
        raise fail(503, f"Asterisk is not connected: {exc}") from None
    except AmiActionError as exc:
        raise fail(409, str(exc)) from None
    except AmiError as exc:
        raise fail(502, f"{fields['Action']}: {exc}") from None
    return reply({"action": fields["Action"], "message": result.message})


def _text(data: dict[str, Any], key: str, *, required: bool = True, limit: int = 200) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > limit or "\r" in value or "\n" in value:
        raise fail(400, f"{key}: text of 1-{limit} characters on one line")
    return value.strip()


@routes.post(PREFIX + "/actions/pause")
@require("supervisor")
async def pause(request: web.Request) -> web.Response:
    data = await body(request)
    paused = data.get("paused", True)
    if not isinstance(paused, bool):
        raise fail(400, "paused: true or false")
    fields = {"Action": "QueuePause", "Interface": _text(data, "interface"), "Paused": "true" if paused else "false"}
    if data.get("queue"):
        fields["Queue"] = _text(data, "queue")
    if data.get("reason"):
        fields["Reason"] = _text(data, "reason")
    return await _ami(request, fields)


@routes.post(PREFIX + "/actions/add")
@require("supervisor")
async def add_member(request: web.Request) -> web.Response:
    data = await body(request)
    fields = {"Action": "QueueAdd", "Queue": _text(data, "queue"), "Interface": _text(data, "interface"),
              "Penalty": str(_int(data.get("penalty", 0), "penalty", 0, 1000))}
    if data.get("name"):
        fields["MemberName"] = _text(data, "name")
    return await _ami(request, fields)


@routes.post(PREFIX + "/actions/remove")
@require("supervisor")
async def remove_member(request: web.Request) -> web.Response:
    data = await body(request)
    return await _ami(request, {"Action": "QueueRemove", "Queue": _text(data, "queue"),
                                "Interface": _text(data, "interface")})


@routes.post(PREFIX + "/actions/penalty")
@require("supervisor")
async def penalty(request: web.Request) -> web.Response:
    data = await body(request)
    fields = {"Action": "QueuePenalty", "Interface": _text(data, "interface"),
              "Penalty": str(_int(data.get("penalty"), "penalty", 0, 1000))}
    if data.get("queue"):
        fields["Queue"] = _text(data, "queue")
    return await _ami(request, fields)
