"""Synthesised prompts, cached on disk by content and in memory for AudioSocket.

A prompt is identified by what it sounds like: its text (whitespace
collapsed), the eSpeak NG voice and the speech rate.  The file name is a hash
of that key, and the extension gives the format, as Asterisk expects:

========  ==========  ===============================================
format    extension   content
========  ==========  ===============================================
wav8      .wav        8 kHz mono 16-bit PCM WAV
sln       .sln        raw 8 kHz signed 16-bit little-endian
sln16     .sln16      raw 16 kHz signed 16-bit little-endian
========  ==========  ===============================================

All formats of one prompt share the base name, so STREAM FILE with
`name_for_asterisk(path)` plays whichever of them exists.  AudioSocket takes
8 kHz PCM from memory (`pcm8`), backed by the `.sln` file.

Several server processes may share the directory, even the one Asterisk reads
sounds from: a file is written under a hidden temporary name in the same
directory and renamed into place, so nobody ever sees half a file, and two
processes rendering the same prompt write the same bytes.  Within one process
concurrent requests for a missing prompt synthesise it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

from speech.audio import RECOGNISER_RATE, TELEPHONE_RATE, Audio, sound_seconds, write_wav
from speech.tts import Synthesizer

FORMATS = {"wav8": ".wav", "sln": ".sln", "sln16": ".sln16"}
_RATES = {"wav8": TELEPHONE_RATE, "sln": TELEPHONE_RATE, "sln16": RECOGNISER_RATE}
PCM8 = "pcm8"  # in memory only, for prerender()
_SECONDS_KEPT = 4096
_KEY_VERSION = 1  # change it when rendering changes, so old files are not reused

_T = TypeVar("_T")


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt as Asterisk plays it: the sound name for STREAM FILE / GET DATA and
    how long it plays, so each AGI command can wait as long as Asterisk legitimately takes."""

    name: str
    seconds: float


class PromptCache:
    """Prompts rendered once by `synthesizer` and kept in `directory`.

    `asterisk_directory` is the same directory as Asterisk sees it (another
    mount point, or a path relative to its sounds directory) when that
    differs.  `memory_items` bounds the in-memory 8 kHz copies (0: none).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        synthesizer: Synthesizer,
        *,
        memory_items: int = 256,
        asterisk_directory: str | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._asterisk_directory = PurePosixPath(asterisk_directory or self.directory)
        self._synthesizer = synthesizer
        self._memory_items = memory_items
        self._memory: OrderedDict[str, bytes] = OrderedDict()  # base name -> 8 kHz PCM
        self._in_flight: dict[object, asyncio.Task] = {}
        self._seconds: OrderedDict[Path, float] = OrderedDict()  # lengths of the WAV prompts read so far

    async def path_for(self, text: str, language: str, fmt: str = "wav8") -> Path:
        """The file of this prompt in format `fmt`, rendered first if missing."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown prompt format {fmt!r}; expected one of {', '.join(FORMATS)}")
        text, base = self._key(text, language)
        path = self.directory / (base + FORMATS[fmt])
        if not path.exists():
            await self._once(path, lambda: self._render(text, language, base, path, fmt))
        return path

    async def for_asterisk(self, text: str, language: str) -> Prompt:
        """The prompt as an 8 kHz WAV, named for Asterisk, with its length."""
        path = await self.path_for(text, language, "wav8")
        seconds = self._seconds.get(path)
        if seconds is None:
            seconds = sound_seconds(path.with_suffix(""))
            if seconds is None:
                raise ValueError(f"cannot read the rendered prompt {path}")
            self._seconds[path] = seconds
            if len(self._seconds) > _SECONDS_KEPT:
                self._seconds.popitem(last=False)
        else:
            self._seconds.move_to_end(path)
        return Prompt(self.name_for_asterisk(path), seconds)

    def name_for_asterisk(self, path: str | os.PathLike) -> str:
        """The sound name for STREAM FILE / GET DATA: the path without extension."""
        relative = Path(path).absolute().relative_to(self.directory)
        return str((self._asterisk_directory / relative.as_posix()).with_suffix(""))

    async def pcm8(self, text: str, language: str) -> bytes:
        """8 kHz signed 16-bit little-endian PCM of the prompt, for AudioSocket."""
        _, base = self._key(text, language)
        pcm = self._memory.get(base)
        if pcm is not None:
            self._memory.move_to_end(base)
            return pcm
        path = await self.path_for(text, language, "sln")
        pcm = await asyncio.to_thread(path.read_bytes)
        if self._memory_items > 0:
            self._memory[base] = pcm
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)
        return pcm

    async def prerender(self, prompts: Iterable[tuple[str, str]], formats: Iterable[str] = ("wav8",)) -> None:
        """Render (text, language) prompts ahead of the calls that need them.

        `formats` may include "pcm8" to load the AudioSocket copy into memory.
        Every prompt is attempted; failures are raised together afterwards as
        an ExceptionGroup.
        """
        formats = list(formats)
        unknown = [fmt for fmt in formats if fmt not in FORMATS and fmt != PCM8]
        if unknown:
            raise ValueError(f"unknown prompt format(s) {unknown}; expected {', '.join([*FORMATS, PCM8])}")
        jobs = [
            self.pcm8(text, language) if fmt == PCM8 else self.path_for(text, language, fmt)
            for text, language in prompts
            for fmt in formats
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failures = [result for result in results if isinstance(result, Exception)]
        if failures:
            raise ExceptionGroup(f"{len(failures)} of {len(jobs)} prompts could not be rendered", failures)

    def _key(self, text: str, language: str) -> tuple[str, str]:
        """The text as it will be spoken, and the base file name it is cached under."""
        text = " ".join(text.split())
        if not text:
            raise ValueError("a prompt needs some text")
        voice = self._synthesizer.voice_for(language)
        key = json.dumps([_KEY_VERSION, text, voice, self._synthesizer.rate], ensure_ascii=False)
        return text, hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    async def _render(self, text: str, language: str, base: str, path: Path, fmt: str) -> None:
        # keyed by base name, so the formats of one prompt share one synthesis
        audio = await self._once(base, lambda: self._synthesizer.synthesize(text, language))
        await asyncio.to_thread(_write_prompt, path, audio, fmt)

    async def _once(self, key: object, start: Callable[[], Awaitable[_T]]) -> _T:
        """Await the job running under `key`, starting it if there is none.

        The job runs as a task of its own: a waiter that is cancelled (a caller
        hanging up) does not cancel it for the others.
        """
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: object, task: asyncio.Task) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here in case every waiter was cancelled


def _write_prompt(path: Path, audio: Audio, fmt: str) -> None:
    audio = audio.resampled(_RATES[fmt])
    with _atomic_file(path) as file:
        if fmt == "wav8":
            write_wav(file, audio)
        else:
            file.write(audio.pcm)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write `path` through a hidden temporary file in its directory, then rename it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; Asterisk runs as another user
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
