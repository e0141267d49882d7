"""Speech synthesis: pyttsx3 over eSpeak NG, one engine in a worker process.

Why a process of its own rather than a thread in the server:

- eSpeak NG is initialised once per process and pyttsx3 keeps it alive for
  good, so an engine that went wrong cannot be rebuilt inside the same
  process; a process can simply be replaced.
- A stuck synthesis (a bad voice file, a hung library call) cannot be stopped
  in a thread; a process can be killed after a timeout, and a crash in the C
  library kills only the worker, never the server and its calls.
- A process forked after pyttsx3 was used hangs.  The server never loads
  eSpeak at all, so it stays free to fork.  The worker is a fresh
  interpreter (not a fork, and not multiprocessing, which would re-import the
  server's main module) that inherits none of the server's sockets.
- pyttsx3's eSpeak driver prints a line for every file it saves; the worker's
  standard output goes to /dev/null instead of the server's.

On the server side one dedicated thread owns the worker: it sends one request
at a time and waits for the answer with a timeout, so requests from the event
loop and from plain threads queue there and the event loop never blocks.  A
failed, dead or hung worker is killed and the next request starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from speech.audio import Audio, read_wav

log = logging.getLogger(__name__)

DEFAULT_VOICES = {"ru": "zle/ru", "en": "gmw/en"}  # eSpeak NG voice ids as pyttsx3 lists them
DEFAULT_RATE = 160  # words per minute
_WARM_UP_TEXT = "1 2 3"
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)  # where the worker imports this package from


class SynthesisError(RuntimeError):
    """The engine failed, timed out or died, or the synthesizer is not running."""


class UnknownVoiceError(ValueError):
    """A configured voice does not exist, or no voice is configured for a language."""


class _WorkerGone(SynthesisError):
    """The worker process died or closed its socket."""


class Synthesizer:
    """Text to 22 050 Hz mono 16-bit PCM with eSpeak NG, one utterance at a time.

    `voices` maps a language ("ru", "en") to an eSpeak NG voice, given by id
    ("zle/ru"), name ("Russian") or language code ("ru"); `start()` checks
    them and fails with UnknownVoiceError naming the candidates.  `rate` is in
    words per minute.  Every wait is bounded: `timeout` per utterance,
    `start_timeout` for starting the worker.
    """

    def __init__(
        self,
        voices: dict[str, str] | None = None,
        rate: int = DEFAULT_RATE,
        *,
        timeout: float = 10.0,
        start_timeout: float = 30.0,
    ) -> None:
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"speech rate must be a positive number of words per minute, got {rate!r}")
        self.rate = rate
        self._wanted = dict(DEFAULT_VOICES if voices is None else voices)
        if not self._wanted:
            raise ValueError("at least one language needs a voice")
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._voices: dict[str, str] | None = None  # language -> voice id, known once started
        self._thread: ThreadPoolExecutor | None = None
        self._worker: _Worker | None = None  # touched only on self._thread
        self._closing = False
        self._render_count = 0

    @property
    def render_count(self) -> int:
        """How many utterances the engine has rendered since this object was made."""
        return self._render_count

    def voice_for(self, language: str) -> str:
        """The eSpeak NG voice id used for `language` (known after `start()`)."""
        voices = self._voices
        if voices is None:
            raise SynthesisError("the synthesizer is not started")
        try:
            return voices[language]
        except KeyError:
            raise UnknownVoiceError(
                f"no voice configured for language {language!r} (configured: {', '.join(sorted(voices))})"
            ) from None

    def start(self) -> None:
        """Start and warm up the engine; blocks for up to `start_timeout` seconds.

        From a running event loop call it as ``await asyncio.to_thread(s.start)``.
        Calling it again is harmless; after `close()` it starts afresh.
        """
        if self._thread is None:
            self._closing = False
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="speech-synth")
        try:
            self._thread.submit(self._ensure_worker).result()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the engine; requests still queued fail with SynthesisError.

        Waits for the utterance in progress (at most `timeout`), so from a
        running event loop call it through `asyncio.to_thread` as well.
        """
        thread = self._thread
        if thread is None:
            return
        self._closing = True
        thread.submit(self._discard_worker)
        thread.shutdown(wait=True)
        self._thread = None

    def __enter__(self) -> Synthesizer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def synthesize(self, text: str, language: str) -> Audio:
        """Render `text` in the voice of `language` without blocking the event loop."""
        return await asyncio.wrap_future(self._submit(text, language))

    def synthesize_sync(self, text: str, language: str) -> Audio:
        """Blocking `synthesize` for command-line use; never call it on the event loop."""
        return self._submit(text, language).result()

    def _submit(self, text: str, language: str) -> Future[Audio]:
        if not text or not text.strip():
            raise ValueError("nothing to say: the text is empty")
        voice = self.voice_for(language)
        thread = self._thread
        if thread is None or self._closing:
            raise SynthesisError("the synthesizer is not started")
        try:
            return thread.submit(self._render, text, voice)
        except RuntimeError:  # shut down between the check and the submit
            raise SynthesisError("the synthesizer is closed") from None

    # everything below runs on self._thread

    def _render(self, text: str, voice: str) -> Audio:
        if self._closing:
            raise SynthesisError("the synthesizer is closed")
        for attempt in (1, 2):
            worker = self._ensure_worker()
            try:
                pcm, rate = worker.render(text, voice, self.rate)
                break
            except SynthesisError as exc:
                self._discard_worker(grace=0)  # failed, gone or hung: no use waiting for it
                # a worker that died (crashed, or killed while idle) gets one more try on a fresh one
                if isinstance(exc, _WorkerGone) and attempt == 1:
                    log.warning("eSpeak NG worker %s died; retrying on a new one", worker.pid)
                    continue
                log.warning("speech synthesis failed (%d characters, voice %s): %s", len(text), voice, exc)
                raise
        self._render_count += 1
        return Audio(pcm, rate)

    def _ensure_worker(self) -> _Worker:
        if self._worker is not None and self._worker.is_alive():
            return self._worker
        if self._worker is not None:
            log.warning("eSpeak NG worker %s is gone; starting a new one", self._worker.pid)
            self._discard_worker()
        self._worker, self._voices = _Worker.start(
            self._wanted, self.rate, timeout=self._timeout, start_timeout=self._start_timeout
        )
        log.info("eSpeak NG worker %s ready, voices %s", self._worker.pid, self._voices)
        return self._worker

    def _discard_worker(self, grace: float = 1.0) -> None:
        if self._worker is not None:
            self._worker.stop(grace)
            self._worker = None


class _Worker:
    """The server's handle on one worker process."""

    def __init__(
        self, process: subprocess.Popen, sock: socket.socket, scratch: tempfile.TemporaryDirectory, timeout: float
    ) -> None:
        self._process = process
        self._sock = sock
        self._scratch = scratch
        self._timeout = timeout  # per utterance

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    def start(
        cls, voices: dict[str, str], rate: int, *, timeout: float, start_timeout: float
    ) -> tuple[_Worker, dict[str, str]]:
        sock, child_sock = socket.socketpair()
        scratch = tempfile.TemporaryDirectory(prefix="speech-synth-")
        config = json.dumps(
            {"fd": child_sock.fileno(), "voices": voices, "rate": rate, "timeout": timeout, "scratch": scratch.name}
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", "from speech.tts import _serve; _serve()", config],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the eSpeak driver prints a line per saved file
                env=env,
            )
        except BaseException:
            sock.close()
            scratch.cleanup()
            raise
        finally:
            child_sock.close()
        worker = cls(process, sock, scratch, timeout)
        try:
            reply = worker._receive(start_timeout, "start")
        except BaseException:
            worker.stop()
            raise
        if reply[0] == "ready":
            return worker, reply[1]
        worker.stop()
        if reply[0] == "unknown-voice":
            raise UnknownVoiceError(reply[1])
        raise SynthesisError(f"eSpeak NG did not start: {reply[1]}")

    def is_alive(self) -> bool:
        return self._process.poll() is None

    def render(self, text: str, voice: str, rate: int) -> tuple[bytes, int]:
        try:
            self._sock.settimeout(self._timeout)
            _send(self._sock, (text, voice, rate))
        except OSError as exc:
            raise _WorkerGone(f"eSpeak NG worker is unreachable: {exc}") from None
        reply = self._receive(self._timeout, "answer")
        if reply[0] != "audio":
            raise SynthesisError(f"eSpeak NG failed: {reply[1]}")
        return reply[1], reply[2]

    def _receive(self, timeout: float, what: str) -> tuple:
        try:
            return _receive(self._sock, time.monotonic() + timeout)
        except TimeoutError:
            raise SynthesisError(f"eSpeak NG did not {what} within {timeout:g} s") from None
        except (EOFError, OSError):
            raise _WorkerGone(f"eSpeak NG worker died (exit code {self._wait(1.0)})") from None

    def stop(self, grace: float = 1.0) -> None:
        """Close the worker's socket (it leaves then); kill it if it is still there after `grace` s."""
        self._sock.close()
        if self._wait(grace) is None:
            self._process.kill()
            self._wait(5.0)
        self._scratch.cleanup()

    def _wait(self, timeout: float) -> int | None:
        if timeout <= 0:
            return self._process.poll()
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


# messages between server and worker: 4-byte big-endian length, then a pickle


def _send(sock: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack(">I", len(data)) + data)


def _receive(sock: socket.socket, deadline: float | None = None) -> Any:
    """The next message; EOFError if the peer closed, TimeoutError past `deadline`."""
    (size,) = struct.unpack(">I", _receive_exactly(sock, 4, deadline))
    return pickle.loads(_receive_exactly(sock, size, deadline))  # noqa: S301 - our own worker


def _receive_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# the worker process


def _serve() -> None:
    """Worker process entry point."""
    try:
        _serve_requests()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    # pyttsx3 keeps eSpeak NG alive to the very end because shutting it down can
    # fail; skip the interpreter's teardown and leave at once
    os._exit(0)


def _serve_requests() -> None:
    """Worker main: resolve and warm up the voices, then render requests in order.

    Replies: ("ready", {language: voice id}) | ("unknown-voice", message) |
    ("error", message) at start; ("audio", pcm, sample rate) | ("error",
    message) per request.  After an error the worker leaves, so the server
    starts a clean engine for the next request.  It also leaves when the
    server closes the socket, whether on purpose or by dying.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops us
    config = json.loads(sys.argv[1])
    sock = socket.socket(fileno=config["fd"])
    try:
        engine = _Engine(Path(config["scratch"]) / "utterance.wav", config["timeout"])
        resolved, problem = _resolve_voices(engine.voices(), config["voices"])
        if problem:
            _send(sock, ("unknown-voice", problem))
            return
        for voice in set(resolved.values()):
            engine.render(_WARM_UP_TEXT, voice, config["rate"])
    except Exception as exc:  # noqa: BLE001 - reported to the server, which raises it
        _send(sock, ("error", f"{type(exc).__name__}: {exc}"))
        return
    _send(sock, ("ready", resolved))
    while True:
        try:
            text, voice, rate = _receive(sock)
        except (EOFError, OSError):  # the server closed the socket
            return
        try:
            audio = engine.render(text, voice, rate)
        except Exception as exc:  # noqa: BLE001 - reported to the server, which raises it
            _send(sock, ("error", f"{type(exc).__name__}: {exc}"))
            return
        _send(sock, ("audio", audio.pcm, audio.rate))


class _Engine:
    """pyttsx3's eSpeak NG driver, used the way it actually behaves.

    - eSpeak renders on a thread of its own.  `runAndWait()` waits for the
      utterance, and the driver writes the WAV file when it ends, announced
      by the "finished-utterance" event.
    - Voice and rate changes are queued to eSpeak's thread too.  When a run
      starts while eSpeak is still busy with them, the driver cancels them
      and, through a flag it never clears, the *next* utterance as well.  So
      every step here waits until eSpeak is idle.
    - Until its first utterance the driver is "busy" and only queues
      commands, running them all at once inside `runAndWait()`, where no one
      can wait in between.  A first utterance with nothing to change gets it
      out of that state before any voice or rate is set.
    - A failing command (an unknown voice, say) is reported only through the
      "error" event, and the engine carries on with its previous settings.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        import pyttsx3  # only ever in the worker process
        from pyttsx3.drivers import _espeak

        self._engine = pyttsx3.init("espeak")
        self._espeak = _espeak
        self._path = str(path)
        self._timeout = timeout
        self._errors: list[BaseException | None] = []
        self._finished = threading.Event()
        self._completed = False
        self._engine.connect("error", self._on_error)
        self._engine.connect("finished-utterance", self._on_finished)
        self._wait_until_idle()  # the driver set its defaults on the way in
        self._speak(_WARM_UP_TEXT)

    def voices(self) -> list:
        return self._engine.getProperty("voices")

    def render(self, text: str, voice: str, rate: int) -> Audio:
        self._errors.clear()
        self._engine.setProperty("voice", voice)
        self._engine.setProperty("rate", rate)
        self._wait_until_idle()
        audio = self._speak(text)
        current = self._engine.getProperty("voice")
        if current != voice:
            raise RuntimeError(f"eSpeak NG is on voice {current!r} instead of {voice!r}")
        return audio

    def _speak(self, text: str) -> Audio:
        self._finished.clear()
        self._engine.save_to_file(text, self._path)
        self._engine.runAndWait()
        if not self._finished.wait(self._timeout):
            raise RuntimeError(f"eSpeak NG did not finish the utterance within {self._timeout:g} s")
        self._wait_until_idle()
        if self._errors:
            raise self._errors[0] or RuntimeError("eSpeak NG reported an error")
        if not self._completed:
            raise RuntimeError("eSpeak NG stopped before the end of the utterance")
        try:
            audio = read_wav(self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        if not audio.pcm:
            raise RuntimeError("eSpeak NG produced no audio")
        return audio

    def _on_error(self, **event: Any) -> None:
        self._errors.append(event.get("exception"))

    def _on_finished(self, **event: Any) -> None:
        self._completed = bool(event.get("completed"))
        self._finished.set()

    def _wait_until_idle(self) -> None:
        deadline = time.monotonic() + self._timeout
        while self._espeak.IsPlaying():
            if time.monotonic() > deadline:
                raise RuntimeError(f"eSpeak NG stayed busy for {self._timeout:g} s")
            time.sleep(0.0005)


def _resolve_voices(available: list, wanted: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """Map each language's configured voice (id, name or language code) to a voice id."""
    resolved = {}
    for language, voice in wanted.items():
        voice_id = _find_voice(available, voice)
        if voice_id is None:
            return {}, _unknown_voice_message(available, language, voice)
        resolved[language] = voice_id
    return resolved, None


def _find_voice(available: list, wanted: str) -> str | None:
    key = wanted.strip().lower()
    for match in (
        lambda v: v.id.lower() == key,
        lambda v: v.name.lower() == key,
        lambda v: key in (code.lower() for code in v.languages or ()),
    ):
        found = [v.id for v in available if match(v)]
        if len(found) == 1:
            return found[0]
    return None


def _unknown_voice_message(available: list, language: str, voice: str) -> str:
    prefix = language.split("-")[0].lower()
    candidates = [
        f"{v.id} ({v.name})"
        for v in available
        if any(code.lower().split("-")[0] == prefix for code in v.languages or ())
    ]
    hint = f"voices for {language!r}: {', '.join(candidates)}" if candidates else "see `espeak-ng --voices`"
    return f"unknown eSpeak NG voice {voice!r} for language {language!r}; {hint}"
