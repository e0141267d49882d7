"""The `inbound` call path end to end: simulated Asterisk -> real FastAGI server -> real CRM."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import wave
from dataclasses import replace
from pathlib import Path

import pytest

from ivr import metrics
from ivr.call.decision import decide
from ivr.call.inbound import ROLE_QUESTION_MIN_WAIT_MS, ROLE_QUESTION_TIMEOUT_MS
from ivr.call.context import CallContext, build_card
from ivr.sim.fastagi_caller import GARBAGE_NUMBERS, AsteriskChannel, CallScript, place_call, run_closed_loop
from speech.audio import sound_seconds
from tests.ivr.conftest import numbers_with_roles

ROUTING_VARIABLES = {"IVR_CALL_ID", "IVR_QUEUE", "QUEUE_PRIO", "IVR_INTENT"}


async def expected_decision(server, number: str, line_name: str, role_index: int | None = None):
    """What `ivr lookup` computes for the same number and line."""
    services = server.services
    line = services.config.line_for(line_name)
    lookup = await services.directory.lookup(number, region=services.config.region)
    decision = decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current,
                      now=services.now())
    if role_index is not None:
        decision = decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current,
                          now=services.now(), role=decision.question[role_index])
    return decision


async def test_known_caller_leaves_with_the_queue_priority_and_context_of_the_decision(base_config, start_server):
    server = await start_server(base_config)
    numbers = await numbers_with_roles(base_config.database_url, min_roles=1)
    single = []
    for number in numbers[:80]:
        decision = await expected_decision(server, number, "general")
        if not decision.question:
            single.append((number, decision))
    assert len(single) >= 20
    for number, decision in single[:20]:
        national = "8" + number[2:] if number.startswith("+7") else number
        result = await place_call("127.0.0.1", server.port, CallScript(number=national, line="general"))
        assert result.error is None
        v = result.variables
        assert ROUTING_VARIABLES <= set(v)
        assert v["IVR_QUEUE"] == decision.route.queue
        assert int(v["QUEUE_PRIO"]) == decision.route.priority
        assert v["IVR_CUSTOMER_ID"] == str(decision.view.customer.id)
        assert v["IVR_SEGMENT"] == decision.view.segment
        assert v["IVR_INTENT"] == decision.intents[0].intent
        if decision.route.manager_interface:
            assert v["IVR_MANAGER"] == decision.route.manager_interface
            assert int(v["IVR_MANAGER_TIMEOUT"]) == decision.route.manager_timeout
        else:
            assert "IVR_MANAGER" not in v
        context = await server.services.contexts.get(v["IVR_CALL_ID"])
        assert context["decision"]["route"]["queue"] == v["IVR_QUEUE"]
        assert CallContext.from_dict(context).to_dict() == context  # the stored JSON reads back as it is
        # Queue events carry the caller channel's Uniqueid: the context is found by it too.
        assert await server.services.contexts.get(result.uniqueid) == context


@pytest.mark.parametrize("garbage", GARBAGE_NUMBERS + [None, "0" * 40, "+7 (916) 123-45-67'; --"])
async def test_garbage_caller_id_is_routed_as_an_unknown_caller(base_config, start_server, garbage):
    server = await start_server(base_config)
    result = await place_call("127.0.0.1", server.port, CallScript(number=garbage, line="general"))
    assert result.error is None
    assert result.variables["IVR_QUEUE"]
    assert "IVR_CUSTOMER_ID" not in result.variables
    expected = await expected_decision(server, garbage or "", "general")
    assert result.variables["IVR_QUEUE"] == expected.route.queue


async def test_caller_with_several_roles_is_asked_once_and_routed_in_the_role_they_press(base_config, start_server):
    server = await start_server(base_config, speech=True)
    candidates = await numbers_with_roles(base_config.database_url, min_roles=2)
    asked = None
    for number in candidates:
        decision = await expected_decision(server, number, "general")
        if len(decision.question) >= 2:
            asked = (number, decision)
            break
    assert asked is not None, "the seed must contain a number with several roles"
    number, decision = asked
    for digit, index in (("2", 1), ("1", 0)):
        expected = await expected_decision(server, number, "general", role_index=index)
        result = await place_call("127.0.0.1", server.port, CallScript(number=number, line="general", dtmf=[digit]))
        assert result.error is None
        get_data = [c for c in result.commands if c.upper().startswith("GET DATA")]
        assert len(get_data) == 1, "the role question is asked exactly once"
        prompt = Path(result.prompts[0] + ".wav")
        with wave.open(str(prompt)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
            assert wav.getnframes() > 8000  # more than a second of speech
        assert result.variables["IVR_QUEUE"] == expected.route.queue
        assert result.variables["IVR_CUSTOMER_ID"] == str(expected.view.customer.id)
        context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
        assert context["role_question"]["pressed"] == digit
        assert context["decision"]["role"]["label"] == expected.view.role.label


THREE_ROLES = "+79000000005"  # the showcase number: private client, director of two companies


def key_wait_of(commands: list[str]) -> float:
    """Seconds of the key wait the server gave its first GET DATA (its timeout argument)."""
    get_data = next(c for c in commands if c.upper().startswith("GET DATA"))
    wait_ms = int(get_data.split()[3])
    assert ROLE_QUESTION_MIN_WAIT_MS <= wait_ms <= ROLE_QUESTION_TIMEOUT_MS
    return wait_ms / 1000


async def test_a_silent_caller_with_three_roles_is_routed_with_their_customer_and_card(base_config, start_server):
    """Real prompt files, real playback time: Asterisk answers GET DATA only after the whole role
    question has played and the key timeout has run, longer than agi.command_timeout.  The server
    waits for it, then routes in the most likely role with the customer on the card."""
    config = replace(base_config, agi=replace(base_config.agi, command_timeout=3.0))
    server = await start_server(config, speech=True)
    decision = await expected_decision(server, THREE_ROLES, "general")
    assert len(decision.question) == 3
    result = await place_call("127.0.0.1", server.port, CallScript(number=THREE_ROLES, line="general"))
    assert result.error is None and not result.hung_up
    plays = sound_seconds(result.prompts[0])
    wait = key_wait_of(result.commands)
    assert plays is not None and plays + wait > config.agi.command_timeout
    assert result.routed_after >= plays + wait  # the caller really waited
    # ... and reached the queue within the dialog's time_to_person: the key wait was cut to fit it
    assert result.routed_after <= server.services.selfservice.script.settings.time_to_person
    assert result.variables["IVR_QUEUE"] == decision.route.queue
    assert result.variables["IVR_CUSTOMER_ID"] == str(decision.view.customer.id)
    assert result.variables["IVR_INTENT"] == decision.intent
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["outcome"] == "routed" and context["degraded"] == []
    assert context["role_question"] == {
        "asked": [r.label for r in decision.question], "pressed": "", "chosen": None,
        "confirmed": False, "assumed": decision.view.role.label}
    card = build_card(context)
    assert card["customer"]["id"] == decision.view.customer.id
    assert card["role"]["label"] == decision.view.role.label
    assert card["ivr"]["role_question"]["confirmed"] is False


async def test_asterisk_that_stops_answering_mid_question_fails_open_within_the_timeout(base_config, start_server):
    """A peer that never replies to GET DATA is still taken for dead: after the prompt, the key
    wait and agi.command_timeout, no later; the call keeps the dialplan's default queue."""
    config = replace(base_config, agi=replace(base_config.agi, command_timeout=1.0))
    server = await start_server(config, speech=True)
    prompt = await server.services.prompts.for_asterisk(
        server.services.selfservice.script.role_question(
            (await expected_decision(server, THREE_ROLES, "general")).question, "ru"), "ru")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    channel = AsteriskChannel(CallScript(number=THREE_ROLES, line="general"))
    writer.write(channel.environment("127.0.0.1", server.port))
    loop = asyncio.get_running_loop()
    try:
        while not (line := (await asyncio.wait_for(reader.readline(), 10)).decode()).upper().startswith("GET DATA"):
            writer.write(b"".join(channel.handle(line)))
        asked = loop.time()
        wait = key_wait_of([line])
        closed = await asyncio.wait_for(reader.read(), 60)  # Asterisk says nothing from here on
        waited = loop.time() - asked
    finally:
        writer.close()
    assert closed == b""
    expected = prompt.seconds + wait + config.agi.command_timeout
    assert expected - 0.2 <= waited <= expected + 2.0
    assert "IVR_QUEUE" not in channel.variables  # the dialplan's default queue stays
    assert metrics.FAIL_OPEN.labels(reason="agi_error")._value.get() >= 1


async def test_no_answer_to_the_role_question_routes_in_the_most_likely_role(base_config, start_server):
    server = await start_server(base_config, speech=True)
    candidates = await numbers_with_roles(base_config.database_url, min_roles=2)
    for number in candidates:
        decision = await expected_decision(server, number, "general")
        if decision.question:
            break
    result = await place_call("127.0.0.1", server.port, CallScript(number=number, line="general", dtmf=[""]),
                              fast=True)
    assert result.variables["IVR_QUEUE"] == decision.route.queue
    assert result.variables["IVR_CUSTOMER_ID"] == str(decision.view.customer.id)


async def test_role_question_is_skipped_when_synthesis_is_off_and_the_call_still_routes(base_config, start_server):
    server = await start_server(base_config, speech=False)
    candidates = await numbers_with_roles(base_config.database_url, min_roles=2)
    result = await place_call("127.0.0.1", server.port, CallScript(number=candidates[0], line="general"))
    assert result.variables["IVR_QUEUE"]
    assert not any(c.upper().startswith("GET DATA") for c in result.commands)


@pytest.mark.parametrize("hangup_at", [0, 1, 2])
async def test_caller_hanging_up_at_any_point_ends_cleanly_and_the_server_keeps_serving(
    base_config, start_server, hangup_at
):
    server = await start_server(base_config, speech=True)
    candidates = await numbers_with_roles(base_config.database_url, min_roles=2)
    normal = await place_call("127.0.0.1", server.port, CallScript(number=candidates[0], dtmf=["1"]))
    assert len(normal.commands) > hangup_at, "the call has a command at that point to hang up in"
    script = CallScript(number=candidates[0], line="general", dtmf=["1"], hangup_at=hangup_at)
    result = await place_call("127.0.0.1", server.port, script)
    assert result.error is None
    assert result.hung_up
    assert server.agi.stats["script_errors"] == 0
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["outcome"] in ("hangup", "routed")
    after = await place_call("127.0.0.1", server.port, CallScript(number="+79161234567"))
    assert after.variables["IVR_QUEUE"]


async def test_slow_database_fails_open_to_an_unknown_caller_within_the_budget(base_config, start_server):
    server = await start_server(base_config)
    numbers = await numbers_with_roles(base_config.database_url, min_roles=1)
    path = base_config.database_url.split("///", 1)[1]
    # WAL lets readers past a plain writer; a writer in exclusive locking mode
    # shuts everyone out once the pooled connections are closed.
    await server.services.db.engine.dispose()
    locker = sqlite3.connect(path, isolation_level=None, timeout=0)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    locker.execute("UPDATE crm_version SET version = version + 1")
    try:
        results = await asyncio.gather(*(
            place_call("127.0.0.1", server.port, CallScript(number=n, line="general"), timeout=10)
            for n in numbers[100:110]
        ))
    finally:
        locker.rollback()
        locker.close()
    for result in results:
        assert result.error is None
        assert result.variables["IVR_QUEUE"], "every call leaves with a queue"
    degraded = [await server.services.contexts.get(r.variables["IVR_CALL_ID"]) for r in results]
    assert all("lookup_timeout" in c["degraded"] or "lookup_error" in c["degraded"] for c in degraded)


async def test_database_down_from_the_start_still_routes_every_call(base_config, start_server, tmp_path, caplog):
    down = replace(base_config, database_url="postgresql+asyncpg://ivr@127.0.0.1:9/none")
    server = await start_server(down, migrate=False)
    scripts = [CallScript(number=n, line=line) for n in ("89161234567", "unknown") for line in ("general", "b2b")]
    results = await run_closed_loop("127.0.0.1", server.port, scripts, concurrency=4)
    for result in results:
        assert result.error is None
        assert result.variables["IVR_QUEUE"]
        assert "IVR_CUSTOMER_ID" not in result.variables


async def test_redis_disappearing_mid_run_does_not_drop_or_misroute_calls(base_config, start_server, redis_server):
    config = replace(base_config, redis_url=redis_server.url)
    server = await start_server(config)
    numbers = (await numbers_with_roles(base_config.database_url, min_roles=1))[:30]
    expected = {}
    for number in numbers:
        decision = await expected_decision(server, number, "b2c")
        if not decision.question:
            expected[number] = decision.route.queue
    scripts = [CallScript(number=n, line="b2c") for n in expected]
    before = await run_closed_loop("127.0.0.1", server.port, scripts, concurrency=5)
    redis_server.stop()
    during = await run_closed_loop("127.0.0.1", server.port, scripts, concurrency=5)
    redis_server.start()
    after = await run_closed_loop("127.0.0.1", server.port, scripts, concurrency=5)
    for result in before + during + after:
        assert result.error is None
        if result.variables["IVR_QUEUE"] != expected[result.script.number]:
            ctx = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
            print("MISMATCH", result.script.number, ctx)
        assert result.variables["IVR_QUEUE"] == expected[result.script.number]
    during_context = await server.services.contexts.get(during[0].variables["IVR_CALL_ID"])
    assert during_context is not None, "contexts fall back to this process while Redis is away"


async def test_broken_rules_edit_keeps_routing_with_the_last_good_rules(base_config, start_server, tmp_path):
    rules_file = tmp_path / "routing.yaml"
    rules_file.write_text(base_config.rules_file.read_text(encoding="utf-8"), encoding="utf-8")
    server = await start_server(replace(base_config, rules_file=rules_file))
    first = await place_call("127.0.0.1", server.port, CallScript(number="unknown", line="general"))
    rules_file.write_text("rules:\n  - name: broken\n    when: {segmnt: A}\n    queue: vip\n", encoding="utf-8")
    assert server.services.rules.reload() is False
    assert "segmnt" in str(server.services.rules.error)
    second = await place_call("127.0.0.1", server.port, CallScript(number="unknown", line="general"))
    assert second.variables["IVR_QUEUE"] == first.variables["IVR_QUEUE"]
    rules_file.write_text(
        "rules:\n  - name: everyone\n    queue: after_hours\n    priority: 3\n", encoding="utf-8")
    assert server.services.rules.reload() is True
    third = await place_call("127.0.0.1", server.port, CallScript(number="unknown", line="general"))
    assert (third.variables["IVR_QUEUE"], third.variables["QUEUE_PRIO"]) == ("after_hours", "3")


async def test_decision_over_budget_leaves_the_dialplan_default(base_config, start_server, monkeypatch):
    config = replace(base_config, agi=replace(base_config.agi, decision_budget=0.05))
    server = await start_server(config)
    gate = asyncio.Event()

    async def hung_lookup(raw, region="RU"):
        await gate.wait()

    monkeypatch.setattr(server.services.directory, "lookup", hung_lookup)
    result = await place_call("127.0.0.1", server.port, CallScript(number="89161234567"))
    assert "IVR_QUEUE" not in result.variables, "the dialplan's default queue stays in force"
    assert result.variables["IVR_CALL_ID"]
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["degraded"] == ["decision_timeout"]


async def test_every_call_leaves_a_call_record(base_config, start_server):
    from sqlalchemy import select

    from caller_id.models import CallRecord

    server = await start_server(base_config)
    numbers = (await numbers_with_roles(base_config.database_url, min_roles=1))[:5]
    results = [await place_call("127.0.0.1", server.port, CallScript(number=n, line="b2c")) for n in numbers]
    await server.services.recorder.flush()
    async with server.services.db.session() as session:
        rows = {r.call_id: r for r in await session.scalars(select(CallRecord))}
    for result in results:
        record = rows[result.variables["IVR_CALL_ID"]]
        assert record.queue == result.variables["IVR_QUEUE"]
        assert record.predicted_intent == result.variables["IVR_INTENT"]
        assert record.number is not None and record.number.startswith("+")
        assert record.line == "b2c"


async def test_log_lines_of_a_call_never_show_the_full_number(base_config, start_server, caplog):
    server = await start_server(base_config)
    caplog.set_level(logging.INFO)
    numbers = await numbers_with_roles(base_config.database_url, min_roles=1)
    await place_call("127.0.0.1", server.port, CallScript(number=numbers[0], line="general"))
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "queue" in text
    assert numbers[0] not in text and numbers[0][2:] not in text


@pytest.mark.parametrize("announcement, synthesised", [
    ("after_hours", True),                       # a name with configured texts
    ("Вас соединят с дежурным специалистом.", True),  # free text
    ("custom/holiday-greeting", False),          # an Asterisk sound of the administrator's
])
async def test_rule_announcement_reaches_asterisk_as_a_playable_sound(
    base_config, start_server, tmp_path, announcement, synthesised
):
    rules_file = tmp_path / "routing.yaml"
    rules_file.write_text(
        f"rules:\n  - name: everyone\n    queue: after_hours\n    announcement: \"{announcement}\"\n",
        encoding="utf-8")
    server = await start_server(replace(base_config, rules_file=rules_file), speech=True)
    result = await place_call("127.0.0.1", server.port, CallScript(number="unknown", line="general"))
    sound = result.variables["IVR_ANNOUNCE"]
    if synthesised:
        with wave.open(sound + ".wav") as wav:
            assert wav.getframerate() == 8000 and wav.getnframes() > 8000
    else:
        assert sound == announcement
