"""How the self-service dialog reaches the caller: by voice over AudioSocket, or by keys over FastAGI.

`SpeechChannel` plays synthesised prompts on an `AudioSocketCall` and
listens while it plays: the caller's first words or key stop the prompt
(barge-in), Vosk recognises the answer with the step's grammar, and a key
counts as an answer too.  `KeypadChannel` plays the same prompts (with the
key instructions added) with GET DATA and takes one key, or up to
`Question.max_keys` (the survey's 0-10) ended early by "#" or the key wait,
as the speech channel collects them too.  Both raise
`CallerGone` when the caller hangs up and `ChannelFailed` when they cannot
go on, so the dialog can carry on over the other channel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ivr.asterisk.audiosocket import AudioFrame, DtmfFrame
from ivr.asterisk.audiosocket_server import AudioSocketCall, CallEnded
from ivr.selfservice.dialog import NO_INPUT, NOT_UNDERSTOOD, CallerGone, CallerReply, ChannelFailed, Question, TimeUp, WouldNotFit
from ivr.selfservice.script import OPERATOR, DialogScript
from ivr.asterisk.fastagi import AgiCall, AgiError, AgiTimeout, ChannelGone, key_wait
from speech.asr import Final, NoInput, SpeechStarted
from speech.prompts import Prompt

log = logging.getLogger(__name__)

_PCM8_BYTES_PER_SECOND = 16_000  # 8 kHz, 16-bit mono
_POLL = 0.1  # seconds: how often a quiet line is checked for the end of a prompt or the no-input time


class SpeechChannel:
    mode = "speech"

    def __init__(self, call: AudioSocketCall, recognizer: Any, prompts: Any, script: DialogScript):
        self.call = call
        self.recognizer = recognizer
        self.prompts = prompts
        self.script = script
        self.no_input_timeout = script.settings.no_input_timeout
        self.barge_ins = 0

    async def say(self, text: str, language: str, *, within: float | None = None) -> None:
        """Play `text`; the caller speaking or pressing a key stops it."""
        deadline = _deadline(within)
        pcm = await self._pcm(text, language)
        _fits(len(pcm) / _PCM8_BYTES_PER_SECOND, deadline)
        playback = self.call.play(pcm)
        await self._listen(self.script.grammars(language)["confirm"])
        while not playback.done:
            await self._stop_at(deadline, playback)
            event = await self._next_event(_POLL)
            if isinstance(event, DtmfFrame):
                self._barge_in(playback)
            elif isinstance(event, AudioFrame):
                for result in await self._feed(event.pcm):
                    if isinstance(result, SpeechStarted):
                        self._barge_in(playback)
        await self._stop_listening()

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> CallerReply:
        limit = _deadline(within)
        meanings = self.script.meanings(question.step, language)
        grammar = self.script.grammars(language)[question.step]
        pcm = await self._pcm(question.text, language)
        _fits(len(pcm) / _PCM8_BYTES_PER_SECOND + self.no_input_timeout, limit)
        await self._listen(grammar)
        playback = self.call.play(pcm)
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            await self._stop_at(limit, playback)
            if playback.done and not self.recognizer.is_in_speech:
                deadline = deadline or loop.time() + self.no_input_timeout
                if loop.time() >= deadline:
                    await self._stop_listening()
                    return CallerReply(NO_INPUT, via="speech")
            event = await self._next_event(_POLL)
            if isinstance(event, DtmfFrame):
                self._barge_in(playback)
                keys = await self._keys(event.digit, question.max_keys)
                await self._stop_listening()
                return CallerReply(question.digits.get(keys, NOT_UNDERSTOOD), heard=keys, via="dtmf")
            if not isinstance(event, AudioFrame):
                continue
            for result in await self._feed(event.pcm):
                if isinstance(result, SpeechStarted):
                    self._barge_in(playback)
                elif isinstance(result, Final):
                    self._barge_in(playback)
                    return _meaning_of(result, meanings)
                elif isinstance(result, NoInput):
                    return CallerReply(NO_INPUT, via="speech")
            if not playback.done or self.recognizer.is_in_speech:
                deadline = None

    # -- helpers ---------------------------------------------------------------
    async def _keys(self, first: str, max_keys: int) -> str:
        """The keys of one answer from its `first`: up to `max_keys`, ended early by "#" or the key
        wait (`no_input_timeout`) after the last key, as GET DATA collects them."""
        keys = first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.no_input_timeout
        while len(keys) < max_keys and not keys.endswith("#"):
            left = deadline - loop.time()
            if left <= 0:
                break
            event = await self._next_event(min(left, _POLL))
            if isinstance(event, DtmfFrame):
                keys += event.digit
                deadline = loop.time() + self.no_input_timeout
        return keys.rstrip("#")

    async def _stop_at(self, deadline: float | None, playback: Any) -> None:
        """At `deadline` (loop time) the prompt stops and the step ends with TimeUp."""
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            if not playback.done:
                playback.stop()
            await self._stop_listening()
            raise TimeUp("the dialog's time ran out during the prompt")

    async def _pcm(self, text: str, language: str) -> bytes:
        try:
            return await self.prompts.pcm8(text, language)
        except Exception as exc:  # noqa: BLE001 - the dialog decides what to do without prompts
            raise ChannelFailed(f"prompt synthesis failed: {exc}") from exc

    async def _listen(self, grammar: Any) -> None:
        try:
            await self.recognizer.listen(grammar, no_input_timeout=None)
        except Exception as exc:  # noqa: BLE001
            raise ChannelFailed(f"speech recognition failed: {exc}") from exc

    async def _stop_listening(self) -> None:
        try:
            await self.recognizer.stop()
        except Exception as exc:  # noqa: BLE001
            raise ChannelFailed(f"speech recognition failed: {exc}") from exc

    async def _feed(self, pcm: bytes) -> list[Any]:
        try:
            return await self.recognizer.feed(pcm)
        except Exception as exc:  # noqa: BLE001
            raise ChannelFailed(f"speech recognition failed: {exc}") from exc

    async def _next_event(self, timeout: float) -> Any:
        try:
            event = await self.call.next_event(timeout)
        except TimeoutError:
            return None
        if isinstance(event, CallEnded):
            if event.is_caller_hangup:
                raise CallerGone(event.detail or event.reason.value)
            raise ChannelFailed(f"AudioSocket ended: {event.reason.value} {event.detail}".strip())
        return event

    def _barge_in(self, playback: Any) -> None:
        if not playback.done:
            playback.stop()
            self.barge_ins += 1


def _deadline(within: float | None) -> float | None:
    return None if within is None else asyncio.get_running_loop().time() + within


def _meaning_of(final: Final, meanings: dict[str, str]) -> CallerReply:
    said = [meanings[p] for p in final.phrases if p in meanings]
    if OPERATOR in said:
        meaning = OPERATOR
    elif final.phrase in meanings:
        meaning = meanings[final.phrase]
    else:
        meaning = NOT_UNDERSTOOD
    return CallerReply(meaning, heard=final.text, via="speech", confidence=final.confidence)


class KeypadChannel:
    mode = "dtmf"

    def __init__(self, call: AgiCall, prompts: Any, script: DialogScript):
        self.call = call
        self.prompts = prompts
        self.no_input_ms = int(script.settings.no_input_timeout * 1000)

    async def say(self, text: str, language: str, *, within: float | None = None) -> None:
        limit = _deadline(within)
        prompt = await self._prompt(text, language)
        _fits(prompt.seconds, limit)
        await self._agi(self.call.stream_file(prompt.name, seconds=prompt.seconds))

    async def ask(self, question: Question, language: str, *, within: float | None = None) -> CallerReply:
        limit = _deadline(within)
        prompt = await self._prompt(question.text_for(self.mode), language)
        _fits(prompt.seconds + key_wait(self.no_input_ms, question.max_keys), limit)
        digits, _timed_out = await self._agi(self.call.get_data(prompt.name, self.no_input_ms, question.max_keys,
                                                                seconds=prompt.seconds))
        if not digits:
            return CallerReply(NO_INPUT, via="dtmf")
        return CallerReply(question.digits.get(digits, NOT_UNDERSTOOD), heard=digits, via="dtmf")

    async def _prompt(self, text: str, language: str) -> Prompt:
        try:
            return await self.prompts.for_asterisk(text, language)
        except Exception as exc:  # noqa: BLE001
            raise ChannelFailed(f"prompt synthesis failed: {exc}") from exc

    @staticmethod
    async def _agi(command: Any) -> Any:
        try:
            return await command
        except ChannelGone as exc:
            raise CallerGone(str(exc)) from exc
        except AgiTimeout:
            raise  # Asterisk is taken for dead: the call fails open, no other channel is tried
        except AgiError as exc:
            raise ChannelFailed(str(exc)) from exc


def _fits(seconds: float, deadline: float | None) -> None:
    """A prompt and wait that would end past `deadline` (loop time; its rendering counted) is not
    started: Asterisk cannot be stopped in the middle of an AGI command, and a caller cut off
    mid-question has heard nothing."""
    if deadline is None:
        return
    left = deadline - asyncio.get_running_loop().time()
    if seconds > left:
        raise WouldNotFit(f"a {seconds:.1f} s prompt and wait do not fit in the {max(left, 0):.1f} s left")
