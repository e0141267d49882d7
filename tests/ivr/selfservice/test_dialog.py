"""ivr.selfservice.dialog: the self-service dialog's state machine and its plan.

The channel here is a scripted caller written against the dialog's own
contract (`mode`, `say`, `ask` -> `CallerReply`): in speech mode it answers with
phrases and maps them through the step's grammar meanings, in DTMF mode it
presses keys and maps them through the question's `digits`, as the real
channels do.  The end-to-end runs over AudioSocket and FastAGI are in
test_selfservice.py.

The plans are either written out (for the state machine) or made by
`make_plan` from a real decision: a real CRM lookup on the seeded SQLite CRM,
the shipped intent catalogue and routing rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from caller_id.catalogue import load_catalogue
from caller_id.predict import Intent
from ivr.call.decision import decide
from ivr.selfservice.dialog import (NO_INPUT, NOT_UNDERSTOOD, CallerGone, ChannelFailed, Dialog, TimeUp, Offer, Outcome, Plan, Question,
                        CallerReply, address, make_plan, static_prompts)
from ivr.selfservice.script import OPERATOR, DialogScript, load_dialog_script
from ivr.services import build_services

PROJECT = Path(__file__).resolve().parents[3]
SHIPPED = PROJECT / "config" / "dialog.yaml"
CATALOGUE = PROJECT / "config" / "intents.yaml"

SHOWCASE_CARD_READY = "+79000000003"  # a metal card waits at the Tverskaya branch
SHOWCASE_NO_CASES = "+79000000012"
SHOWCASE_OVERDUE_REISSUE = "+79000000001"  # card_reissue_delay: an intent without an answer
SHOWCASE_ENGLISH = "+442079460123"  # language en; a deposit being opened
UNKNOWN_NUMBER = "+79990001122"


@pytest.fixture(scope="module")
def script() -> DialogScript:
    return load_dialog_script(SHIPPED, intents=load_catalogue(CATALOGUE).names)


def with_settings(script: DialogScript, **settings: Any) -> DialogScript:
    return replace(script, settings=replace(script.settings, **settings), _grammars={})


def patient(script: DialogScript) -> DialogScript:
    """The script with no time_to_person to speak of: for tests of max_seconds."""
    return with_settings(script, time_to_person=10_000.0)


class Clock:
    """A monotonic clock the scripted caller moves on."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class ScriptedCaller:
    """A caller who answers each question with the next scripted answer.

    Speech: an answer is a phrase, mapped through the step's grammar meanings
    (a phrase the step does not know is not understood; "" is silence).
    DTMF: an answer is the keys pressed, mapped through the question's digits.
    An exception in the answers is raised by `ask` after the question is played.
    """

    def __init__(self, script: DialogScript, mode: str, answers: list[Any], *,
                 clock: Clock | None = None, seconds: list[float] | None = None):
        self.script = script
        self.mode = mode
        self.answers = list(answers)
        self.clock = clock
        self.seconds = list(seconds or [])  # how long each answer takes
        self.events: list[tuple[str, Any, str]] = []

    async def say(self, text: str, language: str, *, within: float | None = None) -> None:
        self.events.append(("say", text, language))

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> CallerReply:
        """An answer that would take longer than `within` is cut off there, as a channel does."""
        self.events.append(("ask", question, language))
        if self.clock is not None and self.seconds:
            took = self.seconds.pop(0)
            if within is not None and took > within:
                self.clock.now += max(within, 0.0)
                raise TimeUp("cut off")
            self.clock.now += took
        assert self.answers, f"the dialog asked more than scripted: {question.text_for(self.mode)!r}"
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if not answer:
            return CallerReply(NO_INPUT, via=self.mode)
        if self.mode == "dtmf":
            return CallerReply(question.digits.get(answer, NOT_UNDERSTOOD), heard=answer, via="dtmf")
        meaning = self.script.meanings(question.step, language).get(answer, NOT_UNDERSTOOD)
        return CallerReply(meaning, heard=answer, via="speech", confidence=0.91)

    @property
    def asked(self) -> list[Question]:
        return [item for kind, item, _ in self.events if kind == "ask"]

    @property
    def said(self) -> list[str]:
        return [item for kind, item, _ in self.events if kind == "say"]

    @property
    def played(self) -> list[str]:
        """Everything the caller heard, in order."""
        return [item.text_for(self.mode) if kind == "ask" else item for kind, item, _ in self.events]


CARD_TITLE, DOCS_TITLE, LOAN_TITLE = "Когда будет готова карта", "Недостающие документы", "Платёж по кредиту"
CARD_ANSWER, DOCS_ANSWER = "Ваша карта будет готова завтра.", "Нужна справка о доходах."


def a_plan(*, offer: str | None = "card_ready", card_answer: str | None = CARD_ANSWER,
           name: str | None = "Пётр Сергеевич", language: str = "ru") -> Plan:
    card = Offer(Intent("card_ready", 0.8, ("карта будет готова",), 7), CARD_TITLE, card_answer)
    docs = Offer(Intent("documents_missing", 0.4, (), 9), DOCS_TITLE, DOCS_ANSWER)
    answers = {"card_ready": card, "documents_missing": docs}
    return Plan(language=language, name=name, offer=answers[offer] if offer else None, answers=answers,
                titles={"card_ready": CARD_TITLE, "documents_missing": DOCS_TITLE, "loan_payment": LOAN_TITLE},
                menu=("card_ready", "documents_missing", "loan_payment"),
                examples=(CARD_TITLE, DOCS_TITLE))


def text(script: DialogScript, prompt: str, language: str = "ru", **values: Any) -> str:
    return script.text(prompt, language, **values)


# -- the happy path --------------------------------------------------------------------------


async def test_yes_answer_helped_rating_goodbye_is_contained(script) -> None:
    caller = ScriptedCaller(script, "speech", ["да", "конечно", "четвёрка"])
    dialog = Dialog(a_plan(), script)
    outcome = await dialog.run(caller)

    assert caller.played == [
        "Здравствуйте, Пётр Сергеевич! " + text(script, "offer", intent=CARD_TITLE),
        CARD_ANSWER,
        text(script, "helped"),
        text(script, "rating"),
        text(script, "goodbye"),
    ]
    assert [q.step for q in caller.asked] == ["confirm", "confirm", "rating"]
    assert all(language == "ru" for _, _, language in caller.events)
    assert (outcome.contained, outcome.intent, outcome.rating, outcome.reason) == (True, "card_ready", 4, "helped")
    assert outcome.declined is None and outcome.modes == ["speech"]
    assert dialog.finished and dialog.step == "done"
    assert [entry["step"] for entry in dialog.transcript] == ["offer", "answer", "helped", "rating", "goodbye"]
    offer = dialog.transcript[0]
    assert (offer["heard"], offer["meaning"], offer["via"], offer["confidence"]) == ("да", "yes", "speech", 0.91)
    assert dialog.transcript[1] == {"step": "answer", "intent": "card_ready", "said": CARD_ANSWER}
    assert outcome.to_dict() == {"contained": True, "intent": "card_ready", "declined": None, "rating": 4,
                                 "reason": "helped", "modes": ["speech"], "seconds": 0.0}


async def test_without_the_rating_setting_goodbye_follows_helped(script) -> None:
    caller = ScriptedCaller(script, "speech", ["да", "да"])
    outcome = await Dialog(a_plan(), with_settings(script, rating=False)).run(caller)
    assert outcome.contained and outcome.rating is None
    assert caller.said == [CARD_ANSWER, text(script, "goodbye")]


async def test_not_helped_goes_to_a_person(script) -> None:
    caller = ScriptedCaller(script, "speech", ["да", "нет"])
    outcome = await Dialog(a_plan(), script).run(caller)
    assert (outcome.contained, outcome.intent, outcome.reason) == (False, "card_ready", "not_helped")
    assert caller.said == [CARD_ANSWER, text(script, "transfer")]


async def test_no_then_an_intent_with_an_answer_is_answered(script) -> None:
    caller = ScriptedCaller(script, "speech", ["нет", "справка", "да", "пять"])
    dialog = Dialog(a_plan(), script)
    outcome = await dialog.run(caller)
    open_question = caller.asked[1]
    assert open_question.step == "open_question"
    # Greeted with the offer: not again; the examples are the plan's titles.
    assert open_question.text == text(script, "open_question", examples=f"{CARD_TITLE}, {DOCS_TITLE}")
    assert caller.said == [DOCS_ANSWER, text(script, "goodbye")]
    assert (outcome.contained, outcome.intent, outcome.declined, outcome.rating) == (
        True, "documents_missing", "card_ready", 5)
    assert [entry["step"] for entry in dialog.transcript] == [
        "offer", "open_question", "answer", "helped", "rating", "goodbye"]


async def test_without_an_offer_the_greeting_opens_the_open_question(script) -> None:
    caller = ScriptedCaller(script, "speech", ["карта", "да", "три"])
    outcome = await Dialog(a_plan(offer=None, name=None), script).run(caller)
    first = caller.asked[0]
    assert first.step == "open_question"
    assert first.text == text(script, "greeting_unknown") + " " + text(
        script, "open_question", examples=f"{CARD_TITLE}, {DOCS_TITLE}")
    assert outcome.contained and outcome.intent == "card_ready" and outcome.declined is None
    assert caller.said[0] == CARD_ANSWER


async def test_an_english_plan_speaks_english(script) -> None:
    caller = ScriptedCaller(script, "speech", ["yeah", "right", "five"])
    outcome = await Dialog(a_plan(language="en", name="John Smith"), script).run(caller)
    assert caller.asked[0].text == f"Hello, John Smith! Is it about: {CARD_TITLE}?"
    assert caller.said[-1] == "Thank you for calling. Goodbye."
    assert {language for _, _, language in caller.events} == {"en"}
    assert outcome.contained and outcome.rating == 5


# -- to a person -----------------------------------------------------------------------------


async def test_an_intent_without_an_answer_goes_to_a_person_with_the_intent(script) -> None:
    # "кредит" names loan_payment: a known intent, but this plan has no answer for it.
    caller = ScriptedCaller(script, "speech", ["нет", "кредит"])
    dialog = Dialog(a_plan(), script)
    outcome = await dialog.run(caller)
    assert (outcome.contained, outcome.intent, outcome.reason, outcome.declined) == (
        False, "loan_payment", "needs_person", "card_ready")
    assert caller.said == [text(script, "transfer")]
    assert dialog.transcript[-1] == {"step": "transfer", "said": text(script, "transfer")}


async def test_confirming_an_offer_without_an_answer_goes_to_a_person_at_once(script) -> None:
    caller = ScriptedCaller(script, "speech", ["верно"])
    outcome = await Dialog(a_plan(card_answer=None), script).run(caller)
    assert (outcome.contained, outcome.intent, outcome.reason) == (False, "card_ready", "needs_person")
    assert len(caller.asked) == 1 and caller.said == [text(script, "transfer")]


@pytest.mark.parametrize(("answers", "asked_steps", "answered"), [
    (["оператор"], ["offer"], False),
    (["нет", "специалист"], ["offer", "open_question"], False),
    (["да", "человек"], ["offer", "helped"], True),
    (["", "сотрудник"], ["offer", "offer"], False),  # after a silence too
], ids=["at-offer", "at-open-question", "at-helped", "after-a-silence"])
async def test_operator_at_any_step_transfers_at_once(script, answers, asked_steps, answered) -> None:
    caller = ScriptedCaller(script, "speech", answers)
    dialog = Dialog(a_plan(), script)
    outcome = await dialog.run(caller)
    assert [q.name for q in caller.asked] == asked_steps
    assert caller.said == [CARD_ANSWER] * answered + [text(script, "transfer")]
    assert (outcome.contained, outcome.reason, outcome.rating) == (False, "operator", None)
    assert dialog.transcript[-2]["meaning"] == OPERATOR


async def test_operator_at_the_rating_says_goodbye_and_stays_contained(script) -> None:
    caller = ScriptedCaller(script, "speech", ["да", "да", "оператор"])
    outcome = await Dialog(a_plan(), script).run(caller)
    assert (outcome.contained, outcome.reason, outcome.rating) == (True, "helped", None)
    assert caller.said == [CARD_ANSWER, text(script, "goodbye")]


# -- not understood ------------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 2])
@pytest.mark.parametrize("miss", ["", "что-то непонятное"], ids=["no_input", "not_understood"])
async def test_a_step_not_understood_is_asked_again_then_handed_over(script, retries, miss) -> None:
    caller = ScriptedCaller(script, "speech", [miss] * (retries + 1))
    dialog = Dialog(a_plan(), with_settings(script, retries=retries))
    outcome = await dialog.run(caller)
    offer = text(script, "offer", intent=CARD_TITLE)
    assert [q.text for q in caller.asked] == (
        [f"Здравствуйте, Пётр Сергеевич! {offer}"] + [f"{text(script, 'not_understood')} {offer}"] * retries)
    assert (outcome.contained, outcome.reason, outcome.intent) == (False, "not_understood", None)
    assert caller.said == [text(script, "transfer")]
    expected = NO_INPUT if not miss else NOT_UNDERSTOOD
    assert [entry.get("meaning") for entry in dialog.transcript[:-1]] == [expected] * (retries + 1)


async def test_an_answer_understood_resets_the_count_of_misses(script) -> None:
    # retries 1: a miss at each of three steps is forgiven, since each step was then understood.
    caller = ScriptedCaller(script, "speech", ["а?", "да", "", "да", "восемь", "два"])
    outcome = await Dialog(a_plan(), script).run(caller)
    assert (outcome.contained, outcome.rating) == (True, 2)
    not_understood = text(script, "not_understood")
    assert [q.text.startswith(not_understood) for q in caller.asked] == [False, True, False, True, False, True]


async def test_a_rating_not_understood_ends_with_goodbye_not_a_transfer(script) -> None:
    caller = ScriptedCaller(script, "speech", ["да", "да", "", "десять"])
    outcome = await Dialog(a_plan(), script).run(caller)
    assert (outcome.contained, outcome.reason, outcome.rating) == (True, "helped", None)
    assert caller.said == [CARD_ANSWER, text(script, "goodbye")]


async def test_the_open_question_not_understood_goes_to_a_person(script) -> None:
    caller = ScriptedCaller(script, "speech", ["нет", "погода", "погода"])
    outcome = await Dialog(a_plan(), script).run(caller)
    assert (outcome.reason, outcome.declined, outcome.intent) == ("not_understood", "card_ready", None)
    assert caller.asked[2].text.startswith(text(script, "not_understood") + " ")


# -- the greeting -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "addressed"), [
    ("Иванов Пётр Сергеевич", "Пётр Сергеевич"),
    ("John Smith", "John Smith"),
    ("Madonna", "Madonna"),
    ("  Иванов   Пётр  Сергеевич ", "Пётр Сергеевич"),
    ("", None),
    (None, None),
])
def test_callers_are_addressed_by_name_and_patronymic(name, addressed) -> None:
    assert address(name) == addressed


async def test_the_greeting_is_said_once_in_the_whole_dialog(script) -> None:
    caller = ScriptedCaller(script, "speech", ["", "нет", "", "справка", "да", "один"])
    await Dialog(a_plan(), script).run(caller)
    greeting = text(script, "greeting", name="Пётр Сергеевич")
    assert sum(heard.count(greeting) for heard in caller.played) == 1
    assert caller.played[0].startswith(greeting)


# -- DTMF mode --------------------------------------------------------------------------------


async def test_dtmf_mode_plays_the_key_instructions_and_the_menu(script) -> None:
    caller = ScriptedCaller(script, "dtmf", ["2", "1", "1", "5"])
    dialog = Dialog(a_plan(), script)
    outcome = await dialog.run(caller)
    offer, menu, helped, rating = caller.asked
    assert offer.text_for("dtmf") == (f"Здравствуйте, Пётр Сергеевич! {text(script, 'offer', intent=CARD_TITLE)} "
                                      f"{text(script, 'offer_keys')}")
    assert offer.digits == {"0": OPERATOR, "1": "yes", "2": "no"}
    items = " ".join(text(script, "menu_item", title=title, digit=digit)
                     for digit, title in enumerate((DOCS_TITLE, LOAN_TITLE), start=1))
    assert menu.text_for("dtmf") == text(script, "open_question_keys", menu=items)  # not the declined one again
    assert text(script, "menu_item", title=LOAN_TITLE, digit=2) in menu.text_for("dtmf")
    assert text(script, "open_question", examples=f"{CARD_TITLE}, {DOCS_TITLE}") not in menu.text_for("dtmf")
    assert menu.digits == {"0": OPERATOR, "1": "documents_missing", "2": "loan_payment"}
    assert helped.text_for("dtmf") == f"{text(script, 'helped')} {text(script, 'helped_keys')}"
    assert rating.text_for("dtmf") == f"{text(script, 'rating')} {text(script, 'rating_keys')}"
    assert rating.digits == {"0": OPERATOR, "1": "1", "2": "2", "3": "3", "4": "4", "5": "5"}
    assert (outcome.contained, outcome.intent, outcome.declined, outcome.rating, outcome.modes) == (
        True, "documents_missing", "card_ready", 5, ["dtmf"])
    assert dialog.transcript[1]["via"] == "dtmf" and dialog.transcript[1]["heard"] == "1"
    assert "confidence" not in dialog.transcript[1]


@pytest.mark.parametrize(("key", "intent", "reason"), [
    ("1", "card_ready", None),
    ("2", "documents_missing", None),
    ("3", "loan_payment", "needs_person"),
    ("0", None, "operator"),
])
async def test_each_menu_key_means_its_intent_and_zero_the_operator(script, key, intent, reason) -> None:
    caller = ScriptedCaller(script, "dtmf", [key, "1", "1"])
    outcome = await Dialog(a_plan(offer=None), script).run(caller)
    assert caller.asked[0].text_for("dtmf").startswith("Здравствуйте, Пётр Сергеевич! ")
    assert outcome.intent == intent
    if reason is None:
        assert outcome.contained and outcome.rating == 1
    else:
        assert not outcome.contained and outcome.reason == reason


async def test_a_key_not_on_the_menu_is_asked_again(script) -> None:
    caller = ScriptedCaller(script, "dtmf", ["9", "2", "1", "3"])
    outcome = await Dialog(a_plan(offer=None), script).run(caller)
    assert caller.asked[1].text_for("dtmf").startswith(text(script, "not_understood") + " ")
    assert outcome.intent == "documents_missing" and outcome.contained


async def test_the_prompts_rendered_at_start_up_are_the_ones_played(script) -> None:
    rendered = static_prompts(script)
    assert len(rendered) == len(set(rendered)) == 2 * 4 * 2  # 2 languages x 4 prompts x 2 modes
    assert (text(script, "transfer", "en"), "en", "dtmf") in rendered
    for mode, answers in (("speech", ["да", "да", "два"]), ("dtmf", ["1", "1", "2"])):
        caller = ScriptedCaller(script, mode, answers)
        await Dialog(a_plan(), script).run(caller)
        helped, rating = caller.asked[1:]
        for played in (helped.text_for(mode), rating.text_for(mode), caller.said[-1]):
            assert (played, "ru", mode) in rendered, played
    caller = ScriptedCaller(script, "dtmf", ["0"])
    await Dialog(a_plan(), script).run(caller)
    assert (caller.said[-1], "ru", "dtmf") in rendered


# -- a broken channel, a hang-up, the time limit -------------------------------------------------------


async def test_a_failed_channel_leaves_the_step_and_another_channel_goes_on(script) -> None:
    dialog = Dialog(a_plan(), script)
    speech = ScriptedCaller(script, "speech", ["да", ChannelFailed("recognition broke")])
    with pytest.raises(ChannelFailed):
        await dialog.run(speech)
    assert dialog.step == "helped" and not dialog.finished
    assert speech.said == [CARD_ANSWER]

    keys = ScriptedCaller(script, "dtmf", ["1", "4"])
    outcome = await dialog.run(keys)
    assert [q.name for q in keys.asked] == ["helped", "rating"]  # from where it stopped
    assert keys.said == [text(script, "goodbye")]  # the answer is not said again
    assert not any("Здравствуйте" in heard for heard in keys.played)
    assert (outcome.contained, outcome.rating, outcome.modes) == (True, 4, ["speech", "dtmf"])
    assert [(entry["step"], entry.get("via")) for entry in dialog.transcript] == [
        ("offer", "speech"), ("answer", None), ("helped", "dtmf"), ("rating", "dtmf"), ("goodbye", None)]


async def test_a_failure_at_the_open_question_goes_on_there_by_keys(script) -> None:
    dialog = Dialog(a_plan(), script)
    with pytest.raises(ChannelFailed):
        await dialog.run(ScriptedCaller(script, "speech", ["нет", ChannelFailed("socket lost")]))
    assert dialog.step == "open_question" and dialog.outcome.declined == "card_ready"
    keys = ScriptedCaller(script, "dtmf", ["2"])
    outcome = await dialog.run(keys)
    assert keys.asked[0].name == "open_question"
    assert text(script, "menu_item", title=LOAN_TITLE, digit=2) in keys.asked[0].text_for("dtmf")
    assert (outcome.intent, outcome.reason, outcome.modes) == ("loan_payment", "needs_person", ["speech", "dtmf"])


async def test_a_hang_up_propagates_and_leaves_the_step(script) -> None:
    clock = Clock()
    dialog = Dialog(a_plan(), script, clock=clock)
    caller = ScriptedCaller(script, "speech", ["да", CallerGone("hung up")], clock=clock, seconds=[3.0, 4.5])
    with pytest.raises(CallerGone):
        await dialog.run(caller)
    assert dialog.step == "helped" and not dialog.finished
    assert dialog.outcome.seconds == 7.5 and not dialog.outcome.contained
    outcome = dialog.stop_as("hangup")
    assert (outcome.reason, dialog.finished) == ("hangup", True)


def test_stop_as_keeps_a_reason_already_given(script) -> None:
    dialog = Dialog(a_plan(), script)
    dialog.outcome.reason = "helped"
    assert dialog.stop_as("hangup").reason == "helped" and dialog.finished
    assert Dialog(a_plan(), script).stop_as("dialog_error").seconds == 0.0  # never started


async def test_the_time_limit_hands_the_caller_over(script) -> None:
    clock = Clock()
    caller = ScriptedCaller(script, "speech", ["нет", "справка"], clock=clock, seconds=[200.0, 41.0])
    outcome = await Dialog(a_plan(), patient(script), clock=clock).run(caller)
    assert [q.name for q in caller.asked] == ["offer", "open_question"]
    assert caller.said == [text(script, "transfer")]
    assert (outcome.reason, outcome.declined, outcome.contained) == ("time_limit", "card_ready", False)
    assert outcome.seconds == 240.0  # the open question was cut off at the limit, not answered at 241 s


async def test_a_step_that_would_outlast_the_time_limit_is_cut_off_there(script) -> None:
    clock = Clock()
    caller = ScriptedCaller(script, "speech", ["нет"], clock=clock, seconds=[500.0])
    outcome = await Dialog(a_plan(), patient(script), clock=clock).run(caller)
    assert caller.said == [text(script, "transfer")]
    assert (outcome.reason, outcome.declined, outcome.seconds) == ("time_limit", None, 240.0)


async def test_the_time_limit_is_counted_across_channels(script) -> None:
    clock = Clock()
    dialog = Dialog(a_plan(), with_settings(script, max_seconds=60.0, time_to_person=1000.0), clock=clock)
    with pytest.raises(ChannelFailed):
        await dialog.run(ScriptedCaller(script, "speech", ["нет", ChannelFailed("x")], clock=clock,
                                        seconds=[20.0, 30.0]))
    clock.now += 11.0  # 61 s since the dialog started
    keys = ScriptedCaller(script, "dtmf", [])
    outcome = await dialog.run(keys)
    assert keys.asked == [] and keys.said == [text(script, "transfer")]
    assert outcome.reason == "time_limit" and outcome.seconds == 61.0


async def test_up_to_the_time_limit_the_dialog_goes_on(script) -> None:
    clock = Clock()
    caller = ScriptedCaller(script, "speech", ["нет", "справка", "да", "пять"], clock=clock,
                            seconds=[100.0, 100.0, 39.0, 1.0])
    outcome = await Dialog(a_plan(), patient(script), clock=clock).run(caller)
    assert outcome.contained and outcome.rating == 5  # 240 s exactly is not over 240


async def test_the_time_limit_after_being_helped_says_goodbye_not_transfer(script) -> None:
    """BUG: the caller was helped (contained, IVR_CONTAINED=1: the dialplan says
    goodbye and does not queue) but the time limit at the rating step goes to
    TRANSFER, so they hear "Соединяю со специалистом" and are then hung up on.
    Operator or silence at the rating step end with goodbye; the limit should too."""
    clock = Clock()
    caller = ScriptedCaller(script, "speech", ["да", "да", "пять"], clock=clock, seconds=[10.0, 229.0, 5.0])
    outcome = await Dialog(a_plan(), script, clock=clock).run(caller)
    assert outcome.contained and outcome.reason == "helped" and outcome.rating is None
    assert caller.said == [CARD_ANSWER, text(script, "goodbye")]


def test_outcome_to_dict_rounds_the_seconds_and_copies_the_modes() -> None:
    outcome = Outcome(modes=["speech"], seconds=12.3456)
    as_dict = outcome.to_dict()
    assert as_dict["seconds"] == 12.35 and as_dict["modes"] == ["speech"]
    as_dict["modes"].append("dtmf")
    assert outcome.modes == ["speech"]


# -- make_plan from a real decision ----------------------------------------------------------------


@pytest.fixture
async def crm(base_config):
    """Real services (directory, catalogue, rules) on a copy of the seeded SQLite CRM."""
    services = await build_services(base_config, speech=False)
    try:
        yield services
    finally:
        await services.close()


@pytest.fixture
def real_script(crm) -> DialogScript:
    return load_dialog_script(crm.config.speech.dialog_file, intents=crm.catalogue.names)


async def decision_for(services, number: str, *, line_language: str | None = None):
    config = services.config
    line = config.line_for("general")
    if line_language is not None:
        line = replace(line, language=line_language)
    lookup = await services.directory.lookup(number, region=config.region)
    return decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current, now=services.now())


def now_of(services) -> dt.datetime:
    return services.now()


async def test_the_plan_offers_the_ready_card_with_its_answer_from_the_case(crm, real_script) -> None:
    decision = await decision_for(crm, SHOWCASE_CARD_READY)
    plan = make_plan(decision, crm.catalogue, real_script, now=now_of(crm))
    top = decision.top_intent
    card_case = next(case for case in decision.view.cases if case.product == "card" and case.status == "ready")
    assert (plan.language, plan.name) == ("ru", "Анна Викторовна")  # "Лебедева Анна Викторовна"
    assert plan.offer is not None and plan.offer is plan.answers[top.intent]
    assert plan.offer.intent == top and top.intent == "card_pickup" and top.case_id == card_case.id
    assert plan.offer.title == "Карта готова к выдаче"
    answer = plan.offer.answer
    assert answer is not None and answer.startswith("Ваша карта готова")
    assert "Тверская" in answer and "{" not in answer  # the branch filled from the case's facts
    assert set(plan.answers) == {intent.intent for intent in decision.intents}
    assert plan.answers["general_question"].answer is None  # the fallback has no answer
    # The menu: the predicted reasons first, the likeliest first, then the script's; the examples from the catalogue.
    predicted = tuple(i.intent for i in decision.intents if i.intent != "general_question")
    assert plan.menu[: len(predicted)] == predicted and plan.menu[0] == "card_pickup"
    assert plan.menu == tuple(dict.fromkeys(predicted + real_script.menu))
    assert set(plan.titles) == set(crm.catalogue.names)
    assert plan.titles["loan_payment"] == "Платёж по кредиту"
    assert plan.examples == ("Когда будет готова карта", "Недостающие документы", "Статус заявки на кредит")

    # the shipped general line has a post-call survey: the dialog neither rates nor says goodbye
    assert plan.survey
    caller = ScriptedCaller(real_script, "speech", ["да", "да"])
    outcome = await Dialog(plan, real_script).run(caller)
    assert caller.asked[0].text == ("Здравствуйте, Анна Викторовна! "
                                    "Вы по вопросу: Карта готова к выдаче?")
    assert [q.step for q in caller.asked] == ["confirm", "confirm"] and caller.said == [answer]
    assert (outcome.contained, outcome.intent, outcome.rating) == (True, "card_pickup", None)
    # without one the dialog rates the help and says goodbye itself
    caller = ScriptedCaller(real_script, "speech", ["да", "да", "пять"])
    outcome = await Dialog(replace(plan, survey=False), real_script).run(caller)
    assert caller.said == [answer, text(real_script, "goodbye")]
    assert (outcome.contained, outcome.intent, outcome.rating) == (True, "card_pickup", 5)


async def test_offer_min_score_decides_whether_the_reason_is_offered(crm, real_script) -> None:
    decision = await decision_for(crm, SHOWCASE_CARD_READY)
    score = decision.top_intent.score
    at = make_plan(decision, crm.catalogue, with_settings(real_script, offer_min_score=score), now=now_of(crm))
    assert at.offer is not None and at.offer.intent.intent == "card_pickup"
    above = make_plan(decision, crm.catalogue, with_settings(real_script, offer_min_score=min(1.0, score + 0.01)),
                      now=now_of(crm))
    assert above.offer is None
    assert "card_pickup" in above.answers  # still answerable when the caller names it

    caller = ScriptedCaller(real_script, "dtmf", ["0"])
    await Dialog(above, real_script).run(caller)
    assert caller.asked[0].name == "open_question"  # no offer: the open question first


async def test_a_caller_without_cases_is_not_offered_the_fallback(crm, real_script) -> None:
    decision = await decision_for(crm, SHOWCASE_NO_CASES)
    assert decision.top_intent.intent == crm.catalogue.fallback.name
    for script in (real_script, with_settings(real_script, offer_min_score=0.0)):
        plan = make_plan(decision, crm.catalogue, script, now=now_of(crm))
        assert plan.offer is None
    assert plan.name == "Никита Алексеевич" and plan.language == "ru"
    caller = ScriptedCaller(real_script, "speech", ["платёж"])
    outcome = await Dialog(plan, real_script).run(caller)
    assert caller.asked[0].text.startswith("Здравствуйте, Никита Алексеевич! ")
    assert (outcome.intent, outcome.reason) == ("loan_payment", "needs_person")


async def test_an_offered_reason_without_an_answer_goes_to_a_person(crm, real_script) -> None:
    decision = await decision_for(crm, SHOWCASE_OVERDUE_REISSUE)
    plan = make_plan(decision, crm.catalogue, real_script, now=now_of(crm))
    assert plan.offer is not None and plan.offer.intent.intent == "card_reissue_delay"
    assert plan.offer.answer is None  # the catalogue has no answer for it
    outcome = await Dialog(plan, real_script).run(ScriptedCaller(real_script, "dtmf", ["1"]))
    assert (outcome.intent, outcome.reason, outcome.contained) == ("card_reissue_delay", "needs_person", False)


async def test_an_english_caller_gets_an_english_plan(crm, real_script) -> None:
    decision = await decision_for(crm, SHOWCASE_ENGLISH)
    plan = make_plan(decision, crm.catalogue, real_script, now=now_of(crm))
    assert (plan.language, plan.name) == ("en", "James Carter")
    assert plan.offer is not None and plan.offer.title == "Deposit question"
    assert plan.offer.answer.startswith("Your deposit runs until ") and "4.5" in plan.offer.answer
    assert plan.examples == ("When the card is ready", "Missing documents", "Loan application status")
    assert plan.titles["card_ready"] == "When the card is ready"


@pytest.mark.parametrize(("line_language", "expected"), [("ru", "ru"), ("en", "en"), ("de", "ru")])
async def test_an_unknown_caller_gets_the_lines_language_and_no_name(crm, real_script, line_language,
                                                                     expected) -> None:
    decision = await decision_for(crm, UNKNOWN_NUMBER, line_language=line_language)
    plan = make_plan(decision, crm.catalogue, real_script, now=now_of(crm))
    assert (plan.language, plan.name, plan.offer) == (expected, None, None)
    caller = ScriptedCaller(real_script, "dtmf", ["0"])
    await Dialog(plan, real_script).run(caller)
    assert caller.asked[0].text.startswith(text(real_script, "greeting_unknown", expected))


async def test_the_callers_language_wins_over_the_lines(crm, real_script) -> None:
    decision = await decision_for(crm, SHOWCASE_CARD_READY, line_language="en")
    assert make_plan(decision, crm.catalogue, real_script, now=now_of(crm)).language == "ru"


async def test_the_plans_menu_and_examples_follow_the_script(crm, real_script, tmp_path) -> None:
    decision = await decision_for(crm, SHOWCASE_CARD_READY)
    dialog_file = tmp_path / "dialog.yaml"
    dialog_file.write_text(SHIPPED.read_text(encoding="utf-8").replace(
        "menu: [card_ready, documents_missing,", "menu: [deposit_question, not_in_the_catalogue, card_ready,", 1)
        .replace("  examples: 3 ", "  examples: 1 ", 1), encoding="utf-8")
    script = load_dialog_script(dialog_file)  # not checked against the catalogue
    plan = make_plan(decision, crm.catalogue, script, now=now_of(crm))
    predicted = tuple(i.intent for i in decision.intents if i.intent != "general_question")
    after = plan.menu[len(predicted):]  # the script's menu after the predicted reasons
    assert after[:2] == tuple(n for n in ("deposit_question", "card_ready") if n not in predicted)
    # an intent the catalogue lacks is left out
    assert "not_in_the_catalogue" not in plan.menu
    assert plan.examples == ("Когда будет готова карта",)
    none = make_plan(decision, crm.catalogue, with_settings(script, examples=0), now=now_of(crm))
    assert none.examples == ()


# -- time_to_person: the silent caller's budget ------------------------------------------------------


class TimedSilence:
    """A caller who presses nothing, on a channel that knows each prompt's length (a character
    takes `per_char` seconds) and, like KeypadChannel, does not start what cannot end in time."""

    mode = "dtmf"

    def __init__(self, clock: Clock, *, per_char: float = 0.08, wait: float = 4.0):
        self.clock, self.per_char, self.wait = clock, per_char, wait
        self.heard: list[str] = []

    def _play(self, text: str, wait: float, within: float | None) -> None:
        from ivr.selfservice.dialog import WouldNotFit

        seconds = len(text) * self.per_char + wait
        if within is not None and seconds > within:
            raise WouldNotFit(f"{seconds:.1f} s > {within:.1f} s")
        self.heard.append(text)
        self.clock.now += seconds

    async def say(self, text: str, language: str, *, within: float | None = None) -> None:
        self._play(text, 0.0, within)

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> CallerReply:
        self._play(question.text_for(self.mode), self.wait, within)
        return CallerReply(NO_INPUT, via="dtmf")


async def test_a_silent_caller_is_handed_over_within_time_to_person_not_asked_again(script) -> None:
    clock = Clock()
    caller = TimedSilence(clock)
    dialog = Dialog(a_plan(), script, clock=clock, reserve=2.0)
    outcome = await dialog.run(caller)
    assert outcome.reason == "no_answer" and not outcome.contained
    assert len(caller.heard) == 2 and caller.heard[-1] == text(script, "transfer")  # the offer once, no repeat
    assert outcome.seconds <= script.settings.time_to_person


async def test_time_spent_before_the_dialog_counts_against_time_to_person(script) -> None:
    clock = Clock()
    caller = TimedSilence(clock)
    outcome = await Dialog(a_plan(), script, clock=clock, started=clock.now - 12.0, reserve=2.0).run(caller)
    assert caller.heard == [text(script, "transfer")]  # 12 s of role question left no room for the offer
    assert outcome.reason == "no_answer"


async def test_the_key_menu_reads_fewer_reasons_when_three_do_not_fit(script) -> None:
    clock = Clock()
    caller = TimedSilence(clock, per_char=0.1)
    await Dialog(a_plan(offer=None), script, clock=clock, reserve=2.0).run(caller)
    menu = caller.heard[0]
    assert CARD_TITLE in menu and LOAN_TITLE not in menu  # the likeliest kept, the last dropped
    assert len(menu) * 0.1 + 4.0 <= script.settings.time_to_person - 2.0


async def test_the_offer_drops_the_greeting_rather_than_itself(script) -> None:
    clock = Clock()
    greeting = text(script, "greeting", name="Пётр Сергеевич")
    question = f"{text(script, 'offer', intent=CARD_TITLE)} {text(script, 'offer_keys')}"
    per_char = 10.0 / len(question)  # the question alone plays 10 s: with its wait and the reserve, 15.5 s
    caller = TimedSilence(clock, per_char=per_char, wait=3.0)
    await Dialog(a_plan(), script, clock=clock, reserve=1.5).run(caller)
    assert caller.heard[0] == question and greeting not in caller.heard[0]


async def test_after_an_answer_time_to_person_no_longer_applies(script) -> None:
    clock = Clock()
    caller = ScriptedCaller(script, "speech", ["нет", "справка", "да", "пять"], clock=clock,
                            seconds=[3.0, 20.0, 3.0, 2.0])  # a slow second answer: 23 s in all
    outcome = await Dialog(a_plan(), script, clock=clock, reserve=2.0).run(caller)
    assert outcome.contained and outcome.rating == 5
