"""The call context: the card's contract, its stored JSON (Redis or this process) and back."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from ivr.call.context import (
    CallContext, DecisionPart, InProcessContexts, Keypress, RedisContexts, RoleQuestion, _field, build_card,
)
from ivr.call.decision import decide
from ivr.selfservice.dialog import Outcome
from tests.queues.test_state import Clock

DIRECTOR = "director of ООО «Северный ветер»"

# A context as ivr.call.inbound stores it (the JSON in Redis): a director who pressed 2 at the
# role question, heard the self-service offer and asked for a person.
STORED = {
    "call_id": "0f3c", "uniqueid": "1733221111.7", "channel": "PJSIP/trunk-00000009", "line": "general",
    "started_at": "2026-12-03T13:38:31.250000+03:00", "outcome": "routed", "degraded": ["prompt_error"],
    "dtmf": [{"step": "role", "pressed": "2"}],
    "role_question": {"asked": ["private", DIRECTOR], "pressed": "2", "chosen": DIRECTOR, "confirmed": True,
                      "assumed": None},
    "dialog_skipped": None, "decision_ms": 412.5,
    "transcript": [{"step": "offer", "said": "Вы по вопросу: Договор?", "heard": "0", "via": "dtmf",
                    "meaning": "operator"},
                   {"step": "transfer", "said": "Соединяю со специалистом."}],
    "self_service": {"contained": False, "intent": None, "declined": None, "rating": None, "reason": "operator",
                     "modes": ["dtmf"], "seconds": 6.5},
    "decision": {
        "number": "+79000000005", "line": "general",
        "lookup": {"source": "crm", "degraded": None, "elapsed_ms": 3.21},
        "customer": {"id": 5, "name": "Громов Андрей Николаевич", "segment": "B", "is_vip": False,
                     "language": "ru", "manager": {"id": 3, "name": "Елена Кузнецова", "interface": "PJSIP/1003"}},
        "customers": [{"id": 5, "name": "Громов Андрей Николаевич"}],
        "roles": [
            {"kind": "private", "customer_id": 5, "label": "private", "organisation": None},
            {"kind": "director", "customer_id": 5, "label": DIRECTOR,
             "organisation": {"id": 1, "name": "ООО «Северный ветер»", "segment": "A", "is_vip": True}},
        ],
        "role": {"kind": "director", "customer_id": 5, "label": DIRECTOR,
                 "organisation": {"id": 1, "name": "ООО «Северный ветер»", "segment": "A", "is_vip": True}},
        "question": [],
        "segment": "A", "is_vip": True,
        "manager": {"id": 2, "name": "Дмитрий Орлов", "interface": "PJSIP/1002"},
        "open_cases": [{"id": 7, "product": "b2b_contract", "title": "Договор эквайринга", "status": "escalated",
                        "priority": 2, "due_at": "2026-12-05T10:38:31+00:00", "customer_owes_next_step": False}],
        "recent_calls": [{"started_at": "2026-12-01T09:12:00+00:00", "line": "b2b", "intent": "b2b_contract",
                          "queue": "b2b", "self_served": False}],
        "intents": [
            {"intent": "complaint_escalation", "score": 0.607, "reasons": ["обращение эскалировано"], "case_id": 7},
            {"intent": "b2b_contract", "score": 0.489, "reasons": ["договор компании"], "case_id": 7},
            {"intent": "general_question", "score": 0.19, "reasons": ["звонок на линию «Общая»"], "case_id": None},
            {"intent": "card_status", "score": 0.05, "reasons": [], "case_id": None},
        ],
        "confirmed_intent": None,
        "route": {"queue": "vip", "priority": 90, "rule": "vip-desk", "manager_interface": None,
                  "manager_timeout": None, "announcement": None, "self_service": False},
    },
}


def test_the_stored_json_reads_into_typed_parts_and_writes_back_the_same():
    context = CallContext.from_dict(json.loads(json.dumps(STORED)))
    assert context.role_question == RoleQuestion(("private", DIRECTOR), "2", DIRECTOR, True, None)
    assert context.dtmf == [Keypress("role", "2")]
    assert context.self_service == Outcome(reason="operator", modes=["dtmf"], seconds=6.5)
    decision = context.decision
    assert decision.role.organisation.is_vip and decision.customer.manager.interface == "PJSIP/1003"
    assert decision.open_cases[0].due_at.year == 2026 and decision.recent_calls[0].started_at.day == 1
    assert decision.intents[0].reasons == ("обращение эскалировано",) and decision.route.rule == "vip-desk"
    assert context.to_dict() == STORED
    assert json.loads(json.dumps(context.to_dict())) == STORED
    assert CallContext.from_dict(context.to_dict()) == context


def test_the_card_of_a_stored_context():
    card = build_card(STORED, number="89000000005", caller_name="GROMOV")
    assert card == {
        "context": "found", "known": True, "call_id": "0f3c", "number": "+79000000005", "caller_name": "GROMOV",
        "line": "general",
        "customer": {"id": 5, "name": "Громов Андрей Николаевич", "language": "ru"},
        "role": {"kind": "director", "label": DIRECTOR},
        "organisation": {"id": 1, "name": "ООО «Северный ветер»", "segment": "A", "is_vip": True},
        "segment": "A", "is_vip": True, "manager": STORED["decision"]["manager"],
        "open_cases": STORED["decision"]["open_cases"],
        "reason": {**STORED["decision"]["intents"][0], "case": STORED["decision"]["open_cases"][0]},
        "other_reasons": STORED["decision"]["intents"][1:3],
        "ivr": {"dtmf": STORED["dtmf"], "role_question": STORED["role_question"],
                "transcript": STORED["transcript"], "self_service": STORED["self_service"],
                "dialog_skipped": None, "outcome": "routed", "degraded": ["prompt_error"]},
        "previous_calls": STORED["decision"]["recent_calls"],
        "route": {"queue": "vip", "priority": 90, "rule": "vip-desk"},
    }
    assert build_card(CallContext.from_dict(STORED), number="89000000005", caller_name="GROMOV") == card
    assert build_card(STORED, status="missing")["context"] == "missing"


def test_a_context_stored_by_an_older_node_or_by_hand_loads_with_defaults():
    older = copy.deepcopy(STORED)
    for key in ("transcript", "self_service", "decision_ms", "channel"):
        del older[key]
    del older["role_question"]["assumed"]
    for key in ("lookup", "customers", "question", "confirmed_intent", "line"):
        del older["decision"][key]
    older["decision"]["route"] = {"queue": "vip", "priority": 90, "rule": "vip-desk"}
    older["queue_hint"] = "vip"  # a key this node does not know
    context = CallContext.from_dict(older)
    assert context.transcript is None and context.self_service is None and context.channel is None
    assert context.role_question.assumed is None and context.decision.lookup is None
    assert context.decision.route.self_service is True and context.decision.line is None
    card = build_card(older)
    assert card["ivr"]["transcript"] is None and card["ivr"]["self_service"] is None
    assert card["line"] == "general" and card["customer"]["name"] == "Громов Андрей Николаевич"
    assert "transcript" not in context.to_dict() and "queue_hint" not in context.to_dict()


def test_the_card_without_a_context_or_a_decision_shows_what_is_known():
    card = build_card(None, number="74950000000")
    assert (card["context"], card["known"], card["call_id"], card["number"]) == ("pending", False, None, "74950000000")
    assert card["ivr"] == {"dtmf": [], "role_question": None, "transcript": None, "self_service": None,
                           "dialog_skipped": None, "outcome": None, "degraded": []}
    assert (card["customer"], card["reason"], card["route"], card["previous_calls"]) == (None, None, None, [])
    failed = CallContext(call_id="c1", line="b2b", outcome="fail_open", degraded=["decision_timeout"])
    card = build_card(failed, number="74950000000")
    assert (card["context"], card["line"], card["number"]) == ("found", "b2b", "74950000000")
    assert card["ivr"]["degraded"] == ["decision_timeout"] and card["organisation"] is None


def test_a_field_declared_for_the_card_is_stored_and_shown_with_nothing_else_to_change():
    @dataclass
    class WithLanguage(CallContext):
        language: str | None = _field(None, under="ivr")  # what a new card field takes

    context = WithLanguage(call_id="c1", outcome="routed", language="en")
    assert context.to_dict()["language"] == "en" and WithLanguage.from_dict(context.to_dict()) == context
    assert build_card(context)["ivr"]["language"] == "en"


def test_the_call_record_keeps_what_the_caller_pressed_and_said_and_what_the_prediction_saw():
    context = CallContext.from_dict(STORED)
    record = context.for_record()
    assert {key: value for key, value in record.items() if key != "features"} == {key: STORED[key] for key in (
        "outcome", "dtmf", "role_question", "transcript", "self_service")}
    # Read back from JSON the intents no longer have their signals; the caller's facts are kept.
    assert record["features"] == {
        "v": 1, "intents": [[intent["intent"], {}] for intent in STORED["decision"]["intents"]],
        "known": 1, "vip": 1, "role": "director", "open_cases": 1, "recent_calls": 1}
    assert CallContext(call_id="c1", outcome="hangup").for_record() == {
        "outcome": "hangup", "dtmf": [], "role_question": None}


async def test_a_context_from_a_real_decision_survives_the_store(base_config, start_server):
    services = (await start_server(base_config)).services
    lookup = await services.directory.lookup("+79000000005", region=services.config.region)
    decision = decide(lookup, services.config.line_for("general"), catalogue=services.catalogue,
                      rules=services.rules.current, now=services.now())
    context = CallContext(call_id="real", uniqueid="1.1", line="general", outcome="routed",
                          started_at=services.now(), decision=decision.part())
    store = InProcessContexts(ttl=60)
    await store.put("real", context, aliases=("1.1",))
    stored = await store.get("1.1")
    assert stored == json.loads(json.dumps(stored)) == context.to_dict()
    assert stored["decision"] == decision.to_dict()
    assert CallContext.from_dict(stored) == context
    assert isinstance(CallContext.from_dict(stored).decision, DecisionPart)
    card = build_card(stored)
    assert card["customer"]["id"] == decision.view.customer.id and card["role"]["label"] == decision.view.role.label
    assert [r["intent"] for r in [card["reason"], *card["other_reasons"]]] == [i.intent for i in decision.intents][:3]
    assert "signals" not in card["reason"] and "features" not in stored  # the card and the store: as before
    # The record keeps the signals each intent was scored on, as the prediction made them.
    features = context.for_record()["features"]
    assert features["intents"] == [[i.intent, dict(i.signals)] for i in decision.intents]
    assert all(signals["rules"] == i.score for (_, signals), i in zip(features["intents"], decision.intents))
    assert features["known"] == 1 and features["open_cases"] == len(decision.part().open_cases)
    assert len(json.dumps(features)) < 2000  # compact: zeros left out, values rounded


async def test_in_process_contexts_expire_after_their_ttl_by_id_and_by_alias():
    clock = Clock()
    store = InProcessContexts(ttl=30, clock=clock)
    await store.put("c1", CallContext(call_id="c1", outcome="routed"), aliases=("1.1", "1.2"))
    assert (await store.get("c1"))["outcome"] == "routed"
    assert await store.get("1.2") == await store.get("1.1") == await store.get("c1")
    assert await store.get("nobody") is None
    clock.advance(29)
    assert await store.get("1.1") is not None
    clock.advance(2)
    assert await store.get("1.1") is None and await store.get("c1") is None


async def test_in_process_contexts_keep_the_newest_within_their_bound():
    store = InProcessContexts(ttl=600, max_entries=3)
    for n in range(5):
        await store.put(f"c{n}", {"call_id": f"c{n}"}, aliases=(f"u{n}",))
    assert [await store.get(f"c{n}") is not None for n in range(5)] == [False, False, True, True, True]
    assert await store.get("u0") is None and (await store.get("u4"))["call_id"] == "c4"
    await store.put("c2", {"call_id": "c2", "outcome": "hangup"})  # stored again: the newest now
    await store.put("c5", {"call_id": "c5"})
    assert await store.get("c3") is None and (await store.get("c2"))["outcome"] == "hangup"
    await store.close()
    assert await store.get("c4") is None


@pytest.mark.redis
async def test_redis_contexts_are_the_stored_json_shared_by_id_and_alias_and_fall_back_when_redis_is_away(
        redis_server, caplog):
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    other = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    node, other_node = RedisContexts(client, ttl=60), RedisContexts(other, ttl=60)
    try:
        context = CallContext.from_dict(STORED)
        await node.put("0f3c", context, aliases=("1733221111.7",))
        assert json.loads(await client.get("ivr:call:0f3c")) == STORED
        assert 0 < await client.ttl("ivr:call:0f3c") <= 60 and 0 < await client.ttl("ivr:call-alias:1733221111.7")
        assert await other_node.get("1733221111.7") == await other_node.get("0f3c") == STORED  # another node
        assert await other_node.get("nobody") is None

        caplog.set_level(logging.WARNING, logger="ivr.call.context")
        redis_server.stop()
        await node.put("c2", CallContext(call_id="c2", outcome="hangup"), aliases=("2.1",))
        await node.put("c3", CallContext(call_id="c3", outcome="routed"))
        assert (await node.get("2.1"))["outcome"] == "hangup"  # kept in this process meanwhile
        assert (await node.get("c3"))["outcome"] == "routed"
        assert len([r for r in caplog.records if "Redis unavailable" in r.getMessage()]) == 1  # logged once
        redis_server.start()

        for _ in range(100):  # the first commands may still meet the connections Redis dropped
            await node.put("c4", CallContext(call_id="c4"))
            if await other_node.get("c4") is not None:
                break
            await asyncio.sleep(0.02)
        assert await other_node.get("c4") == {"call_id": "c4", "uniqueid": None, "channel": None, "line": None,
                                              "started_at": None, "outcome": None, "degraded": [], "dtmf": [],
                                              "role_question": None, "dialog_skipped": None, "decision_ms": None}
        assert (await node.get("c2"))["outcome"] == "hangup"  # still found here: Redis has no such key
    finally:
        await node.close()
        await other_node.close()
        await client.aclose()
        await other.aclose()
