"""The simulated app_audiosocket (ivr.sim.audiosocket_peer) against a bare TCP server.

The other side here is not the project's AudioSocket server but a few lines
of asyncio that record what the peer sends (parsed with the strict codec,
the same way the recorded Asterisk streams parse) and write whatever bytes a
test wants, so the peer is checked on its own: what it sends looks like the
traces of Asterisk 23, and it reacts to the server's frames the way
res_audiosocket.c does.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from ivr.asterisk.audiosocket import (
    AudioFrame,
    DtmfFrame,
    FrameParser,
    HangupFrame,
    Kind,
    UuidFrame,
    audio_frame,
    hangup_frame,
)
from ivr.sim.audiosocket_peer import AsteriskAudioSocket, asterisk_frame, is_silent, main
from speech.audio import FRAME_BYTES
from tests.waiting import LOOPBACK, LIMIT, within, eventually as wait_until



def constant(seconds: float, value: int) -> bytes:
    return np.full(round(seconds * 8000), value, dtype="<i2").tobytes()


class BareServer:
    """Accepts one connection at a time; records the peer's frames with loop-time stamps."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, object]] = []
        self.eof = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.errors: list[str] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> BareServer:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        parser = FrameParser()
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                now = loop.time()
                self.frames += [(now, frame) for frame in parser.feed(data)]
        except Exception as exc:  # recorded for the test to see
            self.errors.append(repr(exc))
        self.eof.set()

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def half_close(self) -> None:
        assert self.writer is not None
        self.writer.write_eof()

    def of(self, kind: type) -> list[tuple[float, object]]:
        return [(t, f) for t, f in self.frames if isinstance(f, kind)]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def bare_server():
    servers: list[BareServer] = []
    peers: list[AsteriskAudioSocket] = []

    async def start() -> BareServer:
        server = await BareServer().start()
        servers.append(server)
        return server

    start.peers = peers
    yield start
    for peer in peers:
        if not peer.is_closed:
            await peer.hang_up()
    for server in servers:
        await server.close()


async def connect(bare_server, server: BareServer, **options) -> AsteriskAudioSocket:
    peer = await AsteriskAudioSocket.connect(LOOPBACK, server.port, **options)
    bare_server.peers.append(peer)
    await within(server.connected.wait())
    return peer


# --- what the peer sends -----------------------------------------------------------------


async def test_uuid_frame_first_then_a_silence_frame_every_20_ms(bare_server):
    server = await bare_server()
    call_uuid = uuid.UUID("c988e050-cf47-4aa3-aeac-fcc0495acfbe")
    peer = await connect(bare_server, server, call_uuid=call_uuid)
    await asyncio.sleep(1.0)
    assert server.frames[0][1] == UuidFrame(call_uuid)
    audio = server.of(AudioFrame)
    assert all(len(f.pcm) == FRAME_BYTES and is_silent(f.pcm) for _, f in audio)
    first = audio[0][0]
    assert 49 <= sum(t < first + 1.0 - 0.001 for t, _ in audio) <= 51
    assert server.errors == [] and peer.outcome is None


async def test_speech_is_paced_in_real_time_between_silence_frames(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server)
    speech = constant(0.5, 1234) + constant(0.013, 1234)
    utterance = peer.say(speech, at=0.2)
    await within(utterance)
    await asyncio.sleep(0.05)
    audio = [f for _, f in server.of(AudioFrame)]
    voiced = [n for n, f in enumerate(audio) if not is_silent(f.pcm)]
    assert len(voiced) == 26 and voiced == list(range(voiced[0], voiced[0] + 26))  # back to back
    assert 8 <= voiced[0] <= 12  # after 0.2 s of silence frames
    assert b"".join(audio[n].pcm for n in voiced) == speech  # the last one short, as Asterisk sends it
    assert len(audio[voiced[-1]].pcm) == 208
    assert 0.48 <= utterance.finished_at - utterance.started_at <= 0.6  # 25 intervals (a loaded loop may add some)


async def test_fast_mode_sends_speech_at_once_and_sparse_silence(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False, fast_silence_interval=0.1)
    utterance = peer.say(constant(2.0, 5))
    assert utterance.done  # 100 frames written without waiting
    await asyncio.sleep(0.35)
    audio = [f for _, f in server.of(AudioFrame)]
    assert sum(not is_silent(f.pcm) for f in audio) == 100
    assert 2 <= sum(is_silent(f.pcm) for f in audio) <= 4


async def test_dtmf_frames_leave_at_the_given_times_in_order(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False)
    peer.press("12#9", at=0.1, gap=0.1)
    peer.press("A")
    await wait_until(lambda: len(server.of(DtmfFrame)) == 5)
    digits = server.of(DtmfFrame)
    assert [f.digit for _, f in digits] == ["A", "1", "2", "#", "9"]
    gaps = [b - a for (a, _), (b, _) in zip(digits[1:], digits[2:])]
    assert all(0.08 <= gap <= 0.15 for gap in gaps)
    assert [s.digit for s in peer.sent if s.kind == Kind.DTMF] == ["A", "1", "2", "#", "9"]
    with pytest.raises(ValueError):
        peer.press("ü")


async def test_caller_hang_up_closes_without_a_hangup_frame(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server)
    await asyncio.sleep(0.1)
    assert await within(peer.hang_up()) == "caller-hangup"
    await within(server.eof.wait())
    assert not server.of(HangupFrame) and server.errors == []
    assert peer.outcome == "caller-hangup"


async def test_malformed_frames_go_out_as_given(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False, transmit_silence=False)
    peer.send_frame(0x03, b"12")  # DTMF of two bytes
    await within(server.eof.wait())  # the strict parser on the other side gave up
    assert "DTMF frame of 2 bytes" in server.errors[0]
    server2 = await bare_server()
    peer2 = await connect(bare_server, server2, realtime=False, transmit_silence=False)
    peer2.send_raw(b"\x10\x01")  # half a header
    await asyncio.sleep(0.05)
    assert peer2.bytes_sent == 19 + 2 and len(server2.frames) == 1


# --- how the peer reads what the server sends ------------------------------------------


async def test_records_server_frames_with_timestamps(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False)
    server.send(audio_frame(constant(0.02, 300)) + audio_frame(bytes(FRAME_BYTES)))
    await wait_until(lambda: len(peer.audio()) == 2)
    first, second = peer.received
    assert first.is_voiced and not second.is_voiced and second.is_audio
    assert peer.connected_at <= first.t <= second.t
    assert len(peer.voiced()) == 1 and peer.voiced(since=first.t) == []
    assert peer.received_pcm() == constant(0.02, 300) + bytes(FRAME_BYTES)


async def test_server_hangup_frame_returns_to_the_dialplan(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False)
    server.send(audio_frame(bytes(FRAME_BYTES)) + hangup_frame())
    assert await within(peer.wait_closed()) == "returned"
    assert isinstance(peer.received[-1].frame, HangupFrame) and peer.violations == []


async def test_server_closing_its_half_returns_to_the_dialplan(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False)
    server.half_close()
    assert await within(peer.wait_closed()) == "returned"
    assert peer.server_eof_at is not None
    await within(server.eof.wait())  # and the peer closed its side too, as Asterisk does


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(asterisk_frame(Kind.DTMF, b"1"), id="dtmf-from-server"),
        pytest.param(asterisk_frame(Kind.UUID, bytes(16)), id="uuid-from-server"),
        pytest.param(asterisk_frame(Kind.ERROR, b"\x01"), id="error-from-server"),
        pytest.param(asterisk_frame(Kind.AUDIO, b""), id="empty-audio"),
        pytest.param(asterisk_frame(0x11, bytes(640)), id="slin16-kind"),
    ],
)
async def test_frame_asterisk_refuses_fails_the_call(bare_server, bad):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False)
    server.send(audio_frame(bytes(FRAME_BYTES)) + bad)
    assert await within(peer.wait_closed()) == "failed"
    assert "Asterisk would refuse" in peer.violations[0]
    assert len(peer.audio()) == 1  # the good frame before it was taken


async def test_server_closing_mid_frame_fails_the_call(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False)
    server.send(audio_frame(bytes(FRAME_BYTES))[:100])
    await asyncio.sleep(0.02)
    server.half_close()
    assert await within(peer.wait_closed()) == "failed"
    assert "middle of a frame" in peer.violations[0]


async def test_two_seconds_without_traffic_fail_the_call_like_app_audiosocket(bare_server):
    server = await bare_server()
    quiet = await connect(bare_server, server, realtime=False, transmit_silence=False, inactivity_timeout=0.3)
    assert await within(quiet.wait_closed()) == "failed"
    assert "no activity" in quiet.violations[0]
    assert quiet.closed_at - quiet.connected_at == pytest.approx(0.3, abs=0.1)


async def test_server_frames_count_as_activity(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False, transmit_silence=False, inactivity_timeout=0.3)
    for _ in range(5):
        await asyncio.sleep(0.15)
        server.send(audio_frame(bytes(FRAME_BYTES)))
    await wait_until(lambda: len(peer.audio()) == 5)
    assert peer.outcome is None


async def test_small_receive_buffer_and_paused_reading(bare_server):
    server = await bare_server()
    peer = await connect(bare_server, server, realtime=False, receive_buffer_bytes=4096)
    peer.pause_reading()
    server.send(audio_frame(bytes(FRAME_BYTES)))
    await asyncio.sleep(0.05)
    assert peer.received == []
    peer.resume_reading()
    await wait_until(lambda: len(peer.received) == 1)


def test_command_line_reports_a_refused_connection(capsys):
    import socket

    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    assert main(["--host", LOOPBACK, "--port", str(port), "--duration", "0.1"]) == 2
    assert "cannot connect" in capsys.readouterr().err
