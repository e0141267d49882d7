"""Identify, predict, route: the decision a call gets, without any I/O to Asterisk.

The FastAGI flow and `ivr lookup` both use this, so the command line shows
exactly what a call from a number to a line would get.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from caller_id.directory import LookupResult
from caller_id.predict import Intent, predict
from caller_id.profile import CallerView, Role
from ivr.config import Line
from queues.rules import RouteDecision, RoutingFacts

SEGMENT_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3}


@dataclass(frozen=True)
class Decision:
    lookup: LookupResult
    line: Line
    view: CallerView
    intents: tuple[Intent, ...]
    route: RouteDecision
    # Roles that fit the line when there is more than one: the caller is asked.
    question: tuple[Role, ...] = ()
    # The reason routing uses after the self-service dialog: the one the caller
    # confirmed or named, or the next best guess when they turned the first down.
    confirmed_intent: str | None = None

    @property
    def intent(self) -> str | None:
        """The reason routing uses: the confirmed one, else the best guess."""
        if self.confirmed_intent:
            return self.confirmed_intent
        return self.top_intent.intent if self.top_intent else None

    @property
    def top_intent(self) -> Intent | None:
        return self.intents[0] if self.intents else None

    def to_dict(self) -> dict[str, Any]:
        profile = self.lookup.profile
        view = self.view
        customer = None
        if view.customer is not None:
            c = view.customer
            customer = {
                "id": c.id, "name": c.name, "segment": c.segment, "is_vip": c.is_vip,
                "language": c.language,
                "manager": _manager(c.manager),
            }
        return {
            "number": self.lookup.number,
            "line": self.line.name,
            "lookup": {"source": self.lookup.source, "degraded": self.lookup.degraded,
                       "elapsed_ms": round(self.lookup.elapsed_ms, 2)},
            "customer": customer,
            "customers": [{"id": c.id, "name": c.name} for c in profile.customers],
            "roles": [_role(r) for r in profile.roles],
            "role": _role(view.role) if view.role else None,
            "question": [_role(r) for r in self.question],
            "segment": view.segment,
            "is_vip": view.is_vip,
            "manager": _manager(view.manager),
            "open_cases": [
                {"id": k.id, "product": k.product, "title": k.title, "status": k.status,
                 "priority": k.priority, "due_at": k.due_at.isoformat() if k.due_at else None,
                 "customer_owes_next_step": k.customer_owes_next_step}
                for k in view.cases if k.is_open
            ],
            "recent_calls": [
                {"started_at": c.started_at.isoformat(), "line": c.line, "intent": c.intent,
                 "queue": c.queue, "self_served": c.self_served}
                for c in view.recent_calls
            ],
            "intents": [i.to_dict() for i in self.intents],
            "confirmed_intent": self.confirmed_intent,
            "route": self.route.to_dict(),
        }


def _role(role: Role) -> dict[str, Any]:
    org = role.organisation
    return {
        "kind": role.kind, "customer_id": role.customer_id, "label": role.label,
        "organisation": None if org is None else {
            "id": org.id, "name": org.name, "segment": org.segment, "is_vip": org.is_vip},
    }


def _manager(manager: Any) -> dict[str, Any] | None:
    if manager is None:
        return None
    return {"id": manager.id, "name": manager.name, "interface": manager.interface}


def candidate_roles(lookup: LookupResult, line: Line) -> tuple[Role, ...]:
    """The caller's roles that fit the line (all of them when none fits)."""
    roles = lookup.profile.roles
    fitting = tuple(r for r in roles if r.kind in line.roles)
    return fitting or roles


def default_role(roles: tuple[Role, ...], lookup: LookupResult) -> Role | None:
    """The role assumed when the caller is not (or cannot be) asked: the best served one."""
    if not roles:
        return None
    profile = lookup.profile

    def rank(role: Role) -> tuple[int, int]:
        view = profile.view(role)
        return (0 if view.is_vip else 1, SEGMENT_ORDER.get(view.segment or "D", 4))

    return min(roles, key=rank)


def decide(
    lookup: LookupResult,
    line: Line,
    *,
    catalogue: Any,
    rules: Any,
    now: dt.datetime,
    role: Role | None = None,
) -> Decision:
    """The whole decision for one role (the default role when `role` is None)."""
    roles = candidate_roles(lookup, line)
    question = roles if role is None and len(roles) > 1 else ()
    chosen = role or default_role(roles, lookup)
    view = lookup.profile.view(chosen) if chosen else lookup.profile.view()
    language = view.language or line.language
    intents = tuple(predict(view, catalogue, line=line.name, now=now, language=language))
    top = intents[0].intent if intents else None
    route = rules.decide(RoutingFacts(view=view, line=line.name, intent=top, now=now))
    return Decision(lookup=lookup, line=line, view=view, intents=intents, route=route, question=question)


def with_intent(decision: Decision, intent: str, *, rules: Any, now: dt.datetime) -> Decision:
    """The decision routed again for the reason the caller gave."""
    route = rules.decide(RoutingFacts(view=decision.view, line=decision.line.name, intent=intent, now=now))
    return replace(decision, route=route, confirmed_intent=intent)
