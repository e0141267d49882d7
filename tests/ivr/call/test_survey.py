"""The `survey` FastAGI script over real TCP: simulated Asterisk -> FastAGI (-> AudioSocket -> Vosk)
-> the answers in the SQLite file's ``call_records`` row.

The record each survey changes is made the way production makes it: an
`inbound` call first (keys tests), or the call recorder (the voice tests,
whose line runs the Korean dialog before routing).  Key tests run the
simulator in fast mode (replies at once) except the silent caller's, whose
seconds are the point; the voice tests use eSpeak NG's Korean and the
Korean Vosk model, as tests/ivr/selfservice/test_service.py does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest

from ivr import metrics
from ivr.call.inbound import new_call_id
from ivr.call.survey import Survey, is_call_id
from ivr.config import Line
from ivr.selfservice.dialog import NO_INPUT, NOT_UNDERSTOOD, CallerReply
from ivr.sim.fastagi_caller import CallScript, Keys, Turn, place_call
from tests.ivr.selfservice.test_service import korean_config, record_of  # noqa: F401 - fixture
from tests.speech.conftest import korean_speech, korean_synthesizer  # noqa: F401 - fixtures
from tests.waiting import LIMIT, eventually

KNOWN = "+79000000003"


def with_surveys(config, **surveys: str):
    """`config` with these lines' survey settings; a line named in `surveys` that the config lacks is
    added (survey "off" needs one: the shipped lines all have a survey)."""
    lines = tuple(replace(line, survey=surveys.get(line.name, line.survey)) for line in config.lines)
    known = {line.name for line in lines}
    lines += tuple(Line(name=name, survey=survey, self_service="off") for name, survey in surveys.items()
                   if name not in known)
    return replace(config, lines=lines)


async def inbound_call(server, line: str) -> str:
    """An inbound call on `line` (no dialog: base_config turns it off); its call id, its record written.
    The call tells the dialplan the line's survey (IVR_SURVEY), or nothing when the line has none."""
    result = await place_call("127.0.0.1", server.port, CallScript(number=KNOWN, line=line), fast=True)
    survey = server.services.config.line_for(line).survey
    assert result.variables.get("IVR_SURVEY") == (None if survey == "off" else survey)
    await server.services.recorder.flush()
    return result.variables["IVR_CALL_ID"]


async def survey_call(server, call_id: str | None, line: str, *, fast: bool = True, **script):
    args = () if call_id is None else (call_id,)
    return await place_call("127.0.0.1", server.port,
                            CallScript(number=KNOWN, line=line, script="survey", args=args, **script),
                            fast=fast, timeout=60)


async def answers(server, call_id: str) -> dict:
    """The survey's columns of the call's row in the SQLite file, once everything pending is written
    (a batch the background writers hold at that moment included)."""
    services = server.services
    await services.recorder.flush()
    await eventually(lambda: record_of(services.config, call_id))
    async with asyncio.timeout(LIMIT):
        while services.updates.pending:
            await services.updates.flush(everything=True)
            await asyncio.sleep(0.01)
    row = record_of(services.config, call_id)
    return {key: row[key] for key in ("csat", "nps", "survey")}


async def prompt_names(server, language: str, *texts: str) -> list[str]:
    """The sound names Asterisk is told to play for these texts."""
    return [(await server.services.prompts.for_asterisk(text, language)).name for text in texts]


def agi_commands(result) -> list[str]:
    return [" ".join(command.split()[:2]) for command in result.commands]


@pytest.fixture
def keys_server(base_config, start_server):
    """The shipped dialog file over keys: general asks NPS, b2b CSAT, b2c both, quiet nothing."""
    return lambda: start_server(with_surveys(base_config, general="nps", b2b="csat", b2c="both", quiet="off"),
                                speech=True)


# -- by keys ---------------------------------------------------------------------------------------

async def test_each_line_asks_what_its_survey_setting_says_and_the_row_holds_the_answers(keys_server):
    server = await keys_server()
    call_id = await inbound_call(server, "b2b")
    result = await survey_call(server, call_id, "b2b", dtmf=["4"])
    assert result.error is None and not result.hung_up
    assert agi_commands(result) == ["GET DATA", "STREAM FILE"]  # the question, the thanks
    script = server.services.selfservice.script
    question, keys = script.survey_question("csat", "ru", first=True)
    assert result.prompts == await prompt_names(server, "ru", f"{question} {keys}", script.text("survey_thanks", "ru"))
    assert await answers(server, call_id) == {"csat": 4, "nps": None, "survey": "complete"}

    call_id = await inbound_call(server, "general")
    result = await survey_call(server, call_id, "general", dtmf=[Keys("0#")])
    assert result.commands[0].split()[-1] == "2"  # NPS takes up to two keys
    assert await answers(server, call_id) == {"csat": None, "nps": 0, "survey": "complete"}

    call_id = await inbound_call(server, "quiet")
    result = await survey_call(server, call_id, "quiet", dtmf=["5"])
    assert result.commands == [] and result.error is None  # off: the AGI returns at once
    assert await answers(server, call_id) == {"csat": None, "nps": None, "survey": None}


async def test_both_questions_by_keys_with_nps_ten_or_one_key_and_hash(keys_server):
    server = await keys_server()
    call_id = await inbound_call(server, "b2c")
    complete = metrics.SURVEYS.labels(result="complete")._value.get()
    result = await survey_call(server, call_id, "b2c", dtmf=["5", Keys("10")])
    assert agi_commands(result) == ["GET DATA", "GET DATA", "STREAM FILE"]
    assert await answers(server, call_id) == {"csat": 5, "nps": 10, "survey": "complete"}
    assert metrics.SURVEYS.labels(result="complete")._value.get() == complete + 1  # /metrics counts it

    call_id = await inbound_call(server, "b2c")
    await survey_call(server, call_id, "b2c", dtmf=["3", Keys("7#")])
    assert await answers(server, call_id) == {"csat": 3, "nps": 7, "survey": "complete"}


async def test_a_wrong_key_is_asked_once_more_then_the_survey_moves_on(keys_server):
    server = await keys_server()
    call_id = await inbound_call(server, "b2c")
    result = await survey_call(server, call_id, "b2c", dtmf=["8", "2", Keys("11"), Keys("12")])
    assert agi_commands(result) == ["GET DATA"] * 4 + ["STREAM FILE"]  # csat twice, nps twice, thanks
    script = server.services.selfservice.script
    again, keys = script.survey_question("csat", "ru", again=True)
    assert result.prompts[1] == (await prompt_names(server, "ru", f"{again} {keys}"))[0]
    assert await answers(server, call_id) == {"csat": 2, "nps": None, "survey": "partial"}


async def test_caller_hanging_up_mid_survey_leaves_a_partial_answer_and_no_error(keys_server, caplog):
    server = await keys_server()
    call_id = await inbound_call(server, "b2c")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = await survey_call(server, call_id, "b2c", dtmf=["2"], hangup_at=1)  # during the NPS question
    assert result.hung_up and result.error is None
    assert await answers(server, call_id) == {"csat": 2, "nps": None, "survey": "partial"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert len([r for r in caplog.records if "hung up during the survey" in r.getMessage()]) == 1


async def test_a_missing_or_garbage_call_id_gets_the_thanks_and_nothing_is_written(keys_server, caplog):
    server = await keys_server()
    real = await inbound_call(server, "b2b")
    thanks = server.services.selfservice.script.text("survey_thanks", "ru")
    for call_id in (None, "", "${IVR_CALL_ID}", real.upper(), real * 2):
        caplog.clear()
        result = await survey_call(server, call_id, "b2b", dtmf=["5"])
        assert result.error is None and agi_commands(result) == ["STREAM FILE"], call_id
        assert result.prompts == await prompt_names(server, "ru", thanks)
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, call_id
    assert server.services.updates.stats["noted"] == 0
    assert await answers(server, real) == {"csat": None, "nps": None, "survey": None}


async def test_a_silent_caller_hears_one_question_and_the_thanks_and_is_let_go(korean_config, start_server):
    """Real time: the prompt plays, the key wait runs out, no repeat and no second question.  (The
    Korean dialog's prompts are short, and the key wait is cut to 1 s here: the shipped ru survey adds
    up the same way, with its own prompts and wait.)"""
    config = with_surveys(korean_config, b2c="both")
    server = await start_server(replace(config, speech=replace(config.speech, models={})), speech=True)
    call_id = await inbound_call(server, "b2c")
    selfservice = server.services.selfservice
    selfservice.script = replace(selfservice.script, settings=replace(selfservice.script.settings,
                                                                       no_input_timeout=1.0))
    script = selfservice.script
    question, keys = script.survey_question("csat", "ko", first=True)
    texts = [f"{question} {keys}", script.text("survey_thanks", "ko")]
    # rendered first (and timed): the seconds measured are the caller's, not the synthesiser's
    heard = sum([(await server.services.prompts.for_asterisk(text, "ko")).seconds for text in texts])
    wait = script.settings.no_input_timeout
    started = time.perf_counter()
    result = await survey_call(server, call_id, "b2c", fast=False)
    took = time.perf_counter() - started
    assert result.prompts == await prompt_names(server, "ko", *texts)
    assert heard + wait <= took <= heard + wait + 2.0, (heard, wait, took)  # no repeat, no second question
    assert await answers(server, call_id) == {"csat": None, "nps": None, "survey": None}


def test_the_survey_knows_the_call_ids_the_inbound_script_makes():
    assert is_call_id(new_call_id()) and not is_call_id(new_call_id()[:-1]) and not is_call_id("X" * 32)


class Scripted:
    """A channel whose caller gives the listed replies."""

    mode = "dtmf"

    def __init__(self, replies):
        self.replies = list(replies)
        self.asked, self.said = [], []

    async def ask(self, question, language, *, within=None):
        self.asked.append(question)
        return self.replies.pop(0)

    async def say(self, text, language, *, within=None):
        self.said.append(text)


async def test_silence_on_a_repeat_ends_the_survey_and_the_operator_word_is_no_score(base_config):
    from ivr.selfservice.script import load_dialog_script

    script = load_dialog_script(base_config.speech.dialog_file)
    channel = Scripted([CallerReply("operator", heard="оператор"), CallerReply(NO_INPUT)])
    survey = Survey(("csat", "nps"), script, "ru")
    assert await survey.run(channel) == {} and survey.result is None
    first, again = channel.asked
    assert first.text.startswith(script.text("survey_intro", "ru"))
    assert again.text.startswith(script.text("not_understood", "ru"))
    assert channel.said == [script.text("survey_thanks", "ru")]

    channel = Scripted([CallerReply("4"), CallerReply(NOT_UNDERSTOOD), CallerReply("11")])
    survey = Survey(("csat", "nps"), script, "ru")
    assert await survey.run(channel) == {"csat": 4} and survey.result == "partial"
    assert [q.step for q in channel.asked] == ["rating", "nps", "nps"]
    assert not channel.asked[1].text.startswith(script.text("survey_intro", "ru"))


# -- by voice ---------------------------------------------------------------------------------------

async def korean_record(server) -> str:
    """A call record as the inbound script queues it (the general line's Korean dialog is not the point)."""
    call_id = new_call_id()
    server.services.recorder.add({"call_id": call_id, "line": "general"})
    await server.services.recorder.flush()
    return call_id


async def test_by_voice_spoken_scores_and_keys_count_and_a_hang_up_leaves_what_was_said(
        korean_config, start_server, korean_speech, caplog):
    server = await start_server(with_surveys(korean_config, general="both"), speech=True)
    assert server.services.selfservice.server is not None, server.services.notes

    call_id = await korean_record(server)  # CSAT said, NPS pressed on the AudioSocket: 1, 0
    result = await survey_call(server, call_id, "general", fast=False,
                               voice=[Turn(say=korean_speech("오")), Turn(press="10")])
    assert result.error is None and agi_commands(result) == ["EXEC AudioSocket"]  # nothing by GET DATA
    assert result.audiosocket.outcome == "returned"  # the thanks played, the server closed the socket
    assert await answers(server, call_id) == {"csat": 5, "nps": 10, "survey": "complete"}

    call_id = await korean_record(server)  # CSAT said, then gone during the NPS question
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = await survey_call(server, call_id, "general", fast=False,
                                   voice=[Turn(say=korean_speech("삼")), Turn(hang_up=True, barge_in=0.3)])
    assert result.hung_up
    assert await answers(server, call_id) == {"csat": 3, "nps": None, "survey": "partial"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert len([r for r in caplog.records if "hung up during the survey" in r.getMessage()]) == 1
