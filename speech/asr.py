"""Speech recognition: Vosk with a grammar per dialog step, and endpointing for calls.

The pieces, from the model down to one call:

- `load_model(path)` loads a Vosk model once per process; the `Model` is
  shared by every call and thread.  A missing or broken model is a
  `ModelError` naming the path: the server then runs its dialogs in DTMF mode.
- `Grammar` is what one dialog step listens for: a few phrases.
  `check_grammar` proves, when the dialog is configured, that the model
  supports runtime grammars (only small "lookahead" models do: ``HCLr.fst``
  and ``Gr.fst``, no ``HCLG.fst``) and knows every word (Vosk would silently
  drop an unknown one and never hear it).
- `RecognitionStream` listens to one call: 8 kHz signed 16-bit little-endian
  audio in AudioSocket frames, resampled to the model's rate.  Each
  `listen(grammar)` starts a turn that ends with exactly one `Final` or
  `NoInput`; along the way it reports `SpeechStarted` (for barge-in) and
  `Partial` texts.  The end of an utterance is whichever comes first of
  Vosk's own endpoint, a stretch of silence measured by energy, or the
  maximum utterance length.  Its Vosk recognizer lives as long as the stream
  and is reused across turns and grammar changes (``SetGrammar`` costs a
  fraction of a millisecond; a fresh grammar recognizer about as little, but
  a free-speech one tens of milliseconds).  The stream does no I/O and is not
  thread-safe: one thread at a time.
- `Recognizer` is the asyncio face of a stream: the decoding runs on a
  thread pool (`recognition_executor`, one thread per core; Vosk releases the
  GIL while it decodes), one job in flight per call.  Frames that only need
  an energy measurement (waiting for the caller to speak, or not listening)
  are handled on the event loop without a thread hop.

Vosk facts this relies on (vosk 0.3.45): the word lookup is
``Model.vosk_model_find_word(word)``, -1 for an unknown word; a grammar must
be JSON with the words themselves, not ``\\u`` escapes (Vosk does not decode
them and drops the word); ``SetGrammar`` on a recognizer in the middle of an
utterance aborts the whole process, so the recognizer is reset first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import vosk

from speech.audio import SAMPLE_WIDTH, TELEPHONE_RATE, StreamResampler, rms
from speech.vosk_models import ModelError, is_model_directory

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "Endpointing",
    "Event",
    "Final",
    "Grammar",
    "GrammarError",
    "GrammarsUnsupportedError",
    "Model",
    "ModelError",
    "ModelInfo",
    "NoInput",
    "Partial",
    "RecognitionStream",
    "Recognizer",
    "SpeechStarted",
    "UnknownWordsError",
    "Word",
    "check_grammar",
    "check_vocabulary",
    "inspect_model",
    "load_model",
    "recognition_executor",
]

DEFAULT_SAMPLE_RATE = 16000  # Kaldi's default when mfcc.conf names none
UNKNOWN_WORD = "[unk]"  # Vosk's garbage word, in the models that have one
_STEP = 0.020  # seconds: the unit of energy decisions, one AudioSocket frame
_T = TypeVar("_T")


class _Default:
    def __repr__(self) -> str:
        return "<the endpointing default>"


ENDPOINTING_DEFAULT = _Default()  # listen(no_input_timeout=...) left as configured


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelInfo:
    """What a model directory says about itself, read from its files."""

    path: Path
    sample_rate: int
    supports_grammars: bool


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Read a model directory's sample rate and whether it takes runtime grammars.

    The rate is ``--sample-frequency`` in ``conf/mfcc.conf`` (16 000 when
    absent).  Vosk decodes with ``HCLG.fst`` when there is one, so a model
    takes runtime grammars only with ``HCLr.fst`` and ``Gr.fst`` and no
    ``HCLG.fst``.  Both the current layout (``am/``, ``conf/``, ``graph/``)
    and the old flat one are understood.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(path, "no such directory" if not path.exists() else "not a directory")
    if not is_model_directory(path):
        raise ModelError(path, "not a Vosk model directory (no am/final.mdl)")
    current = (path / "am" / "final.mdl").is_file()
    conf = path / "conf" if current else path
    graph = path / "graph" if current else path
    supports_grammars = (
        not (graph / "HCLG.fst").exists() and (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()
    )
    return ModelInfo(path, _sample_frequency(conf / "mfcc.conf"), supports_grammars)


def _sample_frequency(mfcc_conf: Path) -> int:
    try:
        lines = mfcc_conf.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return DEFAULT_SAMPLE_RATE
    except OSError as exc:
        raise ModelError(mfcc_conf, f"cannot read it: {exc}") from exc
    rate = DEFAULT_SAMPLE_RATE
    for line in lines:
        option = line.split("#", 1)[0].strip()
        name, _, value = option.partition("=")
        if name.strip() == "--sample-frequency":
            try:
                rate = int(float(value))
            except ValueError:
                raise ModelError(mfcc_conf, f"bad --sample-frequency {value.strip()!r}") from None
            if rate <= 0:
                raise ModelError(mfcc_conf, f"bad --sample-frequency {value.strip()!r}")
    return rate


class Model:
    """A loaded Vosk model, shared by all calls and threads; see `load_model`."""

    def __init__(self, info: ModelInfo, vosk_model: vosk.Model) -> None:
        self.info = info
        self.vosk_model = vosk_model
        find = getattr(vosk_model, "find_word", None) or vosk_model.vosk_model_find_word
        self._find_word = find
        self._checked: set[tuple[tuple[str, ...], ...]] = set()  # grammars already proven
        self.has_unknown_word = self.knows(UNKNOWN_WORD)

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, sample_rate={self.sample_rate}, "
            f"supports_grammars={self.supports_grammars})"
        )

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def sample_rate(self) -> int:
        """The rate the model listens at; call audio is resampled to it."""
        return self.info.sample_rate

    @property
    def supports_grammars(self) -> bool:
        return self.info.supports_grammars

    def knows(self, word: str) -> bool:
        """Whether `word` is in the model's vocabulary."""
        return self._find_word(word) >= 0


_models: dict[Path, Model] = {}
_models_lock = threading.Lock()


def load_model(path: str | os.PathLike, *, log_level: int = -1) -> Model:
    """Load the Vosk model in directory `path`, or return the one already loaded from it.

    Blocks for seconds on the first load: from the event loop call it through
    `asyncio.to_thread`.  Raises ModelError naming the path when the directory
    is missing, is no model, or Vosk cannot read it.  `log_level` is Vosk's
    (process-wide) verbosity: -1 keeps its warnings and errors, 0 adds its
    progress messages.
    """
    path = Path(path).expanduser().absolute()
    with _models_lock:
        model = _models.get(path)
        if model is not None:
            return model
        info = inspect_model(path)
        vosk.SetLogLevel(log_level)
        started = time.perf_counter()
        try:
            vosk_model = vosk.Model(str(path))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(path, f"Vosk could not load it ({exc}); its log above says why") from exc
        model = Model(info, vosk_model)
        _models[path] = model
    log.info("speech model %s loaded in %.1f s (%d Hz)", path, time.perf_counter() - started, info.sample_rate)
    return model


# ---------------------------------------------------------------- grammars


class GrammarError(ValueError):
    """A grammar cannot be used: empty, unknown words, or a model without runtime grammars."""


class UnknownWordsError(GrammarError):
    """Words of a grammar are not in the model's vocabulary; `words` lists them."""

    def __init__(self, grammar: Grammar, model: Model, words: Sequence[str]) -> None:
        self.grammar_name = grammar.name
        self.words = tuple(words)
        super().__init__(
            f"grammar {grammar.name!r}: word(s) not in the vocabulary of speech model "
            f"{model.path}: {', '.join(self.words)}"
        )


class GrammarsUnsupportedError(GrammarError):
    """The model has a static decoding graph (HCLG.fst): runtime grammars do nothing on it."""

    def __init__(self, grammar: Grammar, model: Model) -> None:
        super().__init__(
            f"grammar {grammar.name!r}: speech model {model.path} does not support runtime grammars "
            "(it has a static graph/HCLG.fst; use a small model with graph/HCLr.fst and graph/Gr.fst)"
        )


def _words_of(text: str) -> tuple[str, ...]:
    return tuple(text.lower().split())


class Grammar:
    """The phrases one dialog step listens for, e.g. ``Grammar(["네", "아니요"], name="confirm")``.

    A phrase is one or more words; matching ignores case and extra spaces.
    A result names the phrase as written here.
    """

    __slots__ = ("name", "phrases", "_by_words", "_longest")

    def __init__(self, phrases: Iterable[str], *, name: str) -> None:
        if isinstance(phrases, str):
            raise TypeError(f"grammar {name!r}: phrases must be a list of strings, not one string")
        self.name = name
        by_words: dict[tuple[str, ...], str] = {}
        for phrase in phrases:
            if not isinstance(phrase, str):
                raise TypeError(f"grammar {name!r}: phrase {phrase!r} is not a string")
            words = _words_of(phrase)
            if not words:
                raise GrammarError(f"grammar {name!r}: a phrase is empty")
            by_words.setdefault(words, " ".join(phrase.split()))
        if not by_words:
            raise GrammarError(f"grammar {name!r} has no phrases")
        self.phrases: tuple[str, ...] = tuple(by_words.values())
        self._by_words = by_words
        self._longest = max(len(words) for words in by_words)

    def __repr__(self) -> str:
        return f"Grammar({list(self.phrases)!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grammar) and (self.name, self._by_words) == (other.name, other._by_words)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self._by_words)))

    @property
    def words(self) -> frozenset[str]:
        """Every word of every phrase, as the model must know it."""
        return frozenset(word for words in self._by_words for word in words)

    def vosk_json(self, *, with_unknown_word: bool = False) -> str:
        """The grammar as Vosk takes it: a JSON list of phrases, non-ASCII kept as is."""
        phrases = [" ".join(words) for words in self._by_words]
        if with_unknown_word:
            phrases.append(UNKNOWN_WORD)
        return json.dumps(phrases, ensure_ascii=False)

    def match(
        self, words: Sequence[str], confidences: Sequence[float | None] = ()
    ) -> tuple[tuple[str, ...], str | None, float | None]:
        """Find this grammar's phrases in recognised `words`.

        Returns (every phrase found, in order; the best one; its confidence).
        Vosk lets a caller say several phrases in a row ("아니요 상담원"), and
        sometimes inserts one: the best is the phrase with the highest mean
        word confidence, the later one on a tie.  Words that belong to no
        phrase (``[unk]``) are skipped.
        """
        keys = [word.lower() for word in words]
        confs = list(confidences) + [None] * (len(keys) - len(confidences))
        found: list[tuple[str, float | None]] = []
        i = 0
        while i < len(keys):
            for size in range(min(self._longest, len(keys) - i), 0, -1):
                phrase = self._by_words.get(tuple(keys[i : i + size]))
                if phrase is not None:
                    known = [c for c in confs[i : i + size] if c is not None]
                    found.append((phrase, sum(known) / len(known) if known else None))
                    i += size
                    break
            else:
                i += 1
        if not found:
            return (), None, None
        best_at = max(range(len(found)), key=lambda k: (-1.0 if found[k][1] is None else found[k][1], k))
        phrase, confidence = found[best_at]
        return tuple(p for p, _ in found), phrase, confidence


def check_vocabulary(model: Model, grammar: Grammar) -> None:
    """Raise UnknownWordsError naming every word of `grammar` the model does not know."""
    unknown = sorted(word for word in grammar.words if not model.knows(word))
    if unknown:
        raise UnknownWordsError(grammar, model, unknown)


def check_grammar(model: Model, grammar: Grammar) -> None:
    """Prove `grammar` usable on `model`: runtime grammars supported, every word known.

    Call it when the dialog configuration is loaded; a stream calls it again
    for each new grammar, which costs nothing once a grammar passed.
    """
    key = tuple(grammar._by_words)
    if key in model._checked:
        return
    if not model.supports_grammars:
        raise GrammarsUnsupportedError(grammar, model)
    check_vocabulary(model, grammar)
    model._checked.add(key)


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking `at` seconds into the turn: stop the prompt (barge-in)."""

    at: float


@dataclass(frozen=True)
class Partial:
    """The words recognised so far in the utterance."""

    text: str


@dataclass(frozen=True)
class Word:
    word: str
    confidence: float | None


@dataclass(frozen=True)
class Final:
    """The end of a turn: what the caller said.

    `phrase` is the grammar's phrase that was recognised (None when none was,
    or without a grammar); `phrases` all of them in order when the caller
    said several; `confidence` is the mean Vosk word confidence of `phrase`
    (of all words without a phrase), None when Vosk gave none.
    `speech_start` and `speech_end` are seconds into the turn by the call's
    audio clock; `endpoint` says what ended the utterance: "silence" (energy),
    "decoder" (Vosk's endpoint) or "max_length"; `decode_seconds` is the
    processing time from the frame that ended the utterance to the result.
    """

    text: str
    phrase: str | None
    confidence: float | None
    grammar: str | None
    phrases: tuple[str, ...] = ()
    words: tuple[Word, ...] = ()
    speech_start: float = 0.0
    speech_end: float = 0.0
    endpoint: str = "silence"
    decode_seconds: float = 0.0


@dataclass(frozen=True)
class NoInput:
    """The turn ended after `waited` seconds without the caller speaking."""

    waited: float


Event = SpeechStarted | Partial | Final | NoInput


# ---------------------------------------------------------------- endpointing


@dataclass(frozen=True)
class Endpointing:
    """When speech starts and ends, in seconds and in 16-bit sample units (RMS).

    Speech starts after `speech_start` seconds of frames louder than the
    threshold: `speech_threshold`, raised to `noise_factor` times the line's
    noise floor on a noisy line.  An utterance ends after
    `silence_after_speech` seconds below it (this wait is most of the time
    from the caller's last word to the result), or after `max_utterance`
    seconds of speech.  A turn with no speech ends after `no_input_timeout`
    seconds (None: never).  `pre_roll` seconds of audio before the start of
    speech are given to the recogniser too.
    """

    speech_threshold: float = 300.0
    noise_factor: float = 3.0
    speech_start: float = 0.06
    silence_after_speech: float = 0.25
    max_utterance: float = 10.0
    no_input_timeout: float | None = 5.0
    pre_roll: float = 0.3

    def __post_init__(self) -> None:
        for name in ("speech_threshold", "speech_start", "silence_after_speech", "max_utterance"):
            if not getattr(self, name) > 0:
                raise ValueError(f"endpointing {name} must be positive, got {getattr(self, name)!r}")
        if self.noise_factor < 0 or self.pre_roll < 0:
            raise ValueError("endpointing noise_factor and pre_roll must not be negative")
        if self.no_input_timeout is not None and not self.no_input_timeout > 0:
            raise ValueError(
                f"endpointing no_input_timeout must be positive or None, got {self.no_input_timeout!r}"
            )


def _steps(seconds: float) -> int:
    """Whole 20 ms steps in `seconds`, at least one."""
    return max(1, round(seconds / _STEP))


_IDLE, _WAITING, _SPEECH, _CLOSED = "idle", "waiting", "speech", "closed"
_NOISE_SMOOTHING = 0.05  # weight of a new quiet frame in the noise floor


@dataclass
class _Turn:
    no_input_steps: int | None
    step: int = 0  # 20 ms steps heard in this turn
    loud_run: int = 0
    quiet_run: int = 0
    speech_start_step: int = 0
    last_loud_step: int = 0
    last_partial_step: int = 0
    last_partial: str = ""
    pre_roll: deque = field(default_factory=deque)


class RecognitionStream:
    """One call's recogniser: frames in, events out; see the module docstring.

    `input_rate` is the rate of the audio fed in (8 kHz from AudioSocket).
    `partial_interval` is how often, in seconds of speech, a changed partial
    text is reported (None: never).  Not thread-safe.
    """

    def __init__(
        self,
        model: Model,
        *,
        endpointing: Endpointing | None = None,
        input_rate: int = TELEPHONE_RATE,
        partial_interval: float | None = 0.2,
    ) -> None:
        if input_rate <= 0 or input_rate % 50:
            raise ValueError(f"input rate must be a positive multiple of 50 Hz, got {input_rate}")
        self.model = model
        self.endpointing = endpointing or Endpointing()
        self.input_rate = input_rate
        self._partial_steps = None if partial_interval is None else _steps(partial_interval)
        self._step_bytes = input_rate // 50 * SAMPLE_WIDTH
        self._pending = b""
        self._recogniser: vosk.KaldiRecognizer | None = None
        self._recogniser_grammar: Grammar | None = None
        self._decoded = False  # the recogniser holds audio of an unfinished utterance
        self._resampler: StreamResampler | None = None
        self._grammar: Grammar | None = None
        self._state = _IDLE
        self._turn = _Turn(None)
        self._noise_floor = 0.0
        e = self.endpointing
        self._start_steps = _steps(e.speech_start)
        self._silence_steps = _steps(e.silence_after_speech)
        self._max_steps = _steps(e.max_utterance)
        self._pre_roll_steps = max(_steps(e.pre_roll), self._start_steps)

    # ------------------------------------------------------------ state

    @property
    def grammar(self) -> Grammar | None:
        return self._grammar

    @property
    def is_listening(self) -> bool:
        """Whether a turn is in progress (between `listen` and its Final or NoInput)."""
        return self._state in (_WAITING, _SPEECH)

    @property
    def is_in_speech(self) -> bool:
        return self._state == _SPEECH

    @property
    def threshold(self) -> float:
        """The current speech threshold: the configured one, or more on a noisy line."""
        e = self.endpointing
        return max(e.speech_threshold, self._noise_floor * e.noise_factor)

    # ------------------------------------------------------------ control

    def listen(
        self, grammar: Grammar | None, *, no_input_timeout: float | None | _Default = ENDPOINTING_DEFAULT
    ) -> None:
        """Start a turn listening for `grammar` (None: free speech, slow on big graphs).

        Any turn in progress is abandoned without an event.  `no_input_timeout`
        overrides the endpointing one for this turn (None: wait for ever).
        """
        if self._state == _CLOSED:
            raise RuntimeError("the recognition stream is closed")
        timeout = no_input_timeout
        if timeout is ENDPOINTING_DEFAULT:
            timeout = self.endpointing.no_input_timeout
        if timeout is not None and not timeout > 0:
            raise ValueError(f"no-input timeout must be positive or None, got {timeout!r}")
        if grammar is not None:
            check_grammar(self.model, grammar)  # a bad grammar changes nothing
        self._abandon_utterance()
        self._use_grammar(grammar)
        self._turn = _Turn(None if timeout is None else _steps(timeout))
        self._pending = b""
        self._state = _WAITING

    def stop(self) -> None:
        """Abandon the turn in progress, if any; frames are ignored until the next `listen`."""
        if self._state == _CLOSED:
            return
        self._abandon_utterance()
        self._pending = b""
        self._state = _IDLE

    def close(self) -> None:
        """Free the recogniser; the stream cannot listen again."""
        self._recogniser = None
        self._recogniser_grammar = None
        self._resampler = None
        self._pending = b""
        self._state = _CLOSED

    def needs_worker(self, frame: bytes) -> bool:
        """Whether feeding `frame` may run the decoder (worth a worker thread).

        False when the stream is not listening or is waiting for speech and
        every 20 ms of the frame is below the threshold: then `feed` only
        measures energy and counts time.
        """
        if self._state == _SPEECH:
            return True
        if self._state != _WAITING:
            return False
        data = self._pending + frame
        threshold = self.threshold
        size = self._step_bytes
        return any(rms(data[i : i + size]) >= threshold for i in range(0, len(data) - size + 1, size))

    def feed(self, frame: bytes) -> list[Event]:
        """Take call audio (16-bit PCM at `input_rate`, any length) and return what happened."""
        if self._state not in (_WAITING, _SPEECH):
            return []
        started = time.perf_counter()
        data = self._pending + bytes(frame)
        size = self._step_bytes
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        events: list[Event] = []
        for offset in range(0, whole, size):
            step = data[offset : offset + size]
            if self._state == _WAITING:
                self._wait_for_speech(step, events)
            elif self._state == _SPEECH:
                self._follow_speech(step, events, started)
            else:  # the turn ended in this frame; the rest of it is not listened to
                self._pending = b""
                break
        return events

    # ------------------------------------------------------------ turn logic

    def _wait_for_speech(self, step: bytes, events: list[Event]) -> None:
        turn = self._turn
        level = rms(step)
        loud = level >= self.threshold
        if not loud:
            self._noise_floor += _NOISE_SMOOTHING * (level - self._noise_floor)
        turn.pre_roll.append(step)
        if len(turn.pre_roll) > self._pre_roll_steps:
            turn.pre_roll.popleft()
        turn.step += 1
        turn.loud_run = turn.loud_run + 1 if loud else 0
        if turn.loud_run >= self._start_steps:
            turn.speech_start_step = turn.step - turn.loud_run
            turn.last_loud_step = turn.step
            turn.quiet_run = 0
            turn.last_partial_step = turn.step
            turn.last_partial = ""
            self._state = _SPEECH
            events.append(SpeechStarted(round(turn.speech_start_step * _STEP, 3)))
            audio = b"".join(turn.pre_roll)
            turn.pre_roll.clear()
            self._resampler = (
                StreamResampler(self.input_rate, self.model.sample_rate)
                if self.input_rate != self.model.sample_rate
                else None
            )
            self._decode(audio)  # Vosk's own endpoint cannot fire on the first words
        elif turn.no_input_steps is not None and turn.step >= turn.no_input_steps:
            self._state = _IDLE
            events.append(NoInput(round(turn.step * _STEP, 3)))

    def _follow_speech(self, step: bytes, events: list[Event], started: float) -> None:
        turn = self._turn
        turn.step += 1
        if rms(step) >= self.threshold:
            turn.last_loud_step = turn.step
            turn.quiet_run = 0
        else:
            turn.quiet_run += 1
        if self._decode(step):
            result = self._recogniser.Result()
            self._decoded = False
            final = self._final(result, "decoder", started)
            if final.text:
                self._finish(final, events)
                return
        if turn.quiet_run >= self._silence_steps:
            final = self._final(self._finish_utterance(), "silence", started)
            if final.text:
                self._finish(final, events)
            else:  # a cough, a click, line noise: wait on for speech
                self._state = _WAITING
                turn.loud_run = 0
            return
        if turn.step - turn.speech_start_step >= self._max_steps:
            self._finish(self._final(self._finish_utterance(), "max_length", started), events)
            return
        if self._partial_steps is not None and turn.step - turn.last_partial_step >= self._partial_steps:
            turn.last_partial_step = turn.step
            text = json.loads(self._recogniser.PartialResult()).get("partial", "")
            if text and text != turn.last_partial:
                turn.last_partial = text
                events.append(Partial(text))

    def _finish(self, final: Final, events: list[Event]) -> None:
        self._state = _IDLE
        events.append(final)

    # ------------------------------------------------------------ Vosk

    def _use_grammar(self, grammar: Grammar | None) -> None:
        self._grammar = grammar
        if self._recogniser is not None and grammar == self._recogniser_grammar:
            return
        if self._recogniser is not None and grammar is not None and self._recogniser_grammar is not None:
            set_grammar = getattr(self._recogniser, "SetGrammar", None)
            if set_grammar is not None:
                self._recogniser.Reset()  # SetGrammar in mid-utterance aborts the process
                set_grammar(grammar.vosk_json(with_unknown_word=self.model.has_unknown_word))
                self._recogniser_grammar = grammar
                return
        # first use, a change to or from free speech, or a Vosk without SetGrammar
        self._recogniser = None  # free the old one first: a free-speech recogniser is big
        if grammar is None:
            recogniser = vosk.KaldiRecognizer(self.model.vosk_model, self.model.sample_rate)
        else:
            recogniser = vosk.KaldiRecognizer(
                self.model.vosk_model,
                self.model.sample_rate,
                grammar.vosk_json(with_unknown_word=self.model.has_unknown_word),
            )
        recogniser.SetWords(True)
        self._recogniser = recogniser
        self._recogniser_grammar = grammar
        self._decoded = False

    def _decode(self, pcm: bytes) -> bool:
        """Give the recogniser audio at the input rate; True at Vosk's endpoint."""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if not pcm:
            return False
        self._decoded = True
        return bool(self._recogniser.AcceptWaveform(pcm))

    def _finish_utterance(self) -> str:
        self._decoded = False
        return self._recogniser.FinalResult()

    def _abandon_utterance(self) -> None:
        if self._recogniser is not None and self._decoded:
            self._recogniser.Reset()
        self._decoded = False

    def _final(self, result_json: str, endpoint: str, started: float) -> Final:
        result: dict[str, Any] = json.loads(result_json)
        entries = result.get("result") or []
        if entries:
            words = tuple(Word(entry["word"], entry.get("conf")) for entry in entries)
        else:
            words = tuple(Word(word, None) for word in result.get("text", "").split())
        words = tuple(word for word in words if word.word != UNKNOWN_WORD) if self._grammar else words
        text = " ".join(word.word for word in words)
        phrases: tuple[str, ...] = ()
        phrase = None
        confidence = None
        if self._grammar is not None:
            phrases, phrase, confidence = self._grammar.match(
                [w.word for w in words], [w.confidence for w in words]
            )
        if phrase is None:
            known = [w.confidence for w in words if w.confidence is not None]
            confidence = sum(known) / len(known) if known else None
        turn = self._turn
        return Final(
            text=text,
            phrase=phrase,
            confidence=None if confidence is None else round(confidence, 3),
            grammar=None if self._grammar is None else self._grammar.name,
            phrases=phrases,
            words=words,
            speech_start=round(turn.speech_start_step * _STEP, 3),
            speech_end=round(turn.last_loud_step * _STEP, 3),
            endpoint=endpoint,
            decode_seconds=time.perf_counter() - started,
        )


# ---------------------------------------------------------------- asyncio


def recognition_executor(workers: int | None = None) -> ThreadPoolExecutor:
    """A thread pool for recognition: one thread per core this process may use."""
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="speech-asr")


class Recognizer:
    """A `RecognitionStream` for asyncio: decoding on `executor`, one job at a time.

    Calls may come from several tasks; they run in order.  A caller cancelled
    while its frame is being decoded does not lose the frame's events: they
    are returned by the next `feed`.
    """

    def __init__(
        self,
        model: Model,
        *,
        executor: Executor,
        endpointing: Endpointing | None = None,
        input_rate: int = TELEPHONE_RATE,
        partial_interval: float | None = 0.2,
    ) -> None:
        self._stream = RecognitionStream(
            model, endpointing=endpointing, input_rate=input_rate, partial_interval=partial_interval
        )
        self._executor = executor
        self._lock = asyncio.Lock()
        self._job: Future | None = None  # a job whose caller was cancelled
        self._carried: list[Event] = []

    @property
    def stream(self) -> RecognitionStream:
        return self._stream

    @property
    def is_listening(self) -> bool:
        return self._stream.is_listening

    @property
    def is_in_speech(self) -> bool:
        return self._stream.is_in_speech

    @property
    def grammar(self) -> Grammar | None:
        return self._stream.grammar

    async def listen(
        self, grammar: Grammar | None, *, no_input_timeout: float | None | _Default = ENDPOINTING_DEFAULT
    ) -> None:
        """Start a turn; see `RecognitionStream.listen`."""
        async with self._lock:
            await self._settle()
            await self._run(lambda: self._stream.listen(grammar, no_input_timeout=no_input_timeout))

    async def feed(self, frame: bytes) -> list[Event]:
        """Take one frame of call audio; return the events it completed."""
        async with self._lock:
            await self._settle()
            if self._stream.needs_worker(frame):
                events = await self._run(lambda: self._stream.feed(frame))
            else:
                events = self._stream.feed(frame)
            if self._carried:
                events = self._carried + events
                self._carried = []
            return events

    async def stop(self) -> None:
        async with self._lock:
            await self._settle()
            self._stream.stop()

    async def close(self) -> None:
        """Wait for the job in flight, then free the recogniser."""
        async with self._lock:
            await self._settle()
            self._stream.close()

    async def _run(self, job: Callable[[], _T]) -> _T:
        future = self._executor.submit(job)
        self._job = future
        try:
            # shielded: a cancelled caller leaves the job in self._job for the next call
            result = await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._job = None
            raise
        self._job = None
        return result

    async def _settle(self) -> None:
        """Wait for a job left running by a cancelled caller, keeping its events."""
        job = self._job
        if job is None:
            return
        try:
            result = await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            raise
        except Exception:
            self._job = None
            log.exception("speech recognition failed in a call whose caller was cancelled")
            return
        self._job = None
        if isinstance(result, list):
            self._carried.extend(result)
