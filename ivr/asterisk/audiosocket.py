"""AudioSocket: the wire protocol without I/O (the server is `ivr.asterisk.audiosocket_server`).

Asterisk's ``AudioSocket(<uuid>,<host:port>)`` application (app_audiosocket,
res_audiosocket) connects to this server and exchanges frames of one byte
kind, two bytes big-endian payload length and the payload:

====  ==========  =========================================================
kind  name        payload
====  ==========  =========================================================
0x00  hangup      none; closing the socket means the same
0x01  uuid        16 bytes, the binary UUID given to ``AudioSocket()``
0x03  dtmf        one ASCII digit (Asterisk 20+ sends it at the digit's end)
0x10  audio       signed 16-bit little-endian PCM, 8 kHz mono (20 ms = 320 B)
0xff  error       an optional application-specific error code
====  ==========  =========================================================

Rules that shape the code (res_audiosocket.c, app_audiosocket.c and the
traces of Asterisk 23 in ``tests/data/asterisk-traces``):

* Asterisk writes the UUID frame first, then a frame per channel frame.  A
  caller hanging up just closes the socket - there is no 0x00 frame.
* Asterisk reads only 0x00 and 0x10 with a length of at least one byte from
  the server; any other kind ends the call.  `encode_frame` refuses the rest.
* Asterisk reads the 3-byte header with one ``read()`` into the start of its
  buffer and waits only 5 ms for the rest of a payload: a frame must leave
  in one write (header and payload together).
* Asterisk has no jitter buffer: whatever the server sends goes to the
  caller at once, so the server paces its audio in real time, one frame per
  20 ms against absolute deadlines.
* Two seconds with no traffic either way end the call in Asterisk, so a
  server with nothing to say sends a silence frame now and then.
* Both the 0x00 frame and the server closing its half return
  ``AudioSocket()`` normally, and the dialplan goes on.

This module is the codec (`FrameParser`, the encoders): bytes in, frames out;
no sockets, no clock.
"""

from __future__ import annotations

import enum
import logging
import struct
import uuid as uuid_module
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from speech.audio import FRAME_BYTES, FRAME_MS, SAMPLE_WIDTH, TELEPHONE_RATE

log = logging.getLogger(__name__)


# =============================================================================
# The wire protocol (no I/O)
# =============================================================================


class Kind(enum.IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10
    ERROR = 0xFF


HEADER_BYTES = 3
MAX_PAYLOAD = 0xFFFF  # what the 16-bit length field can say
FRAME_SECONDS = FRAME_MS / 1000  # 0.02: one frame of audio
# Policy, not protocol: Asterisk sends one frame per channel frame (20 ms,
# 320 bytes, in the traces; a long packetisation time makes a few hundred
# milliseconds at most).  A header announcing more than a second of audio is
# treated as garbage before its payload is even buffered.
MAX_AUDIO_PAYLOAD = TELEPHONE_RATE * SAMPLE_WIDTH  # 16 000 bytes = 1 s
MAX_ERROR_PAYLOAD = 256
UUID_BYTES = 16
DTMF_DIGITS = frozenset("0123456789*#ABCD")

_HEADER = struct.Struct(">BH")


class ProtocolError(Exception):
    """Bytes that are not AudioSocket (or not allowed in this direction).

    `frames` holds the well-formed frames that came before the bad one in
    the same `FrameParser.feed` call, so nothing already received is lost.
    """

    def __init__(self, message: str, frames: Iterable[Frame] = ()):
        super().__init__(message)
        self.frames: list[Frame] = list(frames)


@dataclass(frozen=True, slots=True)
class UuidFrame:
    uuid: uuid_module.UUID
    kind: ClassVar[Kind] = Kind.UUID


@dataclass(frozen=True, slots=True, repr=False)
class AudioFrame:
    """Signed 16-bit little-endian PCM at 8 kHz (320 bytes = 20 ms)."""

    pcm: bytes
    kind: ClassVar[Kind] = Kind.AUDIO

    def __repr__(self) -> str:
        return f"AudioFrame({len(self.pcm)} bytes)"

    @property
    def duration(self) -> float:
        return len(self.pcm) / (SAMPLE_WIDTH * TELEPHONE_RATE)


@dataclass(frozen=True, slots=True)
class DtmfFrame:
    digit: str  # one of 0-9 * # A-D
    kind: ClassVar[Kind] = Kind.DTMF


@dataclass(frozen=True, slots=True)
class HangupFrame:
    kind: ClassVar[Kind] = Kind.HANGUP


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """Kind 0xff: `code` is the raw payload (often empty or one byte)."""

    code: bytes = b""
    kind: ClassVar[Kind] = Kind.ERROR


Frame = UuidFrame | AudioFrame | DtmfFrame | HangupFrame | ErrorFrame


class FrameParser:
    """Turn a byte stream into frames, whatever the TCP segmentation.

    By default it reads what Asterisk sends to the server and checks it
    strictly: the UUID frame first and only once, a UUID of 16 bytes, a
    DTMF frame of one valid digit, audio of an even length from 2 bytes up
    to `max_audio`, a hangup frame without payload, a short error payload,
    no other kinds.  The header is judged as soon as its three bytes are in,
    so an oversized or unknown frame is refused before its payload arrives.

    With ``from_server=True`` it reads what the server sends, the way
    Asterisk does (res_audiosocket): only hangup and audio of at least one
    byte, anything else is an error; after a hangup frame nothing more is
    read.  The simulated Asterisk in `ivr.sim.audiosocket_peer` uses that.

    The first malformed frame raises `ProtocolError` (carrying the frames
    before it); the parser is then broken and raises again on every feed.
    """

    def __init__(
        self,
        *,
        from_server: bool = False,
        max_audio: int = MAX_AUDIO_PAYLOAD,
        uuid_first: bool | None = None,
    ):
        if not 2 <= max_audio <= MAX_PAYLOAD:
            raise ValueError(f"max_audio must be 2..{MAX_PAYLOAD}, got {max_audio}")
        self.from_server = from_server
        self.max_audio = max_audio
        self.uuid_first = (not from_server) if uuid_first is None else uuid_first
        self._buffer = bytearray()
        self._error: str | None = None
        self._finished = False
        self.uuid: uuid_module.UUID | None = None
        self.frames_parsed = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buffer)

    @property
    def finished(self) -> bool:
        """True after a hangup frame from the server (Asterisk stops reading there)."""
        return self._finished

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise ProtocolError(f"parser already failed: {self._error}")
        if self._finished:
            return []
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        pos = 0
        size = len(buffer)
        try:
            while size - pos >= HEADER_BYTES:
                kind, length = _HEADER.unpack_from(buffer, pos)
                self._check_header(kind, length)
                end = pos + HEADER_BYTES + length
                if end > size:
                    break
                frame = self._frame(kind, bytes(buffer[pos + HEADER_BYTES : end]))
                pos = end
                frames.append(frame)
                self.frames_parsed += 1
                if self._finished:
                    pos = size  # Asterisk reads nothing after a hangup frame
                    break
        except ProtocolError as exc:
            self._error = str(exc)
            buffer.clear()
            exc.frames = frames
            raise
        del buffer[:pos]
        return frames

    def _check_header(self, kind: int, length: int) -> None:
        if self.uuid_first and self.uuid is None and kind != Kind.UUID:
            raise ProtocolError(f"first frame must be the UUID (0x01), got kind 0x{kind:02x}")
        if self.from_server:
            if kind == Kind.HANGUP:
                return
            if kind != Kind.AUDIO:
                raise ProtocolError(f"Asterisk accepts only hangup and audio from the server, got kind 0x{kind:02x}")
            if length < 1:
                raise ProtocolError("audio frame without payload")
            return
        if kind == Kind.AUDIO:
            if length < SAMPLE_WIDTH or length > self.max_audio or length % SAMPLE_WIDTH:
                raise ProtocolError(
                    f"audio frame of {length} bytes (expected an even length of 2..{self.max_audio})"
                )
        elif kind == Kind.DTMF:
            if length != 1:
                raise ProtocolError(f"DTMF frame of {length} bytes (expected 1)")
        elif kind == Kind.UUID:
            if length != UUID_BYTES:
                raise ProtocolError(f"UUID frame of {length} bytes (expected {UUID_BYTES})")
            if self.uuid is not None:
                raise ProtocolError("a second UUID frame")
        elif kind == Kind.HANGUP:
            if length != 0:
                raise ProtocolError(f"hangup frame with {length} bytes of payload")
        elif kind == Kind.ERROR:
            if length > MAX_ERROR_PAYLOAD:
                raise ProtocolError(f"error frame of {length} bytes (at most {MAX_ERROR_PAYLOAD})")
        else:
            raise ProtocolError(f"unknown frame kind 0x{kind:02x} (length {length})")

    def _frame(self, kind: int, payload: bytes) -> Frame:
        if kind == Kind.AUDIO:
            return AudioFrame(payload)
        if kind == Kind.HANGUP:
            self._finished = self.from_server
            return HangupFrame()
        if kind == Kind.DTMF:
            digit = chr(payload[0]).upper()
            if digit not in DTMF_DIGITS:
                raise ProtocolError(f"DTMF frame with an invalid digit {payload!r}")
            return DtmfFrame(digit)
        if kind == Kind.UUID:
            self.uuid = uuid_module.UUID(bytes=payload)
            return UuidFrame(self.uuid)
        return ErrorFrame(payload)


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """One frame the server may send: hangup (no payload) or audio.

    Anything Asterisk would refuse - another kind, empty or odd-length audio,
    a payload longer than the length field - is a ValueError here instead
    of a dropped call there.
    """
    if kind == Kind.HANGUP:
        if payload:
            raise ValueError("a hangup frame has no payload")
        return _HEADER.pack(Kind.HANGUP, 0)
    if kind == Kind.AUDIO:
        length = len(payload)
        if length < SAMPLE_WIDTH or length > MAX_PAYLOAD or length % SAMPLE_WIDTH:
            raise ValueError(f"audio payload must be an even length of 2..{MAX_PAYLOAD - 1} bytes, got {length}")
        return _HEADER.pack(Kind.AUDIO, length) + bytes(payload)
    raise ValueError(f"the server may send only hangup (0x00) and audio (0x10), not kind {kind!r}")


def audio_frame(pcm: bytes) -> bytes:
    """Header and payload of one audio frame, ready for a single write."""
    return encode_frame(Kind.AUDIO, pcm)


def hangup_frame() -> bytes:
    return encode_frame(Kind.HANGUP)


SILENCE_FRAME = audio_frame(bytes(FRAME_BYTES))
_AUDIO_HEADER = _HEADER.pack(Kind.AUDIO, FRAME_BYTES)
