"""`ivr run`: the server process (or several workers sharing the FastAGI port)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
from typing import Any

from caller_id.normalise import MaskingFilter
from ivr import metrics
from ivr.callcenter import AgentSide
from ivr.config import Config
from ivr.fastagi import FastAgiServer
from ivr.inbound import InboundScript
from ivr.services import Services, build_services

log = logging.getLogger("ivr")


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Database drivers log every statement with its parameters and rows at DEBUG (names, tokens,
    # hashes); MaskingFilter drops those records, and this keeps them from being made at all.
    for name in ("aiosqlite", "asyncpg"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)


def scripts_for(services: Services) -> dict[str, Any]:
    """The FastAGI scripts this server answers, by name."""
    return {"inbound": InboundScript(services)}


async def seed_demo_if_empty(services: Services, customers: int = 2000) -> int:
    """Seed demo data into an empty database; the number of customers added."""
    from sqlalchemy import func, select

    from caller_id.models import Customer
    from caller_id.seed import seed

    async with services.db.session() as session:
        count = await session.scalar(select(func.count()).select_from(Customer))
    if count:
        return 0
    summary = await seed(services.db, customers, seed=1)
    return getattr(summary, "customers", customers)


async def serve(config: Config, *, demo_data: bool = False, reuse_port: bool = False,
                worker: int | None = None, ready: Any = None, web_required: bool = False) -> dict[str, int]:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the routing rules.  Returns the calls this run
    handled, by outcome; a single process (`worker` None) says so in its closing line.

    When the web port cannot be opened the calls are served all the same, unless
    `web_required` (the demo, whose pages are the point): then the OSError is raised.
    """
    loud = worker in (None, 0)
    started, calls_before = time.monotonic(), metrics.calls_handled()
    services = await build_services(config, worker=worker or 0)
    agi = None
    web_runner = None
    agent_side = AgentSide(config, services)
    try:
        if demo_data and loud:
            from ivr.demo import DEMO_PASSWORD, ensure_demo_logins

            added = await seed_demo_if_empty(services)
            if added:
                print(f"  demo data : seeded {added} customers (first start)", flush=True)
            logins = await ensure_demo_logins(services.db)
            print(f"  demo logins: {logins[0]}, {logins[1]} ... (password {DEMO_PASSWORD})", flush=True)
        await services.warm_up()  # before the port opens: the first burst of calls finds it ready
        agi = FastAgiServer(
            scripts_for(services), host=config.agi.host, port=config.agi.port,
            allowed_hosts=config.agi.allowed_hosts, env_timeout=config.agi.env_timeout,
            command_timeout=config.agi.command_timeout, reuse_port=reuse_port,
        )
        await agi.start()
        await agent_side.start()
        if agent_side.ami is not None:
            try:  # give the start-up line a chance to say "connected"
                await asyncio.wait_for(agent_side.ami.wait_connected(), 3.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - it keeps trying in the background
                pass
        web_error = None
        if config.web.enabled and loud:
            from ivr.web import start_web

            try:
                web_runner = await start_web(services, agent_side)
            except OSError as exc:  # the port is taken, say: calls are served all the same
                if web_required:
                    raise
                web_error = f"NOT serving: cannot listen on {config.web.host}:{config.web.port} ({exc})"
                log.error("web: %s; calls go on without the agents' and supervisors' pages", web_error)
        await services.rules.start()
        loop = asyncio.get_running_loop()
        services.rules.install_sighup(loop)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if loud:
            _print_startup(config, services, agi, agent_side, web_runner, web_error)
        if ready is not None:
            ready.set()
        await stop.wait()
        if loud:
            print("shutting down: finishing calls in progress ...", flush=True)
    finally:
        if web_runner is not None:
            await web_runner.cleanup()
        if agi is not None:
            await agi.close()
        await agent_side.stop()
        await services.close()
    handled = _since(calls_before)
    if worker is None:
        print(closing_line(handled, time.monotonic() - started), flush=True)
    return handled


def _since(before: dict[str, int]) -> dict[str, int]:
    now = metrics.calls_handled()
    return {outcome: now[outcome] - before.get(outcome, 0) for outcome in now
            if now[outcome] - before.get(outcome, 0)}


_OUTCOME_WORDS = {"routed": "routed", "self_served": "self-served", "fail_open": "failed open",
                  "hangup": "hung up"}


def closing_line(calls: dict[str, int], seconds: float, workers: int = 1) -> str:
    """``stopped after 30 calls in 0:02:05 (27 routed, 3 failed open)``: what `ivr run` says last."""
    total = sum(calls.values())
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    order = (*metrics.CALL_OUTCOMES, *sorted(set(calls) - set(metrics.CALL_OUTCOMES)))
    parts = ", ".join(f"{calls[o]} {_OUTCOME_WORDS.get(o, o)}" for o in order if calls.get(o))
    return (f"stopped after {total} call{'s' if total != 1 else ''} in {hours}:{minutes:02d}:{secs:02d}"
            + (f" by {workers} workers" if workers > 1 else "") + (f" ({parts})" if parts else ""))


def _print_startup(config: Config, services: Services, agi: FastAgiServer, agent_side: AgentSide,
                   web_runner: Any = None, web_error: str | None = None) -> None:
    from caller_id.store import display_url

    workers = config.agi.workers
    lines = [
        "ivr contact-center server is running",
        f"  FastAGI   : agi://{agi.address}/inbound  (allowed Asterisk hosts: {', '.join(config.agi.allowed_hosts)})"
        + (f", {workers} worker processes" if workers > 1 else ""),
        f"  database  : {display_url(config.database_url)}",
        f"  rules     : {config.rules_file} ({len(services.rules.current.rules)} rules)",
        f"  intents   : {config.intents_file}",
        f"  AMI       : {agent_side.describe()}",
    ]
    if web_runner is not None:
        from ivr.web.app import address_of

        lines.append(f"  web       : http://{address_of(web_runner)}/  (agents /agent, supervisors /wallboard)")
    elif web_error is not None:
        lines.append(f"  web       : {web_error}")
    lines += [f"  {note}" for note in services.notes]
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def _worker_main(config: Config, worker: int, ready: Any, results: Any = None) -> None:
    setup_logging(os.environ.get("IVR_LOG_LEVEL", "INFO"))
    try:
        handled = asyncio.run(serve(config, reuse_port=True, worker=worker, ready=ready))
    except KeyboardInterrupt:
        return
    if results is not None:  # for the parent's closing line
        results.put(handled)


def run(config: Config, *, demo_data: bool = False) -> int:
    """Run in the foreground: one process, or `agi.workers` processes on one port."""
    workers = max(1, config.agi.workers)
    if workers == 1:
        try:
            asyncio.run(serve(config, demo_data=demo_data))
        except KeyboardInterrupt:
            pass
        return 0
    if demo_data:
        asyncio.run(_seed_only(config))
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


async def _seed_only(config: Config) -> None:
    services = await build_services(config, speech=False)
    try:
        added = await seed_demo_if_empty(services)
        if added:
            print(f"  demo data : seeded {added} customers (first start)", flush=True)
    finally:
        await services.close()
