import io
import wave

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from speech.audio import (
    FRAME_BYTES,
    Audio,
    StreamResampler,
    pcm_duration,
    read_wav,
    resample,
    rms,
    samples_to_pcm,
    silence,
    split_frames,
    write_wav,
)


def tone(frequency: float, seconds: float, rate: int, amplitude: int = 10000) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    return Audio.from_samples((amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16), rate)


def test_one_audiosocket_frame_is_20_ms_of_8_khz_audio():
    assert FRAME_BYTES == 320
    assert pcm_duration(FRAME_BYTES, 8000) == pytest.approx(0.020)
    assert len(silence(0.020)) == FRAME_BYTES


def test_wav_written_and_read_back_keeps_rate_and_samples(tmp_path):
    audio = tone(440, 0.25, 8000)
    write_wav(tmp_path / "tone.wav", audio)
    with wave.open(str(tmp_path / "tone.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
    again = read_wav(tmp_path / "tone.wav")
    assert again.rate == 8000
    assert again.pcm == audio.pcm


def test_reading_a_stereo_wav_is_a_clear_error():
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(400))
    buffer.seek(0)
    with pytest.raises(ValueError, match="mono 16-bit"):
        read_wav(buffer)


def test_audio_refuses_half_a_sample():
    with pytest.raises(ValueError, match="even"):
        Audio(b"\x01\x02\x03", 8000)


def test_last_frame_is_padded_with_silence():
    pcm = bytes(range(1, 201)) * 3 + b"\x07" * 100  # 700 bytes
    frames = split_frames(pcm)
    assert [len(frame) for frame in frames] == [320, 320, 320]
    assert frames[2] == pcm[640:] + bytes(260)


def test_no_audio_gives_no_frames():
    assert split_frames(b"") == []


@given(st.binary(max_size=4000).filter(lambda data: len(data) % 2 == 0))
def test_frames_are_whole_and_rebuild_the_audio(pcm):
    frames = split_frames(pcm)
    assert all(len(frame) == FRAME_BYTES for frame in frames)
    assert len(frames) == -(-len(pcm) // FRAME_BYTES)
    joined = b"".join(frames)
    assert joined[: len(pcm)] == pcm
    assert set(joined[len(pcm) :]) <= {0}


@pytest.mark.parametrize(("source", "target"), [(22050, 8000), (22050, 16000), (8000, 16000)])
def test_resampling_keeps_the_duration(source, target):
    audio = tone(300, 1.5, source)
    converted = audio.resampled(target)
    assert converted.rate == target
    assert converted.duration == pytest.approx(audio.duration, abs=1 / target)


def test_resample_round_trip_keeps_duration_and_waveform():
    audio = tone(440, 1.0, 8000)
    back = audio.resampled(16000).resampled(8000)
    assert back.duration == pytest.approx(audio.duration, abs=1 / 8000)
    middle = slice(400, -400)  # away from the filter's edges
    difference = back.samples()[middle].astype(float) - audio.samples()[middle]
    assert np.sqrt(np.mean(difference**2)) < 0.01 * rms(audio.pcm)


def test_downsampling_to_telephone_rate_filters_out_what_8_khz_cannot_carry():
    # a 6 kHz tone would alias to 2 kHz at 8 kHz without the anti-aliasing filter
    high = tone(6000, 0.5, 22050)
    assert rms(resample(high.pcm, 22050, 8000)) < 0.01 * rms(high.pcm)


def test_streamed_resampling_matches_resampling_at_once():
    audio = tone(440, 1.0, 8000)
    stream = StreamResampler(8000, 16000)
    pieces = [stream.process(frame) for frame in split_frames(audio.pcm)]
    streamed = b"".join(pieces) + stream.flush()
    whole = audio.resampled(16000)
    assert len(streamed) == len(whole.pcm)
    difference = np.frombuffer(streamed, "<i2").astype(float) - whole.samples()
    assert np.sqrt(np.mean(difference**2)) < 0.01 * rms(whole.pcm)


def test_rms_measures_level():
    assert rms(b"") == 0.0
    assert rms(silence(0.1)) == 0.0
    assert rms(tone(440, 1.0, 8000, amplitude=10000).pcm) == pytest.approx(10000 / np.sqrt(2), rel=0.01)
    assert rms(samples_to_pcm(np.full(100, -32768))) == pytest.approx(32768)


def test_float_samples_are_scaled_and_clipped_to_16_bits():
    pcm = samples_to_pcm(np.array([0.0, 0.5, 1.0, -1.0, 3.0, -3.0]))
    assert list(np.frombuffer(pcm, "<i2")) == [0, 16384, 32767, -32767, 32767, -32768]


def test_integer_samples_are_clipped_to_16_bits():
    pcm = samples_to_pcm(np.array([1, -1, 40000, -40000], dtype=np.int32))
    assert list(np.frombuffer(pcm, "<i2")) == [1, -1, 32767, -32768]
