"""Reports over the call records ("learn and measure"): one SQL code path for SQLite and PostgreSQL.

A report covers a `Period` of local days in the contact center's time zone
(``Config.timezone``): one day, an ISO week (Monday to Sunday), a calendar
month, or a custom range [first, end) of days; it is split into buckets of
local hours, days, weeks or months, and broken down by one dimension:

    segment   the caller's customer segment (``call_records.segment``)
    line      the dialled line
    queue     the queue the call went to
    agent     the agent who answered (``agent_id``, with the agent's name)
    intent    why the caller called: the confirmed intent (``actual_intent``,
              confirmed by the caller or the agent), else the predicted one
    total     no breakdown

A row with the key None collects the calls without a value (an unknown
caller's segment, a call that reached no queue...).  Filters on line, queue
and segment narrow the calls; the repeat calls that decide first-call
resolution are looked for among all calls.

How a call ended is its ``result`` (see `caller_id.models.CallRecord`).  A
record without one (written before migration 0004, or not settled yet) is
read the way `queues.stats.QueueStatistics.rebuild` reads it:
``self_served`` set: self_served; ``answered_at`` set: answered; a queue and
a wait but no answer: abandoned; otherwise it counts only as a call.

Figures (each a ratio of sums that add up across buckets and rows; None when
there is nothing to divide by; times in seconds; T = ``service_level_seconds``,
S = ``short_abandon_seconds``, from ``Config.reports``)::

    calls            the records that started in the period
    containment      self_served / calls
    offered          calls that reached a queue: answered + abandoned + unanswered,
                     where answered = result answered or transferred (taken by an
                     agent of the queue); calls taken by the personal manager
                     (result manager) are counted as ``manager``, not offered
    abandon_rate     abandoned / offered (the caller hung up waiting; ``unanswered``,
                     who left the queue for a timeout or an empty queue, are apart)
    service_level    answered with a wait <= T / (answered + unanswered + abandoned
                     after waiting >= S): the wallboard's formula (`queues.stats`:
                     its "abandoned" are abandoned + unanswered here), except that
                     the wallboard leaves out the abandons within T (Asterisk's
                     ServicelevelPerf2) and the report those within S; the two
                     agree when S = T
    asa              average speed of answer: the mean wait of the answered calls
                     (a missing wait counts 0, as the wallboard counts it)
    aht              average handle time: the mean talk time of the answered calls
                     that have one; Asterisk's TalkTime runs from the answer to the
                     hang-up, so hold is in it; after-call work (wrap-up) is not
    fcr              first-call resolution: of the calls with an intent and a known
                     customer, the share with no later call of the same customer on
                     the same intent within ``repeat_call_days`` days (the window
                     function LEAD over customer and intent; a call near the end of
                     the records counts resolved until its repeat comes)
    csat             the mean CSAT (1-5) over the calls with one: the post-call
                     survey's, or on a line without a survey the self-service
                     dialog's own rating;
                     ``csat_satisfied`` the share of 4 and 5
    nps              % promoters (nps >= nps_promoter) - % detractors
                     (nps <= nps_detractor) over the calls with an NPS answer, -100..100
    top1, top3       prediction accuracy over the calls with a confirmed intent:
                     predicted_intent is it / it is one of the three predicted

The database adds the sums up per local hour or day (a GROUP BY over the
epoch seconds plus the zone's offset, a CASE over the offset changes inside
the period, so the buckets are right across daylight-saving changes); weeks,
months and rows' totals are added in Python.  First-call resolution is a
second query, run at the same time on a connection of its own (the window
function over all calls of the period and the days after it, the filters
applied after it).  `calls_behind` lists the calls of
one cell (a dimension value and a bucket), a page at a time.

What differs between the databases: the epoch seconds of a timestamp
(`epoch_seconds`), and on PostgreSQL JIT compilation is off for a report's
transaction (it cost more than it saved on these queries).  The index on
``started_at`` finds a period's records; a month of 1,000,000 records takes
about a second on PostgreSQL (benchmarks/reports.py).
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Integer, and_, case, func, literal, or_, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from caller_id.models import Agent, CallRecord

__all__ = ["BUCKETS", "DIMENSIONS", "FIGURES", "PERIODS", "Bucket", "Filters", "Period", "Report", "ReportError",
           "ReportRules", "Row", "Sums", "calls_behind", "offsets", "report"]

DIMENSIONS = ("segment", "line", "queue", "agent", "intent", "total")
PERIODS = ("day", "week", "month", "custom")
BUCKETS = ("hour", "day", "week", "month")
MAX_DAYS = 1100  # about three years: the longest custom range
MAX_HOUR_DAYS = 31  # hourly buckets over at most a month
_ANSWERED = ("answered", "transferred")
_HOUR, _DAY = 3600, 86400
_EPOCH = dt.datetime(1970, 1, 1)
_YIELD_EVERY = 500  # cells added up between two turns of the event loop


class ReportError(ValueError):
    """A period, bucket or dimension that makes no report; the message says what is wrong."""


class ReportRules(Protocol):
    """How the figures count (``ivr.config.ReportSettings`` is one)."""

    service_level_seconds: float
    short_abandon_seconds: float
    repeat_call_days: int
    nps_promoter: int
    nps_detractor: int


# --- epoch seconds: the expression the two databases write differently ------------------------


class epoch_seconds(FunctionElement[int]):  # noqa: N801 - an SQL function
    """Whole seconds since 1970 of a timestamp column (stored in UTC)."""

    type = BigInteger()
    name = "epoch_seconds"
    inherit_cache = True


@compiles(epoch_seconds)
def _epoch_standard(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


# --- periods and buckets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One column of a report: local wall-clock times [start, end) and a label."""

    label: str  # 2026-03-29T01:00 (hour), 2026-03-29 (day), 2026-W13 (week), 2026-03 (month)
    start: dt.datetime  # naive, local
    end: dt.datetime


@dataclass(frozen=True)
class Period:
    """Local days [first, end) in `zone`; `kind` says how they were chosen."""

    kind: str
    first: dt.date
    end: dt.date
    zone: ZoneInfo

    @classmethod
    def of(cls, kind: str, zone: ZoneInfo, *, day: dt.date | None = None, first: dt.date | None = None,
           end: dt.date | None = None) -> Period:
        """The day, ISO week or month that holds `day` (today in `zone` when None), or the custom days
        [first, end)."""
        if kind not in PERIODS:
            raise ReportError(f"period: one of {', '.join(PERIODS)}, got {kind!r}")
        if kind == "custom":
            if first is None or end is None:
                raise ReportError("a custom period needs from and to (the day after the last one)")
            if day is not None:
                raise ReportError("a custom period takes from and to, not date")
            if end <= first:
                raise ReportError(f"to ({end}) must come after from ({first})")
            if (end - first).days > MAX_DAYS:
                raise ReportError(f"a custom period spans at most {MAX_DAYS} days, got {(end - first).days}")
            return cls(kind, first, end, zone)
        if first is not None or end is not None:
            raise ReportError(f"from and to go with the custom period, not with {kind}")
        if day is None:
            day = dt.datetime.now(zone).date()
        if kind == "day":
            return cls(kind, day, day + dt.timedelta(days=1), zone)
        if kind == "week":
            monday = day - dt.timedelta(days=day.weekday())
            return cls(kind, monday, monday + dt.timedelta(days=7), zone)
        start = day.replace(day=1)
        return cls(kind, start, _next_month(start), zone)

    @property
    def days(self) -> int:
        return (self.end - self.first).days

    @property
    def start_utc(self) -> dt.datetime:
        return _utc(dt.datetime.combine(self.first, dt.time()), self.zone)

    @property
    def end_utc(self) -> dt.datetime:
        return _utc(dt.datetime.combine(self.end, dt.time()), self.zone, fold=1)

    def default_bucket(self) -> str:
        if self.kind == "day":
            return "hour"
        if self.days <= 62:
            return "day"
        return "week" if self.days <= 366 else "month"

    def buckets(self, kind: str) -> list[Bucket]:
        if kind not in BUCKETS:
            raise ReportError(f"bucket: one of {', '.join(BUCKETS)}, got {kind!r}")
        if kind == "hour" and self.days > MAX_HOUR_DAYS:
            raise ReportError(f"hourly buckets cover at most {MAX_HOUR_DAYS} days, this period has {self.days}")
        start, stop = dt.datetime.combine(self.first, dt.time()), dt.datetime.combine(self.end, dt.time())
        found = []
        while start < stop:
            following = min(_next_bucket(start, kind), stop)
            found.append(Bucket(_label(start, kind), start, following))
            start = following
        return found

    def utc_span(self, bucket: Bucket) -> tuple[dt.datetime, dt.datetime]:
        """The instants of a bucket's local times (both sides of a repeated hour included)."""
        return _utc(bucket.start, self.zone), _utc(bucket.end, self.zone, fold=1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "from": self.first.isoformat(), "to": self.end.isoformat(),
                "timezone": self.zone.key}


def _utc(local: dt.datetime, zone: ZoneInfo, fold: int = 0) -> dt.datetime:
    return local.replace(tzinfo=zone, fold=fold).astimezone(dt.timezone.utc)


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)  # the first of the next month


def _next_bucket(local: dt.datetime, kind: str) -> dt.datetime:
    """The start of the bucket after the one that holds `local`."""
    if kind == "hour":
        return local.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    day = local.date()
    if kind == "day":
        following = day + dt.timedelta(days=1)
    elif kind == "week":
        following = day + dt.timedelta(days=7 - day.weekday())
    else:
        following = _next_month(day)
    return dt.datetime.combine(following, dt.time())


def _label(start: dt.datetime, kind: str) -> str:
    if kind == "hour":
        return start.strftime("%Y-%m-%dT%H:00")
    if kind == "day":
        return start.date().isoformat()
    if kind == "week":
        year, week, _ = start.date().isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


def offsets(zone: ZoneInfo, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime | None, int]]:
    """The zone's UTC offsets over [start, end): (until, seconds) pairs, the last one's until None.

    Found by stepping an hour at a time and bisecting to the second where the offset changes."""

    def offset(at: dt.datetime) -> int:
        return int(at.astimezone(zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    pieces: list[tuple[dt.datetime | None, int]] = []
    current, at = offset(start), start
    while at < end:
        following = min(at + dt.timedelta(hours=1), end)
        if offset(following) != current:
            low, high = at, following
            while high - low > dt.timedelta(seconds=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if offset(middle) == current else (low, middle)
            pieces.append((high, current))
            current = offset(high)
        at = following
    pieces.append((None, current))
    return pieces


# --- what the SQL adds up -----------------------------------------------------------------------


@dataclass
class Sums:
    """The additive sums behind the figures of one cell."""

    calls: int = 0
    self_served: int = 0
    ivr_hangup: int = 0
    manager: int = 0
    answered: int = 0
    transferred: int = 0
    abandoned: int = 0
    unanswered: int = 0
    answered_in_sl: int = 0
    abandoned_short: int = 0
    wait_answered: float = 0.0
    talked: int = 0
    talk: float = 0.0
    csat_count: int = 0
    csat_sum: int = 0
    csat_satisfied: int = 0
    nps_count: int = 0
    promoters: int = 0
    detractors: int = 0
    confirmed: int = 0
    top1: int = 0
    top3: int = 0
    fcr_calls: int = 0
    fcr_resolved: int = 0

    def add(self, other: Sums) -> None:
        for name in _SUM_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self) -> dict[str, Any]:
        offered = self.answered + self.abandoned + self.unanswered
        sl_base = offered - self.abandoned_short
        return {
            "calls": self.calls,
            "self_served": self.self_served,
            "containment": _ratio(self.self_served, self.calls),
            "ivr_hangup": self.ivr_hangup,
            "manager": self.manager,
            "offered": offered,
            "answered": self.answered,
            "transferred": self.transferred,
            "abandoned": self.abandoned,
            "unanswered": self.unanswered,
            "abandon_rate": _ratio(self.abandoned, offered),
            "service_level": _ratio(self.answered_in_sl, sl_base),
            "asa": _ratio(self.wait_answered, self.answered, 3),
            "aht": _ratio(self.talk, self.talked, 3),
            "fcr_calls": self.fcr_calls,
            "fcr": _ratio(self.fcr_resolved, self.fcr_calls),
            "csat_count": self.csat_count,
            "csat": _ratio(self.csat_sum, self.csat_count, 3),
            "csat_satisfied": _ratio(self.csat_satisfied, self.csat_count),
            "nps_count": self.nps_count,
            "nps": _ratio(100 * (self.promoters - self.detractors), self.nps_count, 2),
            "confirmed": self.confirmed,
            "top1": _ratio(self.top1, self.confirmed),
            "top3": _ratio(self.top3, self.confirmed),
        }


def _ratio(part: float, whole: float, digits: int = 6) -> float | None:
    return round(part / whole, digits) if whole else None


_SUM_FIELDS = tuple(f.name for f in fields(Sums))
_FLOAT_SUMS = ("wait_answered", "talk")
_FCR_SUMS = ("fcr_calls", "fcr_resolved")  # from the second query
FIGURES = tuple(Sums().figures())  # the figures' names, in the order the reports list them


def _result() -> ColumnElement[Any]:
    """How the call ended: ``result``, else what the older columns say (see the module doc)."""
    r = CallRecord
    return case(
        (r.result.is_not(None), r.result),
        (r.self_served.is_(True), "self_served"),
        (r.answered_at.is_not(None), "answered"),
        (and_(r.queue.is_not(None), r.wait_seconds.is_not(None)), "abandoned"),
        else_=None,
    )


def _intent(r: Any) -> ColumnElement[Any]:
    return func.coalesce(r.actual_intent, r.predicted_intent)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, 1), else_=0))


def _sum_if(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.sum(case((condition, value), else_=0))


@dataclass(frozen=True)
class Filters:
    """Calls of this line, queue and segment only (None: any)."""

    line: str | None = None
    queue: str | None = None
    segment: str | None = None

    def conditions(self, columns: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        return [columns[name] == value for name, value in (("line", self.line), ("queue", self.queue),
                                                           ("segment", self.segment)) if value is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "queue": self.queue, "segment": self.segment}


def _columns(source: Any, intent: Any) -> dict[str, Any]:
    return {"segment": source.segment, "line": source.line, "queue": source.queue, "agent": source.agent_id,
            "intent": intent}


def _local_unit(started_at: Any, pieces: Sequence[tuple[dt.datetime | None, int]], unit: int) -> Any:
    """The local hour or day number of `started_at` (seconds since 1970 in local time // unit)."""
    if len(pieces) == 1:
        offset: Any = literal(pieces[0][1], Integer)
    else:
        offset = case(*((started_at < until, literal(seconds, Integer)) for until, seconds in pieces[:-1]),
                      else_=literal(pieces[-1][1], Integer))
    return (epoch_seconds(started_at) + offset) // unit


async def _no_jit(session: Any) -> None:
    """PostgreSQL compiles these queries' expressions to machine code first (JIT), which costs more than
    it saves on them (0.3 s of a month's 1.2 s on 1,000,000 records): off for the report's transaction."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SET LOCAL jit = off"))


def _key_condition(column: Any, key: Any) -> ColumnElement[bool]:
    return column.is_(None) if key is None else column == key


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One value of the dimension: its sums over the whole period and per bucket."""

    key: Any  # the dimension's value (None: calls without one); for agents the agent id
    label: str | None
    total: Sums = field(default_factory=Sums)
    buckets: list[Sums] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "total": self.total.figures(),
                "buckets": [b.figures() for b in self.buckets]}


@dataclass
class Report:
    """The rows of a period by one dimension, and their total, over the same buckets."""

    period: Period
    bucket: str
    dimension: str
    filters: Filters
    buckets: list[Bucket]
    rows: list[Row]
    total: Row
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period.to_dict(), "bucket": self.bucket, "dimension": self.dimension,
                "filters": self.filters.to_dict(), "settings": self.settings,
                "buckets": [{"label": b.label, "start": b.start.isoformat(), "end": b.end.isoformat()}
                            for b in self.buckets],
                "rows": [row.to_dict() for row in self.rows], "total": self.total.to_dict()}

    def table(self) -> list[list[Any]]:
        """A header and one line per row and bucket (bucket "" for the whole period), the total last."""
        lines: list[list[Any]] = [["dimension", "key", "label", "bucket", *FIGURES]]
        for row in [*self.rows, self.total]:
            key = "" if row.key is None else row.key
            name = self.dimension if row is not self.total else "total"
            lines.append([name, key, row.label or "", "", *row.total.figures().values()])
            for bucket, sums in zip(self.buckets, row.buckets):
                lines.append([name, key, row.label or "", bucket.label, *sums.figures().values()])
        return lines


def _settings(rules: ReportRules) -> dict[str, Any]:
    return {name: getattr(rules, name) for name in ("service_level_seconds", "short_abandon_seconds",
                                                     "repeat_call_days", "nps_promoter", "nps_detractor")}


async def report(db: Any, period: Period, rules: ReportRules, *, dimension: str = "segment",
                 bucket: str | None = None, filters: Filters = Filters()) -> Report:
    """The figures of `period` by `dimension`, per bucket (`bucket`: the period's default when None)."""
    if dimension not in DIMENSIONS:
        raise ReportError(f"dimension: one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    bucket = bucket or period.default_bucket()
    buckets = period.buckets(bucket)
    unit = _HOUR if bucket == "hour" else _DAY
    start, end = period.start_utc, period.end_utc
    pieces = offsets(period.zone, start, end)
    # The two queries at once, each on its own connection: the database's cores work on both.
    main, fcr = await asyncio.gather(
        _rows(db, _main_query(period, rules, dimension, filters, pieces, unit)),
        _rows(db, _fcr_query(period, rules, dimension, filters, pieces, unit)))
    cells: dict[tuple[Any, int], Sums] = {}
    for row in main:
        cells[(row.k, row.u)] = Sums(**{name: _number(name, getattr(row, name)) for name in _SUM_FIELDS
                                        if name not in _FCR_SUMS})
    for row in fcr:
        sums = cells.setdefault((row.k, row.u), Sums())
        sums.fcr_calls, sums.fcr_resolved = int(row.fcr_calls or 0), int(row.fcr_resolved or 0)
    labels = await _labels(db, dimension, {k for k, _ in cells})
    rows: dict[Any, Row] = {}
    total = Row(None, "total", buckets=[Sums() for _ in buckets])
    for count, ((key, unit_number), sums) in enumerate(cells.items(), 1):
        local = _EPOCH + dt.timedelta(seconds=int(unit_number) * unit)
        index = _bucket_index(buckets, local)
        if index is None:
            continue
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key, labels.get(key, None if key is None else str(key)),
                                  buckets=[Sums() for _ in buckets])
        row.buckets[index].add(sums)
        total.buckets[index].add(sums)
        if count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # thousands of cells: the event loop serves others in between
    for row in [*rows.values(), total]:
        for sums in row.buckets:
            row.total.add(sums)
    ordered = [] if dimension == "total" else sorted(rows.values(), key=lambda r: (r.key is None, str(r.label)))
    return Report(period, bucket, dimension, filters, buckets, ordered, total, _settings(rules))


def _bucket_index(buckets: list[Bucket], local: dt.datetime) -> int | None:
    """The bucket that holds the local hour or day starting at `local` (None: outside the period)."""
    index = bisect.bisect_right([b.start for b in buckets], local) - 1
    return index if 0 <= index and local < buckets[index].end else None


def _number(name: str, value: Any) -> int | float:
    """A sum as the database returns it (a Decimal on PostgreSQL, None for no rows) as `Sums` keeps it."""
    if name in _FLOAT_SUMS:
        return float(value or 0)
    return int(value or 0)


def _main_query(period: Period, rules: ReportRules, dimension: str, filters: Filters,
                pieces: Sequence[tuple[dt.datetime | None, int]], unit: int) -> Any:
    r = CallRecord
    columns = _columns(r, _intent(r))
    key = columns.get(dimension, literal(None)) if dimension != "total" else literal(0)
    result = _result()
    wait = func.coalesce(r.wait_seconds, 0.0)
    actual = r.actual_intent

    def flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return case((condition, 1), else_=0)

    # The intents are compared here, so only small values reach the sort of the grouping.
    inner = (
        select(key.label("k"), _local_unit(r.started_at, pieces, unit).label("u"), result.label("result"),
               wait.label("wait"), r.talk_seconds, r.csat, r.nps,
               flag(actual.is_not(None)).label("confirmed"), flag(r.predicted_intent == actual).label("top1"),
               flag(or_(r.predicted_intent == actual, r.predicted_intent_2 == actual,
                        r.predicted_intent_3 == actual)).label("top3"))
        .where(r.started_at >= period.start_utc, r.started_at < period.end_utc, *filters.conditions(columns))
        .subquery()
    )
    c = inner.c
    answered = c.result.in_(_ANSWERED)
    return (
        select(
            c.k, c.u,
            func.count().label("calls"),
            _count_if(c.result == "self_served").label("self_served"),
            _count_if(c.result == "ivr_hangup").label("ivr_hangup"),
            _count_if(c.result == "manager").label("manager"),
            _count_if(answered).label("answered"),
            _count_if(c.result == "transferred").label("transferred"),
            _count_if(c.result == "abandoned").label("abandoned"),
            _count_if(c.result == "unanswered").label("unanswered"),
            _count_if(and_(answered, c.wait <= rules.service_level_seconds)).label("answered_in_sl"),
            _count_if(and_(c.result == "abandoned", c.wait < rules.short_abandon_seconds)).label("abandoned_short"),
            _sum_if(answered, c.wait).label("wait_answered"),
            _count_if(and_(answered, c.talk_seconds.is_not(None))).label("talked"),
            _sum_if(and_(answered, c.talk_seconds.is_not(None)), c.talk_seconds).label("talk"),
            func.count(c.csat).label("csat_count"),
            func.coalesce(func.sum(c.csat), 0).label("csat_sum"),
            _count_if(c.csat >= 4).label("csat_satisfied"),
            func.count(c.nps).label("nps_count"),
            _count_if(c.nps >= rules.nps_promoter).label("promoters"),
            _count_if(c.nps <= rules.nps_detractor).label("detractors"),
            func.sum(c.confirmed).label("confirmed"),
            func.sum(c.top1).label("top1"),
            func.sum(c.top3).label("top3"),
        )
        .group_by(c.k, c.u)
    )


def _fcr_query(period: Period, rules: ReportRules, dimension: str, filters: Filters,
               pieces: Sequence[tuple[dt.datetime | None, int]], unit: int) -> Any:
    """Per cell: the calls with an intent and a customer, and those with no repeat in the window."""
    r = CallRecord
    intent = _intent(r)
    repeat = dt.timedelta(days=rules.repeat_call_days)
    # The repeat of a call near the period's end comes after it: look that far on; no filter here.
    # Only the columns the cells need travel through the window's sort.
    needed = [name for name in ("segment", "line", "queue", "agent")
              if name == dimension or getattr(filters, name, None) is not None]
    source = _columns(r, intent)
    window = (
        select(r.started_at, intent.label("intent"), *(source[name].label(name) for name in needed),
               func.lead(r.started_at).over(partition_by=(r.customer_id, intent),
                                            order_by=(r.started_at, r.id)).label("next_at"))
        .where(r.customer_id.is_not(None), intent.is_not(None), r.started_at >= period.start_utc,
               r.started_at < period.end_utc + repeat)
        .subquery()
    )
    w = window.c
    columns = {name: w[name] for name in needed} | {"intent": w.intent}
    key = columns[dimension] if dimension != "total" else literal(0)
    resolved = or_(w.next_at.is_(None),
                   epoch_seconds(w.next_at) - epoch_seconds(w.started_at) > int(repeat.total_seconds()))
    cells = (
        select(key.label("k"), _local_unit(w.started_at, pieces, unit).label("u"),
               case((resolved, 1), else_=0).label("resolved"))
        .where(w.started_at < period.end_utc, *filters.conditions(columns))
        .subquery()
    )
    return (select(cells.c.k, cells.c.u, func.count().label("fcr_calls"),
                   func.sum(cells.c.resolved).label("fcr_resolved"))
            .group_by(cells.c.k, cells.c.u))


async def _rows(db: Any, statement: Any) -> list[Any]:
    async with db.session() as session:
        await _no_jit(session)
        return list((await session.execute(statement)).all())


async def _labels(db: Any, dimension: str, keys: set[Any]) -> dict[Any, str]:
    if dimension == "total":
        return {0: "total"}
    if dimension != "agent":
        return {key: str(key) for key in keys if key is not None}
    ids = [key for key in keys if key is not None]
    if not ids:
        return {}
    found = await _rows(db, select(Agent.id, Agent.name).where(Agent.id.in_(ids)))
    names = {ident: name for ident, name in found}
    return {ident: names.get(ident, f"#{ident}") for ident in ids}


# --- drill-down -------------------------------------------------------------------------------------


def csv_text(lines: Iterable[Sequence[Any]], *, line_end: str = "\r\n") -> str:
    """`lines` (a `Report.table()`, the calls behind a row) as CSV: empty for None, ISO 8601 for times.
    A text a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    first: queue and line names come from Asterisk and the configuration) gets a ``'`` before it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_end)
    for line in lines:
        writer.writerow([_csv_cell(value) for value in line])
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def calls_behind(db: Any, period: Period, *, dimension: str = "total", key: Any = None,
                       bucket: str | None = None, index: int | None = None, filters: Filters = Filters(),
                       limit: int = 50, offset: int = 0) -> tuple[list[CallRecord], int]:
    """The call records of one cell, oldest first: `dimension` = `key` (None: without a value), in the
    bucket `index` of the period's `bucket`s (None: the whole period); a page and the cell's count."""
    if dimension not in DIMENSIONS:
        raise ReportError(f"dimension: one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    start, end = period.start_utc, period.end_utc
    if index is not None:
        buckets = period.buckets(bucket or period.default_bucket())
        if not 0 <= index < len(buckets):
            raise ReportError(f"bucket index: 0..{len(buckets) - 1} for this period, got {index}")
        start, end = period.utc_span(buckets[index])
    r = CallRecord
    columns = _columns(r, _intent(r))
    conditions = [r.started_at >= start, r.started_at < end, *filters.conditions(columns)]
    if dimension != "total":
        conditions.append(_key_condition(columns[dimension], key))
    async with db.session() as session:
        await _no_jit(session)
        count = await session.scalar(select(func.count()).select_from(r).where(*conditions))
        found = (await session.scalars(select(r).where(*conditions).order_by(r.started_at, r.id)
                                       .limit(limit).offset(offset))).all()
    return list(found), int(count or 0)
