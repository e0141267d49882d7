"""Benchmark of the reports (queues.reports) over 1,000,000 call records on PostgreSQL.

A throwaway PostgreSQL cluster (tests.servers.PostgresCluster, as the call-path
benchmark starts one) is migrated and filled with COPY: 60 agents, 200,000
customers and `--report-calls` call records (1,000,000 by default) over the
90 days that end on 30 April 2026, with a realistic mix: calls mostly in the
day, segments A-D and unknown callers, three lines and six queues, results
(self-served, answered, abandoned...), waits and talk times, predicted and
confirmed intents, CSAT and NPS answers, and customers who call again; in
the order the calls happened, as the server writes them.  The zone is
Europe/London, so March's reports cross the change to summer time.

Timed, each three times (the slowest is what counts against the 2 s budget):
every dimension x the day (hourly buckets), the ISO week and the month (daily
buckets) that hold 29 March 2026, and the month by weeks; the drill-down into
one segment's calls of the month (the first page and a page 10,000 calls in).
While each report runs a task ticks every 10 ms on the same event loop: its
longest delay shows whether the page would stay responsive.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from caller_id.store import Database

ZONE = ZoneInfo("Europe/London")
LAST_DAY = dt.date(2026, 4, 30)
DAYS = 90
AGENTS = 60
CUSTOMERS = 200_000
BUDGET_S = 2.0
SECTION = "## Reports over 1,000,000 call records (PostgreSQL)"
INTENTS = ("card_reissue_delay", "card_ready", "card_pickup", "card_blocked", "documents_missing",
           "loan_application_status", "mortgage_application", "loan_payment", "deposit_question",
           "transfer_problem", "insurance_claim", "b2b_contract", "product_offer", "complaint_escalation",
           "general_question")
LINES = (("general", 0.6), ("b2b", 0.2), ("b2c", 0.2))
QUEUES = (("support", 0.5), ("b2c", 0.15), ("b2b", 0.15), ("vip", 0.08), ("key_accounts", 0.07), ("english", 0.05))
SEGMENTS = (("A", 0.05), ("B", 0.15), ("C", 0.45), ("D", 0.2), (None, 0.15))
RESULTS = (("self_served", 0.35), ("ivr_hangup", 0.05), ("answered", 0.4), ("manager", 0.04),
           ("transferred", 0.03), ("abandoned", 0.1), ("unanswered", 0.03))
HOURS = [0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 1, 2.5, 5, 7, 8, 8, 7, 7.5, 7.5, 7, 6.5, 5.5, 4, 3, 2, 1.2, 0.8, 0.4]
COLUMNS = ("call_id", "number", "line", "customer_id", "segment", "predicted_intent", "predicted_score",
           "predicted_intent_2", "predicted_intent_3", "actual_intent", "confirmed_by", "result", "self_served",
           "queue", "agent_id", "started_at", "answered_at", "ended_at", "wait_seconds", "talk_seconds", "csat",
           "nps", "survey", "context")


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    return rng.choices([value for value, _ in weighted], [weight for _, weight in weighted])[0]


def call_records(count: int, seed: int = 10) -> Iterator[tuple[Any, ...]]:
    """`count` call records over the DAYS days up to LAST_DAY, as COPY rows in COLUMNS' order."""
    rng = random.Random(seed)
    first = dt.datetime.combine(LAST_DAY - dt.timedelta(days=DAYS - 1), dt.time(), tzinfo=ZONE)
    day_weights = [0.75 if (first + dt.timedelta(days=d)).weekday() >= 5 else 1.0 for d in range(DAYS)]
    # In the order the calls happened, as the server writes its records.
    moments = sorted(zip(rng.choices(range(DAYS), day_weights, k=count), rng.choices(range(24), HOURS, k=count),
                         (rng.randrange(3600) for _ in range(count))))
    for n, (day, hour, second) in enumerate(moments):
        local = (first + dt.timedelta(days=day)).replace(hour=hour) + dt.timedelta(seconds=second)
        started = local.astimezone(dt.timezone.utc)
        result = _pick(rng, RESULTS)
        known = rng.random() < 0.88
        # A fifth of the customers make most of the calls: repeat callers, for first-call resolution.
        customer = (rng.randrange(1, CUSTOMERS // 5) if rng.random() < 0.5 else rng.randrange(1, CUSTOMERS + 1)) \
            if known else None
        segment = _pick(rng, SEGMENTS[:-1]) if known else None
        predicted = rng.sample(INTENTS, 3) if rng.random() < 0.85 else [None, None, None]
        actual = None
        if rng.random() < 0.55:
            roll = rng.random()
            actual = predicted[0] if roll < 0.6 and predicted[0] else \
                predicted[1] if roll < 0.75 and predicted[1] else rng.choice(INTENTS)
        queued = result in ("answered", "transferred", "abandoned", "unanswered")
        answered = result in ("answered", "transferred", "manager")
        wait = round(rng.expovariate(1 / 25), 1) if queued else None
        talk = round(rng.expovariate(1 / 240) + 20, 1) if answered and rng.random() < 0.97 else None
        answered_at = started + dt.timedelta(seconds=30 + (wait or 0)) if answered else None
        ended = started + dt.timedelta(seconds=30 + (wait or 0) + (talk or 0))
        surveyed = answered or result == "self_served"
        csat = rng.choices((1, 2, 3, 4, 5), (5, 7, 15, 35, 38))[0] if surveyed and rng.random() < 0.3 else None
        nps = rng.choices(range(11), (2, 1, 1, 2, 2, 4, 6, 10, 18, 24, 30))[0] \
            if surveyed and rng.random() < 0.2 else None
        yield (
            f"bench-{n}", f"+7900{rng.randrange(10**7):07d}" if known else None, _pick(rng, LINES), customer,
            segment, predicted[0], round(rng.random(), 3) if predicted[0] else None, predicted[1], predicted[2],
            actual, ("agent" if answered else "caller") if actual else None, result, result == "self_served",
            _pick(rng, QUEUES) if queued else None, rng.randrange(1, AGENTS + 1) if answered else None, started,
            answered_at, ended, wait, talk, csat, nps, ("complete" if csat and nps else "partial")
            if csat or nps else None, "{}",
        )


async def fill(url: str, count: int) -> dict[str, float]:
    import asyncpg

    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.dispose()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        now = dt.datetime.now(dt.timezone.utc)
        await connection.copy_records_to_table(
            "agents", columns=("id", "name", "interface", "is_manager"),
            records=[(n, f"Agent {n}", f"PJSIP/{1000 + n}", n <= 5) for n in range(1, AGENTS + 1)])
        segments = [s for s, _ in SEGMENTS[:-1]]
        await connection.copy_records_to_table(
            "customers", columns=("id", "name", "segment", "is_vip", "language", "updated_at"),
            records=[(n, f"Customer {n}", segments[n % 4], n % 97 == 0, "ru", now) for n in range(1, CUSTOMERS + 1)])
        copied = time.perf_counter()
        await connection.copy_records_to_table("call_records", columns=COLUMNS, records=call_records(count))
        copy_s = time.perf_counter() - copied
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return {"copy_s": round(copy_s, 1)}


class LoopLag:
    """The longest delay of a 10 ms tick on this event loop while it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            expected = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.longest = max(self.longest, time.perf_counter() - expected)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed(make: Any, runs: int = 3) -> dict[str, Any]:
    seconds, lag = [], 0.0
    result = None
    for _ in range(runs):
        with LoopLag() as ticker:
            started = time.perf_counter()
            result = await make()
            seconds.append(time.perf_counter() - started)
            await asyncio.sleep(0)
        lag = max(lag, ticker.longest)
    return {"max_s": round(max(seconds), 3), "median_s": round(statistics.median(seconds), 3),
            "loop_lag_ms": round(lag * 1000, 1), "result": result}


async def measure(url: str) -> list[dict[str, Any]]:
    from ivr.config import ReportSettings
    from queues.reports import DIMENSIONS, Period, calls_behind, report

    rules = ReportSettings()
    day = dt.date(2026, 3, 29)
    cases = [(kind, bucket) for kind, bucket in (("day", "hour"), ("week", "day"), ("month", "day"),
                                                 ("month", "week"))]
    db = Database(url)
    found = []
    try:
        for dimension in DIMENSIONS:
            for kind, bucket in cases:
                period = Period.of(kind, ZONE, day=day)
                run = await timed(lambda: report(db, period, rules, dimension=dimension, bucket=bucket))
                made = run.pop("result")
                found.append({"what": f"{dimension} / {kind} by {bucket}", "calls": made.total.total.calls,
                              "rows": len(made.rows), "buckets": len(made.buckets), **run})
                print(f"  {found[-1]}", flush=True)
        # The whole table: a custom range over every one of the 1,000,000 records.
        everything = Period.of("custom", ZONE, first=LAST_DAY - dt.timedelta(days=DAYS - 1),
                               end=LAST_DAY + dt.timedelta(days=1))
        for dimension in ("segment", "total"):
            run = await timed(lambda: report(db, everything, rules, dimension=dimension, bucket="week"))
            made = run.pop("result")
            found.append({"what": f"{dimension} / all {DAYS} days by week", "calls": made.total.total.calls,
                          "rows": len(made.rows), "buckets": len(made.buckets), **run})
            print(f"  {found[-1]}", flush=True)
        month = Period.of("month", ZONE, day=day)
        for offset in (0, 10_000):
            run = await timed(lambda: calls_behind(db, month, dimension="segment", key="C", limit=50, offset=offset))
            records, count = run.pop("result")
            found.append({"what": f"drill-down: segment C / month, 50 calls from {offset}", "calls": count,
                          "rows": len(records), "buckets": 1, **run})
            print(f"  {found[-1]}", flush=True)
    finally:
        await db.dispose()
    return found


def main_reports(args: argparse.Namespace | None = None) -> dict[str, Any]:
    from tests.servers import PostgresCluster

    count = getattr(args, "report_calls", None) or 1_000_000
    cluster = PostgresCluster()
    try:
        cluster.start()
        url = cluster.url(cluster.create_database("reports"))
        print(f"[reports] filling PostgreSQL with {count} call records ...", flush=True)
        filled = asyncio.run(fill(url, count))
        print(f"[reports] {filled}; timing ...", flush=True)
        timings = asyncio.run(measure(url))
    finally:
        cluster.close()
    return {"calls": count, "days": DAYS, "zone": ZONE.key, "fill": filled, "timings": timings,
            "budget_s": BUDGET_S, "met": all(t["max_s"] <= BUDGET_S for t in timings)}


def render_reports(report: dict[str, Any]) -> str:
    out = ["", SECTION, "",
           f"{report['calls']:,} call records over {report['days']} days (to {LAST_DAY}, zone {report['zone']}; "
           f"made and copied in {report['fill']['copy_s']} s) in a throwaway "
           "PostgreSQL cluster; `queues.reports.report` and `calls_behind` as the API calls them, each run three "
           "times. Budget: every report <= 2 s; the event loop's longest 10 ms tick delay while it runs shows "
           "the page stays responsive.", "",
           "| report | calls | rows | buckets | slowest s | median s | loop lag ms | verdict |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for t in report["timings"]:
        verdict = "met" if t["max_s"] <= report["budget_s"] else "MISSED"
        out.append(f"| {t['what']} | {t['calls']:,} | {t['rows']} | {t['buckets']} | {t['max_s']:.3f} | "
                   f"{t['median_s']:.3f} | {t['loop_lag_ms']:g} | {verdict} |")
    slowest = max(report["timings"], key=lambda t: t["max_s"])
    out += ["", f"Every report within {report['budget_s']:g} s: {'met' if report['met'] else 'MISSED'} "
            f"(slowest: {slowest['what']}, {slowest['max_s']:.3f} s)."]
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-calls", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    arguments = parser.parse_args()
    figures = main_reports(arguments)
    print(render_reports(figures))
    if arguments.json:
        print(json.dumps(figures, indent=2, default=str))
