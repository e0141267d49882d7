"""Why is this person calling?  Ranked guesses with the evidence for each.

`predict` weighs, for every intent in the catalogue, the caller's cases that
match it (status, priority, a due date passed or close, the customer owing the
next step, a fresh update), the dialled line, and the recent calls (repeats
about the same intent, or enough repeats about another one to suggest an
escalation).  Each signal is a number from 0 to 1 and they combine as
independent evidence, score = 1 - product(1 - s), so a score never leaves 0..1
and every piece of evidence raises it.  Each signal that has a reason text in
the catalogue leaves a sentence in the caller's language: what the case says
first, then the calls, then the line.

The fallback intent is always in the answer, so there is always something to
route on; an unknown caller gets only the line priors, repeats and the fallback.

Every guess also carries the signals it was scored on (`Intent.signals`):
what each piece of evidence weighed, under its kind, and the plain values
behind them (`SIGNALS` lists them).  They are kept with the call record, so
`caller_id.learning` can learn from what was known when the call came; they
change neither the score nor the reasons.

Everything is computed from the arguments: no I/O, no clock, no randomness
(lookup tables for a catalogue are built on its first use and kept with it).
Dates are read in the time zone of `now` (a naive `now` is taken as UTC for
aware values; naive values are taken as being in `now`'s zone).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NamedTuple
from weakref import WeakKeyDictionary

from caller_id.catalogue import CaseMatch, IntentCatalogue, IntentSpec, Settings, Weights
from caller_id.profile import Case, CallerView, RecentCall
from caller_id.templates import Text

_DAY = 86_400.0
# Reasons read in this order: what the case says first, then the calls, the line.
_REASON_ORDER = {kind: index for index, kind in enumerate(
    ("overdue", "customer_owes", "due_soon", "case", "priority", "recent_update",
     "escalation", "repeat_calls", "line", "withheld_caller", "unknown_caller", "fallback", "other_question"))}
# The default "open case" reason is given only when none of these said more.
_SPECIFIC_CASE_REASONS = frozenset({"overdue", "customer_owes", "due_soon"})

# The signals of a guess (`Intent.signals`), each a number; a signal that is 0 is left out.
SIGNALS: Mapping[str, str] = MappingProxyType({
    "rules": "the intent's score as the catalogue's weights make it (0..1)",
    "case": "the weight an open case matching the intent added",
    "priority": "the weight the case's priority added",
    "overdue": "the weight the passed due date added",
    "due_soon": "the weight the close due date added",
    "customer_owes": "the weight the customer owing the next step added",
    "recent_update": "the weight the fresh update added",
    "repeat_calls": "the weight the earlier calls about this intent added",
    "escalation": "the weight the repeated calls about another intent added",
    "line": "the weight the dialled line added",
    "prior": "the intent's prior",
    "case_priority": "the case's priority, 1 (highest) to 5",
    "days_overdue": "whole days the case's due date has passed",
    "days_until_due": "whole days until the case's due date",
    "case_age_days": "days since the case was opened",
    "update_age_days": "days since the case was last updated",
    "case_order": "1 for the caller's most recently opened open case, 2 for the one before, ...",
    "calls": "earlier calls about this intent within repeat_call_days",
    "escalation_calls": "calls about one other intent within the escalation window",
})
_EVIDENCE_SIGNALS = frozenset({"case", "priority", "overdue", "due_soon", "customer_owes", "recent_update",
                               "repeat_calls", "escalation", "line", "prior"})


@dataclass(frozen=True)
class Intent:
    """One ranked guess: the intent name, its score (0..1), why, and the case behind it.

    `signals` are what the score was made of (see `SIGNALS`); they are kept with the call
    record, not shown (`to_dict` leaves them out)."""

    intent: str
    score: float
    reasons: tuple[str, ...]
    case_id: int | None = None
    signals: Mapping[str, float] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "score": self.score,
                "reasons": list(self.reasons), "case_id": self.case_id}


def predict(view: CallerView, catalogue: IntentCatalogue, *, line: str | None,
            now: dt.datetime, language: str | None = None) -> list[Intent]:
    """The catalogue's intents that fit this caller, best first.

    `now` should carry the contact center's time zone (the `timezone`
    setting): "overdue by 2 days" and "3 Dec" are counted in its days.
    `language` (for example the one chosen in the IVR) wins over the
    caller's own; the catalogue's default applies when it speaks neither.
    Equal scores keep the catalogue's order.
    """
    index = _index_of(catalogue)
    language = catalogue.language_for(language, view.language)
    settings = catalogue.settings
    evidence: dict[str, list[_Evidence]] = {}
    case_ids: dict[str, int] = {}
    states: dict[str, _CaseState] = {}

    strongest: dict[str, float] = {}
    for case in view.cases if view.is_known else ():
        state = _CaseState(case, now, settings.due_soon_days)
        for spec in index.for_product(case.product):
            if not _matches(spec.cases, state):
                continue
            pieces = _case_evidence(spec.weights, state, settings)
            strength = _combined(pieces)
            if pieces and strength > strongest.get(spec.name, -1.0):
                strongest[spec.name] = strength
                evidence[spec.name] = pieces
                case_ids[spec.name] = case.id
                states[spec.name] = state

    for spec in index.by_line.get(line, ()) if line is not None else ():
        evidence.setdefault(spec.name, []).append(_Evidence(spec.lines[line], "line", {"line": line}))

    if view.recent_calls:
        calls = _CallCounts(view.recent_calls, now)
        days = settings.repeat_call_days
        for name, count in calls.within(days).items():
            if name in index.order:
                weight = catalogue.intent(name).weights.repeat_call
                evidence.setdefault(name, []).append(_Evidence(
                    _repeated(weight, count), "repeat_calls", {"calls": count, "days": days}))
        for spec in index.escalating:
            escalation = _escalation(spec, calls, catalogue, index, language)
            if escalation is not None:
                evidence.setdefault(spec.name, []).append(escalation)

    fallback = catalogue.fallback
    is_fallback_alone = not evidence.keys() - {fallback.name}
    evidence.setdefault(fallback.name, [])
    situation = ("withheld_caller" if view.number is None  # no number the CRM could be asked about
                 else "unknown_caller" if not view.is_known
                 else "fallback" if is_fallback_alone else "other_question")
    evidence[fallback.name].append(_Evidence(0.0, situation, {}))

    today = now.date()
    order = _case_order(view.cases, now) if states else {}
    ranked = []
    for name, pieces in evidence.items():
        spec = catalogue.intent(name)
        if spec.prior:
            pieces.append(_Evidence(spec.prior, "prior", {}, is_said=False))
        score = round(_combined(pieces), 3)
        reasons = _reasons(spec, pieces, catalogue, language, today)
        signals = _signals(score, pieces, states.get(name), order)
        ranked.append((-score, index.order[name], Intent(name, score, reasons, case_ids.get(name), signals)))
    ranked.sort(key=lambda entry: entry[:2])
    return [intent for _, _, intent in ranked]


def self_service_answer(intent: Intent, view: CallerView, catalogue: IntentCatalogue, *,
                        now: dt.datetime, language: str | None = None) -> str | None:
    """The answer the catalogue offers for `intent`, filled from its case.

    None when the intent is not self-serviceable or a value the answer
    needs is missing (the caller then goes to a person).
    """
    try:
        spec = catalogue.intent(intent.intent)
    except KeyError:
        return None
    if spec.answer is None:
        return None
    language = catalogue.language_for(language, view.language)
    values: dict[str, Any] = {}
    for case in view.cases:
        if case.id == intent.case_id:
            values = _CaseState(case, now, catalogue.settings.due_soon_days).values
            break
    return _render(spec, spec.answer, values, language, now.date())


# --- evidence ----------------------------------------------------------------


class _Index:
    """Which intents each product, line and call history can concern, in catalogue order."""

    def __init__(self, catalogue: IntentCatalogue):
        self.order = {spec.name: position for position, spec in enumerate(catalogue.intents)}
        with_cases = [spec for spec in catalogue.intents if spec.cases is not None]
        self.any_product = tuple(spec for spec in with_cases if spec.cases.products is None)
        products = {product for spec in with_cases for product in spec.cases.products or ()}
        self.by_product = {
            product: tuple(spec for spec in with_cases
                           if spec.cases.products is None or product in spec.cases.products)
            for product in products
        }
        lines = {line for spec in catalogue.intents for line in spec.lines}
        self.by_line = {line: tuple(spec for spec in catalogue.intents if spec.lines.get(line))
                        for line in lines}
        self.escalating = tuple(spec for spec in catalogue.intents if spec.escalation is not None)

    def for_product(self, product: str) -> tuple[IntentSpec, ...]:
        return self.by_product.get(product, self.any_product)


_INDEXES: WeakKeyDictionary[IntentCatalogue, _Index] = WeakKeyDictionary()


def _index_of(catalogue: IntentCatalogue) -> _Index:
    index = _INDEXES.get(catalogue)
    if index is None:
        index = _INDEXES[catalogue] = _Index(catalogue)
    return index


def _combined(pieces: list[_Evidence]) -> float:
    """Independent evidence: 1 - product(1 - value)."""
    remaining = 1.0
    for piece in pieces:
        remaining *= 1.0 - piece.value
    return 1.0 - remaining


class _Evidence(NamedTuple):
    value: float
    kind: str
    values: dict[str, Any]
    is_said: bool = True  # False: weighs without a reason text


class _CaseState:
    """A case seen from `now`: its dates in local days, and its placeholder values."""

    __slots__ = ("case", "now", "days_overdue", "days_until_due", "age_days", "is_due_soon", "values")

    def __init__(self, case: Case, now: dt.datetime, due_soon_days: int):
        today = now.date()
        self.case = case
        self.now = now
        updated = _local(case.updated_at, now)
        self.age_days = max(0.0, (now - updated).total_seconds() / _DAY)
        days_since_update = max(0, (today - updated.date()).days)
        self.days_overdue: int | None = None
        self.days_until_due: int | None = None
        due_date = None
        if case.due_at is not None:
            due_date = _local(case.due_at, now).date()
            delta = (due_date - today).days
            if delta < 0:
                self.days_overdue = -delta
            else:
                self.days_until_due = delta
        self.is_due_soon = self.days_until_due is not None and self.days_until_due <= due_soon_days
        values = dict(case.facts)
        values.update(
            title=case.title, product=case.product, status=case.status,
            priority=case.priority, case_id=case.id,
            opened_date=_local(case.opened_at, now).date(), updated_date=updated.date(),
            due_date=due_date, days_overdue=self.days_overdue,
            days_until_due=self.days_until_due, due_in=self.days_until_due,
            days_since_update=days_since_update, updated_ago=days_since_update,
        )
        self.values = values


def _local(value: dt.datetime, now: dt.datetime) -> dt.datetime:
    """`value` in the time zone of `now`, comparable with it."""
    if now.tzinfo is None:
        return value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.replace(tzinfo=now.tzinfo) if value.tzinfo is None else value.astimezone(now.tzinfo)


def _matches(match: CaseMatch, state: _CaseState) -> bool:
    case = state.case
    if match.statuses is None:
        if not case.is_open:
            return False
    elif case.status not in match.statuses:
        return False
    if match.products is not None and case.product not in match.products:
        return False
    if match.overdue is not None and (state.days_overdue is not None) != match.overdue:
        return False
    if match.due_soon is not None and state.is_due_soon != match.due_soon:
        return False
    if (match.customer_owes_next_step is not None
            and case.customer_owes_next_step != match.customer_owes_next_step):
        return False
    if match.priority_at_most is not None and case.priority > match.priority_at_most:
        return False
    return all(case.facts.get(fact) not in (None, "", [], {}) for fact in match.has_facts)


def _case_evidence(weights: Weights, state: _CaseState, settings: Settings) -> list[_Evidence]:
    case, values = state.case, state.values
    pieces = [_Evidence(weights.case, "case", values)]
    priority = min(5, max(1, case.priority))
    if priority < 5 and weights.priority:
        pieces.append(_Evidence(weights.priority * (5 - priority) / 4, "priority", values,
                                is_said=priority <= settings.high_priority))
    if state.days_overdue is not None:
        full = settings.overdue_full_days
        scale = 1.0 if full <= 1 else 0.5 + 0.5 * min(1.0, (state.days_overdue - 1) / (full - 1))
        pieces.append(_Evidence(weights.overdue * scale, "overdue", values))
    if state.is_due_soon:
        soon = settings.due_soon_days
        pieces.append(_Evidence(weights.due_soon * (soon + 1 - state.days_until_due) / (soon + 1),
                                "due_soon", values))
    if case.customer_owes_next_step:
        pieces.append(_Evidence(weights.customer_owes, "customer_owes", values))
    fresh = settings.recent_update_days
    if state.age_days < fresh:
        pieces.append(_Evidence(weights.recent_update * (1.0 - state.age_days / fresh),
                                "recent_update", values))
    return [piece for piece in pieces if piece.value > 0.0]


def _case_order(cases: tuple[Case, ...], now: dt.datetime) -> dict[int, int]:
    """Open cases by when they were opened, newest first: case id -> 1, 2, ..."""
    opened = sorted((case for case in cases if case.is_open),
                    key=lambda case: (_local(case.opened_at, now), case.id), reverse=True)
    return {case.id: position for position, case in enumerate(opened, 1)}


def _signals(score: float, pieces: list[_Evidence], state: _CaseState | None,
             order: dict[int, int]) -> dict[str, float]:
    """The signals of one guess (see `SIGNALS`), rounded, zeros left out."""
    signals: dict[str, float] = {"rules": score}
    for piece in pieces:
        if piece.kind in _EVIDENCE_SIGNALS and piece.value:
            signals[piece.kind] = round(signals.get(piece.kind, 0.0) + piece.value, 3)
        if piece.kind == "repeat_calls":
            signals["calls"] = piece.values["calls"]
        elif piece.kind == "escalation":
            signals["escalation_calls"] = piece.values["calls"]
    if state is not None:
        case = state.case
        signals["case_priority"] = min(5, max(1, case.priority))
        if state.days_overdue is not None:
            signals["days_overdue"] = state.days_overdue
        if state.days_until_due is not None:
            signals["days_until_due"] = state.days_until_due
        signals["case_age_days"] = round(max(0.0, (state.now - _local(case.opened_at, state.now))
                                             .total_seconds() / _DAY), 2)
        signals["update_age_days"] = round(state.age_days, 2)
        if case.id in order:
            signals["case_order"] = order[case.id]
    return {name: value for name, value in signals.items() if value}


def _repeated(weight: float, times: int) -> float:
    return 1.0 - (1.0 - weight) ** times


class _CallCounts:
    """Recent calls per intent within a number of days, counted once per window."""

    def __init__(self, calls: Iterable[RecentCall], now: dt.datetime):
        self._ages = [(max(0.0, (now - _local(call.started_at, now)).total_seconds()) / _DAY, call.intent)
                      for call in calls if call.intent]
        self._counts: dict[int, Counter] = {}

    def within(self, days: int) -> Counter:
        counts = self._counts.get(days)
        if counts is None:
            counts = Counter(intent for age, intent in self._ages if age <= days)
            self._counts[days] = counts
        return counts


def _escalation(spec: IntentSpec, calls: _CallCounts, catalogue: IntentCatalogue,
                index: _Index, language: str) -> _Evidence | None:
    """Evidence that the caller keeps calling about one other, unresolved intent."""
    rule = spec.escalation
    last = len(index.order)
    candidates = [(count, -index.order.get(name, last), name)
                  for name, count in calls.within(rule.days).items()
                  if name != spec.name and count >= rule.calls]
    if not candidates:
        return None
    count, _, about = max(candidates)
    about_title = catalogue.intent(about).title[language] if about in index.order else about
    value = _repeated(spec.weights.escalation, count - rule.calls + 1)
    return _Evidence(value, "escalation", {"calls": count, "days": rule.days, "about": about_title})


# --- reasons -----------------------------------------------------------------


def _render(spec: IntentSpec, text: Text, values: dict[str, Any], language: str,
            today: dt.date) -> str | None:
    if "intent_title" in text.placeholders:
        values = {**values, "intent_title": spec.title[language]}
    return text.render(language, values, today)


def _reasons(spec: IntentSpec, evidence: list[_Evidence], catalogue: IntentCatalogue,
             language: str, today: dt.date) -> tuple[str, ...]:
    """The texts of the evidence, in reading order, each once.

    A signal is worded by the intent's own reason, or by the catalogue's
    default when the intent has none or a value it needs is missing.  The
    default "open case" reason is left out when the overdue, due-soon or
    customer-owes reason already names the case.
    """
    texts: list[tuple[int, str]] = []
    said_specific = False
    default_case = None
    for piece in evidence:
        if not piece.is_said:
            continue
        own = spec.reasons.get(piece.kind)
        rendered = None if own is None else _render(spec, own, piece.values, language, today)
        is_own = rendered is not None
        if not is_own:
            default = catalogue.reasons.get(piece.kind)
            rendered = None if default is None else _render(spec, default, piece.values, language, today)
            if rendered is None:
                continue
        entry = (_REASON_ORDER[piece.kind], rendered)
        if piece.kind == "case" and not is_own:
            default_case = entry
            continue
        said_specific = said_specific or piece.kind in _SPECIFIC_CASE_REASONS
        texts.append(entry)
    if default_case is not None and not said_specific:
        texts.append(default_case)
    texts.sort()
    reasons: list[str] = []
    for _, text in texts:
        if text not in reasons:
            reasons.append(text)
    return tuple(reasons)
