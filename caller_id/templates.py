"""Texts in several languages: templates compiled once, filled and localised on a call.

A template is one text in one language with ``{name}`` placeholders
(``{{`` and ``}}`` are literal braces).  `compile_template` checks it against
the placeholders it may name, each with its kind, and splits it into literal
parts and placeholders, so filling it is a plain walk over prepared parts.
A mistake is a `TemplateError` (`UnknownPlaceholder` for a name it may not
use) whose message says what is wrong; the caller adds where.

`Text` is one text in every language; `Text.render` fills it: dates read
"3 декабря" / "3 Dec" (with the year when it is not the current one),
numbers are grouped per language ("15 000" / "15,000"), numbers and lists can
carry word forms (``{days_overdue:день|дня|дней}`` -> "2 дня",
``{days_overdue:day|days}`` -> "2 days"; on a list, the count of its items),
day counts can be said relatively ("завтра" / "in 3 days", "вчера" /
"2 days ago"), and text values found in ``terms`` are translated.

Placeholder kinds: ``text``, ``date``, ``list``, ``number``, and the day
counts ``days_ahead`` and ``days_ago``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import string
from dataclasses import dataclass
from typing import Any, Mapping

SUPPORTED_LANGUAGES = ("ru", "en")

_FORMATTER = string.Formatter()
_PLURAL_FORMS = {"ru": ("one", "few", "many"), "en": ("one", "other")}
_MONTHS = {
    "ru": ("января", "февраля", "марта", "апреля", "мая", "июня", "июля",
           "августа", "сентября", "октября", "ноября", "декабря"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}
_RELATIVE_DAYS = {
    "ru": {"ahead": ("сегодня", "завтра"), "ago": ("сегодня", "вчера"),
           "unit": ("день", "дня", "дней"), "in": "через {}", "back": "{} назад"},
    "en": {"ahead": ("today", "tomorrow"), "ago": ("today", "yesterday"),
           "unit": ("day", "days"), "in": "in {}", "back": "{} ago"},
}
_THOUSANDS = {"ru": "\u00a0", "en": ","}
_DECIMAL = {"ru": ",", "en": "."}


class TemplateError(ValueError):
    """A text that is not a valid template; the message says why."""


class UnknownPlaceholder(TemplateError):
    """The text names a placeholder it may not use."""


@dataclass(frozen=True)
class _Placeholder:
    name: str
    kind: str
    forms: tuple[str, ...] | None  # word forms: render "<count> <form>"


@dataclass(frozen=True)
class Template:
    """One text in one language, compiled into literal parts and placeholders."""

    text: str
    parts: tuple[str | _Placeholder, ...]

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, _Placeholder))


@dataclass(frozen=True, eq=False)
class Text:
    """A text in every language it is written in."""

    templates: Mapping[str, Template]
    terms: Mapping[str, Mapping[str, str]]
    placeholders: frozenset[str]  # named in any language

    def render(self, language: str, values: Mapping[str, Any], today: dt.date) -> str | None:
        """The text with its placeholders filled; None when a value is missing."""
        out = []
        for part in self.templates[language].parts:
            if isinstance(part, str):
                out.append(part)
                continue
            rendered = _render_value(part, values.get(part.name), language, today, self.terms)
            if rendered is None:
                return None
            out.append(rendered)
        return "".join(out)


def compile_template(text: str, language: str, placeholders: Mapping[str, str]) -> Template:
    """`text` in `language` compiled; `placeholders` maps each name it may use to its kind."""
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise TemplateError(f"{exc} in {text!r} (write {{{{ and }}}} for literal braces)") from None
    parts: list[str | _Placeholder] = []
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append(literal)
        if name is None:
            continue
        if conversion or not name:
            raise TemplateError(f"write placeholders as {{name}} or {{name:forms}}, "
                                f"not {{{name}{'!' + conversion if conversion else ''}}}")
        if name not in placeholders:
            close = difflib.get_close_matches(name, list(placeholders), n=1)
            hint = f" (did you mean {{{close[0]}}}?)" if close else ""
            raise UnknownPlaceholder(f"unknown placeholder {{{name}}}{hint}")
        kind = placeholders[name]
        forms = _forms(name, kind, spec, language) if spec else None
        parts.append(_Placeholder(name, kind, forms))
    return Template(text=text, parts=tuple(parts))


def _forms(name: str, kind: str, spec: str, language: str) -> tuple[str, ...]:
    if kind not in ("number", "list"):
        raise TemplateError(f"{{{name}}} is a {kind}; only numbers and lists take word forms")
    forms = tuple(spec.split("|"))
    expected = _PLURAL_FORMS[language]
    if len(forms) != len(expected) or not all(f.strip() for f in forms) or "{" in spec:
        raise TemplateError(f"{{{name}:...}} needs {len(expected)} word forms for "
                            f"{language} ({'|'.join(expected)}), got {spec!r}")
    return forms


def _render_value(part: _Placeholder, value: Any, language: str, today: dt.date,
                  terms: Mapping[str, Mapping[str, str]]) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    kind = part.kind
    if kind == "list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            return None
        if part.forms:
            return _count(len(items), part.forms, language)
        return ", ".join(_term(str(item), language, terms) for item in items)
    if kind == "number":
        number = _as_number(value)
        if number is None:
            return None
        return _count(number, part.forms, language) if part.forms else _grouped(number, language)
    if kind == "date":
        day = _as_date(value)
        return None if day is None else _date(day, language, today)
    if kind in ("days_ahead", "days_ago"):
        return _relative_days(int(value), kind == "days_ahead", language)
    if isinstance(value, (list, tuple, dict)):
        return None
    text = str(value)
    return _term(text, language, terms) if text else None


def _term(text: str, language: str, terms: Mapping[str, Mapping[str, str]]) -> str:
    translations = terms.get(text)
    return translations[language] if translations else text


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value.replace(",", "."))
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    return None


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).date()
        except ValueError:
            return None
    return None


def _grouped(value: int | float, language: str) -> str:
    """The number as `language` writes it: thousands grouped, at most two decimals."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")
    return text.replace(",", "\0").replace(".", _DECIMAL[language]).replace("\0", _THOUSANDS[language])


def _plural(value: int | float, forms: tuple[str, ...], language: str) -> str:
    """The word form for `value`: ru one/few/many, en one/other."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        return forms[1]
    if language == "ru":
        n = abs(value)
        if n % 10 == 1 and n % 100 != 11:
            return forms[0]
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return forms[1]
        return forms[2]
    return forms[0] if value == 1 else forms[1]


def _count(value: int | float, forms: tuple[str, ...], language: str) -> str:
    return f"{_grouped(value, language)} {_plural(value, forms, language)}"


def _date(day: dt.date, language: str, today: dt.date) -> str:
    text = f"{day.day} {_MONTHS[language][day.month - 1]}"
    return text if day.year == today.year else f"{text} {day.year}"


def _relative_days(days: int, ahead: bool, language: str) -> str:
    words = _RELATIVE_DAYS[language]
    near = words["ahead" if ahead else "ago"]
    if 0 <= days < len(near):
        return near[days]
    return words["in" if ahead else "back"].format(_count(days, words["unit"], language))
