"""The reports (queues.reports) on a small dataset whose every figure was worked out by hand from the
definitions in the module docstring, on SQLite and on PostgreSQL.

The week is Monday 23 to Sunday 29 March 2026 in Europe/London: the clocks go forward on the Sunday at
01:00 UTC, so a call at 23:30 UTC that Sunday is 00:30 on Monday 30 March, outside the week.
Settings: T = 20 s, S = 5 s, repeat calls within 3 days, promoters 9-10, detractors 0-6.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from caller_id.models import Agent, CallRecord, Customer
from ivr.config import ReportSettings
from queues.reports import Filters, Period, ReportError, calls_behind, csv_text, offsets, report

LONDON = ZoneInfo("Europe/London")
UTC = dt.timezone.utc
RULES = ReportSettings(service_level_seconds=20, short_abandon_seconds=5, repeat_call_days=3, nps_promoter=9,
                       nps_detractor=6)
WEEK = Period.of("week", LONDON, day=dt.date(2026, 3, 25))


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def call(call_id: str, started_at: dt.datetime, **columns: Any) -> CallRecord:
    columns.setdefault("line", "general")
    return CallRecord(call_id=call_id, started_at=started_at, **columns)


def calls() -> list[CallRecord]:
    """The dataset, as new records each time."""
    return [
        call("c1", at(23, 9), segment="A", customer_id=1, result="self_served", self_served=True,
             predicted_intent="card_status", actual_intent="card_status", confirmed_by="caller", csat=5, nps=10),
        call("c2", at(23, 10), segment="A", queue="support", result="answered", wait_seconds=10, talk_seconds=100,
             agent_id=1, customer_id=2, predicted_intent="loan", predicted_intent_2="card_status",
             actual_intent="card_status", confirmed_by="agent", csat=4, nps=9),
        call("c3", at(24, 11), segment="B", line="b2b", queue="support", result="transferred", wait_seconds=30,
             talk_seconds=200, agent_id=2, customer_id=3, predicted_intent="loan", csat=2, nps=3),
        call("c4", at(24, 12), segment="B", line="b2b", queue="support", result="abandoned", wait_seconds=3,
             customer_id=4, predicted_intent="loan"),
        call("c5", at(25, 13), segment="B", queue="support", result="abandoned", wait_seconds=40),
        call("c6", at(25, 14), segment="C", queue="vip", result="unanswered", wait_seconds=60, customer_id=5,
             predicted_intent="card_status"),
        call("c7", at(25, 15), segment="A", queue="support", result="answered", wait_seconds=20, agent_id=1,
             customer_id=2, predicted_intent="loan", actual_intent="card_status", confirmed_by="agent"),
        call("c8", at(29, 0, 30), segment="C", result="manager", customer_id=6, predicted_intent="loan",
             predicted_intent_3="card_pickup", actual_intent="card_pickup", confirmed_by="agent", nps=7),
        call("c9", at(29, 23, 30), segment="C", result="self_served", self_served=True, customer_id=7),  # Mon 00:30 BST
        call("c10", at(29, 22, 30), result="ivr_hangup"),  # Sun 23:30 BST: in the week
        # written before the result column: answered_at says it was answered
        call("c11", at(27, 9), segment="A", queue="support", answered_at=at(27, 9, 1), wait_seconds=5, talk_seconds=50,
             agent_id=2, customer_id=1, predicted_intent="card_status", actual_intent="card_status"),
        call("c12", at(28, 10), segment="A", result="self_served", self_served=True, customer_id=1,
             predicted_intent="card_status"),
        call("c13", at(22, 23, 30), segment="A", result="self_served", self_served=True),  # Sun 22nd, GMT
        call("c14", at(30, 10), segment="C", queue="vip", result="answered", wait_seconds=1, customer_id=5,
             predicted_intent="card_status"),  # 4 days 20 h after c6: not a repeat
        call("c15", at(31, 10), segment="C", result="answered", queue="vip", wait_seconds=2, customer_id=6,
             actual_intent="card_pickup"),  # 2 days 9.5 h after c8: a repeat, after the week
    ]


async def fill(db: Any) -> None:
    """The dataset with its two agents and seven customers, in an empty database."""
    async with db.session() as session:
        session.add_all([Agent(id=1, name="Anna", interface="PJSIP/1001"),
                         Agent(id=2, name="Boris", interface="PJSIP/1002")])
        session.add_all([Customer(id=n, name=f"customer {n}") for n in range(1, 8)])
        await session.flush()
        session.add_all(calls())
        await session.commit()


@pytest.fixture
async def db(migrated_db: Any) -> Any:
    await fill(migrated_db)
    return migrated_db


def test_periods_are_local_days_and_the_offsets_change_with_the_clocks() -> None:
    assert (WEEK.first, WEEK.end) == (dt.date(2026, 3, 23), dt.date(2026, 3, 30))
    assert WEEK.start_utc == at(23, 0) and WEEK.end_utc == at(29, 23)  # BST at the end
    assert offsets(LONDON, WEEK.start_utc, WEEK.end_utc) == [(at(29, 1), 0), (None, 3600)]
    month = Period.of("month", LONDON, day=dt.date(2026, 3, 31))
    assert (month.first, month.end) == (dt.date(2026, 3, 1), dt.date(2026, 4, 1))
    assert [b.label for b in month.buckets("week")] == ["2026-W09", "2026-W10", "2026-W11", "2026-W12",
                                                       "2026-W13", "2026-W14"]
    assert Period.of("month", LONDON, day=dt.date(2026, 12, 5)).end == dt.date(2027, 1, 1)
    assert Period.of("day", LONDON, day=dt.date(2026, 3, 29)).default_bucket() == "hour"
    custom = Period.of("custom", LONDON, first=dt.date(2026, 1, 1), end=dt.date(2026, 12, 1))
    assert custom.default_bucket() == "week" and custom.buckets("month")[-1].label == "2026-11"
    for kwargs, message in [
        ({"kind": "custom", "first": dt.date(2026, 3, 2), "end": dt.date(2026, 3, 2)}, "must come after"),
        ({"kind": "custom", "first": dt.date(2026, 3, 2)}, "needs from and to"),
        ({"kind": "week", "first": dt.date(2026, 3, 2)}, "go with the custom period"),
        ({"kind": "year"}, "period: one of day, week, month, custom"),
        ({"kind": "custom", "first": dt.date(2020, 1, 1), "end": dt.date(2026, 1, 1)}, "at most 1100 days"),
    ]:
        with pytest.raises(ReportError, match=message):
            Period.of(zone=LONDON, **kwargs)
    with pytest.raises(ReportError, match="hourly buckets cover at most 31 days"):
        custom.buckets("hour")


async def test_the_week_by_segment_gives_the_hand_counted_figures(db: Any) -> None:
    week = await report(db, WEEK, RULES, dimension="segment", bucket="day")
    total = week.total.total.figures()
    assert total == {
        "calls": 11, "self_served": 2, "containment": round(2 / 11, 6), "ivr_hangup": 1, "manager": 1,
        "offered": 7, "answered": 4, "transferred": 1, "abandoned": 2, "unanswered": 1,
        "abandon_rate": round(2 / 7, 6),
        "service_level": 0.5,  # c2, c7 (20 s is within), c11 / (7 offered - c4 who hung up within 5 s)
        "asa": 16.25, "aht": round(350 / 3, 3),  # c7 has no talk time
        "fcr_calls": 9, "fcr": round(6 / 9, 6),  # c2 (c7 2 days later), c8 (c15), c11 (c12) were repeated
        "csat_count": 3, "csat": round(11 / 3, 3), "csat_satisfied": round(2 / 3, 6),
        "nps_count": 4, "nps": 25.0,  # promoters c1, c2; detractor c3; c8's 7 is passive
        "confirmed": 5, "top1": 0.4, "top3": 0.8,  # c1, c11 right; c2 (second), c8 (third) in the top three
    }
    rows = {row.key: row.total.figures() for row in week.rows}
    assert list(rows) == ["A", "B", "C", None]
    a, b, c = rows["A"], rows["B"], rows["C"]
    assert (a["calls"], a["containment"], a["offered"], a["abandon_rate"], a["service_level"]) == (5, 0.4, 3, 0, 1)
    assert (a["asa"], a["aht"], a["fcr"], a["csat"], a["csat_satisfied"], a["nps"]) == (
        round(35 / 3, 3), 75, 0.6, 4.5, 1, 100)
    assert (a["confirmed"], a["top1"], a["top3"]) == (4, 0.5, 0.75)
    assert (b["calls"], b["answered"], b["abandoned"], b["abandon_rate"], b["service_level"]) == (
        3, 1, 2, round(2 / 3, 6), 0)
    assert (b["asa"], b["aht"], b["fcr"], b["csat"], b["nps"], b["top1"]) == (30, 200, 1, 2, -100, None)
    assert (c["calls"], c["manager"], c["unanswered"], c["offered"], c["service_level"], c["asa"]) == (
        2, 1, 1, 1, 0, None)
    assert (c["fcr"], c["nps"], c["top1"], c["top3"]) == (0.5, 0, 0, 1)
    assert rows[None]["calls"] == 1 and rows[None]["ivr_hangup"] == 1

    # the days, in local time: c10 (Sunday 23:30 BST) is Sunday's, c9 (Monday 00:30 BST) is not the week's
    assert [b.label for b in week.buckets][-1] == "2026-03-29"
    assert [s.calls for s in week.total.buckets] == [2, 2, 3, 0, 1, 1, 2]
    (unknown,) = [row for row in week.rows if row.key is None]
    assert [s.calls for s in unknown.buckets] == [0, 0, 0, 0, 0, 0, 1]


async def test_sunday_s_hours_follow_the_clock_change(db: Any) -> None:
    sunday = await report(db, Period.of("day", LONDON, day=dt.date(2026, 3, 29)), RULES, dimension="total")
    assert sunday.bucket == "hour" and sunday.rows == []
    hours = {b.label: s.calls for b, s in zip(sunday.buckets, sunday.total.buckets) if s.calls}
    assert hours == {"2026-03-29T00:00": 1, "2026-03-29T23:00": 1}  # c8 at 00:30 GMT, c10 at 23:30 BST


async def test_the_month_rolls_the_days_up_into_iso_weeks(db: Any) -> None:
    month = await report(db, Period.of("month", LONDON, day=dt.date(2026, 3, 1)), RULES, dimension="line",
                         bucket="week")
    assert [s.calls for s in month.total.buckets] == [0, 0, 0, 1, 11, 3]  # c13 | the week | c9, c14, c15
    assert month.total.total.calls == 15
    lines = {row.key: row.total.calls for row in month.rows}
    assert lines == {"general": 13, "b2b": 2}
    # c15 is the repeat of c8 and also a call of its own: of the month's 11 calls with customer and intent,
    # c2, c8 and c11 were repeated (c14 is 4 days 20 h after c6)
    assert (month.total.total.fcr_calls, month.total.total.fcr_resolved) == (11, 8)


async def test_agents_and_intents_and_filters(db: Any) -> None:
    agents = await report(db, WEEK, RULES, dimension="agent")
    assert {row.key: (row.label, row.total.answered) for row in agents.rows} == {
        1: ("Anna", 2), 2: ("Boris", 2), None: (None, 0)}
    assert agents.rows[0].total.figures()["aht"] == 100  # c2; c7 has no talk time
    intents = await report(db, WEEK, RULES, dimension="intent")
    assert {row.key: row.total.calls for row in intents.rows} == {"card_pickup": 1, "card_status": 6, "loan": 2,
                                                                  None: 2}
    b2b = await report(db, WEEK, RULES, dimension="segment", filters=Filters(line="b2b"))
    assert [(row.key, row.total.calls) for row in b2b.rows] == [("B", 2)]
    # the repeat calls are looked for among all calls: c2's repeat is on the same line here, c7
    support_a = await report(db, WEEK, RULES, dimension="total", filters=Filters(queue="support", segment="A"))
    assert (support_a.total.total.calls, support_a.total.total.fcr_calls, support_a.total.total.fcr_resolved) == (
        3, 3, 1)  # c2 (repeated), c7, c11 (repeated by the self-served c12)


async def test_the_calls_behind_a_cell_page_by_page(db: Any) -> None:
    found, count = await calls_behind(db, WEEK, dimension="segment", key="B", limit=2)
    assert count == 3 and [r.call_id for r in found] == ["c3", "c4"]
    found, count = await calls_behind(db, WEEK, dimension="segment", key="B", limit=2, offset=2)
    assert count == 3 and [r.call_id for r in found] == ["c5"]
    found, count = await calls_behind(db, WEEK, dimension="total", bucket="day", index=6)
    assert [r.call_id for r in found] == ["c8", "c10"]
    found, _ = await calls_behind(db, WEEK, dimension="segment", key=None)
    assert [r.call_id for r in found] == ["c10"]
    found, _ = await calls_behind(db, WEEK, dimension="agent", key=2, filters=Filters(line="general"))
    assert [r.call_id for r in found] == ["c11"]
    with pytest.raises(ReportError, match="bucket index: 0..6"):
        await calls_behind(db, WEEK, bucket="day", index=7)


async def test_the_report_is_json_and_a_table(db: Any) -> None:
    import json

    week = await report(db, WEEK, RULES, dimension="segment")
    data = json.loads(json.dumps(week.to_dict()))
    assert data["period"] == {"kind": "week", "from": "2026-03-23", "to": "2026-03-30", "timezone": "Europe/London"}
    assert data["settings"]["repeat_call_days"] == 3 and len(data["buckets"]) == 7
    table = week.table()
    assert table[0][:5] == ["dimension", "key", "label", "bucket", "calls"]
    assert table[1][:5] == ["segment", "A", "A", "", 5] and table[2][3] == "2026-03-23"
    assert table[-8][:5] == ["total", "", "total", "", 11]
    assert len(table) == 1 + 5 * 8
    text = csv_text([["queue", "=HYPERLINK(\"x\")", None, "-1", -1, dt.date(2026, 3, 23)]])
    assert text == "queue,\"'=HYPERLINK(\"\"x\"\")\",,'-1,-1,2026-03-23\r\n"  # no formula a spreadsheet would run
