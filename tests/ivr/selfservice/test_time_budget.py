"""The dialog's time budget on real call timing: real prompts rendered by eSpeak NG, a simulated
Asterisk that answers GET DATA and STREAM FILE only after the file has played and the key wait has
run (as res_agi does), over real TCP.  Every kind of caller who presses nothing reaches the queue
within ``time_to_person`` with the predicted reason; a caller who follows the offer hears the answer;
the silent path the server plans before a call is the one callers take."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from conffile import ConfigError
from ivr.selfservice.script import load_dialog_script
from ivr.selfservice.timing import check_time_budget
from ivr.sim.fastagi_caller import CallScript, place_call
from speech.audio import sound_seconds

SILENT_CALLERS = {
    "vip, card reissue overdue": "+79000000001",
    "documents owed": "+79000000002",
    "three roles": "+79000000005",
    "unknown number": "+79990001122",
    "withheld number": None,
}
DOCUMENTS_OWED = "+79000000002"  # segment C, no manager: the dialog offers what the case says


@pytest.fixture
def dtmf_config(base_config):
    """The shipped configuration with the general line's dialog by keys (no speech model here)."""
    return replace(base_config, lines=tuple(replace(line, self_service="dtmf") if line.name == "general" else line
                                            for line in base_config.lines))


async def test_silent_callers_reach_the_queue_in_time_and_the_others_get_what_they_asked_for(dtmf_config,
                                                                                            start_server):
    """All at once (the waits are real): every kind of silent caller, a caller who turns the offer
    down and then presses nothing at the key menu, and a caller who follows the offer."""
    from tests.ivr.call.test_inbound import expected_decision

    server = await start_server(dtmf_config, speech=True)
    services, selfservice = server.services, server.services.selfservice
    budget = selfservice.script.settings.time_to_person
    assert budget == 15.0  # the shipped default
    planned = await selfservice.silent_path(await expected_decision(server, "+79000000002", "general"),
                                            services.now())
    scripts = [CallScript(number=number) for number in SILENT_CALLERS.values()]
    scripts += [CallScript(number=DOCUMENTS_OWED, dtmf=["2", ""]),
                CallScript(number=DOCUMENTS_OWED, dtmf=["1", "1"]),
                CallScript(number=SILENT_CALLERS["three roles"], dtmf=["0"])]
    *silent, declined, follower, operator = await asyncio.gather(
        *(place_call("127.0.0.1", server.port, script, timeout=60) for script in scripts))

    async def context_of(result):
        return await services.contexts.get(result.variables["IVR_CALL_ID"])

    for kind, result in zip(SILENT_CALLERS, silent):
        assert result.error is None and result.queue, kind
        assert result.routed_after <= budget, f"{kind}: {result.routed_after:.1f} s to the queue"
        context = await context_of(result)
        predicted = context["decision"].get("intent")
        if predicted and predicted != "general_question":  # the predicted reason is on the card
            assert result.variables["IVR_INTENT"] == predicted, kind
        dialog = context.get("self_service")
        if dialog is not None:
            assert dialog["reason"] in ("no_answer", "not_understood") and not dialog["contained"], kind
        if kind.startswith("vip"):  # the rules send a VIP to a person: no menu at all
            assert dialog is None and context["dialog_skipped"] == "rule vip-desk"
            assert result.routed_after < 3.0

    # 0 at the role question: a person at once, no dialog after it
    context = await context_of(operator)
    assert context["dialog_skipped"] == "caller pressed 0" and context.get("self_service") is None
    assert operator.routed_after < 3.0

    # the silent path planned before the call is the one the caller took
    documents = silent[list(SILENT_CALLERS).index("documents owed")]
    assert planned is not None and planned.to_queue <= planned.budget and "worst case to queue" in planned.describe()
    assert [h.step for h in planned.heard] == ["offer", "transfer"]
    assert [sound_seconds(name) for name in documents.prompts] == pytest.approx([h.prompt for h in planned.heard],
                                                                                 abs=0.01)
    assert documents.routed_after == pytest.approx(planned.to_queue, abs=1.0)

    # the key menu after "not that": at most menu_size reasons, the caller's likeliest first
    context = await context_of(declined)
    offer, menu = context["transcript"][:2]
    assert (offer["step"], offer["meaning"], menu["step"]) == ("offer", "no", "open_question")
    declined_intent = context["self_service"]["declined"]
    predicted = [i["intent"] for i in context["decision"]["intents"] if i["intent"] != "general_question"]
    offered = [n for n in dict.fromkeys(predicted + list(selfservice.script.menu)) if n != declined_intent]
    expected = [services.catalogue.intent(n).title["ru"] for n in offered[: selfservice.script.settings.menu_size]]
    assert menu["said"] == selfservice.script.text("open_question_keys", "ru", menu=" ".join(
        selfservice.script.text("menu_item", "ru", title=title, digit=digit)
        for digit, title in enumerate(expected, start=1)))

    # the caller who follows the offer hears the answer, filled from the case
    assert follower.error is None and follower.variables.get("IVR_CONTAINED") == "1"
    context = await context_of(follower)
    # the shipped general line has a post-call survey: it rates the call and says goodbye, not the dialog
    assert [t["step"] for t in context["transcript"]] == ["offer", "answer", "helped"]
    answer = context["transcript"][1]["said"]
    assert answer and "{" not in answer  # filled from the case
    assert (await services.prompts.for_asterisk(answer, "ru")).name in follower.prompts


async def test_a_dialog_whose_first_question_cannot_fit_is_refused_with_its_line(tmp_path, dtmf_config,
                                                                                 start_server):
    server = await start_server(dtmf_config, speech=True)
    shipped = dtmf_config.speech.dialog_file
    text = open(shipped, encoding="utf-8").read()
    assert "  time_to_person: 15 " in text
    edited = tmp_path / "dialog.yaml"
    edited.write_text(text.replace("  time_to_person: 15 ", "  time_to_person: 6 ", 1), encoding="utf-8")
    script = load_dialog_script(edited, intents=server.services.catalogue.names)
    catalogue = server.services.catalogue
    titles = {name: dict(catalogue.intent(name).title) for name in catalogue.names}
    with pytest.raises(ConfigError) as refused:
        await check_time_budget(script, server.services.prompts, titles)
    line = next(n for n, row in enumerate(edited.read_text(encoding="utf-8").splitlines(), 1)
                if "time_to_person: 6" in row)
    assert refused.value.line == line and str(edited) in str(refused.value)
    assert "time_to_person 6 s" in refused.value.message
