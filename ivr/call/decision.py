"""Identify, predict, route: the decision a call gets, without any I/O to Asterisk.

The FastAGI flow and `ivr lookup` both use this, so the command line shows
exactly what a call from a number to a line would get.

The catalogue's rules guess the intents (`caller_id.predict`); with a learned
ranker (`caller_id.learning.LiveRanker`, which the server loads only when it
beat the rules on held-out calls) the same guesses are reordered by the
model's probability, each then scored with it, their reasons unchanged.  A
ranker that fails keeps the rules' order (it counts its failures): the call
goes on either way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from caller_id.catalogue import IntentCatalogue
from caller_id.directory import LookupResult
from caller_id.learning import CallFeatures, LiveRanker
from caller_id.predict import Intent, predict
from caller_id.profile import CallerView, Role
from ivr.call.context import DecisionPart, LookupPart
from ivr.config import Line
from queues.rules import RouteDecision, RoutingFacts, RuleSet

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

    def part(self) -> DecisionPart:
        """The decision as the call context keeps it for the agent's card."""
        lookup, view = self.lookup, self.view
        return DecisionPart.of(
            number=lookup.number,
            line=self.line.name,
            lookup=LookupPart(lookup.source, lookup.degraded, round(lookup.elapsed_ms, 2)),
            customer=view.customer,
            customers=lookup.profile.customers,
            roles=lookup.profile.roles,
            role=view.role,
            question=self.question,
            segment=view.segment,
            is_vip=view.is_vip,
            manager=view.manager,
            open_cases=tuple(case for case in view.cases if case.is_open),
            recent_calls=view.recent_calls,
            intents=self.intents,
            confirmed_intent=self.confirmed_intent,
            route=self.route,
        )

    def to_dict(self) -> dict[str, Any]:
        """`part` as JSON: what a call context stores and `ivr lookup` prints."""
        return self.part().to_dict()


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
    catalogue: IntentCatalogue,
    rules: RuleSet,
    now: dt.datetime,
    role: Role | None = None,
    ranker: LiveRanker | None = None,
) -> Decision:
    """The whole decision for one role (the default role when `role` is None), the intents
    reordered by `ranker` when one is given."""
    roles = candidate_roles(lookup, line)
    question = roles if role is None and len(roles) > 1 else ()
    chosen = role or default_role(roles, lookup)
    view = lookup.profile.view(chosen) if chosen else lookup.profile.view()
    language = view.language or line.language
    intents = tuple(predict(view, catalogue, line=line.name, now=now, language=language))
    if ranker is not None and intents:
        intents = ranker.rerank(intents, CallFeatures.of_view(intents, view), line=line.name,
                                segment=view.segment, now=now)
    top = intents[0].intent if intents else None
    route = rules.decide(RoutingFacts(view=view, line=line.name, intent=top, now=now))
    return Decision(lookup=lookup, line=line, view=view, intents=intents, route=route, question=question)


def with_intent(decision: Decision, intent: str, *, rules: RuleSet, now: dt.datetime) -> Decision:
    """The decision routed again for the reason the caller gave."""
    route = rules.decide(RoutingFacts(view=decision.view, line=decision.line.name, intent=intent, now=now))
    return replace(decision, route=route, confirmed_intent=intent)
