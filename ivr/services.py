"""Wiring: build every part the call path needs from one `Config`.

Parts that can be absent are: Redis (in-process cache and contexts instead)
and speech synthesis (the role question is then skipped and the caller is
routed in their most likely role).  Everything else failing at start-up is
an error the administrator sees at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from caller_id.cache import InProcessCache, RedisCache
from caller_id.cache import redis_client as make_redis_client
from caller_id.catalogue import load_catalogue
from caller_id.directory import CallerDirectory
from caller_id.lookup import SqlDirectory
from caller_id.store import Database
from ivr.config import Config
from ivr.contexts import CallContexts, InProcessContexts, RedisContexts
from ivr.decision import decide
from ivr.records import CallRecorder
from queues.reload import LiveRules

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: Config
    db: Database
    directory: CallerDirectory
    catalogue: Any
    rules: LiveRules
    contexts: CallContexts
    recorder: CallRecorder
    prompts: Any = None
    synthesizer: Any = None
    redis: Any = None
    crm: Any = None
    selfservice: Any = None  # ivr.selfservice.SelfService when prompts are on
    notes: list[str] = field(default_factory=list)  # start-up facts worth printing

    def now(self) -> dt.datetime:
        return dt.datetime.now(ZoneInfo(self.config.timezone))

    async def warm_up(self) -> None:
        """Ready the call path before the FastAGI port opens, so the first calls cost what later ones do.

        The lookup's connections, statements and cache (`CallerDirectory.warm_up`),
        then one decision per line for an unknown caller (prediction and rules
        build what they need on first use).
        """
        started = time.perf_counter()
        await self.directory.warm_up(self.config.region)
        unknown = await self.directory.lookup(None, region=self.config.region)
        for line in self.config.lines:
            try:
                decide(unknown, line, catalogue=self.catalogue, rules=self.rules.current, now=self.now())
            except Exception as exc:  # noqa: BLE001 - the calls of that line fail open and say why
                log.warning("warm-up: deciding for line %s failed: %s", line.name, exc)
        self.notes.append(f"warm-up: CRM connections, lookup statements, numbering rules and decisions ready "
                          f"in {(time.perf_counter() - started) * 1000:.0f} ms")

    async def close(self) -> None:
        await self.rules.stop()
        await self.recorder.close()
        await self.directory.close()
        if self.crm is not None:
            self.crm.close()
        await self.contexts.close()
        if self.selfservice is not None:
            await self.selfservice.close()
        if self.prompts is not None:
            await self.prompts.close()
        if self.synthesizer is not None:
            await asyncio.to_thread(self.synthesizer.close)
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()


async def build_services(config: Config, *, migrate: bool = True, speech: bool | None = None,
                         worker: int = 0, listen: bool = True) -> Services:
    """Open the database (migrating it), caches, rules, catalogue, prompts and the self-service dialog.

    With `listen` false the dialog is loaded without speech models and AudioSocket server (the
    CLI plans with it; it takes no calls).

    `worker` numbers the processes sharing the FastAGI port: each listens
    for AudioSocket on the configured port plus its number.
    """
    db = Database(config.database_url)
    if migrate:
        await db.migrate()
    catalogue = load_catalogue(config.intents_file)
    rules = LiveRules(config.rules_file, lines=[line.name for line in config.lines],
                      intents=catalogue.names)
    notes: list[str] = []

    redis_client = None
    if config.redis_url:
        redis_client = make_redis_client(config.redis_url)
        cache: Any = RedisCache(redis_client, ttl=config.lookup.cache_ttl)
        contexts: CallContexts = RedisContexts(redis_client, config.call_context_ttl)
        notes.append("shared state: Redis")
    else:
        cache = InProcessCache(ttl=config.lookup.cache_ttl, max_entries=config.lookup.cache_entries)
        contexts = InProcessContexts(config.call_context_ttl)
        notes.append("shared state: in-process (no Redis configured)")

    crm = SqlDirectory(db)
    directory = CallerDirectory(
        [crm], cache, timeout=config.lookup.timeout,
        db_for_version=db, version_poll=config.lookup.version_poll,
    )
    await directory.start()
    recorder = CallRecorder(db)
    recorder.start()

    services = Services(
        config=config, db=db, directory=directory, catalogue=catalogue, rules=rules,
        contexts=contexts, recorder=recorder, redis=redis_client, notes=notes, crm=crm,
    )
    if speech if speech is not None else config.prompts.enabled:
        await _start_prompts(services, worker, listen)
    else:
        notes.append("prompts: disabled")
    return services


async def _start_prompts(services: Services, worker: int = 0, listen: bool = True) -> None:
    from speech.prompts import PromptCache
    from speech.tts import Synthesizer

    settings = services.config.prompts
    try:
        synthesizer = Synthesizer(voices=dict(settings.voices) or None, rate=settings.rate)
        await asyncio.to_thread(synthesizer.start)
    except Exception as exc:  # noqa: BLE001 - calls still route without prompts
        log.error("speech synthesis unavailable (%s); role questions will be skipped", exc)
        services.notes.append(f"prompts: unavailable ({exc})")
        return
    services.synthesizer = synthesizer
    services.prompts = PromptCache(settings.directory, synthesizer,
                                   asterisk_directory=settings.asterisk_directory,
                                   max_bytes=settings.max_megabytes * 1024 * 1024,
                                   max_age=settings.max_age_days * 86400.0)
    services.notes.append(f"prompts: eSpeak NG via pyttsx3, cache in {settings.directory} "
                          f"(at most {settings.max_megabytes} MB, unused files kept {settings.max_age_days} days)")
    from ivr.selfservice import start_self_service

    services.selfservice = await start_self_service(services.config, services.prompts, services.catalogue,
                                                    port_offset=worker, listen=listen)
    services.notes.extend(services.selfservice.notes)
    services.notes.append(f"self-service: {services.selfservice.describe()}")
