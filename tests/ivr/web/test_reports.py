"""The reports over HTTP (ivr.web.reports): JSON, CSV, the OpenAPI description, bad input, who may read them.

The dataset is the hand-counted week of tests/queues/test_reports.py (Europe/London, 23-29 March 2026);
its figures are checked there; here, that the API serves them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace

import pytest

from tests.queues.test_reports import calls

WEEK = {"period": "week", "date": "2026-03-25"}


@pytest.fixture
def base_config(base_config):
    return replace(base_config, timezone="Europe/London")


@pytest.fixture
async def reports_server(web_server):
    async with web_server.services.db.session() as session:
        session.add_all(calls())
        await session.commit()
    return web_server


async def test_a_supervisor_gets_the_report_as_json_and_as_csv(reports_server):
    async with await reports_server.client("sup") as sup:
        async with sup.get("/api/v1/reports/segment", params=WEEK) as response:
            assert response.status == 200, await response.text()
            data = await response.json()
        async with sup.get("/api/v1/reports/segment", params={**WEEK, "format": "csv"}) as response:
            assert response.status == 200
            assert response.content_type == "text/csv"
            assert 'filename="report-segment-2026-03-23-2026-03-30.csv"' in response.headers["Content-Disposition"]
            table = list(csv.reader(io.StringIO(await response.text())))
        async with sup.get("/api/v1/reports/intent", params={**WEEK, "bucket": "week"},
                           headers={"Accept": "text/csv"}) as response:
            assert response.content_type == "text/csv"
            intents = list(csv.DictReader(io.StringIO(await response.text())))
    assert data["period"] == {"kind": "week", "from": "2026-03-23", "to": "2026-03-30", "timezone": "Europe/London"}
    assert data["bucket"] == "day" and [b["label"] for b in data["buckets"]][0] == "2026-03-23"
    assert [row["key"] for row in data["rows"]] == ["A", "B", "C", None]
    total = data["total"]["total"]
    assert (total["calls"], total["service_level"], total["nps"], total["top3"]) == (11, 0.5, 25.0, 0.8)
    assert [b["calls"] for b in data["total"]["buckets"]] == [2, 2, 3, 0, 1, 1, 2]
    assert data["choices"]["segments"] == ["A", "B", "C", "D"] and "support" in data["choices"]["queues"]

    header = table[0]
    assert header[:5] == ["dimension", "key", "label", "bucket", "calls"] and "fcr" in header and "nps" in header
    by_row = {(line[0], line[1], line[3]): dict(zip(header, line)) for line in table[1:]}
    assert by_row[("segment", "B", "")]["abandon_rate"] == str(round(2 / 3, 6))
    assert by_row[("segment", "", "")]["calls"] == "1"  # the calls without a segment
    assert by_row[("total", "", "2026-03-25")]["calls"] == "3"
    assert by_row[("segment", "C", "")]["asa"] == ""  # nothing to divide by
    # the intents' titles from the catalogue, in the page's language
    titled = {line["key"]: line["label"] for line in intents if line["bucket"] == ""}
    assert titled["card_pickup"] not in ("", "card_pickup")
    assert titled["card_status"] == "card_status"  # not in the shipped catalogue: its name


async def test_the_calls_behind_a_row_and_a_bucket(reports_server):
    async with await reports_server.client("sup") as sup:
        async with sup.get("/api/v1/reports/segment/calls", params={**WEEK, "key": "B", "limit": 2}) as response:
            page = await response.json()
        async with sup.get("/api/v1/reports/segment/calls", params={**WEEK, "key": "B", "limit": 2,
                                                                   "offset": 2}) as response:
            rest = await response.json()
        async with sup.get("/api/v1/reports/total/calls", params={**WEEK, "bucket": "day", "cell": 6}) as response:
            sunday = await response.json()
        async with sup.get("/api/v1/reports/agent/calls", params={**WEEK, "key": "1", "format": "csv"}) as response:
            anna = list(csv.DictReader(io.StringIO(await response.text())))
        async with sup.get("/api/v1/reports/segment/calls", params={**WEEK, "key": ""}) as response:
            unknown = await response.json()
    assert page["count"] == 3 and [c["call_id"] for c in page["calls"]] == ["c3", "c4"]
    assert page["calls"][0]["result"] == "transferred" and page["calls"][0]["wait_seconds"] == 30
    assert [c["call_id"] for c in rest["calls"]] == ["c5"]
    assert [c["call_id"] for c in sunday["calls"]] == ["c8", "c10"]
    assert [line["call_id"] for line in anna] == ["c2", "c7"] and anna[0]["started_at"].startswith("2026-03-23T10:00")
    assert [c["call_id"] for c in unknown["calls"]] == ["c10"]


async def test_the_reports_are_in_the_openapi_description(reports_server):
    async with await reports_server.client() as anonymous:
        async with anonymous.get("/api/v1/openapi.json") as response:
            document = await response.json()
    report = document["paths"]["/api/v1/reports/{dimension}"]["get"]
    calls_behind = document["paths"]["/api/v1/reports/{dimension}/calls"]["get"]
    assert "supervisor" in report["description"] and "403" in report["responses"]
    names = {p["name"]: p for p in report["parameters"]}
    assert {"dimension", "period", "date", "from", "to", "bucket", "line", "queue", "segment", "format"} <= set(names)
    assert names["dimension"]["in"] == "path" and "intent" in names["dimension"]["schema"]["enum"]
    assert {"key", "cell", "limit", "offset"} <= {p["name"] for p in calls_behind["parameters"]}


BAD = [
    ("/api/v1/reports/segment", {"period": "custom", "from": "2026-03-01"}, "a custom period needs from and to"),
    ("/api/v1/reports/segment", {"period": "custom", "from": "2026-03-09", "to": "2026-03-02"},
     "to (2026-03-02) must come after from (2026-03-09)"),
    ("/api/v1/reports/segment", {"period": "week", "from": "2026-03-01"}, "from and to go with the custom period"),
    ("/api/v1/reports/segment", {"date": "2026-02-30"}, "date:"),
    ("/api/v1/reports/colour", {}, "dimension:"),
    ("/api/v1/reports/segment", {"period": "year"}, "period:"),
    ("/api/v1/reports/segment", {"period": "custom", "from": "2024-01-01", "to": "2026-01-01",
                                 "bucket": "hour"}, "hourly buckets cover at most 31 days"),
    ("/api/v1/reports/segment", {"segment": "Z"}, "segment:"),
    ("/api/v1/reports/segment", {"format": "xml"}, "format:"),
    ("/api/v1/reports/segment", {"colour": "red"}, "unknown field `colour`"),
    ("/api/v1/reports/segment/calls", {}, "key: the row's value"),
    ("/api/v1/reports/agent/calls", {"key": "anna"}, "key: an agent's id, got 'anna'"),
    ("/api/v1/reports/agent/calls", {"key": "²"}, "key: an agent's id, got '²'"),
    ("/api/v1/reports/agent/calls", {"key": "99999999999"}, "key: an agent's id, got '99999999999'"),
    ("/api/v1/reports/total/calls", {**WEEK, "cell": 7}, "bucket index: 0..6"),
    ("/api/v1/reports/total/calls", {"limit": 0}, "limit:"),
]


async def test_bad_input_is_a_400_that_says_what_is_wrong(reports_server):
    wrong = []
    async with await reports_server.client("sup") as sup:
        for path, params, message in BAD:
            async with sup.get(path, params=params) as response:
                error = (await response.json()).get("error", "")
                if response.status != 400 or message not in error:
                    wrong.append((path, params, response.status, error))
    assert wrong == []


async def test_an_agent_is_refused_the_reports_and_their_page(reports_server):
    async with await reports_server.client("anna") as anna, await reports_server.client() as anonymous:
        for path in ("/api/v1/reports/segment", "/api/v1/reports/segment/calls?key=A"):
            async with anna.get(path) as response:
                assert response.status == 403
                assert (await response.json())["error"] == "this needs the supervisor role"
            async with anonymous.get(path) as response:
                assert response.status == 401
        async with anna.get("/reports", allow_redirects=False) as page, \
                anna.get("/wallboard", allow_redirects=False) as wallboard:
            assert page.status == wallboard.status == 403
            assert await page.text() == await wallboard.text()
        async with anonymous.get("/reports", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/login?next=/reports"
