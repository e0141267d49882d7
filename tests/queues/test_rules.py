"""Routing rules: loading, validation with file and line, and decisions."""

from __future__ import annotations

import datetime as dt
import textwrap
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from caller_id.profile import Customer, CallerView, Manager, Organisation, Role
from conffile import ConfigError
from ivr.config import load_config
from queues.rules import RoutingFacts, RouteDecision, RuleSet, load_rules, parse_rules

PROJECT = Path(__file__).resolve().parents[2]
MSK = ZoneInfo("Europe/Moscow")
WEDNESDAY_NOON = dt.datetime(2026, 3, 4, 12, 0, tzinfo=MSK)
ANNA = Manager(id=7, name="Anna", interface="PJSIP/1001")
UNKNOWN = CallerView(number=None)


def caller(*, segment: str | None = "C", vip: bool = False, role: str = "private",
           organisation: Organisation | None = None, manager: Manager | None = None,
           language: str = "ru") -> CallerView:
    customer = Customer(id=1, name="Ivan", segment=segment or "C", language=language)
    return CallerView(
        number="+79161234567", customer=customer,
        role=Role(kind=role, customer_id=1, organisation=organisation),
        segment=segment, is_vip=vip, language=language, manager=manager,
    )


def facts(view: CallerView | None = None, *, line: str | None = "general", intent: str | None = None,
          now: dt.datetime = WEDNESDAY_NOON) -> RoutingFacts:
    return RoutingFacts(view=caller() if view is None else view, line=line, intent=intent, now=now)


def rules(text: str, **known) -> RuleSet:
    return parse_rules(textwrap.dedent(text), "routing.yaml", **known)


def one_rule(when: str, **action: str) -> RuleSet:
    """A rule `hit` (queue `hit`) with the given conditions, then a catch-all to `miss`."""
    conditions = textwrap.indent(textwrap.dedent(when).strip(), " " * 6)
    actions = "".join(f"    {key}: {value}\n" for key, value in {"queue": "hit", **action}.items())
    return parse_rules(
        "schedules:\n"
        "  office:\n"
        "    timezone: Europe/Moscow\n"
        '    open: [{days: mon-fri, hours: "09:00-18:00"}]\n'
        "rules:\n"
        "  - name: hit\n"
        "    when:\n"
        f"{conditions}\n{actions}"
        "  - name: miss\n"
        "    queue: miss\n",
        "routing.yaml",
    )


def queue_for(ruleset: RuleSet, **kwargs) -> str:
    return ruleset.decide(facts(**kwargs)).queue


# --- conditions ------------------------------------------------------------


@pytest.mark.parametrize("when, matching, other", [
    ("vip: true", caller(vip=True), caller(vip=False)),
    ("vip: false", caller(vip=False), caller(vip=True)),
    ("segment: A", caller(segment="A"), caller(segment="B")),
    ("segment: [A, B]", caller(segment="B"), caller(segment="C")),
    ("role: director", caller(role="director"), caller(role="employee")),
    ("role: [employee, director]", caller(role="employee"), caller(role="private")),
    ("organisation: acme ltd", caller(organisation=Organisation(3, "ACME Ltd", "B")),
     caller(organisation=Organisation(4, "Other", "B"))),
    ("organisation: [42, Globex]", caller(organisation=Organisation(42, "Initech", "B")),
     caller(organisation=Organisation(43, "Initech", "B"))),
    ("has_manager: true", caller(manager=ANNA), caller()),
    ("has_manager: false", caller(), caller(manager=ANNA)),
    ("language: en", caller(language="en"), caller(language="ru")),
    ("known: true", caller(), UNKNOWN),
    ("known: false", UNKNOWN, caller()),
])
def test_each_caller_condition_matches_its_callers_only(when, matching, other):
    ruleset = one_rule(when)
    assert queue_for(ruleset, view=matching) == "hit"
    assert queue_for(ruleset, view=other) == "miss"


def test_line_condition_matches_any_listed_dialled_line():
    ruleset = one_rule("line: [b2b, b2c]")
    assert queue_for(ruleset, line="b2c") == "hit"
    assert queue_for(ruleset, line="general") == "miss"
    assert queue_for(ruleset, line=None) == "miss"


def test_intent_condition_matches_the_predicted_top_intent():
    ruleset = one_rule("intent: [overdue, complaint]")
    assert queue_for(ruleset, intent="complaint") == "hit"
    assert queue_for(ruleset, intent="card_ready") == "miss"
    assert queue_for(ruleset, intent=None) == "miss"


def test_conditions_of_one_rule_must_all_hold():
    ruleset = one_rule("""
        line: b2b
        role: director
        """)
    assert queue_for(ruleset, view=caller(role="director"), line="b2b") == "hit"
    assert queue_for(ruleset, view=caller(role="director"), line="b2c") == "miss"
    assert queue_for(ruleset, view=caller(role="employee"), line="b2b") == "miss"


def test_not_block_negates_each_condition_inside_it():
    ruleset = one_rule("""
        line: b2b
        not:
          segment: [A, B]
          role: director
        """)
    assert queue_for(ruleset, view=caller(segment="C", role="employee"), line="b2b") == "hit"
    assert queue_for(ruleset, view=caller(segment="A", role="employee"), line="b2b") == "miss"
    assert queue_for(ruleset, view=caller(segment="C", role="director"), line="b2b") == "miss"


def test_unknown_caller_fails_positive_and_passes_negated_caller_conditions():
    positive = one_rule("segment: [A, B, C, D]")
    negated = one_rule("not: {segment: [A, B, C, D], role: private, language: ru}")
    assert queue_for(positive, view=UNKNOWN) == "miss"
    assert queue_for(negated, view=UNKNOWN) == "hit"


def test_business_hours_condition_is_true_inside_the_schedule_and_negatable():
    inside = one_rule("business_hours: office")
    outside = one_rule("not: {business_hours: office}")
    evening = dt.datetime(2026, 3, 4, 19, 0, tzinfo=MSK)
    assert queue_for(inside, now=WEDNESDAY_NOON) == "hit"
    assert queue_for(inside, now=evening) == "miss"
    assert queue_for(outside, now=evening) == "hit"


# --- business hours --------------------------------------------------------


def schedule(spec: str) -> RuleSet:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "    ")
    return rules("schedules:\n  hours:\n" + body + """
rules:
  - name: open
    when: {business_hours: hours}
    queue: open
  - name: closed
    queue: closed
""")


def is_open(ruleset: RuleSet, when: dt.datetime) -> bool:
    return queue_for(ruleset, now=when) == "open"


def test_business_hours_include_the_start_minute_and_exclude_the_end_minute():
    office = schedule("""
        timezone: Europe/Moscow
        open: [{days: mon-fri, hours: "09:00-18:00"}]
        """)
    wednesday = dt.datetime(2026, 3, 4, tzinfo=MSK)
    assert not is_open(office, wednesday.replace(hour=8, minute=59, second=59))
    assert is_open(office, wednesday.replace(hour=9))
    assert is_open(office, wednesday.replace(hour=17, minute=59, second=59))
    assert not is_open(office, wednesday.replace(hour=18))
    assert not is_open(office, dt.datetime(2026, 3, 7, 12, tzinfo=MSK))  # Saturday


def test_business_hours_with_different_hours_per_day_and_a_lunch_break():
    office = schedule("""
        timezone: Europe/Moscow
        open:
          - days: [mon, tue, wed, thu, friday]
            hours: ["09:00-13:00", "14:00-18:00"]
          - days: sat
            hours: "10:00-14:00"
        """)
    assert not is_open(office, dt.datetime(2026, 3, 4, 13, 30, tzinfo=MSK))
    assert is_open(office, dt.datetime(2026, 3, 4, 14, 0, tzinfo=MSK))
    assert is_open(office, dt.datetime(2026, 3, 7, 11, 0, tzinfo=MSK))
    assert not is_open(office, dt.datetime(2026, 3, 7, 15, 0, tzinfo=MSK))


def test_night_shift_runs_past_midnight_into_the_next_day():
    night = schedule("""
        timezone: Europe/Moscow
        open: [{days: fri, hours: "22:00-06:00"}]
        """)
    assert is_open(night, dt.datetime(2026, 3, 6, 23, 30, tzinfo=MSK))  # Friday night
    assert is_open(night, dt.datetime(2026, 3, 7, 5, 59, tzinfo=MSK))  # Saturday morning
    assert not is_open(night, dt.datetime(2026, 3, 7, 6, 0, tzinfo=MSK))
    assert not is_open(night, dt.datetime(2026, 3, 6, 3, 0, tzinfo=MSK))  # Thursday's night: not in the schedule
    assert not is_open(night, dt.datetime(2026, 3, 7, 23, 0, tzinfo=MSK))


def test_week_range_may_wrap_around_sunday():
    weekend = schedule("""
        timezone: Europe/Moscow
        open: [{days: sat-mon, hours: "00:00-24:00"}]
        """)
    assert is_open(weekend, dt.datetime(2026, 3, 8, 23, 59, tzinfo=MSK))  # Sunday
    assert is_open(weekend, dt.datetime(2026, 3, 9, 0, 0, tzinfo=MSK))  # Monday
    assert not is_open(weekend, dt.datetime(2026, 3, 10, 12, 0, tzinfo=MSK))  # Tuesday


def test_business_hours_are_taken_in_the_schedules_time_zone():
    vladivostok = schedule("""
        timezone: Asia/Vladivostok
        open: [{days: mon-fri, hours: "09:00-18:00"}]
        """)
    utc = dt.timezone.utc
    # 09:00 Wednesday in Vladivostok (UTC+10) is 23:00 Tuesday UTC.
    assert is_open(vladivostok, dt.datetime(2026, 3, 3, 23, 0, tzinfo=utc))
    assert not is_open(vladivostok, dt.datetime(2026, 3, 4, 8, 0, tzinfo=utc))  # 18:00 there
    assert is_open(vladivostok, dt.datetime(2026, 3, 4, 3, 0, tzinfo=MSK))  # 10:00 there


def test_business_hours_follow_daylight_saving_time():
    london = schedule("""
        timezone: Europe/London
        open: [{hours: "09:00-17:00"}]
        """)
    utc = dt.timezone.utc
    assert is_open(london, dt.datetime(2026, 1, 14, 9, 0, tzinfo=utc))  # GMT: 09:00 there
    assert not is_open(london, dt.datetime(2026, 7, 15, 16, 30, tzinfo=utc))  # BST: 17:30 there
    assert is_open(london, dt.datetime(2026, 7, 15, 8, 0, tzinfo=utc))  # BST: 09:00 there


def test_closed_dates_close_the_whole_day_once_or_every_year():
    office = schedule("""
        timezone: Europe/Moscow
        open: [{hours: "00:00-24:00"}]
        closed: [01-01, 2026-03-04]
        """)
    assert not is_open(office, dt.datetime(2026, 3, 4, 12, tzinfo=MSK))
    assert is_open(office, dt.datetime(2027, 3, 4, 12, tzinfo=MSK))
    assert not is_open(office, dt.datetime(2026, 1, 1, 0, 0, tzinfo=MSK))
    assert not is_open(office, dt.datetime(2031, 1, 1, 23, 59, tzinfo=MSK))
    assert is_open(office, dt.datetime(2031, 1, 2, 0, 0, tzinfo=MSK))


def test_holiday_is_judged_by_the_date_in_the_schedules_time_zone():
    office = schedule("""
        timezone: Europe/Moscow
        open: [{hours: "00:00-24:00"}]
        closed: [01-01]
        """)
    # 22:00 UTC on 31 December is already 1 January in Moscow.
    assert not is_open(office, dt.datetime(2026, 12, 31, 22, 0, tzinfo=dt.timezone.utc))
    assert is_open(office, dt.datetime(2026, 12, 31, 20, 0, tzinfo=dt.timezone.utc))


@pytest.fixture
def server_in_tokyo(monkeypatch):
    """The server's own time zone, which a naive time must not be read in."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_time_is_taken_as_utc(server_in_tokyo):
    office = schedule("""
        timezone: Europe/Moscow
        open: [{hours: "09:00-18:00"}]
        """)
    assert is_open(office, dt.datetime(2026, 3, 4, 6, 0))  # 09:00 in Moscow
    assert not is_open(office, dt.datetime(2026, 3, 4, 15, 0))  # 18:00 in Moscow


def test_business_hours_list_means_open_in_any_of_the_schedules():
    ruleset = rules("""
        schedules:
          mornings: {timezone: UTC, open: [{hours: "06:00-12:00"}]}
          evenings: {timezone: UTC, open: [{hours: "18:00-22:00"}]}
        rules:
          - name: staffed
            when: {business_hours: [mornings, evenings]}
            queue: staffed
          - name: rest
            queue: rest
        """)
    utc = dt.timezone.utc
    assert queue_for(ruleset, now=dt.datetime(2026, 3, 4, 7, tzinfo=utc)) == "staffed"
    assert queue_for(ruleset, now=dt.datetime(2026, 3, 4, 19, tzinfo=utc)) == "staffed"
    assert queue_for(ruleset, now=dt.datetime(2026, 3, 4, 15, tzinfo=utc)) == "rest"


# --- ordering, defaults and actions ----------------------------------------


def test_first_matching_rule_decides_even_when_later_rules_match_too():
    ruleset = rules("""
        rules:
          - name: vip
            when: {vip: true}
            queue: vip
          - name: tier-a
            when: {segment: A}
            queue: key_accounts
          - name: all
            queue: support
        """)
    assert ruleset.decide(facts(caller(segment="A", vip=True))).rule == "vip"
    assert ruleset.decide(facts(caller(segment="A"))).rule == "tier-a"
    assert ruleset.decide(facts(caller(segment="C"))).rule == "all"


def test_defaults_decide_when_no_rule_matches():
    ruleset = rules("""
        defaults: {queue: support, priority: 3}
        rules:
          - name: vip
            when: {vip: true}
            queue: vip
        """)
    assert ruleset.decide(facts()) == RouteDecision(queue="support", priority=3, rule="default")


def test_rule_without_priority_takes_the_default_priority():
    ruleset = rules("""
        defaults: {priority: 15}
        rules:
          - name: all
            queue: support
        """)
    assert ruleset.decide(facts()).priority == 15


def test_priority_and_announcement_of_the_rule_are_in_the_decision():
    ruleset = one_rule("vip: false", priority="70", announcement="please_hold")
    decision = ruleset.decide(facts())
    assert decision == RouteDecision(queue="hit", priority=70, rule="hit", announcement="please_hold")
    assert decision.to_dict() == {
        "queue": "hit", "priority": 70, "rule": "hit",
        "manager_interface": None, "manager_timeout": None, "announcement": "please_hold",
        "self_service": True,
    }


def test_a_rule_may_send_its_callers_to_a_person_without_the_self_service_dialog():
    assert one_rule("vip: true", self_service="false").decide(facts(caller(vip=True))).self_service is False
    assert one_rule("vip: true").decide(facts(caller(vip=True))).self_service is True  # the default


def test_a_manager_first_rule_holds_no_one_in_a_menu_unless_it_says_so():
    with_manager, without = facts(caller(segment="A", manager=ANNA)), facts(caller(segment="A", manager=None))
    ruleset = one_rule("segment: [A, B]", manager_first="20")
    assert ruleset.decide(with_manager).self_service is False  # the manager rings at once
    assert ruleset.decide(without).self_service is True  # no manager to ring: the line's dialog
    asked = one_rule("segment: [A, B]", manager_first="20", self_service="true")
    assert asked.decide(with_manager).self_service is True


def test_manager_first_rings_the_callers_personal_manager_before_the_queue():
    ruleset = one_rule("segment: [A, B]", manager_first="20")
    decision = ruleset.decide(facts(caller(segment="A", manager=ANNA)))
    assert (decision.queue, decision.manager_interface, decision.manager_timeout) == ("hit", "PJSIP/1001", 20)


def test_manager_first_without_a_manager_routes_straight_to_the_queue():
    ruleset = one_rule("segment: [A, B]", manager_first="20")
    decision = ruleset.decide(facts(caller(segment="A", manager=None)))
    assert decision.queue == "hit"
    assert decision.manager_interface is None and decision.manager_timeout is None


def test_queues_name_every_queue_a_decision_can_use():
    ruleset = rules("""
        defaults: {queue: fallback}
        rules:
          - name: vip
            when: {vip: true}
            queue: vip
          - name: b2b
            when: {line: b2b}
            queue: b2b
        """)
    assert ruleset.queues == {"vip", "b2b", "fallback"}
    assert [rule.name for rule in ruleset.rules] == ["vip", "b2b"]


def test_a_rule_failing_on_odd_facts_is_skipped_and_the_next_decides():
    ruleset = rules("""
        rules:
          - name: vip
            when: {vip: true}
            queue: vip
          - name: b2b
            when: {line: b2b}
            queue: b2b
          - name: all
            queue: support
        """)
    broken = RoutingFacts(view=None, line="b2b", intent=None, now=WEDNESDAY_NOON)  # type: ignore[arg-type]
    assert ruleset.decide(broken).queue == "b2b"


# --- broken files ----------------------------------------------------------

# Each case marks the line the error must name with "# <-".
BROKEN = {
    "typo in a condition": ("""
        rules:
          - name: tier-a
            when:
              segmnt: A   # <-
            queue: key_accounts
        """, "unknown condition 'segmnt'; did you mean 'segment'?"),
    "typo in an action": ("""
        rules:
          - name: all
            queue: support
            priorty: 5   # <-
        """, "did you mean 'priority'?"),
    "typo in a section": ("""
        rule:   # <-
          - name: all
            queue: support
        """, "did you mean 'rules'?"),
    "condition beside when": ("""
        rules:
          - name: vip
            vip: true   # <-
            queue: vip
        """, "'vip' is a condition: put it under 'when'"),
    "action under when": ("""
        rules:
          - name: vip
            when:
              vip: true
              queue: vip   # <-
        """, "'queue' is an action"),
    "unknown segment": ("""
        rules:
          - name: x
            when:
              segment: [A, E]   # <-
            queue: support
        """, "unknown segment 'E'; expected one of: A, B, C, D"),
    "misspelt role": ("""
        rules:
          - name: x
            when:
              role: directr   # <-
            queue: support
        """, "unknown role 'directr'; did you mean 'director'?"),
    "unknown schedule": ("""
        schedules:
          office: {timezone: UTC, open: [{hours: "09:00-18:00"}]}
        rules:
          - name: x
            when:
              business_hours: ofice   # <-
            queue: support
        """, "unknown schedule (see 'schedules') 'ofice'; did you mean 'office'?"),
    "duplicate rule name": ("""
        rules:
          - name: vip
            when: {vip: true}
            queue: vip
          - name: vip   # <-
            when: {segment: A}
            queue: key_accounts
        """, "duplicate rule name 'vip' (first used at line 2)"),
    "hour out of range": ("""
        schedules:
          office:
            timezone: UTC
            open:
              - hours: "09:00-25:00"   # <-
        rules:
          - {name: all, queue: support}
        """, "'09:00-25:00' is not a time of day"),
    "hours not a range": ("""
        schedules:
          office:
            timezone: UTC
            open:
              - hours: 9-18   # <-
        rules:
          - {name: all, queue: support}
        """, "expected a range such as \"09:00-18:00\", got '9-18'"),
    "empty hours": ("""
        schedules:
          office:
            timezone: UTC
            open:
              - hours: "09:00-09:00"   # <-
        rules:
          - {name: all, queue: support}
        """, "for the whole day write \"00:00-24:00\""),
    "misspelt day": ("""
        schedules:
          office:
            timezone: UTC
            open:
              - days: [mon, thurs]   # <-
                hours: "09:00-18:00"
        rules:
          - {name: all, queue: support}
        """, "unknown day 'thurs'; did you mean 'thursday'?"),
    "misspelt time zone": ("""
        schedules:
          office:
            timezone: Europe/Moskow   # <-
            open: [{hours: "09:00-18:00"}]
        rules:
          - {name: all, queue: support}
        """, "unknown timezone 'Europe/Moskow'; did you mean 'Europe/Moscow'?"),
    "impossible closed date": ("""
        schedules:
          office:
            timezone: UTC
            open: [{hours: "09:00-18:00"}]
            closed: [01-01, 02-30]   # <-
        rules:
          - {name: all, queue: support}
        """, "closed: expected dates as YYYY-MM-DD (one day) or MM-DD (every year), got '02-30'"),
    "rule without a queue": ("""
        rules:
          - name: vip   # <-
            when: {vip: true}
          - {name: all, queue: support}
        """, "rule 'vip' needs a 'queue'"),
    "rule without a name": ("""
        rules:
          - queue: vip   # <-
          - {name: all, queue: support}
        """, "every rule needs a 'name'"),
    "rule after the catch-all": ("""
        rules:
          - name: everyone
            queue: support
          - name: vip   # <-
            when: {vip: true}
            queue: vip
        """, "rule 'vip' can never match: rule 'everyone' at line 2 above it matches every call"),
    "rule shadowed by a broader rule": ("""
        rules:
          - name: tiers
            when: {segment: [A, B]}
            queue: key_accounts
          - name: tier-a-vip   # <-
            when: {segment: A, vip: true}
            queue: vip
          - {name: all, queue: support}
        """, "rule 'tier-a-vip' can never match: rule 'tiers' at line 2"),
    "no catch-all and no default": ("""
        rules:
          - name: vip   # <-
            when: {vip: true}
            queue: vip
        """, "no rule matches every call"),
    "priority out of range": ("""
        rules:
          - name: all
            queue: support
            priority: 150   # <-
        """, "priority: expected a whole number from 0 to 100, got 150"),
    "manager_first with a unit": ("""
        rules:
          - name: all
            queue: support
            manager_first: 20s   # <-
        """, "manager_first (seconds): expected a whole number"),
    "self_service as text": ("""
        rules:
          - name: all
            queue: support
            self_service: "no"   # <-
        """, "self_service: expected true or false, got 'no'"),
    "manager_first longer than the dialplan rings": ("""
        rules:
          - name: all
            queue: support
            manager_first: 120   # <-
        """, "manager_first (seconds): expected a whole number from 1 to 99, got 120"),
    "flag given as text": ("""
        rules:
          - name: vip
            when:
              vip: "yes"   # <-
            queue: vip
          - {name: all, queue: support}
        """, "vip: expected true or false, got 'yes'"),
    "language read by YAML as false": ("""
        rules:
          - name: norwegian
            when:
              language: no   # <-
            queue: support
          - {name: all, queue: support}
        """, "put it in quotes"),
    "queue name with a space": ("""
        rules:
          - name: all
            queue: first line   # <-
        """, "expected an Asterisk queue name"),
    "nested not": ("""
        rules:
          - name: x
            when:
              not:
                not: {vip: true}   # <-
            queue: support
          - {name: all, queue: support}
        """, "'not' cannot be nested"),
    "empty when": ("""
        rules:
          - name: x
            when: {}   # <-
            queue: support
        """, "leave it out for a catch-all rule"),
    "empty list": ("""
        rules:
          - name: x
            when:
              segment: []   # <-
            queue: support
          - {name: all, queue: support}
        """, "the list is empty"),
    "reserved rule name": ("""
        rules:
          - name: default   # <-
            queue: support
        """, "kept for calls no rule matches"),
    "YAML syntax error": ("""
        rules:
          - name: all
            queue: support: now   # <-
        """, "mapping values are not allowed here"),
    "list instead of a mapping": ("""
        - name: all   # <-
          queue: support
        """, "must be a mapping with 'rules'"),
}


@pytest.mark.parametrize("text, message", BROKEN.values(), ids=BROKEN.keys())
def test_broken_file_reports_the_line_and_what_is_wrong(text, message):
    text = textwrap.dedent(text).lstrip("\n")
    marked = [number for number, line in enumerate(text.splitlines(), 1) if "# <-" in line]
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "routing.yaml")
    error = caught.value
    assert (error.source, error.line) == ("routing.yaml", marked[0]), str(error)
    assert message in error.message
    assert str(error).startswith(f"routing.yaml, line {error.line}: ")


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_is_an_error(text):
    with pytest.raises(ConfigError, match="routing.yaml: the rules file is empty"):
        parse_rules(text, "routing.yaml")


def test_impossible_date_is_an_error_naming_the_file():
    text = """
        schedules:
          office: {timezone: UTC, open: [{hours: "09:00-18:00"}], closed: [2026-13-01]}
        rules:
          - {name: all, queue: support}
        """
    with pytest.raises(ConfigError, match=r"routing.yaml.*month must be in 1..12"):
        rules(text)


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="routing.yaml: cannot read"):
        load_rules(tmp_path / "routing.yaml")


def test_line_and_intent_names_are_checked_when_the_server_knows_them():
    text = """
        rules:
          - name: x
            when: {line: b2bb}
            queue: b2b
          - {name: all, queue: support}
        """
    assert len(rules(text).rules) == 2  # nothing to check against
    with pytest.raises(ConfigError, match=r"line 4: unknown line 'b2bb'; did you mean 'b2b'\?"):
        rules(text, lines=["general", "b2b", "b2c"])
    with pytest.raises(ConfigError, match=r"line 4: unknown intent 'overdu'; did you mean 'overdue'\?"):
        rules(text.replace("line: b2bb", "intent: overdu"), intents=["overdue", "card_ready"])


# --- the shipped file ------------------------------------------------------

SHIPPED = PROJECT / "config" / "routing.yaml"
SHIPPED_QUEUES = {"vip", "key_accounts", "b2b", "b2c", "support", "english", "after_hours"}


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    config = load_config(PROJECT / "config" / "ivr.yaml", environ={})
    return load_rules(SHIPPED, lines=[line.name for line in config.lines])


def test_shipped_rules_use_exactly_the_sample_queues(shipped):
    assert shipped.queues == SHIPPED_QUEUES


FRIDAY_EVENING = dt.datetime(2026, 3, 6, 19, 0, tzinfo=MSK)  # contact center open, sales office closed
MIDNIGHT = dt.datetime(2026, 3, 5, 0, 30, tzinfo=MSK)
NEW_YEAR = dt.datetime(2026, 1, 1, 12, 0, tzinfo=MSK)
ACME = Organisation(id=5, name="ACME", segment="C")


@pytest.mark.parametrize("view, line, intent, now, expected", [
    # VIP callers reach the VIP desk, round the clock.
    (caller(vip=True, segment="A"), "general", None, MIDNIGHT, ("vip-desk", "vip", 90)),
    # Outside the contact center's hours (night, public holiday): after hours.
    (caller(segment="C"), "general", None, MIDNIGHT, ("after-hours", "after_hours", 10)),
    (caller(segment="A", manager=ANNA), "b2c", None, NEW_YEAR, ("after-hours", "after_hours", 10)),
    (UNKNOWN, "b2b", None, MIDNIGHT, ("after-hours", "after_hours", 10)),
    # Tier A/B: the key-account team (manager first when there is one).
    (caller(segment="A", manager=ANNA), "general", None, WEDNESDAY_NOON, ("key-accounts", "key_accounts", 60)),
    (caller(segment="B", role="director", organisation=ACME), "b2b", None, FRIDAY_EVENING,
     ("key-accounts", "key_accounts", 60)),
    # The B2B line after sales office hours.
    (caller(role="director", organisation=ACME), "b2b", None, FRIDAY_EVENING, ("b2b-closed", "after_hours", 20)),
    # English speakers.
    (caller(language="en"), "b2c", None, WEDNESDAY_NOON, ("english", "english", 10)),
    # B2B line: directors first, then urgent matters, then the rest.
    (caller(role="director", organisation=ACME), "b2b", None, WEDNESDAY_NOON, ("b2b-directors", "b2b", 50)),
    (caller(role="employee", organisation=ACME), "b2b", "card_reissue_delay", WEDNESDAY_NOON, ("b2b-urgent", "b2b", 40)),
    (caller(role="employee", organisation=ACME), "b2b", None, WEDNESDAY_NOON, ("b2b", "b2b", 20)),
    (UNKNOWN, "b2b", None, WEDNESDAY_NOON, ("b2b", "b2b", 20)),
    # B2C line.
    (caller(), "b2c", "complaint_escalation", WEDNESDAY_NOON, ("b2c-urgent", "b2c", 40)),
    (caller(), "b2c", None, WEDNESDAY_NOON, ("b2c", "b2c", 10)),
    # General line.
    (caller(segment="D"), "general", "card_reissue_delay", WEDNESDAY_NOON, ("urgent", "support", 40)),
    (UNKNOWN, "general", None, WEDNESDAY_NOON, ("unknown-callers", "support", 0)),
    (caller(segment="C"), "general", None, WEDNESDAY_NOON, ("contact-center", "support", 10)),
    (caller(segment=None), "general", None, WEDNESDAY_NOON, ("everyone-else", "support", 5)),
])
def test_shipped_rules_route_callers_as_their_comments_say(shipped, view, line, intent, now, expected):
    decision = shipped.decide(RoutingFacts(view=view, line=line, intent=intent, now=now))
    assert (decision.rule, decision.queue, decision.priority) == expected


def test_shipped_rules_ring_a_key_clients_manager_for_20_seconds_and_announce_after_hours(shipped):
    key_client = shipped.decide(facts(caller(segment="A", manager=ANNA)))
    assert (key_client.manager_interface, key_client.manager_timeout) == ("PJSIP/1001", 20)
    night = shipped.decide(facts(caller(), now=MIDNIGHT))
    assert night.announcement == "after_hours"
