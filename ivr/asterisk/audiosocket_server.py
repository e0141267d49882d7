"""The AudioSocket server: `AudioSocketServer` hands each connection from Asterisk's
``AudioSocket()`` to ``handler(call)`` as an `AudioSocketCall` with an event stream and
real-time `play()`; the frames themselves are `ivr.asterisk.audiosocket`'s.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import socket
import uuid as uuid_module
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ivr.asterisk.audiosocket import (
    _AUDIO_HEADER,
    FRAME_SECONDS,
    HEADER_BYTES,
    MAX_AUDIO_PAYLOAD,
    SILENCE_FRAME,
    AudioFrame,
    DtmfFrame,
    ErrorFrame,
    Frame,
    FrameParser,
    HangupFrame,
    ProtocolError,
    UuidFrame,
    hangup_frame,
)
from ivr.asterisk.listener import TcpListener, parse_allowed
from speech.audio import FRAME_BYTES, SAMPLE_WIDTH, TELEPHONE_RATE, Audio

log = logging.getLogger(__name__)

# =============================================================================
# The server
# =============================================================================


class EndReason(str, enum.Enum):
    EOF = "eof"  # Asterisk closed (or reset) the socket: the caller hung up, or the channel left the app
    HANGUP = "hangup"  # Asterisk sent a 0x00 frame
    PROTOCOL_ERROR = "protocol-error"  # malformed, oversized or unknown frame
    TIMEOUT = "timeout"  # Asterisk silent (or not reading) for `idle_timeout` seconds
    CLOSED = "closed"  # this side ended it: close(), hangup(), the handler returned, shutdown
    CONNECTION_LOST = "connection-lost"  # a socket error other than a reset


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The last event of a call; iteration stops after it."""

    reason: EndReason
    detail: str = ""

    @property
    def is_caller_hangup(self) -> bool:
        return self.reason in (EndReason.EOF, EndReason.HANGUP)


Event = AudioFrame | DtmfFrame | ErrorFrame | CallEnded
Handler = Callable[["AudioSocketCall"], Awaitable[None]]


class PlaybackOutcome(str, enum.Enum):
    FINISHED = "finished"
    STOPPED = "stopped"
    CALL_ENDED = "call-ended"


class Playback:
    """One `AudioSocketCall.play()`: its progress and a way to stop it.

    Times are ``loop.time()`` (the monotonic clock).  A frame counts as sent
    when it was handed to the socket; `frames_dropped` were skipped because
    Asterisk was not reading (the prompt keeps its real-time position).
    """

    def __init__(self, call: AudioSocketCall, pcm: bytes):
        self._call = call
        self._pcm = pcm
        self._offset = 0
        self.frames_total = math.ceil(len(pcm) / FRAME_BYTES)
        self.frames_sent = 0
        self.frames_dropped = 0
        loop = asyncio.get_running_loop()
        self.queued_at = loop.time()
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.finished_at: float | None = None
        self.outcome: PlaybackOutcome | None = None
        self._done: asyncio.Future[PlaybackOutcome] = loop.create_future()

    def __repr__(self) -> str:
        state = self.outcome.value if self.outcome else "playing" if self.started_at else "queued"
        return f"<Playback {self.frames_sent}/{self.frames_total} frames {state}>"

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def duration(self) -> float:
        return self.frames_total * FRAME_SECONDS

    @property
    def position(self) -> float:
        """Seconds of the prompt already played out (sent or dropped)."""
        return (self.frames_sent + self.frames_dropped) * FRAME_SECONDS

    def stop(self) -> None:
        """Barge-in: no frame of this prompt leaves after this call returns."""
        if self.outcome is not None:
            return
        self.stopped_at = asyncio.get_running_loop().time()
        self._finish(PlaybackOutcome.STOPPED)
        self._call._playback_stopped(self)

    async def wait(self, timeout: float | None = None) -> PlaybackOutcome:
        """Until it finished, was stopped or the call ended."""
        return await asyncio.wait_for(asyncio.shield(self._done), timeout)

    def __await__(self):
        return asyncio.shield(self._done).__await__()

    # -- used by the call's pacer ------------------------------------------
    @property
    def _has_frames(self) -> bool:
        return self._offset < len(self._pcm)

    def _take_frame(self) -> bytes:
        chunk = self._pcm[self._offset : self._offset + FRAME_BYTES]
        self._offset += FRAME_BYTES
        if len(chunk) < FRAME_BYTES:
            chunk = bytes(chunk).ljust(FRAME_BYTES, b"\0")
        return _AUDIO_HEADER + chunk

    def _finish(self, outcome: PlaybackOutcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.finished_at = asyncio.get_running_loop().time()
        if not self._done.done():
            self._done.set_result(outcome)


class AudioSocketCall:
    """One AudioSocket session as the handler sees it.

    * ``async for event in call``: `AudioFrame`, `DtmfFrame`, `ErrorFrame`,
      and at the end exactly one `CallEnded` (then the iteration stops);
      one task reads them.  Audio the handler does not take is bounded: past `max_queued_frames`
      the oldest audio is dropped (`frames_dropped_in`), never DTMF.
    * `play(pcm)` queues a prompt and returns its `Playback`; prompts play
      one after another, one frame per 20 ms against absolute deadlines.
      With nothing to play, a silence frame goes out every
      `keepalive_interval` seconds so Asterisk's 2-second rule never trips.
    * `close()` half-closes the socket: Asterisk leaves ``AudioSocket()``
      and the dialplan goes on.  `hangup()` first sends the 0x00 frame.
    """

    def __init__(self, connection: _Connection, call_uuid: uuid_module.UUID):
        self._connection = connection
        self._server = connection.server
        self._loop = asyncio.get_running_loop()
        self.uuid = call_uuid
        self.peer = connection.peer
        self.started_at = self._loop.time()
        self.ended: CallEnded | None = None
        # incoming
        self._events: deque[Event] = deque()
        self._queued_audio = 0
        self._waiter: asyncio.Future[None] | None = None
        self._end_taken = False
        self.frames_received = 0
        self.frames_dropped_in = 0
        # outgoing
        self._playbacks: deque[Playback] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0  # deadline of frame 0 of the current run of audio
        self._n = 0  # frames of the current run already due
        self._last_tx = self.started_at
        self.frames_sent = 0  # audio frames handed to the socket (prompts and silence)
        self.keepalives_sent = 0
        self.frames_dropped = 0  # frames skipped because Asterisk was not reading
        self.late_resyncs = 0  # times the loop was so late that the schedule moved
        self._ended_event = asyncio.Event()

    def __repr__(self) -> str:
        return f"<AudioSocketCall {self.uuid} from {self.peer}{' ended' if self.ended else ''}>"

    # -- incoming --------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.next_event()
            yield event
            if isinstance(event, CallEnded):
                return

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event; after the end, `CallEnded` again every time.

        Raises TimeoutError when `timeout` passes with no event.
        """
        if not self._events and self._end_taken:
            assert self.ended is not None
            return self.ended
        if not self._events:
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting for this call's events")
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await asyncio.wait_for(waiter, timeout)
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        event = self._events.popleft()
        if isinstance(event, AudioFrame):
            self._queued_audio -= 1
        elif isinstance(event, CallEnded):
            self._end_taken = True
        return event

    def drain_events(self) -> list[Event]:
        """Whatever is queued now, without waiting."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        self._queued_audio = 0
        if any(isinstance(e, CallEnded) for e in events):
            self._end_taken = True
        return events

    async def wait_ended(self, timeout: float | None = None) -> CallEnded:
        await asyncio.wait_for(self._ended_event.wait(), timeout)
        assert self.ended is not None
        return self.ended

    def _push(self, event: Event) -> None:
        if isinstance(event, AudioFrame):
            if self._queued_audio >= self._server.max_queued_frames:
                if self._events and isinstance(self._events[0], AudioFrame):
                    self._events.popleft()
                    self.frames_dropped_in += 1
                    self._server.stats["frames_dropped_in"] += 1
                    self._queued_audio -= 1
                else:
                    self.frames_dropped_in += 1
                    self._server.stats["frames_dropped_in"] += 1
                    return
            self._queued_audio += 1
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _deliver(self, frame: Frame) -> None:
        """A frame from Asterisk (the connection checked the order)."""
        if self.ended is not None:
            return
        self.frames_received += 1
        if isinstance(frame, HangupFrame):
            self._end(EndReason.HANGUP, "Asterisk sent a hangup frame")
        elif isinstance(frame, (AudioFrame, DtmfFrame, ErrorFrame)):
            if isinstance(frame, ErrorFrame):
                log.warning("AudioSocket %s: Asterisk reported an error (code %s)", self.uuid, frame.code.hex() or "none")
            self._push(frame)

    def _end(self, reason: EndReason, detail: str = "") -> bool:
        """Mark the call ended (first reason wins); stop all output."""
        if self.ended is not None:
            return False
        self.ended = CallEnded(reason, detail)
        self._cancel_timer()
        for playback in self._playbacks:
            playback._finish(PlaybackOutcome.CALL_ENDED)
        self._playbacks.clear()
        self._push(self.ended)
        self._ended_event.set()
        return True

    # -- outgoing --------------------------------------------------------------
    @property
    def is_playing(self) -> bool:
        return any(not p.done for p in self._playbacks)

    @property
    def write_buffer_size(self) -> int:
        """Bytes waiting in this process for the socket (bounded by `write_buffer_limit`)."""
        return self._connection.write_buffer_size

    def play(self, pcm: bytes | bytearray | memoryview | Audio) -> Playback:
        """Queue 8 kHz 16-bit mono PCM; the last frame is padded with silence.

        The first frame leaves at once when nothing else is playing.  On an
        ended call the returned playback is already finished (`CALL_ENDED`).
        """
        if isinstance(pcm, Audio):
            if pcm.rate != TELEPHONE_RATE:
                raise ValueError(f"AudioSocket plays {TELEPHONE_RATE} Hz audio, got {pcm.rate} Hz (resample first)")
            pcm = pcm.pcm
        elif not isinstance(pcm, bytes):
            pcm = bytes(pcm)
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"16-bit PCM needs an even byte count, got {len(pcm)}")
        playback = Playback(self, pcm)
        if self.ended is not None or self._connection.output_closed:
            playback._finish(PlaybackOutcome.CALL_ENDED)
            return playback
        was_idle = not self._playbacks
        self._playbacks.append(playback)
        if was_idle:
            self._cancel_timer()
            self._t0 = self._loop.time()
            self._n = 0
            self._tick()
        return playback

    def stop_playback(self) -> None:
        """Stop the current prompt and drop the queued ones (barge-in)."""
        for playback in list(self._playbacks):
            playback.stop()

    def _playback_stopped(self, playback: Playback) -> None:
        try:
            self._playbacks.remove(playback)
        except ValueError:
            return
        if not self._playbacks and self.ended is None:
            self._cancel_timer()
            self._schedule_keepalive()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_keepalive(self) -> None:
        interval = self._server.keepalive_interval
        if interval and interval > 0 and self.ended is None:
            self._timer = self._loop.call_at(self._last_tx + interval, self._keepalive)

    def _keepalive(self) -> None:
        self._timer = None
        if self.ended is not None or self._playbacks:
            return
        if self._connection.check_stalled():
            return
        if self._connection.write_frame(SILENCE_FRAME):
            self.keepalives_sent += 1
            self.frames_sent += 1
        else:
            self.frames_dropped += 1
        self._last_tx = self._loop.time()
        self._schedule_keepalive()

    def _tick(self) -> None:
        """Send the frames that are due (normally one) and book the next deadline."""
        self._timer = None
        if self.ended is not None or self._connection.check_stalled():
            return
        interval = self._server.frame_interval
        now = self._loop.time()
        lag = now - (self._t0 + self._n * interval)
        if lag > self._server.max_lag:
            # The loop stalled: shift the schedule rather than burst the backlog
            # into a caller's ear (Asterisk would play it at once).
            self._t0 += lag
            self.late_resyncs += 1
            self._server.stats["late_resyncs"] += 1
        slack = 0.001  # a timer may fire a hair early
        while self._t0 + self._n * interval <= now + slack:
            self._n += 1
            frame = self._next_frame(now)
            if frame is None:
                break
            if self._connection.write_frame(frame):
                self._current_sent()
            else:
                self.frames_dropped += 1
                self._server.stats["frames_dropped"] += 1
                self._playbacks[0].frames_dropped += 1
            self._last_tx = now
        if self.ended is not None:
            return
        if self._playbacks:
            self._timer = self._loop.call_at(self._t0 + self._n * interval, self._tick)
        else:
            self._schedule_keepalive()

    def _next_frame(self, now: float) -> bytes | None:
        """The next frame of the current prompt; finished prompts give way to the next one."""
        while self._playbacks:
            playback = self._playbacks[0]
            if playback.done:
                self._playbacks.popleft()
                continue
            if playback._has_frames:
                if playback.started_at is None:
                    playback.started_at = now
                return playback._take_frame()
            # its last frame went out one interval ago: it has been heard
            playback._finish(PlaybackOutcome.FINISHED)
            self._playbacks.popleft()
        return None

    def _current_sent(self) -> None:
        self.frames_sent += 1
        self._playbacks[0].frames_sent += 1

    # -- ending ----------------------------------------------------------------
    def close(self) -> None:
        """End the session: half-close the socket; Asterisk continues the dialplan."""
        self._end(EndReason.CLOSED, "closed by the server")
        self._connection.half_close()

    def hangup(self) -> None:
        """Send the 0x00 frame, then close (app_audiosocket also returns to the dialplan)."""
        self._end(EndReason.CLOSED, "hung up by the server")
        self._connection.write_frame(hangup_frame(), force=True)
        self._connection.half_close()


class _Connection(asyncio.Protocol):
    """Transport, parser and timers of one connection; the call is its public face."""

    def __init__(self, server: AudioSocketServer):
        self.server = server
        self.parser = FrameParser(max_audio=server.max_audio_payload)
        self.transport: asyncio.Transport | None = None
        self.call: AudioSocketCall | None = None
        self.peer = "?"
        self.output_closed = False
        self._loop = asyncio.get_running_loop()
        self._uuid_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self._congested_since: float | None = None  # first frame refused for a full buffer
        self._lost = False
        self._handler_task: asyncio.Task[None] | None = None

    # -- asyncio callbacks -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else ""
        if not self.server.is_allowed(self.peer):
            log.warning("AudioSocket: refused connection from %s (not an allowed Asterisk host)", self.peer)
            self.server.stats["refused"] += 1
            self._lost = True
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.server.send_buffer_bytes:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.send_buffer_bytes)
            except OSError:
                pass
        self.server.connections.add(self)
        self._last_rx = self._loop.time()
        self._uuid_timer = self._loop.call_later(self.server.uuid_timeout, self._uuid_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._lost or self.output_closed or (self.call is not None and self.call.ended is not None):
            return  # ending: what Asterisk still sends until it sees our FIN is of no use
        self._last_rx = self._loop.time()
        try:
            frames = self.parser.feed(data)
        except ProtocolError as exc:
            for frame in exc.frames:
                self._frame(frame)
            self._protocol_error(str(exc))
            return
        for frame in frames:
            self._frame(frame)

    def eof_received(self) -> bool | None:
        if self.parser.uuid is None:
            log.info("AudioSocket: %s closed before sending its UUID", self.peer)
            self.server.stats["no_uuid"] += 1
        else:
            self.call._end(EndReason.EOF, "Asterisk closed the connection")
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.output_closed = True
        for timer in (self._uuid_timer, self._idle_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._uuid_timer = self._idle_timer = self._abort_timer = None
        self.server.connections.discard(self)
        if self.call is not None:
            if exc is None:
                self.call._end(EndReason.EOF, "connection closed")
            elif isinstance(exc, ConnectionResetError):
                # Asterisk close()s with our last frames still unread: the kernel
                # turns that FIN into a reset.  It is the same caller hang-up.
                self.call._end(EndReason.EOF, "Asterisk closed the connection (reset)")
            else:
                self.call._end(EndReason.CONNECTION_LOST, str(exc))
            if self.server.calls.get(self.call.uuid) is self.call:
                del self.server.calls[self.call.uuid]

    # -- frames --------------------------------------------------------------------
    def _frame(self, frame: Frame) -> None:
        if isinstance(frame, UuidFrame):
            self._start_call(frame.uuid)
        elif self.call is not None:
            self.call._deliver(frame)
            if self.call.ended is not None and self.call.ended.reason is EndReason.HANGUP:
                self._close_now()

    def _start_call(self, call_uuid: uuid_module.UUID) -> None:
        if self._uuid_timer is not None:
            self._uuid_timer.cancel()
            self._uuid_timer = None
        if call_uuid in self.server.calls:
            log.warning("AudioSocket: %s sent UUID %s that is already in a call; closing", self.peer, call_uuid)
            self.server.stats["duplicate_uuid"] += 1
            self.half_close()
            return
        call = AudioSocketCall(self, call_uuid)
        self.call = call
        self.server.calls[call_uuid] = call
        self.server.stats["calls"] += 1
        call._schedule_keepalive()
        self._arm_idle_timer()
        task = self._loop.create_task(self._run_handler(call), name=f"audiosocket-{call_uuid}")
        self._handler_task = task
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _run_handler(self, call: AudioSocketCall) -> None:
        try:
            await self.server.handler(call)
        except asyncio.CancelledError:
            raise
        except Exception:  # one handler must never take the server down
            log.exception("AudioSocket: handler failed for call %s", call.uuid)
            self.server.stats["handler_errors"] += 1
        finally:
            call.close()

    def _protocol_error(self, detail: str) -> None:
        log.warning("AudioSocket: protocol error from %s%s: %s; ending the call",
                    self.peer, f" (call {self.call.uuid})" if self.call else "", detail)
        self.server.stats["malformed"] += 1
        if self.call is not None:
            self.call._end(EndReason.PROTOCOL_ERROR, detail)
        self.half_close()

    # -- timers ----------------------------------------------------------------------
    def _uuid_timed_out(self) -> None:
        self._uuid_timer = None
        if self.call is None and not self._lost:
            log.warning("AudioSocket: %s sent no UUID frame in %.1f s; closing", self.peer, self.server.uuid_timeout)
            self.server.stats["uuid_timeouts"] += 1
            self._close_now()

    def _arm_idle_timer(self) -> None:
        timeout = self.server.idle_timeout
        if timeout and timeout > 0:
            self._idle_timer = self._loop.call_at(self._last_rx + timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        call = self.call
        if self._lost or call is None or call.ended is not None:
            return
        silent = self._loop.time() - self._last_rx
        if silent >= self.server.idle_timeout:
            self._timeout(f"no frame from Asterisk for {silent:.1f} s")
        else:
            self._arm_idle_timer()

    def check_stalled(self) -> bool:
        """True (and the call ends) when Asterisk has not read for `idle_timeout` seconds."""
        if self._congested_since is None or not self.server.idle_timeout:
            return False
        stalled = self._loop.time() - self._congested_since
        if stalled < self.server.idle_timeout:
            return False
        self._timeout(f"Asterisk has not read for {stalled:.1f} s")
        return True

    def _timeout(self, detail: str) -> None:
        log.warning("AudioSocket: call %s from %s: %s; ending it", self.call.uuid if self.call else "?", self.peer, detail)
        self.server.stats["idle_timeouts"] += 1
        if self.call is not None:
            self.call._end(EndReason.TIMEOUT, detail)
        self.half_close()

    # -- output ------------------------------------------------------------------------
    @property
    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def write_frame(self, frame: bytes, *, force: bool = False) -> bool:
        """One whole frame in one write, unless Asterisk is not keeping up (then dropped).

        What the kernel cannot take waits in the transport's buffer; past
        `write_buffer_limit` bytes there, frames are dropped instead, so a
        peer that stops reading costs a bounded amount of memory.
        """
        transport = self.transport
        if transport is None or self.output_closed or transport.is_closing():
            return False
        if not force and transport.get_write_buffer_size() >= self.server.write_buffer_limit:
            if self._congested_since is None:
                self._congested_since = self._loop.time()
            return False
        transport.write(frame)
        self._congested_since = None
        return True

    def half_close(self) -> None:
        """FIN after what is buffered; close for good when Asterisk closes or after `close_grace`."""
        transport = self.transport
        if transport is None or self._lost or self.output_closed:
            return
        self.output_closed = True
        if transport.is_closing():
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
                return
        except (OSError, RuntimeError):
            transport.abort()
            return
        self._abort_timer = self._loop.call_later(self.server.close_grace, self._abort)

    def _close_now(self) -> None:
        self.output_closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self._abort_timer = self._loop.call_later(self.server.close_grace, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if self.transport is not None and not self._lost:
            self.transport.abort()


class AudioSocketServer(TcpListener):
    """Accept AudioSocket connections from the allowed Asterisk hosts.

    Each connection must send its UUID frame within `uuid_timeout`; it then
    becomes an `AudioSocketCall` (kept in `calls` under its UUID while it
    lasts) handed to ``await handler(call)``; when the handler returns the
    call is closed.  A connection that sends nothing for `idle_timeout`
    seconds, or stops reading for as long, or breaks the protocol, is ended
    on its own; nothing it does reaches another call.

    `frame_interval` is 20 ms on the wire; tests may shorten it to play
    faster than real time.  `send_buffer_bytes` sets SO_SNDBUF on accepted
    sockets (less audio queued in the kernel when Asterisk is slow).
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 9092,
        *,
        allowed_hosts: Iterable[str] = ("127.0.0.1", "::1"),
        uuid_timeout: float = 2.0,
        idle_timeout: float = 5.0,
        keepalive_interval: float = 0.5,
        frame_interval: float = FRAME_SECONDS,
        max_lag: float = 3 * FRAME_SECONDS,
        max_audio_payload: int = MAX_AUDIO_PAYLOAD,
        max_queued_frames: int = 250,
        write_buffer_limit: int = 16 * (HEADER_BYTES + FRAME_BYTES),
        send_buffer_bytes: int | None = None,
        close_grace: float = 1.0,
        reuse_port: bool = False,
    ):
        if keepalive_interval and keepalive_interval >= 2.0:
            raise ValueError("keepalive_interval must stay under Asterisk's 2-second inactivity limit")
        self.handler = handler
        self.host = host
        self.port = port
        self.allowed = parse_allowed(allowed_hosts)
        self.uuid_timeout = uuid_timeout
        self.idle_timeout = idle_timeout
        self.keepalive_interval = keepalive_interval
        self.frame_interval = frame_interval
        self.max_lag = max_lag
        self.max_audio_payload = max_audio_payload
        self.max_queued_frames = max_queued_frames
        self.write_buffer_limit = write_buffer_limit
        self.send_buffer_bytes = send_buffer_bytes
        self.close_grace = close_grace
        self.reuse_port = reuse_port
        self.calls: dict[uuid_module.UUID, AudioSocketCall] = {}
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {
            "calls": 0, "refused": 0, "malformed": 0, "uuid_timeouts": 0, "no_uuid": 0,
            "duplicate_uuid": 0, "idle_timeouts": 0, "handler_errors": 0,
            "frames_dropped": 0, "frames_dropped_in": 0, "late_resyncs": 0,
        }
        self._server: asyncio.base_events.Server | None = None

    def protocol(self) -> asyncio.Protocol:
        return _Connection(self)

    async def __aenter__(self) -> AudioSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, give handlers `grace` seconds, cancel the rest, close every call."""
        await self._stop_accepting(self.tasks, grace)
        for connection in list(self.connections):
            if connection.call is not None:
                connection.call.close()
            if connection.transport is not None:
                connection.transport.close()
        for _ in range(100):  # connection_lost() runs on the next loop iterations
            if not self.connections:
                break
            await asyncio.sleep(0.01)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
