"""The two sides of the server, each built from one `Config`: `Services` (the call side) by
`build_services`, `AgentSide` (agents and supervisors) from the services; `ivr.server.Node`
starts and stops them in order.

Parts that can be absent are: Redis (in-process cache and contexts instead),
speech synthesis (the role question is then skipped and the caller is
routed in their most likely role) and the learned prediction (the
catalogue's rules rank alone: `caller_id.learning.choose_ranker` loads the
model file only when its held-out evaluation beat the rules and it fits the
catalogue; the notes say which and why).  Everything else failing at start-up is
an error the administrator sees at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from caller_id.cache import InProcessCache, ProfileCache, RedisCache
from caller_id.cache import redis_client as make_redis_client
from caller_id.catalogue import IntentCatalogue, load_catalogue
from caller_id.directory import CallerDirectory, Source
from caller_id.learning import LiveRanker, choose_ranker
from caller_id.lookup import SqlSource
from caller_id.store import Database
from ivr.agents.callcenter import CallCenter
from ivr.agents.hub import Hub
from ivr.call.context import CallContexts, InProcessContexts, RedisContexts
from ivr.call.decision import decide
from ivr.call.records import CallRecorder, RecordUpdates
from ivr.config import Config
from queues.reload import LiveRules
from queues.state import QueueState
from queues.stats import QueueStatistics

if TYPE_CHECKING:  # built only when prompts are on (eSpeak NG, Vosk): imported there
    from redis.asyncio import Redis

    from ivr.selfservice.service import SelfService
    from speech.prompts import PromptCache
    from speech.tts import Synthesizer

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The call side: what a call needs, from the CRM lookup to the self-service dialog."""

    config: Config
    db: Database
    directory: CallerDirectory
    catalogue: IntentCatalogue
    rules: LiveRules
    contexts: CallContexts
    recorder: CallRecorder
    updates: RecordUpdates  # what is learnt about a call after its record was queued (the survey's answers)
    prompts: PromptCache | None = None  # None: prompts disabled or synthesis unavailable
    synthesizer: Synthesizer | None = None
    redis: Redis | None = None  # None: no Redis configured (state in this process)
    crm: Source | None = None
    selfservice: SelfService | None = None  # when prompts are on
    ranker: LiveRanker | None = None  # the learned prediction; None: the catalogue's rules rank
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
                decide(unknown, line, catalogue=self.catalogue, rules=self.rules.current, now=self.now(),
                       ranker=self.ranker)
            except Exception as exc:  # noqa: BLE001 - the calls of that line fail open and say why
                log.warning("warm-up: deciding for line %s failed: %s", line.name, exc)
        self.notes.append(f"warm-up: CRM connections, lookup statements, numbering rules and decisions ready "
                          f"in {(time.perf_counter() - started) * 1000:.0f} ms")

    async def close(self) -> None:
        await self.rules.stop()
        await self.recorder.close()
        await self.updates.close()  # after the records: an update finds the record it changes
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
    prediction = choose_ranker(config.prediction.model_file, catalogue, enabled=config.prediction.enabled)
    notes: list[str] = [prediction.note]

    redis_client = None
    if config.redis_url:
        redis_client = make_redis_client(config.redis_url)
        cache: ProfileCache = RedisCache(redis_client, ttl=config.lookup.cache_ttl)
        contexts: CallContexts = RedisContexts(redis_client, config.call_context_ttl)
        notes.append("shared state: Redis")
    else:
        cache = InProcessCache(ttl=config.lookup.cache_ttl, max_entries=config.lookup.cache_entries)
        contexts = InProcessContexts(config.call_context_ttl)
        notes.append("shared state: in-process (no Redis configured)")

    crm = SqlSource(db)
    directory = CallerDirectory(
        [crm], cache, timeout=config.lookup.timeout,
        db_for_version=db, version_poll=config.lookup.version_poll,
    )
    await directory.start()
    recorder = CallRecorder(db)
    recorder.start()
    updates = RecordUpdates(db)
    updates.start()

    services = Services(
        config=config, db=db, directory=directory, catalogue=catalogue, rules=rules,
        contexts=contexts, recorder=recorder, updates=updates, redis=redis_client, notes=notes, crm=crm,
        ranker=prediction.ranker,
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
    from ivr.selfservice.service import start_self_service

    services.selfservice = await start_self_service(services.config, services.prompts, services.catalogue,
                                                    port_offset=worker, listen=listen)
    services.notes.extend(services.selfservice.notes)
    services.notes.append(f"self-service: {services.selfservice.describe()}")


class AgentSide:
    """Everything that serves agents and supervisors, built from the configuration.

    The hub (Redis pub/sub when Redis is configured, this process otherwise),
    the live queue state and statistics, the screen-pop, and, when an AMI host
    is configured, the AMI client and the `CallCenter` feeding them.
    """

    def __init__(self, config: Config, services: Services):
        from ivr.agents.directory import AgentDirectory
        from ivr.agents.hub import InProcessHub, RedisHub
        from ivr.agents.screenpop import ScreenPop
        from ivr.asterisk.ami_client import AmiClient

        self.hub: Hub = RedisHub(services.redis) if services.redis is not None else InProcessHub()
        self.agents = AgentDirectory(services.db)
        self.screenpop = ScreenPop(services.contexts, self.hub, self.agents)
        self.queue_state = QueueState(segment_of=self.screenpop.segment_of)
        self.queue_stats = QueueStatistics()
        self.ami: AmiClient | None = None
        self.center: CallCenter | None = None
        ami = config.ami
        if ami.host:
            self.ami = AmiClient(ami.host, ami.port, ami.username, ami.secret or "")
            self.center = CallCenter(
                self.ami, services.db, services.contexts, self.hub,
                queue_state=self.queue_state, queue_stats=self.queue_stats,
                screenpop=self.screenpop, agents=self.agents,
            )

    def describe(self) -> str:
        if self.ami is None:
            return "not configured (set ami.host or IVR_AMI_HOST to connect to Asterisk's manager)"
        return self.ami.state.describe()

    async def start(self) -> None:
        if self.center is not None:
            await self.center.start()

    async def stop(self) -> None:
        if self.center is not None:
            await self.center.stop()
        await self.screenpop.close()
        if self.ami is not None:
            await self.ami.close()
        await self.hub.close()
