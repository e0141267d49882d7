"""Bulk import of CRM data from CSV or JSON lines, all or nothing.

File format
-----------

One record per row (CSV) or per line (JSON lines: ``.jsonl`` / ``.ndjson``).
The ``kind`` field says what a record is; records refer to each other by the
ids of the source CRM, so they may come in any order and across files:

==============  ===========================================================
kind            fields (* required)
==============  ===========================================================
agent           interface* (Asterisk dial string, e.g. ``PJSIP/1001``; its
                key), name*, extension, is_manager, team
organisation    inn* (tax id, 10 or 12 digits with valid check digits; its
                key), name*, segment, is_vip, manager
customer        id* (its key), name*, segment, is_vip, language, manager
number          number*, customer*, role, organisation
case            id* (its key), customer*, organisation, product*, title*,
                status*, priority, opened_at, due_at,
                customer_owes_next_step, facts, notes
==============  ===========================================================

- ``segment``: A, B, C or D (default C).  ``language``: an ISO 639-1 code
  (two letters, `LANGUAGES`) such as ``ru`` or ``en`` (default ru).
- ``manager``: the ``interface`` of an agent (in the file or already in the
  database): the personal or key-account manager.
- ``number``: a phone number in any usual form (``8 916 123-45-67``,
  ``+44 20 7946 0123``), valid by the numbering plans of the phonenumbers
  library; it is stored in E.164 as `caller_id.normalise` reads it, national
  numbers in `region` (default RU).  ``customer``: the customer's ``id``.  ``role``:
  private (default), employee or director; employee and director need
  ``organisation``, the organisation's ``inn``; private takes none.
- ``case``: ``customer`` is the customer's ``id``; ``organisation`` (an inn)
  makes it a case of that organisation handled with the customer.
  ``product`` and ``status`` are codes (lower case letters, digits, ``_``)
  the intent catalogue matches on; ``status`` is one of `CASE_STATUSES`
  (the caller passes more, e.g. the statuses its catalogue names);
  ``priority`` 1 (highest) .. 5, default 3.
  ``opened_at`` / ``due_at``: ISO 8601 dates or date-times; without a time
  zone they are UTC; a bare date opens at the start of that day and is due
  at its end.  A missing ``opened_at`` means now for a new case and keeps
  the old value for a known one.  ``facts``: a JSON object (in CSV, its JSON
  text), e.g. ``{"ready_date": "2026-12-03", "branch": "Тверская"}``.
- Booleans: true/false, yes/no, 1/0, да/нет; empty is false.
- Text is Unicode without control characters (tab and line breaks only in
  ``notes``), at most as long as its column, and at most `MAX_TEXT`
  characters where the column has no length of its own; a CSV cell longer
  than the csv module's field limit, a JSON line longer than `MAX_LINE`
  characters or ``facts`` nested deeper than `MAX_FACTS_DEPTH` levels are bad
  rows like any other.

In CSV the first line is the header: ``kind`` and any of the fields above,
separated by commas (semicolons and tabs are recognised too); a cell that
does not apply to the row's kind stays empty.  In JSON lines, each line is
an object; blank lines are skipped.

Semantics
---------

Every row is checked first.  If any row is wrong, `ImportRowsError` lists
each one as (line, reason), counting lines as an editor does (the CSV header
is line 1), and nothing is written.  Otherwise everything is written in one
transaction: a record whose key is already in the database is updated (all
its fields take the row's values), otherwise it is created; a number role
that exists already is left as it is.  The import never deletes anything.
The CRM version is bumped, and the summary names every E.164 number whose
caller profile may have changed, so caches can drop them.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from caller_id.lookup import CLOSED_STATUSES
from caller_id.models import Agent, Case, CrmVersion, Customer, NumberRole, Organisation, PhoneNumber
from caller_id.normalise import mask, normalise
from caller_id.profile import ROLE_KINDS, ROLE_PRIVATE, SEGMENTS
from caller_id.store import Database, as_utc, bump_crm_version

__all__ = ["CASE_STATUSES", "FORMAT_HELP", "ImportRowsError", "ImportSummary", "KINDS", "LANGUAGES",
           "import_file", "inn_check_digits"]

KINDS = ("agent", "organisation", "customer", "number", "case")
_FIELDS = {
    "agent": ("interface", "name", "extension", "is_manager", "team"),
    "organisation": ("inn", "name", "segment", "is_vip", "manager"),
    "customer": ("id", "name", "segment", "is_vip", "language", "manager"),
    "number": ("number", "customer", "role", "organisation"),
    "case": ("id", "customer", "organisation", "product", "title", "status", "priority",
             "opened_at", "due_at", "customer_owes_next_step", "facts", "notes"),
}
_REQUIRED = {
    "agent": ("interface", "name"),
    "organisation": ("inn", "name"),
    "customer": ("id", "name"),
    "number": ("number", "customer"),
    "case": ("id", "customer", "product", "title", "status"),
}
_ALL_FIELDS = {"kind", *(name for names in _FIELDS.values() for name in names)}
# The case statuses of the CRM's case life cycle: open ones, then the closed ones.
OPEN_STATUSES = ("new", "in_progress", "waiting_customer", "ready", "blocked", "overdue", "escalated")
CASE_STATUSES = (*OPEN_STATUSES, *CLOSED_STATUSES)
# ISO 639-1: the two-letter language codes.
LANGUAGES = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch
co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga
gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja
jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv
mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or
os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr
ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi
vo wa wo xh yi yo za zh zu
""".split())
_TRUE = {"true", "yes", "y", "1", "t", "да", "д"}
_FALSE = {"false", "no", "n", "0", "f", "нет", "н", ""}
_CODE = re.compile(r"[a-z][a-z0-9_]*")
_INN_WEIGHTS = {
    9: (2, 4, 10, 3, 5, 9, 4, 6, 8),
    10: (7, 2, 4, 10, 3, 5, 9, 4, 6, 8),
    11: (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8),
}
_CHUNK = 500  # keys per IN (...) list
_SHOWN_ERRORS = 20
MAX_TEXT = 65_536
MAX_LINE = 1_048_576
MAX_FACTS_DEPTH = 10
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f]")


def _shown(value: Any) -> str:
    """A value as an error message quotes it: never more than a few dozen characters."""
    if not isinstance(value, (str, int, float, bool, type(None))):
        return f"<a JSON {'object' if isinstance(value, dict) else 'array' if isinstance(value, list) else 'value'}>"
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**18 else "<a long number>"
    return text if len(text) <= 40 else text[:36] + "…" + text[-1]


def inn_check_digits(digits: str) -> str:
    """The check digit(s) that follow the first 9 (company) or 10 (sole trader) INN digits."""
    digits = list(map(int, digits))
    for _ in range(1 if len(digits) == 9 else 2):
        weights = _INN_WEIGHTS[len(digits)]
        digits.append(sum(d * w for d, w in zip(digits, weights)) % 11 % 10)
    return "".join(map(str, digits[-(1 if len(digits) == 10 else 2):]))


class ImportRowsError(ValueError):
    """The file has bad rows; nothing was written.  `errors`: [(line, reason)]."""

    def __init__(self, source: str, errors: list[tuple[int, str]]):
        self.source = source
        self.errors = sorted(errors)
        lines = [f"  line {line}: {reason}" for line, reason in self.errors[:_SHOWN_ERRORS]]
        if len(self.errors) > _SHOWN_ERRORS:
            lines.append(f"  ... and {len(self.errors) - _SHOWN_ERRORS} more")
        count = len(self.errors)
        super().__init__(f"{source}: {count} bad row{'s' if count != 1 else ''}, nothing imported\n" + "\n".join(lines))


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows per kind, records created and updated per kind,
    the E.164 numbers whose caller profiles may have changed, the new CRM version."""

    rows: dict[str, int]
    created: dict[str, int]
    updated: dict[str, int]
    numbers: frozenset[str] = field(repr=False)  # full numbers: kept out of printed summaries
    crm_version: int = 0

    def __str__(self) -> str:
        parts = [f"{self.rows[kind]} {kind} rows ({self.created[kind]} new, {self.updated[kind]} updated)"
                 for kind in KINDS if self.rows.get(kind)]
        return f"{'; '.join(parts) or 'no rows'}; {len(self.numbers)} numbers touched; CRM version {self.crm_version}"


# --------------------------------------------------------------------------
# Reading


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) for every record; raises ImportRowsError for an unreadable file."""
    source = str(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportRowsError(source, [(line, "not UTF-8 text")]) from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_records(source, text)
    else:
        yield from _json_records(text)


def _csv_records(source: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    header_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportRowsError(source, [(1, f"unreadable CSV header ({exc})")]) from None
    unknown = [name for name in header if name not in _ALL_FIELDS]
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(_shown, unknown))}")
    if "kind" not in header:
        problems.append("no 'kind' column")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        problems.append(f"repeated column(s) {', '.join(map(repr, repeated))}")
    if problems:
        raise ImportRowsError(source, [(1, "; ".join(problems))])
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over the field size limit: the rest cannot be trusted
            yield start, {"_error": f"unreadable CSV ({exc}); the rows after it were not checked"}
            return
        end = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            yield start, {"_error": f"{len(cells)} cells for {len(header)} columns"}
            continue
        yield start, {name: cell.strip() or None for name, cell in zip(header, cells)}


def _json_records(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            yield number, {"_error": f"longer than {MAX_LINE} characters"}
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, {"_error": f"not JSON: {exc.msg} at column {exc.colno}"}
            continue
        except RecursionError:
            yield number, {"_error": "JSON nested too deeply"}
            continue
        if not isinstance(record, dict):
            yield number, {"_error": "not a JSON object"}
            continue
        yield number, record


# --------------------------------------------------------------------------
# Checking one row


class _RowProblem(Exception):
    pass


def _limit(model: type, column: str) -> int | None:
    return getattr(model.__table__.c[column].type, "length", None)


class _Row:
    """Typed access to the fields of one record; problems are collected."""

    def __init__(self, kind: str, record: dict[str, Any]):
        self.kind = kind
        self.record = record
        self.problems: list[str] = []

    def _raw(self, name: str) -> Any:
        value = self.record.get(name)
        if isinstance(value, str):
            value = value.strip() or None
        return value

    def text(self, name: str, *, limit: int | None = None, multiline: bool = False) -> str | None:
        value = self._raw(name)
        if value is None:
            if name in _REQUIRED[self.kind]:
                self.problems.append(f"{name} is missing")
            return None
        if isinstance(value, (dict, list, bool)):
            self.problems.append(f"{name} must be text")
            return None
        value = str(value)
        limit = MAX_TEXT if limit is None else limit
        if len(value) > limit:
            self.problems.append(f"{name} is longer than {limit} characters")
        elif (_CONTROL if multiline else _CONTROL_OR_BREAK).search(value):
            self.problems.append(f"{name} contains control characters")
        elif not _is_unicode(value):
            self.problems.append(f"{name} is not valid Unicode text")
        return value

    def code(self, name: str, *, limit: int | None = None) -> str | None:
        value = self.text(name, limit=limit)
        if value is not None and not _CODE.fullmatch(value):
            self.problems.append(f"{name} {_shown(value)} is not a code (lower-case letters, digits, _)")
        return value

    def boolean(self, name: str) -> bool:
        value = self._raw(name)
        if value is None or isinstance(value, bool):
            return bool(value)
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        word = str(value).lower()
        if word in _TRUE:
            return True
        if word not in _FALSE:
            self.problems.append(f"{name} {_shown(value)} is not true or false")
        return False

    def choice(self, name: str, choices: Iterable[str], default: str, *, upper: bool = False) -> str:
        value = self.text(name)
        if value is None:
            return default
        value = value.upper() if upper else value.lower()
        if value not in choices:
            self.problems.append(f"{name} {_shown(value)} is not one of {', '.join(choices)}")
        return value

    def status(self, name: str, known: frozenset[str]) -> str | None:
        value = self.code(name, limit=_limit(Case, name))
        if value is not None and _CODE.fullmatch(value) and value not in known:
            close = difflib.get_close_matches(value, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problems.append(f"{name} {_shown(value)} is not a known case status{hint}; "
                                 f"known: {', '.join(_ordered(known))}")
        return value

    def language(self, name: str, default: str) -> str:
        value = self.text(name)
        if value is None:
            return default
        code = value.lower()
        if code not in LANGUAGES:
            self.problems.append(f"{name} {_shown(value)} is not an ISO 639-1 language code "
                                 "(two letters, such as ru or en)")
        return code

    def integer(self, name: str, low: int, high: int, default: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value):
            number = int(value)
        if number is None or not low <= number <= high:
            self.problems.append(f"{name} {_shown(value)} is not a whole number from {low} to {high}")
            return default
        return number

    def moment(self, name: str, *, end_of_day: bool = False) -> dt.datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            if len(value) == 10:
                day = dt.date.fromisoformat(value)
                moment = dt.datetime.combine(day, dt.time.max if end_of_day else dt.time.min)
                moment = moment.replace(microsecond=0)
            else:
                moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.problems.append(f"{name} {_shown(value)} is not an ISO date or date-time")
            return None
        return as_utc(moment).astimezone(dt.timezone.utc)

    def facts(self, name: str) -> dict[str, Any]:
        value = self.record.get(name)
        if isinstance(value, str):
            if not value.strip():
                return {}
            if len(value) > MAX_TEXT:
                self.problems.append(f"{name} is longer than {MAX_TEXT} characters")
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                self.problems.append(f"{name} is not JSON: {exc.msg} at column {exc.colno}")
                return {}
            except RecursionError:
                value = None
                self.problems.append(f"{name} is nested more than {MAX_FACTS_DEPTH} levels deep")
                return {}
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{name} must be a JSON object")
            return {}
        problem = _facts_problem(value, 1)
        if problem is not None:
            self.problems.append(f"{name} {problem}")
            return {}
        return value

    def inn(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        if not (value.isascii() and value.isdigit() and len(value) in (10, 12)):
            self.problems.append(f"{name} {_shown(value)} is not 10 or 12 digits")
        elif inn_check_digits(value[:-1 if len(value) == 10 else -2]) != value[-(1 if len(value) == 10 else 2):]:
            self.problems.append(f"{name} {_shown(value)} has wrong check digits")
        return value

    def not_applicable(self) -> None:
        allowed = set(_FIELDS[self.kind]) | {"kind"}
        extra = [name for name, value in self.record.items()
                 if name not in allowed and value not in (None, "")]
        unknown = [name for name in extra if name not in _ALL_FIELDS]
        misplaced = [name for name in extra if name in _ALL_FIELDS]
        if unknown:
            self.problems.append(f"unknown field(s) {', '.join(map(_shown, unknown))}")
        if misplaced:
            self.problems.append(f"field(s) {', '.join(map(_shown, misplaced))} do not apply to {self.kind}")


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON)
        return False
    return True


def _facts_problem(value: Any, depth: int) -> str | None:
    """Why facts cannot be stored as they are, or None: nesting, keys and text are checked."""
    if depth > MAX_FACTS_DEPTH:
        return f"is nested more than {MAX_FACTS_DEPTH} levels deep"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        for part in (key, item):
            if isinstance(part, str) and (_CONTROL.search(part) or not _is_unicode(part)):
                return "contains control characters or invalid Unicode"
        if isinstance(item, (dict, list)):
            problem = _facts_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None


@dataclass
class _Parsed:
    """The checked rows of a file, by kind, with the line each came from."""

    agents: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    organisations: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    customers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    numbers: dict[tuple, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    cases: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    statuses: frozenset[str] = frozenset(CASE_STATUSES)  # the case statuses rows may have

    def rows(self) -> dict[str, int]:
        return {"agent": len(self.agents), "organisation": len(self.organisations),
                "customer": len(self.customers), "number": len(self.numbers), "case": len(self.cases)}


def _check(line: int, record: dict[str, Any], region: str, parsed: _Parsed) -> None:
    if "_error" in record:
        parsed.errors.append((line, record["_error"]))
        return
    kind = record.get("kind")
    kind = kind.strip().lower() if isinstance(kind, str) else kind
    if kind not in KINDS:
        parsed.errors.append((line, f"kind {_shown(kind)} is not one of {', '.join(KINDS)}"
                              if kind else "kind is missing"))
        return
    row = _Row(kind, record)
    row.not_applicable()
    key, values, table = _CHECKERS[kind](row, region, parsed)
    if row.problems:
        parsed.errors.append((line, "; ".join(row.problems)))
        return
    target = getattr(parsed, table)
    if key in target:
        parsed.errors.append((line, f"repeats the {kind} of line {target[key][0]}"))
        return
    target[key] = (line, values)


def _check_agent(row: _Row, region: str, parsed: _Parsed) -> tuple[Any, dict, str]:
    values = {
        "interface": row.text("interface", limit=_limit(Agent, "interface")),
        "name": row.text("name", limit=_limit(Agent, "name")),
        "extension": row.text("extension", limit=_limit(Agent, "extension")),
        "is_manager": row.boolean("is_manager"),
        "team": row.text("team", limit=_limit(Agent, "team")),
    }
    return values["interface"], values, "agents"


def _check_organisation(row: _Row, region: str, parsed: _Parsed) -> tuple[Any, dict, str]:
    values = {
        "inn": row.inn("inn"),
        "name": row.text("name", limit=_limit(Organisation, "name")),
        "segment": row.choice("segment", SEGMENTS, "C", upper=True),
        "is_vip": row.boolean("is_vip"),
        "manager": row.text("manager"),
    }
    return values["inn"], values, "organisations"


def _check_customer(row: _Row, region: str, parsed: _Parsed) -> tuple[Any, dict, str]:
    values = {
        "external_id": row.text("id", limit=_limit(Customer, "external_id")),
        "name": row.text("name", limit=_limit(Customer, "name")),
        "segment": row.choice("segment", SEGMENTS, "C", upper=True),
        "is_vip": row.boolean("is_vip"),
        "language": row.language("language", "ru"),
        "manager": row.text("manager"),
    }
    return values["external_id"], values, "customers"


def _check_number(row: _Row, region: str, parsed: _Parsed) -> tuple[Any, dict, str]:
    raw = row.text("number")
    e164 = normalise(raw, region) if raw is not None else None
    if e164 is not None and not phonenumbers.is_valid_number(phonenumbers.parse(e164)):
        e164 = None
    if raw is not None and e164 is None:
        row.problems.append(f"number {mask(raw)} is not a valid phone number")
    kind = row.choice("role", ROLE_KINDS, ROLE_PRIVATE)
    organisation = row.inn("organisation")
    if kind == ROLE_PRIVATE and organisation is not None:
        row.problems.append("a private role takes no organisation")
    elif kind != ROLE_PRIVATE and organisation is None and kind in ROLE_KINDS:
        row.problems.append(f"a {kind} role needs the organisation's inn")
    values = {"e164": e164, "customer": row.text("customer"), "kind": kind,
              "organisation": organisation}
    return (e164, values["customer"], kind, organisation), values, "numbers"


def _check_case(row: _Row, region: str, parsed: _Parsed) -> tuple[Any, dict, str]:
    values = {
        "external_id": row.text("id", limit=_limit(Case, "external_id")),
        "customer": row.text("customer"),
        "organisation": row.inn("organisation"),
        "product": row.code("product", limit=_limit(Case, "product")),
        "title": row.text("title", limit=_limit(Case, "title")),
        "status": row.status("status", parsed.statuses),
        "priority": row.integer("priority", 1, 5, 3),
        "opened_at": row.moment("opened_at"),
        "due_at": row.moment("due_at", end_of_day=True),
        "customer_owes_next_step": row.boolean("customer_owes_next_step"),
        "facts": row.facts("facts"),
        "notes": row.text("notes", multiline=True),
    }
    return values["external_id"], values, "cases"


_CHECKERS = {
    "agent": _check_agent, "organisation": _check_organisation, "customer": _check_customer,
    "number": _check_number, "case": _check_case,
}


# --------------------------------------------------------------------------
# Writing


async def _ids(conn: AsyncConnection, column: Any, keys: Iterable[Any]) -> dict[Any, int]:
    """{key: id} of the rows whose `column` is among `keys`."""
    table = column.table
    found: dict[Any, int] = {}
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        result = await conn.execute(select(column, table.c.id).where(column.in_(keys[start:start + _CHUNK])))
        found.update(result.all())
    return found


async def _check_references(conn: AsyncConnection, parsed: _Parsed) -> dict[str, dict[Any, int]]:
    """Ids of the referenced records already in the database; unresolved references become errors."""
    wanted: dict[str, set[str]] = {"agent": set(), "organisation": set(), "customer": set()}
    for line, values in (*parsed.organisations.values(), *parsed.customers.values()):
        if values["manager"] and values["manager"] not in parsed.agents:
            wanted["agent"].add(values["manager"])
    for line, values in (*parsed.numbers.values(), *parsed.cases.values()):
        if values["customer"] not in parsed.customers:
            wanted["customer"].add(values["customer"])
        if values["organisation"] and values["organisation"] not in parsed.organisations:
            wanted["organisation"].add(values["organisation"])
    known = {
        "agent": await _ids(conn, Agent.__table__.c.interface, wanted["agent"]),
        "organisation": await _ids(conn, Organisation.__table__.c.inn, wanted["organisation"]),
        "customer": await _ids(conn, Customer.__table__.c.external_id, wanted["customer"]),
    }

    def check(line: int, kind: str, key: str | None, in_file: dict) -> None:
        if key is not None and key not in in_file and key not in known[kind]:
            field_name = "manager" if kind == "agent" else kind
            parsed.errors.append((line, f"{field_name} {_shown(key)} is neither in this file nor in the database"))

    for line, values in (*parsed.organisations.values(), *parsed.customers.values()):
        check(line, "agent", values["manager"], parsed.agents)
    for line, values in (*parsed.numbers.values(), *parsed.cases.values()):
        check(line, "customer", values["customer"], parsed.customers)
        check(line, "organisation", values["organisation"], parsed.organisations)
    return known


async def _upsert(
    conn: AsyncConnection, column: Any, rows: dict[Any, dict[str, Any]], *, keep_when_null: tuple[str, ...] = (),
) -> tuple[dict[Any, int], int, int]:
    """Insert or update `rows` ({key: column values}) by the unique `column`.

    Returns ({key: id}, created, updated).  A column in `keep_when_null` keeps
    its stored value when the row gives None.
    """
    if not rows:
        return {}, 0, 0
    table = column.table
    existing = await _ids(conn, column, rows)
    new = [values for key, values in rows.items() if key not in existing]
    old = [values | {"b_id": existing[key]} for key, values in rows.items() if key in existing]
    if new:
        await conn.execute(insert(table), new)
    if old:
        names = [name for name in old[0] if name != "b_id"]
        assignments = {}
        for name in names:
            value = bindparam(f"b_{name}", type_=table.c[name].type)
            assignments[name] = func.coalesce(value, table.c[name]) if name in keep_when_null else value
        params = [{"b_id": values["b_id"], **{f"b_{name}": values[name] for name in names}} for values in old]
        await conn.execute(update(table).where(table.c.id == bindparam("b_id")).values(assignments), params)
    ids = dict(existing)
    ids.update(await _ids(conn, column, [key for key in rows if key not in existing]))
    return ids, len(new), len(old)


async def _write(conn: AsyncConnection, parsed: _Parsed, known: dict[str, dict[Any, int]],
                 now: dt.datetime, bar: tqdm) -> tuple[dict[str, int], dict[str, int], set[str]]:
    created: dict[str, int] = {}
    updated: dict[str, int] = {}

    agents = {key: values for key, (_, values) in parsed.agents.items()}
    agent_ids, created["agent"], updated["agent"] = await _upsert(conn, Agent.__table__.c.interface, agents)
    bar.update(len(agents))
    agent_ids = {**known["agent"], **agent_ids}

    organisations = {
        key: {**{k: v for k, v in values.items() if k != "manager"},
              "manager_id": agent_ids.get(values["manager"]), "updated_at": now}
        for key, (_, values) in parsed.organisations.items()
    }
    org_ids, created["organisation"], updated["organisation"] = await _upsert(
        conn, Organisation.__table__.c.inn, organisations)
    bar.update(len(organisations))
    org_ids = {**known["organisation"], **org_ids}

    customers = {
        key: {**{k: v for k, v in values.items() if k != "manager"},
              "manager_id": agent_ids.get(values["manager"]), "updated_at": now}
        for key, (_, values) in parsed.customers.items()
    }
    customer_ids, created["customer"], updated["customer"] = await _upsert(
        conn, Customer.__table__.c.external_id, customers)
    bar.update(len(customers))
    customer_ids = {**known["customer"], **customer_ids}

    number_values = [values for _, values in parsed.numbers.values()]
    e164s = {values["e164"] for values in number_values}
    number_ids = await _ids(conn, PhoneNumber.__table__.c.e164, e164s)
    fresh = [{"e164": e164} for e164 in sorted(e164s - set(number_ids))]
    if fresh:
        await conn.execute(insert(PhoneNumber), fresh)
        number_ids.update(await _ids(conn, PhoneNumber.__table__.c.e164, [row["e164"] for row in fresh]))
    wanted_roles = {
        (number_ids[v["e164"]], customer_ids[v["customer"]], v["kind"], org_ids.get(v["organisation"]))
        for v in number_values
    }
    existing_roles: set[tuple] = set()
    numbers_list = sorted({role[0] for role in wanted_roles})
    roles = NumberRole.__table__.c
    for start in range(0, len(numbers_list), _CHUNK):
        result = await conn.execute(
            select(roles.number_id, roles.customer_id, roles.kind, roles.organisation_id)
            .where(roles.number_id.in_(numbers_list[start:start + _CHUNK]))
        )
        existing_roles.update(tuple(row) for row in result)
    new_roles = sorted(wanted_roles - existing_roles, key=lambda role: tuple(-1 if v is None else v for v in role))
    if new_roles:
        await conn.execute(insert(NumberRole), [
            {"number_id": n, "customer_id": c, "kind": k, "organisation_id": o} for n, c, k, o in new_roles
        ])
    created["number"], updated["number"] = len(new_roles), 0
    bar.update(len(number_values))

    cases = {
        key: {
            **{k: v for k, v in values.items() if k not in ("customer", "organisation")},
            "customer_id": customer_ids[values["customer"]],
            "organisation_id": org_ids.get(values["organisation"]),
            "updated_at": now,
        }
        for key, (_, values) in parsed.cases.items()
    }
    existing_cases = await _ids(conn, Case.__table__.c.external_id, cases)
    for key, values in cases.items():
        if key not in existing_cases and values["opened_at"] is None:
            values["opened_at"] = now
    _, created["case"], updated["case"] = await _upsert(
        conn, Case.__table__.c.external_id, cases, keep_when_null=("opened_at",))
    bar.update(len(cases))

    touched = await _touched_numbers(
        conn,
        customers={customer_ids[key] for key in parsed.customers}
        | {customer_ids[v["customer"]] for v in number_values}
        | {values["customer_id"] for values in cases.values()},
        organisations={org_ids[key] for key in parsed.organisations}
        | {org_ids[v["organisation"]] for v in number_values if v["organisation"]}
        | {values["organisation_id"] for values in cases.values() if values["organisation_id"]},
        agents={agent_ids[key] for key in parsed.agents},
    )
    return created, updated, touched | e164s


async def _touched_numbers(conn: AsyncConnection, *, customers: set[int], organisations: set[int],
                           agents: set[int]) -> set[str]:
    """Numbers whose profile shows one of these customers, organisations or managers."""
    roles = NumberRole.__table__.c
    numbers = PhoneNumber.__table__.c
    base = select(numbers.e164).join_from(NumberRole, PhoneNumber, roles.number_id == numbers.id)
    conditions = [
        (roles.customer_id, customers),
        (roles.organisation_id, organisations),
        (roles.customer_id, set(await _managed(conn, Customer, agents))),
        (roles.organisation_id, set(await _managed(conn, Organisation, agents))),
    ]
    found: set[str] = set()
    for column, ids in conditions:
        ids = sorted(ids)
        for start in range(0, len(ids), _CHUNK):
            found.update((await conn.execute(base.where(column.in_(ids[start:start + _CHUNK])))).scalars())
    return found


async def _managed(conn: AsyncConnection, model: type, agents: set[int]) -> list[int]:
    ids = sorted(agents)
    found: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        result = await conn.execute(select(model.id).where(model.manager_id.in_(ids[start:start + _CHUNK])))
        found.extend(result.scalars())
    return found


# --------------------------------------------------------------------------


async def import_file(
    db: Database, path: str | Path, *, region: str = "RU", progress: bool = False,
    statuses: Iterable[str] = CASE_STATUSES,
) -> ImportSummary:
    """Check every row of `path`, then write all of it in one transaction.

    `statuses`: the case statuses a row may have (by default the life cycle's,
    `CASE_STATUSES`).  Raises ImportRowsError (nothing written) when a row is
    wrong, and ValueError for a file that is neither ``.csv`` nor JSON lines.
    """
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv, .jsonl or .ndjson")
    parsed = _Parsed(statuses=frozenset(statuses))
    with tqdm(desc="checking", unit=" rows", disable=not progress) as bar:
        for line, record in _records(path):
            _check(line, record, region, parsed)
            bar.update()
    now = dt.datetime.now(dt.timezone.utc)
    async with db.engine.begin() as conn:
        known = await _check_references(conn, parsed)
        if parsed.errors:
            raise ImportRowsError(str(path), parsed.errors)
        with tqdm(total=sum(parsed.rows().values()), desc="writing", unit=" rows", disable=not progress) as bar:
            created, updated, numbers = await _write(conn, parsed, known, now, bar)
        await bump_crm_version(conn)
        version = await conn.scalar(select(CrmVersion.version).where(CrmVersion.id == 1))
    return ImportSummary(
        rows=parsed.rows(), created=created, updated=updated, numbers=frozenset(numbers), crm_version=version,
    )


def _ordered(statuses: Iterable[str]) -> list[str]:
    """The life cycle's statuses in their order, then any others alphabetically."""
    known = set(statuses)
    return [s for s in CASE_STATUSES if s in known] + sorted(known - set(CASE_STATUSES))


def _format_help() -> str:
    width = max(map(len, KINDS)) + 2
    rows = []
    for kind in KINDS:
        names = [name + ("*" if name in _REQUIRED[kind] else "") for name in _FIELDS[kind]]
        text, lines = "", []
        for name in names:
            if text and len(text) + len(name) + 2 > 62:
                lines.append(text + ",")
                text = ""
            text = f"{text}, {name}" if text else name
        lines.append(text)
        rows.append(f"  {kind:<{width}}{lines[0]}")
        rows += [f"  {'':<{width}}{more}" for more in lines[1:]]
    return "\n".join([
        "file format:",
        "  One record per row (CSV) or per line (JSON lines, .jsonl or .ndjson, one object a line;",
        "  blank lines are skipped). The kind field says what a record is; records refer to each",
        "  other by the ids of the source CRM, so they may come in any order and across files.",
        "",
        f"  {'kind':<{width}}fields (* required)",
        *rows,
        "",
        f"  segment       {', '.join(SEGMENTS)} (default C)",
        "  language      an ISO 639-1 code such as ru or en (default ru)",
        "  manager       the interface of an agent (in the file or already in the database)",
        "  inn           the organisation's tax id: 10 or 12 digits with valid check digits",
        "  number        a phone number in any usual form (8 916 123-45-67, +44 20 7946 0123);",
        "                national numbers are read in the configured region",
        "  customer      (of a number or case) the customer's id",
        "  organisation  (of a number or case) the organisation's inn",
        f"  role          {', '.join(ROLE_KINDS)} (default {ROLE_PRIVATE}); employee and director",
        "                need organisation, private takes none",
        "  product       a code (lower-case letters, digits, _) the intent catalogue matches on",
        f"  status        open: {', '.join(OPEN_STATUSES)};",
        f"                closed: {', '.join(CLOSED_STATUSES)}; or a status the intent catalogue names",
        "  priority      1 (highest) .. 5, default 3",
        "  opened_at, due_at  ISO 8601 dates or date-times, UTC without a time zone",
        "  facts         a JSON object (in CSV, its JSON text)",
        "  is_manager, is_vip, customer_owes_next_step  true/false, yes/no, 1/0, да/нет; empty is false",
        "",
        "  CSV: the first line is the header, kind and any of the fields, separated by commas",
        "  (semicolons and tabs are recognised too); a cell that does not apply to the row's kind",
        "  stays empty:",
        "    kind,id,name,segment,number,customer",
        "    customer,CRM-1001,Петров Иван Сергеевич,B,,",
        "    number,,,,8 916 123-45-67,CRM-1001",
        "  JSON lines: the same records as objects:",
        '    {"kind": "customer", "id": "CRM-1001", "name": "Петров Иван Сергеевич", "segment": "B"}',
        '    {"kind": "number", "number": "8 916 123-45-67", "customer": "CRM-1001"}',
    ])


FORMAT_HELP = _format_help()
