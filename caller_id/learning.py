"""A prediction that learns: the catalogue's signals in, the confirmed reasons of past calls out.

The catalogue's rules (`caller_id.predict`) weigh every signal with a fixed
weight the administrator chose.  Callers do not read those weights: a fresh
update brings calls more than a priority does, private clients call about
the documents they owe while key accounts' managers chase them, payments
bring calls around pay day.  This module learns such weights from the calls
whose real reason was confirmed (`call_records.actual_intent`), and ranks the
rules' own guesses by the learned probability when, and only when, that
beat the rules on calls it had not seen.

What is learnt from.  Every call record keeps, in ``context["features"]``,
the `CallFeatures` of its call: each guess of the rules with its signals
(`caller_id.predict.SIGNALS`: what each piece of evidence weighed and the
plain values behind it: days overdue, case age, priority, which case is the
newest, earlier calls) and a few facts about the caller (known, VIP, role,
open cases, recent calls).  With the record's line, segment and start time
that is exactly what was known when the call came, so a model trained on it
can be used on the next call.

The vectorisation (`Vectoriser`, layout version `FEATURE_LAYOUT`) is the one
piece of code that turns a call into numbers, for training and for the live
ranker alike.  A call is one row per guess of the rules (`Rows`), in the
rules' order; the columns of a row, in order:

- the guess's own signals, weighed the same for every intent: ``rules``
  (its score), the weights of the ``overdue``, ``due_soon``,
  ``customer_owes``, ``recent_update``, ``line`` and ``priority`` evidence,
  ``log_days_overdue`` = log(1 + days overdue), ``has_case``, ``fresh`` and
  ``recent`` (its case updated within 2 and 7 days), ``log_update_age`` and
  ``log_case_age`` (log(1 + days)), ``newest`` (its case is the caller's most
  recently opened open case), ``calls`` (earlier calls about it, at most 5),
  ``escalation_calls`` (calls about one other intent, at most 10), and the
  crosses with the key-account segments A and B ``premium_case``,
  ``premium_owes``, ``premium_priority``;
- its rank among the rules' guesses (1, 2, 3, 4 or lower);
- its intent (one column per catalogue intent), and the intent crossed with
  the caller being of segment A or B, with the caller being unknown, with the
  line (each line the catalogue names, and any other) and with the day of the
  month in six spans (1-3, 4-7, 8-14, 15-21, 22-24, 25-31) in the contact
  center's time zone: a pay-day span can raise the loan payment and nothing
  else.

The model.  A conditional logit: the probability that guess i of a call is
its reason is exp(w . x_i) / sum over the call's guesses of exp(w . x_j).  It
is fitted as scikit-learn's binary `LogisticRegression` (lbfgs, L2 with
C = 0.1, after a `StandardScaler` that scales without centring, as the rows
are sparse) of "this guess was the reason" over every
(call, guess) row, whose logits are then shared out by the softmax over each
call's guesses, divided by one temperature fitted (scipy's bounded scalar
minimisation of the log loss) on the newest 15 % of the training calls, which
the regression did not see (temperature scaling).  Why this model: the live
ranker only reorders the rules' guesses (their reasons are the catalogue's
sentences, which agents read), and a choice among a call's guesses is what
it models; its few hundred weights are shared by all intents, so some
thousand confirmed calls already teach it (a multinomial regression over the
intents, with a weight per intent and column, needed ten times more and came
out overconfident); it is convex (the same calls give the same model, no
tuning to go wrong); its rows are sparse (about eight numbers of some two
hundred), so vectorising and fitting a million calls takes under a minute on
two cores (`benchmarks/training.py`), where a boosted tree ensemble needed
several times longer and most of a millisecond to rank one call through
scikit-learn; and ranking one call is one small product with the fitted
weights (`LiveRanker`: tens of microseconds).

The time split.  `train` fits on the confirmed calls before the held-out
period (the last `holdout_days` before `until`) and evaluates on that period
against two baselines: "rules" (the catalogue's own ranking, as its scores
were stored with each call) and "newest open case" (the intents of the
caller's most recently opened open case first, then those of the older
cases, then the rest in the rules' order).  `Scores` holds top-1 and top-3
accuracy and the calibration of the score shown for the top guess (Brier
score and expected calibration error over ten equal bins, with the
reliability table).  The file (`save`, joblib) keeps the fitted pipeline, the
catalogue's intent names, the layout and its columns, the training period and
the evaluation; a model whose held-out top-1 did not beat the rules is saved
marked unusable (it must beat the rules' top-1 by more than chance, on at
least `MIN_HELD_OUT` held-out calls: `Evaluation.beats_rules`), and
`choose_ranker` (what the server runs at start) keeps
the rules for it, for a file made for another catalogue or layout, and when
there is no file.

The model file is a pickle (joblib): load only files `ivr model train` wrote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from caller_id.catalogue import IntentCatalogue
from caller_id.predict import Intent
from caller_id.profile import CallerView

log = logging.getLogger(__name__)

FEATURE_LAYOUT = 1
FILE_FORMAT = "ivr-intent-model"
_DAY = dt.timedelta(days=1)
BINS = 10  # of the reliability table

# The columns of a guess's own signals (`_guess_columns`), the same weights for every intent.
_GUESS_COLUMNS = (
    "rules", "overdue", "due_soon", "customer_owes", "recent_update", "line", "priority",
    "log_days_overdue", "has_case", "fresh", "recent", "log_update_age", "log_case_age", "newest",
    "calls", "escalation_calls", "premium_case", "premium_owes", "premium_priority",
)
_RANKS = ("1", "2", "3", "4+")
_DAY_SPANS = ((1, 3), (4, 7), (8, 14), (15, 21), (22, 24), (25, 31))


class TrainingError(ValueError):
    """Not enough (or no usable) confirmed calls to train or evaluate on."""


# --------------------------------------------------------------------------
# what a call record keeps


@dataclass(frozen=True)
class CallFeatures:
    """What the prediction saw on one call: the rules' guesses with their signals, and the caller.

    Stored in ``call_records.context["features"]`` (`to_dict`, compact: signals that are 0 are
    left out) and read back for training (`from_dict`).  Layout 1 uses the guesses and `known`;
    the caller's VIP flag, role, open cases and recent calls are kept for the reports and for a
    later layout (a record cannot learn later what it did not keep)."""

    intents: tuple[tuple[str, Mapping[str, float]], ...]
    known: bool = False
    vip: bool = False
    role: str | None = None
    open_cases: int = 0
    recent_calls: int = 0

    @classmethod
    def of(cls, intents: Iterable[Intent], *, known: bool, vip: bool, role: str | None,
           open_cases: int, recent_calls: int) -> CallFeatures:
        return cls(tuple((intent.intent, dict(intent.signals)) for intent in intents),
                   known=known, vip=vip, role=role, open_cases=open_cases, recent_calls=recent_calls)

    @classmethod
    def of_view(cls, intents: Iterable[Intent], view: CallerView) -> CallFeatures:
        """The features of the guesses made for this caller view (what the live call path keeps)."""
        return cls.of(intents, known=view.is_known, vip=view.is_vip,
                      role=view.role.kind if view.role is not None else None,
                      open_cases=sum(1 for case in view.cases if case.is_open),
                      recent_calls=len(view.recent_calls))

    def to_dict(self) -> dict[str, Any]:
        return {"v": FEATURE_LAYOUT, "intents": [[name, dict(signals)] for name, signals in self.intents],
                "known": int(self.known), "vip": int(self.vip), "role": self.role,
                "open_cases": self.open_cases, "recent_calls": self.recent_calls}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallFeatures:
        """From `to_dict`'s JSON (its signal mappings are kept as they are, not copied)."""
        return cls(tuple((name, signals) for name, signals in data.get("intents", ())),
                   known=bool(data.get("known")), vip=bool(data.get("vip")), role=data.get("role"),
                   open_cases=int(data.get("open_cases") or 0), recent_calls=int(data.get("recent_calls") or 0))

    def rules_order(self, order: Mapping[str, int]) -> list[str]:
        """The guesses as the catalogue ranks them: by the rules' score, then catalogue order."""
        last = len(order)
        return [name for name, _ in sorted(
            self.intents, key=lambda item: (-item[1].get("rules", 0.0), order.get(item[0], last)))]

    def newest_case_order(self, order: Mapping[str, int]) -> list[str]:
        """The "newest open case" baseline: the intents of the newest open case first, then of the
        older ones, then the others, each group in the rules' order."""
        rules = self.rules_order(order)
        signals = dict(self.intents)
        return sorted(rules, key=lambda name: signals[name].get("case_order", math.inf))


@dataclass(frozen=True)
class Example:
    """One confirmed call: its features, line, segment, local start time and real reason."""

    features: CallFeatures
    line: str | None
    segment: str | None
    at: dt.datetime
    actual: str


# --------------------------------------------------------------------------
# the vectorisation


class Rows:
    """The rows of some calls, one per (call, guess), a call's guesses next to each other, kept
    sparse (most columns of a row are 0): row r's columns `indices[indptr[r]:indptr[r + 1]]` hold
    `values[...]` (the layout of a SciPy CSR matrix, `matrix`)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, width: int,
                 starts: np.ndarray, intents: list[list[str]]):
        self.indptr, self.indices, self.values, self.width = indptr, indices, values, width
        self.starts = starts  # where each call's rows begin (len = calls + 1)
        self.intents = intents  # each call's guesses, in row order

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def matrix(self) -> Any:
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.width))

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """Each row times `weights` (one weight per column)."""
        if not len(self):
            return np.zeros(0)
        products = weights[self.indices] * self.values
        return np.add.reduceat(products, self.indptr[:-1]) if len(products) else np.zeros(len(self))


class Vectoriser:
    """Calls to rows of numbers, one row per guess (the layout: see the module docstring)."""

    def __init__(self, catalogue: IntentCatalogue):
        self.intents = catalogue.names
        self.order = {name: position for position, name in enumerate(self.intents)}
        self.lines = tuple(sorted({line for spec in catalogue.intents for line in spec.lines})) + ("other",)
        columns = list(_GUESS_COLUMNS)
        columns += [f"rank:{rank}" for rank in _RANKS]
        columns += [f"intent:{name}" for name in self.intents]
        columns += [f"premium:{name}" for name in self.intents]
        columns += [f"unknown:{name}" for name in self.intents]
        columns += [f"line:{line}:{name}" for line in self.lines for name in self.intents]
        columns += [f"day:{low}-{high}:{name}" for low, high in _DAY_SPANS for name in self.intents]
        self.columns = tuple(columns)
        index = {column: position for position, column in enumerate(columns)}
        first = self.intents[0]
        self._rank = index["rank:1"]
        self._intent = index[f"intent:{first}"]
        self._premium = index[f"premium:{first}"]
        self._unknown = index[f"unknown:{first}"]
        self._line = {line: index[f"line:{line}:{first}"] for line in self.lines}
        self._day = [index[f"day:{low}-{high}:{first}"] for low, high in _DAY_SPANS for _ in range(low, high + 1)]

    def rows(self, calls: Sequence[tuple[CallFeatures, str | None, str | None, dt.datetime]]) -> Rows:
        """The rows of (features, line, segment, local start time) calls; a guess of an intent the
        catalogue does not have is left out."""
        indptr, indices, values = [0], [], []
        starts, guesses = [0], []
        last_rank = len(_RANKS) - 1
        for features, line, segment, at in calls:
            names = [name for name in features.rules_order(self.order) if name in self.order]
            guesses.append(names)
            starts.append(starts[-1] + len(names))
            signals = dict(features.intents)
            premium = segment in ("A", "B")
            line_base = self._line.get(line, self._line["other"])
            day_base = self._day[at.day - 1]
            for rank, name in enumerate(names):
                position = self.order[name]
                _guess_columns(signals[name], premium, indices, values)
                indices += (self._rank + min(rank, last_rank), self._intent + position,
                            line_base + position, day_base + position)
                values += (1.0, 1.0, 1.0, 1.0)
                if premium:
                    indices.append(self._premium + position)
                    values.append(1.0)
                if not features.known:
                    indices.append(self._unknown + position)
                    values.append(1.0)
                indptr.append(len(indices))
        return Rows(np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int32),
                    np.asarray(values, dtype=np.float64), len(self.columns),
                    np.asarray(starts, dtype=np.int64), guesses)


def _guess_columns(s: Mapping[str, float], premium: bool, indices: list[int], values: list[float]) -> None:
    """The `_GUESS_COLUMNS` of one guess from its signals, those that are not 0."""
    owes, priority = s.get("customer_owes", 0.0), s.get("priority", 0.0)
    update_age = s.get("update_age_days", 0.0)
    has_case = "case_priority" in s
    row = (
        s.get("rules", 0.0), s.get("overdue", 0.0), s.get("due_soon", 0.0), owes, s.get("recent_update", 0.0),
        s.get("line", 0.0), priority, math.log1p(s.get("days_overdue", 0.0)),
        1.0 if has_case else 0.0, 1.0 if has_case and update_age <= 2.0 else 0.0,
        1.0 if has_case and update_age <= 7.0 else 0.0, math.log1p(update_age) if has_case else 0.0,
        math.log1p(s.get("case_age_days", 0.0)) if has_case else 0.0,
        1.0 if s.get("case_order") == 1 else 0.0, min(5.0, s.get("calls", 0.0)),
        min(10.0, s.get("escalation_calls", 0.0)),
        1.0 if premium and has_case else 0.0, owes if premium else 0.0, priority if premium else 0.0,
    )
    for column, value in enumerate(row):
        if value:
            indices.append(column)
            values.append(float(value))


# --------------------------------------------------------------------------
# scores


MIN_HELD_OUT = 200  # held-out calls at least, before a model may be said to beat the rules


@dataclass(frozen=True)
class Scores:
    """How one ranking did on a set of calls.

    `brier` and `ece` are the calibration of the score shown for the top guess, read as the
    chance that it is right (None for a ranking without scores); `reliability` is the table
    behind `ece`: per bin of that score, [calls, mean score, share right]."""

    method: str
    calls: int
    top1: float
    top3: float
    brier: float | None = None
    ece: float | None = None
    reliability: tuple[tuple[int, float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "calls": self.calls, "top1": self.top1, "top3": self.top3,
                "brier": self.brier, "ece": self.ece, "reliability": [list(row) for row in self.reliability]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scores:
        return cls(method=data["method"], calls=data["calls"], top1=data["top1"], top3=data["top3"],
                   brier=data.get("brier"), ece=data.get("ece"),
                   reliability=tuple(tuple(row) for row in data.get("reliability", ())))


def calibration(confidence: Sequence[float], correct: Sequence[bool],
                bins: int = BINS) -> tuple[float, float, tuple[tuple[int, float, float], ...]]:
    """Brier score, expected calibration error and the reliability table of scores in 0..1.

    Brier = mean((score - right)^2); ECE = sum over equal-width bins of (calls in the bin / all
    calls) * |share right - mean score|, a score of exactly 1 in the last bin."""
    p = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if not len(p):
        return 0.0, 0.0, ()
    brier = float(np.mean((p - y) ** 2))
    which = np.minimum((p * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        if not count:
            continue
        mean_p, share = float(p[inside].mean()), float(y[inside].mean())
        ece += count / len(p) * abs(share - mean_p)
        table.append((count, round(mean_p, 4), round(share, 4)))
    return round(brier, 4), round(ece, 4), tuple(table)


def score_rankings(method: str, rankings: Sequence[Sequence[str]], actual: Sequence[str],
                   confidence: Sequence[float] | None = None) -> Scores:
    """Top-1 and top-3 accuracy of `rankings` (best first) against the real reasons, and the
    calibration of `confidence` (the score of each ranking's first guess) when given."""
    calls = len(actual)
    top1 = sum(1 for ranked, real in zip(rankings, actual) if len(ranked) and ranked[0] == real)
    top3 = sum(1 for ranked, real in zip(rankings, actual) if real in ranked[:3])
    brier = ece = None
    table: tuple[tuple[int, float, float], ...] = ()
    if confidence is not None:
        right = [bool(ranked) and ranked[0] == real for ranked, real in zip(rankings, actual)]
        brier, ece, table = calibration(confidence, right)
    return Scores(method, calls, round(top1 / calls, 4) if calls else 0.0,
                  round(top3 / calls, 4) if calls else 0.0, brier, ece, table)


@dataclass(frozen=True)
class Evaluation:
    """The learned model and the two baselines on the same calls of one period."""

    since: dt.datetime
    until: dt.datetime
    model: Scores
    rules: Scores
    newest_case: Scores

    @property
    def beats_rules(self) -> bool:
        """The model's held-out top-1 is better than the rules' by more than chance: on at least
        `MIN_HELD_OUT` calls, by more than twice the standard error of the difference (taken as of two
        independent shares, which overstates it for the same calls: the test is conservative)."""
        calls = self.model.calls
        if calls < MIN_HELD_OUT:
            return False
        m, r = self.model.top1, self.rules.top1
        error = math.sqrt((m * (1 - m) + r * (1 - r)) / calls)
        return m - r > 2 * error

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(),
                "model": self.model.to_dict(), "rules": self.rules.to_dict(),
                "newest_case": self.newest_case.to_dict(), "beats_rules": self.beats_rules}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(since=dt.datetime.fromisoformat(data["since"]), until=dt.datetime.fromisoformat(data["until"]),
                   model=Scores.from_dict(data["model"]), rules=Scores.from_dict(data["rules"]),
                   newest_case=Scores.from_dict(data["newest_case"]))


# --------------------------------------------------------------------------
# the model


def scoring_fingerprint(catalogue: IntentCatalogue) -> str:
    """A digest of what the catalogue's rules score with (settings, each intent's case matches, prior,
    line priors, escalation and weights; not its texts): a model is used only with the rules it beat."""
    def canonical(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
        if isinstance(value, Mapping):
            return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
        if isinstance(value, (set, frozenset)):
            return sorted(canonical(v) for v in value)
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)

    scoring = {"settings": canonical(catalogue.settings), "intents": [
        {"name": spec.name, "cases": canonical(spec.cases), "prior": spec.prior, "lines": canonical(spec.lines),
         "escalation": canonical(spec.escalation), "weights": canonical(spec.weights)}
        for spec in catalogue.intents]}
    return hashlib.sha256(json.dumps(scoring, sort_keys=True, default=repr).encode()).hexdigest()[:16]


@dataclass
class IntentModel:
    """A fitted model with what it was fitted for, as `save` keeps it."""

    pipeline: Any  # sklearn Pipeline(StandardScaler(with_mean=False), LogisticRegression)
    intents: tuple[str, ...]
    columns: tuple[str, ...]
    layout: int = FEATURE_LAYOUT
    trained: dict[str, Any] = field(default_factory=dict)  # since, until, calls, seconds, temperature, c
    evaluation: Evaluation | None = None
    usable: bool = False  # its held-out top-1 beat the rules
    temperature: float = 1.0  # the logits are divided by it (fitted after the regression)
    scoring: str = ""  # `scoring_fingerprint` of the catalogue it was fitted and evaluated with
    _folded: tuple[np.ndarray, float] | None = field(default=None, init=False, repr=False, compare=False)

    def fits(self, catalogue: IntentCatalogue) -> str | None:
        """None when the model ranks this catalogue's intents, else why not."""
        if self.layout != FEATURE_LAYOUT:
            return f"it was made with feature layout {self.layout}, this server uses {FEATURE_LAYOUT}"
        if tuple(self.intents) != catalogue.names:
            differ = sorted(set(catalogue.names) ^ set(self.intents))
            return ("the catalogue's intents differ: " + ", ".join(differ) if differ
                    else "the catalogue lists its intents in another order")
        if tuple(self.columns) != Vectoriser(catalogue).columns:
            return "the catalogue's lines differ from those it was trained with"
        if self.scoring != scoring_fingerprint(catalogue):
            return ("the catalogue's weights, matches or settings changed since it was trained (its `rules` "
                    "signal and the baseline it beat are not today's): train it again")
        return None

    def folded(self) -> tuple[np.ndarray, float]:
        """The fitted scaler, coefficients and temperature as one product:
        logit = row . weights + bias, i.e. ((row / scale) . coef + intercept) / T."""
        if self._folded is None:
            scaler, regression = self.pipeline[0], self.pipeline[-1]
            per_column = np.asarray(regression.coef_[0], dtype=np.float64) / np.asarray(scaler.scale_, np.float64)
            self._folded = (per_column / self.temperature, float(regression.intercept_[0]) / self.temperature)
        return self._folded

    def logits(self, rows: Rows) -> np.ndarray:
        weights, bias = self.folded()
        return rows.dot(weights) + bias

    def shares(self, rows: Rows) -> list[list[tuple[str, float]]]:
        """Per call, its guesses best first with the probability each is the reason."""
        logits = self.logits(rows)
        ranked = []
        for call, names in enumerate(rows.intents):
            own = logits[rows.starts[call]:rows.starts[call + 1]]
            if not len(own):
                ranked.append([])
                continue
            exp = np.exp(own - own.max())
            share = exp / exp.sum()
            ranked.append(sorted(zip(names, (float(x) for x in share)), key=lambda item: -item[1]))
        return ranked


def fit(examples: Sequence[Example], catalogue: IntentCatalogue, *, c: float = 0.1,
        max_iter: int = 500, calibration_share: float = 0.15) -> IntentModel:
    """The model fitted on `examples`: scikit-learn fits the regression on the older ones, then
    one temperature is fitted on the newest `calibration_share` of them.  A call whose real reason
    the rules did not guess teaches nothing about ranking the guesses and is left out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    vectoriser = Vectoriser(catalogue)
    kept = sorted((e for e in examples if any(name == e.actual for name, _ in e.features.intents)
                   and e.actual in vectoriser.order), key=lambda e: e.at)
    if len(kept) < 10:
        raise TrainingError(f"{len(kept)} confirmed calls whose reason the rules guessed: training needs 10")
    started = time.perf_counter()
    rows = vectoriser.rows([(e.features, e.line, e.segment, e.at) for e in kept])
    target = np.zeros(len(rows), dtype=np.int8)
    for call, (example, names) in enumerate(zip(kept, rows.intents)):
        target[rows.starts[call] + names.index(example.actual)] = 1
    cut = len(kept) - int(len(kept) * calibration_share)
    end = int(rows.starts[cut])
    if target[:end].min() == target[:end].max():
        raise TrainingError("every guess of the training calls was right: nothing to learn")
    # Scaled, not centred: the rows stay sparse (most columns are 0).
    pipeline = make_pipeline(StandardScaler(with_mean=False), LogisticRegression(C=c, max_iter=max_iter, tol=1e-4))
    pipeline.fit(rows.matrix[:end], target[:end])
    model = IntentModel(pipeline=pipeline, intents=catalogue.names, columns=vectoriser.columns,
                        scoring=scoring_fingerprint(catalogue))
    if cut < len(kept):
        model.temperature = _temperature(model, rows, target, cut)
        model._folded = None
    model.trained.update(calls=len(kept), seconds=round(time.perf_counter() - started, 2),
                         temperature=round(model.temperature, 4), c=c)
    return model


def _temperature(model: IntentModel, rows: Rows, target: np.ndarray, first: int) -> float:
    """The temperature T (logits / T) that minimises the log loss of the real reasons among the
    guesses of calls `first`.. (which the regression was not fitted on): temperature scaling."""
    from scipy.optimize import minimize_scalar

    start = int(rows.starts[first])
    logits = model.logits(rows)[start:]
    right = target[start:].astype(bool)
    groups = (rows.starts[first:-1] - start).astype(np.int64)

    def loss(temperature: float) -> float:
        scaled = logits / temperature
        top = np.maximum.reduceat(scaled, groups)
        size = np.diff(np.append(groups, len(scaled)))
        log_total = np.log(np.add.reduceat(np.exp(scaled - np.repeat(top, size)), groups)) + top
        return float(np.mean(log_total) - np.mean(scaled[right]))

    return float(minimize_scalar(loss, bounds=(0.2, 10.0), method="bounded").x)


def evaluate(model: IntentModel, examples: Sequence[Example], catalogue: IntentCatalogue, *,
             since: dt.datetime, until: dt.datetime) -> Evaluation:
    """The model and both baselines on the same calls (`examples`, those of since..until)."""
    if not examples:
        raise TrainingError(f"no confirmed calls from {since:%Y-%m-%d} to {until:%Y-%m-%d} to evaluate on")
    vectoriser = Vectoriser(catalogue)
    order = vectoriser.order
    actual = [example.actual for example in examples]
    learned = model.shares(vectoriser.rows([(e.features, e.line, e.segment, e.at) for e in examples]))
    rules = [example.features.rules_order(order) for example in examples]
    signals = [dict(example.features.intents) for example in examples]
    rules_confidence = [min(1.0, s[ranked[0]].get("rules", 0.0)) if ranked else 0.0
                        for s, ranked in zip(signals, rules)]
    return Evaluation(
        since=since, until=until,
        model=score_rankings("model", [[name for name, _ in ranked] for ranked in learned], actual,
                             [ranked[0][1] if ranked else 0.0 for ranked in learned]),
        rules=score_rankings("rules", rules, actual, rules_confidence),
        newest_case=score_rankings("newest open case", [e.features.newest_case_order(order) for e in examples],
                                   actual),
    )


def split_period(examples: Sequence[Example], *, until: dt.datetime | None,
                 holdout_days: float) -> tuple[list[Example], list[Example], dt.datetime, dt.datetime]:
    """Earlier calls to train on, the last `holdout_days` before `until` to evaluate on, and that
    period's bounds (`until` defaults to just after the newest call)."""
    if holdout_days <= 0:
        raise TrainingError("the held-out period must be at least some hours long")
    if not examples:
        raise TrainingError("no confirmed calls with stored features: nothing to learn from")
    if until is None:
        until = max(example.at for example in examples) + dt.timedelta(seconds=1)
    since = until - holdout_days * _DAY
    earlier = [example for example in examples if example.at < since]
    held_out = [example for example in examples if since <= example.at < until]
    return earlier, held_out, since, until


def train(examples: Sequence[Example], catalogue: IntentCatalogue, *, until: dt.datetime | None = None,
          holdout_days: float = 14.0, min_calls: int = 50) -> IntentModel:
    """Fit on the calls before the held-out period, evaluate on it; usable when it beat the rules."""
    earlier, held_out, since, until = split_period(examples, until=until, holdout_days=holdout_days)
    if len(earlier) < min_calls or len(held_out) < max(1, min_calls // 5):
        raise TrainingError(
            f"{len(earlier)} confirmed calls before {since:%Y-%m-%d} and {len(held_out)} from then to "
            f"{until:%Y-%m-%d}: training needs at least {min_calls} and {max(1, min_calls // 5)}")
    model = fit(earlier, catalogue)
    model.trained.update(since=min(e.at for e in earlier).isoformat(), until=since.isoformat())
    model.evaluation = evaluate(model, held_out, catalogue, since=since, until=until)
    model.usable = model.evaluation.beats_rules
    return model


# --------------------------------------------------------------------------
# the file


def save(model: IntentModel, path: str | Path) -> None:
    """Write the model file (joblib), through a temporary file so a reader never sees half of it."""
    import joblib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.partial")  # writers never collide
    joblib.dump({
        "format": FILE_FORMAT, "layout": model.layout, "intents": list(model.intents),
        "columns": list(model.columns), "pipeline": model.pipeline, "trained": dict(model.trained),
        "evaluation": model.evaluation.to_dict() if model.evaluation else None, "usable": model.usable,
        "temperature": model.temperature, "scoring": model.scoring,
    }, partial)
    partial.replace(path)


def load(path: str | Path) -> IntentModel:
    """Read a model file; ValueError when it is not one."""
    import joblib

    data = joblib.load(Path(path))
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a model file written by `ivr model train`")
    evaluation = data.get("evaluation")
    return IntentModel(
        pipeline=data["pipeline"], intents=tuple(data["intents"]), columns=tuple(data["columns"]),
        layout=data["layout"], trained=dict(data.get("trained") or {}),
        evaluation=Evaluation.from_dict(evaluation) if evaluation else None, usable=bool(data.get("usable")),
        temperature=float(data.get("temperature", 1.0)), scoring=str(data.get("scoring") or ""),
    )


# --------------------------------------------------------------------------
# the live ranker


class LiveRanker:
    """Reorders one call's guesses by the model's probability.

    The fitted scaler, coefficients and temperature are folded into one product once
    (`IntentModel.folded`), so a call costs its rows of the vectorisation and a small matrix
    product.  Any failure keeps the rules' order (counted in `failures`): the model never fails
    a call."""

    def __init__(self, model: IntentModel, catalogue: IntentCatalogue):
        self.model = model
        self.vectoriser = Vectoriser(catalogue)
        model.folded()
        self.failures = 0

    def rerank(self, intents: Sequence[Intent], features: CallFeatures, *, line: str | None,
               segment: str | None, now: dt.datetime) -> tuple[Intent, ...]:
        """The guesses best first by the model, each scored with its probability (reasons kept)."""
        try:
            ranked = self.model.shares(self.vectoriser.rows([(features, line, segment, now)]))[0]
            by_name = {intent.intent: intent for intent in intents}
            reordered = tuple(replace(by_name[name], score=round(share, 3)) for name, share in ranked)
            if len(reordered) != len(intents):
                raise ValueError("a guess of an intent the catalogue does not know")
            return reordered
        except Exception as exc:  # noqa: BLE001 - the rules' order rather than a failed call
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.warning("learned prediction failed (%d times so far); the rules' order is kept: %s",
                            self.failures, exc)
            return tuple(intents)


@dataclass(frozen=True)
class Choice:
    """What the server ranks with: the learned ranker or None (the rules), and the note saying why."""

    ranker: LiveRanker | None
    note: str


def choose_ranker(path: str | Path, catalogue: IntentCatalogue, *, enabled: bool = True) -> Choice:
    """The learned ranker when the file exists, fits the catalogue and its evaluation beat the rules."""
    path = Path(path)
    if not enabled:
        return Choice(None, "prediction: catalogue rules (the learned model is off: prediction.enabled)")
    if not path.exists():
        return Choice(None, f"prediction: catalogue rules (no model file {path}; `ivr model train` makes one)")
    try:
        model = load(path)
    except Exception as exc:  # noqa: BLE001 - a broken file leaves the rules
        return Choice(None, f"prediction: catalogue rules (the model file {path} cannot be read: {exc})")
    misfit = model.fits(catalogue)
    if misfit is not None:
        return Choice(None, f"prediction: catalogue rules (the model does not fit the catalogue: {misfit})")
    evaluation = model.evaluation
    if evaluation is None or not model.usable or not evaluation.beats_rules:
        figures = (f"held-out top-1 {evaluation.model.top1:.2f} vs rules {evaluation.rules.top1:.2f}"
                   if evaluation else "it was never evaluated")
        return Choice(None, f"prediction: catalogue rules (the model did not beat them: {figures})")
    try:
        ranker = LiveRanker(model, catalogue)
    except Exception as exc:  # noqa: BLE001
        return Choice(None, f"prediction: catalogue rules (the model cannot rank: {exc})")
    return Choice(ranker, f"prediction: learned model (held-out top-1 {evaluation.model.top1:.2f} "
                          f"vs rules {evaluation.rules.top1:.2f})")


# --------------------------------------------------------------------------
# the call records


async def load_examples(db: Any, zone: str, *, since: dt.datetime | None = None,
                        until: dt.datetime | None = None) -> list[Example]:
    """The confirmed calls with stored features (started since..until), oldest first, their start
    times in the contact center's time zone `zone`."""
    from sqlalchemy import select

    from caller_id.models import CallRecord
    from caller_id.store import as_utc

    r = CallRecord
    query = (select(r.started_at, r.line, r.segment, r.actual_intent, r.context)
             .where(r.actual_intent.is_not(None)).order_by(r.started_at, r.id))
    # In UTC, as the records are stored (SQLite compares the stored text).
    if since is not None:
        query = query.where(r.started_at >= as_utc(since).astimezone(dt.timezone.utc))
    if until is not None:
        query = query.where(r.started_at < as_utc(until).astimezone(dt.timezone.utc))
    local = ZoneInfo(zone)
    examples = []
    async with db.engine.connect() as conn:
        result = await conn.stream(query.execution_options(yield_per=10_000))
        async for rows in result.partitions():  # by the thousand: a row at a time costs a greenlet switch
            for started_at, line, segment, actual, context in rows:
                stored = (context or {}).get("features")
                if not stored or stored.get("v") != FEATURE_LAYOUT:
                    continue
                examples.append(Example(CallFeatures.from_dict(stored), line, segment,
                                        as_utc(started_at).astimezone(local), actual))
    return examples
