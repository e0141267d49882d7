"""The caller-profile cache: in process, or in Redis shared by every node.

Both caches keep positive answers (a `CallerProfile`) for `ttl` seconds and
negative ones ("this number is not in the CRM", stored as None) for the
shorter `negative_ttl`.  `get` tells the three cases apart: a profile, None,
or `MISS`.

Cross-node invalidation works through the CRM generation: every write of
CRM data bumps ``crm_version`` in the database, `CallerDirectory` polls it and
calls `use_generation`, and entries filled under an older generation are
never served again (Redis keys carry the generation and age out by TTL; the
in-process cache simply empties).  `invalidate` drops given numbers at once.

The Redis cache never lets Redis trouble reach a call: with short socket
timeouts and no retry back-off, a failing command counts as a miss (or a
dropped write), one warning is logged per outage, Redis is left alone for
`retry_interval` seconds, and the cache is used again as soon as a command
succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from caller_id.normalise import mask
from caller_id.profile import CallerProfile

__all__ = ["MISS", "ProfileCache", "InProcessCache", "RedisCache"]

log = logging.getLogger(__name__)

# `clear` walks the whole key space: it may take longer than one command.
_CLEAR_TIMEOUT = 10.0


class _Miss:
    """The type of `MISS`: nothing cached for the number."""

    def __repr__(self) -> str:
        return "MISS"

    def __bool__(self) -> bool:
        return False


MISS: Final = _Miss()

Cached = CallerProfile | None | _Miss


class ProfileCache(Protocol):
    """What `CallerDirectory` needs from a cache.  No method raises."""

    generation: int

    def use_generation(self, generation: int) -> None: ...

    async def get(self, number: str) -> Cached: ...

    async def set(self, number: str, profile: CallerProfile | None) -> None: ...

    async def invalidate(self, numbers: Iterable[str]) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


def _check_ttls(ttl: float, negative_ttl: float | None) -> tuple[float, float]:
    if ttl <= 0:
        raise ValueError(f"cache ttl must be positive, got {ttl!r}")
    if negative_ttl is None:
        negative_ttl = min(ttl, 60.0)
    if negative_ttl <= 0:
        raise ValueError(f"cache negative_ttl must be positive, got {negative_ttl!r}")
    return ttl, negative_ttl


class InProcessCache:
    """A bounded LRU of profiles with expiry, for one process."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        *,
        negative_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ttl, self._negative_ttl = _check_ttls(ttl, negative_ttl)
        if max_entries < 1:
            raise ValueError(f"cache max_entries must be at least 1, got {max_entries!r}")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CallerProfile | None]] = OrderedDict()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def use_generation(self, generation: int) -> None:
        if generation != self.generation:
            self._entries.clear()
            self.generation = generation

    async def get(self, number: str) -> Cached:
        entry = self._entries.get(number)
        if entry is None:
            return MISS
        expires_at, profile = entry
        if self._clock() >= expires_at:
            del self._entries[number]
            return MISS
        self._entries.move_to_end(number)
        return profile

    async def set(self, number: str, profile: CallerProfile | None) -> None:
        ttl = self._negative_ttl if profile is None else self._ttl
        self._entries[number] = (self._clock() + ttl, profile)
        self._entries.move_to_end(number)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def invalidate(self, numbers: Iterable[str]) -> None:
        for number in numbers:
            self._entries.pop(number, None)

    async def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        self._entries.clear()


def redis_client(url: str, socket_timeout: float = 0.1) -> aioredis.Redis:
    """A Redis client for the call path: short timeouts, no backoff.

    One immediate reconnect for a pooled connection that died with a
    restarted server; timeouts are not retried, so a missing Redis costs a
    call at most a few socket timeouts.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


class RedisCache:
    """Profiles as JSON in Redis under ``<prefix><generation>:<number>``.

    `redis` is a URL (``redis://host:port/db``; the client is made here with
    `socket_timeout` and closed by `close`) or a ready `redis.asyncio.Redis`
    (used as it is and left open).
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        ttl: float,
        *,
        negative_ttl: float | None = None,
        prefix: str = "ivr:caller:",
        socket_timeout: float = 0.1,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ttl, self._negative_ttl = _check_ttls(ttl, negative_ttl)
        if socket_timeout <= 0:
            raise ValueError(f"redis socket_timeout must be positive, got {socket_timeout!r}")
        if isinstance(redis, str):
            try:
                self._client = redis_client(redis, socket_timeout)
            except ValueError as exc:
                raise ValueError(f"bad redis URL for the caller cache: {exc}") from None
            self._owns_client = True
        else:
            self._client = redis
            self._owns_client = False
        self._prefix = prefix
        # Bounds a command even when a ready client has no socket timeout.
        self._command_timeout = max(socket_timeout * 3, 0.05)
        self._retry_interval = retry_interval
        self._clock = clock
        self._down_since: float | None = None
        self._next_try = 0.0
        self.generation = 0

    @property
    def is_available(self) -> bool:
        """False while Redis is treated as down."""
        return self._down_since is None

    def use_generation(self, generation: int) -> None:
        self.generation = generation

    def _key(self, number: str) -> str:
        return f"{self._prefix}{self.generation}:{number}"

    async def get(self, number: str) -> Cached:
        raw = await self._run(self._client.get, self._key(number))
        if raw is None:  # missing key or Redis unavailable
            return MISS
        try:
            data = json.loads(raw)
            return None if data is None else CallerProfile.from_dict(data)
        except Exception as exc:  # whatever else wrote the key: treat it as absent
            log.warning("unreadable cached profile for %s dropped: %s", mask(number), exc)
            await self._run(self._client.delete, self._key(number))
            return MISS

    async def set(self, number: str, profile: CallerProfile | None) -> None:
        if profile is None:
            value, ttl = "null", self._negative_ttl
        else:
            value, ttl = json.dumps(profile.to_dict(), ensure_ascii=False, default=str), self._ttl
        await self._run(self._client.set, self._key(number), value, px=max(1, round(ttl * 1000)))

    async def invalidate(self, numbers: Iterable[str]) -> None:
        keys = [self._key(number) for number in numbers]
        if keys:
            await self._run(self._client.delete, *keys)

    async def clear(self) -> None:
        """Drop every cached profile of every generation."""
        await self._run(self._delete_prefixed, timeout=_CLEAR_TIMEOUT)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _delete_prefixed(self) -> None:
        batch = []
        async for key in self._client.scan_iter(match=f"{self._prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await self._client.unlink(*batch)
                batch.clear()
        if batch:
            await self._client.unlink(*batch)

    async def _run(
        self, command: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """`command`'s result, or None when Redis is down or fails."""
        if self._down_since is not None:
            now = self._clock()
            if now < self._next_try:
                return None
            self._next_try = now + self._retry_interval  # this call is the one probe
        try:
            async with asyncio.timeout(timeout or self._command_timeout):
                result = await command(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            self._mark_down(exc)
            return None
        if self._down_since is not None:
            log.info("redis cache is back after %.1f s", self._clock() - self._down_since)
            self._down_since = None
        return result

    def _mark_down(self, exc: BaseException) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "redis cache unavailable, looking callers up without it (retry every %.1f s): %s",
                self._retry_interval, type(exc).__name__ + (f": {exc}" if str(exc) else ""),
            )
        self._next_try = now + self._retry_interval
