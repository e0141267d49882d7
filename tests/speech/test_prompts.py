import asyncio
import time
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from speech.audio import read_wav, rms
from speech.prompts import PromptCache
from speech.tts import SynthesisError, Synthesizer, UnknownVoiceError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VOICES = {"ru": "zle/ru", "en": "gmw/en", "en-us": "gmw/en-us", "english": "English (Great Britain)"}
GREETING = ("Здравствуйте! Вы позвонили в контактный центр.", "ru")


@pytest.fixture(scope="module")
def synthesizer():
    with Synthesizer(VOICES) as synth:
        yield synth


@pytest.fixture
def cache(tmp_path, synthesizer):
    return PromptCache(tmp_path / "prompts", synthesizer)


def renders(synthesizer: Synthesizer):
    """How many utterances the engine rendered since the last call."""
    count = synthesizer.render_count
    return lambda: synthesizer.render_count - count


def leftovers(directory: Path) -> list[str]:
    """Anything in the prompt directory that is not a finished prompt file."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


async def test_wav8_prompt_is_8_khz_mono_16_bit_speech(cache):
    path = await cache.path_for(*GREETING)
    assert path.suffix == ".wav"
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getcomptype()) == (8000, 1, 2, "NONE")
        assert 1.5 < wav.getnframes() / 8000 < 10
    assert rms(read_wav(path).pcm) > 500


async def test_sln_and_sln16_sizes_match_the_prompt_duration(cache):
    wav8, sln, sln16 = await asyncio.gather(*(cache.path_for(*GREETING, fmt=fmt) for fmt in ("wav8", "sln", "sln16")))
    duration = read_wav(wav8).duration
    assert (sln.suffix, sln16.suffix) == (".sln", ".sln16")
    assert sln.stat().st_size == pytest.approx(duration * 8000 * 2, abs=4)
    assert sln16.stat().st_size == pytest.approx(duration * 16000 * 2, abs=8)


async def test_formats_of_one_prompt_share_one_asterisk_name(cache, synthesizer):
    rendered = renders(synthesizer)
    paths = await asyncio.gather(*(cache.path_for(*GREETING, fmt=fmt) for fmt in ("wav8", "sln", "sln16")))
    assert len({cache.name_for_asterisk(path) for path in paths}) == 1
    assert rendered() == 1  # one synthesis for all three files


async def test_name_for_asterisk_is_the_path_without_extension(tmp_path, synthesizer):
    local = PromptCache(tmp_path / "prompts", synthesizer)
    path = await local.path_for("Hello.", "en")
    assert local.name_for_asterisk(path) == str(path)[: -len(".wav")]
    mounted = PromptCache(tmp_path / "prompts", synthesizer, asterisk_directory="/var/lib/asterisk/sounds/ivr")
    assert mounted.name_for_asterisk(path) == f"/var/lib/asterisk/sounds/ivr/{path.stem}"
    relative = PromptCache(tmp_path / "prompts", synthesizer, asterisk_directory="ivr")
    assert relative.name_for_asterisk(path) == f"ivr/{path.stem}"


async def test_cached_prompt_is_not_synthesised_again(cache, synthesizer):
    first = await cache.path_for(*GREETING)
    rendered = renders(synthesizer)
    again = await cache.path_for(*GREETING)
    assert again == first
    assert rendered() == 0


async def test_whitespace_does_not_make_a_new_prompt(cache):
    assert await cache.path_for("Hello,  your card\n is ready.", "en") == await cache.path_for(
        " Hello, your card is ready. ", "en"
    )


async def test_voice_decides_the_file_not_the_language_name(cache):
    british = await cache.path_for("Hello.", "en")
    assert await cache.path_for("Hello.", "english") == british  # same voice, another name
    assert await cache.path_for("Hello.", "en-us") != british


async def test_different_rate_gives_a_different_file(cache, tmp_path):
    normal = await cache.path_for(*GREETING)
    with Synthesizer(VOICES, rate=200) as fast:
        faster = await PromptCache(cache.directory, fast).path_for(*GREETING)
    assert faster != normal
    assert read_wav(faster).duration < read_wav(normal).duration


async def test_concurrent_requests_for_a_missing_prompt_synthesise_once(cache, synthesizer):
    rendered = renders(synthesizer)
    paths = await asyncio.gather(*(cache.path_for("Пожалуйста, подождите.", "ru") for _ in range(20)))
    assert len(set(paths)) == 1
    assert rendered() == 1
    assert leftovers(cache.directory) == []


async def test_a_caller_hanging_up_does_not_cancel_the_render_for_others(cache):
    text = "Соединяю с оператором."
    first = asyncio.ensure_future(cache.path_for(text, "ru"))
    second = asyncio.ensure_future(cache.path_for(text, "ru"))
    await asyncio.sleep(0)
    first.cancel()
    path = await second
    assert read_wav(path).rate == 8000


async def test_two_caches_sharing_a_directory_reuse_each_others_files(tmp_path, synthesizer):
    one = PromptCache(tmp_path / "shared", synthesizer)
    other = PromptCache(tmp_path / "shared", synthesizer)
    path = await one.path_for(*GREETING)
    rendered = renders(synthesizer)
    assert await other.path_for(*GREETING) == path
    assert rendered() == 0


OTHER_PROCESS = """
import asyncio, sys
from speech.prompts import PromptCache
from speech.tts import Synthesizer

async def main(directory, texts):
    with Synthesizer() as synth:
        cache = PromptCache(directory, synth)
        print("ready", flush=True)
        sys.stdin.readline()
        paths = await asyncio.gather(*(cache.path_for(text, "ru", fmt) for text in texts for fmt in ("wav8", "sln")))
        print("\\n".join(str(path) for path in paths), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


async def test_two_processes_rendering_into_one_directory_leave_only_whole_files(tmp_path):
    directory = tmp_path / "shared"
    texts = [f"Ваш номер в очереди {n}." for n in range(1, 9)]
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, str(directory), *texts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        with Synthesizer() as synth:
            cache = PromptCache(directory, synth)
            assert other.stdout.readline().strip() == "ready"
            other.stdin.write("go\n")
            other.stdin.flush()  # both render the same prompts at the same time from here on
            ours = await asyncio.gather(*(cache.path_for(text, "ru", fmt) for text in texts for fmt in ("wav8", "sln")))
        theirs, _ = other.communicate(timeout=60)
    finally:
        other.kill()
    assert other.returncode == 0
    assert [Path(line) for line in theirs.split()] == ours  # same content address in both processes
    assert sorted(directory.iterdir()) == sorted(ours)  # nothing else: no temporary files
    for path in ours:
        if path.suffix == ".wav":
            audio = read_wav(path)
            assert audio.rate == 8000 and audio.duration > 0.5
        else:
            assert path.stat().st_size > 8000 and path.stat().st_size % 2 == 0


async def test_prompt_files_are_readable_by_asterisk_running_as_another_user(cache):
    path = await cache.path_for(*GREETING)
    assert path.stat().st_mode & 0o044 == 0o044


async def test_pcm8_is_the_sln_file_and_is_then_served_from_memory(cache, synthesizer):
    pcm = await cache.pcm8(*GREETING)
    sln = await cache.path_for(*GREETING, fmt="sln")
    assert pcm == sln.read_bytes()
    sln.unlink()  # the memory copy no longer needs the file
    rendered = renders(synthesizer)
    assert await cache.pcm8(*GREETING) == pcm
    assert rendered() == 0


async def test_memory_keeps_only_the_most_recent_prompts(tmp_path, synthesizer):
    cache = PromptCache(tmp_path / "prompts", synthesizer, memory_items=1)
    await cache.pcm8("Один.", "ru")
    await cache.pcm8("Два.", "ru")
    (await cache.path_for("Один.", "ru", "sln")).unlink()
    rendered = renders(synthesizer)
    await cache.pcm8("Два.", "ru")  # still in memory
    assert rendered() == 0
    await cache.pcm8("Один.", "ru")  # pushed out of memory and its file gone: rendered again
    assert rendered() == 1


async def test_prerender_renders_every_format_asked_for(cache, synthesizer):
    prompts = [GREETING, ("Press one for English.", "en")]
    await cache.prerender(prompts, formats=("wav8", "sln16", "pcm8"))
    rendered = renders(synthesizer)
    for text, language in prompts:
        assert (await cache.path_for(text, language, "wav8")).exists()
        assert (await cache.path_for(text, language, "sln16")).exists()
        await cache.pcm8(text, language)
    assert rendered() == 0


async def test_prerender_renders_the_good_prompts_and_reports_the_bad_ones(cache):
    with pytest.raises(ExceptionGroup) as failures:
        await cache.prerender([GREETING, ("Guten Tag.", "de")])
    assert [type(exc) for exc in failures.value.exceptions] == [UnknownVoiceError]
    assert "'de'" in str(failures.value.exceptions[0])
    assert len(list(cache.directory.glob("*.wav"))) == 1


async def test_failed_synthesis_leaves_nothing_behind_and_is_retried_later(tmp_path):
    synth = Synthesizer(VOICES)
    synth.start()
    synth.close()  # the engine is down, as after a crash that is not yet recovered
    cache = PromptCache(tmp_path / "prompts", synth)
    with pytest.raises(SynthesisError):
        await cache.path_for(*GREETING)
    assert list(cache.directory.iterdir()) == []
    synth.start()
    try:
        assert (await cache.path_for(*GREETING)).exists()
    finally:
        synth.close()


async def test_unknown_format_is_a_clear_error(cache):
    with pytest.raises(ValueError, match="unknown prompt format 'mp3'"):
        await cache.path_for("Hello.", "en", "mp3")


# -- the directory is bounded ---------------------------------------------------------------------


def _aged(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_prune_removes_the_unused_then_the_least_recently_used_never_the_recent(tmp_path):
    from speech.prompts import prune_directory

    names = {"old.wav": 40 * 86400, "week.wav": 7 * 86400, "day.wav": 86400, "hour.wav": 1800, "now.wav": 0}
    for name, age in names.items():
        (tmp_path / name).write_bytes(b"x" * 1000)
        _aged(tmp_path / name, age)
    (tmp_path / ".half.wav.tmp").write_bytes(b"x" * 10)
    _aged(tmp_path / ".half.wav.tmp", 7200)
    (tmp_path / ".rendering.wav.tmp").write_bytes(b"x" * 10)  # another process writes it now
    removed = prune_directory(tmp_path, max_bytes=3500, max_age=30 * 86400, keep_recent=3600)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rendering.wav.tmp", "day.wav", "hour.wav", "now.wav"]
    assert removed == (3, 2010)  # the leftover, "old" by age, "week" for size
    # over the size with only recent files left: those stay
    assert prune_directory(tmp_path, max_bytes=100, max_age=30 * 86400, keep_recent=3600) == (1, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rendering.wav.tmp", "hour.wav", "now.wav"]


async def test_the_prompt_directory_stays_within_its_size_and_what_is_in_use_stays(tmp_path, synthesizer):
    first = PromptCache(tmp_path, synthesizer, max_bytes=60_000, keep_recent=300.0)
    other = PromptCache(tmp_path, synthesizer, max_bytes=60_000, keep_recent=300.0)  # another process
    kept = await first.for_asterisk("Соединяю со специалистом.", "ru")
    for n in range(12):
        path = await other.path_for(f"Ваш номер в очереди: {n}.", "ru")
        _aged(path, 600 + n)  # played a while ago
    await first.prune()
    files = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert sum(p.stat().st_size for p in files) <= 60_000
    assert Path(kept.name + ".wav").exists()  # used most recently: kept
    again = await other.path_for("Ваш номер в очереди: 0.", "ru")  # removed, rendered again on use
    assert again.exists()
    assert first.stats["removed_files"] > 0 and first.stats["sweeps"] >= 1
    await first.close()
    await other.close()


async def test_a_prompt_in_use_is_touched_so_a_sweep_spares_it(tmp_path, synthesizer):
    cache = PromptCache(tmp_path, synthesizer, max_bytes=1, keep_recent=3600)
    path = await cache.path_for("Здравствуйте!", "ru")
    _aged(path, 7200)  # rendered long ago ...
    cache._touched.clear()
    await cache.path_for("Здравствуйте!", "ru")  # ... and played now
    assert await cache.prune() == (0, 0)
    assert path.exists()
    await cache.close()
