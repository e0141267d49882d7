"""`ivr run`: one server process, or `agi.workers` processes sharing the FastAGI port."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import signal
import time
from typing import Any

from ivr.config import Config
from ivr.server import Prepare, closing_line, serve, setup_logging
from ivr.services import build_services


def _worker_main(config: Config, worker: int, ready: Any, results: Any = None) -> None:
    setup_logging(os.environ.get("IVR_LOG_LEVEL", "INFO"))
    try:
        handled = asyncio.run(serve(config, reuse_port=True, worker=worker, ready=ready))
    except KeyboardInterrupt:
        return
    if results is not None:  # for the parent's closing line
        results.put(handled)


def run(config: Config, *, prepare: Prepare | None = None) -> int:
    """Run in the foreground: one process, or `agi.workers` processes on one port."""
    workers = max(1, config.agi.workers)
    if workers == 1:
        try:
            asyncio.run(serve(config, prepare=prepare))
        except KeyboardInterrupt:
            pass
        return 0
    if prepare is not None:
        asyncio.run(_prepare_only(config, prepare))
    context = multiprocessing.get_context("spawn")
    started = time.monotonic()
    results = context.Queue()
    processes = []
    for n in range(workers):
        ready = context.Event()
        process = context.Process(target=_worker_main, args=(config, n, ready, results), name=f"ivr-worker-{n}")
        process.start()
        processes.append(process)
        ready.wait(60)
    stop = {"signal": None}

    def forward(signum: int, _frame: Any) -> None:
        stop["signal"] = signum
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM if signum != signal.SIGHUP else signal.SIGHUP)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    for process in processes:
        process.join()
    calls: dict[str, int] = {}
    reported = 0
    for _ in processes:  # each worker that stopped cleanly put what it handled
        try:
            handled = results.get(timeout=1.0)
        except queue.Empty:
            break
        reported += 1
        for outcome, count in handled.items():
            calls[outcome] = calls.get(outcome, 0) + count
    missing = len(processes) - reported
    print(closing_line(calls, time.monotonic() - started, workers)
          + (f"; {missing} worker{'s' if missing != 1 else ''} did not report" if missing else ""), flush=True)
    return 0


async def _prepare_only(config: Config, prepare: Prepare) -> None:
    """Run `prepare` once in this process before the workers start (they skip it)."""
    services = await build_services(config, speech=False)
    try:
        await prepare(services)
    finally:
        await services.close()
