"""`ivr report` on the hand-counted week of tests/queues/test_reports.py (Europe/London, 23-29 March 2026):
the table, --csv and --json, and the mistakes it explains."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest

from caller_id.store import Database
from ivr.cli import main
from tests.queues.test_reports import fill


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A configuration with the week in its own SQLite file."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"

    async def go() -> None:
        db = Database(url)
        try:
            await db.migrate()
            await fill(db)
        finally:
            await db.dispose()

    asyncio.run(go())
    config = tmp_path / "ivr.yaml"
    config.write_text(f"timezone: Europe/London\ndatabase_url: {url}\nreports:\n  repeat_call_days: 3\n",
                      encoding="utf-8")
    monkeypatch.setenv("IVR_CONFIG", str(config))
    return config


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["report", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_table_csv_and_json_of_the_week(site, capsys):
    status, out, _ = run(capsys, "--period", "week", "--date", "2026-03-25")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("week 2026-03-23 .. 2026-03-30 (not included), Europe/London; SL within 20 s")
    assert lines[1].split()[:4] == ["segment", "calls", "self-served", "to"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert list(rows) == ["A", "B", "C", "(none)", "total"]
    assert rows["total"][:5] == ["11", "18%", "7", "29%", "50%"]  # calls, contained, offered, abandoned, SL
    assert rows["B"][-3:] == ["-100", "-", "-"]  # NPS, nothing confirmed

    status, out, _ = run(capsys, "--by", "agent", "--from", "2026-03-23", "--to", "2026-03-30", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    whole = {line["label"]: line for line in table if line["bucket"] == ""}
    assert status == 0 and set(whole) == {"Anna", "Boris", "", "total"}
    assert (whole["Anna"]["answered"], whole["Anna"]["aht"], whole["Boris"]["key"]) == ("2", "100.0", "2")
    assert len(table) == 4 * 8  # custom 7 days: day buckets

    status, out, _ = run(capsys, "--by", "total", "--period", "day", "--date", "2026-03-29", "--json")
    data = json.loads(out)
    assert status == 0 and data["bucket"] == "hour" and data["rows"] == []
    hours = {b["label"]: s["calls"] for b, s in zip(data["buckets"], data["total"]["buckets"]) if s["calls"]}
    assert hours == {"2026-03-29T00:00": 1, "2026-03-29T23:00": 1}


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-03-23"], "a custom period needs from and to"),
    (["--from", "2026-03-23", "--to", "2026-03-30", "--period", "week"], "--from and --to make a period of"),
    (["--from", "2026-02-01", "--to", "2026-03-20", "--bucket", "hour"], "hourly buckets cover at most 31 days"),
])
def test_a_period_that_makes_no_report_is_explained(site, capsys, args, message):
    status, out, err = run(capsys, *args)
    assert status == 2 and out == "" and message in err


def test_a_day_that_is_no_day_is_refused_by_the_parser(site, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["report", "--date", "2026-02-30"])
    assert exited.value.code == 2
    assert "expected a day as YYYY-MM-DD, got '2026-02-30'" in capsys.readouterr().err
