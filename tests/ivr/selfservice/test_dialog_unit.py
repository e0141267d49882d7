"""The dialog's script file and its state machine, without sockets.

The channel here is a scripted caller: the dialog's own contract (`say`,
`ask` -> `CallerReply`), which the end-to-end tests in test_service.py drive
over real AudioSocket and FastAGI.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from caller_id.catalogue import load_catalogue
from caller_id.predict import Intent
from conffile import ConfigError
from ivr.selfservice.dialog import (NO_INPUT, NOT_UNDERSTOOD, CallerGone, CallerReply, ChannelFailed, Dialog, Offer, Plan,
                        Question, address, static_prompts)
from ivr.selfservice.script import OPERATOR, load_dialog_script

PROJECT = Path(__file__).resolve().parents[3]
SHIPPED = PROJECT / "config" / "dialog.yaml"


@pytest.fixture(scope="module")
def script():
    return load_dialog_script(SHIPPED, intents=load_catalogue(PROJECT / "config" / "intents.yaml").names)


# -- the script file ------------------------------------------------------------------


def test_shipped_script_builds_every_grammar(script):
    for language in ("ru", "en"):
        grammars = script.grammars(language)
        assert set(grammars) == {"confirm", "open_question", "rating", "nps"}
        assert "оператор" in grammars["confirm"].words or language == "en"
    meanings = script.meanings("rating", "ru")
    assert meanings["пять"] == "5" and meanings["оператор"] == OPERATOR
    nps = script.meanings("nps", "ru")
    assert nps["ноль"] == "0" and nps["десять"] == "10" and "пятёрка" not in nps  # 0-10, no school grades
    assert set(script.meanings("nps", "en").values()) == {str(n) for n in range(11)} | {OPERATOR}
    assert script.meanings("open_question", "en")["loan payment"] == "loan_payment"
    assert {language for _, language, _ in static_prompts(script)} == {"ru", "en"}


def broken(tmp_path: Path, old: str, new: str) -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "dialog.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old, new, needle, message", [
    ("settings:", "setings:", "setings:", "unknown section 'setings'; did you mean 'settings'"),
    ("  goodbye:\n", "  farewell:\n", "farewell:", "unknown prompt 'farewell'"),
    ('    en: "Hello, {name}!"\n', "", "greeting:", "prompt greeting: no text for en"),
    ('ru: "Здравствуйте, {name}!"', 'ru: "Здравствуйте, {name!"', "{name!", "prompt greeting (ru)"),
    ('  "yes":', "  yes:", "  yes:", 'write "yes" in quotes'),
    ("5: [пять, пятёрка]}", "6: [шесть]}", "6: [шесть]", "needs the keys 1 to 5"),
    ("menu: [card_ready,", "menu: [card_redy,", "menu:", "unknown intent 'card_redy'; did you mean 'card_ready'"),
    ("    ru: [ипотека]", "    de: [Hypothek]", "de: [Hypothek]", "language 'de' is not one of"),
    ("    ru: [ипотека]", "    ru: [ипотека, вклад]", "[ипотека, вклад]", "'вклад' already names deposit_question"),
    ("retries: 1 ", "retries: -1 ", "retries:", "retries must be a number of at least 0"),
    ("rating: true ", "rating: 5 ", "rating: 5", "rating must be true or false"),
])
def test_a_broken_script_names_its_line(tmp_path, old, new, needle, message):
    path = broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as error:
        load_dialog_script(path, intents=load_catalogue(PROJECT / "config" / "intents.yaml").names)
    assert message in str(error.value)
    assert error.value.line == line_of(path, needle), str(error.value)


def test_a_menu_longer_than_the_keys_is_refused(tmp_path):
    path = broken(tmp_path, "menu: [card_ready,", "menu: [a, b, c, d, e, f, g, h, i, card_ready,")
    with pytest.raises(ConfigError, match="keys 1-9 hold at most 9"):
        load_dialog_script(path)


# -- the state machine ------------------------------------------------------------------


class ScriptedCaller:
    """Answers each question with the next reply; records what was said."""

    def __init__(self, mode: str, replies: list[str], *, fail_at: int | None = None, hang_up_at: int | None = None):
        self.mode = mode
        self.replies = list(replies)
        self.asked: list[Question] = []
        self.said: list[str] = []
        self.fail_at = fail_at
        self.hang_up_at = hang_up_at

    async def say(self, text: str, language: str, *, within: float | None = None) -> None:
        self.said.append(text)

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> CallerReply:
        if self.fail_at is not None and len(self.asked) == self.fail_at:
            raise ChannelFailed("recognition broke")
        if self.hang_up_at is not None and len(self.asked) == self.hang_up_at:
            raise CallerGone("caller hung up")
        self.asked.append(question)
        meaning = self.replies.pop(0) if self.replies else NO_INPUT
        if self.mode == "dtmf" and meaning not in (NO_INPUT, NOT_UNDERSTOOD):
            digit = next(d for d, m in question.digits.items() if m == meaning)
            return CallerReply(question.digits[digit], heard=digit, via="dtmf")
        return CallerReply(meaning, heard=meaning, via=self.mode)


def plan(offer_answer: str | None = "Ваша карта готова.", *, name: str | None = "Пётр Сергеевич") -> Plan:
    card = Offer(Intent("card_ready", 0.8, ("карта готова",), 7), "Когда будет готова карта", offer_answer)
    docs = Offer(Intent("documents_missing", 0.3, (), 9), "Недостающие документы", "Нужна справка о доходах.")
    return Plan(language="ru", name=name, offer=card, answers={"card_ready": card, "documents_missing": docs},
                titles={"card_ready": "Когда будет готова карта", "documents_missing": "Недостающие документы",
                        "loan_payment": "Платёж по кредиту"},
                menu=("card_ready", "documents_missing", "loan_payment"), examples=("Когда будет готова карта",))


async def test_yes_then_helped_then_rating_is_contained(script):
    caller = ScriptedCaller("speech", ["yes", "yes", "4"])
    outcome = await Dialog(plan(), script).run(caller)
    assert (outcome.contained, outcome.intent, outcome.rating, outcome.reason) == (True, "card_ready", 4, "helped")
    assert caller.asked[0].text.startswith("Здравствуйте, Пётр Сергеевич!")
    assert caller.said == ["Ваша карта готова.", script.text("goodbye", "ru")]


async def test_no_then_naming_an_answerable_intent_answers_it(script):
    caller = ScriptedCaller("speech", ["no", "documents_missing", "yes", "5"])
    dialog = Dialog(plan(), script)
    outcome = await dialog.run(caller)
    assert outcome.contained and outcome.intent == "documents_missing"
    assert [t["step"] for t in dialog.transcript][:4] == ["offer", "open_question", "answer", "helped"]


async def test_an_intent_without_an_answer_goes_to_a_person_with_the_reason(script):
    caller = ScriptedCaller("dtmf", ["no", "loan_payment"])
    outcome = await Dialog(plan(), script).run(caller)
    assert (outcome.contained, outcome.intent, outcome.reason) == (False, "loan_payment", "needs_person")
    assert outcome.declined == "card_ready"
    assert caller.said == [script.text("transfer", "ru")]
    menu = caller.asked[1].text_for("dtmf")  # the declined reason is not offered again; keys renumbered
    assert menu.index("Недостающие документы") < menu.index("Платёж по кредиту")
    assert "Когда будет готова карта" not in menu and "0" in menu


async def test_operator_at_any_step_transfers_at_once_and_keeps_a_contained_call_contained(script):
    at_offer = await Dialog(plan(), script).run(ScriptedCaller("speech", [OPERATOR]))
    assert (at_offer.contained, at_offer.reason) == (False, "operator")
    at_rating = await Dialog(plan(), script).run(ScriptedCaller("dtmf", ["yes", "yes", OPERATOR]))
    assert at_rating.contained and at_rating.rating is None


async def test_silence_is_asked_again_then_handed_over(script):
    caller = ScriptedCaller("speech", [NO_INPUT, NOT_UNDERSTOOD])
    outcome = await Dialog(plan(), script).run(caller)
    assert outcome.reason == "not_understood" and not outcome.contained
    assert len(caller.asked) == 2
    assert caller.asked[1].text.startswith(script.text("not_understood", "ru"))
    assert "Здравствуйте" not in caller.asked[1].text  # greeted once


async def test_a_broken_channel_leaves_the_step_for_the_next_one(script):
    dialog = Dialog(plan(), script)
    with pytest.raises(ChannelFailed):
        await dialog.run(ScriptedCaller("speech", ["yes"], fail_at=1))
    assert dialog.step == "helped" and not dialog.finished
    outcome = await dialog.run(ScriptedCaller("dtmf", ["yes", "5"]))
    assert outcome.contained and outcome.rating == 5 and outcome.modes == ["speech", "dtmf"]


async def test_hangup_propagates_and_the_time_limit_hands_over(script):
    with pytest.raises(CallerGone):
        await Dialog(plan(), script).run(ScriptedCaller("speech", [], hang_up_at=0))
    ticks = itertools.chain([0.0, 0.0], itertools.repeat(10_000.0))
    patient = replace(script, settings=replace(script.settings, time_to_person=100_000.0))
    outcome = await Dialog(plan(), patient, clock=lambda: next(ticks)).run(ScriptedCaller("speech", ["no"]))
    assert outcome.reason == "time_limit"


def test_callers_are_addressed_by_first_name_and_patronymic():
    assert address("Иванов Пётр Сергеевич") == "Пётр Сергеевич"
    assert address("John Smith") == "John Smith"
    assert address(None) is None
