"""The seeded call history: deterministic, its stated shares, and the features the live path stores."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import shutil
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from caller_id import seed_history as history
from caller_id.catalogue import load_catalogue
from caller_id.directory import LookupResult
from caller_id.lookup import SqlSource
from caller_id.models import CallRecord, NumberRole, PhoneNumber
from caller_id.seed import seed
from caller_id.store import Database, as_utc
from ivr.call.context import CallContext
from ivr.call.decision import decide
from ivr.config import load_config
from queues.rules import load_rules

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "intents.yaml"
ZONE = "Europe/Moscow"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
CALLS = 4000


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(SHIPPED)


@pytest.fixture(scope="module")
def crm_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crm") / "crm.sqlite3"

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
            await seed(db, 400, seed=11)
        finally:
            await db.dispose()

    asyncio.run(go())
    return path


def with_history(crm_file: Path, target: Path, catalogue, calls: int, seed_value: int) -> list[CallRecord]:
    """A copy of the CRM with a history added; its records in call id order."""
    shutil.copy(crm_file, target)

    async def go() -> list[CallRecord]:
        db = Database(f"sqlite+aiosqlite:///{target}")
        try:
            summary = await history.seed_history(db, catalogue, calls, seed=seed_value, now=NOW, zone=ZONE)
            assert summary.calls == calls
            async with db.session() as session:
                return list((await session.scalars(select(CallRecord).order_by(CallRecord.call_id))).all())
        finally:
            await db.dispose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def records(crm_file, tmp_path_factory, catalogue) -> list[CallRecord]:
    return with_history(crm_file, tmp_path_factory.mktemp("history") / "h.sqlite3", catalogue, CALLS, 2)


@pytest.fixture(scope="module")
def history_file(records, tmp_path_factory) -> Path:
    return next(tmp_path_factory.getbasetemp().glob("history*/h.sqlite3"))


def row(record: CallRecord) -> tuple:
    return tuple(getattr(record, column.name) for column in CallRecord.__table__.columns if column.name != "id")


def test_the_same_seed_gives_the_same_history_and_another_seed_another(crm_file, tmp_path, catalogue):
    first = with_history(crm_file, tmp_path / "a.sqlite3", catalogue, 600, seed_value=4)
    again = with_history(crm_file, tmp_path / "b.sqlite3", catalogue, 600, seed_value=4)
    other = with_history(crm_file, tmp_path / "c.sqlite3", catalogue, 600, seed_value=5)
    assert [row(r) for r in first] == [row(r) for r in again]
    assert [row(r)[1:] for r in first] != [row(r)[1:] for r in other]


def test_the_stated_shares_of_the_process_hold(records):
    calls = len(records)
    confirmed = Counter(record.confirmed_by for record in records)
    assert abs(confirmed["caller"] / calls - history.CALLER_CONFIRMS) < 0.03
    assert abs(confirmed["agent"] / calls - history.AGENT_CONFIRMS) < 0.03
    assert all((record.actual_intent is None) == (record.confirmed_by is None) for record in records)
    unknown = sum(1 for record in records if record.customer_id is None) / calls
    assert 0.6 * history.UNKNOWN_SHARE < unknown < 1.4 * history.UNKNOWN_SHARE
    sure = [record for record in records if record.actual_intent]
    outside = sum(1 for record in sure if record.actual_intent not in
                  {name for name, _ in record.context["features"]["intents"]}) / len(sure)
    assert abs(outside - history.OUTSIDE_SHARE) < 0.015
    window = dt.timedelta(days=history.REPEAT_WINDOW_DAYS)
    last_call: dict[str, dt.datetime] = {}
    repeats = 0
    for record in sorted(records, key=lambda r: r.started_at):
        at = as_utc(record.started_at)
        repeats += record.number in last_call and at - last_call[record.number] <= window
        last_call[record.number] = at
    assert repeats / calls >= history.REPEAT_SHARE - 0.02
    assert all(record.predicted_intent == record.context["features"]["intents"][0][0] for record in records)
    assert all(record.self_served == (record.result == "self_served") for record in records)


def test_the_true_reason_follows_what_the_process_says_and_the_rules_do_not(records, catalogue):
    """Quiet cases send callers to the fallback intent; the rules rank that last."""
    fallback = catalogue.fallback.name

    def quiet(record: CallRecord) -> int:
        return sum(1 for _, signals in record.context["features"]["intents"] if history.is_quiet(signals))

    sure = [record for record in records if record.actual_intent and record.customer_id is not None]
    def has_case(record: CallRecord) -> bool:
        return any("case_priority" in signals for _, signals in record.context["features"]["intents"])

    loud = [record for record in sure if quiet(record) == 0 and has_case(record)]
    calm = [record for record in sure if quiet(record) >= 2]
    share = lambda group: sum(1 for r in group if r.actual_intent == fallback) / len(group)  # noqa: E731
    assert len(calm) > 100 and len(loud) > 100
    assert share(calm) > share(loud) + 0.2, (share(calm), share(loud))
    assert sum(1 for record in calm if record.predicted_intent == fallback) < 0.1 * len(calm)


def test_the_stored_features_are_what_the_live_call_path_stores_for_that_caller_at_that_time(
        records, history_file, catalogue):
    """The last call of numbers that alone belong to one customer, replayed through the real lookup
    (the CRM seen at the call's time) and `decide`, stores the same features and guesses."""
    config = load_config(None, environ={})
    rules = load_rules(config.rules_file, lines=[line.name for line in config.lines], intents=catalogue.names)
    zone = ZoneInfo(ZONE)

    async def go() -> int:
        db = Database(f"sqlite+aiosqlite:///{history_file}")
        source = SqlSource(db, recent_call_limit=0, clock=lambda: NOW)  # the CRM as seeded
        moment = [NOW]  # the calls as the lookup at the call's time reads them (and the call itself)
        calls = SqlSource(db, recent_call_limit=history.RECENT_CALL_LIMIT + 1, clock=lambda: moment[0])
        try:
            async with db.session() as session:
                single = (select(NumberRole.customer_id).group_by(NumberRole.customer_id)
                          .having(func.count(NumberRole.id) == 1))
                numbers = set((await session.scalars(
                    select(PhoneNumber.e164).join(NumberRole, NumberRole.number_id == PhoneNumber.id)
                    .where(NumberRole.customer_id.in_(single)))).all())
            last: dict[str, CallRecord] = {}
            for record in records:
                if record.number in numbers and (record.number not in last
                                                 or record.started_at > last[record.number].started_at):
                    last[record.number] = record
            replayed = 0
            for number, record in sorted(last.items())[:60]:
                at = moment[0] = as_utc(record.started_at)
                profile = await source.lookup(number)
                earlier = tuple(call for call in (await calls.lookup(number)).recent_calls if call.started_at < at)
                seen = history.as_of(profile, at, earlier[:history.RECENT_CALL_LIMIT])
                role = next(r for r in seen.roles if r.kind == record.role_kind and
                            (r.organisation.id if r.organisation else None) == record.organisation_id)
                decision = decide(LookupResult(number, seen, "crm"), config.line_for(record.line),
                                  catalogue=catalogue, rules=rules, now=at.astimezone(zone), role=role)
                context = CallContext(call_id="replay", line=record.line, decision=decision.part())
                assert context.for_record()["features"] == record.context["features"], number
                assert [i.intent for i in decision.intents[:3]] == [
                    name for name in (record.predicted_intent, record.predicted_intent_2,
                                      record.predicted_intent_3) if name]
                assert decision.intents[0].score == record.predicted_score
                replayed += 1
            return replayed
        finally:
            source.close()
            calls.close()
            await db.dispose()

    assert asyncio.run(go()) >= 30


def test_as_of_shows_only_the_cases_opened_by_then_as_they_were_updated_by_then():
    from caller_id.profile import Case, CallerProfile, Customer

    opened = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    case = Case(id=1, product="card", title="t", status="new", priority=3, opened_at=opened,
                updated_at=opened + dt.timedelta(days=21))
    later = dataclasses.replace(case, id=2, opened_at=opened + dt.timedelta(days=20))
    profile = CallerProfile(number="+79000000001", customers=(Customer(1, "n", "C", cases=(case, later)),))
    seen = history.as_of(profile, opened + dt.timedelta(days=10), ())
    (only,) = seen.customers[0].cases
    assert only.id == 1 and only.updated_at == opened + dt.timedelta(days=7)
    assert history.as_of(profile, opened + dt.timedelta(days=40), ()).customers[0].cases == (case, later)


async def test_the_history_is_written_and_read_back_for_training_on_either_database(migrated_db, catalogue):
    from caller_id.learning import load_examples

    await seed(migrated_db, 150, seed=12)
    summary = await history.seed_history(migrated_db, catalogue, 500, seed=12, now=NOW, zone=ZONE)
    assert summary.calls == 500
    async with migrated_db.session() as session:
        stored = list((await session.scalars(select(CallRecord))).all())
    confirmed = [record for record in stored if record.actual_intent]
    assert len(await load_examples(migrated_db, ZONE)) == len(confirmed)
    # A window in the contact center's zone selects by the stored UTC times.
    until = NOW.astimezone(ZoneInfo(ZONE)) - dt.timedelta(days=10)
    since = until - dt.timedelta(days=20)
    window = await load_examples(migrated_db, ZONE, since=since, until=until)
    assert len(window) == sum(1 for r in confirmed if since <= as_utc(r.started_at) < until) > 0
    assert all(since <= example.at < until and example.at.tzinfo is not None for example in window)
