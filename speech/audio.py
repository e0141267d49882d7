"""Mono 16-bit PCM audio: WAV files, resampling, frames, duration, energy.

Everything in the speech path is mono signed 16-bit little-endian PCM: eSpeak
NG renders at 22 050 Hz, Asterisk plays 8 kHz (`.wav`, `.sln`) or 16 kHz
(`.sln16`) prompts, AudioSocket carries 8 kHz in 20 ms frames and Vosk's
small models listen at 16 kHz.  `Audio` pairs such bytes with their sample
rate; the functions below work on plain `bytes` where a caller (an AudioSocket
frame, a recogniser chunk) has nothing more.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soxr

SAMPLE_WIDTH = 2  # bytes per sample: signed 16-bit
TELEPHONE_RATE = 8000
RECOGNISER_RATE = 16000
FRAME_MS = 20
FRAME_BYTES = TELEPHONE_RATE * FRAME_MS // 1000 * SAMPLE_WIDTH  # 320: one AudioSocket frame

_INT16_LE = np.dtype("<i2")
_QUALITY = "HQ"


@dataclass(frozen=True, repr=False)
class Audio:
    """Mono signed 16-bit little-endian PCM and its sample rate in Hz."""

    pcm: bytes
    rate: int

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"sample rate must be positive, got {self.rate}")
        if len(self.pcm) % SAMPLE_WIDTH:
            raise ValueError(f"16-bit PCM needs an even byte count, got {len(self.pcm)}")

    def __repr__(self) -> str:
        return f"Audio(rate={self.rate}, duration={self.duration:.3f}s)"

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return pcm_duration(self.pcm, self.rate)

    def samples(self) -> np.ndarray:
        """The samples as a read-only int16 array (no copy)."""
        return pcm_to_samples(self.pcm)

    @classmethod
    def from_samples(cls, samples: np.ndarray, rate: int) -> Audio:
        return cls(samples_to_pcm(samples), rate)

    def resampled(self, rate: int) -> Audio:
        """The same sound at another sample rate (soxr, anti-aliased)."""
        return Audio(resample(self.pcm, self.rate, rate), rate)


def pcm_to_samples(pcm: bytes) -> np.ndarray:
    """View 16-bit little-endian PCM as a read-only int16 array."""
    return np.frombuffer(pcm, dtype=_INT16_LE)


def samples_to_pcm(samples: np.ndarray) -> bytes:
    """Encode samples as 16-bit little-endian PCM.

    Integer arrays are taken as 16-bit sample values; floating-point arrays as
    full scale -1.0 .. 1.0.  Values outside the range are clipped.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"mono audio needs a 1-D array, got shape {samples.shape}")
    if np.issubdtype(samples.dtype, np.floating):
        samples = np.rint(samples * 32767.0)
    return np.clip(samples, -32768, 32767).astype(_INT16_LE).tobytes()


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole buffer of 16-bit PCM (22 050 -> 8 000, 8 000 -> 16 000, ...)."""
    if from_rate == to_rate:
        return pcm
    out = soxr.resample(pcm_to_samples(pcm), from_rate, to_rate, quality=_QUALITY)
    return out.astype(_INT16_LE, copy=False).tobytes()


class StreamResampler:
    """Resample a stream chunk by chunk, e.g. 8 kHz call audio for a 16 kHz recogniser.

    Resampling each 20 ms frame on its own would click at every frame edge;
    this keeps the filter state between chunks.  The first chunks return
    little or nothing (the filter's delay); `flush()` returns the rest.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality=_QUALITY)

    def process(self, pcm: bytes) -> bytes:
        return self._resample(pcm, last=False)

    def flush(self) -> bytes:
        return self._resample(b"", last=True)

    def _resample(self, pcm: bytes, *, last: bool) -> bytes:
        samples = pcm_to_samples(pcm).astype(np.int16, copy=False)
        out = self._stream.resample_chunk(samples, last=last)
        return out.astype(_INT16_LE, copy=False).tobytes()


def _wave_file(file: str | os.PathLike | BinaryIO) -> str | BinaryIO:
    # the wave module opens only str paths by itself; Path objects would be taken for files
    return os.fspath(file) if isinstance(file, os.PathLike) else file


def read_wav(source: str | os.PathLike | BinaryIO) -> Audio:
    """Read a mono 16-bit PCM WAV file; anything else is a ValueError."""
    with wave.open(_wave_file(source), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH:
            raise ValueError(
                f"expected mono 16-bit WAV, got {wav.getnchannels()} channel(s) "
                f"of {8 * wav.getsampwidth()} bits"
            )
        return Audio(wav.readframes(wav.getnframes()), wav.getframerate())


def write_wav(target: str | os.PathLike | BinaryIO, audio: Audio) -> None:
    """Write `audio` as a mono 16-bit PCM WAV file (Asterisk's `.wav` at 8 kHz)."""
    with wave.open(_wave_file(target), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(audio.rate)
        wav.writeframes(audio.pcm)


# Bytes per second of the headerless formats Asterisk plays, by extension (GSM: 33 bytes per 20 ms).
_RAW_RATES = {".sln": 16000, ".raw": 16000, ".sln16": 32000, ".ulaw": 8000, ".alaw": 8000, ".gsm": 1650}


def sound_seconds(name: str | os.PathLike) -> float | None:
    """How long Asterisk plays the sound `name` (a path without extension, as STREAM FILE
    takes it), from the first of its files found; None when there is none or it is unreadable."""
    base = os.fspath(name)
    wav = base + ".wav"
    if os.path.isfile(wav):
        try:
            with wave.open(wav, "rb") as file:
                return file.getnframes() / file.getframerate()
        except (OSError, EOFError, wave.Error, ZeroDivisionError):
            return None
    for extension, per_second in _RAW_RATES.items():
        try:
            return os.path.getsize(base + extension) / per_second
        except OSError:
            continue
    return None


def pcm_duration(pcm: bytes | int, rate: int) -> float:
    """Seconds of 16-bit mono PCM, given the bytes or their count."""
    size = pcm if isinstance(pcm, int) else len(pcm)
    return size / (SAMPLE_WIDTH * rate)


def silence(seconds: float, rate: int = TELEPHONE_RATE) -> bytes:
    """Digital silence of the given length (rounded to whole samples)."""
    return bytes(SAMPLE_WIDTH * round(seconds * rate))


def split_frames(pcm: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Cut PCM into equal frames, padding the last one with silence.

    The default is one AudioSocket frame: 20 ms of 8 kHz audio, 320 bytes.
    """
    if frame_bytes <= 0 or frame_bytes % SAMPLE_WIDTH:
        raise ValueError(f"frame size must be a positive even byte count, got {frame_bytes}")
    frames = [pcm[i : i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]
    if frames and len(frames[-1]) < frame_bytes:
        frames[-1] = frames[-1].ljust(frame_bytes, b"\0")
    return frames


def rms(pcm: bytes) -> float:
    """Root-mean-square level in sample units: 0 for silence, at most 32 768.

    A cheap energy measure for voice-activity decisions; empty input is 0.
    """
    samples = pcm_to_samples(pcm)
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
