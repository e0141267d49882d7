"""Recognition with the real Korean Vosk model on real (eSpeak NG) Korean speech.

Speech is fed as AudioSocket delivers it: 8 kHz signed 16-bit little-endian
in 20 ms frames, after leading silence and followed by trailing silence, on a
faintly noisy line.  Times asserted are positions on the call's audio clock,
never wall-clock durations.

eSpeak NG's Korean is rough; these words are the ones the model hears
reliably from it in the grammars below (계좌, 둘, 셋, 카드, 대출, 취소 are
confused with other words; 맞아요 is not in the model's vocabulary).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import speech.asr
from speech.asr import (
    Endpointing,
    Final,
    Grammar,
    GrammarError,
    GrammarsUnsupportedError,
    Model,
    ModelError,
    NoInput,
    Partial,
    RecognitionStream,
    Recognizer,
    SpeechStarted,
    UnknownWordsError,
    check_grammar,
    check_vocabulary,
    inspect_model,
    load_model,
    recognition_executor,
)
from speech.audio import FRAME_BYTES, TELEPHONE_RATE, samples_to_pcm, split_frames
from speech.vosk_models import installed_model_path, installed_models

CONFIRM = Grammar(["네", "아니요", "상담원"], name="confirm")  # yes / no / operator
MENU = Grammar(["예약", "해지", "상담원 연결"], name="menu")  # booking / cancel a contract / connect me to an operator
LEAD = 0.5  # seconds of silence before the word
TRAIL = 1.0


def run_turn(
    stream: RecognitionStream, grammar: Grammar | None, pcm: bytes, frame_bytes: int = FRAME_BYTES, **listen
) -> list[tuple[float, object]]:
    """Listen, feed `pcm` frame by frame until the turn ends: [(audio time at the frame's end, event)]."""
    stream.listen(grammar, **listen)
    events = []
    for index, frame in enumerate(split_frames(pcm, frame_bytes)):
        at = round((index + 1) * frame_bytes / (2 * TELEPHONE_RATE), 3)
        events.extend((at, event) for event in stream.feed(frame))
        if not stream.is_listening:
            break
    return events


def finals(events) -> list[Final]:
    return [event for _, event in events if isinstance(event, Final)]


def kinds(events) -> list[str]:
    return [type(event).__name__ for _, event in events]


@pytest.fixture
def stream(korean_model):
    stream = RecognitionStream(korean_model)
    yield stream
    stream.close()


# ---------------------------------------------------------------- the model


def test_korean_model_package_is_found_and_listens_at_16_khz(korean_model):
    path = installed_model_path("ko")
    assert (path / "am" / "final.mdl").is_file()
    assert installed_models()["ko"] == path
    assert korean_model.sample_rate == 16000  # its mfcc.conf names no rate: Kaldi's default
    assert korean_model.supports_grammars  # a small model: graph/HCLr.fst + graph/Gr.fst


def test_loading_a_model_again_returns_the_one_already_loaded(korean_model):
    assert load_model(installed_model_path("ko")) is korean_model


def test_missing_model_package_is_a_model_error():
    with pytest.raises(ModelError, match="no Vosk model package 'vosk_model_xx' is installed"):
        installed_model_path("xx")


def test_wrong_model_path_is_a_model_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match=re.escape(f"speech model {missing}: no such directory")):
        load_model(missing)
    with pytest.raises(ModelError, match=re.escape(f"speech model {tmp_path}: not a Vosk model directory")):
        load_model(tmp_path)


def test_broken_model_files_are_a_model_error_naming_the_path(tmp_path):
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"not a Kaldi model")
    with pytest.raises(ModelError, match=re.escape(f"speech model {tmp_path}: Vosk could not load it")) as caught:
        load_model(tmp_path)
    assert caught.value.path == str(tmp_path)


def fake_model_directory(path: Path, *, graph: list[str], mfcc: str | None) -> Path:
    (path / "am").mkdir(parents=True)
    (path / "am" / "final.mdl").write_bytes(b"")
    (path / "graph").mkdir()
    for name in graph:
        (path / "graph" / name).write_bytes(b"")
    if mfcc is not None:
        (path / "conf").mkdir()
        (path / "conf" / "mfcc.conf").write_text(mfcc)
    return path


def test_sample_rate_is_read_from_mfcc_conf(tmp_path):
    narrowband = fake_model_directory(
        tmp_path / "narrowband", graph=["HCLr.fst", "Gr.fst"], mfcc="--use-energy=false\n--sample-frequency=8000\n"
    )
    default = fake_model_directory(tmp_path / "default", graph=["HCLr.fst", "Gr.fst"], mfcc=None)
    assert inspect_model(narrowband).sample_rate == 8000
    assert inspect_model(default).sample_rate == 16000


def test_a_model_with_a_static_graph_does_not_support_grammars(tmp_path):
    big = fake_model_directory(tmp_path / "big", graph=["HCLG.fst"], mfcc="")
    both = fake_model_directory(tmp_path / "both", graph=["HCLG.fst", "HCLr.fst", "Gr.fst"], mfcc="")
    small = fake_model_directory(tmp_path / "small", graph=["HCLr.fst", "Gr.fst"], mfcc="")
    assert not inspect_model(big).supports_grammars
    assert not inspect_model(both).supports_grammars  # Vosk decodes with HCLG.fst when it is there
    assert inspect_model(small).supports_grammars


def test_grammar_on_a_model_without_runtime_grammars_is_a_clear_error(korean_model):
    static = Model(dataclasses.replace(korean_model.info, supports_grammars=False), korean_model.vosk_model)
    with pytest.raises(GrammarsUnsupportedError, match="grammar 'confirm': .* does not support runtime grammars"):
        check_grammar(static, CONFIRM)
    with pytest.raises(GrammarsUnsupportedError):
        RecognitionStream(static).listen(CONFIRM)


# ---------------------------------------------------------------- grammars


def test_model_vocabulary_is_looked_up_word_by_word(korean_model):
    assert korean_model.knows("상담원")
    assert korean_model.knows("아니요")
    assert not korean_model.knows("맞아요")
    assert not korean_model.knows("[unk]")  # this model has no garbage word


def test_words_outside_the_vocabulary_are_a_configuration_error_naming_them(korean_model, stream):
    grammar = Grammar(["네", "맞아요", "상담원 xyzzy"], name="confirm-typo")
    with pytest.raises(UnknownWordsError, match="grammar 'confirm-typo': word.* not in the vocabulary") as caught:
        check_vocabulary(korean_model, grammar)
    assert set(caught.value.words) == {"맞아요", "xyzzy"}
    assert "맞아요" in str(caught.value) and "xyzzy" in str(caught.value)
    with pytest.raises(UnknownWordsError):
        stream.listen(grammar)
    assert not stream.is_listening


def test_grammar_of_known_words_passes_the_checks(korean_model):
    check_grammar(korean_model, CONFIRM)
    check_grammar(korean_model, MENU)


def test_grammar_refuses_empty_phrases_and_a_bare_string():
    with pytest.raises(GrammarError, match="has no phrases"):
        Grammar([], name="empty")
    with pytest.raises(GrammarError, match="a phrase is empty"):
        Grammar(["네", "  "], name="blank")
    with pytest.raises(TypeError, match="list of strings"):
        Grammar("네", name="string")


def test_grammar_goes_to_vosk_as_utf8_words_not_escapes():
    grammar = Grammar(["네", "상담원  연결", "네"], name="g")
    assert grammar.phrases == ("네", "상담원 연결")
    # Vosk does not decode \u escapes: it would drop the word and never hear it
    assert grammar.vosk_json() == '["네", "상담원 연결"]'
    assert grammar.vosk_json(with_unknown_word=True) == '["네", "상담원 연결", "[unk]"]'


def test_matching_finds_the_phrase_and_prefers_the_most_confident_one():
    grammar = Grammar(["Yes", "no", "talk to someone"], name="g")
    assert grammar.match(["yes"], [0.9]) == (("Yes",), "Yes", 0.9)
    assert grammar.match(["talk", "to", "someone"], [1.0, 0.8, 0.9]) == (
        ("talk to someone",),
        "talk to someone",
        pytest.approx(0.9),
    )
    assert grammar.match(["no", "talk", "to", "someone"], [0.6, 1, 1, 1]) == (
        ("no", "talk to someone"),
        "talk to someone",
        1.0,
    )
    assert grammar.match(["yes", "no"], [1.0, 1.0])[1] == "no"  # a tie goes to the later phrase
    assert grammar.match(["[unk]", "no"], [0.5, 0.7]) == (("no",), "no", 0.7)
    assert grammar.match(["maybe"]) == ((), None, None)


# ---------------------------------------------------------------- real speech


@pytest.mark.parametrize(
    ("grammar", "phrase"),
    [(CONFIRM, "네"), (CONFIRM, "아니요"), (CONFIRM, "상담원"), (MENU, "예약"), (MENU, "해지"), (MENU, "상담원 연결")],
)
def test_spoken_word_gives_its_grammar_phrase(stream, korean_speech, line, grammar, phrase):
    events = run_turn(stream, grammar, line(LEAD, korean_speech(phrase), TRAIL))
    (final,) = finals(events)
    assert final.phrase == phrase
    assert final.text == phrase
    assert final.grammar == grammar.name
    assert 0.0 < final.confidence <= 1.0
    assert final.endpoint == "silence"
    assert LEAD - 0.1 <= final.speech_start < final.speech_end
    assert final.decode_seconds > 0
    assert not stream.is_listening


def test_speech_start_is_reported_while_the_caller_is_still_speaking(stream, korean_speech, line):
    word = korean_speech("상담원")
    events = run_turn(stream, CONFIRM, line(LEAD, word, TRAIL))
    assert kinds(events)[0] == "SpeechStarted" and kinds(events)[-1] == "Final"
    reported_at, started = events[0]
    assert started.at == pytest.approx(LEAD, abs=0.1)
    word_end = LEAD + len(word) / (2 * TELEPHONE_RATE)
    assert reported_at < LEAD + 0.2 < word_end  # early enough to stop a prompt (barge-in)


def test_result_arrives_soon_after_the_caller_stops(stream, korean_speech, line):
    events = run_turn(stream, CONFIRM, line(LEAD, korean_speech("아니요"), 3.0))
    final_at, final = events[-1]
    assert isinstance(final, Final)
    # on the audio clock: the configured silence after the last loud frame, not Vosk's own 0.5 s+ endpoint
    assert final_at - final.speech_end == pytest.approx(stream.endpointing.silence_after_speech, abs=0.03)


def test_partial_results_come_before_the_final_one(stream, korean_speech, line):
    events = run_turn(stream, MENU, line(LEAD, korean_speech("상담원 연결"), TRAIL))
    partials = [event for _, event in events if isinstance(event, Partial)]
    assert partials and all(partial.text for partial in partials)
    assert kinds(events)[-1] == "Final"


def test_silence_only_gives_no_input_after_the_timeout(stream, line):
    events = run_turn(stream, CONFIRM, line(3.0), no_input_timeout=2.0)
    assert events == [(2.0, NoInput(2.0))]
    assert not stream.is_listening
    assert stream.feed(line(0.5)) == []  # the turn is over


def test_no_input_timeout_comes_from_endpointing_unless_given(korean_model, line):
    stream = RecognitionStream(korean_model, endpointing=Endpointing(no_input_timeout=1.0))
    assert run_turn(stream, CONFIRM, line(2.0)) == [(1.0, NoInput(1.0))]
    assert run_turn(stream, CONFIRM, line(2.0), no_input_timeout=None) == []
    assert stream.is_listening  # still waiting: no timeout this turn


def test_a_noise_burst_does_not_end_the_turn(stream, korean_speech, line):
    burst = samples_to_pcm(np.random.default_rng(3).normal(0, 3000, 800).astype(np.int32))  # 100 ms click
    events = run_turn(stream, CONFIRM, line(LEAD, burst, 0.8, korean_speech("아니요"), TRAIL))
    assert [k for k in kinds(events) if k != "Partial"] == ["SpeechStarted", "SpeechStarted", "Final"]
    assert finals(events)[0].phrase == "아니요"


def test_speech_longer_than_the_maximum_is_cut_off(korean_model, korean_speech, line):
    stream = RecognitionStream(korean_model, endpointing=Endpointing(max_utterance=1.5))
    talk = korean_speech("네 아니요 상담원 네 아니요 상담원 네 아니요")
    events = run_turn(stream, CONFIRM, line(LEAD, talk, TRAIL))
    (final,) = finals(events)
    assert final.endpoint == "max_length"
    assert final.speech_end - final.speech_start == pytest.approx(1.5, abs=0.05)
    assert final.text and set(final.phrases) <= set(CONFIRM.phrases)


@pytest.mark.parametrize("frame_ms", [10, 60, 1000])
def test_frames_of_other_sizes_give_the_same_result(stream, korean_speech, line, frame_ms):
    frame_bytes = TELEPHONE_RATE * frame_ms // 1000 * 2
    events = run_turn(stream, MENU, line(LEAD, korean_speech("해지"), TRAIL), frame_bytes)
    assert finals(events)[0].phrase == "해지"


def test_one_recognizer_serves_many_turns_and_grammar_changes(korean_model, korean_speech, line, monkeypatch):
    created = []
    real = speech.asr.vosk.KaldiRecognizer

    def counting(*args):
        created.append(args)
        return real(*args)

    monkeypatch.setattr(speech.asr.vosk, "KaldiRecognizer", counting)
    stream = RecognitionStream(korean_model)
    script = [
        (CONFIRM, "네"),
        (MENU, "해지"),
        (MENU, "예약"),
        (CONFIRM, "아니요"),
        (CONFIRM, "상담원"),
        (MENU, "상담원 연결"),
        (CONFIRM, "네"),
    ]
    heard = []
    for grammar, phrase in script:
        (final,) = finals(run_turn(stream, grammar, line(LEAD, korean_speech(phrase), TRAIL)))
        heard.append((final.grammar, final.phrase))
    assert heard == [(grammar.name, phrase) for grammar, phrase in script]
    assert len(created) == 1  # grammar changes went through SetGrammar on the same recognizer


def test_a_turn_abandoned_in_mid_word_leaves_the_next_one_clean(stream, korean_speech, line):
    word = korean_speech("상담원")
    run_turn(stream, CONFIRM, line(LEAD, word[: len(word) // 4 * 2]))  # ends in mid-word, still listening
    assert stream.is_in_speech
    events = run_turn(stream, MENU, line(LEAD, korean_speech("예약"), TRAIL))  # SetGrammar mid-utterance would abort
    assert finals(events)[0].phrase == "예약"


def test_free_speech_and_back_to_a_grammar(stream, korean_speech, line):
    events = run_turn(stream, None, line(LEAD, korean_speech("상담원"), TRAIL))
    (final,) = finals(events)
    assert final.grammar is None and final.phrase is None and final.text
    assert finals(run_turn(stream, CONFIRM, line(LEAD, korean_speech("아니요"), TRAIL)))[0].phrase == "아니요"


def test_closed_stream_ignores_audio_and_cannot_listen(stream, line):
    stream.close()
    assert stream.feed(line(0.1)) == []
    with pytest.raises(RuntimeError, match="closed"):
        stream.listen(CONFIRM)


def test_endpointing_settings_are_checked():
    with pytest.raises(ValueError, match="silence_after_speech"):
        Endpointing(silence_after_speech=0)
    with pytest.raises(ValueError, match="no_input_timeout"):
        Endpointing(no_input_timeout=-1)


# ---------------------------------------------------------------- threads and asyncio


WORDS = [(CONFIRM, "네"), (CONFIRM, "아니요"), (CONFIRM, "상담원"), (MENU, "예약"), (MENU, "해지"), (MENU, "상담원 연결")]


def test_streams_on_a_thread_pool_share_the_model_and_stay_independent(korean_model, korean_speech, line):
    calls = [(WORDS[i:] + WORDS[:i])[:4] for i in range(len(WORDS))]  # each call its own order of words
    audio = {phrase: line(LEAD, korean_speech(phrase), TRAIL) for _, phrase in WORDS}

    def call(script):
        stream = RecognitionStream(korean_model)
        try:
            return [finals(run_turn(stream, grammar, audio[phrase]))[0].phrase for grammar, phrase in script]
        finally:
            stream.close()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        heard = list(pool.map(call, calls))
    assert heard == [[phrase for _, phrase in script] for script in calls]


@pytest.fixture(scope="module")
def executor():
    with recognition_executor() as pool:
        yield pool


async def feed_all(recognizer: Recognizer, pcm: bytes) -> list:
    events = []
    for frame in split_frames(pcm):
        events.extend(await recognizer.feed(frame))
        if not recognizer.is_listening:
            break
    return events


async def test_recognizer_gives_events_to_asyncio(korean_model, korean_speech, line, executor):
    recognizer = Recognizer(korean_model, executor=executor)
    await recognizer.listen(CONFIRM)
    events = await feed_all(recognizer, line(LEAD, korean_speech("아니요"), TRAIL))
    assert isinstance(events[0], SpeechStarted)
    assert isinstance(events[-1], Final) and events[-1].phrase == "아니요"
    await recognizer.listen(MENU, no_input_timeout=1.0)
    assert await feed_all(recognizer, line(2.0)) == [NoInput(1.0)]
    await recognizer.close()


async def test_concurrent_recognizers_on_the_pool_give_independent_results(
    korean_model, korean_speech, line, executor
):
    recognizers = [Recognizer(korean_model, executor=executor) for _ in WORDS]
    for recognizer, (grammar, _) in zip(recognizers, WORDS):
        await recognizer.listen(grammar)
    # the calls' frames arrive interleaved, as from simultaneous AudioSocket connections
    audio = [
        split_frames(line(LEAD + 0.1 * i, korean_speech(phrase), TRAIL)) for i, (_, phrase) in enumerate(WORDS)
    ]
    events: list[list] = [[] for _ in WORDS]

    async def call(index: int) -> None:
        for frame in audio[index]:
            events[index].extend(await recognizers[index].feed(frame))
            await asyncio.sleep(0)

    await asyncio.gather(*(call(i) for i in range(len(WORDS))))
    heard = [[event.phrase for event in call_events if isinstance(event, Final)] for call_events in events]
    assert heard == [[phrase] for _, phrase in WORDS]
    await asyncio.gather(*(recognizer.close() for recognizer in recognizers))


class CountingExecutor(ThreadPoolExecutor):
    """A one-thread pool that counts its jobs and can hold them at a gate."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs = 0
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        self.jobs += 1

        def gated():
            self.holding.set()
            self.gate.wait(10)
            return fn(*args, **kwargs)

        return super().submit(gated)


async def test_silence_is_handled_on_the_event_loop_without_the_pool(korean_model, line):
    with CountingExecutor() as pool:
        recognizer = Recognizer(korean_model, executor=pool)
        await recognizer.listen(CONFIRM)
        before = pool.jobs
        await feed_all(recognizer, line(2.0))
        assert pool.jobs == before  # waiting for speech costs an energy measurement per frame, no thread hop


async def test_a_cancelled_feed_loses_no_events(korean_model, korean_speech, line):
    pcm = line(LEAD, korean_speech("네"), TRAIL)
    frames = split_frames(pcm)
    probe = RecognitionStream(korean_model)
    probe.listen(CONFIRM)
    start_frame = next(i for i, frame in enumerate(frames) if probe.feed(frame))  # the frame that starts speech
    with CountingExecutor() as pool:
        recognizer = Recognizer(korean_model, executor=pool)
        await recognizer.listen(CONFIRM)
        for frame in frames[:start_frame]:
            assert await recognizer.feed(frame) == []
        pool.gate.clear()
        pool.holding.clear()
        stuck = asyncio.ensure_future(recognizer.feed(frames[start_frame]))
        await asyncio.to_thread(pool.holding.wait, 10)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        pool.gate.set()
        events = []
        for frame in frames[start_frame + 1 :]:
            events.extend(await recognizer.feed(frame))
            if not recognizer.is_listening:
                break
        assert isinstance(events[0], SpeechStarted)  # carried over from the cancelled call
        assert isinstance(events[-1], Final) and events[-1].phrase == "네"
        await recognizer.close()
