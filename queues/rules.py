"""Routing rules: which queue a call goes to, at what priority, and how.

An administrator writes the rules in a YAML file (``config/routing.yaml``)::

    schedules:                      # named business hours
      contact_center:
        timezone: Europe/Moscow
        open:
          - {days: mon-fri, hours: "08:00-21:00"}
          - {days: [sat, sun], hours: ["10:00-14:00", "15:00-18:00"]}
        closed: [01-01, 2026-05-11]     # every 1 January; one particular day

    defaults:                       # optional
      priority: 10                  # for rules that set none
      queue: support                # when no rule matches (else end in a catch-all)

    rules:                          # the first rule whose conditions all hold decides
      - name: vip-desk
        when: {vip: true}
        queue: vip
        priority: 90
      - name: after-hours
        when:
          not: {business_hours: contact_center}
        queue: after_hours
        announcement: after_hours
      - name: everyone-else         # no `when`: matches every call
        queue: support

Conditions under ``when`` are AND-ed; a list means "any of".  Conditions
under ``when: {not: {...}}`` are each negated and AND-ed with the rest.
A caller that is unknown has no segment, role, organisation or language, so
a positive condition on those is false and a negated one true.

The file is validated once, when it is loaded; every mistake is a
`ConfigError` naming the file and line.  Given the queues Asterisk defines
(`load_asterisk_queues` reads them from a ``queues.conf``), a rule or the
defaults naming any other queue is such a mistake too: Asterisk would send
the caller to a queue that does not exist.  Conditions are compiled into small
closures then, so `RuleSet.decide`, which runs on every call, only calls
them in order.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import re
import zoneinfo
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from caller_id.profile import ROLE_KINDS, SEGMENTS, CallerView
from conffile import ConfigError, did_you_mean, line_of, load_yaml, parse_yaml, reject_unknown_keys

log = logging.getLogger(__name__)

PRIORITY_RANGE = (0, 100)
MANAGER_FIRST_RANGE = (1, 99)  # seconds; the dialplan accepts one or two digits
DEFAULT_RULE_NAME = "default"  # names the decision taken by `defaults`
_NAME_LENGTH = 80  # the call record's `rule` and `queue` columns
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

_TOP_KEYS = ("schedules", "defaults", "rules")
_DEFAULT_KEYS = ("queue", "priority")
_ACTION_KEYS = ("queue", "priority", "manager_first", "announcement", "self_service")
_RULE_KEYS = ("name", "when", *_ACTION_KEYS)
_SCHEDULE_KEYS = ("timezone", "open", "closed")
_PERIOD_KEYS = ("days", "hours")
_BOOL_CONDITIONS = ("vip", "known", "has_manager")
_SET_CONDITIONS = ("segment", "role", "organisation", "line", "intent", "language", "business_hours")
_NEGATION = "not"
_CONDITION_KEYS = (*_BOOL_CONDITIONS, *_SET_CONDITIONS, _NEGATION)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\Z")
_ANNUAL_DATE = re.compile(r"(\d{2})-(\d{2})\Z")

# The queues.conf the rules are checked against: $IVR_QUEUES_CONF, else the
# one shipped in asterisk_conf/ (when the checkout has it).
QUEUES_CONF_ENV = "IVR_QUEUES_CONF"
SHIPPED_QUEUES_CONF = Path(__file__).resolve().parent.parent / "asterisk_conf" / "queues.conf"


@dataclass(frozen=True)
class RoutingFacts:
    """What routing looks at for one call.  `now` should be timezone-aware
    (a naive time is taken as UTC)."""

    view: CallerView
    line: str | None
    intent: str | None
    now: dt.datetime


@dataclass(frozen=True)
class RouteDecision:
    """Where a call goes: `queue` at `priority` (QUEUE_PRIO, higher first),
    after ringing `manager_interface` for `manager_timeout` seconds when set,
    after playing `announcement` when set.  `rule` names the deciding rule.  `self_service`:
    whether the caller hears the line's self-service dialog first (False: a person at once)."""

    queue: str
    priority: int
    rule: str
    manager_interface: str | None = None
    manager_timeout: int | None = None
    announcement: str | None = None
    self_service: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "priority": self.priority,
            "rule": self.rule,
            "manager_interface": self.manager_interface,
            "manager_timeout": self.manager_timeout,
            "announcement": self.announcement,
            "self_service": self.self_service,
        }


@dataclass(frozen=True)
class Rule:
    """One rule as written: `when` maps condition names to their values
    (lists as tuples; a `not` block as a nested mapping)."""

    name: str
    line: int
    queue: str
    priority: int
    when: Mapping[str, Any] = field(default_factory=dict, hash=False)
    manager_first: int | None = None
    announcement: str | None = None
    self_service: bool | None = None  # None: yes, unless the personal manager rings first

    @property
    def is_catch_all(self) -> bool:
        return not self.when


_Test = Callable[[RoutingFacts], bool]


@dataclass(frozen=True)
class _CompiledRule:
    tests: tuple[_Test, ...]
    decision: RouteDecision  # without a manager
    manager_timeout: int | None
    manager_self_service: bool = False  # with the manager ringing first: no menu unless the rule says so


class RuleSet:
    """Validated rules, ready to decide.  Build it with `load_rules` or `parse_rules`."""

    def __init__(self, source: str, rules: tuple[Rule, ...], compiled: tuple[_CompiledRule, ...],
                 default: RouteDecision):
        self.source = source
        self.rules = rules
        self._compiled = compiled
        self._default = default
        self.queues = frozenset({rule.queue for rule in rules} | {default.queue})

    def decide(self, facts: RoutingFacts) -> RouteDecision:
        """The decision of the first rule whose conditions all hold.

        Never raises: a rule whose test fails on odd facts is skipped (and
        logged), and with no rule left the defaults decide.
        """
        for rule in self._compiled:
            try:
                for test in rule.tests:
                    if not test(facts):
                        break
                else:
                    if rule.manager_timeout is not None:
                        manager = facts.view.manager
                        if manager is not None and manager.interface:
                            return replace(rule.decision, manager_interface=manager.interface,
                                           manager_timeout=rule.manager_timeout,
                                           self_service=rule.manager_self_service)
                    return rule.decision
            except Exception:  # fail open: the next rule or the defaults decide
                log.exception("routing rule %r failed on this call; skipped", rule.decision.rule)
        return self._default

    def __repr__(self) -> str:
        return f"<RuleSet {self.source}: {len(self.rules)} rules>"


def load_rules(path: str | Path, *, lines: Collection[str] | None = None,
               intents: Collection[str] | None = None, queues: AsteriskQueues | None = None) -> RuleSet:
    """Read and validate a rules file.

    When `lines` or `intents` are given (the line names of the server
    configuration, the intent names the predictor knows), a condition
    naming anything else is an error, so a typo cannot silently never match.
    When `queues` is given (Asterisk's queues, `load_asterisk_queues`), so
    is a queue Asterisk does not define.
    """
    with _value_errors_as_config_errors(str(path)):
        data = load_yaml(path)
    return _build(data, str(path), lines, intents, queues)


def parse_rules(text: str, source: str = "<rules>", *, lines: Collection[str] | None = None,
                intents: Collection[str] | None = None, queues: AsteriskQueues | None = None) -> RuleSet:
    """Validate rules given as YAML text; `source` names it in errors."""
    with _value_errors_as_config_errors(source):
        data = parse_yaml(text, source)
    return _build(data, source, lines, intents, queues)


# --- Asterisk's queues (queues.conf) ------------------------------------------


@dataclass(frozen=True)
class AsteriskQueues:
    """The queues an Asterisk configuration defines: name -> (file, line) of its section."""

    source: str  # the queues.conf read (its #includes are in `defined`)
    defined: Mapping[str, tuple[str, int]]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.defined)


class QueuesNotChecked(Exception):
    """The queues cannot be known from the file (it is absent, or built by #exec): the check is skipped.
    `str()` says why, naming the file."""


def queues_conf_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The queues.conf to check rules against: $IVR_QUEUES_CONF, else the shipped one.

    None when the variable is set but empty: the operator turned the check off.
    """
    environ = os.environ if environ is None else environ
    if QUEUES_CONF_ENV in environ:
        value = environ[QUEUES_CONF_ENV].strip()
        return Path(value).expanduser() if value else None
    return SHIPPED_QUEUES_CONF


def load_asterisk_queues(path: str | Path) -> AsteriskQueues:
    """The queues of an Asterisk ``queues.conf``: its ``[sections]``, #include and #tryinclude followed.

    ``[general]`` and templates (``[name](!)``) are not queues; ``[name](+)``
    adds to a queue.  Relative includes are read, as Asterisk reads them, from
    the configuration directory, taken to be the file's own.  Raises
    QueuesNotChecked when the file does not exist or uses #exec, and
    ConfigError (file and line) when it cannot be read or a section header
    or include is malformed.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise QueuesNotChecked(f"{path}: {what}")
    defined: dict[str, tuple[str, int]] = {}
    _read_queues_conf(path, path.parent, defined, (), None)
    return AsteriskQueues(str(path), defined)


def parse_asterisk_queues(text: str, source: str = "queues.conf") -> AsteriskQueues:
    """The queues of queues.conf text (includes are refused: there is no directory to read them from)."""
    defined: dict[str, tuple[str, int]] = {}
    _queues_conf_text(text, source, None, defined, ())
    return AsteriskQueues(source, defined)


_SECTION = re.compile(r"\[([^\[\]]+)\]\s*(?:\(([^()]*)\))?\s*\Z")
_DIRECTIVE = re.compile(r"#\s*(include|tryinclude|exec)\b\s*(.*)\Z", re.IGNORECASE)
_NOT_QUEUES = frozenset({"general"})
_INCLUDE_DEPTH = 10


def _read_queues_conf(path: Path, directory: Path, defined: dict[str, tuple[str, int]],
                      stack: tuple[str, ...], included_at: tuple[str, int] | None) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        source, line = included_at or (str(path), None)
        raise ConfigError(source, line, f"cannot read {path}: {exc.strerror or exc}") from None
    _queues_conf_text(text, str(path), directory, defined, (*stack, str(path.resolve())))


def _queues_conf_text(text: str, source: str, directory: Path | None, defined: dict[str, tuple[str, int]],
                      stack: tuple[str, ...]) -> None:
    comment_depth = 0  # ;-- block comments --; (they nest)
    for number, raw in enumerate(text.splitlines(), start=1):
        line, comment_depth = _without_comments(raw, comment_depth)
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            _directive(line, source, number, directory, defined, stack)
        elif line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                raise ConfigError(source, number, f"malformed section header {line[:60]!r}; expected [name] "
                                                  "or [name](template,...)")
            name = match.group(1).strip()
            options = {option.strip() for option in (match.group(2) or "").split(",")}
            if "!" not in options and name.lower() not in _NOT_QUEUES:
                defined.setdefault(name, (source, number))


def _directive(line: str, source: str, number: int, directory: Path | None,
               defined: dict[str, tuple[str, int]], stack: tuple[str, ...]) -> None:
    match = _DIRECTIVE.match(line)
    if match is None:
        raise ConfigError(source, number, f"unknown directive {line[:60]!r}; expected #include or #tryinclude")
    kind, target = match.group(1).lower(), match.group(2).strip().strip('"<>').strip()
    if kind == "exec":
        raise QueuesNotChecked(f"{source}, line {number}: #exec builds queues when Asterisk loads the file")
    if not target:
        raise ConfigError(source, number, f"#{kind} names no file")
    if directory is None:
        raise ConfigError(source, number, f"#{kind} {target!r}: cannot be followed from text without a directory")
    if len(stack) >= _INCLUDE_DEPTH:
        raise ConfigError(source, number, f"#{kind} nested more than {_INCLUDE_DEPTH} files deep")
    pattern = Path(target).expanduser()
    pattern = pattern if pattern.is_absolute() else directory / pattern
    paths = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        if kind == "tryinclude":
            return
        raise ConfigError(source, number, f"#include {target!r}: {pattern} not found")
    for found in paths:
        if str(Path(found).resolve()) in stack:
            raise ConfigError(source, number, f"#{kind} {target!r} includes itself")
        _read_queues_conf(Path(found), directory, defined, stack, (source, number))


def _without_comments(line: str, depth: int) -> tuple[str, int]:
    """The line without ``;`` comments (``\\;`` is a semicolon) and ``;-- --;`` blocks, and the block depth after it."""
    kept: list[str] = []
    i = 0
    while i < len(line):
        if depth:
            if line.startswith("--;", i):
                depth -= 1
                i += 3
            elif line.startswith(";--", i):
                depth += 1
                i += 3
            else:
                i += 1
            continue
        char = line[i]
        if char == "\\" and line.startswith(";", i + 1):
            kept.append(";")
            i += 2
        elif line.startswith(";--", i):
            depth += 1
            i += 3
        elif char == ";":
            break
        else:
            kept.append(char)
            i += 1
    return "".join(kept), depth


@contextmanager
def _value_errors_as_config_errors(source: str) -> Iterator[None]:
    # PyYAML raises a bare ValueError, without a line, for an impossible
    # timestamp such as 2026-13-01; it must still be a ConfigError.
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(source, None, f"impossible value ({exc}); check the dates in the file") from None


# --- validation and compilation --------------------------------------------


class _Schedule:
    """Business hours compiled to minute ranges per weekday in one time zone."""

    __slots__ = ("name", "zone", "ranges", "closed_dates", "closed_annual")

    def __init__(self, name: str, zone: zoneinfo.ZoneInfo, ranges: tuple[tuple[tuple[int, int], ...], ...],
                 closed_dates: frozenset[dt.date], closed_annual: frozenset[tuple[int, int]]):
        self.name = name
        self.zone = zone
        self.ranges = ranges  # index: weekday (Monday 0); (start, end) minutes of the day
        self.closed_dates = closed_dates
        self.closed_annual = closed_annual

    def is_open(self, now: dt.datetime) -> bool:
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
        local = now.astimezone(self.zone)
        day = local.date()
        if day in self.closed_dates or (day.month, day.day) in self.closed_annual:
            return False
        minute = local.hour * 60 + local.minute
        for start, end in self.ranges[local.weekday()]:
            if start <= minute < end:
                return True
        return False


class _Builder:
    def __init__(self, source: str, lines: Collection[str] | None, intents: Collection[str] | None,
                 queues: AsteriskQueues | None = None):
        self.source = source
        self.lines = lines
        self.intents = intents
        self.asterisk_queues = queues
        self.schedules: dict[str, _Schedule] = {}

    def fail(self, line: int | None, message: str) -> ConfigError:
        return ConfigError(self.source, line, message)

    def check_keys(self, mapping: dict, allowed: tuple[str, ...], what: str,
                   hints: Mapping[str, str] | None = None) -> None:
        reject_unknown_keys(mapping, allowed, self.source, what, hints=hints)

    # schedules

    def schedule(self, name: Any, spec: Any, line: int | None) -> _Schedule:
        if not isinstance(name, str) or not name:
            raise self.fail(line, f"a schedule name must be text, got {name!r}")
        if not isinstance(spec, dict):
            raise self.fail(line, f"schedule {name!r} must be a mapping with timezone, open and closed")
        self.check_keys(spec, _SCHEDULE_KEYS, f"key in schedule {name!r}")
        for key in ("timezone", "open"):
            if key not in spec:
                raise self.fail(line_of(spec), f"schedule {name!r} needs {key!r}")
        zone = self.zone(spec["timezone"], line_of(spec, "timezone"))
        periods = spec["open"]
        open_line = line_of(spec, "open")
        if isinstance(periods, dict):
            periods = [periods]
        if not isinstance(periods, list) or not periods:
            raise self.fail(open_line, f"schedule {name!r}: 'open' must be a list of {{days, hours}} periods")
        ranges: list[list[tuple[int, int]]] = [[] for _ in _DAYS]
        for period in periods:
            period_line = line_of(period) or open_line
            if not isinstance(period, dict):
                raise self.fail(period_line, f"schedule {name!r}: each period is a mapping with days and hours")
            self.check_keys(period, _PERIOD_KEYS, "key in an opening period")
            if "hours" not in period:
                raise self.fail(period_line, f"schedule {name!r}: a period needs 'hours', e.g. \"09:00-18:00\"")
            days = self.days(period["days"], line_of(period, "days")) if "days" in period else range(7)
            for start, end in self.hours(period["hours"], line_of(period, "hours")):
                for day in days:
                    if end <= 24 * 60:
                        ranges[day].append((start, end))
                    else:  # runs past midnight into the next day
                        ranges[day].append((start, 24 * 60))
                        ranges[(day + 1) % 7].append((0, end - 24 * 60))
        dates, annual = self.closed(spec.get("closed"), line_of(spec, "closed"))
        return _Schedule(name, zone, tuple(tuple(sorted(r)) for r in ranges), dates, annual)

    def zone(self, value: Any, line: int | None) -> zoneinfo.ZoneInfo:
        if not isinstance(value, str) or not value:
            raise self.fail(line, f"timezone must be a name such as 'Europe/Moscow', got {value!r}")
        try:
            return zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            hint = did_you_mean(value, zoneinfo.available_timezones())
            raise self.fail(line, f"unknown timezone {value!r}{hint}") from None

    def days(self, value: Any, line: int | None) -> list[int]:
        items = value if isinstance(value, list) else [value]
        result: list[int] = []
        for item in items:
            if not isinstance(item, str):
                raise self.fail(line, f"days: expected day names such as mon or mon-fri, got {item!r}")
            first, sep, last = item.partition("-")
            start = self.day(first, line)
            if not sep:
                result.append(start)
                continue
            end = self.day(last, line)
            result.extend((start + i) % 7 for i in range((end - start) % 7 + 1))
        if not result:
            raise self.fail(line, "days: the list is empty")
        return sorted(set(result))

    def day(self, text: str, line: int | None) -> int:
        word = text.strip().lower()
        if word in _DAYS:
            return _DAYS.index(word)
        if word in _FULL_DAYS:
            return _FULL_DAYS.index(word)
        hint = did_you_mean(word, _DAYS + _FULL_DAYS)
        raise self.fail(line, f"unknown day {text!r}{hint} (use mon, tue, wed, thu, fri, sat, sun)")

    def hours(self, value: Any, line: int | None) -> list[tuple[int, int]]:
        items = value if isinstance(value, list) else [value]
        result = []
        for item in items:
            match = _HOURS.match(item.strip()) if isinstance(item, str) else None
            if match is None:
                raise self.fail(line, f"hours: expected a range such as \"09:00-18:00\", got {item!r}")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
                raise self.fail(line, f"hours: {item!r} is not a time of day (00:00 to 24:00)")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start == end:
                raise self.fail(line, f"hours: {item!r} is empty; for the whole day write \"00:00-24:00\"")
            result.append((start, end if end > start else end + 24 * 60))
        if not result:
            raise self.fail(line, "hours: the list is empty")
        return result

    def closed(self, value: Any, line: int | None) -> tuple[frozenset[dt.date], frozenset[tuple[int, int]]]:
        if value is None:
            return frozenset(), frozenset()
        items = value if isinstance(value, list) else [value]
        dates: set[dt.date] = set()
        annual: set[tuple[int, int]] = set()
        for item in items:
            if isinstance(item, dt.date) and not isinstance(item, dt.datetime):
                dates.add(item)
                continue
            text = item.strip() if isinstance(item, str) else None
            try:
                if text is not None and _ANNUAL_DATE.match(text):
                    month, day = int(text[:2]), int(text[3:])
                    dt.date(2000, month, day)  # a leap year, so 02-29 passes
                    annual.add((month, day))
                    continue
                if text is not None:
                    dates.add(dt.date.fromisoformat(text))
                    continue
            except ValueError:
                pass
            raise self.fail(line, f"closed: expected dates as YYYY-MM-DD (one day) or MM-DD (every year), got {item!r}")
        return frozenset(dates), frozenset(annual)

    # rules

    def conditions(self, when: Any, line: int | None, *, negated: bool = False) -> tuple[dict[str, Any], list[_Test]]:
        """The `when` mapping as plain values, and its compiled tests."""
        where = "'not'" if negated else "'when'"
        if not isinstance(when, dict) or not when:
            if negated:
                raise self.fail(line, "'not' needs a mapping of conditions to negate")
            raise self.fail(line, "'when' must be a mapping of conditions; leave it out for a catch-all rule")
        hints = {key: f"is an action: put it beside 'when', not under {where}" for key in _ACTION_KEYS}
        allowed = _CONDITION_KEYS if not negated else _CONDITION_KEYS[:-1]
        if negated and _NEGATION in when:
            raise self.fail(line_of(when, _NEGATION), "'not' cannot be nested in 'not'")
        self.check_keys(when, allowed, "condition", hints)
        plain: dict[str, Any] = {}
        tests: list[_Test] = []
        for key, value in when.items():
            key_line = line_of(when, key)
            if key == _NEGATION:
                inner, inner_tests = self.conditions(value, key_line, negated=True)
                plain[key] = inner
                tests.extend(_negate(test) for test in inner_tests)
            elif key in _BOOL_CONDITIONS:
                if not isinstance(value, bool):
                    raise self.fail(key_line, f"{key}: expected true or false, got {value!r}")
                plain[key] = value
                tests.append(_BOOL_TESTS[key](value))
            else:
                values = self.values(key, value, key_line)
                plain[key] = values
                tests.append(self.set_test(key, values))
        return plain, tests

    def values(self, key: str, value: Any, line: int | None) -> tuple[Any, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(line, f"{key}: the list is empty, so the rule could never match")
        allowed_types: tuple[type, ...] = (str, int) if key == "organisation" else (str,)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, allowed_types) or item == "":
                quote = " (put it in quotes: YAML reads yes/no/on/off as true/false)" if isinstance(item, bool) else ""
                raise self.fail(line, f"{key}: expected a name or a list of names, got {item!r}{quote}")
        known: Collection[str] | None = {
            "segment": SEGMENTS, "role": ROLE_KINDS, "business_hours": tuple(self.schedules),
            "line": self.lines, "intent": self.intents,
        }.get(key)
        if known is not None:
            for item in items:
                if item not in known:
                    hint = did_you_mean(item, known)
                    what = "schedule (see 'schedules')" if key == "business_hours" else key
                    choices = ", ".join(known) if known else "none defined"
                    raise self.fail(line, f"unknown {what} {item!r}{hint}; expected one of: {choices}")
        return tuple(items)

    def set_test(self, key: str, values: tuple[Any, ...]) -> _Test:
        wanted = frozenset(values)
        if key == "segment":
            return lambda f: f.view.segment in wanted
        if key == "role":
            return lambda f: f.view.role is not None and f.view.role.kind in wanted
        if key == "line":
            return lambda f: f.line in wanted
        if key == "intent":
            return lambda f: f.intent in wanted
        if key == "language":
            return lambda f: f.view.language in wanted
        if key == "organisation":
            ids = frozenset(v for v in values if isinstance(v, int))
            names = frozenset(v.casefold() for v in values if isinstance(v, str))

            def organisation_test(f: RoutingFacts) -> bool:
                org = f.view.organisation
                return org is not None and (org.id in ids or org.name.casefold() in names)

            return organisation_test
        # business_hours: open in any of the named schedules
        schedules = tuple(self.schedules[name] for name in values)
        if len(schedules) == 1:
            is_open = schedules[0].is_open
            return lambda f: is_open(f.now)
        return lambda f: any(s.is_open(f.now) for s in schedules)

    def rule(self, item: Any, rules_line: int | None, defaults: dict[str, Any]) -> tuple[Rule, list[_Test]]:
        line = line_of(item) or rules_line
        if not isinstance(item, dict):
            raise self.fail(line, f"each rule must be a mapping with name, when and queue; got {item!r}")
        hints = {key: "is a condition: put it under 'when'" for key in _CONDITION_KEYS}
        self.check_keys(item, _RULE_KEYS, "rule key", hints)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(line_of(item, "name") if "name" in item else line, "every rule needs a 'name' (text)")
        if len(name) > _NAME_LENGTH:
            raise self.fail(line_of(item, "name"), f"rule name longer than {_NAME_LENGTH} characters")
        if name == DEFAULT_RULE_NAME:
            raise self.fail(line_of(item, "name"),
                            f"the rule name {DEFAULT_RULE_NAME!r} is kept for calls no rule matches")
        when: dict[str, Any] = {}
        tests: list[_Test] = []
        if "when" in item:
            when, tests = self.conditions(item["when"], line_of(item, "when"))
        if "queue" not in item:
            raise self.fail(line, f"rule {name!r} needs a 'queue'")
        queue = self.queue(item["queue"], line_of(item, "queue"))
        priority = defaults["priority"]
        if "priority" in item:
            priority = self.number(item["priority"], line_of(item, "priority"), "priority", PRIORITY_RANGE)
        manager_first = None
        if "manager_first" in item:
            manager_first = self.number(item["manager_first"], line_of(item, "manager_first"),
                                        "manager_first (seconds)", MANAGER_FIRST_RANGE)
        announcement = item.get("announcement")
        if "announcement" in item and (not isinstance(announcement, str) or not announcement.strip()):
            raise self.fail(line_of(item, "announcement"), "announcement: expected a prompt name or text")
        self_service = item.get("self_service")
        if "self_service" in item and not isinstance(self_service, bool):
            raise self.fail(line_of(item, "self_service"),
                            f"self_service: expected true or false, got {self_service!r}")
        rule = Rule(name=name, line=line or 0, queue=queue, priority=priority, when=when,
                    manager_first=manager_first, announcement=announcement, self_service=self_service)
        return rule, tests

    def queue(self, value: Any, line: int | None) -> str:
        if not isinstance(value, str) or not _QUEUE_NAME.match(value) or len(value) > _NAME_LENGTH:
            raise self.fail(line, f"queue: expected an Asterisk queue name (letters, digits, _ . -), got {value!r}")
        known = self.asterisk_queues
        if known is not None and value not in known.defined:
            names = sorted(known.defined)
            same = [name for name in names if name.casefold() == value.casefold()]
            hint = f"; it is written {same[0]!r} there" if same else did_you_mean(value, names)
            raise self.fail(line, f"queue {value!r} is not defined in {known.source}{hint}; "
                                  f"its queues: {', '.join(names) or 'none'}")
        return value

    def number(self, value: Any, line: int | None, what: str, bounds: tuple[int, int]) -> int:
        low, high = bounds
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(line, f"{what}: expected a whole number from {low} to {high}, got {value!r}")
        return value


def _negate(test: _Test) -> _Test:
    return lambda f: not test(f)


_BOOL_TESTS: dict[str, Callable[[bool], _Test]] = {
    "vip": lambda want: (lambda f: bool(f.view.is_vip) is want),
    "known": lambda want: (lambda f: f.view.is_known is want),
    "has_manager": lambda want: (lambda f: f.view.has_manager is want),
}


def _generalises(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> bool:
    """True when every call matching `later` also matches `earlier`.

    Conservative: it compares conditions key by key (a list matches any of
    its values), so it finds rules made unreachable by a broader rule above,
    not every logical implication.
    """
    for key, value in earlier.items():
        if key not in later:
            return False
        other = later[key]
        if key == _NEGATION:
            # earlier excludes values X, later excludes Y: later implies earlier when X <= Y
            for inner_key, inner_value in value.items():
                if inner_key not in other or not _covers(other[inner_key], inner_value):
                    return False
        elif not _covers(value, other):
            return False
    return True


def _covers(broad: Any, narrow: Any) -> bool:
    if isinstance(broad, tuple):
        return set(narrow) <= set(broad)
    return broad == narrow


def _build(data: Any, source: str, lines: Collection[str] | None, intents: Collection[str] | None,
           queues: AsteriskQueues | None = None) -> RuleSet:
    b = _Builder(source, lines, intents, queues)
    if data is None:
        raise b.fail(None, "the rules file is empty; it needs at least a 'rules' list")
    if not isinstance(data, dict):
        raise b.fail(line_of(data), "the rules file must be a mapping with 'rules' (and optionally 'schedules', 'defaults')")
    b.check_keys(data, _TOP_KEYS, "section")

    schedules = data.get("schedules") or {}
    if not isinstance(schedules, dict):
        raise b.fail(line_of(data, "schedules"), "'schedules' must map schedule names to their hours")
    for name, spec in schedules.items():
        b.schedules[name] = b.schedule(name, spec, line_of(schedules, name))

    defaults_spec = data.get("defaults") or {}
    defaults_line = line_of(data, "defaults")
    if not isinstance(defaults_spec, dict):
        raise b.fail(defaults_line, "'defaults' must be a mapping with queue and/or priority")
    b.check_keys(defaults_spec, _DEFAULT_KEYS, "key in defaults")
    defaults: dict[str, Any] = {"priority": 0, "queue": None}
    if "priority" in defaults_spec:
        defaults["priority"] = b.number(defaults_spec["priority"], line_of(defaults_spec, "priority"),
                                        "priority", PRIORITY_RANGE)
    if "queue" in defaults_spec:
        defaults["queue"] = b.queue(defaults_spec["queue"], line_of(defaults_spec, "queue"))

    items = data.get("rules")
    rules_line = line_of(data, "rules") or None
    if not isinstance(items, list) or not items:
        raise b.fail(rules_line, "'rules' must be a non-empty list of rules")
    rules: list[Rule] = []
    compiled: list[_CompiledRule] = []
    seen: dict[str, Rule] = {}
    for item in items:
        rule, tests = b.rule(item, rules_line, defaults)
        if rule.name in seen:
            raise b.fail(rule.line, f"duplicate rule name {rule.name!r} (first used at line {seen[rule.name].line})")
        for earlier in rules:
            if _generalises(earlier.when, rule.when):
                why = "matches every call" if earlier.is_catch_all else "matches every call this one does"
                raise b.fail(rule.line, f"rule {rule.name!r} can never match: rule {earlier.name!r} "
                                        f"at line {earlier.line} above it {why}")
        seen[rule.name] = rule
        rules.append(rule)
        decision = RouteDecision(queue=rule.queue, priority=rule.priority, rule=rule.name,
                                 announcement=rule.announcement, self_service=rule.self_service is not False)
        compiled.append(_CompiledRule(tuple(tests), decision, rule.manager_first, rule.self_service is True))

    if defaults["queue"] is not None:
        default = RouteDecision(defaults["queue"], defaults["priority"], DEFAULT_RULE_NAME)
    elif rules[-1].is_catch_all:
        default = compiled[-1].decision
    else:
        raise b.fail(rules[-1].line, "no rule matches every call: end the rules with a catch-all "
                                     "(a rule without 'when') or set 'queue' in 'defaults'")
    return RuleSet(source, tuple(rules), tuple(compiled), default)
