"""The self-service dialog: greet, offer the predicted reason, answer, or hand over.

`Dialog` is the conversation, independent of how it reaches the caller: it
talks to a `Channel` that either speaks and listens over AudioSocket
(`ivr.selfservice.channels.SpeechChannel`) or plays prompts and collects keys
over FastAGI (`ivr.selfservice.channels.KeypadChannel`), asking a `Question`
and getting the caller's `CallerReply`.  Its `plan` comes from the call's
decision: the caller's name and language, the predicted intents and, for the
ones the catalogue can answer, the answer filled from the case.

Time is the caller's: until the caller gives an answer, the dialog keeps to
``settings.time_to_person`` counted from the AGI start (the hand-over prompt
included), so a caller who presses and says nothing reaches a person in
seconds; a prompt and its wait that cannot end in time are not started, and
a question is asked again only when the repeat still fits.  After an answer,
``max_seconds`` bounds the whole dialog.  The same code, run on a virtual
clock by `ivr.selfservice.timing`, tells before a call what a silent caller hears
and when they reach the queue.

The dialog keeps its place in `step`, so when speech fails in the middle
(recognition error, AudioSocket lost) the same dialog goes on from that step
in DTMF mode.  It never ends in silence: any step not understood is asked
again `retries` times, then the caller goes to a person; "operator" or key 0
goes there at once.  What was said, pressed and answered is kept in
`transcript`; `outcome` sums it up for the call record and the agent's card.

A contained call ends with a 1-5 rating and goodbye, unless the line has a
post-call survey (`Plan.survey`): then the survey, run by the dialplan right
after the dialog, asks and closes the call (`ivr.call.survey`), so the caller
is never asked the same thing twice.  The survey runs over the same channels
as the dialog: both are a `Conversation`.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from caller_id.predict import Intent, self_service_answer
from ivr.selfservice.script import NO, OPERATOR, RATINGS, YES, DialogScript

NO_INPUT, NOT_UNDERSTOOD = "no_input", "not_understood"


class CallerGone(Exception):
    """The caller hung up during the dialog."""


class ChannelFailed(Exception):
    """The channel cannot go on (speech broke); the dialog may go on over another."""


class TimeUp(Exception):
    """The dialog's time (``settings.max_seconds``) runs out before the step could end."""


class WouldNotFit(TimeUp):
    """The step was not started: its prompt and wait cannot end in the time left."""


@dataclass(frozen=True)
class Question:
    """One step's question: what to say and what the answers mean."""

    step: str  # confirm | open_question | rating | nps (a grammar of the script)
    name: str  # offer, helped, open_question, rating, survey_csat, survey_nps: for the transcript
    text: str  # spoken in speech mode
    keys_text: str  # added in DTMF mode: which key means what
    digits: dict[str, str]  # keys -> meaning
    max_keys: int = 1  # more: keys until this many, "#" or the key wait after the last one ("10" for NPS)

    def text_for(self, mode: str) -> str:
        """What is played: the question, and in DTMF mode which key means what."""
        return self.text if mode == "speech" else f"{self.text} {self.keys_text}".strip()


@dataclass(frozen=True)
class CallerReply:
    """What the caller answered to one `Question`."""

    meaning: str  # yes / no / operator / an intent / "0".."10" / no_input / not_understood
    heard: str = ""  # the words recognised or the keys pressed
    via: str = ""  # speech / dtmf
    confidence: float | None = None


class Conversation(Protocol):
    """What runs over a `Channel` (the dialog, the post-call survey): it keeps its place, so when
    speech fails it goes on over the keypad from where it stopped."""

    step: str

    @property
    def finished(self) -> bool: ...

    async def run(self, channel: Channel) -> Any:
        """Go on from the current step to the end; raises CallerGone and ChannelFailed."""


class Channel(Protocol):
    """Both methods raise TimeUp when they cannot end within `within` seconds (None: no limit):
    a channel that can stop a prompt stops it then, one that cannot does not start it."""

    mode: str  # "speech" or "dtmf"

    async def say(self, text: str, language: str, *, within: float | None = None) -> None:
        """Play `text` to the end (the caller may cut it short)."""

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> CallerReply:
        """Play the question and return the caller's answer."""


@dataclass(frozen=True)
class Offer:
    intent: Intent
    title: str
    answer: str | None  # None: the catalogue has no answer (or no data for it): a person answers


@dataclass(frozen=True)
class Plan:
    language: str
    name: str | None
    offer: Offer | None  # the predicted reason worth offering
    answers: dict[str, Offer]  # intent -> what self-service knows about it
    titles: dict[str, str]  # intent -> title, for the menu and examples
    menu: tuple[str, ...]  # intents for keys 1..n in DTMF mode, the likeliest first (at most menu_size are read)
    examples: tuple[str, ...]  # titles named in the open question
    survey: bool = False  # the line's post-call survey follows a contained call: no rating, its thanks close


def address(name: str | None) -> str | None:
    """How to address a caller: "Пётр Сергеевич" for "Иванов Пётр Сергеевич"."""
    if not name:
        return None
    parts = name.split()
    return " ".join(parts[1:]) if len(parts) == 3 else name


def make_plan(decision: Any, catalogue: Any, script: DialogScript, *, now: dt.datetime) -> Plan:
    """What this caller is offered, from the call's decision."""
    view = decision.view
    language = script.language_for(view.language, decision.line.language)
    text_language = catalogue.language_for(language)

    def title_of(name: str) -> str:
        spec = catalogue.intent(name)
        return spec.title.get(text_language) or next(iter(spec.title.values()))

    answers: dict[str, Offer] = {}
    for intent in decision.intents:
        answer = self_service_answer(intent, view, catalogue, now=now, language=text_language)
        answers[intent.intent] = Offer(intent, title_of(intent.intent), answer)
    offer = None
    top = decision.top_intent
    if (top is not None and top.intent != catalogue.fallback.name
            and top.score >= script.settings.offer_min_score):
        offer = answers[top.intent]
    known = set(catalogue.names)
    predicted = [i.intent for i in decision.intents if i.intent != catalogue.fallback.name]
    menu = tuple(dict.fromkeys(name for name in (*predicted, *script.menu) if name in known))
    titles = {name: title_of(name) for name in catalogue.names}
    with_answers = [name for name in catalogue.names
                    if catalogue.intent(name).is_self_service and name in script.intent_phrases
                    and language in script.intent_phrases[name]]
    examples = tuple(titles[name] for name in with_answers[: script.settings.examples])
    customer = view.customer
    return Plan(language=language, name=address(customer.name) if customer else None, offer=offer,
                answers=answers, titles=titles, menu=menu, examples=examples,
                survey=decision.line.survey != "off")


@dataclass
class Outcome:
    contained: bool = False  # the caller's question was answered; no agent needed
    intent: str | None = None  # the reason the caller confirmed or named
    declined: str | None = None  # the offered reason the caller said was not it
    rating: int | None = None
    reason: str = ""  # why the dialog ended: helped / operator / declined / not_understood / ...
    modes: list[str] = field(default_factory=list)  # speech, then dtmf after a fallback
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"contained": self.contained, "intent": self.intent, "declined": self.declined, "rating": self.rating,
                "reason": self.reason, "modes": list(self.modes), "seconds": round(self.seconds, 2)}


# Steps of the dialog.
GREET, OFFER, OPEN, ANSWER, HELPED, RATING, GOODBYE, TRANSFER, DONE = (
    "greet", "offer", "open_question", "answer", "helped", "rating", "goodbye", "transfer", "done")


def static_prompts(script: DialogScript) -> list[tuple[str, str, str]]:
    """(text, language, mode) of the prompts every call may hear, for rendering at start-up.  (The
    post-call survey's are rendered on first use: they are heard minutes after a call starts, and
    the prompt cache keeps them across restarts.)"""
    found = []
    for language in script.languages:
        def text(name: str) -> str:
            return script.text(name, language)

        for name, keys in (("helped", "helped_keys"), ("rating", "rating_keys")):
            for mode in ("speech", "dtmf"):
                question = Question(step="", name=name, text=text(name), keys_text=text(keys), digits={})
                found.append((question.text_for(mode), language, mode))
        found += [(text(name), language, mode) for name in ("transfer", "goodbye") for mode in ("speech", "dtmf")]
    return found


class Dialog:
    """`started`: when the call began on `clock` (default: when the dialog starts), for
    ``time_to_person``; `reserve`: the seconds of the hand-over prompt, kept out of that budget."""

    def __init__(self, plan: Plan, script: DialogScript, *, clock=time.monotonic, started: float | None = None,
                 reserve: float = 0.0):
        self.plan = plan
        self.script = script
        self.reserve = reserve
        self._call_started = started
        self._answered = False  # the caller has given an answer: time_to_person no longer applies
        self.step = GREET
        self.outcome = Outcome()
        self.transcript: list[dict[str, Any]] = []
        self._clock = clock
        self._started: float | None = None
        self._current: Offer | None = None
        self._greeted = False
        self._misses = 0

    @property
    def finished(self) -> bool:
        return self.step == DONE

    async def run(self, channel: Channel) -> Outcome:
        """Go on from the current step until the dialog ends.

        Raises CallerGone when the caller hangs up and ChannelFailed when the
        channel breaks; `step` then says where to go on.
        """
        if self._started is None:
            self._started = self._clock()
            if self._call_started is None:
                self._call_started = self._started
        self.outcome.modes.append(channel.mode)
        try:
            while self.step != DONE:
                closing = self.step in (TRANSFER, GOODBYE)  # short, and played whatever the time
                if self._within() <= 0 and not closing:
                    self._time_up()
                    continue
                try:
                    await getattr(self, "_" + self.step)(channel)
                except TimeUp:  # the step was cut short or not started
                    self._time_up()
        finally:
            self.outcome.seconds = self._clock() - self._started
        return self.outcome

    def stop_as(self, reason: str) -> Outcome:
        """End without talking any more (the caller left, or nothing can be played)."""
        if not self.outcome.reason:
            self.outcome.reason = reason
        self.step = DONE
        if self._started is not None:
            self.outcome.seconds = self._clock() - self._started
        return self.outcome

    def _time_up(self) -> None:
        if self.outcome.contained:  # helped already: goodbye, the dialplan does not queue
            self.step = GOODBYE
        elif not self._answered and self._to_person() < self._left():
            self._end_with("no_answer")  # to a person with the predicted reason, in time_to_person
        else:
            self._end_with("time_limit")

    def _left(self) -> float:
        """Seconds the dialog may still take (max_seconds)."""
        assert self._started is not None
        return self.script.settings.max_seconds - (self._clock() - self._started)

    def _to_person(self) -> float:
        """Seconds left of time_to_person before the hand-over prompt must start."""
        assert self._call_started is not None
        return self.script.settings.time_to_person - (self._clock() - self._call_started) - self.reserve

    def _within(self) -> float:
        """Seconds the next step may take."""
        return self._left() if self._answered else min(self._left(), self._to_person())

    # -- steps ----------------------------------------------------------------
    def _text(self, prompt: str, **values: Any) -> str:
        return self.script.text(prompt, self.plan.language, **values)

    def _greeting(self) -> str:
        if self._greeted:
            return ""
        self._greeted = True
        if self.plan.name:
            return self._text("greeting", name=self.plan.name) + " "
        return self._text("greeting_unknown") + " "

    async def _greet(self, channel: Channel) -> None:
        self.step = OFFER if self.plan.offer is not None else OPEN

    async def _offer(self, channel: Channel) -> None:
        offer = self.plan.offer
        assert offer is not None
        greeting = self._greeting()
        question = self._text("offer", intent=offer.title)
        try:
            reply = await self._ask(channel, "confirm", "offer", greeting + question,
                                    self._text("offer_keys"), {"1": YES, "2": NO})
        except WouldNotFit:
            if not greeting:
                raise
            # the question rather than the greeting, when only one fits the time left
            reply = await self._ask(channel, "confirm", "offer", question, self._text("offer_keys"),
                                    {"1": YES, "2": NO})
        if reply is None:
            return
        if reply.meaning == YES:
            self._chose(offer)
        else:
            self.outcome.declined = offer.intent.intent
            self.step = OPEN

    async def _open_question(self, channel: Channel) -> None:
        if channel.mode == "speech":
            text = self._text("open_question", examples=", ".join(self.plan.examples))
        else:
            text = ""
        offered = [name for name in self.plan.menu if name != self.outcome.declined]
        greeting = self._greeting()
        size = self.script.settings.menu_size
        while True:  # the likeliest reasons that fit the time left; at least one
            menu_intents = offered[:size]
            menu = " ".join(self._text("menu_item", title=self.plan.titles[name], digit=digit)
                            for digit, name in enumerate(menu_intents, start=1))
            digits = {str(digit): name for digit, name in enumerate(menu_intents, start=1)}
            try:
                reply = await self._ask(channel, "open_question", "open_question", greeting + text,
                                        self._text("open_question_keys", menu=menu), digits)
                break
            except WouldNotFit:
                if channel.mode != "dtmf" or size <= 1 or len(menu_intents) <= 1:
                    raise  # by voice the menu is not read out: a shorter one would not help
                size = min(size, len(menu_intents)) - 1
        if reply is not None:
            self._chose(self.plan.answers.get(reply.meaning) or self._offer_for(reply.meaning))

    async def _answer(self, channel: Channel) -> None:
        offer = self._current
        assert offer is not None and offer.answer is not None
        self.transcript.append({"step": "answer", "intent": offer.intent.intent, "said": offer.answer})
        await channel.say(offer.answer, self.plan.language, within=self._within())
        self.step = HELPED

    async def _helped(self, channel: Channel) -> None:
        reply = await self._ask(channel, "confirm", "helped", self._text("helped"), self._text("helped_keys"),
                                {"1": YES, "2": NO})
        if reply is None:
            return
        if reply.meaning == YES:
            self.outcome.contained = True
            self.outcome.reason = "helped"
            # the line's survey asks after the call: never the same question twice
            self.step = RATING if self.script.settings.rating and not self.plan.survey else GOODBYE
        else:
            self._end_with("not_helped")

    async def _rating(self, channel: Channel) -> None:
        reply = await self._ask(channel, "rating", "rating", self._text("rating"), self._text("rating_keys"),
                                {str(value): str(value) for value in RATINGS}, transfer_on_failure=False)
        if reply is not None:
            self.outcome.rating = int(reply.meaning)
            self.step = GOODBYE

    async def _goodbye(self, channel: Channel) -> None:
        if self.plan.survey:  # the survey follows in the dialplan and its thanks close the call
            self.step = DONE
            return
        text = self._text("goodbye")
        self.transcript.append({"step": "goodbye", "said": text})
        self.step = DONE
        await channel.say(text, self.plan.language)

    async def _transfer(self, channel: Channel) -> None:
        text = self._text("transfer")
        self.transcript.append({"step": "transfer", "said": text})
        self.step = DONE
        await channel.say(text, self.plan.language)

    # -- helpers ---------------------------------------------------------------
    def _offer_for(self, intent: str) -> Offer:
        return Offer(Intent(intent, 0.0, ()), self.plan.titles.get(intent, intent), None)

    def _chose(self, offer: Offer) -> None:
        self.outcome.intent = offer.intent.intent
        self._misses = 0
        if offer.answer:
            self._current = offer
            self.step = ANSWER
        else:
            self._end_with("needs_person")

    def _end_with(self, reason: str) -> None:
        self.outcome.reason = self.outcome.reason if self.outcome.contained else reason
        self.step = TRANSFER

    def _not_understood(self, give_up_to: str = TRANSFER) -> None:
        """Ask the same step again, or give up after `retries` repeats."""
        self._misses += 1
        if self._misses <= self.script.settings.retries:
            return
        self._misses = 0
        if give_up_to == TRANSFER:
            self._end_with("not_understood")
        else:
            self.step = give_up_to

    async def _ask(self, channel: Channel, step: str, name: str, text: str, keys_text: str,
                   digits: dict[str, str], *, transfer_on_failure: bool = True) -> CallerReply | None:
        """Ask; None when the step must be asked again (or the dialog moved on)."""
        digits = {"0": OPERATOR, **digits}
        if self._misses:
            text = self._text("not_understood") + " " + text
        question = Question(step=step, name=name, text=text.strip(), keys_text=keys_text, digits=digits)
        reply = await channel.ask(question, self.plan.language, within=self._within())
        self.transcript.append({
            "step": name, "said": question.text_for(channel.mode),
            "heard": reply.heard, "via": reply.via, "meaning": reply.meaning,
            **({"confidence": round(reply.confidence, 3)} if reply.confidence is not None else {}),
        })
        if reply.meaning == OPERATOR:
            if self.outcome.contained:
                self.step = GOODBYE
            else:
                self._end_with("operator")
            return None
        if reply.meaning in (NO_INPUT, NOT_UNDERSTOOD):
            self._not_understood(give_up_to=TRANSFER if transfer_on_failure else GOODBYE)
            return None
        self._misses = 0
        self._answered = True
        return reply
