"""Benchmark of the speech path: AudioSocket + Vosk grammar recognition + cached prompts.

A server process runs the real AudioSocket server; each call is one
grammar-mode dialog turn run by the self-service dialog's own speech channel
(`ivr.selfservice.channels.SpeechChannel`): play a cached prompt while listening
with the step's grammar, and answer the caller's "yes" with a second cached
prompt.  Simulated Asterisk channels in this process stream eSpeak NG
Korean speech (the Korean model is the one the package registries carry) in
real time, 20 ms frames, and time what they hear.  Measured:

* end of the caller's utterance to the first frame of the answer (this is
  the recognised result reaching the caller: endpointing silence, decoding,
  the first paced frame), p50/p95, at rising numbers of concurrent dialogs;
* the server's CPU use at each level, hence dialogs per core;
* cached and cold prompt latency to the first frame on the socket;
* server memory per concurrent dialog.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("네", "아니요", "상담원")
PROMPT = "네, 아니요, 또는 상담원이라고 말씀해 주세요."
ANSWER = "알겠습니다."


# --- the server side (runs in its own process: python -m benchmarks.speech serve PORT) ----------


def korean_script() -> Any:
    """The dialog script the benchmark's turns use: the confirm step's words in Korean."""
    from ivr.selfservice.script import DialogScript, DialogSettings

    words = {"yes": {"ko": (WORDS[0],)}, "no": {"ko": (WORDS[1],)}, "operator": {"ko": (WORDS[2],)}}
    ratings = {"ko": {1: ("일",), 2: ("이",), 3: ("삼",), 4: ("사",), 5: ("오",)}}
    return DialogScript(source="<benchmark>", languages=("ko",), settings=DialogSettings(no_input_timeout=10.0),
                        menu=(), prompts={}, words=words, rating_words=ratings, intent_phrases={})


async def serve(port: int, prompt_dir: Path) -> None:
    from ivr.asterisk.audiosocket_server import AudioSocketServer
    from ivr.selfservice.dialog import CallerGone, Question
    from ivr.selfservice.channels import SpeechChannel
    from speech.asr import Endpointing, Recognizer, load_model, recognition_executor
    from speech.prompts import PromptCache
    from speech.tts import Synthesizer
    from speech.vosk_models import installed_model_path

    model = load_model(installed_model_path("ko"))
    executor = recognition_executor()
    script = korean_script()
    synth = Synthesizer({"ko": "ko"})
    await asyncio.to_thread(synth.start)
    prompts = PromptCache(prompt_dir, synth)
    await prompts.prerender([(PROMPT, "ko"), (ANSWER, "ko")])
    prompt_ms: dict[str, list[float]] = {"cached": [], "cold": []}
    question = Question(step="confirm", name="bench", text=PROMPT, keys_text="", digits={})

    async def dialog(call) -> None:
        """The self-service dialog's speech channel: ask, and answer a "yes" (answers count recognitions)."""
        recognizer = Recognizer(model, executor=executor, endpointing=Endpointing(no_input_timeout=None))
        channel = SpeechChannel(call, recognizer, prompts, script)
        try:
            started = time.perf_counter()
            await prompts.pcm8(PROMPT, "ko")
            prompt_ms["cached"].append((time.perf_counter() - started) * 1000)
            while True:
                reply = await channel.ask(question, "ko")
                if reply.meaning == "yes":
                    await channel.say(ANSWER, "ko")
        except CallerGone:
            return
        finally:
            await recognizer.close()

    async def cold_prompts() -> None:
        for n in range(20):
            text = f"새로운 안내 번호 {n} {time.time_ns()}"
            started = time.perf_counter()
            await prompts.pcm8(text, "ko")
            prompt_ms["cold"].append((time.perf_counter() - started) * 1000)

    server = AudioSocketServer(dialog, host="127.0.0.1", port=port, allowed_hosts=["127.0.0.1"])
    await server.start()
    await cold_prompts()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "report" then exit
    if line.strip() == "report":
        import json
        print(json.dumps(prompt_ms), flush=True)
    await server.close(1)
    synth.close()


# --- the Asterisk side ---------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_caller(port: int, speech: bytes, results: list[dict[str, Any]], turns: int) -> None:
    from ivr.sim.audiosocket_peer import AsteriskAudioSocket
    from speech.audio import silence

    peer = await AsteriskAudioSocket.connect("127.0.0.1", port)
    try:
        await asyncio.sleep(1.0)  # let the prompt start, as a caller listens first
        speech_seconds = len(speech) / 16000  # 8 kHz, 16-bit
        loop = asyncio.get_running_loop()
        for _ in range(turns):
            while peer.voiced(since=loop.time() - 0.3):  # the caller lets the prompt finish
                await asyncio.sleep(0.05)
            utterance = peer.say(speech + silence(1.0))
            while utterance.started_at is None:
                await asyncio.sleep(0.005)
            ended = utterance.started_at + speech_seconds  # the last voiced frame leaves here
            deadline = ended + 3.0
            answered = None
            while asyncio.get_running_loop().time() < deadline:
                voiced = peer.voiced(since=ended)
                if voiced:
                    answered = voiced[0].t
                    break
                await asyncio.sleep(0.01)
            results.append({"latency_ms": None if answered is None else (answered - ended) * 1000})
            await asyncio.sleep(0.8)
    finally:
        await peer.hang_up()


async def run_level(port: int, speech: bytes, concurrency: int, turns: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    tasks = []
    for n in range(concurrency):
        tasks.append(asyncio.create_task(one_caller(port, speech, results, turns)))
        await asyncio.sleep(0.05)  # calls arrive spread out, not in one instant
    await asyncio.gather(*tasks)
    return results


def korean_speech() -> bytes:
    """The caller's word with eSpeak NG's trailing silence cut, so its end is known exactly."""
    from speech.audio import FRAME_BYTES, TELEPHONE_RATE, rms, silence
    from speech.tts import Synthesizer

    with Synthesizer({"ko": "ko"}) as synth:
        pcm = synth.synthesize_sync("네", "ko").resampled(TELEPHONE_RATE).pcm
    end = len(pcm) - len(pcm) % FRAME_BYTES
    while end > FRAME_BYTES and rms(pcm[end - FRAME_BYTES:end]) < 100:
        end -= FRAME_BYTES
    return silence(0.2) + pcm[:end]


def main_speech(levels: tuple[int, ...] = (5, 10, 20, 30, 40), turns: int = 3) -> dict[str, Any]:
    from benchmarks.call_path import BENCH_DIR
    from ivr.sim.fastagi_caller import percentile

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.speech", "serve", str(port), str(BENCH_DIR / "prompts")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the speech benchmark server did not start")
        speech = korean_speech()
        idle_rss = _rss_mib(server.pid)
        report: dict[str, Any] = {"levels": [], "idle_rss_mib": round(idle_rss, 1)}
        for concurrency in levels:
            cpu_before, wall_before = _cpu_seconds(server.pid), time.perf_counter()
            results = asyncio.run(run_level(port, speech, concurrency, turns))
            cpu = _cpu_seconds(server.pid) - cpu_before
            wall = time.perf_counter() - wall_before
            latencies = [r["latency_ms"] for r in results if r["latency_ms"] is not None]
            report["levels"].append({
                "dialogs": concurrency,
                "turns": len(results),
                "answered": len(latencies),
                "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
                "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
                "server_cores_busy": round(cpu / wall, 2),
                "rss_mib": round(_rss_mib(server.pid), 1),
            })
            print(f"[speech] {report['levels'][-1]}", flush=True)
        server.stdin.write("report\n")
        server.stdin.flush()
        import json
        prompt_ms = json.loads(server.stdout.readline())
        report["prompt_ms"] = {
            kind: {"p50": round(statistics.median(v), 2), "p95": round(percentile(v, 95), 2)}
            for kind, v in prompt_ms.items() if v
        }
        return report
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "serve":
    asyncio.run(serve(int(sys.argv[2]), Path(sys.argv[3])))
