"""The reports under /api/v1/reports (supervisors): `queues.reports` over HTTP, as JSON or CSV.

``GET /api/v1/reports/{dimension}`` is the report of one period by segment,
line, queue, agent, intent or total; ``GET /api/v1/reports/{dimension}/calls``
lists the calls behind one row (``key``) and, with ``cell``, one bucket of it,
a page at a time.  The period is ``period`` (day, week, month: the one that
holds ``date``, today by default) or ``period=custom`` with ``from`` and ``to``
(local days, ``to`` not included), in the contact center's time zone
(``timezone`` in the configuration); the figures count with
``Config.reports``.  ``format=csv`` (or ``Accept: text/csv``) answers CSV
with a header row; a period, bucket or key that makes no report is a 400
that says why.

The routes are declared with `ivr.web.api.endpoint`, so they are in the
OpenAPI description; the page that draws them is ``/reports``
(`ivr.web.pages`, ``static/reports.js``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from aiohttp import web
from msgspec import Meta

from caller_id.profile import SEGMENTS
from ivr.web import api, i18n, openapi
from ivr.web.api import call_dict, endpoint, reply
from ivr.web.inputs import Input, QueueName, matching, refusal
from ivr.web.keys import SERVICES
from queues.reports import (
    BUCKETS, DIMENSIONS, PERIODS, Filters, Period, ReportError, calls_behind, csv_text, report,
)

Dimension = Literal[DIMENSIONS]  # type: ignore[valid-type]
Segment = Literal[SEGMENTS]  # type: ignore[valid-type]
LineName = matching(r"[A-Za-z0-9_.-]+", 40)
Key = matching(r"[^\x00-\x1f\x7f]*", 80, 0)  # empty: the row of the calls without a value


class ReportQuery(Input):
    dimension: Dimension
    period: Literal[PERIODS] = "day"  # type: ignore[valid-type]
    date: dt.date | None = None
    first: dt.date | None = msgspec.field(default=None, name="from")
    end: dt.date | None = msgspec.field(default=None, name="to")
    bucket: Literal[BUCKETS] | None = None  # type: ignore[valid-type]
    line: LineName | None = None
    queue: QueueName | None = None
    segment: Segment | None = None
    format: Literal["json", "csv"] | None = None


class ReportCallsQuery(ReportQuery):
    key: Key | None = None
    cell: Annotated[int, Meta(ge=0, le=10_000)] | None = None  # the bucket's index
    limit: Annotated[int, Meta(ge=1, le=500)] = 50
    offset: Annotated[int, Meta(ge=0, le=10_000_000)] = 0


def _period(request: web.Request, query: ReportQuery) -> Period:
    zone = ZoneInfo(request.app[SERVICES].config.timezone)
    try:
        return Period.of(query.period, zone, day=query.date, first=query.first, end=query.end)
    except ReportError as exc:
        raise refusal(request, 400, str(exc)) from None


def _filters(query: ReportQuery) -> Filters:
    return Filters(line=query.line, queue=query.queue, segment=query.segment)


def _wants_csv(request: web.Request, query: ReportQuery) -> bool:
    if query.format is not None:
        return query.format == "csv"
    accepted = request.headers.get("Accept", "")
    return "text/csv" in accepted and "application/json" not in accepted


def _csv(lines: list[list[Any]], name: str) -> web.Response:
    return web.Response(text=csv_text(lines), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _choices(request: web.Request) -> dict[str, Any]:
    services = request.app[SERVICES]
    return {"lines": [line.name for line in services.config.lines],
            "queues": sorted(services.rules.current.queues), "segments": list(SEGMENTS),
            "dimensions": list(DIMENSIONS), "periods": list(PERIODS), "buckets": list(BUCKETS)}


@endpoint("GET", "/reports/{dimension}", "The report of a period by segment, line, queue, agent, intent or in "
          "total: calls, containment, abandon rate, service level, ASA, AHT, first-call resolution, CSAT, NPS, "
          "prediction accuracy, per bucket (format=csv: CSV)", role="supervisor", query=ReportQuery)
async def report_of(request: web.Request, query: ReportQuery) -> web.Response:
    services = request.app[SERVICES]
    period = _period(request, query)
    try:
        found = await report(services.db, period, services.config.reports, dimension=query.dimension,
                             bucket=query.bucket, filters=_filters(query))
    except ReportError as exc:
        raise refusal(request, 400, str(exc)) from None
    if query.dimension == "intent":  # the intents' titles in the page's language
        language = i18n.choose(request, services.config.web.language)
        titles = {spec.name: spec.title.get(language) or spec.name for spec in services.catalogue.intents}
        for row in found.rows:
            row.label = titles.get(row.key, row.label)
    if _wants_csv(request, query):
        return _csv(found.table(), f"report-{query.dimension}-{period.first}-{period.end}")
    return reply({**found.to_dict(), "choices": _choices(request)})


_CALL_COLUMNS = ("call_id", "started_at", "line", "segment", "queue", "result", "agent_id", "customer_id",
                 "number", "predicted_intent", "actual_intent", "wait_seconds", "talk_seconds", "csat", "nps")


@endpoint("GET", "/reports/{dimension}/calls", "The calls behind a report's row (key; empty for the calls "
          "without a value) or one of its buckets (cell: the bucket's index), oldest first, a page at a time",
          role="supervisor", query=ReportCallsQuery)
async def report_calls(request: web.Request, query: ReportCallsQuery) -> web.Response:
    services = request.app[SERVICES]
    period = _period(request, query)
    key: Any = None
    if query.dimension != "total":
        if query.key is None:
            raise refusal(request, 400, "key: the row's value (empty for the calls without one)")
        key = query.key or None
        if key is not None and query.dimension == "agent":
            if not (key.isascii() and key.isdigit() and len(key) <= 9):
                raise refusal(request, 400, f"key: an agent's id, got {key!r}")
            key = int(key)
    try:
        found, count = await calls_behind(services.db, period, dimension=query.dimension, key=key,
                                          bucket=query.bucket, index=query.cell, filters=_filters(query),
                                          limit=query.limit, offset=query.offset)
    except ReportError as exc:
        raise refusal(request, 400, str(exc)) from None
    calls = [call_dict(record) for record in found]
    if _wants_csv(request, query):
        return _csv([list(_CALL_COLUMNS), *([c[name] for name in _CALL_COLUMNS] for c in calls)],
                    f"calls-{query.dimension}-{period.first}-{period.end}")
    return reply({"period": period.to_dict(), "dimension": query.dimension, "key": key, "cell": query.cell,
                  "count": count, "offset": query.offset, "limit": query.limit, "calls": calls})


# The description was made when ivr.web.api was imported: it gets these routes too.
api.OPENAPI.clear()
api.OPENAPI.update(openapi.document(api.OPERATIONS))
