"""The wiring root of one server process: the call side, the agent side, the FastAGI port, the
web pages and the routing rules, started in that order and stopped in the reverse one (aiohttp
cleanup contexts), until a signal (`ivr.supervisor` runs several of these on one port)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from caller_id.normalise import MaskingFilter
from ivr import metrics
from ivr.asterisk.fastagi import FastAgiServer
from ivr.call.inbound import InboundScript
from ivr.call.survey import SurveyScript
from ivr.config import Config
from ivr.services import AgentSide, Services, build_services

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
    return {"inbound": InboundScript(services), "survey": SurveyScript(services)}


Prepare = Callable[[Services], Awaitable[None]]


@dataclass
class Node:
    """One server process: its parts, built and stopped in one order by `lifetime`."""

    config: Config
    worker: int = 0
    loud: bool = True  # the first (or only) process: prints, runs `prepare`, serves the pages
    reuse_port: bool = False
    prepare: Prepare | None = None
    web_required: bool = False
    services: Services | None = None
    agent_side: AgentSide | None = None
    agi: FastAgiServer | None = None
    web_runner: web.AppRunner | None = None
    web_error: str | None = None

    def lifetime(self) -> list[Callable[[web.Application], AsyncIterator[None]]]:
        """The parts in start order, as aiohttp cleanup contexts: each starts before the next and
        stops after it, and a start that fails stops only what had started."""
        return [self._call_side, self._agent_side, self._fastagi, self._web, self._rules]

    async def _call_side(self, _root: web.Application) -> AsyncIterator[None]:
        self.services = await build_services(self.config, worker=self.worker)
        try:
            if self.prepare is not None and self.loud:
                await self.prepare(self.services)
            await self.services.warm_up()  # before the port opens: the first burst of calls finds it ready
            yield
        finally:
            await self.services.close()

    async def _agent_side(self, _root: web.Application) -> AsyncIterator[None]:
        assert self.services is not None
        self.agent_side = AgentSide(self.config, self.services)
        try:
            await self.agent_side.start()
            yield
        finally:
            await self.agent_side.stop()

    async def _fastagi(self, _root: web.Application) -> AsyncIterator[None]:
        assert self.services is not None and self.agent_side is not None
        agi = self.config.agi
        self.agi = FastAgiServer(
            scripts_for(self.services), host=agi.host, port=agi.port, allowed_hosts=agi.allowed_hosts,
            env_timeout=agi.env_timeout, command_timeout=agi.command_timeout, reuse_port=self.reuse_port,
        )
        await self.agi.start()
        try:
            if self.agent_side.ami is not None:
                try:  # give the start-up line a chance to say "connected"
                    await asyncio.wait_for(self.agent_side.ami.wait_connected(), 3.0)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - it keeps trying in the background
                    pass
            yield
        finally:
            await self.agi.close()  # calls in progress finish while the agent side still runs

    async def _web(self, _root: web.Application) -> AsyncIterator[None]:
        assert self.services is not None and self.agent_side is not None
        if self.config.web.enabled and self.loud:
            from ivr.web import start_web

            try:
                self.web_runner = await start_web(self.services, self.agent_side)
            except OSError as exc:  # the port is taken, say: calls are served all the same
                if self.web_required:
                    raise
                self.web_error = f"NOT serving: cannot listen on {self.config.web.host}:{self.config.web.port} ({exc})"
                log.error("web: %s; calls go on without the agents' and supervisors' pages", self.web_error)
        try:
            yield
        finally:
            if self.web_runner is not None:
                await self.web_runner.cleanup()

    async def _rules(self, _root: web.Application) -> AsyncIterator[None]:
        assert self.services is not None
        await self.services.rules.start()  # stopped with the services
        self.services.rules.install_sighup(asyncio.get_running_loop())
        yield


async def serve(config: Config, *, prepare: Prepare | None = None, reuse_port: bool = False,
                worker: int | None = None, ready: Any = None, web_required: bool = False) -> dict[str, int]:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the routing rules.  Returns the calls this run
    handled, by outcome; a single process (`worker` None) says so in its closing line.

    `prepare` runs once on the built services before the FastAGI port opens (the first
    worker only): ``ivr run --demo-data`` seeds the demo CRM and logins with it.

    When the web port cannot be opened the calls are served all the same, unless
    `web_required` (the demo, whose pages are the point): then the OSError is raised.
    """
    node = Node(config, worker=worker or 0, loud=worker in (None, 0), reuse_port=reuse_port,
                prepare=prepare, web_required=web_required)
    started, calls_before = time.monotonic(), metrics.calls_handled()
    root = web.Application()
    root.cleanup_ctx.extend(node.lifetime())
    runner = web.AppRunner(root, handle_signals=False)
    try:
        await runner.setup()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if node.loud:
            _print_startup(node)
        if ready is not None:
            ready.set()
        await stop.wait()
        if node.loud:
            print("shutting down: finishing calls in progress ...", flush=True)
    finally:
        await runner.cleanup()
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


def _print_startup(node: Node) -> None:
    from caller_id.store import display_url

    config, services, agent_side = node.config, node.services, node.agent_side
    assert services is not None and agent_side is not None and node.agi is not None
    workers = config.agi.workers
    lines = [
        "ivr contact-center server is running",
        f"  FastAGI   : agi://{node.agi.address}/inbound and /survey"
        f"  (allowed Asterisk hosts: {', '.join(config.agi.allowed_hosts)})"
        + (f", {workers} worker processes" if workers > 1 else ""),
        f"  database  : {display_url(config.database_url)}",
        f"  rules     : {config.rules_file} ({len(services.rules.current.rules)} rules)",
        f"  intents   : {config.intents_file}",
        f"  AMI       : {agent_side.describe()}",
    ]
    if node.web_runner is not None:
        from ivr.web.app import address_of

        lines.append(f"  web       : http://{address_of(node.web_runner)}/  (agents /agent, supervisors /wallboard)")
    elif node.web_error is not None:
        lines.append(f"  web       : {node.web_error}")
    lines += [f"  {note}" for note in services.notes]
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)
