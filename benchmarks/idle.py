"""Benchmark: idle calls held by the real server, and the memory each one costs.

A server process runs the real services (SQLite CRM, prompts, the
self-service dialog in DTMF mode) and the FastAGI server.  Simulated
Asterisk channels in this process place calls that reach the dialog's first
question and then stay there: Asterisk's side answers every AGI command but
holds back the reply to GET DATA, as a caller listening to a prompt does.
The server's resident memory before and with N such calls gives the memory
per held call.

    python -m benchmarks.idle [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# --- the server side (python -m benchmarks.idle serve PORT DIR) ---------------------------------


async def serve(port: int, directory: Path) -> None:
    from dataclasses import replace

    from caller_id.seed import seed
    from ivr.config import PromptSettings, load_config
    from ivr.asterisk.fastagi import FastAgiServer
    from ivr.server import scripts_for
    from ivr.services import build_services

    _raise_file_limit()
    config = load_config(None, environ={})
    config = replace(
        config, database_url=f"sqlite+aiosqlite:///{directory / 'idle.sqlite3'}",
        prompts=replace(PromptSettings(), directory=directory / "prompts"),
        speech=replace(config.speech, models={}, audiosocket_port=0),
        lines=tuple(replace(line, self_service="dtmf") for line in config.lines),
        agi=replace(config.agi, command_timeout=3600.0),
    )
    services = await build_services(config)
    if not await _has_customers(services):
        await seed(services.db, 300, seed=11)
    agi = FastAgiServer(scripts_for(services), host="127.0.0.1", port=port, command_timeout=3600.0)
    await agi.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await agi.close(grace=1.0)
    await services.close()


async def _has_customers(services: Any) -> bool:
    from sqlalchemy import func, select

    from caller_id.models import Customer

    async with services.db.session() as session:
        return bool(await session.scalar(select(func.count(Customer.id))))


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- Asterisk's side ---------------------------------------------------------------------------


async def hold_call(port: int, number: str, parked: asyncio.Event, release: asyncio.Event) -> bool:
    """One call that stops at the first GET DATA; True when it got there."""
    from ivr.sim.fastagi_caller import AsteriskChannel, CallScript

    channel = AsteriskChannel(CallScript(number=number, line="general"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(channel.environment("127.0.0.1", port))
        while True:
            line = await reader.readline()
            if not line:
                return False
            if line.upper().startswith(b"GET DATA"):
                parked.set()
                await release.wait()
                return True
            for chunk in channel.handle(line.decode()):
                writer.write(chunk)
    finally:
        writer.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def hold(port: int, pid: int, calls: int) -> dict[str, Any]:
    release = asyncio.Event()
    numbers = [f"+7900{n:07d}" for n in range(calls)]  # mostly unknown callers: the open question
    warm = asyncio.Event()
    first = asyncio.ensure_future(hold_call(port, "+79000000003", warm, release))
    await asyncio.wait_for(warm.wait(), 120)  # prompts rendered once
    before = _rss_kib(pid)
    events = [asyncio.Event() for _ in numbers]
    started = time.perf_counter()
    tasks = []
    for number, event in zip(numbers, events):
        tasks.append(asyncio.ensure_future(hold_call(port, number, event, release)))
        if len(tasks) % 100 == 0:
            await asyncio.sleep(0.2)  # 500 new calls/s: the lookups keep up, the calls are what is measured
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 600)
    ramp = time.perf_counter() - started
    await asyncio.sleep(2.0)
    held = _rss_kib(pid)
    release.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    return {
        "calls": calls, "parked": sum(1 for r in results[1:] if r is True),
        "rss_before_mib": round(before / 1024, 1), "rss_held_mib": round(held / 1024, 1),
        "kib_per_call": round((held - before) / calls, 1), "ramp_seconds": round(ramp, 1),
    }


def main_idle(calls: int = 2000) -> dict[str, Any]:
    from benchmarks.call_path import BENCH_DIR

    _raise_file_limit()
    directory = BENCH_DIR / "idle"
    directory.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.idle", "serve", str(port), str(directory)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert server.stdout is not None and server.stdin is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the idle-calls benchmark server did not start")
        report = asyncio.run(hold(port, server.pid, calls))
        print(f"[idle] {report}", flush=True)
        server.stdin.write("stop\n")
        server.stdin.flush()
        return report
    finally:
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2]), Path(sys.argv[3])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--calls", type=int, default=2000)
        main_idle(parser.parse_args().calls)
