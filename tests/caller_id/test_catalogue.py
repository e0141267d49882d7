"""The intent catalogue: the shipped file, strict validation with lines, texts."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from caller_id.catalogue import load_catalogue, parse_catalogue
from conffile import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "intents.yaml"
TODAY = dt.date(2026, 12, 5)

MINIMAL = """\
languages: [ru, en]
fallback: general_question
facts:
  branch: text
  ready_date: date
  missing_documents: list
  payment_amount: number
terms:
  passport_copy: {ru: копия паспорта, en: passport copy}
  tverskaya: {ru: «Тверская», en: Tverskaya}
intents:
  - name: card_ready
    title: {ru: Карта готова, en: Card ready}
    cases:
      products: [debit_card]
    answer:
      ru: "Карта будет готова {ready_date} в отделении {branch}."
      en: "The card will be ready on {ready_date} at the {branch} branch."
  - name: general_question
    title: {ru: Общий вопрос, en: General question}
"""


@pytest.fixture(scope="module")
def shipped():
    return load_catalogue(SHIPPED)


def parse(text: str):
    return parse_catalogue(textwrap.dedent(text), "intents.yaml")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value


# --- the shipped file ---------------------------------------------------------


def test_shipped_catalogue_loads_with_a_fallback_and_both_languages(shipped):
    catalogue = shipped

    assert catalogue.languages == ("ru", "en")
    assert catalogue.fallback.name == "general_question"
    assert {"card_ready", "card_reissue_delay", "documents_missing", "loan_payment",
            "loan_application_status", "deposit_question", "b2b_contract",
            "complaint_escalation", "general_question"} <= set(catalogue.names)


def test_shipped_catalogue_titles_every_intent_in_every_language(shipped):
    for spec in shipped.intents:
        assert spec.title["ru"] and spec.title["en"], spec.name
        assert spec.title["ru"] != spec.title["en"], spec.name


def test_shipped_card_answer_reads_like_the_product_brief(shipped):
    answer = shipped.intent("card_ready").answer
    facts = {"product_name": "metal", "ready_date": "2026-12-03", "branch": "tverskaya"}

    assert answer.render("ru", facts, TODAY) == "Ваша металлическая карта будет готова 3 декабря в отделении «Тверская»."
    assert answer.render("en", facts, TODAY) == "Your metal card will be ready on 3 Dec at the Tverskaya branch."


# --- a valid file -------------------------------------------------------------


def test_minimal_catalogue_parses_and_knows_its_intents():
    catalogue = parse(MINIMAL)

    assert catalogue.names == ("card_ready", "general_question")
    assert catalogue.intent("card_ready").is_self_service
    assert not catalogue.intent("general_question").is_self_service
    assert catalogue.default_language == "ru"
    with pytest.raises(KeyError):
        catalogue.intent("nothing")


def test_language_for_takes_the_first_spoken_preference_else_the_default():
    catalogue = parse(MINIMAL)

    assert catalogue.language_for("de", "en") == "en"
    assert catalogue.language_for(None, None) == "ru"


def test_missing_catalogue_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)

    assert str(path) in str(caught.value)


# --- mistakes, each with its line ---------------------------------------------

BROKEN = {
    "unknown section": (
        """\
        fallback: general_question
        intens: []
        """, 2, "unknown catalogue section 'intens'; did you mean 'intents'?"),
    "unknown intent key": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
            prio: 0.1
        """, 5, "unknown intent setting 'prio'; did you mean 'prior'?"),
    "weight of the wrong type": (
        """\
        fallback: general_question
        weights:
          case: high
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 3, "weights.case must be a number from 0 to 1, got 'high'"),
    "weight out of range on an intent": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
            weights: {case: 2}
        """, 5, "weights.case must be a number from 0 to 1"),
    "unknown placeholder": (
        """\
        fallback: general_question
        intents:
          - name: card_ready
            title: {ru: Карта, en: Card}
            cases: {products: [debit_card]}
            reasons:
              overdue:
                ru: "карта обещана на {due_dat}"
                en: "card promised for {due_date}"
          - name: general_question
            title: {ru: Общий, en: General}
        """, 8, "unknown placeholder {due_dat} (did you mean {due_date}?)"),
    "fact placeholder not declared": (
        """\
        fallback: general_question
        intents:
          - name: card_ready
            title: {ru: Карта, en: Card}
            cases: {products: [debit_card]}
            answer:
              ru: "Карта готова"
              en: "Ready at {branch}"
          - name: general_question
            title: {ru: Общий, en: General}
        """, 8, "neither a case field nor a declared fact"),
    "template syntax": (
        """\
        fallback: general_question
        reasons:
          case:
            ru: "обращение {title"
            en: "case {title}"
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 4, "reasons.case.ru: expected '}' before end of string"),
    "case placeholder in a call reason": (
        """\
        fallback: general_question
        reasons:
          repeat_calls:
            ru: "звонили {calls} раз"
            en: "called about {title}"
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 5, "unknown placeholder {title}"),
    "two word forms for russian": (
        """\
        fallback: general_question
        reasons:
          overdue:
            ru: "просрочено на {days_overdue:день|дней}"
            en: "overdue by {days_overdue:day|days}"
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 4, "needs 3 word forms for ru (one|few|many)"),
    "word forms on a date": (
        """\
        fallback: general_question
        reasons:
          overdue:
            ru: "срок {due_date}"
            en: "due {due_date:day|days}"
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 5, "{due_date} is a date; only numbers and lists take word forms"),
    "text missing a language": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title: {ru: Общий вопрос}
        """, 4, "intent 'general_question' title has no 'en' text"),
    "text in an undeclared language": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title:
              ru: Общий
              en: General
              de: Allgemein
        """, 7, "unknown language in intent 'general_question' title 'de'"),
    "duplicate intent": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
          - name: general_question
            title: {ru: Ещё, en: Again}
        """, 5, "duplicate intent 'general_question' (first on line 3)"),
    "empty intents": (
        """\
        fallback: general_question
        intents: []
        """, 2, "the catalogue is empty"),
    "fallback not an intent": (
        """\
        fallback: general
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 1, "fallback 'general' is not one of the intents"),
    "intent name not an identifier": (
        """\
        fallback: general_question
        intents:
          - name: Card Ready
            title: {ru: Карта, en: Card}
            cases: {products: [debit_card]}
        """, 3, "each intent needs a name of lower case letters"),
    "unsupported language": (
        """\
        languages: [ru, de]
        fallback: general_question
        intents: []
        """, 1, "language 'de' is not supported"),
    "unknown fact kind": (
        """\
        fallback: general_question
        facts:
          ready_date: datetime
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 3, "fact 'ready_date': kind must be one of text, date, list, number"),
    "fact shadowing a case field": (
        """\
        fallback: general_question
        facts:
          title: text
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """, 3, "fact name 'title' is already a built-in placeholder"),
    "has_facts naming an undeclared fact": (
        """\
        fallback: general_question
        intents:
          - name: card_ready
            title: {ru: Карта, en: Card}
            cases:
              products: [debit_card]
              has_facts: [branch]
          - name: general_question
            title: {ru: Общий, en: General}
        """, 7, "'branch' is not a declared fact"),
    "condition that is not true or false": (
        """\
        fallback: general_question
        intents:
          - name: card_reissue_delay
            title: {ru: Карта, en: Card}
            cases:
              overdue: maybe
          - name: general_question
            title: {ru: Общий, en: General}
        """, 6, "cases.overdue must be true or false, got 'maybe'"),
    "products as a bare word": (
        """\
        fallback: general_question
        intents:
          - name: card_ready
            title: {ru: Карта, en: Card}
            cases:
              products: debit_card
          - name: general_question
            title: {ru: Общий, en: General}
        """, 6, "cases.products must be a non-empty list of names"),
    "unknown case condition": (
        """\
        fallback: general_question
        intents:
          - name: card_ready
            title: {ru: Карта, en: Card}
            cases:
              product: [debit_card]
          - name: general_question
            title: {ru: Общий, en: General}
        """, 6, "unknown case condition 'product'; did you mean 'products'?"),
    "intent that can never be predicted": (
        """\
        fallback: general_question
        intents:
          - name: card_ready
            title: {ru: Карта, en: Card}
          - name: general_question
            title: {ru: Общий, en: General}
        """, 3, "intent 'card_ready' can never be predicted"),
    "case reason on an intent without cases": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
            reasons:
              overdue: {ru: просрочено, en: overdue}
        """, 6, "reason 'overdue' is about a case, but the intent has no `cases`"),
    "escalation without days": (
        """\
        fallback: general_question
        intents:
          - name: complaint_escalation
            title: {ru: Жалоба, en: Complaint}
            escalation: {calls: 3}
          - name: general_question
            title: {ru: Общий, en: General}
        """, 5, "escalation needs `days`"),
    "yaml syntax": (
        """\
        fallback: general_question
        intents:
          - name: general_question
            title: {ru: Общий, en: General
        """, 5, ""),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_catalogue_is_reported_with_file_line_and_what_is_wrong(name):
    text, line, message = BROKEN[name]

    error = error_of(text)

    assert error.source == "intents.yaml"
    assert error.line == line, str(error)
    assert message in error.message
    assert str(error).startswith(f"intents.yaml, line {line}: ")


def test_empty_file_is_an_empty_catalogue_error():
    error = error_of("")

    assert "the catalogue is empty" in str(error)


def test_catalogue_without_fallback_names_the_missing_key():
    error = error_of("""\
        intents:
          - name: general_question
            title: {ru: Общий, en: General}
        """)

    assert "needs `fallback`" in error.message


def test_broken_file_on_disk_names_that_file(tmp_path):
    path = tmp_path / "intents.yaml"
    path.write_text("fallback: x\nintents:\n  - name: x\n    title: {ru: X}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)

    assert caught.value.source == str(path)
    assert caught.value.line == 4


# --- texts: the catalogue's facts and terms (filling texts: test_templates.py) ----


def test_an_answer_reads_its_date_fact_from_iso_text_and_translates_its_terms():
    answer = parse(MINIMAL).intent("card_ready").answer

    rendered = answer.render("ru", {"ready_date": "2026-12-03", "branch": "tverskaya"}, TODAY)

    assert rendered == "Карта будет готова 3 декабря в отделении «Тверская»."
