"""Demo data: deterministic, covering every role combination, segment and case state."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict

import phonenumbers
import pytest
from sqlalchemy import func, select

from caller_id import seed as seed_module
from caller_id.models import Agent, Case, Customer, NumberRole, Organisation, PhoneNumber
from caller_id.seed import SHOWCASE, SeedError, seed
from caller_id.store import Database

CYRILLIC_NAME = re.compile(r"[А-ЯЁ][а-яё]+(-[А-ЯЁ][а-яё]+)? [А-ЯЁ][а-яё]+ [А-ЯЁ][а-яё]+")
LATIN_NAME = re.compile(r"[A-Z][a-zü]+ [A-Z][a-zü]+")
STATUSES = {"new", "in_progress", "waiting_customer", "ready", "overdue", "escalated", "resolved", "closed"}
PRODUCTS = {"card", "loan", "deposit", "account", "mortgage", "insurance", "b2b_contract"}


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive UTC datetimes, PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


async def _all(db: Database, query) -> list:
    async with db.session() as session:
        return list((await session.execute(query)).all())


async def _role_combinations(db: Database) -> dict[str, set[str]]:
    """Numbers by the combination of roles they play."""
    rows = await _all(db, select(PhoneNumber.e164, NumberRole.customer_id, NumberRole.kind, NumberRole.organisation_id)
                      .join(NumberRole, NumberRole.number_id == PhoneNumber.id))
    roles: dict[str, list[tuple]] = defaultdict(list)
    for e164, customer, kind, organisation in rows:
        roles[e164].append((customer, kind, organisation))
    found: dict[str, set[str]] = defaultdict(set)
    for e164, items in roles.items():
        kinds = sorted(kind for _, kind, _ in items)
        customers = {customer for customer, _, _ in items}
        if len(customers) > 1:
            found["shared by two customers"].add(e164)
        elif kinds == ["employee", "employee"] and len({org for _, _, org in items}) == 2:
            found["employee of two organisations"].add(e164)
        else:
            found["+".join(kinds)].add(e164)
    return found


async def test_seed_covers_every_role_combination_segment_status_and_product(migrated_db):
    summary = await seed(migrated_db, 2000)

    assert summary.customers == 2000
    assert summary.agents == 10
    for model, count in ((Agent, summary.agents), (Organisation, summary.organisations),
                         (Customer, summary.customers), (PhoneNumber, summary.phone_numbers),
                         (NumberRole, summary.number_roles), (Case, summary.cases)):
        assert (await _all(migrated_db, select(func.count()).select_from(model)))[0][0] == count
    combinations = await _role_combinations(migrated_db)
    for combination in ("private", "employee", "director", "employee+private", "director+private",
                        "employee of two organisations", "shared by two customers"):
        assert combinations[combination], f"no number is {combination}"
    segments = dict(await _all(migrated_db, select(Customer.segment, func.count()).group_by(Customer.segment)))
    assert set(segments) == {"A", "B", "C", "D"}
    assert segments["C"] > segments["B"] > segments["A"]
    org_segments = {s for (s,) in await _all(migrated_db, select(Organisation.segment).distinct())}
    assert org_segments == {"A", "B", "C", "D"}
    vips = (await _all(migrated_db, select(func.count()).where(Customer.is_vip)))[0][0]
    assert 0 < vips < 0.1 * summary.customers
    statuses = {s for (s,) in await _all(migrated_db, select(Case.status).distinct())}
    assert statuses == STATUSES
    products = {p for (p,) in await _all(migrated_db, select(Case.product).distinct())}
    assert products == PRODUCTS
    priorities = {p for (p,) in await _all(migrated_db, select(Case.priority).distinct())}
    assert priorities == {1, 2, 3, 4, 5}
    assert await migrated_db.crm_version() == 1


async def test_seeded_numbers_are_valid_e164_from_russia_and_abroad(migrated_db):
    await seed(migrated_db, 2000)
    numbers = [n for (n,) in await _all(migrated_db, select(PhoneNumber.e164))]
    invalid = [n for n in numbers if not phonenumbers.is_valid_number(phonenumbers.parse(n))]
    assert invalid == []
    mobiles = sum(n.startswith("+79") for n in numbers)
    assert mobiles > 0.8 * len(numbers)
    for prefix in ("+7495", "+44", "+49", "+1", "+380"):
        assert any(n.startswith(prefix) for n in numbers), prefix


async def test_seeded_people_have_names_languages_and_managers_that_fit(migrated_db):
    await seed(migrated_db, 2000)
    customers = await _all(migrated_db, select(Customer.name, Customer.language, Customer.segment,
                                               Agent.is_manager).outerjoin(Agent, Agent.id == Customer.manager_id))
    for name, language, segment, managed_by_manager in customers:
        assert (LATIN_NAME if language == "en" else CYRILLIC_NAME).fullmatch(name), name
        if segment in "AB":
            assert managed_by_manager, f"{segment} customer without a personal manager"
    assert {language for _, language, _, _ in customers} == {"ru", "en"}
    interfaces = [i for (i,) in await _all(migrated_db, select(Agent.interface).order_by(Agent.id))]
    assert interfaces == [f"PJSIP/{1001 + i}" for i in range(10)]
    inns = [inn for (inn,) in await _all(migrated_db, select(Organisation.inn))]
    assert all(len(inn) in (10, 12) and inn.isdigit() for inn in inns)


async def test_case_facts_match_their_status(migrated_db):
    await seed(migrated_db, 2000)
    now = dt.datetime.now(dt.timezone.utc)
    cases = await _all(migrated_db, select(Case.status, Case.due_at, Case.customer_owes_next_step, Case.facts,
                                           Case.opened_at, Case.updated_at))
    for status, due_at, owes, facts, opened_at, updated_at in cases:
        due_at, opened_at, updated_at = _utc(due_at), _utc(opened_at), _utc(updated_at)
        assert opened_at <= updated_at <= now
        assert owes == (status == "waiting_customer")
        if status == "waiting_customer":
            assert facts["missing_documents"] and all(isinstance(d, str) for d in facts["missing_documents"])
        if status == "ready":
            assert dt.date.fromisoformat(facts["ready_date"]) <= now.date() and facts["branch"]
        if status == "overdue":
            assert due_at < now and facts["promised_date"]
        if status in ("new", "in_progress", "waiting_customer", "ready", "escalated"):
            assert due_at > now


async def test_same_seed_gives_the_same_data_and_another_seed_other_data(tmp_path):
    async def people(name: str, value: int) -> list:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / name}")
        try:
            await db.migrate()
            await seed(db, 300, seed=value)
            return await _all(db, select(Customer.name, PhoneNumber.e164, NumberRole.kind)
                              .join(NumberRole, NumberRole.customer_id == Customer.id)
                              .join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
                              .order_by(NumberRole.id))
        finally:
            await db.dispose()

    first, again, other = await people("a.sqlite3", 1), await people("b.sqlite3", 1), await people("c.sqlite3", 2)
    assert first == again
    showcase = {entry["number"] for entry in SHOWCASE}
    generated = [row for row in first if row[1] not in showcase]
    generated_other = [row for row in other if row[1] not in showcase]
    assert len(generated) > 250
    assert {row[1] for row in generated}.isdisjoint({row[1] for row in generated_other})
    assert [row[0] for row in generated] != [row[0] for row in generated_other]


async def test_showcase_numbers_tell_what_their_description_says(sqlite_db):
    await seed(sqlite_db, 0)
    numbers = {n for (n,) in await _all(sqlite_db, select(PhoneNumber.e164))}
    assert {entry["number"] for entry in SHOWCASE} <= numbers
    assert len(SHOWCASE) >= 20

    async def customers_of(number: str) -> list:
        return await _all(sqlite_db, select(Customer, NumberRole.kind)
                          .join(NumberRole, NumberRole.customer_id == Customer.id)
                          .join(PhoneNumber, PhoneNumber.id == NumberRole.number_id)
                          .where(PhoneNumber.e164 == number))

    [(vip, _)] = await customers_of("+79000000001")
    assert vip.is_vip and vip.segment == "A" and vip.manager_id is not None
    [card] = [c for (c,) in await _all(sqlite_db, select(Case).where(Case.customer_id == vip.id,
                                                                     Case.product == "card"))]
    assert card.status == "overdue" and _utc(card.due_at) < dt.datetime.now(dt.timezone.utc)
    director = await customers_of("+79000000005")
    assert sorted(kind for _, kind in director) == ["director", "employee", "private"]
    assert len({c.id for c, _ in await customers_of("+74950000010")}) == 2
    [(english, _)] = await customers_of("+442079460123")
    assert english.language == "en"
    [(waiting, _)] = await customers_of("+79000000002")
    [loan] = [c for (c,) in await _all(sqlite_db, select(Case).where(Case.customer_id == waiting.id))]
    assert waiting.segment == "C" and loan.customer_owes_next_step and loan.facts["missing_documents"]


async def test_seeding_a_seeded_database_is_refused_and_changes_nothing(sqlite_db):
    first = await seed(sqlite_db, 100)
    with pytest.raises(SeedError, match="already holds CRM data"):
        await seed(sqlite_db, 100)
    assert (await _all(sqlite_db, select(func.count()).select_from(Customer)))[0][0] == first.customers
    assert await sqlite_db.crm_version() == 1


async def test_seed_in_several_batches_keeps_references_and_later_inserts_work(migrated_db, monkeypatch):
    monkeypatch.setattr(seed_module, "BATCH_CUSTOMERS", 250)
    summary = await seed(migrated_db, 1000, progress=True)
    assert summary.customers == 1000
    orphans = await _all(migrated_db, select(func.count()).select_from(NumberRole)
                         .outerjoin(Customer, Customer.id == NumberRole.customer_id).where(Customer.id.is_(None)))
    assert orphans[0][0] == 0
    # ids were given explicitly; new rows must still get fresh ones (PostgreSQL sequences)
    async with migrated_db.session() as session:
        added = Customer(name="Новый Клиент Иванович", segment="C")
        session.add(added)
        await session.commit()
    assert added.id == 1001
