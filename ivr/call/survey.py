"""The `survey` FastAGI script: the post-call survey, its answers on the call record.

The dialplan runs it when a call is over for the company but not for the
caller: after the self-service dialog answered them (``IVR_CONTAINED=1``),
after the agent of the queue hung up (``Queue(...,c)`` and
``QUEUESTATUS=CONTINUE``) and after the personal manager hung up
(``Dial(...,g)`` and ``DIALSTATUS=ANSWER``)::

    AGI(agi://${IVR_SERVER}/survey,${IVR_LINE},${IVR_CALL_ID})

The line's ``survey`` setting picks the questions: ``csat`` (1-5), ``nps``
(0-10), ``both`` (CSAT, then NPS) or ``off`` (the script returns at once and
the dialplan hangs up).  The texts and words are the dialog's
(``config/dialog.yaml``: the ``survey_*`` prompts, the ``rating`` and
``nps`` words), in the caller's language when the call's context tells it.
It runs over the self-service dialog's channels (`SelfService.talk`): by
voice where the dialog would be spoken (a ``speech`` line with a usable
model), keys always counting too, and by keys otherwise.

Each question is one prompt (the first one after the intro) and the key
wait (the dialog's ``no_input_timeout``).  A wrong key or a word that is no
score is asked once more, then the survey moves on to the next question.
Silence ends the survey: a caller who answers nothing is not held, they hear
the thanks and the dialplan hangs up.  The thanks close every survey.

What is written, by call id through ``services.updates`` (`RecordUpdates`):

* ``csat`` and ``nps``: each score the caller gave;
* ``survey``: ``complete`` when every question of the line's survey was
  answered, ``partial`` when at least one was and another was not (the
  caller hung up, fell silent or gave no valid answer twice);
* nothing at all when the caller answered no question.  So ``survey`` is
  NULL exactly when the record holds no answer of this survey (no survey on
  the line, the caller did not take it, or the dialplan never ran it).  On a
  line without a survey, ``csat`` may still hold the self-service dialog's own
  1-5 rating (`ivr.call.inbound`); the reports average CSAT and NPS over the
  answers themselves (`queues.reports`).

A call id that is missing or not one the `inbound` script makes (the
server was down when the call came in, or the dialplan is wrong) gets the
thanks alone, no questions whose answers could go nowhere; one warning is
logged and nothing is written.  A caller who hangs up mid-survey leaves
what they answered (one info line, no error); any other failure is logged,
writes what was answered too, and the dialplan hangs up after the AGI.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ivr import metrics
from ivr.asterisk.fastagi import AgiCall, AgiError
from ivr.call.inbound import CallSide
from ivr.config import Line
from ivr.selfservice.dialog import NO_INPUT, CallerGone, Channel, ChannelFailed, Question
from ivr.selfservice.script import NPS_SCORES, RATINGS, DialogScript

log = logging.getLogger(__name__)

# ivr.call.inbound.new_call_id: uuid4().hex
CALL_ID = re.compile(r"[0-9a-f]{32}")
QUESTIONS = {"csat": ("csat",), "nps": ("nps",), "both": ("csat", "nps"), "off": ()}
SCORES = {"csat": RATINGS, "nps": NPS_SCORES}
GRAMMARS = {"csat": "rating", "nps": "nps"}  # the script's steps whose words they listen for
CONTEXT_TIMEOUT = 0.5  # seconds to read the call's context for the caller's language
THANKS, DONE = "thanks", "done"


def is_call_id(text: str) -> bool:
    return CALL_ID.fullmatch(text) is not None


@dataclass
class Survey:
    """The survey as a `Conversation`: it keeps its place in `step` (a question, then thanks), so
    when speech fails it goes on by keys from there.  `answers`: question -> score."""

    questions: tuple[str, ...]
    script: DialogScript
    language: str
    step: str = ""
    answers: dict[str, int] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    _misses: int = 0

    def __post_init__(self) -> None:
        self.step = self.questions[0] if self.questions else THANKS

    @property
    def finished(self) -> bool:
        return self.step == DONE

    @property
    def result(self) -> str | None:
        """complete / partial / None (nothing answered): the ``survey`` column."""
        if not self.answers:
            return None
        return "complete" if len(self.answers) == len(self.questions) else "partial"

    async def run(self, channel: Channel) -> dict[str, int]:
        while self.step != DONE:
            if self.step == THANKS:
                text = self.script.text("survey_thanks", self.language)
                self.transcript.append({"step": "survey_thanks", "said": text})
                self.step = DONE
                await channel.say(text, self.language)
            else:
                await self._ask(channel, self.step)
        return self.answers

    async def _ask(self, channel: Channel, name: str) -> None:
        first = not self.transcript  # the intro before the survey's first prompt only
        text, keys = self.script.survey_question(name, self.language, first=first, again=self._misses > 0)
        digits = {str(score): str(score) for score in SCORES[name]}
        question = Question(step=GRAMMARS[name], name=f"survey_{name}", text=text, keys_text=keys,
                            digits=digits, max_keys=max(len(key) for key in digits))
        reply = await channel.ask(question, self.language)
        self.transcript.append({"step": question.name, "said": question.text_for(channel.mode),
                                "heard": reply.heard, "via": reply.via, "meaning": reply.meaning})
        if reply.meaning in digits.values():
            self.answers[name] = int(reply.meaning)
            self._next()
        elif reply.meaning == NO_INPUT:  # silence: the caller is not taking the survey
            self.step = THANKS
        else:  # a key or word that is no score (the operator word too: the call is over)
            self._misses += 1
            if self._misses > 1:
                self._next()

    def _next(self) -> None:
        self._misses = 0
        later = self.questions[self.questions.index(self.step) + 1:]
        self.step = later[0] if later else THANKS


class SurveyScript:
    """Callable registered as the `survey` FastAGI script (arguments: the line, the call id)."""

    def __init__(self, services: CallSide):
        self.services = services

    async def __call__(self, call: AgiCall) -> None:
        s = self.services
        args = call.env.args
        line = s.config.line_for(args[0] if args and args[0] else None)
        call_id = args[1].strip() if len(args) > 1 else ""
        questions = QUESTIONS[line.survey]
        if not questions:
            return
        selfservice = s.selfservice
        if selfservice is None or s.prompts is None:
            log.warning("survey on line %s: prompts are disabled; no survey", line.name)
            return
        known = is_call_id(call_id)
        if not known:
            log.warning("survey on line %s: no usable call id (%r); the caller hears the thanks, nothing is written",
                        line.name, call_id[:40])
            questions = ()
        language = await self._language(call_id if known else None, line, selfservice.script)
        survey = Survey(questions, selfservice.script, language)
        label = call_id if known else "-"
        speech = bool(questions) and selfservice.mode_for(line, language) == "speech"  # the thanks alone: a file
        try:
            await selfservice.talk(call, survey, language, label, speech=speech)
        except CallerGone as exc:
            log.info("call %s: caller hung up during the survey at %s (%s)", label, survey.step, exc)
        except (ChannelFailed, AgiError) as exc:
            log.warning("call %s: survey stopped at %s: %s", label, survey.step, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - what was answered is still written
            log.exception("call %s: survey failed at %s", label, survey.step)
        finally:
            if known:
                self._write(call_id, survey)

    async def _language(self, call_id: str | None, line: Line, script: DialogScript) -> str:
        """The caller's language as the call's context has it (the CRM's), else the line's."""
        language = None
        if call_id is not None:
            try:
                context = await asyncio.wait_for(self.services.contexts.get(call_id), CONTEXT_TIMEOUT)
                customer = ((context or {}).get("decision") or {}).get("customer") or {}
                language = customer.get("language")
            except Exception as exc:  # noqa: BLE001 - the line's language will do
                log.info("call %s: call context unavailable for the survey (%s)", call_id,
                         str(exc) or type(exc).__name__)
        return script.language_for(language, line.language)

    def _write(self, call_id: str, survey: Survey) -> None:
        result = survey.result
        metrics.SURVEYS.labels(result=result or "unanswered").inc()
        if result is None:
            log.info("call %s: survey not answered; nothing written", call_id)
            return
        values: dict[str, Any] = {**survey.answers, "survey": result}
        try:
            self.services.updates.change(call_id=call_id, values=values)
        except Exception:  # noqa: BLE001 - never raises into the FastAGI session
            log.exception("call %s: survey answers not noted", call_id)
            return
        log.info("call %s: survey %s: %s", call_id, result,
                 ", ".join(f"{name} {score}" for name, score in survey.answers.items()))
