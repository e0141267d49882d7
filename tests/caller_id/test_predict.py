"""Intent prediction: realistic callers against the shipped catalogue."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caller_id.catalogue import load_catalogue, parse_catalogue
from caller_id.predict import Intent, predict, self_service_answer
from caller_id.profile import Case, CallerView, Customer, Organisation, RecentCall, Role

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "intents.yaml"
MSK = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=MSK)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(SHIPPED)


def case(case_id: int, product: str, status: str, *, title: str = "Обращение", priority: int = 3,
         opened: dt.timedelta = 30 * DAY, updated: dt.timedelta = 20 * DAY,
         due: dt.datetime | None = None, owes: bool = False, facts: dict | None = None) -> Case:
    """A case opened and last updated that long before NOW."""
    return Case(id=case_id, product=product, title=title, status=status, priority=priority,
                opened_at=NOW - opened, updated_at=NOW - updated, due_at=due,
                customer_owes_next_step=owes, facts=facts or {})


def caller(*cases: Case, calls: tuple[RecentCall, ...] = (), language: str = "ru") -> CallerView:
    customer = Customer(id=7, name="Анна Петрова", segment="C", language=language, cases=cases)
    return CallerView(number="+79161234567", customer=customer, segment="C", language=language,
                      cases=cases, recent_calls=calls)


def called(ago: dt.timedelta, intent: str | None) -> RecentCall:
    return RecentCall(started_at=NOW - ago, line="general", intent=intent)


def unknown(calls: tuple[RecentCall, ...] = ()) -> CallerView:
    return CallerView(number="+79161234567", recent_calls=calls)


def names(intents: list[Intent]) -> list[str]:
    return [intent.intent for intent in intents]


def by_name(intents: list[Intent], name: str) -> Intent:
    return next(intent for intent in intents if intent.intent == name)


CARD_REISSUE = case(1, "debit_card", "in_production", title="Перевыпуск карты", priority=2,
                    due=dt.datetime(2026, 12, 3, 18, 0, tzinfo=MSK), updated=8 * DAY)
OLD_DEPOSIT_QUESTION = case(2, "deposit", "in_progress", title="Вопрос по вкладу", priority=5,
                            opened=60 * DAY, updated=40 * DAY)
LOAN_WAITING_FOR_DOCUMENTS = case(
    3, "consumer_loan", "under_review", title="Заявка на кредит", owes=True, updated=DAY,
    facts={"missing_documents": ["passport_copy", "income_statement"]})


# --- ranking from cases --------------------------------------------------------


def test_overdue_card_reissue_beats_an_old_low_priority_question(catalogue):
    intents = predict(caller(OLD_DEPOSIT_QUESTION, CARD_REISSUE), catalogue, line="general", now=NOW)

    first = intents[0]
    assert first.intent == "card_reissue_delay"
    assert first.case_id == CARD_REISSUE.id
    assert first.reasons == ("перевыпуск карты обещан на 3 декабря, просрочено на 2 дня",
                             "высокий приоритет обращения «Перевыпуск карты»")
    assert first.score > by_name(intents, "deposit_question").score


def test_missing_documents_lead_with_the_list_in_the_reason(catalogue):
    intents = predict(caller(LOAN_WAITING_FOR_DOCUMENTS), catalogue, line="general", now=NOW)

    assert intents[0].intent == "documents_missing"
    assert intents[0].case_id == LOAN_WAITING_FOR_DOCUMENTS.id
    assert intents[0].reasons[0] == "банк ждёт от вас 2 документа: копия паспорта, справка о доходах"
    # The application is not "waiting for the bank" while the bank waits for the customer.
    assert "loan_application_status" not in names(intents)


def test_missing_documents_reason_in_english(catalogue):
    intents = predict(caller(LOAN_WAITING_FOR_DOCUMENTS, language="en"), catalogue, line=None, now=NOW)

    assert intents[0].reasons[0] == (
        "the bank still waits for 2 documents from you: passport copy, income statement")


def test_overdue_payment_outranks_one_due_soon(catalogue):
    overdue = case(4, "consumer_loan", "payment_overdue", due=NOW - 2 * DAY)
    due_soon = case(5, "consumer_loan", "payment_due", due=NOW + DAY)

    late = predict(caller(overdue), catalogue, line=None, now=NOW)[0]
    soon = predict(caller(due_soon), catalogue, line=None, now=NOW)[0]

    assert (late.intent, soon.intent) == ("loan_payment", "loan_payment")
    assert late.score > soon.score
    assert late.reasons[0] == "платёж по кредиту просрочен на 2 дня"
    assert soon.reasons[0] == "платёж по кредиту завтра, 6 декабря"


def test_of_two_cases_for_one_intent_the_stronger_is_the_evidence(catalogue):
    due_soon = case(5, "consumer_loan", "payment_due", due=NOW + 2 * DAY)
    overdue = case(4, "consumer_loan", "payment_overdue", due=NOW - 2 * DAY)

    intents = predict(caller(due_soon, overdue), catalogue, line=None, now=NOW)

    assert intents[0].intent == "loan_payment"
    assert intents[0].case_id == overdue.id
    assert names(intents).count("loan_payment") == 1


def test_of_two_equally_strong_cases_the_first_listed_is_the_evidence(catalogue):
    first = case(11, "deposit", "in_progress")
    second = case(12, "deposit", "in_progress")

    assert predict(caller(first, second), catalogue, line=None, now=NOW)[0].case_id == 11
    assert predict(caller(second, first), catalogue, line=None, now=NOW)[0].case_id == 12


def test_a_due_date_far_away_is_not_due_soon(catalogue):
    later = case(5, "consumer_loan", "payment_due", title="Платёж", due=NOW + 20 * DAY)

    intents = predict(caller(later), catalogue, line=None, now=NOW)

    assert intents[0].reasons == ("открыто обращение «Платёж»",)


def test_closed_cases_are_not_evidence(catalogue):
    closed = case(6, "debit_card", "closed", due=NOW - 5 * DAY)

    intents = predict(caller(closed), catalogue, line=None, now=NOW)

    assert names(intents) == ["general_question"]
    assert intents[0].reasons == ("нет открытых обращений, объясняющих звонок",)


def test_due_dates_are_read_in_the_time_zone_of_now(catalogue):
    # 22:30 UTC on 2 Dec is already 3 Dec in Moscow.
    reissue = case(1, "debit_card", "in_production",
                   due=dt.datetime(2026, 12, 2, 22, 30, tzinfo=dt.timezone.utc))

    intents = predict(caller(reissue), catalogue, line=None, now=NOW)

    assert intents[0].reasons[0] == "перевыпуск карты обещан на 3 декабря, просрочено на 2 дня"


# --- recent calls ----------------------------------------------------------------


def test_repeat_calls_raise_the_intent_and_say_so(catalogue):
    calls = (called(DAY, "card_reissue_delay"), called(2 * DAY, "card_reissue_delay"))

    alone = predict(caller(CARD_REISSUE), catalogue, line=None, now=NOW)[0]
    again = predict(caller(CARD_REISSUE, calls=calls, language="en"), catalogue, line=None, now=NOW)[0]

    assert again.intent == alone.intent == "card_reissue_delay"
    assert again.score > alone.score
    assert "called 2 times in the last 3 days about this" in again.reasons


def test_repeat_calls_alone_bring_the_intent_back(catalogue):
    calls = (called(DAY, "loan_payment"),)

    intents = predict(caller(), catalogue, line=None, now=NOW)
    again = predict(caller(calls=calls), catalogue, line=None, now=NOW)

    assert "loan_payment" not in names(intents)
    assert again[0].intent == "loan_payment"
    assert again[0].reasons == ("звонили 1 раз за последние 3 дня по этому вопросу",)


def test_calls_older_than_the_repeat_window_do_not_count(catalogue):
    calls = (called(10 * DAY, "card_reissue_delay"), called(12 * DAY, "card_reissue_delay"))

    alone = predict(caller(CARD_REISSUE), catalogue, line=None, now=NOW)
    old = predict(caller(CARD_REISSUE, calls=calls), catalogue, line=None, now=NOW)

    assert old == alone


def test_repeated_unresolved_calls_raise_a_complaint(catalogue):
    calls = tuple(called(n * DAY, "card_reissue_delay") for n in (1, 3, 6))

    intents = predict(caller(CARD_REISSUE, calls=calls), catalogue, line=None, now=NOW)

    complaint = by_name(intents, "complaint_escalation")
    assert complaint.reasons == (
        "3 звонка за 7 дней по теме «Задержка перевыпуска карты», вопрос не решён",)
    assert complaint.case_id is None
    assert "complaint_escalation" not in names(
        predict(caller(CARD_REISSUE, calls=calls[:2]), catalogue, line=None, now=NOW))


def test_complaint_case_with_escalating_calls_comes_first(catalogue):
    complaint = case(9, "complaint", "in_progress", title="Жалоба на отделение", priority=2)
    calls = tuple(called(n * DAY, "card_reissue_delay") for n in (1, 2, 3, 4))

    intents = predict(caller(CARD_REISSUE, complaint, calls=calls), catalogue, line=None, now=NOW)

    assert intents[0].intent == "complaint_escalation"
    assert intents[0].case_id == complaint.id
    assert intents[0].reasons[0] == "открыта жалоба «Жалоба на отделение»"


# --- lines and unknown callers ------------------------------------------------------


def test_b2b_line_makes_a_business_contract_the_first_guess(catalogue):
    company = Organisation(id=3, name="ООО Ромашка", segment="B")
    director = CallerView(
        number="+79161234567", customer=Customer(id=7, name="Иван Сидоров", segment="C"),
        role=Role(kind="director", customer_id=7, organisation=company),
        segment="B", language="ru")

    intents = predict(director, catalogue, line="b2b", now=NOW)

    assert intents[0].intent == "b2b_contract"
    assert intents[0].reasons == ("звонок на линию «Бизнес»",)
    assert intents[-1].intent == "general_question"


def test_a_b2b_case_on_the_b2b_line_adds_up(catalogue):
    contract = case(8, "salary_project", "in_progress", title="Зарплатный проект")

    on_b2b = predict(caller(contract), catalogue, line="b2b", now=NOW)[0]
    elsewhere = predict(caller(contract), catalogue, line="general", now=NOW)[0]

    assert on_b2b.intent == elsewhere.intent == "b2b_contract"
    assert on_b2b.score > elsewhere.score
    assert on_b2b.reasons == ("договор компании: «Зарплатный проект»", "звонок на линию «Бизнес»")


def test_unknown_caller_gets_the_line_prior_and_the_fallback(catalogue):
    intents = predict(unknown(), catalogue, line="b2b", now=NOW)

    assert names(intents) == ["b2b_contract", "general_question"]
    assert intents[1].reasons == ("номер не найден в CRM",)
    assert all(intent.case_id is None for intent in intents)


def test_unknown_caller_on_the_general_line_gets_only_the_fallback(catalogue):
    intents = predict(unknown(), catalogue, line="general", now=NOW, language="en")

    assert names(intents) == ["general_question"]
    assert intents[0].reasons == ("call to the “General” line", "the number is not in the CRM")
    assert 0 < intents[0].score < 0.5


def test_the_fallback_stays_last_as_the_other_question(catalogue):
    intents = predict(caller(CARD_REISSUE), catalogue, line=None, now=NOW)

    assert intents[-1].intent == "general_question"
    assert intents[-1].reasons == ("на случай, если звонок о другом",)


def test_an_unknown_line_is_no_evidence(catalogue):
    assert predict(unknown(), catalogue, line="night", now=NOW) == predict(
        unknown(), catalogue, line=None, now=NOW)


# --- language ---------------------------------------------------------------------


def test_reasons_follow_the_callers_language(catalogue):
    intents = predict(caller(CARD_REISSUE, language="en"), catalogue, line=None, now=NOW)

    assert intents[0].reasons[0] == "card reissue promised for 3 Dec, overdue by 2 days"


def test_language_argument_wins_over_the_callers_language(catalogue):
    intents = predict(caller(CARD_REISSUE, language="en"), catalogue, line=None, now=NOW, language="ru")

    assert intents[0].reasons[0] == "перевыпуск карты обещан на 3 декабря, просрочено на 2 дня"


def test_a_language_the_catalogue_does_not_speak_falls_back_to_russian(catalogue):
    intents = predict(caller(CARD_REISSUE, language="de"), catalogue, line=None, now=NOW)

    assert intents[0].reasons[0].startswith("перевыпуск карты")


def test_a_missing_fact_falls_back_to_the_default_wording(catalogue):
    in_production = case(1, "debit_card", "in_production", title="Карта Platinum",
                          due=NOW + 10 * DAY, facts={"branch": "tverskaya"})

    intents = predict(caller(in_production), catalogue, line=None, now=NOW)

    assert intents[0].intent == "card_ready"
    assert intents[0].reasons == ("открыто обращение «Карта Platinum»",)


# --- self-service answers ------------------------------------------------------------

READY_SOON = case(1, "debit_card", "in_production", due=dt.datetime(2026, 12, 7, 10, 0, tzinfo=MSK),
                  facts={"product_name": "metal", "ready_date": "2026-12-07", "branch": "tverskaya"})


def test_self_service_answer_speaks_the_case_facts(catalogue):
    view = caller(READY_SOON)
    best = predict(view, catalogue, line=None, now=NOW)[0]

    assert best.intent == "card_ready"
    assert self_service_answer(best, view, catalogue, now=NOW) == (
        "Ваша металлическая карта будет готова 7 декабря в отделении «Тверская».")
    assert self_service_answer(best, view, catalogue, now=NOW, language="en") == (
        "Your metal card will be ready on 7 Dec at the Tverskaya branch.")


def test_no_self_service_answer_without_the_facts_it_needs(catalogue):
    without_branch = case(1, "debit_card", "in_production", due=NOW + 2 * DAY,
                          facts={"product_name": "metal", "ready_date": "2026-12-07"})
    view = caller(without_branch)
    best = predict(view, catalogue, line=None, now=NOW)[0]

    assert best.intent == "card_ready"
    assert self_service_answer(best, view, catalogue, now=NOW) is None


def test_no_self_service_answer_for_an_intent_that_goes_to_people(catalogue):
    view = caller(CARD_REISSUE)
    best = predict(view, catalogue, line=None, now=NOW)[0]

    assert best.intent == "card_reissue_delay"
    assert self_service_answer(best, view, catalogue, now=NOW) is None
    assert self_service_answer(Intent("renamed_intent", 0.5, ()), view, catalogue, now=NOW) is None


# --- the result ------------------------------------------------------------------------


def test_intent_to_dict_is_plain_json():
    intent = Intent("card_ready", 0.61, ("карта будет готова 7 декабря",), case_id=1)

    assert json.loads(json.dumps(intent.to_dict())) == {
        "intent": "card_ready", "score": 0.61, "reasons": ["карта будет готова 7 декабря"], "case_id": 1}


TWO_EQUAL = """\
fallback: general_question
intents:
  - name: {first}
    title: {{ru: Первый, en: First}}
    cases: {{products: [debit_card]}}
  - name: {second}
    title: {{ru: Второй, en: Second}}
    cases: {{products: [debit_card]}}
  - name: general_question
    title: {{ru: Общий, en: General}}
"""


def test_equal_scores_keep_the_catalogue_order():
    view = caller(case(1, "debit_card", "open"))
    forward = parse_catalogue(TWO_EQUAL.format(first="card_a", second="card_b"), "a.yaml")
    backward = parse_catalogue(TWO_EQUAL.format(first="card_b", second="card_a"), "b.yaml")

    ranked_forward = predict(view, forward, line=None, now=NOW)
    ranked_backward = predict(view, backward, line=None, now=NOW)

    assert ranked_forward[0].score == ranked_forward[1].score
    assert names(ranked_forward)[:2] == ["card_a", "card_b"]
    assert names(ranked_backward)[:2] == ["card_b", "card_a"]


ARITHMETIC = """\
fallback: general_question
weights: {case: 0.5, priority: 0, recent_update: 0, repeat_call: 0.4}
intents:
  - name: card_ready
    title: {ru: Карта, en: Card}
    cases: {products: [debit_card]}
    lines: {b2c: 0.2}
  - name: general_question
    title: {ru: Общий, en: General}
    prior: 0.1
    lines: {general: 0.2}
"""


def test_signals_combine_as_independent_evidence():
    catalogue = parse_catalogue(ARITHMETIC, "arithmetic.yaml")
    card = case(1, "debit_card", "open")

    on_b2c = predict(caller(card, calls=(called(DAY, "card_ready"),) * 2), catalogue, line="b2c", now=NOW)
    fallback = predict(unknown(), catalogue, line="general", now=NOW)

    # 1 - (1 - 0.5) * (1 - 0.2) * (1 - 0.4) ** 2
    assert on_b2c[0].score == 0.856
    # 1 - (1 - 0.1) * (1 - 0.2)
    assert fallback[0].score == 0.28


def test_prediction_is_the_same_every_time(catalogue):
    calls = tuple(called(n * DAY, "card_reissue_delay") for n in (1, 2, 3))
    view = caller(OLD_DEPOSIT_QUESTION, CARD_REISSUE, LOAN_WAITING_FOR_DOCUMENTS, calls=calls)

    first = predict(view, catalogue, line="general", now=NOW)

    assert all(predict(view, catalogue, line="general", now=NOW) == first for _ in range(3))


PRODUCTS = ["debit_card", "credit_card", "consumer_loan", "mortgage", "deposit", "insurance",
            "complaint", "salary_project", "current_account", "unheard_of"]
STATUSES = ["in_production", "ready", "blocked", "under_review", "payment_due", "payment_overdue",
            "claim_open", "in_progress", "closed", "resolved"]
INTENTS = [None, "card_reissue_delay", "loan_payment", "documents_missing", "no_longer_exists"]


@st.composite
def views(draw):
    cases = draw(st.lists(st.builds(
        lambda i, product, status, priority, updated, due, owes, documents: case(
            i, product, status, priority=priority, updated=dt.timedelta(hours=updated),
            due=None if due is None else NOW + dt.timedelta(hours=due), owes=owes,
            facts={"missing_documents": documents} if documents else {}),
        st.integers(1, 50), st.sampled_from(PRODUCTS), st.sampled_from(STATUSES), st.integers(-1, 9),
        st.integers(-48, 2000), st.none() | st.integers(-2000, 2000), st.booleans(),
        st.lists(st.sampled_from(["passport_copy", "charter"]), max_size=2),
    ), max_size=5))
    calls = draw(st.lists(st.builds(
        lambda hours, intent: RecentCall(started_at=NOW - dt.timedelta(hours=hours), intent=intent),
        st.integers(-5, 400), st.sampled_from(INTENTS)), max_size=8))
    if draw(st.booleans()):
        return unknown(tuple(calls))
    return caller(*cases, calls=tuple(calls), language=draw(st.sampled_from(["ru", "en", "de"])))


@settings(max_examples=80, deadline=None)
@given(view=views(), line=st.sampled_from([None, "general", "b2b", "b2c", "night"]))
def test_any_caller_gets_ranked_scores_within_0_and_1_and_the_fallback(catalogue, view, line):
    intents = predict(view, catalogue, line=line, now=NOW)

    assert [i.score for i in intents] == sorted((i.score for i in intents), reverse=True)
    assert all(0.0 <= i.score <= 1.0 for i in intents)
    assert len(set(names(intents))) == len(intents)
    assert "general_question" in names(intents)
    assert all(i.reasons for i in intents)
    assert predict(view, catalogue, line=line, now=NOW) == intents


# --- every shipped intent is reachable ---------------------------------------------------

SAMPLE_FACTS = {"text": "tverskaya", "date": "2026-12-10", "list": ["passport_copy"], "number": 1}


def test_every_shipped_intent_comes_first_for_a_caller_made_for_it(catalogue):
    for spec in catalogue.intents:
        line = next(iter(spec.lines), None)
        if spec.cases is not None:
            match = spec.cases
            made = case(
                1, min(match.products) if match.products else "other_product",
                min(match.statuses) if match.statuses else "open",
                priority=match.priority_at_most or 3,
                due=NOW - 3 * DAY if match.overdue else NOW + DAY if match.due_soon else None,
                owes=bool(match.customer_owes_next_step),
                facts={fact: SAMPLE_FACTS[catalogue.facts[fact]] for fact in match.has_facts})
            view = caller(made)
        else:
            view = unknown()

        intents = predict(view, catalogue, line=line, now=NOW)

        assert intents[0].intent == spec.name, (spec.name, intents)
        assert intents[0].reasons, spec.name
        if spec.cases is not None:
            assert intents[0].case_id == 1, spec.name
