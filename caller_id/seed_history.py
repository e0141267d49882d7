"""A seeded call history over the seeded CRM, whose real reasons follow a stated process.

`await seed_history(db, catalogue, calls)` adds `calls` call records to a CRM
that `caller_id.seed` filled, over the `days` before `now`.  Each call is
made the way the server makes one: the caller's profile comes from the real
CRM lookup (`caller_id.lookup.SqlSource`), seen as it was at the call's time
(`as_of`), and the real `caller_id.predict.predict` guesses the intents over
it, so the features the record keeps (`caller_id.learning.CallFeatures`) are
exactly what the live call path stores for that caller at that time.  The
same `seed` and `now` give the same history.

The process, step by step (every share below is a parameter of the module):

1. When: `calls` start times drawn uniformly over the `days` before `now`,
   taken in time order.
2. Who: with probability REPEAT_SHARE (0.25) the caller of a call of the
   last REPEAT_WINDOW_DAYS (3) days calls again (uniformly among them);
   otherwise with UNKNOWN_SHARE (0.05) a number the CRM does not know; else
   a number of the CRM, each weighing (1 + its open cases) cubed (more open
   cases, more calls).  The role is one of the number's roles (uniformly);
   the line is ``b2b`` for a role in an organisation, else ``general``
   (60 %) or ``b2c`` (40 %).
3. What the server saw: the profile at the call's time (`as_of`): the cases
   opened by then, each last updated at the earlier of its CRM update and
   the seed's own rule applied at that time (opened + 0.7 x (time - opened)),
   statuses as the CRM has them now; the recent calls are the caller's
   earlier calls of this history (within 30 days, the newest 5, each by its
   confirmed reason, else the guessed one, as the lookup reads them).  The
   rules' guesses, their scores and signals are `predict`'s over that view.
4. The true reason: with OUTSIDE_SHARE (0.04) an intent the rules did not
   guess (uniformly among them); otherwise one of the guesses, drawn with
   probability proportional to exp(u), where for a guess with signals s, a
   caller of segment g (premium: A or B) calling on day d of the month:

       u = BASE[intent]
           + 0.8  x the call's guesses of quiet cases, for the fallback intent (a quiet
                  case: not updated for 7 days, not overdue, nothing owed; callers whose
                  cases are quiet call about something else)
           + 1.2  if it has a case that is not quiet
           + 0.25 x min(days overdue, 20)          (the rules stop growing at 7 days)
           + 1.6  if the customer owes the next step (0.3 when premium: managers chase it)
           + 1.5  if its case was updated within 2 days
           + 0.8  if its case is the caller's most recently opened open case
           + 1.8  x min(earlier calls about it within 3 days, 2)   (unresolved: they call again)
           + 0.6  x min(calls about one other intent in the escalation window, 5)
           + 1.2  x (5 - priority) / 4 when premium (priority does not matter otherwise)
           + 2.0  for loan_payment from day 25 to day 3 (pay day)

   with BASE as below (0 for an intent not listed).  The rules weigh the
   same signals with fixed weights, the same for every segment and day, and
   know nothing of the newest case: they capture the process only partly.
5. Confirmation: CALLER_CONFIRMS (0.30) by the caller in the dialog,
   AGENT_CONFIRMS (0.50) by the agent's disposition, the rest never
   (``actual_intent`` stays NULL).  A call confirmed by the caller about an
   intent with a self-service answer was self-served with probability 0.5,
   else answered; one confirmed by an agent was answered; an unconfirmed one
   was abandoned (45 %), hung up in the IVR (20 %), left unanswered (10 %) or
   answered (25 %).  Waits are exponential (mean 40 s), talks too (mean
   180 s); a fifth of the answered calls left a CSAT of 1-5.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from caller_id.catalogue import IntentCatalogue
from caller_id.learning import CallFeatures
from caller_id.lookup import SqlSource
from caller_id.models import Agent, CallRecord, PhoneNumber
from caller_id.predict import Intent, predict
from caller_id.profile import CallerProfile, RecentCall
from caller_id.store import Database

REPEAT_SHARE = 0.25
REPEAT_WINDOW_DAYS = 3.0
UNKNOWN_SHARE = 0.05
OUTSIDE_SHARE = 0.04
CALLER_CONFIRMS = 0.30
AGENT_CONFIRMS = 0.50
QUIET_DAYS = 7.0
RECENT_CALL_DAYS = 30.0  # as caller_id.lookup.SqlSource reads recent calls
RECENT_CALL_LIMIT = 5
BASE: Mapping[str, float] = {
    "card_reissue_delay": 0.6, "card_ready": 0.0, "card_pickup": 0.3, "card_blocked": 1.2,
    "documents_missing": 0.2, "loan_application_status": 0.2, "mortgage_application": 0.0,
    "loan_payment": -0.6, "deposit_question": -0.9, "transfer_problem": 0.8, "insurance_claim": 0.1,
    "b2b_contract": 0.2, "product_offer": -0.3, "complaint_escalation": 0.4, "general_question": 1.4,
}
_BATCH = 10_000
_UNKNOWN_PREFIX = "+7383"  # Novosibirsk: numbers the seeded CRM never hands out (caller_id.seed)


@dataclass(frozen=True)
class HistorySummary:
    calls: int = 0
    confirmed_by_caller: int = 0
    confirmed_by_agent: int = 0
    unknown_callers: int = 0
    days: float = 0.0


def is_quiet(signals: Mapping[str, float]) -> bool:
    """A guess of a quiet case: not updated for QUIET_DAYS, not overdue, nothing owed."""
    return ("case_priority" in signals and signals.get("update_age_days", 0.0) > QUIET_DAYS
            and not signals.get("days_overdue") and not signals.get("customer_owes"))


def utility(name: str, signals: Mapping[str, float], *, premium: bool, day: int, quiet: int = 0,
            fallback: bool = False) -> float:
    """u of the process (see the module docstring) for one guess; `quiet` counts the call's
    guesses of quiet cases, `fallback` says this is the catalogue's fallback intent."""
    u = BASE.get(name, 0.0)
    if fallback:
        u += 0.8 * quiet
    if "case_priority" in signals:
        owes, overdue = bool(signals.get("customer_owes")), signals.get("days_overdue", 0.0)
        if not is_quiet(signals):
            u += 1.2
        if premium:
            u += 1.2 * (5 - signals["case_priority"]) / 4
        u += 0.25 * min(overdue, 20.0)
        if owes:
            u += 0.3 if premium else 1.6
        if signals.get("update_age_days", 0.0) <= 2.0:
            u += 1.5
        if signals.get("case_order") == 1:
            u += 0.8
    u += 1.8 * min(signals.get("calls", 0.0), 2.0)
    u += 0.6 * min(signals.get("escalation_calls", 0.0), 5.0)
    if name == "loan_payment" and (day >= 25 or day <= 3):
        u += 2.0
    return u


def as_of(profile: CallerProfile, at: dt.datetime, recent_calls: Sequence[RecentCall]) -> CallerProfile:
    """The profile as the CRM showed it at `at`, with these recent calls (step 3 of the process)."""
    customers = []
    for customer in profile.customers:
        cases = []
        for case in customer.cases:
            if case.opened_at > at:
                continue
            updated = min(case.updated_at, case.opened_at + (at - case.opened_at) * 0.7)
            cases.append(case if updated == case.updated_at else replace(case, updated_at=updated))
        customers.append(replace(customer, cases=tuple(cases)))
    return replace(profile, customers=tuple(customers), recent_calls=tuple(recent_calls))


@dataclass
class _Caller:
    number: str
    profile: CallerProfile
    recent: deque  # of RecentCall, newest first


async def seed_history(db: Database, catalogue: IntentCatalogue, calls: int, *, seed: int = 1,
                       days: float = 60.0, now: dt.datetime | None = None, zone: str = "Europe/Moscow",
                       queues: Mapping[str, str] | None = None, callers: int | None = None) -> HistorySummary:
    """Add `calls` records of the process to the seeded CRM of `db` (see the module docstring).

    `queues` maps a line to the queue its calls wait in (the record's ``queue``); `callers`
    bounds how many of the CRM's numbers call (default: all of them, up to calls / 4)."""
    if calls < 0 or days <= 0:
        raise ValueError("calls must be zero or more and days more than zero")
    now = now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    local = ZoneInfo(zone)
    rng = random.Random(f"{seed}:history")
    queues = dict(queues or {"general": "support", "b2b": "b2b", "b2c": "b2c"})
    source = SqlSource(db, recent_call_limit=0, clock=lambda: now)
    try:
        async with db.session() as session:
            numbers = list((await session.scalars(select(PhoneNumber.e164).order_by(PhoneNumber.id))).all())
            agents = list((await session.scalars(select(Agent.id).order_by(Agent.id))).all())
        wanted = callers if callers is not None else max(50, calls // 4)
        if len(numbers) > wanted:
            numbers = sorted(rng.sample(numbers, wanted))
        known: list[_Caller] = []
        for number in numbers:
            profile = await source.lookup(number)
            if profile is not None and profile.roles:
                known.append(_Caller(number, profile, deque()))
    finally:
        source.close()
    if not known and calls:
        raise ValueError("the CRM has no numbers to call from: seed it first (ivr db seed)")
    weights = list(itertools.accumulate((1 + sum(1 for c in _all_cases(k.profile) if c.is_open)) ** 3 for k in known))
    generator = _History(catalogue, rng, local, queues, agents, seed)
    starts = sorted(now - dt.timedelta(seconds=rng.uniform(0, days * 86_400)) for _ in range(calls))
    recent: deque[tuple[dt.datetime, _Caller]] = deque()
    strangers: dict[int, _Caller] = {}
    batch: list[dict[str, Any]] = []
    summary = {"calls": 0, "caller": 0, "agent": 0, "unknown": 0}
    for n, at in enumerate(starts):
        while recent and recent[0][0] < at - dt.timedelta(days=REPEAT_WINDOW_DAYS):
            recent.popleft()
        if recent and rng.random() < REPEAT_SHARE:
            caller = recent[rng.randrange(len(recent))][1]
        elif rng.random() < UNKNOWN_SHARE or not known:
            index = rng.randrange(max(1, calls // 20))
            caller = strangers.get(index)
            if caller is None:
                number = f"{_UNKNOWN_PREFIX}{5_000_000 + index:07d}"
                caller = strangers[index] = _Caller(number, CallerProfile(number=number), deque())
        else:
            caller = known[bisect.bisect(weights, rng.random() * weights[-1])]
        batch.append(generator.call(n, caller, at, summary))
        recent.append((at, caller))
        if len(batch) >= _BATCH:
            await _write(db, batch)
            batch = []
    if batch:
        await _write(db, batch)
    return HistorySummary(calls=summary["calls"], confirmed_by_caller=summary["caller"],
                          confirmed_by_agent=summary["agent"], unknown_callers=summary["unknown"], days=days)


def _all_cases(profile: CallerProfile):
    for customer in profile.customers:
        yield from customer.cases


class _History:
    """One call of the process at a time, as the record it leaves."""

    def __init__(self, catalogue: IntentCatalogue, rng: random.Random, zone: ZoneInfo,
                 queues: Mapping[str, str], agents: list[int], seed: int):
        self.catalogue = catalogue
        self.rng = rng
        self.zone = zone
        self.queues = queues
        self.agents = agents
        self.seed = seed
        self.self_service = {spec.name for spec in catalogue.intents if spec.answer is not None}

    def call(self, n: int, caller: _Caller, at: dt.datetime, summary: dict[str, int]) -> dict[str, Any]:
        rng = self.rng
        profile = caller.profile
        role = rng.choice(profile.roles) if profile.roles else None
        line = "b2b" if role is not None and role.organisation is not None else (
            "general" if rng.random() < 0.6 else "b2c")
        while caller.recent and caller.recent[-1].started_at < at - dt.timedelta(days=RECENT_CALL_DAYS):
            caller.recent.pop()
        seen = as_of(profile, at, tuple(caller.recent)[:RECENT_CALL_LIMIT])
        view = seen.view(role) if role is not None else seen.view()
        local = at.astimezone(self.zone)
        intents = predict(view, self.catalogue, line=line, now=local)
        features = CallFeatures.of_view(intents, view)
        actual = self._true_reason(intents, premium=view.segment in ("A", "B"), day=local.day)
        confirmed, result = self._ending(actual)
        summary["calls"] += 1
        if confirmed:
            summary[confirmed] += 1
        if not view.is_known:
            summary["unknown"] += 1
        top = intents[0]
        record: dict[str, Any] = {
            "call_id": f"history-{self.seed}-{n:08d}", "number": caller.number, "line": line,
            "customer_id": view.customer.id if view.customer else None,
            "role_kind": view.role.kind if view.role else None,
            "organisation_id": view.organisation.id if view.organisation else None,
            "segment": view.segment, "predicted_intent": top.intent, "predicted_score": top.score,
            "predicted_intent_2": intents[1].intent if len(intents) > 1 else None,
            "predicted_intent_3": intents[2].intent if len(intents) > 2 else None,
            "actual_intent": actual if confirmed else None, "confirmed_by": confirmed, "result": result,
            "self_served": result == "self_served", "started_at": at,
            "queue": None if result in ("self_served", "ivr_hangup") else self.queues.get(line),
            "context": {"outcome": "self_served" if result == "self_served" else "routed",
                        "features": features.to_dict()},
        }
        self._times(record, result, at)
        caller.recent.appendleft(RecentCall(started_at=at, line=line,
                                            intent=actual if confirmed else top.intent,
                                            queue=record["queue"], self_served=record["self_served"]))
        return record

    def _true_reason(self, intents: Sequence[Intent], *, premium: bool, day: int) -> str:
        rng = self.rng
        guessed = {intent.intent for intent in intents}
        outside = [name for name in self.catalogue.names if name not in guessed]
        if outside and rng.random() < OUTSIDE_SHARE:
            return rng.choice(outside)
        quiet = sum(1 for intent in intents if is_quiet(intent.signals))
        fallback = self.catalogue.fallback.name
        utilities = [utility(i.intent, i.signals, premium=premium, day=day, quiet=quiet,
                             fallback=i.intent == fallback) for i in intents]
        top = max(utilities)
        cumulative = list(itertools.accumulate(math.exp(u - top) for u in utilities))
        return intents[bisect.bisect(cumulative, rng.random() * cumulative[-1])].intent

    def _ending(self, actual: str) -> tuple[str | None, str]:
        rng = self.rng
        draw = rng.random()
        if draw < CALLER_CONFIRMS:
            served = actual in self.self_service and rng.random() < 0.5
            return "caller", "self_served" if served else "answered"
        if draw < CALLER_CONFIRMS + AGENT_CONFIRMS:
            return "agent", "answered"
        other = rng.random()
        return None, ("abandoned" if other < 0.45 else "ivr_hangup" if other < 0.65
                      else "unanswered" if other < 0.75 else "answered")

    def _times(self, record: dict[str, Any], result: str, at: dt.datetime) -> None:
        rng = self.rng
        if result in ("self_served", "ivr_hangup"):
            record["ended_at"] = at + dt.timedelta(seconds=rng.uniform(15, 90))
            return
        wait = rng.expovariate(1 / 40)
        record["wait_seconds"] = round(wait, 1)
        if result != "answered":
            record["ended_at"] = at + dt.timedelta(seconds=wait)
            return
        talk = rng.expovariate(1 / 180)
        record["answered_at"] = at + dt.timedelta(seconds=wait)
        record["ended_at"] = record["answered_at"] + dt.timedelta(seconds=talk)
        record["talk_seconds"] = round(talk, 1)
        record["agent_id"] = rng.choice(self.agents) if self.agents else None
        if rng.random() < 0.2:
            record["csat"] = rng.randint(1, 5)


_COLUMNS = tuple(c.name for c in CallRecord.__table__.columns if c.name != "id")
_DEFAULTS = {name: None for name in _COLUMNS} | {"self_served": False, "context": {}}


async def _write(db: Database, batch: list[dict[str, Any]]) -> None:
    rows = [{**_DEFAULTS, **record} for record in batch]
    async with db.engine.begin() as conn:
        await conn.execute(CallRecord.__table__.insert(), rows)


__all__ = ["HistorySummary", "as_of", "seed_history", "utility"]
