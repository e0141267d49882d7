"""Benchmark: what each kind of caller spends to get an answer or a person (issue 10).

A population of callers, each with what they really call about and the outcome
that is right for them, is driven through the real FastAGI path (keys, the
shipped configuration) and the real AudioSocket path (voice: the Korean Vosk
model, the only one the package registries carry, with the tests' Korean
dialog and catalogue, and the caller's answers synthesised in Korean by eSpeak
NG).  Each run is `ivr run --demo-data` in its own process on its own SQLite
file; the simulated Asterisk answers GET DATA / STREAM FILE only after the
prompt has played and the key wait has run, and streams the caller's voice in
real time, so every figure is the time a caller would spend.

The population (groups; on the general line):

* ``predicted``: known callers whose reason the CRM predicts and self-service
  can answer from the case: yes to the offer (1, or "네"), then "helped" and a
  rating;
* ``other``: such callers calling about something else: no to the offer, then
  the reason they call about from the key menu (the key it is read out with;
  0, "anything else", when it is not read out), or by voice its word (서류,
  documents: of the Korean dialog's reason words the one the model hears
  reliably from eSpeak NG);
* ``roles``: numbers with several roles: the role question (the key of the
  role they call in), then the dialog for that role (yes to an offer, else the
  first reason of the menu);
* ``by_rule``: known callers a rule sends to a person at once (VIP desk, key
  accounts with their personal manager first): nothing is asked;
* ``unknown`` and ``withheld``: numbers not in the CRM and caller IDs without a
  number: the reason from the key menu;
* ``operator``: 0 (or "상담원") at the first question;
* ``silent``: nothing at all.

A caller presses a key 0.5 s after the question's prompt ended (the whole
question heard: to know each prompt's length beforehand the benchmark walks
the real dialog through on a virtual clock with prompts rendered in a
directory of its own, so the server's prompt cache is as cold as the calls
make it); by voice they speak once the prompt has ended (0.4 s of silence).
The calls of a run start 0.25 s apart, all under way together.

Measured per caller, on the simulator's clock from the AGI start (the TCP
connect of the FastAGI session):

* the answer: when its first word plays (keys: the STREAM FILE of the answer's
  prompt; voice: the first frame of sound after the caller's answering words);
* a person: the AGI ended with IVR_QUEUE set and not self-served, plus the
  dialplan's only fixed step before Queue()/Dial(), the announcement
  (IVR_ANNOUNCE) when one is set; a personal manager (IVR_MANAGER) rings from
  the end of the AGI;
* questions asked: prompts that wait for a key or a word (keys: every GET
  DATA; voice: the role question's GET DATA and the dialog's questions in the
  server's call record, whose keys-only count equals the GET DATAs);
* identity asked: how many times the role question's prompt (the one for that
  number's roles) was played; anything above one is "asked twice";
* right outcome: answered when self-service can answer the real reason from
  the case, else the queue `config/routing.yaml` gives the caller's profile in
  the role they call in with the reason they really call about
  (`queues.rules.RuleSet.decide`, as `ivr.call.decision.with_intent` applies
  it), and IVR_INTENT that reason.  For silent callers and those who ask for
  the operator at once the real reason is never told: the right queue is the
  one for the IVR's best guess.

Goals (issue 10): a known caller with a predictable reason hears the answer
within 10 s after one yes/no (``predicted``: answer <= 10 s from the AGI
start, one question before it); anyone else reaches the right queue (or the
answer) within 15 s; nobody is asked who they are twice.

    python -m benchmarks.caller_effort [--only keys|voice] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from benchmarks.ivr_process import ROOT, environment, rounded, running_ivr
from ivr.asterisk.audiosocket import Kind
from ivr.call.decision import decide, with_intent
from ivr.call.inbound import role_question
from ivr.selfservice.channels import KeypadChannel
from ivr.selfservice.dialog import Dialog, Question, make_plan
from ivr.selfservice.script import DialogScript
from ivr.selfservice.timing import VirtualClock, hand_over_reserve
from ivr.sim.fastagi_caller import CallResult, CallScript, Keys, Turn, percentile, place_call, split_command
from queues.variables import ANNOUNCE, CONTAINED, INTENT, QUEUE
from speech.audio import sound_seconds

GOAL_ANSWER_S = 10.0
GOAL_PERSON_S = 15.0
SECTION = "## Caller effort: seconds and questions to the answer or a person, per kind of caller"
GROUPS = {  # group -> (what the callers are, how many by keys, how many by voice)
    "predicted": ("known, the CRM predicts the reason: yes to the offer", 8, 6),
    "other": ("known, calling about something else: no, then the reason", 8, 6),
    "roles": ("a number with several roles: the role question, then the dialog", 6, 0),
    "by_rule": ("known, a rule sends them to a person at once (VIP, personal manager)", 5, 0),
    "unknown": ("a number not in the CRM: the reason from the menu", 6, 0),
    "withheld": ("no number (withheld): the reason from the menu", 5, 0),
    "operator": ("asks for a person at the first question (0 / 상담원)", 6, 5),
    "silent": ("answers nothing", 6, 5),
}
WITHHELD = (None, "anonymous", "restricted", "<unknown>", "private")
REACTION_S = 0.5  # a caller presses their key this long after the question's prompt ended
STAGGER_S = 0.25  # seconds between the calls' starts: a burst, not all in the same millisecond
SPEECH_GAP_S = 0.4  # silence that ends one prompt (or utterance), as the simulator's prompt_ended takes it
# Of the Korean dialog's reason words, the one the Korean model hears reliably from eSpeak NG's speech
# (tests/speech/test_asr.py: 카드 and 대출 are confused with other words): voice callers name it.
HEARD_RELIABLY = ("서류",)


@dataclass
class Caller:
    """One member of the population: who calls, what they do, and the outcome that is right."""

    group: str
    channel: str  # keys | voice
    number: str | None
    behaviour: str  # yes | other | operator | silent
    script: CallScript
    reason: str | None = None  # what they really call about (None: never told; the best guess stands)
    role: str | None = None  # the role they call in, when asked
    expect_answer: bool = False  # self-service can answer the real reason from the case
    expect_queue: str | None = None
    expect_intent: str | None = None
    answer_after: int | None = None  # voice: after which of the caller's utterances the answer comes
    identity_prompts: tuple[str, ...] = ()  # file names (`_base`) of the role question's prompt for this number
    answer_prompts: tuple[str, ...] = ()  # file names of the answers' prompts (keys)
    # what `prompt_names` renders for the two above: (text, language) of the role question and answers
    identity_texts: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    answer_texts: tuple[tuple[str, str], ...] = field(default=(), repr=False)


# --- scoring ---------------------------------------------------------------------------------


def _command(line: str) -> tuple[str, str | None]:
    """(GET DATA | STREAM FILE | AUDIOSOCKET | other, the sound file it names)."""
    words = split_command(line)
    upper = [w.upper() for w in words[:2]]
    if upper == ["GET", "DATA"] and len(words) > 2:
        return "GET DATA", words[2]
    if upper == ["STREAM", "FILE"] and len(words) > 2:
        return "STREAM FILE", words[2]
    if upper == ["EXEC", "AUDIOSOCKET"]:
        return "AUDIOSOCKET", None
    return " ".join(upper), None


def _base(name: str | None) -> str:
    """A prompt's file name without directory: the hash of its text, voice and rate (`speech.prompts`)."""
    return PurePosixPath(name or "").name


def runs(times: Sequence[float], gap: float) -> list[tuple[float, float]]:
    """(first, last) of each run of moments no more than `gap` apart (frames of one prompt or utterance)."""
    found: list[tuple[float, float]] = []
    for t in sorted(times):
        if found and t - found[-1][1] <= gap:
            found[-1] = (found[-1][0], t)
        else:
            found.append((t, t))
    return found


def _voice_times(result: CallResult) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The server's prompts and the caller's utterances on the AudioSocket, in seconds from the AGI start."""
    peer = result.audiosocket
    started = next((t for t, line in result.timeline if _command(line)[0] == "AUDIOSOCKET"), None)
    if peer is None or started is None or peer.connected_at is None:
        return [], []

    def call_time(loop_time: float) -> float:
        return started + (loop_time - peer.connected_at)

    prompts = runs([call_time(r.t) for r in peer.voiced()], SPEECH_GAP_S)
    spoken = [call_time(s.t) for s in peer.sent if s.kind == Kind.AUDIO and any(s.payload)]
    return prompts, runs(spoken, 0.1)


def score(caller: Caller, result: CallResult, transcript: Sequence[dict[str, Any]] | None = None, *,
          sounds: Callable[[str], float | None] = sound_seconds) -> dict[str, Any]:
    """One caller's effort from the simulator's timeline (and, for voice, the server's transcript of the
    dialog's questions, from its call record)."""
    commands = [(t, *_command(line)) for t, line in result.timeline]
    asked = [(t, name) for t, kind, name in commands if kind == "GET DATA"]
    identity = sum(1 for _, name in asked if _base(name) in caller.identity_prompts)
    voice = any(kind == "AUDIOSOCKET" for _, kind, _ in commands)
    transcript = list(transcript or [])
    dialog_asks = [entry for entry in transcript if "meaning" in entry]
    answer_at: float | None = None
    if voice:
        questions = identity + len(dialog_asks)
        prompts, spoken = _voice_times(result)
        answered = any(entry.get("step") == "answer" for entry in transcript)
        if answered and caller.answer_after is not None and len(spoken) > caller.answer_after:
            # the previous prompt ended before the caller spoke: the next sound is the server's reply
            said_at = spoken[caller.answer_after][0]
            answer_at = next((start for start, _ in prompts if start > said_at), None)
        before = transcript[:next((n for n, e in enumerate(transcript) if e.get("step") == "answer"), 0)]
        questions_before = identity + sum(1 for entry in before if "meaning" in entry)
        path = [f"{a:.1f}-{b:.1f} {'caller' if who else 'server'}"
                for a, b, who in sorted([(a, b, 0) for a, b in prompts] + [(a, b, 1) for a, b in spoken])]
        path += [f"{e['step']}: heard {e.get('heard') or '-'} ({e['meaning']})" for e in dialog_asks]
    else:
        questions = len(asked)
        answer_at = next((t for t, kind, name in commands
                          if kind == "STREAM FILE" and _base(name) in caller.answer_prompts), None)
        questions_before = sum(1 for t, _ in asked if answer_at is not None and t < answer_at)
        path = []
        for n, (t, kind, name) in enumerate(commands):
            if name is None:
                continue
            took = (commands[n + 1][0] if n + 1 < len(commands) else result.duration) - t
            plays = sounds(name)
            path.append(f"{t:.1f} {kind.lower()} {plays or 0:.1f} s" + (f" + wait {took - plays:.1f} s"
                                                                        if kind == "GET DATA" and plays else ""))
    contained = result.variables.get(CONTAINED) == "1"
    queue = None if contained else result.variables.get(QUEUE)
    to_person = None
    if queue and result.error is None:
        announce = result.variables.get(ANNOUNCE)
        to_person = result.duration + ((sounds(announce) or 0.0) if announce else 0.0)
    intent = result.variables.get(INTENT)
    right = answer_at is not None if caller.expect_answer else queue == caller.expect_queue
    told = None if caller.expect_answer or caller.expect_intent is None else intent == caller.expect_intent
    reached = answer_at if answer_at is not None else to_person
    if caller.group == "predicted":
        met = answer_at is not None and answer_at <= GOAL_ANSWER_S and questions_before == 1
    else:
        met = right and reached is not None and reached <= GOAL_PERSON_S
    return {
        "group": caller.group, "channel": caller.channel, "number": caller.number, "behaviour": caller.behaviour,
        "reason": caller.reason, "role": caller.role, "error": result.error,
        "expected": "answer" if caller.expect_answer else caller.expect_queue,
        "got": "answer" if answer_at is not None else queue, "intent": intent,
        "to_answer_s": rounded(answer_at, 2), "to_person_s": rounded(to_person, 2), "reached_s": rounded(reached, 2),
        "questions": questions, "questions_before_answer": questions_before if answer_at is not None else None,
        "identity_asked": identity, "right": right, "reason_passed": told,
        "questions_in_record": identity + len(dialog_asks),
        "met": met and identity <= 1 and result.error is None, "path": path,
    }


def summarize_group(rows: Sequence[dict[str, Any]], goal: str) -> dict[str, Any]:
    reached = [r["reached_s"] for r in rows if r["reached_s"] is not None]
    questions = [r["questions"] for r in rows]
    return {
        "callers": len(rows), "errors": sum(1 for r in rows if r["error"]), "goal": goal,
        "median_s": rounded(statistics.median(reached), 1) if reached else None,
        "p90_s": rounded(percentile(reached, 90), 1) if reached else None,
        "max_s": max(reached) if reached else None,
        "questions_median": statistics.median(questions) if questions else None,
        "questions_max": max(questions) if questions else None,
        "identity_twice": sum(1 for r in rows if r["identity_asked"] > 1),
        "right": sum(1 for r in rows if r["right"]),
        "reason_told": sum(1 for r in rows if r["reason_passed"] is not None),
        "reason_passed": sum(1 for r in rows if r["reason_passed"]),
        "met": sum(1 for r in rows if r["met"]),
        "verdict": "met" if rows and all(r["met"] for r in rows) else "MISSED",
    }


# --- the population --------------------------------------------------------------------------


def _known_numbers(database: Path, limit: int) -> list[str]:
    """The CRM's first numbers that have a role: the showcase first, then generated ones."""
    with sqlite3.connect(database) as db:
        return [number for (number,) in db.execute(
            "SELECT DISTINCT p.e164 FROM phone_numbers p JOIN number_roles r ON r.number_id = p.id "
            "ORDER BY p.id LIMIT ?", (limit,))]


@dataclass
class _Pressing:
    """The FastAGI side of a caller on a virtual clock: each GET DATA gets `key` (set by `_Hearing` from
    the question) `REACTION_S` after its prompt ended, or nothing once the key wait ran out."""

    clock: VirtualClock
    key: str = ""
    pressed: list[Keys] = field(default_factory=list)

    async def get_data(self, name: str, timeout_ms: int, max_digits: int, *, seconds: float) -> tuple[str, bool]:
        key, self.key = self.key, ""
        self.pressed.append(Keys(key, after=seconds + REACTION_S))
        self.clock.now += seconds + (REACTION_S if key else timeout_ms / 1000)
        return key, not key

    async def stream_file(self, name: str, escape_digits: str = "", *, seconds: float) -> str:
        self.clock.now += seconds
        return ""


def wants(behaviour: str, reason: str | None) -> Callable[[Question], str]:
    """The key a caller presses at a question (`ivr.selfservice.dialog.Question`: its name and what each
    key means, as the prompt reads them out): yes or no to the offer, the key of their reason in the
    menu (0, "anything else", when it is not read out), yes to "helped", 5 for the rating."""
    def key(question: Question) -> str:
        if behaviour == "operator":
            return "0"
        if behaviour == "silent":
            return ""
        if question.name == "offer":
            return "1" if behaviour == "yes" else "2"
        if question.name == "open_question":
            return next((digit for digit, meaning in question.digits.items() if meaning == reason), "0")
        return {"helped": "1", "rating": "5"}.get(question.name, "")
    return key


class _Hearing(KeypadChannel):
    """The dialog's key channel to a `_Pressing` line whose caller picks the key of each question."""

    def __init__(self, line: _Pressing, prompts: Any, script: DialogScript, key_for: Callable[[Question], str]):
        super().__init__(line, prompts, script)  # type: ignore[arg-type]
        self.line = line
        self.key_for = key_for

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> Any:
        self.line.key = self.key_for(question)
        return await super().ask(question, language, within=within)


class _Planner:
    """What each caller hears, from the server's own configuration and CRM (read in this process), so a
    simulated caller presses the key of their reason as a real one hears it read out, once the prompt
    has ended.  `services` renders prompts into a directory of its own (the server's stays as cold as
    the calls make it): the dialog walked through on a virtual clock gives each question's length."""

    def __init__(self, services: Any, channel: str, words: Callable[[str], bytes] | None):
        self.services = services
        self.channel = channel
        self.words = words
        self.script = services.selfservice.script
        self.line = services.config.line_for("general")

    async def decision(self, number: str | None, role: Any = None) -> Any:
        s = self.services
        lookup = await s.directory.lookup(number, region=s.config.region)
        # the server's own ranking: the learned model it trained on the demo's history, when it uses one
        return decide(lookup, self.line, catalogue=s.catalogue, rules=s.rules.current, now=s.now(), role=role,
                      ranker=s.ranker)

    def plan(self, decision: Any) -> Any:
        return make_plan(decision, self.services.catalogue, self.script, now=self.services.now())

    def read_menu(self, plan: Any, declined: str | None) -> list[str]:
        """The reasons the key menu reads out (keys 1..n) after `declined` was turned down."""
        return [name for name in plan.menu if name != declined][: self.script.settings.menu_size]

    def spoken_reasons(self, plan: Any, declined: str | None) -> list[str]:
        """The reasons a caller can name by voice here: their first phrase is one the model hears from
        eSpeak NG's Korean (`HEARD_RELIABLY`), and not the reason turned down."""
        phrases = self.script.intent_phrases
        return [name for name in phrases if name != declined and plan.language in phrases[name]
                and phrases[name][plan.language][0] in HEARD_RELIABLY]

    async def caller(self, group: str, number: str | None, decision: Any, behaviour: str, *, pick: int = 0,
                     role_key: str = "", role: str | None = None, identity: tuple[tuple[str, str], ...] = (),
                     asked: Any = None) -> Caller:
        """A caller of `decision` (for the role chosen) who behaves so, and the outcome that is right for
        them; `asked`: the decision before the role question, `role_key` what they press at it."""
        plan = self.plan(decision)
        dialog = decision.route.self_service
        offer = plan.offer if dialog else None
        reason, answer = None, None
        turns: list[Turn] = []
        answer_after = None
        if behaviour == "yes" and offer is not None:
            reason, answer = offer.intent.intent, offer.answer
            turns.append(self._say("yes"))
            answer_after = 0
        elif behaviour == "other" and dialog:
            declined = offer.intent.intent if offer is not None else None
            if self.channel == "keys":
                choices = self.read_menu(plan, declined)
            else:
                choices = self.spoken_reasons(plan, declined)
            reason = choices[pick % len(choices)]
            known = plan.answers.get(reason)
            answer = known.answer if known is not None else None
            if offer is not None:
                turns.append(self._say("no"))
            turns.append(Turn(say=self.words(self.script.intent_phrases[reason][plan.language][0]))
                         if self.words else Turn())
            answer_after = len(turns) - 1
        elif behaviour == "operator":
            turns = [self._say("operator")]
        if answer:
            turns += [self._say("yes"), Turn(press="5")]  # helped; the rating
        expect_queue, expect_intent = None, None
        if not answer:
            routed = decision if reason is None else with_intent(
                decision, reason, rules=self.services.rules.current, now=self.services.now())
            expect_queue, expect_intent = routed.route.queue, reason
        voice = self.channel == "voice"
        dtmf = [] if voice else await self.keys(asked if asked is not None else decision, decision,
                                                "0" if behaviour == "operator" else role_key,
                                                wants(behaviour, reason))
        return Caller(group=group, channel=self.channel, number=number, behaviour=behaviour,
                      script=CallScript(number=number, dtmf=dtmf, voice=turns if voice else []),
                      reason=reason, role=role, expect_answer=bool(answer), expect_queue=expect_queue,
                      expect_intent=expect_intent, answer_after=answer_after if answer else None,
                      identity_texts=identity,
                      answer_texts=((answer, plan.language),) if answer else ())

    async def keys(self, asked: Any, chosen: Any, role_key: str,
                   key_for: Callable[[Question], str]) -> list[str | Keys]:
        """What the caller presses, each key REACTION_S after its question's prompt ended: at the role
        question of `asked` (the decision before a role was chosen) when it has one, then in the dialog
        of `chosen`, walked through on a virtual clock with this process's prompts."""
        clock = VirtualClock()
        line = _Pressing(clock)
        if asked.question:
            prompt, wait_ms = await role_question(self.services, asked.question[:9],
                                                  asked.view.language or asked.line.language, elapsed=0.0)
            line.key = role_key
            await line.get_data(prompt.name, wait_ms, 1, seconds=prompt.seconds)
            if role_key == "0":
                return list(line.pressed)  # a person at once: no dialog
        if not chosen.route.self_service:
            return list(line.pressed)
        plan = self.plan(chosen)
        reserve = await hand_over_reserve(self.services.prompts, self.script, plan.language)
        dialog = Dialog(plan, self.script, clock=clock, started=0.0, reserve=reserve)  # the call began at 0
        await dialog.run(_Hearing(line, self.services.prompts, self.script, key_for))
        return list(line.pressed)

    def _say(self, meaning: str) -> Turn:
        if self.words is None:
            return Turn()
        return Turn(say=self.words(self.script.words[meaning][self._language()][0]))

    def _language(self) -> str:
        return self.script.language_for(self.line.language)

    async def identity(self, decision: Any) -> tuple[tuple[str, str], ...]:
        """(text, language) of the role question this number gets."""
        if not decision.question:
            return ()
        language = self.script.language_for(decision.view.language or decision.line.language)
        return ((self.script.role_question(decision.question[:9], language), language),)


async def population(services: Any, database: Path, channel: str, words: Callable[[str], bytes] | None = None,
                     sizes: dict[str, int] | None = None) -> list[Caller]:
    """The callers of every group with a size for `channel` (`GROUPS`, or `sizes`), from the server's CRM:
    its numbers in order (the showcase first), each in the group it fits that still has room."""
    planner = _Planner(services, channel, words)
    if sizes is None:
        sizes = {group: spec[1 if channel == "keys" else 2] for group, spec in GROUPS.items()}
    wanted = {group: n for group, n in sizes.items() if n}
    callers: list[Caller] = []

    def count(group: str) -> int:
        return sum(1 for c in callers if c.group == group)

    def emptiest(*groups: str) -> str | None:
        """The group with room that is least filled."""
        open_groups = [g for g in groups if count(g) < wanted.get(g, 0)]
        return min(open_groups, key=lambda g: count(g) / wanted[g]) if open_groups else None

    for number in _known_numbers(database, 1500):
        if emptiest("predicted", "other", "roles", "by_rule", "operator", "silent") is None:
            break
        decision = await planner.decision(number)
        if decision.question:  # asked by keys before any dialog: keys callers only
            identity = await planner.identity(decision)
            if channel == "keys" and emptiest("roles"):
                index = count("roles") % len(decision.question)
                role = decision.question[index]
                chosen = await planner.decision(number, role)
                behaviour = "yes" if planner.plan(chosen).offer is not None else "other"
                callers.append(await planner.caller("roles", number, chosen, behaviour, role_key=str(index + 1),
                                                    role=role.label, identity=identity, asked=decision))
            elif channel == "keys" and not any(c.identity_texts for c in callers if c.behaviour == c.group):
                group = emptiest("operator", "silent")  # one of them at the role question: 0, or nothing
                if group:
                    callers.append(await planner.caller(group, number, decision, group, identity=identity))
            continue
        if not decision.route.self_service:
            if decision.view.customer is not None and emptiest("by_rule"):
                callers.append(await planner.caller("by_rule", number, decision, "silent"))
            continue
        plan = planner.plan(decision)
        if plan.offer is not None and plan.offer.answer:
            nameable = channel == "keys" or bool(planner.spoken_reasons(plan, plan.offer.intent.intent))
            group = emptiest("predicted", "other") if nameable else emptiest("predicted")
            if group:
                behaviour = "yes" if group == "predicted" else "other"
                callers.append(await planner.caller(group, number, decision, behaviour, pick=count(group)))
        elif group := emptiest("operator", "silent"):
            callers.append(await planner.caller(group, number, decision, group))
    rng = random.Random(10)
    for n in range(wanted.get("unknown", 0)):
        while True:
            number = f"+7999{rng.randrange(10**7):07d}"
            decision = await planner.decision(number)
            if not decision.lookup.is_known:
                break
        callers.append(await planner.caller("unknown", number, decision, "other", pick=n))
    for n in range(wanted.get("withheld", 0)):
        number = WITHHELD[n % len(WITHHELD)]
        callers.append(await planner.caller("withheld", number, await planner.decision(number), "other", pick=n))
    short = {g: n - count(g) for g, n in wanted.items() if n > count(g)}
    if short:
        raise RuntimeError(f"the demo CRM has too few callers for these groups (missing): {short}")
    return callers


async def prompt_names(services: Any, callers: Sequence[Caller]) -> None:
    """The file names (`_base`) of each caller's role question and answers, as the server names them."""
    prompts = services.prompts
    for caller in callers:
        caller.identity_prompts = tuple([_base((await prompts.for_asterisk(t, lang)).name)
                                         for t, lang in caller.identity_texts])
        caller.answer_prompts = tuple([_base((await prompts.for_asterisk(t, lang)).name)
                                       for t, lang in caller.answer_texts])


def transcripts(database: Path) -> dict[str, list[dict[str, Any]]]:
    """call id -> the dialog's transcript in its call record."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT call_id, context FROM call_records").fetchall()
    found = {}
    for call_id, context in rows:
        data = json.loads(context) if context else {}
        found[call_id] = data.get("transcript") or []
    return found


# --- the runs --------------------------------------------------------------------------------


async def _drive(server: Any, callers: Sequence[Caller], stagger: float) -> list[CallResult]:
    async def one(n: int, caller: Caller) -> CallResult:
        await asyncio.sleep(n * stagger)
        return await place_call("127.0.0.1", server.port, caller.script, timeout=180)

    return list(await asyncio.gather(*(one(n, caller) for n, caller in enumerate(callers))))


async def run_population(env: dict[str, str], channel: str, *, words: Callable[[str], bytes] | None = None,
                         stagger: float = STAGGER_S, sizes: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Start the server with `env`, build the population of `channel` (`sizes` callers per group), call,
    score."""
    from ivr.config import load_config
    from ivr.services import build_services

    own = Path(env["IVR_PROMPTS_DIR"]).parent / "planner-prompts"  # the server's prompts stay cold
    async with running_ivr(env) as server:
        config = load_config(None, environ={**env, "IVR_PROMPTS_DIR": str(own)})
        services = await build_services(config, migrate=False, listen=False)
        try:
            callers = await population(services, server.database_file, channel, words, sizes)
            await prompt_names(services, callers)
            results = await _drive(server, callers, stagger)
        finally:
            await services.close()
    said = transcripts(server.database_file)
    return [score(caller, result, said.get(result.variables.get("IVR_CALL_ID", ""), []))
            for caller, result in zip(callers, results)]


def korean_setup(directory: Path) -> Path:
    """The shipped configuration with the tests' Korean dialog and catalogue and the Korean model on the
    general line (speech); the shipped routing rules.  Returns the configuration file."""
    import yaml

    from speech.vosk_models import installed_model_path
    from tests.ivr.selfservice.test_service import KOREAN_DIALOG, korean_catalogue

    directory.mkdir(parents=True, exist_ok=True)
    dialog = directory / "dialog.yaml"
    dialog.write_text(KOREAN_DIALOG, encoding="utf-8")
    intents = korean_catalogue(ROOT / "config" / "intents.yaml", directory / "intents.yaml")
    data = yaml.safe_load((ROOT / "config" / "ivr.yaml").read_text(encoding="utf-8"))
    data["rules_file"] = str(ROOT / "config" / "routing.yaml")
    data["intents_file"] = str(intents)
    data["speech"].update(models={"ko": str(installed_model_path("ko"))}, dialog_file=str(dialog))
    data["prompts"]["voices"] = {"ru": "zle/ru", "en": "gmw/en", "ko": "ko"}
    for line in data["lines"]:
        if line["name"] == "general":
            line.update(language="ko", self_service="speech")
    path = directory / "ivr.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def korean_words() -> tuple[Callable[[str], bytes], Callable[[], None]]:
    """Text -> eSpeak NG's Korean speech as 8 kHz call audio (cached), and how to stop the synthesiser."""
    from speech.audio import TELEPHONE_RATE
    from speech.tts import Synthesizer

    synth = Synthesizer({"ko": "ko"})
    synth.start()
    rendered: dict[str, bytes] = {}

    def speak(text: str) -> bytes:
        if text not in rendered:
            rendered[text] = synth.synthesize_sync(text, "ko").resampled(TELEPHONE_RATE).pcm
        return rendered[text]

    return speak, synth.close


async def _measure(directory: Path, channels: Sequence[str]) -> list[dict[str, Any]]:
    from benchmarks.call_path import free_port

    rows: list[dict[str, Any]] = []
    if "keys" in channels:
        rows += await run_population(environment(directory / "keys"), "keys")
    if "voice" in channels:
        speak, stop = korean_words()
        try:
            config = korean_setup(directory / "voice")
            env = environment(directory / "voice", config_file=config, IVR_AUDIOSOCKET_PORT=str(free_port()))
            rows += await run_population(env, "voice", words=speak)
        finally:
            stop()
    return rows


def main_caller_effort(args: argparse.Namespace | None = None) -> dict[str, Any]:
    only = getattr(args, "only", None)
    channels = (only,) if only else ("keys", "voice")
    with tempfile.TemporaryDirectory(prefix="ivr-effort-bench-") as directory:
        rows = asyncio.run(_measure(Path(directory), channels))
    groups: dict[str, dict[str, Any]] = {}
    for channel in ("keys", "voice"):
        for group in GROUPS:
            members = [r for r in rows if r["group"] == group and r["channel"] == channel]
            if members:
                goal = (f"answer <= {GOAL_ANSWER_S:g} s, one question before it" if group == "predicted"
                        else f"right queue or answer <= {GOAL_PERSON_S:g} s")
                groups[f"{group}/{channel}"] = {"group": group, "channel": channel, "who": GROUPS[group][0],
                                                **summarize_group(members, goal)}
    everyone = rows
    return {"rows": rows, "groups": groups,
            "identity_twice": sum(1 for r in everyone if r["identity_asked"] > 1), "callers": len(everyone)}


def render_caller_effort(report: dict[str, Any]) -> str:
    out = ["", SECTION, "",
           "Each caller is simulated through the real FastAGI path (keys: the shipped configuration, "
           "`ivr run --demo-data`) or the real AudioSocket path (voice: the Korean Vosk model with the tests' "
           "Korean dialog, answers synthesised in Korean), all of a run at once (starts 0.25 s apart), on "
           "Asterisk's playback timing. Seconds from the AGI start to the first word of the answer or, for a "
           "caller who is queued, to the AGI's end (plus the announcement when one plays before the queue). "
           "Questions: prompts that wait for a key or a word (the role question included). Right: the answer "
           "when self-service can give it from the case, else the queue `config/routing.yaml` gives the "
           "caller's profile and real reason (the best guess for silent and operator callers). Reason on the "
           "card: IVR_INTENT is the reason the caller really calls about, of the callers who told it and "
           "were queued. A key is pressed 0.5 s after its question's prompt ended (the whole question "
           "heard); by voice the caller speaks 0.4 s after the prompt ended.", "",
           "| callers | by | n | median s | p90 s | max s | questions (median / max) | identity twice | right | "
           "reason on the card | goal | verdict |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for g in report["groups"].values():
        out.append(f"| {g['who']} | {g['channel']} | {g['callers']} | {_cell(g['median_s'])} | {_cell(g['p90_s'])} | "
                   f"{_cell(g['max_s'])} | {g['questions_median']:g} / {g['questions_max']} | {g['identity_twice']} | "
                   f"{g['right']}/{g['callers']} | {_passed(g)} | {g['goal']} | {g['verdict']}{_share(g)} |")
    out += ["", f"Nobody asked who they are twice: {'met' if not report['identity_twice'] else 'MISSED'} "
            f"({report['identity_twice']} of {report['callers']} callers asked more than once)."]
    for title, rows in (
            ("Callers who missed their goal", [r for r in report["rows"] if not r["met"]]),
            ("Callers who met it, but the agent's card shows another reason than theirs",
             [r for r in report["rows"] if r["met"] and r["reason_passed"] is False])):
        if rows:
            out += ["", f"{title} (the path: seconds from the AGI start, each prompt and the wait after it; "
                        "by voice, who spoke when and what the server heard):", ""]
            out += [_described(r) for r in rows]
    return "\n".join(out)


def _described(r: dict[str, Any]) -> str:
    return (f"- {r['group']}/{r['channel']} {r['number'] or 'withheld'}: expected {r['expected']}"
            f"{' for ' + r['reason'] if r['reason'] else ''}, got {r['got']} (IVR_INTENT {r['intent']}) at "
            f"{_cell(r['reached_s'])} s, {r['questions']} questions{', error ' + r['error'] if r['error'] else ''}; "
            f"{'; '.join(r['path'])}")


def _passed(group: dict[str, Any]) -> str:
    return f"{group['reason_passed']}/{group['reason_told']}" if group["reason_told"] else "-"


def _share(group: dict[str, Any]) -> str:
    return "" if group["verdict"] == "met" else f" ({group['met']} of {group['callers']} met)"


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.caller_effort")
    parser.add_argument("--only", choices=("keys", "voice"), help="one run only (voice: the Korean Vosk model)")
    parser.add_argument("--json", type=Path, help="also write the whole report, every caller's row, here")
    arguments = parser.parse_args()
    report = main_caller_effort(arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(render_caller_effort(report))
