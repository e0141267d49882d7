"""Asterisk's side of AudioSocket (app_audiosocket), for tests, benchmarks and demos.

`AsteriskAudioSocket` connects to an AudioSocket server the way
``AudioSocket(<uuid>,<host:port>)`` does in Asterisk 23 and behaves as the
recorded sessions in ``tests/data/asterisk-traces`` show:

* it writes the UUID frame first, then one 320-byte audio frame per 20 ms
  (the caller's speech queued with `say()`, silence otherwise, as with
  ``transmit_silence = yes``), and a DTMF frame of one byte when a digit is
  pressed (`press()`);
* the caller hanging up (`hang_up()`) just closes the socket, no 0x00 frame;
* it reads the server's frames as res_audiosocket does: a hangup frame or
  the server closing its half ends ``AudioSocket()`` normally (the dialplan
  goes on); any other kind, or audio without payload, fails the call; and
  two seconds without traffic either way fail it too;
* it records every frame in both directions with ``loop.time()`` stamps,
  so a test can measure, in frames, how long the server kept talking after
  the caller started speaking or pressed a key.

``realtime=False`` is the fast mode for tests that do not measure timing:
queued speech leaves at once, back to back, and silence only every
`fast_silence_interval` seconds.

Run ``python -m ivr.sim.audiosocket_peer --help`` to place one call from the
command line (stream a WAV file, press digits, save what the server said).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import uuid as uuid_module
from collections import deque
from dataclasses import dataclass
from typing import Any

from ivr.asterisk.audiosocket import (
    FRAME_SECONDS,
    AudioFrame,
    Frame,
    FrameParser,
    HangupFrame,
    Kind,
    ProtocolError,
)
from speech.audio import FRAME_BYTES, SAMPLE_WIDTH, TELEPHONE_RATE, Audio, read_wav, resample, write_wav

_HEADER = struct.Struct(">BH")
_SILENCE = bytes(FRAME_BYTES)


def asterisk_frame(kind: int, payload: bytes = b"") -> bytes:
    """Any frame at all, as bytes: header and payload (no checks, on purpose)."""
    return _HEADER.pack(kind & 0xFF, len(payload) & 0xFFFF) + payload


def uuid_frame(call_uuid: uuid_module.UUID) -> bytes:
    return asterisk_frame(Kind.UUID, call_uuid.bytes)


def dtmf_frame(digit: str) -> bytes:
    if len(digit) != 1:
        raise ValueError(f"one digit per DTMF frame, got {digit!r}")
    return asterisk_frame(Kind.DTMF, digit.encode("ascii"))


def audio_frame(pcm: bytes) -> bytes:
    return asterisk_frame(Kind.AUDIO, pcm)


def is_silent(pcm: bytes) -> bool:
    """True for digital silence (every sample zero), as keep-alive frames are."""
    return not pcm.strip(b"\0")


@dataclass(frozen=True, slots=True)
class Received:
    """A frame from the server and when it arrived (``loop.time()``)."""

    t: float
    frame: Frame

    @property
    def is_audio(self) -> bool:
        return isinstance(self.frame, AudioFrame)

    @property
    def is_voiced(self) -> bool:
        """Audio with any non-zero sample (a prompt, not keep-alive silence)."""
        return isinstance(self.frame, AudioFrame) and not is_silent(self.frame.pcm)


@dataclass(frozen=True, slots=True)
class Sent:
    """A frame this side wrote and when (``loop.time()``)."""

    t: float
    kind: int
    payload: bytes

    @property
    def digit(self) -> str | None:
        return self.payload.decode("ascii", "replace") if self.kind == Kind.DTMF else None


class Utterance:
    """Speech queued with `AsteriskAudioSocket.say`."""

    def __init__(self, pcm: bytes):
        loop = asyncio.get_running_loop()
        self.frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        self.frames_sent = 0
        self.started_at: float | None = None  # when its first frame was written
        self.finished_at: float | None = None  # when its last frame was written
        self._done: asyncio.Future[None] = loop.create_future()

    @property
    def done(self) -> bool:
        return self._done.done()

    def __await__(self):
        return asyncio.shield(self._done).__await__()

    def _next(self, now: float) -> bytes:
        if self.started_at is None:
            self.started_at = now
        frame = self.frames[self.frames_sent]
        self.frames_sent += 1
        if self.frames_sent == len(self.frames):
            self.finished_at = now
            if not self._done.done():
                self._done.set_result(None)
        return frame

    def _cancel(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


class AsteriskAudioSocket(asyncio.Protocol):
    """One simulated ``AudioSocket()`` session; create it with `connect`.

    `outcome` once the session is over:

    * ``"returned"`` - the server sent 0x00 or closed: AudioSocket() returned
      normally and the dialplan would go on;
    * ``"failed"`` - Asterisk would have given up (a frame it refuses, two
      seconds without traffic); the reason is in `violations`;
    * ``"caller-hangup"`` - `hang_up()` was called;
    * ``"connection-lost"`` - the connection broke (reset by the server).
    """

    def __init__(
        self,
        call_uuid: uuid_module.UUID | None = None,
        *,
        realtime: bool = True,
        transmit_silence: bool = True,
        inactivity_timeout: float | None = 2.0,
        frame_interval: float = FRAME_SECONDS,
        fast_silence_interval: float = 0.2,
        record: bool = True,
    ):
        self.uuid = call_uuid or uuid_module.uuid4()
        self.realtime = realtime
        self.transmit_silence = transmit_silence
        self.inactivity_timeout = inactivity_timeout
        self.frame_interval = frame_interval
        self.fast_silence_interval = fast_silence_interval
        self.record = record
        self.received: list[Received] = []
        self.sent: list[Sent] = []
        self.violations: list[str] = []
        self.outcome: str | None = None
        self.connected_at: float | None = None
        self.closed_at: float | None = None
        self.server_eof_at: float | None = None
        self.frames_received = 0
        self.bytes_sent = 0
        self._parser = FrameParser(from_server=True)
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._speech: deque[Utterance] = deque()
        self._timers: set[asyncio.TimerHandle] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._n = 0
        self._last_activity = 0.0
        self._closed: asyncio.Future[str] | None = None

    # -- connecting -------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        call_uuid: uuid_module.UUID | None = None,
        local_host: str | None = None,
        receive_buffer_bytes: int | None = None,
        timeout: float = 5.0,
        **options: Any,
    ) -> AsteriskAudioSocket:
        """Connect and send the UUID frame.

        `receive_buffer_bytes` shrinks SO_RCVBUF before connecting (a slow
        reader's kernel buffer fills sooner); `options` go to the constructor.
        """
        loop = asyncio.get_running_loop()
        peer = cls(call_uuid, **options)
        if receive_buffer_bytes is None:
            local = (local_host, 0) if local_host else None
            connecting = loop.create_connection(lambda: peer, host, port, local_addr=local)
        else:
            connecting = cls._connect_small_buffer(loop, peer, host, port, local_host, receive_buffer_bytes)
        await asyncio.wait_for(connecting, timeout)
        return peer

    @staticmethod
    async def _connect_small_buffer(loop, peer, host, port, local_host, size) -> Any:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            sock.setblocking(False)
            if local_host:
                sock.bind((local_host, 0))
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await loop.create_connection(lambda: peer, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as res_audiosocket does
            except OSError:
                pass
        now = self._loop.time()
        self.connected_at = now
        self._last_activity = now
        self._write(Kind.UUID, self.uuid.bytes)
        self._t0 = now
        self._n = 0
        if self.realtime:
            self._schedule_tick()
        elif self.transmit_silence:
            self._ticker = self._loop.call_later(self.fast_silence_interval, self._fast_silence)
        self._arm_watchdog()

    # -- reading what the server sends -------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.outcome is not None:
            return
        now = self._loop.time()
        self._last_activity = now
        try:
            frames = self._parser.feed(data)
        except ProtocolError as exc:
            for frame in exc.frames:
                self._got(now, frame)
            self._fail(f"Asterisk would refuse this frame: {exc}")
            return
        for frame in frames:
            self._got(now, frame)
            if isinstance(frame, HangupFrame):
                self._finish("returned")
                return

    def _got(self, now: float, frame: Frame) -> None:
        self.frames_received += 1
        if self.record:
            self.received.append(Received(now, frame))

    def eof_received(self) -> bool | None:
        self.server_eof_at = self._loop.time() if self._loop else None
        if self._parser.buffered:
            self._fail(f"the server closed in the middle of a frame ({self._parser.buffered} bytes)")
        else:
            self._finish("returned")  # res_audiosocket: socket closed = graceful hangup
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.outcome is None:
            self.outcome = "connection-lost" if exc is not None else "returned"
        self._stop_timers()
        if self._loop is not None:
            self.closed_at = self._loop.time()
        for utterance in self._speech:
            utterance._cancel()
        self._speech.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(self.outcome)

    # -- what the caller does ------------------------------------------------------
    def say(self, pcm: bytes | Audio, *, at: float | None = None) -> Utterance:
        """Queue the caller's speech (8 kHz 16-bit mono), now or `at` seconds after connecting."""
        if isinstance(pcm, Audio):
            pcm = pcm.pcm if pcm.rate == TELEPHONE_RATE else resample(pcm.pcm, pcm.rate, TELEPHONE_RATE)
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"16-bit PCM needs an even byte count, got {len(pcm)}")
        utterance = Utterance(bytes(pcm))
        if not utterance.frames:
            utterance._cancel()
            return utterance
        self._at(at, lambda: self._queue_speech(utterance))
        return utterance

    def press(self, digits: str, *, at: float | None = None, gap: float = 0.3) -> None:
        """DTMF frames, one per digit, `gap` seconds apart, in order (now or from `at`)."""
        payloads = [digit.encode("ascii") for digit in digits]
        if any(len(p) != 1 for p in payloads):
            raise ValueError(f"not DTMF digits: {digits!r}")
        start = self.elapsed() if at is None else at

        def send(n: int) -> None:
            self._write(Kind.DTMF, payloads[n])
            if n + 1 < len(payloads):
                self._at(start + (n + 1) * gap, lambda: send(n + 1))

        if payloads:
            self._at(start, lambda: send(0))

    def send_frame(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame of any kind (for malformed-input tests)."""
        self._write(kind, payload)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (half frames, garbage)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self.bytes_sent += len(data)

    async def hang_up(self) -> str:
        """The caller hangs up: Asterisk closes the socket without a 0x00 frame.

        Returns the `outcome` (another one if the session was already over).
        """
        if self.outcome is None:
            self.outcome = "caller-hangup"
        if self._transport is not None:
            self._transport.close()
        return await self.wait_closed()

    def pause_reading(self) -> None:
        """Stop reading (a stuck Asterisk): the server's frames pile up in the buffers."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    async def wait_closed(self, timeout: float | None = None) -> str:
        """Until the session is over; its `outcome`."""
        assert self._closed is not None, "not connected"
        return await asyncio.wait_for(asyncio.shield(self._closed), timeout)

    @property
    def is_closed(self) -> bool:
        return self._closed is not None and self._closed.done()

    # -- looking at the recording ----------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the connection was made."""
        assert self._loop is not None and self.connected_at is not None, "not connected"
        return self._loop.time() - self.connected_at

    def audio(self, since: float | None = None) -> list[Received]:
        """Audio frames from the server, optionally only those after `since` (loop time)."""
        return [r for r in self.received if r.is_audio and (since is None or r.t > since)]

    def voiced(self, since: float | None = None) -> list[Received]:
        """Audio frames with sound in them (prompts, not keep-alive silence)."""
        return [r for r in self.received if r.is_voiced and (since is None or r.t > since)]

    def received_pcm(self) -> bytes:
        return b"".join(r.frame.pcm for r in self.received if isinstance(r.frame, AudioFrame))

    def sent_at(self, kind: int) -> list[float]:
        """When frames of `kind` left (loop time)."""
        return [s.t for s in self.sent if s.kind == kind]

    # -- internals -------------------------------------------------------------------
    def _write(self, kind: int, payload: bytes) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing() or self.outcome is not None:
            return False
        data = asterisk_frame(kind, payload)
        transport.write(data)  # header and payload in one write, as res_audiosocket does
        self.bytes_sent += len(data)
        now = self._loop.time()
        self._last_activity = now
        if self.record:
            self.sent.append(Sent(now, kind, payload))
        return True

    def _at(self, at: float | None, action) -> None:
        """Run `action` now, or `at` seconds after connecting if that is still to come."""
        if at is None or self.connected_at is None or self.connected_at + at <= self._loop.time():
            action()
            return
        handle = self._loop.call_at(self.connected_at + at, lambda: self._run_timer(handle, action))
        self._timers.add(handle)

    def _run_timer(self, handle: asyncio.TimerHandle, action) -> None:
        self._timers.discard(handle)
        if self.outcome is None:
            action()

    def _queue_speech(self, utterance: Utterance) -> None:
        if self.outcome is not None:
            utterance._cancel()
            return
        if self.realtime:
            self._speech.append(utterance)
            return
        now = self._loop.time()
        while not utterance.done:
            self._write(Kind.AUDIO, utterance._next(now))

    def _schedule_tick(self) -> None:
        self._ticker = self._loop.call_at(self._t0 + self._n * self.frame_interval, self._tick)

    def _tick(self) -> None:
        """One channel frame every 20 ms: speech if queued, else silence (transmit_silence)."""
        self._ticker = None
        if self.outcome is not None:
            return
        now = self._loop.time()
        if now - (self._t0 + self._n * self.frame_interval) > 3 * self.frame_interval:
            self._t0 = now - self._n * self.frame_interval  # the loop stalled: move on
        while self._t0 + self._n * self.frame_interval <= now + 0.001:
            self._n += 1
            while self._speech and self._speech[0].done:
                self._speech.popleft()
            if self._speech:
                self._write(Kind.AUDIO, self._speech[0]._next(now))
            elif self.transmit_silence:
                self._write(Kind.AUDIO, _SILENCE)
        self._schedule_tick()

    def _fast_silence(self) -> None:
        self._ticker = None
        if self.outcome is not None:
            return
        self._write(Kind.AUDIO, _SILENCE)
        self._ticker = self._loop.call_later(self.fast_silence_interval, self._fast_silence)

    def _arm_watchdog(self) -> None:
        if self.inactivity_timeout:
            self._watchdog = self._loop.call_at(self._last_activity + self.inactivity_timeout, self._check_activity)

    def _check_activity(self) -> None:
        """app_audiosocket: no frame from the channel or the socket for 2 s fails the call."""
        self._watchdog = None
        if self.outcome is not None:
            return
        quiet = self._loop.time() - self._last_activity
        if quiet >= self.inactivity_timeout:
            self._fail(f"Reached timeout after {quiet * 1000:.0f} ms of no activity on the AudioSocket connection")
        else:
            self._arm_watchdog()

    def _fail(self, reason: str) -> None:
        self.violations.append(reason)
        self._finish("failed")

    def _finish(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._stop_timers()
        if self._transport is not None:
            self._transport.close()  # Asterisk close()s the socket when the app returns

    def _stop_timers(self) -> None:
        for timer in (self._ticker, self._watchdog, *self._timers):
            if timer is not None:
                timer.cancel()
        self._ticker = self._watchdog = None
        self._timers.clear()


# -- command line: one call for a demo --------------------------------------------


async def _demo(args: argparse.Namespace) -> int:
    peer = await AsteriskAudioSocket.connect(args.host, args.port)
    print(f"connected as {peer.uuid}", flush=True)
    if args.wav:
        peer.say(read_wav(args.wav), at=args.speak_at)
    if args.digits:
        peer.press(args.digits, at=args.dtmf_at)
    try:
        outcome = await peer.wait_closed(args.duration)
    except TimeoutError:
        await peer.hang_up()
        outcome = "caller-hangup"
    voiced = peer.voiced()
    print(f"outcome: {outcome}; {len(peer.audio())} audio frames received, {len(voiced)} with sound", flush=True)
    for violation in peer.violations:
        print(f"  violation: {violation}", flush=True)
    if args.save:
        write_wav(args.save, Audio(peer.received_pcm(), TELEPHONE_RATE))
        print(f"saved what the server said to {args.save}", flush=True)
    return 0 if outcome != "failed" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Place one simulated AudioSocket call (Asterisk's side).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--wav", help="caller speech to stream (mono 16-bit WAV, resampled to 8 kHz)")
    parser.add_argument("--speak-at", type=float, default=1.0, help="seconds after connecting")
    parser.add_argument("--digits", default="", help="DTMF digits to press")
    parser.add_argument("--dtmf-at", type=float, default=2.0, help="seconds after connecting")
    parser.add_argument("--duration", type=float, default=10.0, help="hang up after this many seconds")
    parser.add_argument("--save", help="write the server's audio to this WAV file")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_demo(args))
    except (ConnectionError, OSError) as exc:
        print(f"cannot connect to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
