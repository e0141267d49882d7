"""The JSON REST API under /api/v1, described by /api/v1/openapi.json.

Same log-in as the pages (session cookie; the CSRF token in X-CSRF-Token on
writes).  Agents read the calls that rang them and the customers and cases
of those calls (`ivr.web.access`), may record a call's real reason and
outcome, and add a note to such a case; supervisors read everything and act
on the queues through AMI (pause, add/remove a member, penalty).  Every
route is declared with `endpoint`: its role, the schema of its parameters
and body (`ivr.web.inputs`), and its description, from which the OpenAPI
document is made.  Errors are ``{"error": "..."}`` with the HTTP status
that fits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
import time
from typing import Annotated, Any, Awaitable, Callable, Literal, get_args

from aiohttp import web
from msgspec import Meta
from sqlalchemy import ColumnElement, func, or_, select, update

from caller_id.lookup import CLOSED_STATUSES
from caller_id.models import Agent, CallRecord, Case, Customer, NumberRole, Organisation, PhoneNumber
from caller_id.normalise import normalise
from ivr.web import access, i18n, openapi
from ivr.web.auth import require
from ivr.web.inputs import (CallId, ClientGone, Code, Id, Input, Interface, Line, Note, Nothing, Penalty, QueueName,
                            json_body, params, refusal, text)
from ivr.web.keys import AGENT_SIDE, SERVICES, USER
from ivr.web.live import wallboard_now

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
PREFIX = "/api/v1"
Outcome = Literal["resolved", "follow_up", "transferred", "callback", "complaint", "other"]
OUTCOMES = get_args(Outcome)
MIN_NAME_LETTERS = 3
MIN_NUMBER_DIGITS = 4
OPERATIONS: list[openapi.Operation] = []



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
    except (asyncio.CancelledError, ConnectionError, ClientGone):
        raise
    except Exception:  # noqa: BLE001 - logged; the client gets a JSON 500
        log.exception("API: %s %s failed", request.method, request.path)
        raise web.HTTPInternalServerError(text=json.dumps({"error": "internal error (logged on the server)"}),
                                          content_type="application/json") from None


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=_json))


def _json(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _db(request: web.Request) -> Any:
    return request.app[SERVICES].db


# --- declaring a route -------------------------------------------------------------------------


def endpoint(method: str, path: str, summary: str, *, role: str | None, query: type[Input] = Nothing,
             body: type[Input] | None = None, ok: int = 200, errors: tuple[int, ...] = ()) -> Callable:
    """Register ``handler(request, query[, body])`` at PREFIX + path: the role is checked first, then the
    path and query parameters (`query`), then the JSON body (`body`)."""

    def wrap(handler: Callable[..., Awaitable[web.StreamResponse]]) -> Callable:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            args: list[Any] = [params(request, query)]
            if body is not None:
                args.append(await json_body(request, body))
            return await handler(request, *args)

        routes.route(method, PREFIX + path)(require(role)(run) if role else run)
        OPERATIONS.append(openapi.Operation(method, PREFIX + path, summary, role, query, body, ok, errors))
        return handler

    return wrap


# --- who am I -----------------------------------------------------------------------------


async def _own_agent(request: web.Request) -> Agent | None:
    """The agent the logged-in user is (None: the user takes no calls)."""
    agent_id = request[USER].agent_id
    if agent_id is None:
        return None
    async with _db(request).session() as session:
        return await session.get(Agent, agent_id)


@endpoint("GET", "/me", "The logged-in user, the CSRF token, the agent they are, the page language and the "
          "pause reasons", role="agent")
async def me(request: web.Request, _: Nothing) -> web.Response:
    user = request[USER]
    config = request.app[SERVICES].config
    agent = await _own_agent(request)
    return reply({**user.to_dict(), "csrf_token": user.csrf_token,
                  "agent": None if agent is None else {"id": agent.id, "name": agent.name,
                                                       "interface": agent.interface},
                  "language": i18n.choose(request, config.web.language), "timezone": config.timezone,
                  "pause_reasons": list(config.web.pause_reasons)})


@endpoint("GET", "/me/state", "The logged-in agent's state in the queues (null when in none)", role="agent",
          errors=(403,))
async def my_state(request: web.Request, _: Nothing) -> web.Response:
    agent = await _own_agent(request)
    if agent is None:
        raise refusal(request, 403, "this user is not linked to an agent")
    return reply({"interface": agent.interface, "at": time.time(),
                  "state": request.app[AGENT_SIDE].queue_state.agent(agent.interface)})


class MyPauseBody(Input):
    paused: bool = True
    reason: Line | None = None


@endpoint("POST", "/me/pause", "Pause (with one of web.pause_reasons) or unpause oneself in every queue "
          "(AMI QueuePause)", role="agent", body=MyPauseBody, errors=(403,) + (409, 413, 415, 502, 503))
async def pause_me(request: web.Request, _: Nothing, body: MyPauseBody) -> web.Response:
    agent = await _own_agent(request)
    if agent is None:
        raise refusal(request, 403, "this user is not linked to an agent")
    reasons = request.app[SERVICES].config.web.pause_reasons
    if body.paused and body.reason not in reasons:
        raise refusal(request, 400, f"reason: one of {', '.join(reasons)}")
    return await _ami(request, {"Action": "QueuePause", "Interface": agent.interface,
                                "Paused": "true" if body.paused else "false",
                                "Reason": body.reason if body.paused else None})


@endpoint("GET", "/openapi.json", "This description", role=None)
async def openapi_document(request: web.Request, _: Nothing) -> web.Response:
    return reply(OPENAPI)


@endpoint("GET", "/intents", "The call reasons (intents) and outcomes an agent can record", role="agent")
async def intents(request: web.Request, _: Nothing) -> web.Response:
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


class CustomerSearch(Input):
    q: text(100)
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


def _where(statement: Any, condition: ColumnElement[bool] | None) -> Any:
    return statement if condition is None else statement.where(condition)


def _search(request: web.Request, query: str) -> ColumnElement[bool]:
    """Customers whose number or name matches `query`; LIKE wildcards in it are plain characters."""
    text = query.strip()
    if re.fullmatch(r"[\d\s()+\-.]+", text):
        number = normalise(text, region=request.app[SERVICES].config.region)
        digits = re.sub(r"\D", "", text)
        if number is not None:
            matches = PhoneNumber.e164 == number
        elif len(digits) >= MIN_NUMBER_DIGITS:
            matches = PhoneNumber.e164.contains(digits, autoescape=True)
        else:
            raise refusal(request, 400, f"q: give at least {MIN_NUMBER_DIGITS} digits of a number")
        return Customer.id.in_(select(NumberRole.customer_id).join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
                               .where(matches))
    if sum(ch.isalpha() for ch in text) < MIN_NAME_LETTERS:
        raise refusal(request, 400, f"q: give at least {MIN_NAME_LETTERS} letters of a name or "
                                    f"{MIN_NUMBER_DIGITS} digits of a number")
    # SQLite's lower() knows only ASCII: also try the query as written and in title case
    return or_(Customer.name.contains(text, autoescape=True), Customer.name.contains(text.title(), autoescape=True),
               func.lower(Customer.name).contains(text.lower(), autoescape=True))


@endpoint("GET", "/customers", "Find customers by phone number or name (agents: their callers)", role="agent",
          query=CustomerSearch)
async def customers(request: web.Request, query: CustomerSearch) -> web.Response:
    statement = _where(select(Customer).where(_search(request, query.q)), access.own_customers(request, Customer.id))
    async with _db(request).session() as session:
        found = (await session.scalars(statement.order_by(Customer.id).limit(query.limit))).all()
    return reply({"customers": [customer_dict(c) for c in found]})


class ById(Input):
    id: Id


async def _owned(request: web.Request, session: Any, model: Any, ident: int, mine: Any, kind: str) -> Any:
    """The row `ident` of `model` when this user may read it (`mine`: the access condition on
    `model`, None for all); else the 404 that tells nothing, logged as a denial when the row exists."""
    found = await session.get(model, ident)
    if found is None:
        raise access.not_found(request, kind, ident, denied=False)
    if mine is not None and await session.scalar(select(model.id).where(model.id == ident, mine)) is None:
        raise access.not_found(request, kind, ident, denied=True)
    return found


async def _customer(request: web.Request, session: Any, customer_id: int) -> Customer:
    return await _owned(request, session, Customer, customer_id, access.own_customers(request, Customer.id),
                        "customer")


@endpoint("GET", "/customers/{id}", "A customer with roles and cases", role="agent", query=ById, errors=(404,))
async def customer(request: web.Request, query: ById) -> web.Response:
    async with _db(request).session() as session:
        found = await _customer(request, session, query.id)
        roles = (await session.execute(
            select(NumberRole.kind, PhoneNumber.e164, Organisation.id, Organisation.name)
            .join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
            .outerjoin(Organisation, Organisation.id == NumberRole.organisation_id)
            .where(NumberRole.customer_id == query.id))).all()
        cases = (await session.scalars(select(Case).where(Case.customer_id == query.id)
                                       .order_by(Case.updated_at.desc()))).all()
    return reply({**customer_dict(found),
                  "roles": [{"kind": k, "number": n, "organisation": {"id": oid, "name": oname} if oid else None}
                            for k, n, oid, oname in roles],
                  "cases": [case_dict(c) for c in cases]})


class CaseQuery(Input):
    customer_id: Id | None = None
    organisation_id: Id | None = None
    open: bool = False
    status: Code | None = None
    limit: Annotated[int, Meta(ge=1, le=500)] = 50


@endpoint("GET", "/cases", "Cases of a customer or an organisation, newest first; open=true leaves out closed ones",
          role="agent", query=CaseQuery, errors=(404,))
async def cases(request: web.Request, query: CaseQuery) -> web.Response:
    if (query.customer_id is None) == (query.organisation_id is None):
        raise refusal(request, 400, "give customer_id or organisation_id")
    async with _db(request).session() as session:
        if query.customer_id is not None:
            await _customer(request, session, query.customer_id)
            statement = select(Case).where(Case.customer_id == query.customer_id)
        else:
            await _organisation(request, session, query.organisation_id)
            statement = select(Case).where(Case.organisation_id == query.organisation_id)
        statement = _where(statement, access.own_cases(request, Case.customer_id, Case.organisation_id))
        if query.open:
            statement = statement.where(Case.status.not_in(CLOSED_STATUSES))
        if query.status is not None:
            statement = statement.where(Case.status == query.status)
        found = (await session.scalars(statement.order_by(Case.updated_at.desc(), Case.id.desc())
                                       .limit(query.limit))).all()
    return reply({"cases": [case_dict(c) for c in found]})


async def _organisation(request: web.Request, session: Any, organisation_id: int) -> Organisation:
    return await _owned(request, session, Organisation, organisation_id,
                        access.own_organisations(request, Organisation.id), "organisation")


async def _case(request: web.Request, session: Any, case_id: int) -> Case:
    return await _owned(request, session, Case, case_id,
                        access.own_cases(request, Case.customer_id, Case.organisation_id), "case")


@endpoint("GET", "/cases/{id}", "A case", role="agent", query=ById, errors=(404,))
async def case(request: web.Request, query: ById) -> web.Response:
    async with _db(request).session() as session:
        return reply(case_dict(await _case(request, session, query.id)))


class NoteBody(Input):
    text: Note


@endpoint("POST", "/cases/{id}/notes", "Add a note to a case (agents: the cases of their callers)", role="agent",
          query=ById, body=NoteBody, ok=201, errors=(404, 413, 415))
async def add_note(request: web.Request, query: ById, body: NoteBody) -> web.Response:
    user = request[USER]
    async with _db(request).session() as session:
        found = await _case(request, session, query.id)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        line = f"[{stamp} {user.username}] {body.text.strip()}"
        found.notes = f"{found.notes}\n{line}" if found.notes else line
        await session.commit()
        return reply(case_dict(found), status=201)


# --- calls ----------------------------------------------------------------------------------------


def call_dict(record: CallRecord) -> dict[str, Any]:
    columns = ("call_id", "uniqueid", "number", "line", "customer_id", "role_kind", "organisation_id", "segment",
               "predicted_intent", "predicted_score", "predicted_intent_2", "predicted_intent_3",
               "actual_intent", "confirmed_by", "outcome", "self_served", "queue", "priority", "rule",
               "agent_id", "started_at", "answered_at", "ended_at", "wait_seconds", "talk_seconds", "result",
               "transferred_to", "csat", "nps", "survey", "degraded")
    data = {column: getattr(record, column) for column in columns}
    context = record.context or {}
    data["transcript"] = context.get("transcript")
    return data


async def _settle(request: web.Request) -> None:
    """Write what this node still holds about calls: the IVR's new records, the queue outcomes (which
    agent answered) that the call center writes in batches, and the survey's answers; a call that just
    ended is then found, and found to be this agent's."""
    services = request.app[SERVICES]
    await services.recorder.flush()
    center = request.app[AGENT_SIDE].center
    for updates in ([center.records] if center is not None else []) + [services.updates]:
        try:
            await updates.flush(everything=True)
        except Exception as exc:  # noqa: BLE001 - they stay pending; the answer may lag behind
            log.warning("API: %s not written yet: %s", updates.what, exc)


class CallsQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=500)] = 50
    queue: QueueName | None = None
    agent_id: Id | None = None


@endpoint("GET", "/calls", "Recent calls (agents: the calls that rang them)", role="agent", query=CallsQuery)
async def calls(request: web.Request, query: CallsQuery) -> web.Response:
    statement = _where(select(CallRecord), access.own_calls(request))
    if query.agent_id is not None:
        statement = statement.where(CallRecord.agent_id == query.agent_id)
    if query.queue is not None:
        statement = statement.where(CallRecord.queue == query.queue)
    await _settle(request)
    async with _db(request).session() as session:
        found = (await session.scalars(statement.order_by(CallRecord.started_at.desc()).limit(query.limit))).all()
    return reply({"calls": [call_dict(r) for r in found]})


class ByCall(Input):
    call_id: CallId


async def _call(request: web.Request, session: Any, call_id: str) -> CallRecord:
    record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
    mine = access.own_calls(request)
    if record is not None and mine is not None:
        if await session.scalar(select(CallRecord.id).where(CallRecord.id == record.id, mine)) is None:
            raise access.not_found(request, "call", call_id, denied=True)
    if record is None:
        raise access.not_found(request, "call", call_id, denied=False)
    return record


@endpoint("GET", "/calls/{call_id}", "One call with its IVR context", role="agent", query=ByCall, errors=(404,))
async def call(request: web.Request, query: ByCall) -> web.Response:
    await _settle(request)
    async with _db(request).session() as session:
        record = await _call(request, session, query.call_id)
    data = call_dict(record)
    data["context"] = record.context
    return reply(data)


class DispositionBody(Input):
    intent: Code
    outcome: Outcome


@endpoint("POST", "/calls/{call_id}/disposition", "Record the real reason and the outcome of a call", role="agent",
          query=ByCall, body=DispositionBody, errors=(404, 413, 415))
async def disposition(request: web.Request, query: ByCall, body: DispositionBody) -> web.Response:
    catalogue = request.app[SERVICES].catalogue
    if body.intent not in catalogue.names:
        raise refusal(request, 400, f"intent: one of {', '.join(catalogue.names)}")
    await _settle(request)
    async with _db(request).session() as session:
        record = await _call(request, session, query.call_id)
        # The agent's word is the last on the real reason: it replaces the caller's in the dialog.
        values: dict[str, Any] = {"actual_intent": body.intent, "confirmed_by": "agent", "outcome": body.outcome}
        if record.agent_id is None and request[USER].agent_id is not None:
            values["agent_id"] = request[USER].agent_id
        await session.execute(update(CallRecord).where(CallRecord.id == record.id).values(**values))
        await session.commit()
    return reply({"call_id": query.call_id, **values})


@endpoint("GET", "/predictions", "How often the predicted reason was right", role="supervisor")
async def predictions(request: web.Request, _: Nothing) -> web.Response:
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


@endpoint("GET", "/queues", "Live queues, agents and statistics (the wallboard)", role="supervisor")
async def queues(request: web.Request, _: Nothing) -> web.Response:
    return reply(wallboard_now(request.app[AGENT_SIDE]))


@endpoint("GET", "/agents", "Agents and their queue memberships", role="supervisor")
async def agents(request: web.Request, _: Nothing) -> web.Response:
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


_AMI = (409, 413, 415, 502, 503)  # refused by Asterisk, too large, not JSON, failed on the way, not connected


async def _ami(request: web.Request, fields: dict[str, str | None]) -> web.Response:
    from ivr.asterisk.ami import AmiError
    from ivr.asterisk.ami_client import AmiActionError, AmiNotConnected

    ami = request.app[AGENT_SIDE].ami
    if ami is None:
        raise refusal(request, 503, "no AMI connection is configured (ami.host)")
    action = {key: value for key, value in fields.items() if value is not None}
    try:
        result = await ami.action(action, check=True, timeout=5.0)
    except AmiNotConnected as exc:
        raise refusal(request, 503, f"Asterisk is not connected: {exc}") from None
    except AmiActionError as exc:
        raise refusal(request, 409, str(exc)) from None
    except AmiError as exc:
        raise refusal(request, 502, f"{action['Action']}: {exc}") from None
    return reply({"action": action["Action"], "message": result.message})


class PauseBody(Input):
    interface: Interface
    paused: bool = True
    queue: QueueName | None = None
    reason: Line | None = None


@endpoint("POST", "/actions/pause", "Pause or unpause a member (AMI QueuePause); without queue, in every queue",
          role="supervisor", body=PauseBody, errors=_AMI)
async def pause(request: web.Request, _: Nothing, body: PauseBody) -> web.Response:
    return await _ami(request, {"Action": "QueuePause", "Interface": body.interface,
                                "Paused": "true" if body.paused else "false", "Queue": body.queue,
                                "Reason": body.reason})


class AddBody(Input):
    queue: QueueName
    interface: Interface
    penalty: Penalty = 0
    name: Line | None = None


@endpoint("POST", "/actions/add", "Add a member to a queue (AMI QueueAdd)", role="supervisor", body=AddBody,
          errors=_AMI)
async def add_member(request: web.Request, _: Nothing, body: AddBody) -> web.Response:
    return await _ami(request, {"Action": "QueueAdd", "Queue": body.queue, "Interface": body.interface,
                                "Penalty": str(body.penalty), "MemberName": body.name})


class RemoveBody(Input):
    queue: QueueName
    interface: Interface


@endpoint("POST", "/actions/remove", "Remove a member from a queue (AMI QueueRemove)", role="supervisor",
          body=RemoveBody, errors=_AMI)
async def remove_member(request: web.Request, _: Nothing, body: RemoveBody) -> web.Response:
    return await _ami(request, {"Action": "QueueRemove", "Queue": body.queue, "Interface": body.interface})


class PenaltyBody(Input):
    interface: Interface
    penalty: Penalty
    queue: QueueName | None = None


@endpoint("POST", "/actions/penalty", "Change a member's penalty (AMI QueuePenalty)", role="supervisor",
          body=PenaltyBody, errors=_AMI)
async def penalty(request: web.Request, _: Nothing, body: PenaltyBody) -> web.Response:
    return await _ami(request, {"Action": "QueuePenalty", "Interface": body.interface,
                                "Penalty": str(body.penalty), "Queue": body.queue})


OPENAPI = openapi.document(OPERATIONS)
