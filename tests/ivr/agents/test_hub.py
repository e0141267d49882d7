"""The message hub: in process, and across "nodes" through a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import redis.asyncio as aioredis

from ivr.agents.hub import HubClosed, InProcessHub, RedisHub, Subscription, SubscriptionClosed, agent_topic
from tests.waiting import eventually


def fast_hub(url_or_client, **kwargs) -> RedisHub:
    options = dict(prefix=f"test:{uuid.uuid4().hex[:8]}:", ping_interval=0.5, ping_timeout=0.5,
                   reconnect_initial=0.05, reconnect_max=0.2, connect_timeout=0.5, publish_timeout=0.5)
    options.update(kwargs)
    return RedisHub(url_or_client, **options)


# --- in process ------------------------------------------------------------------

async def test_every_subscriber_of_a_topic_gets_the_message_and_other_topics_nothing():
    hub = InProcessHub()
    first, second = hub.subscribe(agent_topic(1)), hub.subscribe(agent_topic(1))
    other = hub.subscribe(agent_topic(2))
    await hub.publish("agent:1", {"text": "Звонит Иванов"})
    assert await first.get(1) == {"text": "Звонит Иванов"}
    assert await second.get(1) == {"text": "Звонит Иванов"}
    assert other.pending == 0
    await hub.close()


async def test_a_slow_subscriber_loses_its_oldest_messages_and_never_blocks_the_publisher():
    hub = InProcessHub()
    slow = hub.subscribe("wallboard", maxsize=3)
    fast = hub.subscribe("wallboard")
    for n in range(10):
        await hub.publish("wallboard", {"n": n})  # returns although nobody reads `slow`
    assert [slow.get_nowait()["n"] for _ in range(3)] == [7, 8, 9]
    assert slow.dropped == 7
    assert fast.dropped == 0 and fast.pending == 10
    await hub.close()


async def test_closing_a_subscription_ends_its_iteration_and_stops_delivery():
    hub = InProcessHub()
    sub = hub.subscribe("agent:5")
    received = []

    async def read() -> None:
        async for message in sub:
            received.append(message)

    reader = asyncio.create_task(read())
    await hub.publish("agent:5", {"n": 1})
    await eventually(lambda: received)
    sub.close()
    await asyncio.wait_for(reader, 1)
    await hub.publish("agent:5", {"n": 2})
    assert received == [{"n": 1}]
    assert hub.subscribers("agent:5") == 0
    await hub.close()


async def test_closing_the_hub_ends_every_subscription_and_refuses_new_ones():
    hub = InProcessHub()
    sub = hub.subscribe("wallboard")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await hub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiting, 1)
    assert sub.closed
    with pytest.raises(HubClosed):
        hub.subscribe("wallboard")


async def test_subscription_works_as_a_context_manager():
    hub = InProcessHub()
    with hub.subscribe("agent:1") as sub:
        assert await sub.wait_ready(0) is True
        await hub.publish("agent:1", {"ok": True})
        assert await sub.get(1) == {"ok": True}
    assert sub.closed and hub.subscribers("agent:1") == 0


def test_a_subscription_needs_room_for_one_message():
    with pytest.raises(ValueError):
        Subscription("x", 0)


# --- across nodes: Redis ------------------------------------------------------------

@pytest.mark.redis
async def test_a_message_published_on_one_node_reaches_subscribers_on_the_other(redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    node_a, node_b = fast_hub(redis_url, prefix=prefix), fast_hub(redis_url, prefix=prefix)
    try:
        on_a = node_a.subscribe("agent:7")
        on_b1, on_b2 = node_b.subscribe("agent:7"), node_b.subscribe("agent:7")
        elsewhere = node_b.subscribe("agent:8")
        assert await on_b1.wait_ready(5) and await on_a.wait_ready(5)
        await node_a.publish("agent:7", {"card": {"name": "Иванов Пётр", "org": "ООО «Ромашка»"}})
        for sub in (on_b1, on_b2, on_a):
            assert await sub.get(5) == {"card": {"name": "Иванов Пётр", "org": "ООО «Ромашка»"}}
        await node_a.publish("agent:7", {"n": 2})
        assert await on_b1.get(5) == {"n": 2}
        assert await on_a.get(5) == {"n": 2}
        assert on_a.pending == 0  # its own message came once, not again through Redis
        assert elsewhere.pending == 0
    finally:
        await node_a.close()
        await node_b.close()


@pytest.mark.redis
async def test_each_node_keeps_one_subscriber_connection_for_all_its_topics(redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(redis_url)
    node = fast_hub(redis_url, prefix=prefix)
    try:
        before = len(await client.client_list(_type="pubsub"))
        subs = [node.subscribe(agent_topic(n)) for n in range(20)] + [node.subscribe("wallboard") for _ in range(5)]
        for sub in subs:
            assert await sub.wait_ready(5)
        assert len(await client.client_list(_type="pubsub")) == before + 1
        channels = {c.decode() for c in await client.pubsub_channels(prefix + "*")}
        assert channels == {prefix + agent_topic(n) for n in range(20)} | {prefix + "wallboard"}
        for sub in subs[:20]:
            sub.close()  # the last local subscriber of a topic gone: unsubscribed from Redis

        async def only_wallboard() -> bool:
            return {c.decode() for c in await client.pubsub_channels(prefix + "*")} == {prefix + "wallboard"}

        async with asyncio.timeout(5):
            while not await only_wallboard():
                await asyncio.sleep(0.02)
    finally:
        await node.close()
        await client.aclose()


@pytest.mark.redis
async def test_a_hub_made_from_a_client_uses_its_settings_and_leaves_it_open(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    node_a, node_b = fast_hub(client, prefix=prefix), fast_hub(redis_url, prefix=prefix)
    try:
        sub = node_b.subscribe("wallboard")
        assert await sub.wait_ready(5)
        await node_a.publish("wallboard", {"queues": 3})
        assert await sub.get(5) == {"queues": 3}
    finally:
        await node_a.close()
        await node_b.close()
    assert await client.ping()
    await client.aclose()


@pytest.mark.redis
async def test_a_hub_logs_in_with_the_password_of_its_url_and_a_wrong_one_keeps_it_out(redis_server):
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    address = f"127.0.0.1:{redis_server.port}/0"
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    node_a, node_b = fast_hub(f"redis://:s3cret@{address}", prefix=prefix), fast_hub(f"redis://:s3cret@{address}",
                                                                                      prefix=prefix)
    refused = fast_hub(f"redis://:wrong@{address}", prefix=prefix)
    try:
        sub = node_b.subscribe("wallboard")
        assert await sub.wait_ready(5)
        await node_a.publish("wallboard", {"queues": 3})
        assert await sub.get(5) == {"queues": 3}
        assert await refused.wait_connected(1) is False
        assert refused.last_error
    finally:
        for node in (node_a, node_b, refused):
            await node.close()


@pytest.mark.redis
async def test_foreign_messages_on_a_hub_channel_are_ignored_and_counted(redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(redis_url)
    node = fast_hub(redis_url, prefix=prefix)
    try:
        sub = node.subscribe("wallboard")
        assert await sub.wait_ready(5)
        await client.publish(prefix + "wallboard", b"\xff not json")
        await client.publish(prefix + "wallboard", '{"node": "x", "topic": "wallboard", "message": {"ok": 1}}')
        assert await sub.get(5) == {"ok": 1}
        assert node.stats["bad_messages"] == 1
    finally:
        await node.close()
        await client.aclose()


@pytest.mark.redis
async def test_nodes_survive_redis_going_away_and_coming_back(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="ivr.agents.hub")
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    node_a, node_b = fast_hub(redis_server.url, prefix=prefix), fast_hub(redis_server.url, prefix=prefix)
    try:
        on_a, on_b = node_a.subscribe("agent:1"), node_b.subscribe("agent:1")
        assert await on_a.wait_ready(5) and await on_b.wait_ready(5)

        redis_server.stop()
        await eventually(lambda: not node_a.connected and not node_b.connected)
        for n in range(5):
            await node_a.publish("agent:1", {"during": n})  # must not wait on the dead Redis
        # Fail open: this node's subscribers still get this node's messages.
        assert [(await on_a.get(2))["during"] for _ in range(5)] == [0, 1, 2, 3, 4]
        await asyncio.sleep(0.5)  # a few reconnect attempts while Redis is down

        redis_server.start()
        assert await on_a.wait_ready(10) and await on_b.wait_ready(10)
        await node_a.publish("agent:1", {"after": True})
        # What was published during the outage is lost for the other node; the hub carries on.
        assert await on_b.get(5) == {"after": True}
        assert await on_a.get(5) == {"after": True}
        assert on_b.pending == 0
    finally:
        await node_a.close()
        await node_b.close()
    for node in (node_a, node_b):
        down = [r for r in caplog.records if r.levelno == logging.WARNING and "Redis unavailable" in r.getMessage()]
        assert down, "the outage was not logged"
    # Logged once per node and outage, however many reconnect attempts failed.
    downs = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    backs = [r for r in caplog.records if "Redis is back" in r.getMessage()]
    assert len(downs) == 2 and len(backs) == 2


@pytest.mark.redis
async def test_publishing_while_redis_was_never_there_is_harmless(unused_tcp_port):
    node = fast_hub(f"redis://127.0.0.1:{unused_tcp_port}/0")
    sub = node.subscribe("wallboard")
    await node.publish("wallboard", {"x": 1})
    assert await sub.get(1) == {"x": 1}
    assert await sub.wait_ready(0.2) is False
    await node.close()
