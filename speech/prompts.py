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

The directory is bounded: a file's modification time is its last use (a use
touches it, at most once a minute per process), and every `_PRUNE_EVERY` new
renders (and at the first one) a background sweep removes the files unused for
`max_age` seconds, then the least recently used ones until the directory is
under `max_bytes`.  A file used in the last `keep_recent` seconds is never
removed, so a sound another process has just handed to Asterisk is still there
when Asterisk opens it; a file another process removed is rendered again on
its next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
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
_PRUNE_EVERY = 200  # new renders between two sweeps of the directory
_TOUCH_EVERY = 60.0  # seconds: a file in use is touched at most this often by one process
MAX_BYTES = 256 * 1024 * 1024
MAX_AGE = 30 * 86400.0
KEEP_RECENT = 3600.0
_KEY_VERSION = 1  # change it when rendering changes, so old files are not reused

_T = TypeVar("_T")
log = logging.getLogger(__name__)


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
    differs.  `memory_items` bounds the in-memory 8 kHz copies (0: none);
    `max_bytes`, `max_age` and `keep_recent` the files (see the module notes).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        synthesizer: Synthesizer,
        *,
        memory_items: int = 256,
        asterisk_directory: str | None = None,
        max_bytes: int = MAX_BYTES,
        max_age: float = MAX_AGE,
        keep_recent: float = KEEP_RECENT,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._asterisk_directory = PurePosixPath(asterisk_directory or self.directory)
        self._synthesizer = synthesizer
        self._memory_items = memory_items
        self._memory: OrderedDict[str, bytes] = OrderedDict()  # base name -> 8 kHz PCM
        self._in_flight: dict[object, asyncio.Task] = {}
        self._seconds: OrderedDict[Path, float] = OrderedDict()  # lengths of the WAV prompts read so far
        self.max_bytes, self.max_age, self.keep_recent = max_bytes, max_age, keep_recent
        self._touched: OrderedDict[Path, float] = OrderedDict()  # file -> when this process last touched it
        self._renders = _PRUNE_EVERY  # new renders since the last sweep: the first render sweeps
        self._sweep: asyncio.Task | None = None
        self.stats = {"renders": 0, "sweeps": 0, "removed_files": 0, "removed_bytes": 0}

    async def path_for(self, text: str, language: str, fmt: str = "wav8") -> Path:
        """The file of this prompt in format `fmt`, rendered first if missing."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown prompt format {fmt!r}; expected one of {', '.join(FORMATS)}")
        text, base = self._key(text, language)
        path = self.directory / (base + FORMATS[fmt])
        if path.exists():
            self._touch(path)
        else:
            await self._once(path, lambda: self._render(text, language, base, path, fmt))
        return path

    async def prune(self) -> tuple[int, int]:
        """Sweep the directory now (see the module notes); (files, bytes) removed."""
        removed = await asyncio.to_thread(prune_directory, self.directory, max_bytes=self.max_bytes,
                                          max_age=self.max_age, keep_recent=self.keep_recent)
        self.stats["sweeps"] += 1
        self.stats["removed_files"] += removed[0]
        self.stats["removed_bytes"] += removed[1]
        return removed

    async def close(self) -> None:
        """Stop a sweep under way."""
        if self._sweep is not None and not self._sweep.done():
            self._sweep.cancel()
            await asyncio.gather(self._sweep, return_exceptions=True)

    def _touch(self, path: Path) -> None:
        now = time.monotonic()
        last = self._touched.get(path)
        if last is not None and now - last < _TOUCH_EVERY:
            return
        with contextlib.suppress(OSError):  # removed meanwhile: rendered again on its next use
            os.utime(path)
        self._touched[path] = now
        self._touched.move_to_end(path)
        if len(self._touched) > _SECONDS_KEPT:
            self._touched.popitem(last=False)

    def _rendered(self) -> None:
        self.stats["renders"] += 1
        self._renders += 1
        if self._renders >= _PRUNE_EVERY and (self._sweep is None or self._sweep.done()):
            self._renders = 0
            self._sweep = asyncio.ensure_future(self._sweep_quietly())

    async def _sweep_quietly(self) -> None:
        try:
            files, size = await self.prune()
            if files:
                log.info("prompt cache: removed %d files (%.1f MB) from %s", files, size / 1e6, self.directory)
        except Exception as exc:  # noqa: BLE001 - a full cache is better than a failed call
            log.warning("prompt cache sweep of %s failed: %s", self.directory, exc)

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
        self._rendered()

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


def prune_directory(directory: Path, *, max_bytes: int, max_age: float, keep_recent: float,
                    now: float | None = None) -> tuple[int, int]:
    """Remove from `directory` the prompt files unused for `max_age` seconds, then the least
    recently used until the rest is under `max_bytes`, sparing anything used in the last
    `keep_recent` seconds (and left-over temporary files younger than that); (files, bytes) removed."""
    now = time.time() if now is None else now
    entries = []
    with os.scandir(directory) as scan:
        for entry in scan:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, entry.name, Path(entry.path)))
    removed = removed_bytes = 0

    def remove(path: Path, size: int) -> bool:
        nonlocal removed, removed_bytes
        try:
            path.unlink()
        except FileNotFoundError:  # another process swept it first
            return True
        except OSError:
            return False
        removed += 1
        removed_bytes += size
        return True

    for mtime, size, name, path in entries:
        if name.startswith(".") and now - mtime > keep_recent:  # a render that died half-way
            remove(path, size)
    kept = sorted(e for e in entries if not e[2].startswith("."))
    total = sum(size for _, size, _, _ in kept)
    for mtime, size, _, path in kept:  # the least recently used first
        idle = now - mtime
        if idle <= keep_recent or not (idle > max_age or total > max_bytes):
            break  # everything after is newer still
        if remove(path, size):
            total -= size
    return removed, removed_bytes


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
