"""Who may read which calls, customers and cases.

Supervisors and administrators read everything.  An agent reads the calls
that rang them: the ones on their screen now (ringing or answered) and the
ones they took in the last ``web.agent_history_days`` days; and the
customers of those calls, the organisations those callers called for, and
the cases of those customers and organisations.  Nothing else, whatever id
or search is asked for.

A read that is refused looks like a read of something that does not exist
(404): an id that is someone else's tells nothing.  It is logged as a denied
access with the user's id (never a customer's name).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, and_, false, or_, select

from caller_id.models import CallRecord
from ivr.web.inputs import refusal
from ivr.web.keys import AGENT_SIDE, SERVICES, USER

log = logging.getLogger(__name__)


def sees_everything(request: web.Request) -> bool:
    return request[USER].has("supervisor")


def history_start(request: web.Request) -> dt.datetime:
    days = request.app[SERVICES].config.web.agent_history_days
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)


def _cards(request: web.Request) -> list[dict[str, Any]]:
    agent_id = request[USER].agent_id
    if agent_id is None:
        return []
    screenpop = request.app[AGENT_SIDE].screenpop
    return screenpop.cards_for(agent_id) + screenpop.wrapped_up_by(agent_id)


def live_call_ids(request: web.Request) -> set[str]:
    """Calls on this agent's screen now or answered and just ended (their records may not be written yet)."""
    return {card["call_id"] for card in _cards(request) if card.get("call_id")}


def _live_ids(request: web.Request, kind: str) -> set[int]:
    found = set()
    for card in _cards(request):
        item = (card.get("card") or {}).get(kind) or {}
        if isinstance(item.get("id"), int):
            found.add(item["id"])
    return found


def own_calls(request: web.Request) -> ColumnElement[bool] | None:
    """The condition on CallRecord of the calls this user may read (None: every call)."""
    if sees_everything(request):
        return None
    agent_id = request[USER].agent_id
    if agent_id is None:
        return false()
    taken = and_(CallRecord.agent_id == agent_id, CallRecord.started_at >= history_start(request))
    live = live_call_ids(request)
    return or_(taken, CallRecord.call_id.in_(live)) if live else taken


def _of_own_calls(request: web.Request, column: Any, call_column: Any, kind: str) -> ColumnElement[bool] | None:
    calls = own_calls(request)
    if calls is None:
        return None
    condition = column.in_(select(call_column).where(calls, call_column.is_not(None)))
    live = _live_ids(request, kind)
    return or_(condition, column.in_(live)) if live else condition


def own_customers(request: web.Request, column: Any) -> ColumnElement[bool] | None:
    """The condition on a customer id `column` for the customers this user may read (None: all)."""
    return _of_own_calls(request, column, CallRecord.customer_id, "customer")


def own_organisations(request: web.Request, column: Any) -> ColumnElement[bool] | None:
    return _of_own_calls(request, column, CallRecord.organisation_id, "organisation")


def own_cases(request: web.Request, customer_column: Any, organisation_column: Any) -> ColumnElement[bool] | None:
    """Cases of the customers this user may read, or of the organisations their callers called for."""
    customers = own_customers(request, customer_column)
    if customers is None:
        return None
    return or_(customers, own_organisations(request, organisation_column))


def not_found(request: web.Request, kind: str, ident: Any, *, denied: bool) -> web.HTTPException:
    """The 404 for something absent or not this user's; a denial is logged."""
    if denied:
        user = request[USER]
        log.warning("access denied: user #%s (%s) asked for %s %s (%s %s)", user.id, user.role, kind, ident,
                    request.method, request.path)
    return refusal(request, 404, f"no {kind} {ident}")
