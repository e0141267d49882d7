"""What a caller who answers nothing hears, and when they reach the queue, known before the call.

The server renders every prompt, so it knows each one's length.  `silent_path`
runs the real `Dialog` over the real `KeypadChannel` on a virtual clock,
against a line that plays nothing and answers every question with silence
after its key wait, as Asterisk's GET DATA does.  What comes out is the path
a silent caller takes, with the seconds of each prompt and wait; it is shown
at start-up and by ``ivr lookup``, and `check_time_budget` refuses a dialog
file whose first question cannot fit ``settings.time_to_person`` at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from caller_id.predict import Intent
from conffile import ConfigError
from ivr.selfservice.channels import KeypadChannel
from ivr.selfservice.dialog import Dialog, Offer, Plan
from ivr.selfservice.script import DialogScript
from speech.prompts import PromptCache


@dataclass(frozen=True)
class Heard:
    step: str  # offer, open_question, transfer, ... (the transcript's names)
    prompt: float  # seconds the prompt plays
    wait: float = 0.0  # seconds of the key wait after it


@dataclass(frozen=True)
class SilentPath:
    """The dialog a caller who answers nothing hears, from the AGI start to the queue."""

    language: str
    heard: tuple[Heard, ...]
    budget: float  # settings.time_to_person
    before: float = 0.0  # seconds before the dialog (lookup, role question)
    reason: str = ""  # why the dialog ended: no_answer, not_understood, ...

    @property
    def to_queue(self) -> float:
        return self.before + sum(h.prompt + h.wait for h in self.heard)

    def describe(self) -> str:
        parts = [f"before the dialog {self.before:.1f} s"] if self.before else []
        for h in self.heard:
            parts.append(f"{h.step.replace('_', ' ')} {h.prompt:.1f} s")
            if h.wait:
                parts.append(f"wait {h.wait:g} s")
        return f"{', '.join(parts)}; worst case to queue {self.to_queue:.1f} s (budget {self.budget:g} s)"


class VirtualClock:
    """A clock that moves only when told (`now`): a dialog planned on its prompts' lengths."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _SilentLine:
    """The FastAGI side of a caller who presses nothing: each command takes its playback time."""

    clock: VirtualClock
    played: list[tuple[float, float]] = field(default_factory=list)  # (prompt seconds, wait seconds)

    async def get_data(self, name: str, timeout_ms: int, max_digits: int, *, seconds: float) -> tuple[str, bool]:
        self._play(seconds, timeout_ms / 1000)
        return "", True

    async def stream_file(self, name: str, escape_digits: str = "", *, seconds: float) -> str:
        self._play(seconds, 0.0)
        return ""

    def _play(self, seconds: float, wait: float) -> None:
        self.played.append((seconds, wait))
        self.clock.now += seconds + wait


# Seconds kept out of time_to_person for the AGI round trips around the prompts (setting the
# variables, the hand-over's STREAM FILE).
COMMAND_MARGIN = 0.5


async def hand_over_reserve(prompts: PromptCache, script: DialogScript, language: str) -> float:
    """The seconds kept for the end of a call's time_to_person: the hand-over prompt, played
    whatever the time, and the commands around it."""
    return (await prompts.for_asterisk(script.text("transfer", language), language)).seconds + COMMAND_MARGIN


async def silent_path(plan: Plan, script: DialogScript, prompts: PromptCache, *, before: float = 0.0) -> SilentPath:
    """The path of a caller who answers nothing, `before` seconds after the AGI start."""
    clock = VirtualClock()
    line = _SilentLine(clock)
    reserve = await hand_over_reserve(prompts, script, plan.language)
    dialog = Dialog(plan, script, clock=clock, started=-before, reserve=reserve)
    outcome = await dialog.run(KeypadChannel(line, prompts, script))  # type: ignore[arg-type]
    steps = [entry["step"] for entry in dialog.transcript]
    heard = tuple(Heard(step, seconds, wait) for step, (seconds, wait) in zip(steps, line.played))
    return SilentPath(plan.language, heard, script.settings.time_to_person, before, outcome.reason)


async def check_time_budget(script: DialogScript, prompts: PromptCache, titles: dict[str, dict[str, str]]) -> list[SilentPath]:
    """The worst first questions (an unknown caller's key menu of the longest titles, an offer of the
    longest title) against ``time_to_person``, per language; ConfigError when one cannot fit at all.

    `titles`: intent -> language -> title.  Returns the longest path checked per language."""
    checked = []
    for language in script.languages:
        named = {name: texts.get(language) or next(iter(texts.values())) for name, texts in titles.items()}
        longest = sorted(named, key=lambda name: len(named[name]), reverse=True)
        if not longest:
            continue
        menu = tuple(longest[: script.settings.menu_size])
        offer = Offer(Intent(longest[0], 1.0, ()), named[longest[0]], None)
        for first in (None, offer):
            plan = Plan(language=language, name=None, offer=first, answers={}, titles=named, menu=menu, examples=())
            path = await silent_path(plan, script, prompts)
            if not any(h.step in ("offer", "open_question") for h in path.heard):
                setting = "settings.time_to_person"
                raise ConfigError(script.source, script.lines.get(setting) or script.lines.get("settings"),
                                  f"time_to_person {script.settings.time_to_person:g} s cannot hold the first "
                                  f"question ({language}, {'offer' if first else 'key menu'}) with its "
                                  f"{script.settings.no_input_timeout:g} s wait and the hand-over prompt: "
                                  f"shorten the prompts or allow more time")
            checked.append(path)
    worst: dict[str, SilentPath] = {}
    for path in checked:
        if path.language not in worst or path.to_queue > worst[path.language].to_queue:
            worst[path.language] = path
    return list(worst.values())
