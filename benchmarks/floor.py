"""The floor for the call-path benchmark: a FastAGI server that only sets one variable.

Same server code, same worker count, no lookup, prediction or rules: the
cost of the protocol itself, so the benchmark can report the call path's
cost as a ratio of it measured in the same run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

from ivr.asterisk.fastagi import AgiCall, FastAgiServer
from queues.variables import QUEUE


async def set_one_variable(call: AgiCall) -> None:
    await call.set_variable(QUEUE, "support")


async def serve(port: int) -> None:
    server = FastAgiServer({"inbound": set_one_variable}, port=port, reuse_port=True)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def worker(port: int) -> None:
    asyncio.run(serve(port))


def main() -> None:
    port = int(os.environ["FLOOR_PORT"])
    workers = int(os.environ.get("FLOOR_WORKERS", "1"))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker, args=(port,)) for _ in range(workers)]
    for process in processes:
        process.start()

    def forward(signum, _frame):
        for process in processes:
            if process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.join()


if __name__ == "__main__":
    main()
