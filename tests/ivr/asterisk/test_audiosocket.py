"""AudioSocket: the codec (ivr.asterisk.audiosocket without I/O) and the server over real TCP.

The codec is checked against the byte streams a real Asterisk 23 sent
(``tests/data/asterisk-traces/audiosocket-*.as.raw``), whole and cut at random
places, and fuzzed with hypothesis.  The server is driven by the simulated
app_audiosocket in `ivr.sim.audiosocket_peer` on the loopback interface.  Timing
is asserted in frames (how many left, how many after a stop), never as
latencies; the tests that do not need real time use the peer's fast mode.
"""

from __future__ import annotations

import asyncio
import functools
import base64
import json
import random
import time
import uuid
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.asterisk.audiosocket import FRAME_SECONDS, HEADER_BYTES, MAX_AUDIO_PAYLOAD, SILENCE_FRAME, AudioFrame, DtmfFrame, ErrorFrame, FrameParser, HangupFrame, Kind, ProtocolError, UuidFrame, audio_frame, encode_frame, hangup_frame
from ivr.asterisk.audiosocket_server import AudioSocketCall, AudioSocketServer, CallEnded, EndReason, PlaybackOutcome
from ivr.sim.audiosocket_peer import AsteriskAudioSocket, asterisk_frame, dtmf_frame, uuid_frame
from speech.audio import FRAME_BYTES, Audio, rms, split_frames
from tests.ivr import traces
from tests.waiting import LOOPBACK, LIMIT, within, eventually as wait_until

AUDIOSOCKET_TRACES = ("audiosocket-caller-speech", "audiosocket-dtmf", "audiosocket-caller-hangup")


def tone(seconds: float, level: int = 8000, hz: float = 440.0) -> bytes:
    """8 kHz 16-bit PCM of a sine tone (never digital silence)."""
    n = round(seconds * 8000)
    samples = level * np.sin(2 * np.pi * hz * np.arange(n) / 8000)
    samples[samples == 0] = 1  # no all-zero frame, so every prompt frame counts as voiced
    return samples.astype("<i2").tobytes()


def constant(seconds: float, value: int) -> bytes:
    return np.full(round(seconds * 8000), value, dtype="<i2").tobytes()


# --- the recorded sessions --------------------------------------------------------------


@dataclass(frozen=True)
class RecordedFrame:
    t: float
    kind: int
    payload: bytes
    uuid: str | None = None
    digit: str | None = None


@cache
def recorded_frames(name: str) -> tuple[RecordedFrame, ...]:
    """Frames Asterisk sent in ``<name>.jsonl`` (one line per frame)."""
    path = traces.trace_dir() / f"{name}.jsonl"
    frames = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["dir"] != traces.FROM_ASTERISK or "kind" not in record:
                continue
            payload = base64.b64decode(record["b64"])
            assert len(payload) == record["length"]
            frames.append(RecordedFrame(record["t"], record["kind"], payload, record.get("uuid"), record.get("digit")))
    return tuple(frames)


@cache
def raw_stream(name: str) -> bytes:
    return (traces.trace_dir() / f"{name}.as.raw").read_bytes()


def as_recorded(frame) -> tuple[int, bytes]:
    if isinstance(frame, UuidFrame):
        return Kind.UUID, frame.uuid.bytes
    if isinstance(frame, AudioFrame):
        return Kind.AUDIO, frame.pcm
    if isinstance(frame, DtmfFrame):
        return Kind.DTMF, frame.digit.encode()
    if isinstance(frame, ErrorFrame):
        return Kind.ERROR, frame.code
    return Kind.HANGUP, b""


@cache
def caller_speech() -> bytes:
    """The 4.6 s English utterance Asterisk sent in the caller-speech trace (voiced part)."""
    audio = [f.payload for f in recorded_frames("audiosocket-caller-speech") if f.kind == Kind.AUDIO]
    return b"".join(audio[50:266])


# --- codec: the real traces -------------------------------------------------------------


@pytest.mark.parametrize("name", AUDIOSOCKET_TRACES)
def test_recorded_stream_parses_whole_into_the_recorded_frames(name):
    frames = FrameParser().feed(raw_stream(name))
    assert [as_recorded(f) for f in frames] == [(r.kind, r.payload) for r in recorded_frames(name)]


@pytest.mark.parametrize("name", AUDIOSOCKET_TRACES)
@pytest.mark.parametrize("seed", range(5))
def test_recorded_stream_parses_the_same_in_random_splits(name, seed):
    data = raw_stream(name)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 400))
    parser = FrameParser()
    frames = []
    for start, end in zip([0, *cuts], [*cuts, len(data)]):
        frames += parser.feed(data[start:end])
    assert frames == FrameParser().feed(data)
    assert parser.buffered == 0


def test_recorded_stream_parses_the_same_byte_by_byte():
    data = raw_stream("audiosocket-dtmf")
    parser = FrameParser()
    frames = [frame for i in range(len(data)) for frame in parser.feed(data[i : i + 1])]
    assert frames == FrameParser().feed(data)


def test_caller_speech_trace_has_uuid_then_20ms_frames_and_one_short_frame():
    frames = FrameParser().feed(raw_stream("audiosocket-caller-speech"))
    assert frames[0] == UuidFrame(uuid.UUID("681604e1-50ca-4917-8b09-60b9ab2e8f73"))
    assert len(frames[0].uuid.bytes) == 16
    audio = [f for f in frames[1:] if isinstance(f, AudioFrame)]
    assert len(audio) == len(frames) - 1 == 325
    lengths = [len(f.pcm) for f in audio]
    assert lengths.count(320) == 324 and lengths.count(212) == 1
    assert not any(isinstance(f, HangupFrame) for f in frames)  # Asterisk just closes


def test_dtmf_trace_has_four_digits_between_audio_frames():
    frames = FrameParser().feed(raw_stream("audiosocket-dtmf"))
    assert frames[0] == UuidFrame(uuid.UUID("b5dedd5f-91ee-4db8-9dcd-4112b380e518"))
    assert [f.digit for f in frames if isinstance(f, DtmfFrame)] == ["1", "2", "#", "9"]
    assert sum(isinstance(f, AudioFrame) for f in frames) == 277
    assert isinstance(frames[-1], AudioFrame)  # audio resumed after the last digit


def test_caller_hangup_trace_ends_without_a_hangup_frame():
    parser = FrameParser()
    frames = parser.feed(raw_stream("audiosocket-caller-hangup"))
    assert frames[0] == UuidFrame(uuid.UUID("c988e050-cf47-4aa3-aeac-fcc0495acfbe"))
    assert len(frames) == 129 and all(isinstance(f, AudioFrame) and len(f.pcm) == 320 for f in frames[1:])
    assert parser.buffered == 0  # the stream ends on a frame boundary, then EOF


# --- codec: strict checks ---------------------------------------------------------------

UUID_FRAME = uuid_frame(uuid.UUID("681604e1-50ca-4917-8b09-60b9ab2e8f73"))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(asterisk_frame(0x01, bytes(15)), id="uuid-15-bytes"),
        pytest.param(asterisk_frame(0x01, bytes(17)), id="uuid-17-bytes"),
        pytest.param(asterisk_frame(0x03, b""), id="dtmf-empty"),
        pytest.param(asterisk_frame(0x03, b"12"), id="dtmf-two-bytes"),
        pytest.param(asterisk_frame(0x03, b"x"), id="dtmf-not-a-digit"),
        pytest.param(asterisk_frame(0x10, b""), id="audio-empty"),
        pytest.param(asterisk_frame(0x10, b"\x01"), id="audio-one-byte"),
        pytest.param(asterisk_frame(0x10, bytes(321)), id="audio-odd-length"),
        pytest.param(b"\x10\xff\xff", id="audio-oversized-header-alone"),
        pytest.param(asterisk_frame(0x10, bytes(MAX_AUDIO_PAYLOAD + 2))[:100], id="audio-just-over-the-limit"),
        pytest.param(asterisk_frame(0x00, b"\x01"), id="hangup-with-payload"),
        pytest.param(asterisk_frame(0xFF, bytes(300)), id="error-oversized"),
        pytest.param(asterisk_frame(0x02, bytes(6)), id="unknown-kind-0x02"),
        pytest.param(asterisk_frame(0x11, bytes(640)), id="slin16-kind-0x11"),
        pytest.param(b"\x7f\x00\x00", id="unknown-kind-0x7f"),
        pytest.param(UUID_FRAME, id="second-uuid"),
    ],
)
def test_malformed_frame_after_the_uuid_is_a_protocol_error(bad):
    parser = FrameParser()
    good = audio_frame(bytes(320)) + dtmf_frame("5")
    with pytest.raises(ProtocolError) as raised:
        parser.feed(UUID_FRAME + good + bad)
    assert [type(f) for f in raised.value.frames] == [UuidFrame, AudioFrame, DtmfFrame]
    with pytest.raises(ProtocolError):
        parser.feed(audio_frame(bytes(320)))  # a failed parser stays failed


def test_oversized_header_is_refused_before_its_payload_arrives():
    parser = FrameParser()
    parser.feed(UUID_FRAME)
    with pytest.raises(ProtocolError, match="audio frame of 40000 bytes"):
        parser.feed(b"\x10" + (40000).to_bytes(2, "big"))


@pytest.mark.parametrize("first", [audio_frame(bytes(320)), dtmf_frame("1"), hangup_frame(), b"GET / HTTP/1.1\r\n"])
def test_first_frame_must_be_the_uuid(first):
    with pytest.raises(ProtocolError, match="first frame must be the UUID"):
        FrameParser().feed(first)


def test_valid_frames_of_every_kind_asterisk_sends():
    error = asterisk_frame(0xFF, b"\x02")
    frames = FrameParser().feed(UUID_FRAME + dtmf_frame("*") + dtmf_frame("d") + audio_frame(bytes(2)) + error + hangup_frame())
    assert frames[1:] == [DtmfFrame("*"), DtmfFrame("D"), AudioFrame(bytes(2)), ErrorFrame(b"\x02"), HangupFrame()]
    assert AudioFrame(bytes(320)).duration == pytest.approx(0.02)


def test_incomplete_frame_waits_for_the_rest():
    parser = FrameParser()
    frame = audio_frame(bytes(range(256)) + bytes(64))
    assert parser.feed(UUID_FRAME + frame[:2]) == [UuidFrame(uuid.UUID(bytes=UUID_FRAME[3:]))]
    assert parser.feed(frame[2:200]) == []
    assert parser.buffered == 200
    assert parser.feed(frame[200:]) == [AudioFrame(frame[3:])]
    assert parser.buffered == 0


# --- codec: fuzzing ---------------------------------------------------------------------

_KINDS = st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0xFF, 0x42])


@st.composite
def frame_soup(draw) -> bytes:
    """Mostly well-formed frames with plausible kinds and lengths, some not."""
    parts = [draw(st.sampled_from([UUID_FRAME, b""]))]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(_KINDS)
        payload = draw(st.binary(max_size=400))
        length = draw(st.one_of(st.just(len(payload)), st.integers(0, 0xFFFF)))
        parts.append(bytes([kind]) + length.to_bytes(2, "big") + payload)
    return b"".join(parts)


def _feed_in_pieces(parser: FrameParser, data: bytes, cuts: list[int]) -> list:
    frames = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)]):
        frames += parser.feed(data[start:end])
    return frames


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=2048), frame_soup(), frame_soup().map(lambda b: b + bytes(10))),
       cuts=st.lists(st.integers(0, 4096), max_size=8),
       from_server=st.booleans())
def test_any_bytes_give_frames_or_a_protocol_error_never_another_exception(data, cuts, from_server):
    parser = FrameParser(from_server=from_server)
    try:
        frames = _feed_in_pieces(parser, data, cuts)
    except ProtocolError:
        return
    for frame in frames:
        assert isinstance(frame, (UuidFrame, AudioFrame, DtmfFrame, HangupFrame, ErrorFrame))
        if isinstance(frame, AudioFrame):
            assert len(frame.pcm) >= 1


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=200).map(lambda b: b + b if len(b) % 2 else b), max_size=10),
       cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_encoded_audio_comes_back_the_same_in_any_split(payloads, cuts):
    stream = b"".join(audio_frame(p) for p in payloads)
    frames = _feed_in_pieces(FrameParser(from_server=True), stream, cuts)
    assert [f.pcm for f in frames] == payloads


# --- codec: what the server may send --------------------------------------------------


def test_encoders_make_the_two_frames_asterisk_accepts():
    assert hangup_frame() == b"\x00\x00\x00"
    frame = audio_frame(bytes(range(160)) * 2)
    assert frame[:3] == b"\x10\x01\x40" and len(frame) == HEADER_BYTES + FRAME_BYTES
    assert SILENCE_FRAME == b"\x10\x01\x40" + bytes(320)
    assert encode_frame(Kind.AUDIO, bytes(2)) == b"\x10\x00\x02\x00\x00"
    assert FrameParser(from_server=True).feed(frame + hangup_frame() + b"ignored after hangup") == [
        AudioFrame(frame[3:]), HangupFrame()
    ]


@pytest.mark.parametrize("kind", [Kind.UUID, Kind.DTMF, Kind.ERROR, 0x02, 0x11, 0x42])
def test_encoder_refuses_kinds_asterisk_would_drop_the_call_for(kind):
    with pytest.raises(ValueError, match="only hangup"):
        encode_frame(kind, b"1")


@pytest.mark.parametrize("payload", [b"", b"\x01", bytes(321), bytes(0x10000)])
def test_encoder_refuses_audio_asterisk_would_refuse_or_that_is_not_16_bit(payload):
    with pytest.raises(ValueError):
        audio_frame(payload)


def test_encoder_refuses_a_hangup_frame_with_payload():
    with pytest.raises(ValueError):
        encode_frame(Kind.HANGUP, b"x")


@pytest.mark.parametrize("bad", [UUID_FRAME, dtmf_frame("1"), asterisk_frame(0xFF), asterisk_frame(0x10), b"\x11\x00\x02ab"])
def test_asterisk_side_parser_refuses_what_res_audiosocket_refuses(bad):
    with pytest.raises(ProtocolError):
        FrameParser(from_server=True).feed(audio_frame(bytes(320)) + bad)


# --- server fixtures ------------------------------------------------------------------------


@pytest.fixture
def audiosocket_server(listeners):
    return functools.partial(listeners, AudioSocketServer)


@pytest.fixture
async def peers():
    """Connect simulated Asterisk sessions; all hung up at the end."""
    connected: list[AsteriskAudioSocket] = []

    async def connect(server: AudioSocketServer, **options) -> AsteriskAudioSocket:
        options.setdefault("realtime", False)
        peer = await AsteriskAudioSocket.connect(server.host, server.port, **options)
        connected.append(peer)
        return peer

    yield connect
    for peer in connected:
        if not peer.is_closed:
            await peer.hang_up()


class Recorder:
    """A handler that keeps every call and event; optional per-call behaviour."""

    def __init__(self, on_call=None, on_event=None):
        self.calls: list[AudioSocketCall] = []
        self.events: dict[uuid.UUID, list] = {}
        self.finished: list[uuid.UUID] = []
        self.on_call = on_call
        self.on_event = on_event

    async def __call__(self, call: AudioSocketCall) -> None:
        self.calls.append(call)
        events = self.events.setdefault(call.uuid, [])
        if self.on_call is not None:
            result = self.on_call(call)
            if asyncio.iscoroutine(result):
                await result
        async for event in call:
            events.append(event)
            if self.on_event is not None:
                self.on_event(call, event)
        self.finished.append(call.uuid)

    def end(self, call_uuid: uuid.UUID) -> CallEnded | None:
        events = self.events.get(call_uuid, [])
        return events[-1] if events and isinstance(events[-1], CallEnded) else None


# --- server: a call -------------------------------------------------------------------------


async def test_uuid_frame_hands_the_call_to_the_handler_under_its_uuid(audiosocket_server, peers):
    recorder = Recorder()
    server = await audiosocket_server(recorder)
    call_uuid = uuid.UUID("681604e1-50ca-4917-8b09-60b9ab2e8f73")
    peer = await peers(server, call_uuid=call_uuid)
    await wait_until(lambda: recorder.calls)
    call = recorder.calls[0]
    assert call.uuid == call_uuid and call.peer == LOOPBACK
    assert server.calls == {call_uuid: call}
    await peer.hang_up()
    await wait_until(lambda: recorder.finished)
    assert server.calls == {}
    assert recorder.end(call_uuid).reason is EndReason.EOF


async def test_caller_audio_and_dtmf_reach_the_handler_in_order(audiosocket_server, peers):
    recorder = Recorder()
    server = await audiosocket_server(recorder)
    peer = await peers(server)
    speech = caller_speech()
    peer.say(speech[:3200])
    peer.press("12#9", gap=0)
    peer.say(speech[3200:])
    await wait_until(lambda: sum(isinstance(e, AudioFrame) for e in recorder.events.get(peer.uuid, [])) >= len(speech) // 320)
    events = [e for e in recorder.events[peer.uuid] if not (isinstance(e, AudioFrame) and not e.pcm.strip(b"\0"))]
    assert b"".join(e.pcm for e in events if isinstance(e, AudioFrame)) == speech
    digits = [n for n, e in enumerate(events) if isinstance(e, DtmfFrame)]
    assert [events[n].digit for n in digits] == ["1", "2", "#", "9"]
    assert digits == [10, 11, 12, 13]  # after the first 10 frames, before the rest


async def test_played_prompt_reaches_asterisk_intact_in_320_byte_frames(audiosocket_server, peers):
    prompt = tone(0.5) + tone(0.013)  # the last frame is padded with silence
    playbacks = []
    server = await audiosocket_server(Recorder(on_call=lambda call: playbacks.append(call.play(prompt))))
    peer = await peers(server)
    await wait_until(lambda: playbacks and playbacks[0].done)
    assert await playbacks[0] is PlaybackOutcome.FINISHED
    voiced = peer.voiced()
    assert len(voiced) == playbacks[0].frames_sent == playbacks[0].frames_total == 26
    assert all(len(r.frame.pcm) == FRAME_BYTES for r in voiced)
    assert b"".join(r.frame.pcm for r in voiced) == b"".join(split_frames(prompt))
    assert peer.violations == []


async def test_each_frame_leaves_in_one_write_header_and_payload_together(audiosocket_server):
    server = await audiosocket_server(Recorder(on_call=lambda call: call.play(tone(0.3))))
    reader, writer = await within(asyncio.open_connection(LOOPBACK, server.port))
    writer.write(UUID_FRAME)
    chunks = []
    try:
        while sum(map(len, chunks)) < 15 * (HEADER_BYTES + FRAME_BYTES):
            chunks.append(await within(reader.read(65536)))
    finally:
        writer.close()
    # paced 20 ms apart with TCP_NODELAY, each recv() is exactly the frames that were written
    assert all(len(chunk) % (HEADER_BYTES + FRAME_BYTES) == 0 for chunk in chunks), [len(c) for c in chunks]


async def test_prompt_is_paced_one_frame_per_20_ms(audiosocket_server, peers):
    playbacks = []
    server = await audiosocket_server(Recorder(on_call=lambda call: playbacks.append(call.play(tone(1.4)))))
    peer = await peers(server, realtime=True)
    await wait_until(lambda: playbacks and playbacks[0].done)
    times = [r.t for r in peer.voiced()]
    assert len(times) == 70
    first = times[0]
    # frames received in the first 0.5 s and in the first 1.0 s after the first one
    assert 24 <= sum(t < first + 0.5 - 0.001 for t in times) <= 26
    assert 49 <= sum(t < first + 1.0 - 0.001 for t in times) <= 51
    # no drift: the 70th frame is due 1.38 s after the first
    assert 68 <= (times[-1] - first) / FRAME_SECONDS <= 70


async def test_queued_prompts_play_back_to_back(audiosocket_server, peers):
    playbacks = []

    def on_call(call):
        playbacks.extend([call.play(constant(0.1, 100)), call.play(constant(0.06, 200))])

    server = await audiosocket_server(Recorder(on_call=on_call), frame_interval=0.005)
    peer = await peers(server)
    await wait_until(lambda: len(playbacks) == 2 and playbacks[1].done)
    values = [int(np.frombuffer(r.frame.pcm, "<i2")[0]) for r in peer.voiced()]
    assert values == [100] * 5 + [200] * 3
    assert [p.outcome for p in playbacks] == [PlaybackOutcome.FINISHED] * 2


async def test_a_stalled_loop_moves_the_prompt_later_instead_of_bursting_it(audiosocket_server, peers):
    playbacks = []

    async def on_call(call):
        playbacks.append(call.play(tone(0.6)))
        await asyncio.sleep(0.1)
        time.sleep(0.15)  # block the event loop for 7.5 frames

    server = await audiosocket_server(Recorder(on_call=on_call))
    await peers(server)
    await wait_until(lambda: playbacks and playbacks[0].done)
    playback = playbacks[0]
    assert playback.frames_sent == playback.frames_total == 30
    assert server.stats["late_resyncs"] == 1
    # the 0.15 s stall was added to the prompt's length, minus at most the catch-up frames
    assert playback.finished_at - playback.started_at >= 0.6 + 0.15 - 4 * FRAME_SECONDS


async def test_play_rejects_audio_that_is_not_8_khz_16_bit(audiosocket_server, peers):
    errors = []

    def on_call(call):
        for bad in (bytes(3), Audio(bytes(320), 16000)):
            try:
                call.play(bad)
            except ValueError as exc:
                errors.append(str(exc))

    server = await audiosocket_server(Recorder(on_call=on_call))
    await peers(server)
    await wait_until(lambda: len(errors) == 2)
    assert "even byte count" in errors[0] and "8000 Hz" in errors[1]


# --- server: keep-alive and silence -------------------------------------------------------


async def test_idle_call_sends_keepalive_silence_so_asterisks_2_second_rule_never_trips(audiosocket_server, peers):
    quiet = Recorder()
    server = await audiosocket_server(quiet)
    without_keepalive = await audiosocket_server(Recorder(), keepalive_interval=0)
    # the caller's channel is quiet (no transmit_silence): only the server's frames count as activity
    peer = await peers(server, realtime=True, transmit_silence=False)
    control = await peers(without_keepalive, realtime=True, transmit_silence=False)
    await asyncio.sleep(2.5)
    assert peer.outcome is None and peer.violations == []
    frames = peer.audio()
    assert len(frames) >= 4 and not peer.voiced()
    times = [peer.connected_at] + [r.t for r in frames]
    assert max(b - a for a, b in zip(times, times[1:])) < 1.0
    # the same call without keep-alive: Asterisk gives up after 2 s
    assert control.outcome == "failed" and "no activity" in control.violations[0]


async def test_asterisk_silent_for_idle_timeout_ends_the_call(audiosocket_server, peers):
    recorder = Recorder()
    server = await audiosocket_server(recorder, idle_timeout=0.4)
    peer = await peers(server, transmit_silence=False, inactivity_timeout=None)
    assert await within(peer.wait_closed()) == "returned"  # the server half-closed
    await wait_until(lambda: recorder.finished)
    assert recorder.end(peer.uuid).reason is EndReason.TIMEOUT
    assert server.stats["idle_timeouts"] == 1


# --- server: barge-in -------------------------------------------------------------------


def stop_on(predicate):
    """A handler that plays a long prompt and stops it on the first event matching `predicate`."""
    playbacks = []

    def on_call(call):
        playbacks.append(call.play(tone(3.0)))

    def on_event(call, event):
        if predicate(event) and not playbacks[0].done:
            playbacks[0].stop()

    return Recorder(on_call=on_call, on_event=on_event), playbacks


async def test_dtmf_barge_in_stops_the_prompt_within_a_frame(audiosocket_server, peers):
    recorder, playbacks = stop_on(lambda e: isinstance(e, DtmfFrame))
    server = await audiosocket_server(recorder)
    peer = await peers(server, realtime=True)
    peer.press("5", at=0.5)
    await wait_until(lambda: playbacks and playbacks[0].done)
    playback = playbacks[0]
    frames_at_stop = playback.frames_sent
    await asyncio.sleep(0.3)
    pressed_at = peer.sent_at(Kind.DTMF)[0]
    assert playback.outcome is PlaybackOutcome.STOPPED and playback.stopped_at >= pressed_at
    assert playback.frames_sent == frames_at_stop  # nothing of the prompt after stop()
    assert 20 <= frames_at_stop <= 30
    # what the caller heard after pressing: at most the frame in flight and one more
    assert len(peer.voiced(since=pressed_at)) <= 2
    assert not peer.voiced(since=pressed_at + 0.05)
    assert [e.digit for e in recorder.events[peer.uuid] if isinstance(e, DtmfFrame)] == ["5"]


async def test_speech_barge_in_stops_the_prompt_within_a_frame(audiosocket_server, peers):
    recorder, playbacks = stop_on(lambda e: isinstance(e, AudioFrame) and rms(e.pcm) > 300)
    server = await audiosocket_server(recorder)
    peer = await peers(server, realtime=True)
    utterance = peer.say(caller_speech(), at=0.5)
    await wait_until(lambda: playbacks and playbacks[0].done)
    await asyncio.sleep(0.2)
    spoke_at = utterance.started_at
    assert playbacks[0].outcome is PlaybackOutcome.STOPPED
    assert len(peer.voiced(since=spoke_at)) <= 2
    assert 20 <= playbacks[0].frames_sent <= 30


async def test_stop_playback_also_drops_queued_prompts_and_keepalive_resumes(audiosocket_server, peers):
    playbacks = []

    async def on_call(call):
        playbacks.extend([call.play(tone(1.0)), call.play(tone(1.0))])
        await asyncio.sleep(0.1)
        call.stop_playback()

    server = await audiosocket_server(Recorder(on_call=on_call), keepalive_interval=0.1)
    peer = await peers(server)
    await wait_until(lambda: len(playbacks) == 2 and all(p.done for p in playbacks))
    assert [p.outcome for p in playbacks] == [PlaybackOutcome.STOPPED] * 2
    assert playbacks[1].frames_sent == 0 and playbacks[1].started_at is None
    stopped = playbacks[0].stopped_at
    await wait_until(lambda: len(peer.audio(since=stopped)) >= 2)
    assert len(peer.voiced(since=stopped)) <= 1  # at most the frame already in flight


# --- server: how calls end ------------------------------------------------------------------


async def test_caller_hanging_up_mid_prompt_ends_the_call_cleanly(audiosocket_server, peers):
    recorder, playbacks = stop_on(lambda e: False)
    server = await audiosocket_server(recorder)
    peer = await peers(server, realtime=True)
    await asyncio.sleep(0.4)
    await peer.hang_up()
    await wait_until(lambda: recorder.finished)
    ended = recorder.end(peer.uuid)
    assert ended.reason is EndReason.EOF and ended.is_caller_hangup
    assert playbacks[0].outcome is PlaybackOutcome.CALL_ENDED
    assert 0 < playbacks[0].frames_sent < playbacks[0].frames_total
    assert Kind.HANGUP not in {s.kind for s in peer.sent}  # Asterisk sends no 0x00
    await wait_until(lambda: not server.tasks and not server.connections)
    assert server.calls == {} and server.stats["handler_errors"] == 0


async def test_asterisk_hangup_frame_ends_the_call(audiosocket_server, peers):
    recorder = Recorder()
    server = await audiosocket_server(recorder)
    peer = await peers(server)
    peer.send_frame(Kind.HANGUP)
    await wait_until(lambda: recorder.finished)
    assert recorder.end(peer.uuid).reason is EndReason.HANGUP


async def test_handler_returning_half_closes_and_asterisk_returns_to_the_dialplan(audiosocket_server, peers):
    async def brief(call):
        await call.play(tone(0.1))

    server = await audiosocket_server(brief)
    peer = await peers(server)
    assert await within(peer.wait_closed()) == "returned"
    assert peer.server_eof_at is not None
    assert not any(isinstance(r.frame, HangupFrame) for r in peer.received)
    assert len(peer.voiced()) == 5


async def test_hangup_sends_the_hangup_frame_then_closes(audiosocket_server, peers):
    async def rude(call):
        call.play(tone(1.0))
        await asyncio.sleep(0.05)
        call.hangup()

    server = await audiosocket_server(rude)
    peer = await peers(server)
    assert await within(peer.wait_closed()) == "returned"
    assert isinstance(peer.received[-1].frame, HangupFrame)
    assert peer.violations == []


async def test_handler_that_raises_is_logged_and_its_call_closed(audiosocket_server, peers, caplog):
    async def broken(call):
        raise RuntimeError("boom")

    server = await audiosocket_server(broken)
    peer = await peers(server)
    assert await within(peer.wait_closed()) == "returned"
    assert server.stats["handler_errors"] == 1
    assert "boom" in caplog.text


async def test_play_on_an_ended_call_is_already_finished(audiosocket_server, peers):
    results = []

    async def handler(call):
        await call.wait_ended()
        results.append(call.play(tone(0.2)))

    server = await audiosocket_server(handler)
    peer = await peers(server)
    await peer.hang_up()
    await wait_until(lambda: results)
    assert results[0].outcome is PlaybackOutcome.CALL_ENDED and results[0].frames_sent == 0


# --- server: bad peers ------------------------------------------------------------------------


BAD_FRAMES = {
    "unknown-kind": asterisk_frame(0x02, bytes(6)),
    "slin16-kind": asterisk_frame(0x11, bytes(640)),
    "oversized-audio": b"\x10\xff\xff" + bytes(100),
    "dtmf-two-bytes": asterisk_frame(0x03, b"12"),
    "second-uuid": UUID_FRAME,
    "empty-audio": asterisk_frame(0x10, b""),
}


@pytest.mark.parametrize("bad", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_malformed_frame_ends_only_that_call(audiosocket_server, peers, bad):
    playbacks = {}
    recorder = Recorder(on_call=lambda call: playbacks.setdefault(call.uuid, call.play(tone(0.3))))
    server = await audiosocket_server(recorder)
    good = await peers(server, realtime=True)
    bad_peer = await peers(server)
    await wait_until(lambda: len(recorder.calls) == 2)
    await asyncio.sleep(0.1)
    bad_peer.send_raw(audio_frame(tone(0.02)) + dtmf_frame("7") + bad)
    assert await within(bad_peer.wait_closed()) == "returned"  # ended cleanly: the dialplan goes on
    await wait_until(lambda: bad_peer.uuid in recorder.finished)
    events = recorder.events[bad_peer.uuid]
    assert events[-1].reason is EndReason.PROTOCOL_ERROR
    assert [e.digit for e in events if isinstance(e, DtmfFrame)] == ["7"]  # frames before the bad one arrive
    assert server.stats["malformed"] == 1
    # the other call goes on undisturbed
    assert await within(playbacks[good.uuid].wait()) is PlaybackOutcome.FINISHED
    assert len(good.voiced()) == 15 and good.outcome is None and good.uuid not in recorder.finished


async def test_garbage_instead_of_a_uuid_never_reaches_the_handler(audiosocket_server):
    recorder = Recorder()
    server = await audiosocket_server(recorder)
    reader, writer = await within(asyncio.open_connection(LOOPBACK, server.port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await within(reader.read()) == b""
    writer.close()
    assert recorder.calls == [] and server.stats["malformed"] == 1


async def test_connection_without_uuid_is_closed_after_uuid_timeout(audiosocket_server):
    recorder = Recorder()
    server = await audiosocket_server(recorder, uuid_timeout=0.2)
    reader, writer = await within(asyncio.open_connection(LOOPBACK, server.port))
    writer.write(UUID_FRAME[:10])  # half a UUID frame, then nothing
    assert await within(reader.read()) == b""
    writer.close()
    assert recorder.calls == [] and server.stats["uuid_timeouts"] == 1


async def test_second_connection_with_a_uuid_in_use_is_refused(audiosocket_server, peers):
    recorder = Recorder()
    server = await audiosocket_server(recorder)
    first = await peers(server)
    await wait_until(lambda: recorder.calls)
    second = await peers(server, call_uuid=first.uuid)
    assert await within(second.wait_closed()) == "returned"
    assert len(recorder.calls) == 1 and server.stats["duplicate_uuid"] == 1
    assert first.outcome is None


async def test_slow_reader_neither_grows_memory_nor_delays_other_calls(audiosocket_server, peers):
    playbacks = {}
    recorder = Recorder(on_call=lambda call: playbacks.setdefault(call.uuid, call.play(tone(20.0))))
    # 4x real time and small socket buffers, so the kernel buffers fill within a fraction of a second
    server = await audiosocket_server(recorder, frame_interval=0.005, send_buffer_bytes=4096, idle_timeout=1.0)
    slow = await peers(server, receive_buffer_bytes=4096)
    slow.pause_reading()
    good = await peers(server)
    await wait_until(lambda: len(recorder.calls) == 2)
    slow_call = next(c for c in recorder.calls if c.uuid == slow.uuid)
    sizes = []
    while slow_call.ended is None:
        sizes.append(slow_call.write_buffer_size)
        await asyncio.sleep(0.01)
    # buffered in this process: never more than the limit and one frame
    assert max(sizes) <= server.write_buffer_limit + HEADER_BYTES + FRAME_BYTES
    assert slow_call.frames_dropped > 0 and server.stats["frames_dropped"] == slow_call.frames_dropped
    # not reading for idle_timeout ends that call ...
    assert slow_call.ended.reason is EndReason.TIMEOUT and "not read" in slow_call.ended.detail
    # ... while the other one got every frame of its prompt, on schedule
    good_playback = playbacks[good.uuid]
    due = (asyncio.get_running_loop().time() - good_playback.started_at) / 0.005
    assert good_playback.frames_dropped == 0 and good_playback.frames_sent >= 0.75 * due
    await wait_until(lambda: len(good.voiced()) >= good_playback.frames_sent - 1)
    slow.resume_reading()


async def test_incoming_audio_the_handler_does_not_read_is_bounded(audiosocket_server, peers):
    calls = []

    async def deaf(call):
        calls.append(call)
        await asyncio.sleep(3600)

    server = await audiosocket_server(deaf, max_queued_frames=50)
    peer = await peers(server, transmit_silence=False)
    peer.say(constant(4.0, 7))
    peer.press("3", at=0.2)
    await wait_until(lambda: calls and calls[0].frames_received >= 201)
    call = calls[0]
    events = call.drain_events()
    assert sum(isinstance(e, AudioFrame) for e in events) == 50
    assert [e.digit for e in events if isinstance(e, DtmfFrame)] == ["3"]  # DTMF is never dropped
    assert call.frames_dropped_in == 150


# --- server: who may connect -------------------------------------------------------------


async def test_peer_not_in_allowed_hosts_is_refused_before_any_read(audiosocket_server, peers):
    recorder = Recorder()
    server = await audiosocket_server(recorder, allowed_hosts=["127.0.0.2"])
    peer = await peers(server)  # from 127.0.0.1
    assert await within(peer.wait_closed()) in ("connection-lost", "returned")
    await wait_until(lambda: server.stats["refused"] == 1)
    assert recorder.calls == [] and server.stats["calls"] == 0
    assert peer.received == []


async def test_listed_address_and_network_are_served(audiosocket_server, peers):
    recorder = Recorder()
    by_address = await audiosocket_server(recorder, allowed_hosts=["127.0.0.2"])
    by_network = await audiosocket_server(recorder, allowed_hosts=["127.0.0.0/8"])
    await peers(by_address, local_host="127.0.0.2")
    await peers(by_network, local_host="127.0.0.3")
    await wait_until(lambda: len(recorder.calls) == 2)
    assert sorted(c.peer for c in recorder.calls) == ["127.0.0.2", "127.0.0.3"]
    assert by_address.stats["refused"] == by_network.stats["refused"] == 0


def test_allowed_hosts_follow_the_fastagi_rule():
    server = AudioSocketServer(Recorder(), port=0, allowed_hosts=["127.0.0.1", "10.0.0.0/24"])
    assert server.is_allowed("::ffff:10.0.0.77") and server.is_allowed("127.0.0.1")
    assert not server.is_allowed("10.0.1.1") and not server.is_allowed("") and not server.is_allowed("x")


def test_keepalive_interval_must_stay_under_two_seconds():
    with pytest.raises(ValueError):
        AudioSocketServer(Recorder(), keepalive_interval=2.0)


# --- server: load and shutdown -------------------------------------------------------------


async def test_50_concurrent_calls_keep_their_own_audio_and_digits(audiosocket_server, peers):
    async def echo(call):
        async for event in call:
            if isinstance(event, DtmfFrame):
                # answer with a prompt whose samples carry the digit the caller pressed
                await call.play(constant(0.2, 1000 + int(event.digit) * 100 + call_index[call.uuid]))
                call.close()

    call_index: dict[uuid.UUID, int] = {}
    server = await audiosocket_server(echo)
    group = []
    for n in range(50):
        peer = await peers(server)
        call_index[peer.uuid] = n
        group.append(peer)
    for n, peer in enumerate(group):
        peer.say(constant(0.1, n + 1))
        peer.press(str(n % 10))
    outcomes = await within(asyncio.gather(*(peer.wait_closed() for peer in group)))
    assert outcomes == ["returned"] * 50
    for n, peer in enumerate(group):
        voiced = peer.voiced()
        assert len(voiced) == 10
        assert {int(np.frombuffer(r.frame.pcm, "<i2")[0]) for r in voiced} == {1000 + (n % 10) * 100 + n}
        assert peer.violations == []
    await wait_until(lambda: not server.calls and not server.tasks)
    assert server.stats["calls"] == 50 and server.stats["handler_errors"] == 0


async def test_close_lets_calls_finish_then_cancels_the_rest(audiosocket_server, peers):
    async def forever(call):
        call.play(tone(0.1))
        await asyncio.sleep(3600)

    server = await audiosocket_server(forever)
    peer = await peers(server)
    await wait_until(lambda: server.calls)
    await within(server.close(grace=0.2))
    assert await within(peer.wait_closed()) == "returned"
    assert server.calls == {} and not server.tasks
    with pytest.raises(OSError):
        await AsteriskAudioSocket.connect(LOOPBACK, server.port)

