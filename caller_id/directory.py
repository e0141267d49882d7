"""Who is calling: caller ID in, `LookupResult` out, in bounded time.

`CallerDirectory` normalises the caller ID, answers from the profile cache
when it can, and otherwise asks every source (the SQL CRM, perhaps an HTTP
CRM adapter) in parallel under one overall timeout.  The first source in
list order that knows the number wins; a source that raises counts as no
answer and is logged.  Whatever happens (a hung database, a source that
never returns, Redis gone), `lookup` returns by the deadline with an
unknown caller and a `degraded` reason, so the call goes on to the default
queue instead of hanging.

Sources still running at the deadline are cancelled and not waited for:
a driver may need more time to clean up after a cancel (a SQLite reader
waiting for a lock, a PostgreSQL connection being reset).  They are kept
until they end, and `close` cancels and waits for the rest.

Cache entries carry the CRM generation.  `start` reads ``crm_version`` and
polls it every `version_poll` seconds; when it moves, every node's cache
stops serving what it had.  Until the version has been read once, the cache
is not used.

`warm_up` readies the sources (their connections and statements), the cache
and the number parser for the region before the first call, so the first
burst of calls gets the same lookup times as any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import phonenumbers

from caller_id.cache import MISS, ProfileCache
from caller_id.normalise import mask, mask_text, normalise
from caller_id.profile import UNKNOWN, CallerProfile

__all__ = ["Source", "VersionSource", "LookupResult", "CallerDirectory"]

log = logging.getLogger(__name__)

# How long `close` waits for cancelled sources to finish cleaning up.
_CLOSE_GRACE = 5.0
_WARM_UP_TIMEOUT = 30.0
_NUMBER_KINDS = tuple(k for k in phonenumbers.PhoneNumberType.values() if k != phonenumbers.PhoneNumberType.UNKNOWN)


class Source(Protocol):
    """A place callers are looked up in; `name` appears in logs."""

    name: str

    async def lookup(self, number: str) -> CallerProfile | None:
        """The profile behind E.164 `number`, or None when unknown there."""
        ...


class VersionSource(Protocol):
    async def crm_version(self) -> int: ...


@dataclass(frozen=True)
class LookupResult:
    """The outcome of one caller lookup.

    `source` is "cache" (answered from the cache, found or known to be
    absent: see `profile.is_known`), "crm" (a source knew the number),
    "not_found" (every source answered and none knew it),
    "invalid_number" (no usable caller ID), "timeout" or "error" (no answer
    in time, or sources failed: the caller is treated as unknown and
    `degraded` says why).
    """

    number: str | None
    profile: CallerProfile
    source: str
    degraded: str | None = None
    elapsed_ms: float = 0.0

    @property
    def is_known(self) -> bool:
        return self.profile.is_known


class CallerDirectory:
    def __init__(
        self,
        sources: Sequence[Source],
        cache: ProfileCache | None,
        *,
        timeout: float,
        db_for_version: VersionSource | None = None,
        version_poll: float = 2.0,
    ):
        if not sources:
            raise ValueError("a caller directory needs at least one source")
        if timeout <= 0:
            raise ValueError(f"caller lookup timeout must be positive, got {timeout!r}")
        if version_poll <= 0:
            raise ValueError(f"version_poll must be positive, got {version_poll!r}")
        self._sources = list(sources)
        self._names = [getattr(s, "name", type(s).__name__) for s in self._sources]
        self._cache = cache
        self._timeout = timeout
        self._versions = db_for_version
        self._version_poll = version_poll
        self._version_known = db_for_version is None
        self._version_failing = False
        self._poller: asyncio.Task[None] | None = None
        self._leftovers: set[asyncio.Task[object]] = set()

    @property
    def pending_sources(self) -> int:
        """Source queries cancelled at a deadline that have not ended yet."""
        return len(self._leftovers)

    async def start(self) -> None:
        """Read the CRM version and start polling it (no-op without a database)."""
        if self._versions is None or self._poller is not None:
            return
        await self.refresh_version()
        self._poller = asyncio.create_task(self._poll_version(), name="caller-directory-version")

    async def close(self) -> None:
        """Stop polling and end the source queries still running."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        leftovers = set(self._leftovers)
        for task in leftovers:
            task.cancel()
        if leftovers:
            _, still = await asyncio.wait(leftovers, timeout=_CLOSE_GRACE)
            if still:
                log.warning("%d caller lookups still running after close", len(still))

    async def warm_up(self, region: str = "RU") -> None:
        """Open what the first lookups would open; a source that cannot is logged and tried at each call."""
        # The number parser loads a region's rules and compiles the pattern of each kind of number on
        # first use, for every region of the country code (+7: RU and KZ).
        country = phonenumbers.country_code_for_region(region.upper())
        for sibling in phonenumbers.region_codes_for_country_code(country):
            for kind in _NUMBER_KINDS:
                example = phonenumbers.example_number_for_type(sibling, kind)
                if example is not None:
                    normalise(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164), region)
        if self._cache is not None:
            await self._cache.get("+0")  # opens the cache's connection (a miss)
        for source, name in zip(self._sources, self._names):
            warm_up = getattr(source, "warm_up", None)
            if warm_up is None:
                continue
            try:
                async with asyncio.timeout(_WARM_UP_TIMEOUT):
                    await warm_up()
            except Exception as exc:  # noqa: BLE001 - calls still try it, under their own deadline
                log.warning("caller source %s could not be warmed up: %s", name, mask_text(_describe(exc)))

    async def invalidate(self, numbers: Iterable[str]) -> None:
        """Forget cached profiles of these E.164 numbers."""
        if self._cache is not None:
            await self._cache.invalidate(list(numbers))

    async def refresh_version(self) -> None:
        """Read ``crm_version`` now and move the cache to it if it changed."""
        if self._versions is None:
            return
        try:
            async with asyncio.timeout(max(self._version_poll, self._timeout)):
                version = await self._versions.crm_version()
        except Exception as exc:
            if not self._version_failing:
                log.warning("cannot read the CRM version: %s", mask_text(_describe(exc)))
                self._version_failing = True
            return
        if self._version_failing:
            log.info("CRM version readable again")
            self._version_failing = False
        if self._cache is not None and (not self._version_known or version != self._cache.generation):
            log.info("caller cache moves to CRM version %d", version)
            self._cache.use_generation(version)
        self._version_known = True

    async def _poll_version(self) -> None:
        while True:
            await asyncio.sleep(self._version_poll)
            await self.refresh_version()

    async def lookup(self, raw_number: str | None, region: str = "RU") -> LookupResult:
        """Identify the caller of `raw_number` by the deadline; never raises for a lookup failure."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self._timeout
        number = normalise(raw_number, region)
        if number is None:
            return _result(None, UNKNOWN, "invalid_number", None, started)
        try:
            result = await self._lookup(number, deadline, started)
        except Exception as exc:  # the call must go on whatever broke here
            log.error("caller lookup of %s failed: %s", mask(number), mask_text(_describe(exc)))
            result = _result(number, CallerProfile(number=number), "error", "caller lookup failed", started)
        log.debug("caller %s: %s in %.1f ms", mask(number), result.source, result.elapsed_ms)
        return result

    async def _lookup(self, number: str, deadline: float, started: float) -> LookupResult:
        cache = self._cache if self._version_known else None
        generation = cache.generation if cache is not None else None
        if cache is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    cached = await cache.get(number)
            except TimeoutError:
                cached = MISS
            if cached is not MISS:
                profile = cached if cached is not None else CallerProfile(number=number)
                return _result(number, profile, "cache", None, started)

        profile, timed_out, failed = await self._ask_sources(number, deadline)
        if profile is not None:
            result = _result(number, profile, "crm", None, started)
        elif timed_out:
            reason = f"caller lookup timed out after {self._timeout * 1000:.0f} ms ({', '.join(timed_out)})"
            result = _result(number, CallerProfile(number=number), "timeout", reason, started)
        elif failed:
            reason = f"caller lookup failed ({', '.join(failed)})"
            result = _result(number, CallerProfile(number=number), "error", reason, started)
        else:
            result = _result(number, CallerProfile(number=number), "not_found", None, started)

        # Store only definite answers, and only if the CRM generation did not
        # move while the sources were read (the answer may predate the change).
        if cache is not None and result.source in ("crm", "not_found") and cache.generation == generation:
            await cache.set(number, profile)
        return result

    async def _ask_sources(self, number: str, deadline: float) -> tuple[CallerProfile | None, list[str], list[str]]:
        """(first answer in source order, sources that timed out, sources that failed)."""
        loop = asyncio.get_running_loop()
        tasks = [
            asyncio.create_task(source.lookup(number), name=f"caller-lookup-{name}")
            for source, name in zip(self._sources, self._names)
        ]
        try:
            pending = set(tasks)
            while pending and not _has_winner(tasks):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                _, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
                    self._leftovers.add(task)
                    task.add_done_callback(self._forget)

        answer: CallerProfile | None = None
        timed_out: list[str] = []
        failed: list[str] = []
        for task, name in zip(tasks, self._names):
            if task in self._leftovers:
                timed_out.append(name)
                continue
            exc = _error_of(task)
            if exc is not None:
                failed.append(name)
                log.warning("caller source %s failed for %s: %s", name, mask(number), mask_text(_describe(exc)))
            elif answer is None:
                answer = task.result()
        return answer, timed_out, failed

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._leftovers.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it was given up on at the deadline


def _has_winner(tasks: list[asyncio.Task[CallerProfile | None]]) -> bool:
    """True when the first source in order that knows the number has answered."""
    for task in tasks:
        if not task.done():
            return False
        if _error_of(task) is None and task.result() is not None:
            return True
    return True


def _error_of(task: asyncio.Task[object]) -> BaseException | None:
    """What a finished source raised (a source cancelled from inside included)."""
    if task.cancelled():
        return asyncio.CancelledError("source was cancelled")
    return task.exception()


def _result(
    number: str | None, profile: CallerProfile, source: str, degraded: str | None, started: float
) -> LookupResult:
    return LookupResult(
        number=number, profile=profile, source=source, degraded=degraded,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
