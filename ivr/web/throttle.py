"""Log-in throttling that an attacker cannot turn against the people who log in.

Failed log-ins are counted three ways, each forgotten `FORGET_AFTER` seconds
after its last failure:

* per user name *and* address: after `PAIR_FREE` failures that address must
  wait before it may try that name again, twice as long after every further
  failure (`BACKOFF_START` seconds at first, `BACKOFF_MOST` at most).  The
  same user from another address is not held up, and the right password
  from this address clears it.
* per address, whatever the name: after `ADDRESS_FREE` failures the same
  back-off for everything from that address (one address trying many names).
* per user name, from anywhere: never refused, but after `USER_FREE`
  failures every attempt on that name is answered only after a delay that
  grows to `DELAY_MOST` seconds (many addresses trying one name): a slower
  log-in for the user, no lock-out.

Names and addresses are kept only as digests of a fixed size, so what a
hostile client sends cannot grow the table: it holds at most `MAX_TRACKED`
entries in this process.  With Redis configured, the counts live there
(shared by every node, expiring by themselves); when Redis fails, this
process counts alone until it is back.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

PAIR_FREE = 5
ADDRESS_FREE = 20
USER_FREE = 10
BACKOFF_START = 2.0
BACKOFF_MOST = 300.0
DELAY_START = 0.25
DELAY_MOST = 3.0
FORGET_AFTER = 900.0
MAX_TRACKED = 10_000
REDIS_PREFIX = "ivr:login-failures:"


@dataclass(frozen=True)
class Verdict:
    wait: float  # seconds before this address may try this name again (0: now)
    delay: float  # seconds to hold the answer back (a name under attack)


def _backoff(failures: int, free: int) -> float:
    if failures < free:
        return 0.0
    return min(BACKOFF_MOST, BACKOFF_START * 2 ** min(failures - free, 20))


def _delay(failures: int) -> float:
    if failures < USER_FREE:
        return 0.0
    return min(DELAY_MOST, DELAY_START * 2 ** min(failures - USER_FREE, 20))


def _keys(username: str, address: str) -> tuple[str, str, str]:
    """Digests for (name and address, address, name): a fixed size whatever was sent."""
    name = username.strip().lower()

    def digest(kind: str, value: str) -> str:
        return kind + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    return digest("p", f"{name}\0{address}"), digest("a", address), digest("u", name)


class _Counts:
    """(failures, time of the last one) per key, in this process: bounded in size and age."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()  # least recently failed first

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, keys: tuple[str, ...]) -> list[tuple[int, float]]:
        self._forget_old()
        return [self._entries.get(key, (0, 0.0)) for key in keys]

    def add(self, keys: tuple[str, ...]) -> None:
        now = self._clock()
        for key in keys:
            failures, _ = self._entries.pop(key, (0, 0.0))
            self._entries[key] = (failures + 1, now)
        while len(self._entries) > MAX_TRACKED:
            self._entries.popitem(last=False)
        self._forget_old()

    def clear(self, key: str) -> None:
        self._entries.pop(key, None)

    def _forget_old(self) -> None:
        limit = self._clock() - FORGET_AFTER
        while self._entries:
            key, (_, last) = next(iter(self._entries.items()))
            if last >= limit:
                break
            del self._entries[key]


class LoginThrottle:
    def __init__(self, redis: Any = None, *, clock: Callable[[], float] = time.time):
        self._redis = redis
        self._clock = clock
        self._local = _Counts(clock)
        self._redis_failing = False

    @property
    def tracked(self) -> int:
        """Entries kept in this process."""
        return len(self._local)

    async def check(self, username: str, address: str) -> Verdict:
        keys = _keys(username, address)
        (pair, pair_last), (addr, addr_last), (user, _) = await self._get(keys)
        now = self._clock()
        wait = max(pair_last + _backoff(pair, PAIR_FREE) - now if pair >= PAIR_FREE else 0.0,
                   addr_last + _backoff(addr, ADDRESS_FREE) - now if addr >= ADDRESS_FREE else 0.0)
        return Verdict(wait=max(0.0, wait), delay=_delay(user))

    async def failed(self, username: str, address: str) -> None:
        keys = _keys(username, address)
        if self._redis is not None:
            try:
                now = self._clock()
                async with self._redis.pipeline(transaction=True) as pipe:
                    for key in keys:
                        pipe.hincrby(REDIS_PREFIX + key, "n", 1)
                        pipe.hset(REDIS_PREFIX + key, "last", repr(now))
                        pipe.expire(REDIS_PREFIX + key, int(FORGET_AFTER))
                    await pipe.execute()
                self._redis_back()
                return
            except Exception as exc:  # noqa: BLE001 - any Redis trouble: count here
                self._redis_down(exc)
        self._local.add(keys)

    async def succeeded(self, username: str, address: str) -> None:
        """The right password: this address may try this name freely again."""
        pair = _keys(username, address)[0]
        self._local.clear(pair)
        if self._redis is not None:
            try:
                await self._redis.delete(REDIS_PREFIX + pair)
                self._redis_back()
            except Exception as exc:  # noqa: BLE001
                self._redis_down(exc)

    async def _get(self, keys: tuple[str, ...]) -> list[tuple[int, float]]:
        local = self._local.get(keys)
        if self._redis is None:
            return local
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(REDIS_PREFIX + key, "n", "last")
                rows = await pipe.execute()
            self._redis_back()
        except Exception as exc:  # noqa: BLE001
            self._redis_down(exc)
            return local
        shared = [(int(n or 0), float(last or 0.0)) for n, last in rows]
        # failures counted here while Redis was away still count
        return [(a + b, max(at, bt)) for (a, at), (b, bt) in zip(shared, local)]

    def _redis_down(self, exc: Exception) -> None:
        if not self._redis_failing:
            log.warning("log-in throttle: Redis unavailable (%s); counting failures on this node", exc)
            self._redis_failing = True

    def _redis_back(self) -> None:
        if self._redis_failing:
            log.info("log-in throttle: Redis is back")
            self._redis_failing = False
