"""SqlSource against real migrated databases: SQLite and PostgreSQL."""

import datetime as dt
from dataclasses import dataclass

import pytest
from sqlalchemy import event

from caller_id import models as m
from caller_id.lookup import SqlSource
from caller_id.profile import ROLE_DIRECTOR, ROLE_EMPLOYEE, ROLE_PRIVATE, CallerProfile

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

IVAN = "+79161234567"  # private, director of a VIP company, employee of another
OFFICE = "+74951234567"  # one line shared by two employees
MARIA = "+79031112233"  # private only, VIP, English


def ago(days: float = 0, hours: float = 0) -> dt.datetime:
    return NOW - dt.timedelta(days=days, hours=hours)


@dataclass
class Crm:
    anna: m.Agent
    boris: m.Agent
    romashka: m.Organisation
    vasilek: m.Organisation
    ivan: m.Customer
    petr: m.Customer
    olga: m.Customer
    maria: m.Customer
    cases: dict


async def seed(db) -> Crm:
    async with db.session() as s:
        anna = m.Agent(name="Anna", interface="PJSIP/1001", is_manager=True)
        boris = m.Agent(name="Boris", interface="PJSIP/1002", is_manager=True)
        s.add_all([anna, boris])
        await s.flush()
        romashka = m.Organisation(name="Romashka", inn="7701000001", segment="A", is_vip=True, manager_id=boris.id)
        vasilek = m.Organisation(name="Vasilek", inn="7701000002", segment="C")
        ivan = m.Customer(name="Ivan", segment="B", manager_id=anna.id)
        petr = m.Customer(name="Petr", segment="D")
        olga = m.Customer(name="Olga", segment="C", is_vip=True)
        maria = m.Customer(name="Maria", segment="A", is_vip=True, language="en")
        s.add_all([romashka, vasilek, ivan, petr, olga, maria])
        await s.flush()
        ivan_no, office_no, maria_no = (m.PhoneNumber(e164=n) for n in (IVAN, OFFICE, MARIA))
        s.add_all([ivan_no, office_no, maria_no])
        await s.flush()
        s.add_all([
            m.NumberRole(number_id=ivan_no.id, customer_id=ivan.id, kind=ROLE_PRIVATE),
            m.NumberRole(number_id=ivan_no.id, customer_id=ivan.id, kind=ROLE_DIRECTOR, organisation_id=romashka.id),
            m.NumberRole(number_id=ivan_no.id, customer_id=ivan.id, kind=ROLE_EMPLOYEE, organisation_id=vasilek.id),
            m.NumberRole(number_id=office_no.id, customer_id=petr.id, kind=ROLE_EMPLOYEE, organisation_id=vasilek.id),
            m.NumberRole(number_id=office_no.id, customer_id=olga.id, kind=ROLE_EMPLOYEE, organisation_id=vasilek.id),
            m.NumberRole(number_id=maria_no.id, customer_id=maria.id, kind=ROLE_PRIVATE),
        ])
        cases = {
            "card_open": m.Case(customer_id=ivan.id, product="card", title="Card reissue", status="in_progress",
                                priority=2, opened_at=ago(5), updated_at=ago(1), due_at=ago(-3),
                                facts={"ready_date": "2026-12-03", "branch": "Tverskaya"}),
            "romashka_open": m.Case(customer_id=ivan.id, organisation_id=romashka.id, product="payroll",
                                    title="Payroll upload", status="new", priority=1,
                                    opened_at=ago(2), updated_at=ago(2), customer_owes_next_step=True),
            "closed_recently": m.Case(customer_id=ivan.id, product="loan", title="Loan statement",
                                      status="closed", opened_at=ago(20), updated_at=ago(10)),
            "cancelled_recently": m.Case(customer_id=ivan.id, product="deposit", title="Deposit",
                                         status="cancelled", opened_at=ago(40), updated_at=ago(29)),
            "closed_long_ago": m.Case(customer_id=ivan.id, product="loan", title="Old loan",
                                      status="closed", opened_at=ago(90), updated_at=ago(40)),
            "resolved_long_ago": m.Case(customer_id=ivan.id, product="card", title="Old card",
                                        status="resolved", opened_at=ago(60), updated_at=ago(31)),
            "old_but_open": m.Case(customer_id=ivan.id, product="mortgage", title="Mortgage",
                                   status="waiting_customer", opened_at=ago(200), updated_at=ago(100)),
            "petr_open": m.Case(customer_id=petr.id, organisation_id=vasilek.id, product="acquiring",
                                title="Terminal", status="new", opened_at=ago(1), updated_at=ago(1)),
        }
        s.add_all(cases.values())
        calls = [
            m.CallRecord(call_id=f"ivan-{i}", number=IVAN, customer_id=ivan.id, line="retail",
                         queue="support", predicted_intent="card_status",
                         actual_intent="card_status" if i % 2 else None, started_at=ago(days=i + 1))
            for i in range(7)
        ]
        calls += [
            m.CallRecord(call_id="ivan-old", number=IVAN, customer_id=ivan.id, started_at=ago(40)),
            # From Ivan's number while the lookup failed: still his recent call.
            m.CallRecord(call_id="ivan-anon", number=IVAN, customer_id=None, started_at=ago(hours=2),
                         self_served=True, actual_intent="balance"),
            m.CallRecord(call_id="maria-1", number=MARIA, customer_id=maria.id, started_at=ago(hours=1)),
        ]
        s.add_all(calls)
        await s.commit()
        return Crm(anna, boris, romashka, vasilek, ivan, petr, olga, maria, cases)


@pytest.fixture
async def crm(migrated_db):
    return await seed(migrated_db)


def sql(db, **options) -> SqlSource:
    return SqlSource(db, clock=lambda: NOW, **options)


async def test_number_not_in_crm_gives_none(migrated_db, crm):
    assert await sql(migrated_db).lookup("+79990000000") is None


async def test_private_director_and_employee_roles_of_one_number(migrated_db, crm):
    profile = await sql(migrated_db).lookup(IVAN)

    assert profile.number == IVAN
    assert [c.id for c in profile.customers] == [crm.ivan.id]
    ivan = profile.customers[0]
    assert (ivan.name, ivan.segment, ivan.is_vip, ivan.language) == ("Ivan", "B", False, "ru")
    assert (ivan.manager.name, ivan.manager.interface) == ("Anna", "PJSIP/1001")

    labels = [(r.kind, r.customer_id, r.organisation.name if r.organisation else None) for r in profile.roles]
    assert labels == [
        (ROLE_PRIVATE, crm.ivan.id, None),
        (ROLE_DIRECTOR, crm.ivan.id, "Romashka"),
        (ROLE_EMPLOYEE, crm.ivan.id, "Vasilek"),
    ]
    private, director, employee = profile.roles
    assert director.organisation.segment == "A" and director.organisation.is_vip
    assert director.organisation.manager.interface == "PJSIP/1002"
    assert employee.organisation.segment == "C" and not employee.organisation.is_vip
    assert employee.organisation.manager is None

    as_director = profile.view(director)
    assert (as_director.segment, as_director.is_vip, as_director.manager.name) == ("A", True, "Boris")
    assert [c.title for c in as_director.cases] == ["Payroll upload"]
    as_private = profile.view(private)
    assert (as_private.segment, as_private.is_vip, as_private.manager.name) == ("B", False, "Anna")
    assert "Payroll upload" not in [c.title for c in as_private.cases]


async def test_shared_line_lists_every_employee(migrated_db, crm):
    profile = await sql(migrated_db).lookup(OFFICE)

    assert {c.name for c in profile.customers} == {"Petr", "Olga"}
    assert {(r.kind, r.customer_id, r.organisation.id) for r in profile.roles} == {
        (ROLE_EMPLOYEE, crm.petr.id, crm.vasilek.id),
        (ROLE_EMPLOYEE, crm.olga.id, crm.vasilek.id),
    }
    assert profile.customer(crm.petr.id).cases[0].title == "Terminal"
    assert profile.customer(crm.olga.id).cases == ()
    assert not profile.view().is_known  # two people: the IVR must ask who is calling


async def test_private_only_caller_without_manager(migrated_db, crm):
    view = (await sql(migrated_db).lookup(MARIA)).view()

    assert view.is_known and view.role.kind == ROLE_PRIVATE and view.organisation is None
    assert (view.segment, view.is_vip, view.language, view.manager) == ("A", True, "en", None)


async def test_cases_are_open_ones_and_those_closed_within_the_window(migrated_db, crm):
    profile = await sql(migrated_db).lookup(IVAN)
    titles = {c.title for c in profile.customers[0].cases}
    assert titles == {"Card reissue", "Payroll upload", "Loan statement", "Deposit", "Mortgage"}

    narrow = await sql(migrated_db, closed_case_days=5).lookup(IVAN)
    assert {c.title for c in narrow.customers[0].cases} == {"Card reissue", "Payroll upload", "Mortgage"}


async def test_case_fields_survive_the_lookup(migrated_db, crm):
    profile = await sql(migrated_db).lookup(IVAN)
    cases = {c.title: c for c in profile.customers[0].cases}

    card = cases["Card reissue"]
    assert card.id == crm.cases["card_open"].id
    assert (card.product, card.status, card.priority, card.is_open) == ("card", "in_progress", 2, True)
    assert card.facts == {"ready_date": "2026-12-03", "branch": "Tverskaya"}
    assert (card.opened_at, card.updated_at, card.due_at) == (ago(5), ago(1), ago(-3))
    assert card.organisation_id is None
    payroll = cases["Payroll upload"]
    assert payroll.organisation_id == crm.romashka.id and payroll.customer_owes_next_step
    assert not cases["Loan statement"].is_open
    assert all(c.opened_at.tzinfo is not None for c in cases.values())


async def test_recent_calls_are_the_last_five_within_the_window(migrated_db, crm):
    profile = await sql(migrated_db).lookup(IVAN)
    calls = profile.recent_calls

    assert [c.started_at for c in calls] == [ago(hours=2), ago(1), ago(2), ago(3), ago(4)]
    assert calls[0].self_served and calls[0].intent == "balance"
    assert [c.intent for c in calls[1:]] == ["card_status"] * 4  # actual, else predicted
    assert (calls[1].line, calls[1].queue) == ("retail", "support")

    fewer = await sql(migrated_db, recent_call_days=2.5, recent_call_limit=10).lookup(IVAN)
    assert [c.started_at for c in fewer.recent_calls] == [ago(hours=2), ago(1), ago(2)]


async def test_profile_survives_a_dict_round_trip(migrated_db, crm):
    profile = await sql(migrated_db).lookup(IVAN)
    assert CallerProfile.from_dict(profile.to_dict()) == profile


async def test_lookup_takes_three_queries_however_many_roles(migrated_db, crm):
    directory = sql(migrated_db)
    await directory.lookup(MARIA)  # the first connection runs its own set-up queries
    statements = []
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    # SQLite lookups run on a blocking engine of the same file.
    engine = migrated_db.blocking_engine() or migrated_db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", listener)
    try:
        await directory.lookup(IVAN)
        ivan_queries = len(statements)
        statements.clear()
        await directory.lookup(OFFICE)
        office_queries = len(statements)
        statements.clear()
        await directory.lookup("+79990000000")
        unknown_queries = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert (ivan_queries, office_queries, unknown_queries) == (3, 3, 1)


def test_negative_windows_are_refused(sqlite_db):
    with pytest.raises(ValueError, match="must not be negative"):
        SqlSource(sqlite_db, closed_case_days=-1)
