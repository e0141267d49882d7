"""`decide` and `with_intent` on the shipped routing rules and intent catalogue, against the seeded CRM."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
import yaml

from caller_id.profile import CallerView
from ivr.call.context import DecisionPart
from ivr.call.decision import Decision, decide, with_intent
from queues.rules import RoutingFacts

MOSCOW = ZoneInfo("Europe/Moscow")
DOCUMENTS_OWED = "+79000000002"  # segment C, no manager, the bank waits for two documents
VIP = "+79000000001"  # VIP, a card reissue overdue
KEY_ACCOUNT = "+79000000003"  # segment B with a personal manager
THREE_ROLES = "+79000000005"  # private client, director of one company, employee of another
UNKNOWN = "+79990001122"  # a valid number the CRM does not know


class Decider:
    """The server's lookup, catalogue and rules; `now` is noon of the latest day up to today the
    contact center is open (the shipped `contact_center` hours), so the rules after the
    after-hours one are reached whenever the tests run."""

    def __init__(self, services):
        self.services = services
        self.rules = services.rules.current
        self.now = dt.datetime.now(MOSCOW).replace(hour=12, minute=0, second=0, microsecond=0)
        while self.rules.decide(RoutingFacts(view=CallerView(number=None), line="general", intent=None,
                                             now=self.now)).rule == "after-hours":
            self.now -= dt.timedelta(days=1)

    async def __call__(self, number: str | None, line: str = "general", **options) -> Decision:
        services = self.services
        lookup = await services.directory.lookup(number, region=services.config.region)
        return decide(lookup, services.config.line_for(line), catalogue=services.catalogue, rules=self.rules,
                      now=self.now, **options)


@pytest.fixture
async def decider(base_config, start_server) -> Decider:
    return Decider((await start_server(base_config)).services)


@pytest.fixture
def reason_texts(base_config) -> dict[str, str]:
    """The shipped catalogue's Russian reason texts, by kind."""
    reasons = yaml.safe_load(base_config.intents_file.read_text(encoding="utf-8"))["reasons"]
    return {kind: texts["ru"] for kind, texts in reasons.items()}


async def test_a_known_caller_gets_their_customer_the_reason_their_case_gives_and_the_line_queue(decider):
    decision = await decider(DOCUMENTS_OWED)
    view = decision.view
    assert decision.lookup.source == "crm" and decision.lookup.number == DOCUMENTS_OWED
    assert view.customer is not None and view.role is not None and view.segment == "C" and view.manager is None
    assert decision.question == ()
    top = decision.top_intent
    assert top.intent == decision.intent == "documents_missing"
    assert top.case_id in {case.id for case in view.cases}
    assert any("2-НДФЛ" in reason for reason in top.reasons)  # the documents the case's facts name
    assert [i.score for i in decision.intents] == sorted((i.score for i in decision.intents), reverse=True)
    assert decision.intents[-1].intent == decider.services.catalogue.fallback.name
    route = decision.route
    assert (route.queue, route.rule, route.manager_interface, route.self_service) == (
        "support", "contact-center", None, True)


async def test_an_unknown_caller_gets_the_fallback_with_the_reason_that_the_crm_does_not_know_the_number(
        decider, reason_texts):
    decision = await decider(UNKNOWN)
    assert decision.lookup.source == "not_found" and decision.lookup.number == UNKNOWN
    assert decision.view.customer is None and decision.view.segment is None and decision.question == ()
    [fallback] = decision.intents
    assert fallback.intent == decider.services.catalogue.fallback.name and fallback.case_id is None
    assert reason_texts["unknown_caller"] in fallback.reasons
    assert reason_texts["withheld_caller"] not in fallback.reasons
    assert (decision.route.queue, decision.route.rule) == ("support", "unknown-callers")


@pytest.mark.parametrize("caller_id", [None, "", "anonymous", "<unknown>"])
async def test_a_withheld_number_is_not_looked_up_and_its_reason_says_so(decider, reason_texts, caller_id):
    decision = await decider(caller_id)
    assert decision.lookup.source == "invalid_number" and decision.lookup.number is None
    assert decision.view.customer is None
    [fallback] = decision.intents
    assert reason_texts["withheld_caller"] in fallback.reasons
    assert reason_texts["unknown_caller"] not in fallback.reasons
    assert decision.route.rule == "unknown-callers"


async def test_a_manager_first_rule_rings_the_callers_own_manager_and_holds_them_in_no_menu(decider):
    decision = await decider(KEY_ACCOUNT)
    view = decision.view
    assert view.segment == "B" and view.manager is not None
    route = decision.route
    assert (route.rule, route.queue) == ("key-accounts", "key_accounts")
    assert route.manager_interface == view.manager.interface and route.manager_timeout == 20
    assert route.self_service is False  # the manager rings at once


async def test_the_rule_says_whether_the_caller_hears_the_self_service_dialog(decider):
    vip = await decider(VIP)
    assert vip.view.is_vip and (vip.route.rule, vip.route.self_service) == ("vip-desk", False)
    assert vip.route.priority > (await decider(DOCUMENTS_OWED)).route.priority
    assert (await decider(DOCUMENTS_OWED)).route.self_service is True


async def test_a_caller_with_several_roles_is_asked_and_routed_in_the_best_served_one_until_they_choose(decider):
    decision = await decider(THREE_ROLES)
    labels = [role.label for role in decision.question]
    assert len(labels) == 3 and labels[0] == "private"
    assert decision.view.role in decision.question
    assert decision.view.is_vip and decision.route.rule == "vip-desk"  # the best served of the three
    as_private = await decider(THREE_ROLES, role=decision.question[0])
    assert as_private.question == () and as_private.view.role == decision.question[0]
    assert as_private.view.organisation is None
    on_b2c = await decider(THREE_ROLES, line="b2c")  # only the private role fits that line
    assert on_b2c.question == () and on_b2c.view.role.kind == "private"


async def test_the_reason_the_caller_gives_routes_the_call_again(decider):
    decision = await decider(DOCUMENTS_OWED, line="b2b")
    assert decision.intent == "documents_missing" and decision.confirmed_intent is None
    again = with_intent(decision, "card_blocked", rules=decider.rules, now=decider.now)
    assert again.confirmed_intent == again.intent == "card_blocked"
    assert again.top_intent == decision.top_intent  # the prediction itself stays
    assert again.route == decider.rules.decide(RoutingFacts(view=decision.view, line="b2b", intent="card_blocked",
                                                            now=decider.now))


async def test_the_decision_as_json_is_its_part_and_reads_back_into_it(decider):
    for number in (THREE_ROLES, KEY_ACCOUNT, UNKNOWN, None):
        decision = await decider(number)
        stored = json.loads(json.dumps(decision.to_dict(), ensure_ascii=False))
        assert stored == decision.part().to_dict()
        assert DecisionPart.from_dict(stored) == decision.part()
    decision = await decider(THREE_ROLES)
    part = decision.part()
    assert [role.label for role in part.question] == [role.label for role in decision.question]
    assert part.role.organisation.name == decision.view.organisation.name
    assert (part.customer.id, part.lookup.source, part.route.rule) == (
        decision.view.customer.id, decision.lookup.source, decision.route.rule)
