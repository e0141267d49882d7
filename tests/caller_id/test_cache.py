"""Profile caches: in process, and in a real redis-server (up, down, back)."""

import asyncio
import datetime as dt
import logging
import uuid

import pytest
import redis.asyncio as aioredis

from caller_id.cache import MISS, InProcessCache, RedisCache
from caller_id.profile import (
    ROLE_DIRECTOR,
    ROLE_PRIVATE,
    CallerProfile,
    Case,
    Customer,
    Manager,
    Organisation,
    RecentCall,
    Role,
)

NUMBER = "+79161234567"
OTHER = "+79031112233"


def sample_profile(number: str = NUMBER) -> CallerProfile:
    when = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.timezone.utc)
    org = Organisation(id=7, name="ООО «Ромашка»", segment="A", is_vip=True,
                       manager=Manager(id=2, name="Борис", interface="PJSIP/1002"))
    case = Case(id=11, product="card", title="Перевыпуск карты", status="in_progress", priority=2,
                opened_at=when, updated_at=when, due_at=None,
                facts={"ready_date": "2026-12-03", "branch": "Тверская"})
    customer = Customer(id=3, name="Иван", segment="B", manager=Manager(id=1, name="Анна", interface="PJSIP/1001"),
                        cases=(case,))
    return CallerProfile(
        number=number, customers=(customer,),
        roles=(Role(ROLE_PRIVATE, 3), Role(ROLE_DIRECTOR, 3, org)),
        recent_calls=(RecentCall(started_at=when, line="retail", intent="card_status"),),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- in process ----------------------------------------------------------------

async def test_in_process_cache_tells_miss_from_known_absent():
    cache = InProcessCache(ttl=60, max_entries=10)
    assert await cache.get(NUMBER) is MISS
    await cache.set(NUMBER, sample_profile())
    await cache.set(OTHER, None)
    assert await cache.get(NUMBER) == sample_profile()
    assert await cache.get(OTHER) is None


async def test_in_process_entries_expire_negative_ones_sooner():
    clock = Clock()
    cache = InProcessCache(ttl=300, max_entries=10, negative_ttl=30, clock=clock)
    await cache.set(NUMBER, sample_profile())
    await cache.set(OTHER, None)

    clock.now += 29.9
    assert await cache.get(OTHER) is None
    clock.now += 0.1
    assert await cache.get(OTHER) is MISS
    assert await cache.get(NUMBER) == sample_profile()
    clock.now += 270
    assert await cache.get(NUMBER) is MISS
    assert len(cache) == 0


async def test_in_process_cache_drops_least_recently_used_beyond_its_bound():
    cache = InProcessCache(ttl=60, max_entries=2)
    await cache.set("+70000000001", None)
    await cache.set("+70000000002", None)
    assert await cache.get("+70000000001") is None  # now the most recent
    await cache.set("+70000000003", None)

    assert len(cache) == 2
    assert await cache.get("+70000000002") is MISS
    assert await cache.get("+70000000001") is None
    assert await cache.get("+70000000003") is None


async def test_in_process_invalidate_clear_and_new_generation_forget_entries():
    cache = InProcessCache(ttl=60, max_entries=10)
    for number in (NUMBER, OTHER, "+70000000001"):
        await cache.set(number, None)
    await cache.invalidate([NUMBER])
    assert await cache.get(NUMBER) is MISS and await cache.get(OTHER) is None
    cache.use_generation(5)
    assert await cache.get(OTHER) is MISS and cache.generation == 5
    await cache.set(OTHER, None)
    await cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"ttl": 0, "max_entries": 1}, "ttl must be positive"),
    ({"ttl": 10, "max_entries": 0}, "max_entries must be at least 1"),
    ({"ttl": 10, "max_entries": 1, "negative_ttl": -1}, "negative_ttl must be positive"),
])
def test_in_process_cache_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InProcessCache(**kwargs)


# --- Redis ------------------------------------------------------------------------

@pytest.fixture
def prefix():
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis_cache(redis_url, prefix):
    cache = RedisCache(redis_url, ttl=300, negative_ttl=30, prefix=prefix)
    yield cache
    await cache.clear()
    await cache.close()


@pytest.mark.redis
async def test_redis_cache_round_trips_profiles_and_absence(redis_cache):
    assert await redis_cache.get(NUMBER) is MISS
    await redis_cache.set(NUMBER, sample_profile())
    await redis_cache.set(OTHER, None)

    assert await redis_cache.get(NUMBER) == sample_profile()
    assert await redis_cache.get(OTHER) is None


@pytest.mark.redis
async def test_redis_entries_carry_their_ttl_negative_ones_shorter(redis_cache, redis_url, prefix):
    await redis_cache.set(NUMBER, sample_profile())
    await redis_cache.set(OTHER, None)
    async with aioredis.Redis.from_url(redis_url) as client:
        ttls = {number: await client.pttl(f"{prefix}0:{number}") for number in (NUMBER, OTHER)}
    assert 29_000 < ttls[OTHER] <= 30_000
    assert 299_000 < ttls[NUMBER] <= 300_000


@pytest.mark.redis
async def test_redis_cache_is_shared_between_nodes_and_follows_the_generation(redis_url, prefix):
    node_a = RedisCache(redis_url, ttl=60, prefix=prefix)
    node_b = RedisCache(redis_url, ttl=60, prefix=prefix)
    try:
        await node_a.set(NUMBER, sample_profile())
        assert await node_b.get(NUMBER) == sample_profile()

        node_a.use_generation(1)
        node_b.use_generation(1)
        assert await node_b.get(NUMBER) is MISS
        await node_b.set(NUMBER, None)
        assert await node_a.get(NUMBER) is None

        await node_a.invalidate([NUMBER])
        assert await node_b.get(NUMBER) is MISS
    finally:
        await node_a.clear()
        await node_a.close()
        await node_b.close()


@pytest.mark.redis
async def test_redis_clear_removes_only_cache_keys(redis_cache, redis_url, prefix):
    await redis_cache.set(NUMBER, sample_profile())
    redis_cache.use_generation(3)
    await redis_cache.set(OTHER, None)
    async with aioredis.Redis.from_url(redis_url) as client:
        await client.set("test:unrelated", "keep")
        await redis_cache.clear()
        assert [k async for k in client.scan_iter(match=f"{prefix}*")] == []
        assert await client.get("test:unrelated") == b"keep"
        await client.delete("test:unrelated")


@pytest.mark.redis
async def test_unreadable_redis_entry_is_a_miss_and_is_removed(redis_cache, redis_url, prefix):
    async with aioredis.Redis.from_url(redis_url) as client:
        key = f"{prefix}0:{NUMBER}"
        await client.set(key, b"{not json")
        assert await redis_cache.get(NUMBER) is MISS
        assert await client.exists(key) == 0


@pytest.mark.redis
async def test_redis_cache_uses_a_given_client_and_leaves_it_open(redis_url, prefix):
    client = aioredis.Redis.from_url(redis_url)
    cache = RedisCache(client, ttl=60, prefix=prefix)
    await cache.set(NUMBER, None)
    await cache.close()
    assert await client.ping()
    assert await cache.get(NUMBER) is None
    await cache.clear()
    await client.aclose()


def test_bad_redis_url_is_a_clear_error():
    with pytest.raises(ValueError, match="bad redis URL"):
        RedisCache("http://not-redis", ttl=60)


@pytest.mark.redis
async def test_redis_going_away_is_a_miss_warned_once_then_recovers(redis_server, caplog):
    clock = Clock()
    cache = RedisCache(redis_server.url, ttl=60, retry_interval=5, clock=clock)
    caplog.set_level(logging.INFO, logger="caller_id.cache")
    try:
        await cache.set(NUMBER, sample_profile())
        assert await cache.get(NUMBER) == sample_profile()

        redis_server.stop()
        for _ in range(5):
            assert await cache.get(NUMBER) is MISS
            await cache.set(OTHER, None)
            await cache.invalidate([NUMBER])
            clock.now += 1.5  # retries once in a while, every one fails
        assert not cache.is_available
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "redis cache unavailable" in warnings[0].getMessage()

        redis_server.start()  # empty: the server keeps nothing on disk
        clock.now += 5
        assert await cache.get(NUMBER) is MISS
        assert cache.is_available
        await cache.set(NUMBER, sample_profile())
        assert await cache.get(NUMBER) == sample_profile()
        assert any("redis cache is back" in r.getMessage() for r in caplog.records)
    finally:
        await cache.close()


async def test_redis_that_never_answers_is_a_miss():
    # A real socket that accepts and stays silent, like a frozen server.
    held = []

    async def silent(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", ttl=60, socket_timeout=0.05)
    try:
        assert await cache.get(NUMBER) is MISS
        await cache.set(NUMBER, None)
        assert not cache.is_available
    finally:
        await cache.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
