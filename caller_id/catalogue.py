"""The intent catalogue: what callers call about, read from config/intents.yaml.

An administrator describes each intent declaratively: its name (what routing
rules match and what IVR_INTENT carries), titles per language, which CRM cases
point to it, how much each signal weighs, on which dialled lines it is likely
anyway, how the reasons read and, for self-service, the answer to speak.  The
format is documented in the shipped ``config/intents.yaml``.

The file is validated once, strictly: unknown keys, wrong types, texts missing
a language, placeholders that are neither a case field nor a declared fact,
duplicate names and an empty catalogue are each a ConfigError naming the file
and line.  Its texts are compiled on loading by `caller_id.templates`, which
also fills and localises them on a call (`Text.render`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from caller_id.templates import (
    SUPPORTED_LANGUAGES,
    Template,
    TemplateError,
    Text,
    UnknownPlaceholder,
    compile_template,
)
from conffile import ConfigError, LineDict, line_of, load_yaml, parse_yaml, reject_unknown_keys

FACT_KINDS = ("text", "date", "list", "number")

# Placeholders every case offers, with how each is rendered.  `due_in` and
# `updated_ago` are the same day counts as `days_until_due` and
# `days_since_update`, said relatively: "завтра" / "in 3 days", "вчера" / "2 days ago".
CASE_FIELDS: Mapping[str, str] = MappingProxyType({
    "title": "text",
    "product": "text",
    "status": "text",
    "priority": "number",
    "case_id": "number",
    "opened_date": "date",
    "updated_date": "date",
    "due_date": "date",
    "days_overdue": "number",
    "days_until_due": "number",
    "due_in": "days_ahead",
    "days_since_update": "number",
    "updated_ago": "days_ago",
})

# Reasons about the case behind an intent (placeholders: case fields and facts).
CASE_REASONS = ("case", "overdue", "due_soon", "customer_owes", "priority", "recent_update")
# Reasons about the call itself, with the placeholders each offers.
CALL_REASONS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "repeat_calls": {"calls": "number", "days": "number"},
    "escalation": {"calls": "number", "days": "number", "about": "text"},
    "line": {"line": "text"},
    "withheld_caller": {},   # on the fallback, when the caller ID holds no usable number
    "unknown_caller": {},    # on the fallback, when the number is not in the CRM
    "fallback": {},          # on the fallback, when nothing else fits
    "other_question": {},    # on the fallback, when it is only the last resort
})
REASON_KINDS = CASE_REASONS + tuple(CALL_REASONS)
# Every text may name the intent it belongs to.
_EVERYWHERE = {"intent_title": "text"}
_RESERVED_NAMES = frozenset(CASE_FIELDS) | frozenset(_EVERYWHERE) | {
    name for placeholders in CALL_REASONS.values() for name in placeholders
}

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")


# --- the catalogue ---------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Time windows the signals use, in days."""

    due_soon_days: int = 3          # a due date this close (or today) is "due soon"
    overdue_full_days: int = 7      # overdue this long weighs fully; 1 day weighs half
    recent_update_days: int = 7     # a case updated within this counts as fresh
    repeat_call_days: int = 3       # calls about the same intent within this are repeats
    high_priority: int = 2          # the `priority` reason is given for priorities 1..this


@dataclass(frozen=True)
class Weights:
    """How much each signal adds to an intent's score (0..1 each).

    Signals combine as independent evidence: score = 1 - product(1 - s).
    """

    case: float = 0.35            # an open case matches the intent
    priority: float = 0.2         # scaled: priority 1 full .. 5 nothing
    overdue: float = 0.35         # scaled by days overdue (see Settings)
    due_soon: float = 0.15        # scaled: due today full .. due_soon_days less
    customer_owes: float = 0.25   # the customer owes the next step
    recent_update: float = 0.1    # scaled by how fresh the last update is
    repeat_call: float = 0.2      # per earlier call about this intent
    escalation: float = 0.5       # repeated calls about another, unresolved intent


@dataclass(frozen=True)
class CaseMatch:
    """Which cases point to an intent; every condition given must hold.

    Without `statuses`, only open cases match.
    """

    products: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    overdue: bool | None = None
    due_soon: bool | None = None
    customer_owes_next_step: bool | None = None
    has_facts: tuple[str, ...] = ()
    priority_at_most: int | None = None


@dataclass(frozen=True)
class Escalation:
    """The intent gains when one other intent was called about `calls` times in `days`."""

    calls: int
    days: int


@dataclass(frozen=True, eq=False)
class IntentSpec:
    name: str
    title: Mapping[str, str]  # per language
    cases: CaseMatch | None
    prior: float
    lines: Mapping[str, float]
    escalation: Escalation | None
    weights: Weights
    reasons: Mapping[str, Text]  # its own wording; the catalogue's `reasons` otherwise
    answer: Text | None

    @property
    def is_self_service(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True, eq=False)
class IntentCatalogue:
    source: str
    languages: tuple[str, ...]
    settings: Settings
    intents: tuple[IntentSpec, ...]
    fallback: IntentSpec
    facts: Mapping[str, str]
    reasons: Mapping[str, Text]  # the default wording of each reason kind
    _by_name: Mapping[str, IntentSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {spec.name: spec for spec in self.intents})

    @property
    def default_language(self) -> str:
        return self.languages[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def intent(self, name: str) -> IntentSpec:
        """The intent called `name`; KeyError when the catalogue has none."""
        return self._by_name[name]

    def language_for(self, *preferences: str | None) -> str:
        """The first preferred language the catalogue speaks, else its default."""
        for language in preferences:
            if language in self.languages:
                return language
        return self.default_language


def load_catalogue(path: str | Path) -> IntentCatalogue:
    """Read and validate a catalogue file; any mistake is a ConfigError with its line."""
    return _build(load_yaml(path), str(path))


def parse_catalogue(text: str, source: str) -> IntentCatalogue:
    """Validate catalogue YAML text; `source` names it in errors."""
    return _build(parse_yaml(text, source), source)


# --- validation --------------------------------------------------------------

_TOP_KEYS = ("languages", "settings", "weights", "facts", "terms", "reasons", "fallback", "intents")
_INTENT_KEYS = ("name", "title", "cases", "prior", "lines", "escalation", "weights", "reasons", "answer")
_CASE_KEYS = tuple(f.name for f in fields(CaseMatch))


class _Reader:
    """Validation helpers bound to one source file."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, line: int | None, message: str) -> ConfigError:
        return ConfigError(self.source, line, message)

    def mapping(self, node: Any, line: int | None, what: str) -> LineDict:
        if not isinstance(node, dict):
            raise self.fail(line_of(node) or line, f"{what} must be a mapping, got {_shown(node)}")
        for key in node:
            if not isinstance(key, str):
                raise self.fail(node.line if isinstance(node, LineDict) else line,
                                f"{what}: keys must be names, got {key!r}")
        return node

    def only_keys(self, node: LineDict, known: tuple[str, ...] | frozenset[str], what: str) -> None:
        reject_unknown_keys(node, known, self.source, what)

    def number(self, value: Any, line: int | None, what: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(line, f"{what} must be a number from {low:g} to {high:g}, got {_shown(value)}")
        return float(value)

    def whole(self, value: Any, line: int | None, what: str, low: int, high: int = 10_000) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(line, f"{what} must be a whole number from {low} to {high}, got {_shown(value)}")
        return value

    def flag(self, value: Any, line: int | None, what: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(line, f"{what} must be true or false, got {_shown(value)}")
        return value

    def names(self, value: Any, line: int | None, what: str) -> tuple[str, ...]:
        if (not isinstance(value, list) or not value
                or not all(isinstance(item, str) and item for item in value)):
            raise self.fail(line, f"{what} must be a non-empty list of names, got {_shown(value)}")
        return tuple(value)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _build(data: Any, source: str) -> IntentCatalogue:
    reader = _Reader(source)
    if data is None:
        raise reader.fail(None, "the catalogue is empty: it needs `intents` and a `fallback`")
    top = reader.mapping(data, None, "the catalogue")
    reader.only_keys(top, _TOP_KEYS, "catalogue section")
    for required in ("intents", "fallback"):
        if required not in top:
            raise reader.fail(top.line, f"the catalogue needs `{required}`")

    languages = _languages(reader, top)
    settings = _numbers_section(reader, top, "settings", "setting", Settings,
                                lambda v, line, what: reader.whole(v, line, what, 1))
    weights = _numbers_section(reader, top, "weights", "weight", Weights,
                               lambda v, line, what: reader.number(v, line, what, 0, 1))
    if settings.high_priority > 5:
        raise reader.fail(top["settings"].line_of("high_priority"),
                          "settings.high_priority must be a priority from 1 to 5")
    facts = _facts(reader, top)
    terms = _terms(reader, top, languages)
    texts = _TextCompiler(reader, languages, facts, terms)
    defaults = _reasons(reader, texts, top.get("reasons"), top.line_of("reasons"), "reasons")

    node = top["intents"]
    if not isinstance(node, list) or not node:
        raise reader.fail(line_of(node) or top.line_of("intents"),
                          "intents must be a non-empty list: the catalogue is empty")
    intents: list[IntentSpec] = []
    first_line: dict[str, int | None] = {}
    for item in node:
        spec = _intent(reader, texts, item, node.line, weights, facts)
        if spec.name in first_line:
            raise reader.fail(line_of(item, "name"),
                              f"duplicate intent {spec.name!r} (first on line {first_line[spec.name]})")
        first_line[spec.name] = line_of(item, "name")
        intents.append(spec)

    fallback_name = top["fallback"]
    fallback = next((spec for spec in intents if spec.name == fallback_name), None)
    if fallback is None:
        raise reader.fail(top.line_of("fallback"),
                          f"fallback {fallback_name!r} is not one of the intents")
    for spec in intents:
        if spec is not fallback and not (spec.cases or spec.lines or spec.escalation):
            raise reader.fail(first_line[spec.name],
                              f"intent {spec.name!r} can never be predicted: "
                              "give it `cases`, `lines` or `escalation`")
    return IntentCatalogue(
        source=source, languages=languages, settings=settings, intents=tuple(intents),
        fallback=fallback, facts=MappingProxyType(facts), reasons=MappingProxyType(defaults),
    )


def _languages(reader: _Reader, top: LineDict) -> tuple[str, ...]:
    line = top.line_of("languages")
    languages = reader.names(top.get("languages", list(SUPPORTED_LANGUAGES)), line, "languages")
    for language in languages:
        if language not in SUPPORTED_LANGUAGES:
            raise reader.fail(line, f"language {language!r} is not supported "
                                    f"(dates and word forms exist for {', '.join(SUPPORTED_LANGUAGES)})")
    if len(set(languages)) != len(languages):
        raise reader.fail(line, "languages lists a language twice")
    return languages


def _numbers_section(reader: _Reader, top: LineDict, key: str, label: str, cls: type, check) -> Any:
    if key not in top:
        return cls()
    node = reader.mapping(top[key], top.line_of(key), key)
    reader.only_keys(node, tuple(f.name for f in fields(cls)), label)
    return cls(**{name: check(value, node.line_of(name), f"{key}.{name}") for name, value in node.items()})


def _facts(reader: _Reader, top: LineDict) -> dict[str, str]:
    if "facts" not in top:
        return {}
    node = reader.mapping(top["facts"], top.line_of("facts"), "facts")
    for name, kind in node.items():
        line = node.line_of(name)
        if not _NAME.match(name):
            raise reader.fail(line, f"fact name {name!r} must be lower case letters, digits and _")
        if name in _RESERVED_NAMES:
            raise reader.fail(line, f"fact name {name!r} is already a built-in placeholder")
        if kind not in FACT_KINDS:
            raise reader.fail(line, f"fact {name!r}: kind must be one of {', '.join(FACT_KINDS)}, "
                                    f"got {_shown(kind)}")
    return dict(node)


def _terms(reader: _Reader, top: LineDict, languages: tuple[str, ...]) -> Mapping[str, Mapping[str, str]]:
    if "terms" not in top:
        return MappingProxyType({})
    node = reader.mapping(top["terms"], top.line_of("terms"), "terms")
    terms = {}
    for term, translations in node.items():
        what = f"term {term!r}"
        translations = reader.mapping(translations, node.line_of(term), what)
        _check_languages(reader, translations, languages, what)
        terms[term] = MappingProxyType(dict(translations))
    return MappingProxyType(terms)


def _check_languages(reader: _Reader, node: LineDict, languages: tuple[str, ...], what: str) -> None:
    reader.only_keys(node, languages, f"language in {what}")
    for language in languages:
        if language not in node:
            raise reader.fail(node.line, f"{what} has no {language!r} text")
        if not isinstance(node[language], str) or not node[language].strip():
            raise reader.fail(node.line_of(language),
                              f"{what}.{language} must be text, got {_shown(node[language])}")


class _TextCompiler:
    """Turns `{ru: ..., en: ...}` mappings into compiled `Text`s."""

    def __init__(self, reader: _Reader, languages: tuple[str, ...], facts: dict[str, str],
                 terms: Mapping[str, Mapping[str, str]]):
        self.reader = reader
        self.languages = languages
        self.terms = terms
        self.case_placeholders = {**CASE_FIELDS, **facts, **_EVERYWHERE}

    def placeholders_for(self, kind: str) -> Mapping[str, str]:
        """What the texts of a reason kind may name."""
        if kind in CALL_REASONS:
            return {**CALL_REASONS[kind], **_EVERYWHERE}
        return self.case_placeholders

    def text(self, node: Any, line: int | None, what: str, placeholders: Mapping[str, str]) -> Text:
        node = self.reader.mapping(node, line, what)
        _check_languages(self.reader, node, self.languages, what)
        templates = {
            language: self._compile(node[language], language, placeholders,
                                    node.line_of(language), f"{what}.{language}")
            for language in self.languages
        }
        named = frozenset(name for template in templates.values() for name in template.placeholders)
        return Text(templates=MappingProxyType(templates), terms=self.terms, placeholders=named)

    def _compile(self, text: str, language: str, placeholders: Mapping[str, str],
                 line: int | None, what: str) -> Template:
        try:
            return compile_template(text, language, placeholders)
        except UnknownPlaceholder as exc:
            known = ", ".join(sorted(placeholders)) or "none here"
            raise self.reader.fail(line, f"{what}: {exc}; it is neither a case field nor a declared fact "
                                         f"(known: {known})") from None
        except TemplateError as exc:
            raise self.reader.fail(line, f"{what}: {exc}") from None


def _reasons(reader: _Reader, texts: _TextCompiler, node: Any, line: int | None,
             what: str) -> dict[str, Text]:
    if node is None:
        return {}
    node = reader.mapping(node, line, what)
    reader.only_keys(node, REASON_KINDS, "reason")
    return {
        kind: texts.text(value, node.line_of(kind), f"{what}.{kind}", texts.placeholders_for(kind))
        for kind, value in node.items()
    }


def _intent(reader: _Reader, texts: _TextCompiler, item: Any, list_line: int | None,
            weights: Weights, facts: dict[str, str]) -> IntentSpec:
    item = reader.mapping(item, list_line, "each intent")
    reader.only_keys(item, _INTENT_KEYS, "intent setting")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise reader.fail(item.line_of("name"),
                          f"each intent needs a name of lower case letters, digits and _ "
                          f"(at most 64), got {_shown(name)}")
    what = f"intent {name!r}"
    if "title" not in item:
        raise reader.fail(item.line, f"{what} needs a title")
    title_text = texts.text(item["title"], item.line_of("title"), f"{what} title", {})
    title = MappingProxyType({language: title_text.render(language, {}, dt.date.min)
                              for language in texts.languages})

    cases = None
    if "cases" in item:
        cases = _case_match(reader, item["cases"], item.line_of("cases"), what, facts)

    prior = reader.number(item.get("prior", 0), item.line_of("prior"), f"{what} prior", 0, 1)
    lines: dict[str, float] = {}
    if "lines" in item:
        node = reader.mapping(item["lines"], item.line_of("lines"), f"{what} lines")
        lines = {line: reader.number(v, node.line_of(line), f"{what} lines.{line}", 0, 1)
                 for line, v in node.items()}

    escalation = None
    if "escalation" in item:
        node = reader.mapping(item["escalation"], item.line_of("escalation"), f"{what} escalation")
        reader.only_keys(node, ("calls", "days"), "escalation setting")
        for key in ("calls", "days"):
            if key not in node:
                raise reader.fail(node.line, f"{what} escalation needs `{key}`")
        escalation = Escalation(
            calls=reader.whole(node["calls"], node.line_of("calls"), f"{what} escalation.calls", 1),
            days=reader.whole(node["days"], node.line_of("days"), f"{what} escalation.days", 1),
        )

    own_weights = weights
    if "weights" in item:
        node = reader.mapping(item["weights"], item.line_of("weights"), f"{what} weights")
        reader.only_keys(node, tuple(f.name for f in fields(Weights)), "weight")
        own_weights = Weights(**{
            **{f.name: getattr(weights, f.name) for f in fields(Weights)},
            **{k: reader.number(v, node.line_of(k), f"{what} weights.{k}", 0, 1) for k, v in node.items()},
        })

    own = _reasons(reader, texts, item.get("reasons"), item.line_of("reasons"), f"{what} reasons")
    if cases is None:
        for kind in own:
            if kind in CASE_REASONS:
                raise reader.fail(item["reasons"].line_of(kind),
                                  f"{what}: reason {kind!r} is about a case, but the intent has no `cases`")

    answer = None
    if "answer" in item:
        answer = texts.text(item["answer"], item.line_of("answer"), f"{what} answer",
                            texts.case_placeholders)
    return IntentSpec(
        name=name, title=title, cases=cases, prior=prior, lines=MappingProxyType(lines),
        escalation=escalation, weights=own_weights,
        reasons=MappingProxyType(own), answer=answer,
    )


def _case_match(reader: _Reader, node: Any, line: int | None, what: str,
                facts: dict[str, str]) -> CaseMatch:
    node = reader.mapping(node, line, f"{what} cases")
    reader.only_keys(node, _CASE_KEYS, "case condition")
    if not node:
        raise reader.fail(node.line or line, f"{what} cases: give at least one condition")
    values: dict[str, Any] = {}
    for key, value in node.items():
        key_line = node.line_of(key)
        label = f"{what} cases.{key}"
        if key in ("products", "statuses"):
            values[key] = frozenset(reader.names(value, key_line, label))
        elif key == "has_facts":
            names = reader.names(value, key_line, label)
            for fact in names:
                if fact not in facts:
                    raise reader.fail(key_line, f"{label}: {fact!r} is not a declared fact")
            values[key] = names
        elif key == "priority_at_most":
            values[key] = reader.whole(value, key_line, label, 1, 5)
        else:
            values[key] = reader.flag(value, key_line, label)
    return CaseMatch(**values)
