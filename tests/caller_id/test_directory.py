"""CallerDirectory: cache, parallel sources, one deadline, failing open."""

import asyncio
import logging
import sqlite3

import asyncpg
import pytest
from sqlalchemy import make_url, update

from caller_id import models as m
from caller_id.cache import InProcessCache, RedisCache
from caller_id.directory import CallerDirectory
from caller_id.lookup import SqlSource
from caller_id.profile import ROLE_PRIVATE, CallerProfile, Customer, Role
from caller_id.store import Database, bump_crm_version
from tests.caller_id.test_lookup import IVAN, seed

UNKNOWN_NUMBER = "+79990000000"


def person(number: str, customer_id: int, name: str = "Ivan") -> CallerProfile:
    return CallerProfile(
        number=number, customers=(Customer(id=customer_id, name=name, segment="B"),),
        roles=(Role(ROLE_PRIVATE, customer_id),),
    )


class Answers:
    """A source that knows a fixed set of numbers and counts its lookups."""

    def __init__(self, name: str, known: dict[str, CallerProfile] | None = None):
        self.name = name
        self.known = known or {}
        self.asked: list[str] = []

    async def lookup(self, number: str) -> CallerProfile | None:
        self.asked.append(number)
        return self.known.get(number)


class Hangs:
    """A source that never answers until released."""

    name = "hung"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled = 0

    async def lookup(self, number: str) -> CallerProfile | None:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return None


class Fails:
    name = "broken"

    async def lookup(self, number: str) -> CallerProfile | None:
        raise RuntimeError(f"backend refused {number}")


def lookup_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("caller-lookup-")]


async def no_tasks_left(directory: CallerDirectory) -> bool:
    for _ in range(3):
        await asyncio.sleep(0)
    return directory.pending_sources == 0 and lookup_tasks() == []


@pytest.fixture
async def seeded_sqlite(sqlite_db):
    await seed(sqlite_db)
    return sqlite_db


# --- answers ----------------------------------------------------------------------

async def test_unusable_caller_id_is_invalid_and_asks_no_source():
    source = Answers("crm")
    directory = CallerDirectory([source], InProcessCache(60, 100), timeout=1)

    result = await directory.lookup("anonymous")

    assert (result.source, result.number, result.degraded) == ("invalid_number", None, None)
    assert not result.is_known and result.profile.number is None
    assert source.asked == []


async def test_crm_answer_is_cached_for_the_next_call(seeded_sqlite):
    directory = CallerDirectory([SqlSource(seeded_sqlite)], InProcessCache(60, 100), timeout=5)

    first = await directory.lookup("8 (916) 123-45-67")
    second = await directory.lookup("+79161234567")

    assert (first.source, first.number, first.degraded) == ("crm", IVAN, None)
    assert first.profile.customers[0].name == "Ivan"
    assert second.source == "cache" and second.profile == first.profile
    assert first.elapsed_ms >= 0 and second.elapsed_ms >= 0


async def test_caller_not_in_crm_is_cached_as_absent(seeded_sqlite):
    directory = CallerDirectory([SqlSource(seeded_sqlite)], InProcessCache(60, 100), timeout=5)

    first = await directory.lookup(UNKNOWN_NUMBER)
    second = await directory.lookup(UNKNOWN_NUMBER)

    assert first.source == "not_found" and first.profile.number == UNKNOWN_NUMBER
    assert not first.is_known
    assert second.source == "cache" and not second.is_known and second.profile.number == UNKNOWN_NUMBER


async def test_first_source_in_order_wins_even_when_it_answers_last():
    second_answered = asyncio.Event()

    class SlowFirst:
        name = "first"

        async def lookup(self, number):
            await second_answered.wait()
            return person(number, 1, "from first")

    class FastSecond:
        name = "second"

        async def lookup(self, number):
            second_answered.set()
            return person(number, 2, "from second")

    directory = CallerDirectory([SlowFirst(), FastSecond()], None, timeout=5)
    result = await directory.lookup(IVAN)

    assert result.source == "crm" and result.profile.customers[0].name == "from first"


async def test_later_source_answers_when_earlier_ones_do_not_know_the_number():
    directory = CallerDirectory(
        [Answers("empty"), Answers("other", {IVAN: person(IVAN, 5)})], None, timeout=5,
    )
    result = await directory.lookup(IVAN)
    assert result.source == "crm" and result.profile.customers[0].id == 5


async def test_failing_source_is_logged_masked_and_the_next_one_answers(caplog):
    caplog.set_level(logging.WARNING, logger="caller_id.directory")
    directory = CallerDirectory([Fails(), Answers("crm", {IVAN: person(IVAN, 5)})], None, timeout=5)

    result = await directory.lookup(IVAN)

    assert result.source == "crm" and result.degraded is None
    logged = caplog.text
    assert "caller source broken failed for +*******4567" in logged
    assert "backend refused +*******4567" in logged
    assert "9161234567" not in logged


async def test_every_source_failing_gives_unknown_caller_with_reason():
    cache = InProcessCache(60, 100)
    directory = CallerDirectory([Fails()], cache, timeout=5)

    result = await directory.lookup(IVAN)

    assert result.source == "error" and "broken" in result.degraded
    assert not result.is_known and result.profile.number == IVAN
    assert len(cache) == 0  # a failure is not "not in the CRM"


# --- bounded time -------------------------------------------------------------------

async def test_hung_source_gives_timeout_and_leaves_no_task():
    hung = Hangs()
    cache = InProcessCache(60, 100)
    directory = CallerDirectory([hung], cache, timeout=0.05)

    result = await asyncio.wait_for(directory.lookup(IVAN), 5)

    assert result.source == "timeout" and "hung" in result.degraded and "50 ms" in result.degraded
    assert not result.is_known and result.profile.number == IVAN
    assert await no_tasks_left(directory)
    assert hung.cancelled == 1
    assert len(cache) == 0  # the next call asks again


async def test_hung_first_source_does_not_hide_a_later_answer():
    directory = CallerDirectory([Hangs(), Answers("crm", {IVAN: person(IVAN, 5)})], None, timeout=0.05)

    result = await asyncio.wait_for(directory.lookup(IVAN), 5)

    assert result.source == "crm" and result.profile.customers[0].id == 5
    assert await no_tasks_left(directory)


async def test_caller_hanging_up_mid_lookup_cancels_the_sources():
    hung = Hangs()
    directory = CallerDirectory([hung], None, timeout=60)

    call = asyncio.create_task(directory.lookup(IVAN))
    while not lookup_tasks():
        await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert await no_tasks_left(directory)
    assert hung.cancelled == 1


async def test_sqlite_file_locked_by_another_writer_gives_timeout(seeded_sqlite):
    directory = CallerDirectory([SqlSource(seeded_sqlite)], InProcessCache(60, 100), timeout=0.2)
    # The database is in WAL mode, where readers pass a plain writer: a
    # writer in exclusive locking mode shuts everyone out, once the pooled
    # connections that hold the file open are gone.
    await seeded_sqlite.engine.dispose()
    writer = sqlite3.connect(make_url(seeded_sqlite.url).database, isolation_level=None, timeout=0)
    try:
        writer.execute("PRAGMA locking_mode=EXCLUSIVE")
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE crm_version SET version = version + 1")

        result = await asyncio.wait_for(directory.lookup(IVAN), 5)

        assert result.source == "timeout" and not result.is_known
    finally:
        writer.rollback()
        writer.close()
    await asyncio.wait_for(directory.close(), 15)
    assert await no_tasks_left(directory)
    # The database is usable again (a fresh connection: given time, the machine may be busy).
    again = CallerDirectory([SqlSource(seeded_sqlite)], InProcessCache(60, 100), timeout=5)
    try:
        assert (await again.lookup(IVAN)).source == "crm"
    finally:
        await again.close()


@pytest.fixture
async def seeded_postgres(postgres_fresh_url):
    db = Database(postgres_fresh_url)
    await db.migrate()
    await seed(db)
    yield db
    await db.dispose()


@pytest.mark.postgres
async def test_postgres_table_locked_by_another_session_gives_timeout(seeded_postgres, postgres_fresh_url):
    directory = CallerDirectory([SqlSource(seeded_postgres)], InProcessCache(60, 100), timeout=0.2)
    await directory.lookup(UNKNOWN_NUMBER)  # a pooled connection exists already
    url = make_url(postgres_fresh_url)
    locker = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE phone_numbers IN ACCESS EXCLUSIVE MODE")

        result = await asyncio.wait_for(directory.lookup(IVAN), 5)

        assert result.source == "timeout" and not result.is_known
        await transaction.rollback()
    finally:
        await locker.close()
    await asyncio.wait_for(directory.close(), 15)
    assert await no_tasks_left(directory)
    assert (await directory.lookup(IVAN)).source == "crm"


# --- Redis and the CRM generation ------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.redis
async def test_lookups_answer_from_sql_while_redis_is_down_and_use_it_again_after(
    seeded_sqlite, redis_server, caplog
):
    clock = Clock()
    cache = RedisCache(redis_server.url, ttl=60, retry_interval=1, clock=clock)
    directory = CallerDirectory([SqlSource(seeded_sqlite)], cache, timeout=2, db_for_version=seeded_sqlite)
    await directory.start()
    caplog.set_level(logging.WARNING, logger="caller_id")
    try:
        assert (await directory.lookup(IVAN)).source == "crm"
        assert (await directory.lookup(IVAN)).source == "cache"

        redis_server.stop()
        for _ in range(3):
            result = await directory.lookup(IVAN)
            assert result.source == "crm" and result.profile.customers[0].name == "Ivan"
            clock.now += 0.5
        assert [r.name for r in caplog.records] == ["caller_id.cache"]

        redis_server.start()
        clock.now += 1
        assert (await directory.lookup(IVAN)).source == "crm"  # refills the empty Redis
        assert (await directory.lookup(IVAN)).source == "cache"
    finally:
        await directory.close()
        await cache.close()


async def test_crm_version_bump_makes_the_cache_miss(seeded_sqlite):
    directory = CallerDirectory(
        [SqlSource(seeded_sqlite)], InProcessCache(60, 100), timeout=5, db_for_version=seeded_sqlite,
    )
    await directory.start()
    try:
        assert (await directory.lookup(IVAN)).profile.customers[0].segment == "B"
        assert (await directory.lookup(IVAN)).source == "cache"

        async with seeded_sqlite.session() as session:
            await session.execute(update(m.Customer).where(m.Customer.name == "Ivan").values(segment="A"))
            await bump_crm_version(session)
            await session.commit()
        assert (await directory.lookup(IVAN)).source == "cache"  # not polled yet
        await directory.refresh_version()

        result = await directory.lookup(IVAN)
        assert result.source == "crm" and result.profile.customers[0].segment == "A"
    finally:
        await directory.close()


@pytest.mark.redis
async def test_crm_version_bump_reaches_every_node_sharing_redis(seeded_sqlite, redis_url):
    prefix = "test:generation:"
    caches = [RedisCache(redis_url, ttl=60, prefix=prefix) for _ in range(2)]
    await caches[0].clear()
    nodes = [
        CallerDirectory([SqlSource(seeded_sqlite)], cache, timeout=5,
                        db_for_version=seeded_sqlite, version_poll=0.02)
        for cache in caches
    ]
    for node in nodes:
        await node.start()
    try:
        assert (await nodes[0].lookup(IVAN)).source == "crm"
        assert (await nodes[1].lookup(IVAN)).source == "cache"  # filled by the other node

        async with seeded_sqlite.session() as session:
            await bump_crm_version(session)
            await session.commit()
        version = await seeded_sqlite.crm_version()
        async with asyncio.timeout(5):  # both pollers pick the new version up
            while any(cache.generation != version for cache in caches):
                await asyncio.sleep(0.01)

        assert (await nodes[1].lookup(IVAN)).source == "crm"
        assert (await nodes[0].lookup(IVAN)).source == "cache"
    finally:
        for node in nodes:
            await node.close()
        await caches[0].clear()
        for cache in caches:
            await cache.close()


async def test_answer_read_while_the_generation_moved_is_not_cached():
    cache = InProcessCache(60, 100)

    class BumpsMidway:
        name = "crm"

        async def lookup(self, number):
            cache.use_generation(cache.generation + 1)  # a poll lands during the read
            return person(number, 5)

    directory = CallerDirectory([BumpsMidway()], cache, timeout=5)
    assert (await directory.lookup(IVAN)).source == "crm"
    assert len(cache) == 0


async def test_cache_is_unused_until_the_crm_version_is_known(seeded_sqlite):
    class Unreadable:
        async def crm_version(self):
            raise OSError("database unreachable")

    cache = InProcessCache(60, 100)
    directory = CallerDirectory([SqlSource(seeded_sqlite)], cache, timeout=5, db_for_version=Unreadable())
    await directory.start()
    try:
        assert (await directory.lookup(IVAN)).source == "crm"
        assert (await directory.lookup(IVAN)).source == "crm"
        assert len(cache) == 0
    finally:
        await directory.close()


async def test_invalidate_forgets_cached_numbers():
    source = Answers("crm", {IVAN: person(IVAN, 5)})
    directory = CallerDirectory([source], InProcessCache(60, 100), timeout=5)
    await directory.lookup(IVAN)
    await directory.invalidate([IVAN])
    assert (await directory.lookup(IVAN)).source == "crm"
    assert len(source.asked) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"sources": [], "timeout": 1}, "at least one source"),
    ({"sources": [Fails()], "timeout": 0}, "timeout must be positive"),
])
def test_bad_directory_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CallerDirectory(cache=None, **kwargs)
