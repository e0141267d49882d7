"""Deterministic demo data for the CRM: from a handful of callers to millions.

`await seed(db, customers)` fills an empty, migrated database with agents,
organisations, customers, their phone numbers and roles, and their cases.  The
same `seed` value gives the same people, numbers and cases (dates are relative
to the moment of seeding); another value gives other data.

The first customers are a hand-picked showcase (`SHOWCASE`: number and what
calling from it demonstrates) with fixed numbers; the rest are generated:

- agents: one per 200 customers, at least 10, interfaces ``PJSIP/1001``... ;
  about a third are managers (personal or key-account);
- customers: Russian names in Cyrillic ("Фамилия Имя Отчество", as in Russian
  documents) and about 3 % from abroad; those with +44, +49 and +1 numbers
  have Latin names ("Given Family") and language "en";
  segments A 3 %, B 12 %, C 50 %, D 35 %; VIP on a few percent (mostly A);
  every A/B customer has a personal manager;
- organisations: limited companies with a valid 10-digit INN and sole
  traders (ИП) with a 12-digit one; A/B organisations have a key-account manager;
- numbers in E.164: mostly Russian mobiles, Moscow and St Petersburg
  landlines, some British, German, US and Ukrainian numbers.  A number plays
  every combination of roles: private only, employee only, director only,
  private + employee, private + director, employee of two organisations, and a
  home number shared by two customers;
- cases: products card, loan, deposit, account, mortgage, insurance and
  b2b_contract (organisation cases), statuses new, in_progress,
  waiting_customer, ready, overdue, escalated, resolved, closed, priorities 1..5.

Case `facts` keys a self-service answer can use:

- ``ready_date`` (ISO date) and ``branch``: where and since when (status
  ready) or from when (new, in_progress) the thing waits for collection;
  ``product_name`` ("metal", "classic", "premium") on card cases;
- ``missing_documents`` (list of strings): what the customer still owes
  (status waiting_customer, with `customer_owes_next_step` true);
- ``promised_date`` (ISO date): the date promised and missed (status overdue);
- ``expected_date`` (ISO date): when an open case should be done;
- ``amount`` and ``currency``: loan, deposit, mortgage and contract sums;
- ``next_payment_date`` (ISO date) and ``payment_amount``: loans, mortgages;
  ``decision_date`` (ISO date): loan and mortgage applications;
- ``maturity_date`` (ISO date) and ``interest_rate`` (percent a year): deposits;
- ``claim_number`` and ``payout_date`` (ISO date): insurance claims;
- ``escalated_to``: escalated cases;
- ``resolution`` and ``resolved_date`` (ISO date): resolved and closed cases.

A call history over the seeded CRM (``ivr db seed --calls N``), whose real
reasons follow a process stated in its docstring so that the learned
prediction (`caller_id.learning`) has something measurable to learn, is
`caller_id.seed_history`: it reads these customers through the real lookup
and relies on the dates here being relative to the moment of seeding (a case
opened after a simulated call is not seen by it) and on `updated_at` being
opened + 0.7 x (seeding - opened), the rule it applies at each call's time.

Rows go in with Core bulk inserts, one transaction per batch of customers,
while the next batch is generated; ids are assigned here (on PostgreSQL the
id sequences are moved past them at the end).  A failure half-way leaves the
batches written so far: start again on a fresh database.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from caller_id.importer import inn_check_digits
from caller_id.models import Agent, Case, Customer, NumberRole, Organisation, PhoneNumber
from caller_id.store import Database, bump_crm_version

BATCH_CUSTOMERS = 10_000


class SeedError(RuntimeError):
    """Seeding was refused (the database is not empty)."""


@dataclass(frozen=True)
class SeedSummary:
    agents: int = 0
    organisations: int = 0
    customers: int = 0
    phone_numbers: int = 0
    number_roles: int = 0
    cases: int = 0


# --------------------------------------------------------------------------
# Vocabulary

_MALE_FIRST = (
    "Александр Алексей Андрей Антон Артём Борис Вадим Валерий Василий Виктор Владимир "
    "Владислав Геннадий Георгий Григорий Денис Дмитрий Евгений Егор Иван Игорь Илья Кирилл "
    "Константин Леонид Максим Михаил Никита Николай Олег Павел Пётр Роман Руслан Сергей "
    "Станислав Степан Тимофей Фёдор Юрий Ярослав"
).split()
_FEMALE_FIRST = (
    "Александра Алина Алла Анастасия Анна Валентина Валерия Вера Виктория Галина Дарья "
    "Евгения Екатерина Елена Елизавета Жанна Зоя Ирина Кристина Ксения Лариса Любовь "
    "Людмила Маргарита Марина Мария Надежда Наталья Нина Оксана Ольга Полина Светлана "
    "София Тамара Татьяна Ульяна Юлия"
).split()
_PATRONYMICS = tuple(
    (stem + male, stem + female)
    for stem, male, female in (
        ("Александров", "ич", "на"), ("Алексеев", "ич", "на"), ("Андреев", "ич", "на"),
        ("Анатольев", "ич", "на"), ("Борисов", "ич", "на"), ("Васильев", "ич", "на"),
        ("Викторов", "ич", "на"), ("Владимиров", "ич", "на"), ("Геннадьев", "ич", "на"),
        ("Дмитриев", "ич", "на"), ("Евгеньев", "ич", "на"), ("Иванов", "ич", "на"),
        ("Игорев", "ич", "на"), ("Михайлов", "ич", "на"), ("Николаев", "ич", "на"),
        ("Олегов", "ич", "на"), ("Павлов", "ич", "на"), ("Петров", "ич", "на"),
        ("Романов", "ич", "на"), ("Сергеев", "ич", "на"), ("Юрьев", "ич", "на"),
    )
)
_SURNAMES = (
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров "
    "Морозов Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов "
    "Андреев Макаров Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев Романов "
    "Воробьёв Сергеев Кузьмин Фролов Александров Дмитриев Королёв Гусев Киселёв Ильин "
    "Максимов Поляков Сорокин Виноградов Ковалёв Белов Медведев Антонов Тарасов Жуков "
    "Баранов Филиппов Комаров Давыдов Беляев Герасимов Богданов Осипов Сидоров Матвеев "
    "Титов Марков Миронов Крылов Куликов Карпов Власов Мельников Денисов Гаврилов Тихонов "
    "Казаков Афанасьев Данилов Савельев Тимофеев Фомин Чернов Абрамов Мартынов Ефимов "
    "Щербаков Назаров Калинин Исаев Быков Маслов Родионов Коновалов Лазарев Воронин "
    "Климов Филатов Пономарёв Голубев Кудрявцев Прохоров Наумов Потапов Журавлёв "
    "Трофимов Леонов Соболев Ермаков Колесников Гончаров Емельянов Никифоров Грачёв Котов "
    "Гришин Архипов Громов Кириллов Малышев Панов Румянцев Акимов Кондратьев Горбунов "
    "Островский Покровский Вишневский Шевченко Коваленко Бондаренко Черных Толстой"
).split()
_FEMININE_ENDINGS = (
    ("ский", "ская"), ("цкий", "цкая"), ("ой", "ая"), ("ов", "ова"), ("ёв", "ёва"),
    ("ев", "ева"), ("ин", "ина"), ("ын", "ына"),
)
_LATIN_FIRST = {
    "gb": "James Oliver Thomas Harry George Emily Olivia Sophie Charlotte Amelia".split(),
    "de": "Lukas Felix Jonas Maximilian Paul Anna Julia Lea Hannah Laura".split(),
    "us": "Michael David Robert Daniel Matthew Emma Sarah Jessica Ashley Madison".split(),
}
_LATIN_LAST = {
    "gb": "Smith Jones Taylor Brown Wilson Evans Walker Wright Clarke Hughes".split(),
    "de": "Müller Schmidt Schneider Fischer Weber Becker Wagner Hoffmann Schulz Koch".split(),
    "us": "Johnson Williams Miller Davis Garcia Rodriguez Martinez Anderson Carter Moore".split(),
}
_ORG_FIRST = (
    "Вектор Гранит Меридиан Альянс Восток Прогресс Лидер Сфера Орион Стандарт Импульс "
    "Капитал Горизонт Терра Атлант Полюс Сигма Квант Базис Феникс Монолит Ресурс Эталон Север"
).split()
_ORG_SECOND = (
    "Строй Торг Логистик Сервис Групп Трейд Инвест Агро Медиа Софт Маркет Транс Энерго "
    "Фарм Продукт Девелопмент Консалтинг Системс"
).split()
_AGENT_TEAMS = ("b2c",) * 6 + ("b2b",) * 3 + ("vip",)
_TAX_REGIONS = (77, 78, 50, 66, 16, 54, 23, 52, 63, 74)

_BRANCHES = (
    ("Тверская", "Tverskaya"), ("Арбат", "Arbat"), ("Мясницкая", "Myasnitskaya"),
    ("Кутузовский проспект", "Kutuzovsky Prospekt"), ("Таганская", "Taganskaya"),
    ("Невский проспект", "Nevsky Prospekt"), ("Пресня", "Presnya"),
)
# (product, weight, ((title ru, title en), ...), (missing documents ru, en))
_PRODUCTS = {
    "card": (
        (("Перевыпуск карты", "Card reissue"), ("Выпуск металлической карты", "Metal card issue"),
         ("Выпуск кредитной карты", "Credit card issue"),
         ("Оспаривание операции по карте", "Card transaction dispute"),
         ("Увеличение лимита по карте", "Card limit increase")),
        (("паспорт", "passport"), ("заявление на перевыпуск", "reissue application")),
    ),
    "loan": (
        (("Заявка на потребительский кредит", "Personal loan application"),
         ("Реструктуризация кредита", "Loan restructuring"),
         ("Досрочное погашение кредита", "Early loan repayment"),
         ("Справка о задолженности", "Loan balance statement")),
        (("справка о доходах 2-НДФЛ", "proof of income"),
         ("копия трудовой книжки", "employment record"), ("паспорт", "passport")),
    ),
    "deposit": (
        (("Открытие вклада", "Deposit opening"), ("Пролонгация вклада", "Deposit renewal"),
         ("Досрочное закрытие вклада", "Early deposit closure")),
        (("паспорт", "passport"), ("заявление на закрытие вклада", "closure application")),
    ),
    "account": (
        (("Открытие счёта", "Account opening"), ("Справка об остатке по счёту", "Account balance letter"),
         ("Закрытие счёта", "Account closure"), ("Смена тарифа обслуживания", "Service plan change")),
        (("анкета клиента", "customer questionnaire"), ("паспорт", "passport")),
    ),
    "mortgage": (
        (("Заявка на ипотеку", "Mortgage application"), ("Рефинансирование ипотеки", "Mortgage refinancing"),
         ("Снятие обременения по ипотеке", "Mortgage lien release")),
        (("отчёт об оценке квартиры", "property valuation report"),
         ("выписка из ЕГРН", "land registry extract"), ("справка о доходах 2-НДФЛ", "proof of income")),
    ),
    "insurance": (
        (("Страховой случай", "Insurance claim"), ("Оформление полиса страхования", "Insurance policy issue"),
         ("Возврат страховой премии", "Insurance premium refund")),
        (("справка из ГИБДД", "police report"), ("медицинское заключение", "medical report")),
    ),
    "b2b_contract": (
        (("Договор эквайринга", "Acquiring contract"), ("Зарплатный проект", "Payroll project"),
         ("Договор расчётно-кассового обслуживания", "Business account contract"),
         ("Кредитная линия для бизнеса", "Business credit line")),
        (("устав компании", "articles of association"),
         ("решение о назначении директора", "director appointment decision"),
         ("карточка с образцами подписей", "specimen signature card")),
    ),
}
_PRIVATE_PRODUCTS = (("card", 30), ("loan", 18), ("deposit", 14), ("account", 12), ("mortgage", 8), ("insurance", 10))
_ORG_PRODUCTS = (("b2b_contract", 60), ("account", 25), ("card", 15))
_STATUSES = (
    ("new", 10), ("in_progress", 22), ("waiting_customer", 12), ("ready", 10), ("overdue", 8),
    ("escalated", 4), ("resolved", 14), ("closed", 20),
)
_CASES_PER_CUSTOMER = ((0, 35), (1, 35), (2, 20), (3, 10))
_PRIORITIES = ((1, 5), (2, 15), (3, 50), (4, 20), (5, 10))
_SEGMENTS = (("A", 3), ("B", 12), ("C", 50), ("D", 35))
_ORG_SEGMENTS = (("A", 8), ("B", 22), ("C", 45), ("D", 25))
_VIP_CHANCE = {"A": 0.30, "B": 0.05, "C": 0.01, "D": 0.002}
_ORG_VIP_CHANCE = {"A": 0.25, "B": 0.04, "C": 0.005, "D": 0.0}
# How the numbers of a generated customer relate to organisations and others.
_ROLE_PATTERNS = (
    ("private", 70), ("employee", 7), ("director", 2), ("private+employee", 9),
    ("private+director", 3), ("employee_of_two", 2), ("shared_home", 5), ("private_two_numbers", 2),
)
_HOME_COUNTRIES = (("ru", 970), ("gb", 9), ("de", 7), ("us", 7), ("ua", 7))
_RESOLUTIONS = (("Вопрос решён", "Resolved"), ("Выполнено по заявлению", "Done as requested"))


def _feminine(surname: str) -> str:
    for ending, feminine in _FEMININE_ENDINGS:
        if surname.endswith(ending):
            return surname[: -len(ending)] + feminine
    return surname


def _inn(base: int, length: int) -> str:
    """A Russian tax id with valid check digit(s): 10 digits (companies) or 12 (sole traders)."""
    digits = f"{base:0{length - (1 if length == 10 else 2)}d}"
    return digits + inn_check_digits(digits)


class _Permutation:
    """A bijection of 0..size-1 that depends on a key: unique values without a set."""

    def __init__(self, size: int, key: str):
        rng = random.Random(key)
        self.size = size
        self.offset = rng.randrange(size)
        multiplier = rng.randrange(size // 3, size) | 1
        while math.gcd(multiplier, size) != 1:
            multiplier += 2
        self.multiplier = multiplier

    def __call__(self, index: int) -> int:
        return (self.multiplier * index + self.offset) % self.size


class _NumberSpace:
    """Numbers ``prefix`` + `digits` digits, from `low` up, each handed out once."""

    def __init__(self, seed: int, prefix: str, digits: int, low: int = 0, avoid: tuple[str, ...] = ()):
        self.prefix, self.digits, self.low, self.avoid = prefix, digits, low, avoid
        self.permute = _Permutation(10**digits - low, f"{seed}:{prefix}")
        self.next_index = 0

    def take(self, reserved: set[str]) -> str:
        while True:
            value = self.low + self.permute(self.next_index)
            self.next_index += 1
            number = f"{self.prefix}{value:0{self.digits}d}"
            if number not in reserved and not number.startswith(self.avoid):
                return number


class _NumberPlan:
    """Where the numbers of each kind of customer come from."""

    def __init__(self, seed: int):
        def space(*args: Any, **kwargs: Any) -> _NumberSpace:
            return _NumberSpace(seed, *args, **kwargs)

        self.ru_mobile = space("+79", 9, avoid=("+79300",))
        self.ru_landlines = (space("+7495", 7, 1_000_000), space("+7499", 7, 1_000_000), space("+7812", 7, 2_000_000))
        self.abroad = {
            "gb": (space("+4479", 8, avoid=("+447911",)), space("+44207", 7)),
            "de": (space("+49151", 8), space("+4930", 8, 20_000_000)),
            "us": (space("+1212", 7, 2_000_000), space("+1415", 7, 2_000_000)),
            "ua": (space("+38050", 7), space("+38067", 7), space("+38044", 7, 2_000_000)),
        }


def _weighted(choices: tuple[tuple[Any, int], ...]) -> Callable[[random.Random], Any]:
    """A picker of one value with the given relative weights."""
    values = [value for value, _ in choices]
    cumulative = list(itertools.accumulate(weight for _, weight in choices))
    total = cumulative[-1]

    def pick(rng: random.Random) -> Any:
        return values[bisect.bisect(cumulative, rng.random() * total)]

    return pick


_pick_segment = _weighted(_SEGMENTS)
_pick_org_segment = _weighted(_ORG_SEGMENTS)
_pick_pattern = _weighted(_ROLE_PATTERNS)
_pick_country = _weighted(_HOME_COUNTRIES)
_pick_case_count = _weighted(_CASES_PER_CUSTOMER)
_pick_private_product = _weighted(_PRIVATE_PRODUCTS)
_pick_org_product = _weighted(_ORG_PRODUCTS)
_pick_status = _weighted(_STATUSES)
_pick_priority = _weighted(_PRIORITIES)


# --------------------------------------------------------------------------
# Rows waiting to be written


class _Rows:
    """Rows of every table with their ids, assigned here, handed out in chunks."""

    TABLES = (
        ("agents", Agent), ("organisations", Organisation), ("customers", Customer),
        ("phone_numbers", PhoneNumber), ("number_roles", NumberRole), ("cases", Case),
    )

    def __init__(self, now: dt.datetime):
        self.now = now
        self.pending: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in self.TABLES}
        self.last_id: dict[str, int] = {name: 0 for name, _ in self.TABLES}
        self.number_ids: dict[str, int] = {}

    def _add(self, table: str, row: dict[str, Any]) -> int:
        row_id = self.last_id[table] = self.last_id[table] + 1
        row["id"] = row_id
        self.pending[table].append(row)
        return row_id

    def agent(self, name: str, extension: int, is_manager: bool, team: str) -> int:
        return self._add("agents", {
            "name": name, "interface": f"PJSIP/{extension}", "extension": str(extension),
            "is_manager": is_manager, "team": team,
        })

    def organisation(self, name: str, inn: str, segment: str, is_vip: bool, manager_id: int | None) -> int:
        return self._add("organisations", {
            "name": name, "inn": inn, "segment": segment, "is_vip": is_vip,
            "manager_id": manager_id, "updated_at": self.now,
        })

    def customer(self, name: str, segment: str, is_vip: bool, language: str, manager_id: int | None) -> int:
        return self._add("customers", {
            "external_id": f"C{self.last_id['customers'] + 1:07d}", "name": name, "segment": segment, "is_vip": is_vip,
            "language": language, "manager_id": manager_id, "updated_at": self.now,
        })

    def role(self, e164: str, customer_id: int, kind: str = "private", organisation_id: int | None = None) -> None:
        number_id = self.number_ids.get(e164)
        if number_id is None:
            number_id = self._add("phone_numbers", {"e164": e164})
            self.number_ids[e164] = number_id
        self._add("number_roles", {
            "number_id": number_id, "customer_id": customer_id, "kind": kind,
            "organisation_id": organisation_id,
        })

    def case(
        self, customer_id: int, product: str, title: str, status: str, priority: int, *,
        opened_days_ago: float, due_in_days: float | None, facts: dict[str, Any],
        organisation_id: int | None = None, owes: bool = False, notes: str | None = None,
    ) -> None:
        opened_at = self.now - dt.timedelta(days=opened_days_ago)
        self._add("cases", {
            "external_id": f"CASE-{self.last_id['cases'] + 1:08d}", "customer_id": customer_id,
            "organisation_id": organisation_id, "product": product, "title": title,
            "status": status, "priority": priority, "opened_at": opened_at,
            "updated_at": opened_at + (self.now - opened_at) * 0.7,
            "due_at": None if due_in_days is None else self.now + dt.timedelta(days=due_in_days),
            "customer_owes_next_step": owes, "facts": facts, "notes": notes,
        })

    def day(self, days_from_now: float) -> str:
        return (self.now + dt.timedelta(days=days_from_now)).date().isoformat()

    def take(self) -> dict[str, list[dict[str, Any]]]:
        """The rows added since the last call, in the order they must be written."""
        chunk, self.pending = self.pending, {name: [] for name, _ in self.TABLES}
        self.number_ids.clear()
        return chunk

    def summary(self) -> SeedSummary:
        return SeedSummary(**{f.name: self.last_id[f.name] for f in fields(SeedSummary)})


async def _write(db: Database, chunk: dict[str, list[dict[str, Any]]]) -> None:
    async with db.engine.begin() as conn:
        for name, model in _Rows.TABLES:
            if chunk[name]:
                await conn.execute(insert(model), chunk[name])


# --------------------------------------------------------------------------
# The showcase: fixed callers the README and the tests can quote

SHOWCASE: list[dict[str, str]] = [
    {"number": "+79000000001", "description": "VIP, segment A, personal manager; her card reissue is overdue"},
    {"number": "+79000000002", "description": "segment C; a loan application waits for his income documents"},
    {"number": "+79000000003", "description": "segment B; a metal card is ready at the Tverskaya branch"},
    {"number": "+442079460123", "description": "English speaker (language en); deposit opening in progress"},
    {"number": "+79000000005", "description": "one number, three roles: private client, director of VIP company "
                                              "«Северный ветер», employee of «Меридиан-Логистик»"},
    {"number": "+74950000106", "description": "office line of an employee of «Меридиан-Логистик» only; "
                                              "the company owes a signature card for its acquiring contract"},
    {"number": "+79000000007", "description": "director only, of «Кофейня на Покровке»; account documents ready"},
    {"number": "+79000000008", "description": "private client and employee of «Гранит-Строй»; new card request"},
    {"number": "+79000000009", "description": "accountant employed by two organisations"},
    {"number": "+74950000010", "description": "home landline shared by a married couple (two customers)"},
    {"number": "+79000000010", "description": "the husband's own mobile; his loan payment is due soon"},
    {"number": "+79000000011", "description": "the wife's own mobile; her insurance claim is in progress"},
    {"number": "+79000000012", "description": "segment D, no cases at all"},
    {"number": "+79000000013", "description": "segment B with a personal manager; mortgage refinancing in progress"},
    {"number": "+79000000014", "description": "segment C; an insurance claim opened yesterday (new)"},
    {"number": "+79000000015", "description": "segment C; only resolved and closed cases"},
    {"number": "+493012345678", "description": "German customer speaking English; card dispute escalated"},
    {"number": "+12125550147",
     "description": "US customer speaking English; loan application waits for proof of income"},
    {"number": "+380501234567", "description": "Ukrainian number, Russian-speaking customer; account statement ready"},
    {"number": "+79000000019", "description": "VIP, segment B; an escalated card transaction dispute, priority 1"},
    {"number": "+79000000020", "description": "segment A with four open cases: card, overdue loan, deposit, insurance"},
    {"number": "+79000000021",
     "description": "private client and director of «Гранит-Строй», whose account waits for documents"},
]
_SHOWCASE_INNS = ("7701000019", "7702000029", "7703000039", "5004000040")


def _showcase(rows: _Rows) -> None:
    """Agents 1-4, organisations 1-4 and the showcase customers with their cases."""
    anna = rows.agent("Анна Смирнова", 1001, True, "personal")
    dmitry = rows.agent("Дмитрий Орлов", 1002, True, "key-accounts")
    elena = rows.agent("Елена Кузнецова", 1003, True, "personal")
    rows.agent("Игорь Белов", 1004, False, "vip")

    north_wind = rows.organisation("ООО «Северный ветер»", _SHOWCASE_INNS[0], "A", True, dmitry)
    meridian = rows.organisation("АО «Меридиан-Логистик»", _SHOWCASE_INNS[1], "B", False, dmitry)
    coffee = rows.organisation("ООО «Кофейня на Покровке»", _SHOWCASE_INNS[2], "C", False, None)
    granite = rows.organisation("ООО «Гранит-Строй»", _SHOWCASE_INNS[3], "D", False, None)

    vip = rows.customer("Воронцова Ольга Сергеевна", "A", True, "ru", anna)
    rows.role("+79000000001", vip)
    rows.case(vip, "card", "Перевыпуск карты", "overdue", 1, opened_days_ago=21, due_in_days=-5,
              facts={"product_name": "premium", "promised_date": rows.day(-5), "branch": "Тверская"})
    rows.case(vip, "deposit", "Пролонгация вклада", "in_progress", 3, opened_days_ago=3, due_in_days=4,
              facts={"amount": 5_000_000, "currency": "RUB", "expected_date": rows.day(4),
                     "maturity_date": rows.day(4), "interest_rate": 16.0})

    docs = rows.customer("Кузьмин Павел Андреевич", "C", False, "ru", None)
    rows.role("+79000000002", docs)
    rows.case(docs, "loan", "Заявка на потребительский кредит", "waiting_customer", 3, opened_days_ago=6,
              due_in_days=8, owes=True,
              facts={"amount": 450_000, "currency": "RUB",
                     "missing_documents": ["справка о доходах 2-НДФЛ", "копия трудовой книжки"]})

    metal = rows.customer("Лебедева Анна Викторовна", "B", False, "ru", elena)
    rows.role("+79000000003", metal)
    rows.case(metal, "card", "Выпуск металлической карты", "ready", 3, opened_days_ago=10, due_in_days=5,
              facts={"product_name": "metal", "ready_date": rows.day(0), "branch": "Тверская"})

    english = rows.customer("James Carter", "C", False, "en", None)
    rows.role("+442079460123", english)
    rows.case(english, "deposit", "Deposit opening", "in_progress", 3, opened_days_ago=2, due_in_days=3,
              facts={"amount": 20_000, "currency": "GBP", "expected_date": rows.day(3),
                     "maturity_date": rows.day(368), "interest_rate": 4.5})

    director = rows.customer("Громов Андрей Николаевич", "B", False, "ru", elena)
    for kind, org in (("private", None), ("director", north_wind), ("employee", meridian)):
        rows.role("+79000000005", director, kind, org)
    rows.case(director, "mortgage", "Рефинансирование ипотеки", "in_progress", 3, opened_days_ago=12,
              due_in_days=10, facts={"amount": 7_800_000, "currency": "RUB", "expected_date": rows.day(10)})
    rows.case(director, "b2b_contract", "Договор эквайринга", "escalated", 2, opened_days_ago=30,
              due_in_days=2, organisation_id=north_wind,
              facts={"amount": 1_200_000, "currency": "RUB", "escalated_to": "отдел претензий"})
    rows.case(director, "account", "Смена тарифа обслуживания", "new", 4, opened_days_ago=1,
              due_in_days=5, organisation_id=meridian, facts={"expected_date": rows.day(5)})

    employee = rows.customer("Соколова Марина Игоревна", "C", False, "ru", None)
    rows.role("+74950000106", employee, "employee", meridian)
    rows.case(employee, "b2b_contract", "Договор эквайринга", "waiting_customer", 2, opened_days_ago=9,
              due_in_days=6, organisation_id=meridian, owes=True,
              facts={"missing_documents": ["карточка с образцами подписей"]})

    owner = rows.customer("Фролов Сергей Петрович", "C", False, "ru", None)
    rows.role("+79000000007", owner, "director", coffee)
    rows.case(owner, "account", "Справка об остатке по счёту", "ready", 4, opened_days_ago=4, due_in_days=1,
              organisation_id=coffee, facts={"ready_date": rows.day(0), "branch": "Мясницкая"})

    both = rows.customer("Новикова Екатерина Дмитриевна", "C", False, "ru", None)
    rows.role("+79000000008", both)
    rows.role("+79000000008", both, "employee", granite)
    rows.case(both, "card", "Выпуск кредитной карты", "new", 3, opened_days_ago=0.5, due_in_days=7,
              facts={"product_name": "classic", "expected_date": rows.day(7)})

    accountant = rows.customer("Зайцева Татьяна Олеговна", "C", False, "ru", None)
    rows.role("+79000000009", accountant, "employee", meridian)
    rows.role("+79000000009", accountant, "employee", coffee)
    rows.case(accountant, "b2b_contract", "Зарплатный проект", "in_progress", 3, opened_days_ago=14,
              due_in_days=9, organisation_id=coffee, facts={"expected_date": rows.day(9)})

    husband = rows.customer("Морозов Виктор Иванович", "C", False, "ru", None)
    wife = rows.customer("Морозова Людмила Петровна", "C", False, "ru", None)
    rows.role("+74950000010", husband)
    rows.role("+74950000010", wife)
    rows.role("+79000000010", husband)
    rows.role("+79000000011", wife)
    rows.case(husband, "loan", "Справка о задолженности", "resolved", 4, opened_days_ago=40, due_in_days=-30,
              facts={"next_payment_date": rows.day(3), "payment_amount": 18_500, "currency": "RUB",
                     "resolution": "Справка выдана", "resolved_date": rows.day(-31)})
    rows.case(wife, "insurance", "Страховой случай", "in_progress", 2, opened_days_ago=8, due_in_days=12,
              facts={"claim_number": "СС-2024-118204", "expected_date": rows.day(12),
                     "payout_date": rows.day(12)})

    nothing = rows.customer("Егоров Никита Алексеевич", "D", False, "ru", None)
    rows.role("+79000000012", nothing)

    mortgage = rows.customer("Киселёва Дарья Романовна", "B", False, "ru", elena)
    rows.role("+79000000013", mortgage)
    rows.case(mortgage, "mortgage", "Рефинансирование ипотеки", "in_progress", 2, opened_days_ago=15,
              due_in_days=6, facts={"amount": 6_300_000, "currency": "RUB", "expected_date": rows.day(6),
                                    "next_payment_date": rows.day(11), "payment_amount": 61_200})

    claim = rows.customer("Тарасов Илья Геннадьевич", "C", False, "ru", None)
    rows.role("+79000000014", claim)
    rows.case(claim, "insurance", "Страховой случай", "new", 2, opened_days_ago=1, due_in_days=14,
              facts={"claim_number": "СС-2024-120377", "expected_date": rows.day(14),
                     "payout_date": rows.day(14)})

    settled = rows.customer("Медведева Ирина Юрьевна", "C", False, "ru", None)
    rows.role("+79000000015", settled)
    rows.case(settled, "card", "Увеличение лимита по карте", "resolved", 4, opened_days_ago=20, due_in_days=-12,
              facts={"resolution": "Лимит увеличен", "resolved_date": rows.day(-13)})
    rows.case(settled, "account", "Закрытие счёта", "closed", 5, opened_days_ago=60, due_in_days=-45,
              facts={"resolution": "Счёт закрыт", "resolved_date": rows.day(-46)})

    german = rows.customer("Lukas Becker", "C", False, "en", None)
    rows.role("+493012345678", german)
    rows.case(german, "card", "Card transaction dispute", "escalated", 2, opened_days_ago=11, due_in_days=4,
              facts={"amount": 349, "currency": "EUR", "escalated_to": "disputes team"})

    american = rows.customer("Emily Johnson", "C", False, "en", None)
    rows.role("+12125550147", american)
    rows.case(american, "loan", "Personal loan application", "waiting_customer", 3, opened_days_ago=5,
              due_in_days=10, owes=True, facts={"amount": 15_000, "currency": "USD",
                                                "missing_documents": ["proof of income", "proof of address"]})

    kyiv = rows.customer("Шевченко Олег Васильевич", "C", False, "ru", None)
    rows.role("+380501234567", kyiv)
    rows.case(kyiv, "account", "Справка об остатке по счёту", "ready", 4, opened_days_ago=3, due_in_days=1,
              facts={"ready_date": rows.day(0), "branch": "Арбат"})

    vip_dispute = rows.customer("Белова Светлана Михайловна", "B", True, "ru", anna)
    rows.role("+79000000019", vip_dispute)
    rows.case(vip_dispute, "card", "Оспаривание операции по карте", "escalated", 1, opened_days_ago=9,
              due_in_days=1, facts={"amount": 84_900, "currency": "RUB", "escalated_to": "отдел претензий"})

    busy = rows.customer("Павлов Роман Евгеньевич", "A", False, "ru", anna)
    rows.role("+79000000020", busy)
    rows.case(busy, "card", "Перевыпуск карты", "in_progress", 3, opened_days_ago=4, due_in_days=3,
              facts={"product_name": "premium", "expected_date": rows.day(3), "ready_date": rows.day(3),
                     "branch": "Арбат"})
    rows.case(busy, "loan", "Реструктуризация кредита", "overdue", 2, opened_days_ago=35, due_in_days=-3,
              facts={"amount": 1_100_000, "currency": "RUB", "promised_date": rows.day(-3),
                     "next_payment_date": rows.day(5), "payment_amount": 42_000})
    rows.case(busy, "deposit", "Досрочное закрытие вклада", "ready", 3, opened_days_ago=6, due_in_days=1,
              facts={"amount": 2_000_000, "currency": "RUB", "ready_date": rows.day(0), "branch": "Арбат"})
    rows.case(busy, "insurance", "Оформление полиса страхования", "new", 4, opened_days_ago=0.2,
              due_in_days=10, facts={"expected_date": rows.day(10)})

    founder = rows.customer("Орлова Наталья Владимировна", "C", False, "ru", None)
    rows.role("+79000000021", founder)
    rows.role("+79000000021", founder, "director", granite)
    rows.case(founder, "deposit", "Открытие вклада", "closed", 5, opened_days_ago=90, due_in_days=-80,
              facts={"amount": 300_000, "currency": "RUB", "resolution": "Вклад открыт",
                     "resolved_date": rows.day(-80)})
    rows.case(founder, "account", "Открытие счёта", "waiting_customer", 3, opened_days_ago=7, due_in_days=5,
              organisation_id=granite, owes=True,
              facts={"missing_documents": ["устав компании", "решение о назначении директора"]})


# --------------------------------------------------------------------------
# Generated data


class _Generator:
    def __init__(self, rows: _Rows, seed: int, agents: int, reserved_numbers: set[str]):
        self.rows = rows
        self.seed = seed
        self.numbers = _NumberPlan(seed)
        self.reserved = reserved_numbers
        self.company_ids = _Permutation(10**7, f"{seed}:inn10")
        self.trader_ids = _Permutation(10**8, f"{seed}:inn12")
        self.next_company = 0
        self.next_trader = 0
        self.managers: list[int] = []
        self.agent_count = agents

    def agents(self) -> None:
        rng = random.Random(f"{self.seed}:agents")
        self.managers = [row["id"] for row in self.rows.pending["agents"] if row["is_manager"]]
        for i in range(self.rows.last_id["agents"], self.agent_count):
            male = rng.random() < 0.45
            surname = rng.choice(_SURNAMES)
            name = f"{rng.choice(_MALE_FIRST if male else _FEMALE_FIRST)} {surname if male else _feminine(surname)}"
            is_manager = i % 10 < 3
            team = ("personal", "key-accounts")[i % 2] if is_manager else rng.choice(_AGENT_TEAMS)
            agent_id = self.rows.agent(name, 1001 + i, is_manager, team)
            if is_manager:
                self.managers.append(agent_id)

    def _inn(self, sole_trader: bool) -> str:
        while True:
            if sole_trader:
                region = _TAX_REGIONS[self.next_trader % len(_TAX_REGIONS)]
                inn = _inn(region * 10**8 + self.trader_ids(self.next_trader), 12)
                self.next_trader += 1
            else:
                region = _TAX_REGIONS[self.next_company % len(_TAX_REGIONS)]
                inn = _inn(region * 10**7 + self.company_ids(self.next_company), 10)
                self.next_company += 1
            if inn not in _SHOWCASE_INNS:
                return inn

    def _person(self, rng: random.Random, country: str) -> tuple[str, str]:
        if country in _LATIN_FIRST:
            return f"{rng.choice(_LATIN_FIRST[country])} {rng.choice(_LATIN_LAST[country])}", "en"
        surname = rng.choice(_SURNAMES)
        if rng.random() < 0.5:
            return f"{surname} {rng.choice(_MALE_FIRST)} {rng.choice(_PATRONYMICS)[0]}", "ru"
        return f"{_feminine(surname)} {rng.choice(_FEMALE_FIRST)} {rng.choice(_PATRONYMICS)[1]}", "ru"

    def _organisation(self, rng: random.Random) -> int:
        segment = _pick_org_segment(rng)
        sole_trader = rng.random() < 0.12
        if sole_trader:
            name = "ИП " + self._person(rng, "ru")[0]
        else:
            form = rng.choice(("ООО",) * 8 + ("АО", "ПАО"))
            name = f"{form} «{rng.choice(_ORG_FIRST)}-{rng.choice(_ORG_SECOND)}»"
        manager = rng.choice(self.managers) if segment in "AB" else None
        return self.rows.organisation(
            name, self._inn(sole_trader), segment, rng.random() < _ORG_VIP_CHANCE[segment], manager
        )

    def _phone_number(self, rng: random.Random, country: str, landline: bool = False) -> str:
        if country == "ru":
            space = rng.choice(self.numbers.ru_landlines) if landline else self.numbers.ru_mobile
        else:
            spaces = self.numbers.abroad[country]
            space = spaces[-1] if landline else rng.choice(spaces[:-1])
        return space.take(self.reserved)

    def batch(self, batch_no: int, count: int) -> None:
        rng = random.Random(f"{self.seed}:batch:{batch_no}")
        orgs = [self._organisation(rng) for _ in range(max(2, count // 25))]
        free_orgs = orgs[:]
        rng.shuffle(free_orgs)
        previous: int | None = None
        for _ in range(count):
            country = _pick_country(rng)
            name, language = self._person(rng, country)
            segment = _pick_segment(rng)
            customer = self.rows.customer(
                name, segment, rng.random() < _VIP_CHANCE[segment], language,
                rng.choice(self.managers) if segment in "AB" else None,
            )
            pattern = _pick_pattern(rng)
            own = self._phone_number(rng, country)
            org_roles: list[tuple[str, int]] = []
            if pattern in ("director", "private+director"):
                org_roles.append(("director", free_orgs.pop() if free_orgs else rng.choice(orgs)))
            elif pattern in ("employee", "private+employee"):
                org_roles.append(("employee", rng.choice(orgs)))
            elif pattern == "employee_of_two":
                org_roles += [("employee", org) for org in rng.sample(orgs, 2)]
            if pattern in ("employee", "employee_of_two") and rng.random() < 0.5:
                own = self._phone_number(rng, country, landline=True)  # an office line
            if pattern not in ("employee", "director", "employee_of_two"):
                self.rows.role(own, customer)
            for kind, org in org_roles:
                self.rows.role(own, customer, kind, org)
            if pattern == "private_two_numbers":
                self.rows.role(self._phone_number(rng, country), customer)
            if pattern == "shared_home" and previous is not None:
                home = self._phone_number(rng, country, landline=True)
                self.rows.role(home, customer)
                self.rows.role(home, previous)
            self._cases(rng, customer, language, segment, org_roles)
            previous = customer

    def _cases(self, rng: random.Random, customer: int, language: str, segment: str,
               org_roles: list[tuple[str, int]]) -> None:
        lang = 1 if language == "en" else 0
        for _ in range(_pick_case_count(rng)):
            self._case(rng, customer, lang, segment, _pick_private_product(rng), None)
        for _, org in org_roles:
            if rng.random() < 0.4:
                self._case(rng, customer, lang, segment, _pick_org_product(rng), org)

    def _case(self, rng: random.Random, customer: int, lang: int, segment: str, product: str,
              organisation: int | None) -> None:
        titles, documents = _PRODUCTS[product]
        status = _pick_status(rng)
        priority = _pick_priority(rng)
        if status in ("overdue", "escalated") or segment == "A":
            priority = max(1, priority - 2)
        facts: dict[str, Any] = {}
        owes = False
        opened = rng.uniform(0.1, 60)
        if status == "overdue":
            due = -rng.uniform(1, 20)
            opened = -due + rng.uniform(3, 40)
            facts["promised_date"] = self.rows.day(due)
        elif status in ("resolved", "closed"):
            opened = rng.uniform(10, 180)
            due = -rng.uniform(1, opened - 1)
            facts["resolution"] = _RESOLUTIONS[rng.randrange(len(_RESOLUTIONS))][lang]
            facts["resolved_date"] = self.rows.day(due)
        else:
            due = rng.uniform(1, 30)
            facts["expected_date"] = self.rows.day(due)
        if status == "waiting_customer":
            owes = True
            count = rng.randint(1, min(2, len(documents)))
            facts["missing_documents"] = [doc[lang] for doc in rng.sample(documents, count)]
        elif status == "ready":
            facts["ready_date"] = self.rows.day(-rng.randint(0, 5))
            facts["branch"] = rng.choice(_BRANCHES)[lang]
        elif status == "escalated":
            facts["escalated_to"] = ("отдел претензий", "complaints team")[lang]
        if product == "card":
            facts["product_name"] = rng.choice(("classic", "classic", "premium", "metal"))
            if status in ("new", "in_progress"):
                facts["ready_date"] = facts["expected_date"]
                facts["branch"] = rng.choice(_BRANCHES)[lang]
        elif product in ("loan", "mortgage", "deposit", "b2b_contract"):
            scale = {"loan": 1_000_000, "mortgage": 15_000_000, "deposit": 3_000_000, "b2b_contract": 5_000_000}
            facts["amount"] = int(rng.uniform(0.02, 1) * scale[product]) // 1000 * 1000
            facts["currency"] = "RUB"
            if product in ("loan", "mortgage"):
                facts["next_payment_date"] = self.rows.day(rng.randint(1, 30))
                facts["payment_amount"] = facts["amount"] // rng.choice((12, 36, 60, 240)) // 100 * 100
                if status in ("new", "in_progress", "waiting_customer"):
                    facts["decision_date"] = facts.get("expected_date", self.rows.day(due))
            elif product == "deposit":
                facts["maturity_date"] = self.rows.day(rng.randint(30, 720))
                facts["interest_rate"] = rng.choice((8.5, 12.0, 14.5, 16.0, 18.0))
        elif product == "insurance":
            facts["claim_number"] = f"СС-{self.rows.now.year}-{rng.randrange(10**6):06d}"
            if status not in ("resolved", "closed"):
                facts["payout_date"] = self.rows.day(due)
        title = rng.choice(titles)[lang]
        self.rows.case(customer, product, title, status, priority, opened_days_ago=opened,
                       due_in_days=due, facts=facts, organisation_id=organisation, owes=owes)


# --------------------------------------------------------------------------


async def seed(db: Database, customers: int, *, seed: int = 1, progress: bool = False) -> SeedSummary:
    """Fill an empty, migrated database with `customers` demo customers.

    The showcase customers are always written and count towards `customers`.
    Raises SeedError when the database already holds agents or customers.
    """
    if customers < 0:
        raise ValueError("customers must be zero or more")
    async with db.engine.connect() as conn:
        existing = await conn.scalar(select(func.count()).select_from(Customer))
        existing += await conn.scalar(select(func.count()).select_from(Agent))
    if existing:
        raise SeedError(
            f"{db!r} already holds CRM data; seed only an empty database "
            "(or import your additions with caller_id.importer)"
        )
    rows = _Rows(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    _showcase(rows)
    showcase_customers = rows.last_id["customers"]
    reserved = {entry["number"] for entry in SHOWCASE} | set(rows.number_ids)
    generator = _Generator(rows, seed, max(10, math.ceil(customers / 200)), reserved)
    generator.agents()
    remaining = max(0, customers - showcase_customers)
    sizes = [min(BATCH_CUSTOMERS, remaining - start) for start in range(0, remaining, BATCH_CUSTOMERS)]
    with tqdm(total=showcase_customers + remaining, unit=" customers", disable=not progress) as bar:
        # The next batch is generated in a thread while the previous one is written.
        writing = asyncio.create_task(_write(db, rows.take()))
        written = showcase_customers
        try:
            for batch_no, size in enumerate(sizes):
                chunk = await asyncio.to_thread(_generate, generator, batch_no, size)
                await writing
                bar.update(written)
                writing, written = asyncio.create_task(_write(db, chunk)), size
            await writing
            bar.update(written)
        finally:
            if not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            await _advance_sequences(conn)
            await conn.execute(text("ANALYZE"))
        await bump_crm_version(conn)
    return rows.summary()


def _generate(generator: _Generator, batch_no: int, size: int) -> dict[str, list[dict[str, Any]]]:
    generator.batch(batch_no, size)
    return generator.rows.take()


async def _advance_sequences(conn: AsyncConnection) -> None:
    """Ids were given explicitly: move each id sequence past the largest id."""
    for name, _ in _Rows.TABLES:
        await conn.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"
        ))
