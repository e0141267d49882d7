import asyncio
import os
import signal
from pathlib import Path

import pytest

from speech.audio import rms
from speech.tts import DEFAULT_VOICES, SynthesisError, Synthesizer, UnknownVoiceError

SENTENCES = {
    "ru": "Ваша металлическая карта будет готова третьего декабря в отделении на Тверской.",
    "en": "Your metal card will be ready on the third of December at the Tverskaya branch.",
}


@pytest.fixture(scope="module")
def synthesizer():
    with Synthesizer() as synth:
        yield synth


def child_pids() -> set[int]:
    """Live processes whose parent is this test process."""
    me = str(os.getpid())
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def started_with_its_worker(synth: Synthesizer) -> int:
    before = child_pids()
    synth.start()
    (worker,) = child_pids() - before
    return worker


@pytest.mark.parametrize("language", ["ru", "en"])
async def test_sentence_becomes_audible_speech_of_plausible_length(synthesizer, language):
    audio = await synthesizer.synthesize(SENTENCES[language], language)
    assert audio.rate == 22050
    # about 13 words at 160 words per minute: several seconds, not a blip or a runaway
    assert 2.5 < audio.duration < 12.0
    assert rms(audio.pcm) > 500


def test_default_voices_are_russian_and_english(synthesizer):
    assert DEFAULT_VOICES == {"ru": "zle/ru", "en": "gmw/en"}
    assert synthesizer.voice_for("ru") == "zle/ru"
    assert synthesizer.voice_for("en") == "gmw/en"


def test_each_language_speaks_with_its_own_voice(synthesizer):
    # the English voice spells Cyrillic out letter by letter: far longer than Russian speech
    text = "Ваш номер в очереди первый."
    russian = synthesizer.synthesize_sync(text, "ru")
    english = synthesizer.synthesize_sync(text, "en")
    assert english.duration > 1.5 * russian.duration


def test_voices_may_be_given_by_name_or_language_code():
    with Synthesizer({"ru": "Russian", "en": "en-us"}) as synth:
        assert synth.voice_for("ru") == "zle/ru"
        assert synth.voice_for("en") == "gmw/en-us"


def test_faster_rate_gives_shorter_speech(synthesizer):
    with Synthesizer(rate=320) as fast:
        quick = fast.synthesize_sync(SENTENCES["en"], "en")
    normal = synthesizer.synthesize_sync(SENTENCES["en"], "en")
    assert quick.duration < 0.75 * normal.duration


async def test_render_count_counts_each_utterance(synthesizer):
    before = synthesizer.render_count
    await synthesizer.synthesize("Один.", "ru")
    synthesizer.synthesize_sync("Two.", "en")
    assert synthesizer.render_count == before + 2


async def test_concurrent_requests_each_get_their_own_utterance(synthesizer):
    # eSpeak NG varies the waveform slightly from run to run, so tell the answers apart by length
    texts = ["Да.", "Да, конечно.", "Да, конечно, я вас слушаю.", "Да, конечно, я вас слушаю, говорите, пожалуйста."]
    expected = [synthesizer.synthesize_sync(text, "ru").duration for text in texts]
    assert all(longer > 1.2 * shorter for shorter, longer in zip(expected, expected[1:]))
    results = await asyncio.gather(*(synthesizer.synthesize(text, "ru") for text in texts * 2))
    assert [audio.duration for audio in results] == pytest.approx(expected * 2, rel=0.02)


def test_unknown_voice_is_a_clear_error_at_start_up():
    synth = Synthesizer({"ru": "no-such-voice"})
    before = child_pids()
    with pytest.raises(UnknownVoiceError, match=r"'no-such-voice'.*'ru'.*zle/ru \(Russian\)"):
        synth.start()
    assert child_pids() <= before  # the worker did not stay behind


def test_language_without_a_voice_is_a_clear_error(synthesizer):
    with pytest.raises(UnknownVoiceError, match="no voice configured for language 'de'"):
        synthesizer.synthesize_sync("Guten Tag", "de")


def test_empty_text_is_refused(synthesizer):
    with pytest.raises(ValueError, match="empty"):
        synthesizer.synthesize_sync("   ", "en")


def test_synthesis_before_start_is_a_clear_error():
    with pytest.raises(SynthesisError, match="not started"):
        Synthesizer().synthesize_sync("Hello", "en")


async def test_hung_engine_times_out_and_the_next_request_gets_a_fresh_one():
    synth = Synthesizer(timeout=1.0)
    try:
        worker = started_with_its_worker(synth)
        os.kill(worker, signal.SIGSTOP)  # the engine stops answering, as a hung library call would
        with pytest.raises(SynthesisError, match="did not answer within 1 s"):
            await synth.synthesize("Hello", "en")
        assert worker not in child_pids()
        audio = await synth.synthesize("Hello", "en")
        assert rms(audio.pcm) > 500
    finally:
        synth.close()


async def test_engine_killed_between_requests_is_replaced_transparently():
    synth = Synthesizer()
    try:
        worker = started_with_its_worker(synth)
        os.kill(worker, signal.SIGKILL)
        audio = await synth.synthesize("Still here.", "en")
        assert rms(audio.pcm) > 500
        assert worker not in child_pids()
    finally:
        synth.close()


def test_closed_synthesizer_refuses_work_and_can_start_again():
    synth = Synthesizer()
    before = child_pids()
    synth.start()
    synth.close()
    assert child_pids() <= before
    with pytest.raises(SynthesisError, match="not started"):
        synth.synthesize_sync("Hello", "en")
    synth.start()
    try:
        assert rms(synth.synthesize_sync("Hello", "en").pcm) > 500
    finally:
        synth.close()
