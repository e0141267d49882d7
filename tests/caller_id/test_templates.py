"""Texts: templates compiled against their placeholders, filled and localised per language."""

from __future__ import annotations

import datetime as dt

import pytest

from caller_id.templates import TemplateError, Text, UnknownPlaceholder, compile_template

TODAY = dt.date(2026, 12, 5)
TERMS = {"passport_copy": {"ru": "копия паспорта", "en": "passport copy"}}


def text(ru: str, en: str, **placeholders: str) -> Text:
    """A text in both languages that may name `placeholders` (name=kind)."""
    templates = {"ru": compile_template(ru, "ru", placeholders), "en": compile_template(en, "en", placeholders)}
    named = frozenset(name for template in templates.values() for name in template.placeholders)
    return Text(templates=templates, terms=TERMS, placeholders=named)


def test_dates_read_as_day_and_month_per_language():
    due = text("срок {due_date}", "due {due_date}", due_date="date")

    assert due.render("ru", {"due_date": dt.date(2026, 12, 3)}, TODAY) == "срок 3 декабря"
    assert due.render("en", {"due_date": dt.date(2026, 12, 3)}, TODAY) == "due 3 Dec"
    assert due.render("en", {"due_date": "2026-12-03T10:00:00"}, TODAY) == "due 3 Dec"


def test_dates_in_another_year_carry_the_year():
    due = text("срок {due_date}", "due {due_date}", due_date="date")

    assert due.render("ru", {"due_date": dt.date(2027, 1, 15)}, TODAY) == "срок 15 января 2027"
    assert due.render("en", {"due_date": dt.date(2027, 1, 15)}, TODAY) == "due 15 Jan 2027"


@pytest.mark.parametrize("days, ru", [
    (1, "1 день"), (2, "2 дня"), (4, "4 дня"), (5, "5 дней"), (11, "11 дней"), (12, "12 дней"),
    (21, "21 день"), (22, "22 дня"), (25, "25 дней"), (111, "111 дней"), (101, "101 день"),
])
def test_russian_word_forms_follow_the_number(days, ru):
    overdue = text("{days_overdue:день|дня|дней}", "{days_overdue:day|days}", days_overdue="number")

    assert overdue.render("ru", {"days_overdue": days}, TODAY) == ru


def test_english_word_forms_are_singular_only_for_one():
    overdue = text("{days_overdue:день|дня|дней}", "{days_overdue:day|days}", days_overdue="number")

    assert overdue.render("en", {"days_overdue": 1}, TODAY) == "1 day"
    assert overdue.render("en", {"days_overdue": 2}, TODAY) == "2 days"


def test_lists_are_joined_translated_and_counted():
    waiting = text("ждём {missing_documents:документ|документа|документов}: {missing_documents}",
                   "waiting for {missing_documents:document|documents}: {missing_documents}",
                   missing_documents="list")
    values = {"missing_documents": ["passport_copy", "income statement"]}

    assert waiting.render("ru", values, TODAY) == "ждём 2 документа: копия паспорта, income statement"
    assert waiting.render("en", values, TODAY) == "waiting for 2 documents: passport copy, income statement"


def test_numbers_are_grouped_per_language():
    amount = text("{payment_amount:рубль|рубля|рублей}", "{payment_amount:rouble|roubles}",
                  payment_amount="number")

    assert amount.render("ru", {"payment_amount": 15000}, TODAY) == "15\u00a0000 рублей"
    assert amount.render("en", {"payment_amount": 15000}, TODAY) == "15,000 roubles"
    assert amount.render("en", {"payment_amount": 7.5}, TODAY) == "7.5 roubles"
    assert amount.render("ru", {"payment_amount": "21"}, TODAY) == "21 рубль"


def test_relative_days_say_today_tomorrow_and_in_n_days():
    due = text("срок {due_in}", "due {due_in}", due_in="days_ahead")

    assert due.render("ru", {"due_in": 0}, TODAY) == "срок сегодня"
    assert due.render("ru", {"due_in": 1}, TODAY) == "срок завтра"
    assert due.render("ru", {"due_in": 3}, TODAY) == "срок через 3 дня"
    assert due.render("en", {"due_in": 5}, TODAY) == "due in 5 days"


def test_missing_or_empty_values_leave_the_text_unsaid():
    waiting = text("ждём {missing_documents}", "waiting for {missing_documents}", missing_documents="list")

    assert waiting.render("ru", {}, TODAY) is None
    assert waiting.render("ru", {"missing_documents": []}, TODAY) is None


def test_double_braces_are_literal_braces():
    coded = text("{{код}} {title}", "{{code}} {title}", title="text")

    assert coded.render("en", {"title": "Card"}, TODAY) == "{code} Card"


def test_a_name_the_text_may_not_use_is_an_unknown_placeholder_with_a_hint():
    with pytest.raises(UnknownPlaceholder, match=r"unknown placeholder \{due_dat\} \(did you mean \{due_date\}\?\)"):
        compile_template("срок {due_dat}", "ru", {"due_date": "date"})


@pytest.mark.parametrize("template, why", [
    ("{days:день|дня}", "needs 3 word forms for ru (one|few|many)"),
    ("{due_date:день|дня|дней}", "{due_date} is a date; only numbers and lists take word forms"),
    ("{days!r}", "write placeholders as {name} or {name:forms}"),
    ("{days", "(write {{ and }} for literal braces)"),
])
def test_a_broken_template_says_what_is_wrong(template, why):
    with pytest.raises(TemplateError) as caught:
        compile_template(template, "ru", {"days": "number", "due_date": "date"})

    assert why in str(caught.value)
