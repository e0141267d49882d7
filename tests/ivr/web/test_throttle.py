"""The log-in throttle: back-off per name and address and per address, a delay per name, never a lock-out;
bounded whatever is sent; shared by the nodes through a real redis-server."""

from __future__ import annotations

import time
import tracemalloc
import uuid

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivr.web import throttle
from ivr.web.client import log_in
from ivr.web.keys import SESSIONS
from ivr.web.throttle import LoginThrottle
from tests.ivr.web.conftest import PASSWORD


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _fail(guard: LoginThrottle, name: str, address: str, times: int) -> None:
    for _ in range(times):
        await guard.failed(name, address)


async def test_wrong_passwords_hold_back_that_address_for_that_name_only(tmp_path):
    clock = Clock()
    guard = LoginThrottle(clock=clock)
    await _fail(guard, "anna", "10.0.0.1", throttle.PAIR_FREE - 1)
    assert (await guard.check("anna", "10.0.0.1")).wait == 0
    await guard.failed("Anna ", "10.0.0.1")  # the same name as typed differently
    first = (await guard.check("anna", "10.0.0.1")).wait
    assert first == pytest.approx(throttle.BACKOFF_START)
    assert (await guard.check("anna", "10.0.0.2")).wait == 0  # anna from elsewhere goes on
    assert (await guard.check("dmitry", "10.0.0.1")).wait == 0  # and so do others from here
    clock.now += first
    assert (await guard.check("anna", "10.0.0.1")).wait == 0  # a back-off, not a lock-out
    await guard.failed("anna", "10.0.0.1")
    assert (await guard.check("anna", "10.0.0.1")).wait == pytest.approx(2 * throttle.BACKOFF_START)
    await guard.succeeded("anna", "10.0.0.1")  # the right password: free again from here
    assert (await guard.check("anna", "10.0.0.1")).wait == 0
    await _fail(guard, "anna", "10.0.0.1", 30)
    assert (await guard.check("anna", "10.0.0.1")).wait == pytest.approx(throttle.BACKOFF_MOST)
    assert (await guard.check("anna", "10.0.0.2")).wait == 0


async def test_one_address_trying_many_names_is_held_back():
    guard = LoginThrottle(clock=Clock())
    for n in range(throttle.ADDRESS_FREE):
        await guard.failed(f"user{n}", "10.0.0.9")
    assert (await guard.check("someone-new", "10.0.0.9")).wait > 0
    assert (await guard.check("someone-new", "10.0.0.10")).wait == 0


async def test_many_addresses_trying_one_name_slow_it_down_without_shutting_it():
    guard = LoginThrottle(clock=Clock())
    for n in range(throttle.USER_FREE + 10):
        await guard.failed("boss", f"10.1.0.{n}")
    verdict = await guard.check("boss", "192.0.2.1")  # the real boss from a new address
    assert verdict.wait == 0 and 0 < verdict.delay <= throttle.DELAY_MOST


async def test_failures_are_forgotten_after_a_while():
    clock = Clock()
    guard = LoginThrottle(clock=clock)
    await _fail(guard, "anna", "10.0.0.1", 10)
    assert guard.tracked == 3
    clock.now += throttle.FORGET_AFTER + 1
    assert (await guard.check("anna", "10.0.0.1")).wait == 0 and guard.tracked == 0


async def test_the_table_stays_bounded_under_ten_thousand_hostile_names():
    guard = LoginThrottle(clock=Clock())
    for n in range(1000):  # warm up: the table at its working size
        await guard.failed(f"warm-{n}-" + "x" * 70, f"10.2.{n // 256}.{n % 256}")
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(10_000):
            await guard.failed(uuid.uuid4().hex * 1875, f"10.3.{n // 256}.{n % 256}")  # 60,000 characters
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert guard.tracked <= throttle.MAX_TRACKED
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 4 * 1024 * 1024, grown  # entries are digests: no name is kept


@pytest.mark.redis
async def test_nodes_share_the_counts_through_redis_and_count_alone_when_it_is_gone(redis_server):
    clients = [aioredis.Redis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
               for _ in range(2)]
    node_a, node_b = LoginThrottle(clients[0]), LoginThrottle(clients[1])
    name = f"shared-{uuid.uuid4().hex}"
    try:
        await _fail(node_a, name, "10.0.0.1", throttle.PAIR_FREE)
        assert (await node_b.check(name, "10.0.0.1")).wait > 0  # counted on A, seen on B
        assert node_a.tracked == 0 and node_b.tracked == 0  # kept in Redis, not in the processes
        keys = [key async for key in clients[0].scan_iter(throttle.REDIS_PREFIX + "*")]
        assert len(keys) == 3 and all(name.encode() not in key for key in keys)
        assert 0 < await clients[0].ttl(keys[0]) <= throttle.FORGET_AFTER
        await node_b.succeeded(name, "10.0.0.1")
        assert (await node_a.check(name, "10.0.0.1")).wait == 0

        redis_server.stop()
        await _fail(node_a, name, "10.0.0.2", throttle.PAIR_FREE)  # no error: counted on this node
        assert (await node_a.check(name, "10.0.0.2")).wait > 0
    finally:
        for client in clients:
            await client.aclose()


async def _browser_from(web_server, address: str) -> aiohttp.ClientSession:
    """A browser whose connections come from `address` (any of 127.0.0.0/8 on this machine)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    return aiohttp.ClientSession(web_server.url, connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_wrong_passwords_from_one_address_do_not_lock_the_user_out_elsewhere(web_server):
    async with await _browser_from(web_server, "127.0.0.2") as attacker:
        for _ in range(throttle.PAIR_FREE):
            assert (await log_in(attacker, "anna", "wrong password")).status == 401
        refused = await log_in(attacker, "anna", PASSWORD)
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    async with await _browser_from(web_server, "127.0.0.3") as anna:
        assert (await log_in(anna, "anna", PASSWORD)).status == 302  # at once, from her own address


async def test_a_blocked_address_sending_unique_huge_names_keeps_nothing(web_server):
    sessions = web_server.runner.app[SESSIONS]
    async with await _browser_from(web_server, "127.0.0.4") as attacker:
        for n in range(throttle.ADDRESS_FREE):
            assert (await log_in(attacker, f"nobody{n}", "wrong password")).status == 401
        tracked = sessions.throttle.tracked
        async with attacker.get("/login") as form:
            page = await form.text()
        started = time.monotonic()
        statuses: dict[int, int] = {}
        for n in range(10_000):
            name = f"{n}-{uuid.uuid4().hex}" if n % 2 else uuid.uuid4().hex * 1875  # 60,000 characters
            token = page.split('name="login_token" value="', 1)[1].split('"', 1)[0]  # each answer has a new one
            async with attacker.post("/login", data={"username": name, "password": "x", "login_token": token},
                                     allow_redirects=False) as response:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                page = await response.text()
        # too long for a user name, or held back; a try now and then as each back-off runs out
        assert set(statuses) <= {400, 401, 429} and statuses[400] == 5000
        assert statuses.get(401, 0) <= 8
        assert sessions.throttle.tracked <= tracked + 2 * statuses.get(401, 0)  # nothing kept for the others
        assert time.monotonic() - started < 120
