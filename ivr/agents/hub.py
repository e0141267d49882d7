"""Fan-out of live messages to agents' and supervisors' pages: in process or across nodes.

Topics are plain strings: ``"agent:<agent_id>"`` (that agent's screen-pops)
and ``"wallboard"`` (queue snapshots for supervisors); see `agent_topic`.
Messages are JSON-able dicts.

::

    hub = InProcessHub()                  # one node
    hub = RedisHub(redis_url)             # several nodes sharing Redis
    sub = hub.subscribe("agent:42")       # in a WebSocket handler
    try:
        async for message in sub:         # ends when sub or the hub is closed
            await websocket.send_json(message)
    finally:
        sub.close()
    ...
    await hub.publish("agent:42", {"type": "screenpop", ...})   # never waits on a subscriber
    await hub.close()

A subscription is a bounded queue (`maxsize`).  A subscriber that falls
behind loses its *oldest* messages, counted in `Subscription.dropped`;
`publish` never blocks on it.  Delivered dicts are shared between the
subscribers of a topic: treat them as read-only.

`RedisHub` delivers what is published on this node to this node's
subscribers at once, without a round trip, and sends it to the other nodes
through Redis pub/sub (channel ``<prefix><topic>``, an envelope that names
the sending node, so a node never delivers its own message twice).  Each
node keeps ONE subscriber connection to Redis, subscribed to the topics its
local subscribers want, checked with a PING every `ping_interval`; after
Redis goes away the hub reconnects with capped backoff and subscribes again;
what other nodes published meanwhile is lost.  The outage is logged once and
its end once.  Publishing to Redis happens on a background task with a
bounded outbox (a pipeline of PUBLISH on the redis-py client), so a slow or
dead Redis never slows the publisher, and local subscribers keep getting
local messages while Redis is down (fail open).

The subscriber connection is a redis-py connection made with the client's
settings: redis-py connects (TCP, TLS or a Unix socket), authenticates,
encodes the commands and parses the replies.  The hub drives it itself
rather than through redis-py's `PubSub`, which cannot keep this behaviour:

* `subscribe` and `Subscription.close` are synchronous and never wait on
  Redis; `PubSub.subscribe` and `unsubscribe` are coroutines, so the hub
  queues SUBSCRIBE and UNSUBSCRIBE for one writer task instead.
* `PubSub` connects again, and subscribes again, inside its own reads and
  commands, by the client's retry policy; that would hide an outage from
  `connected`, `wait_ready` and the once-per-outage log lines, and from the
  hub's backoff.
* `PubSub` has no connection before its first channel; the hub's connection,
  its PING and `wait_connected` hold while no page subscribes to anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAXSIZE",
    "WALLBOARD",
    "Hub",
    "HubClosed",
    "InProcessHub",
    "RedisHub",
    "Subscription",
    "SubscriptionClosed",
    "agent_topic",
]

WALLBOARD = "wallboard"
DEFAULT_MAXSIZE = 1000  # messages a subscriber may have unread before the oldest are dropped


def agent_topic(agent_id: int | str) -> str:
    """The topic of one agent's screen: ``agent:<id>``."""
    return f"agent:{agent_id}"


class HubClosed(RuntimeError):
    """The hub was closed: no new subscriptions."""


class SubscriptionClosed(Exception):
    """`Subscription.get` on a closed subscription (iteration simply ends instead)."""


# --------------------------------------------------------------------------
# subscriptions
# --------------------------------------------------------------------------


class Subscription:
    """Messages of one topic for one subscriber: an async iterator of dicts.

    Iteration ends when the subscription or its hub is closed (messages not
    yet read are then discarded).  `dropped` counts the messages this
    subscriber lost by falling more than `maxsize` behind.
    """

    def __init__(self, topic: str, maxsize: int, *, on_close: Callable[[Subscription], None] | None = None,
                 ready: Callable[[str, float | None], Awaitable[bool]] | None = None):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.topic = topic
        self.maxsize = maxsize
        self.dropped = 0
        self.received = 0
        self._items: deque[dict[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._on_close = on_close
        self._ready = ready

    def __repr__(self) -> str:
        return (f"Subscription({self.topic!r}, pending={len(self._items)}, dropped={self.dropped}"
                + (", closed)" if self._closed else ")"))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Messages delivered and not read yet."""
        return len(self._items)

    def deliver(self, message: dict[str, Any]) -> None:
        """Queue one message (called by the hub; never blocks, never raises)."""
        if self._closed:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("hub: a subscriber of %s is behind; %d messages dropped so far",
                            self.topic, self.dropped)
        self._items.append(message)
        self.received += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> dict[str, Any] | None:
        """The oldest unread message, or None when there is none."""
        return self._items.popleft() if self._items else None

    async def get(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; TimeoutError after `timeout`, SubscriptionClosed once closed."""
        if timeout is None:
            return await self._next()
        async with asyncio.timeout(timeout):
            return await self._next()

    async def _next(self) -> dict[str, Any]:
        while True:
            if self._closed:
                raise SubscriptionClosed(self.topic)
            if self._items:
                return self._items.popleft()
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self._next()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once messages from other nodes reach this subscription (at once in process).

        False if that did not happen within `timeout` (Redis down, say);
        local messages flow either way.
        """
        if self._closed:
            return False
        if self._ready is None:
            return True
        return await self._ready(self.topic, timeout)

    def close(self) -> None:
        """Stop receiving; a pending iteration ends.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._items.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


@runtime_checkable
class Hub(Protocol):
    """What the screen-pop, the wallboard and the web app need from a hub."""

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Deliver to every subscriber of `topic` (on every node); never waits on them."""
        ...

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> Subscription: ...

    async def close(self) -> None: ...


class _LocalTopics:
    """This process's subscriptions by topic."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list[Subscription]] = {}

    def add(self, sub: Subscription) -> bool:
        """Register; True when it is the topic's first local subscriber."""
        subs = self.by_topic.setdefault(sub.topic, [])
        subs.append(sub)
        return len(subs) == 1

    def remove(self, sub: Subscription) -> bool:
        """Unregister; True when the topic has no local subscriber left."""
        subs = self.by_topic.get(sub.topic)
        if not subs or sub not in subs:
            return False
        subs.remove(sub)
        if not subs:
            del self.by_topic[sub.topic]
            return True
        return False

    def deliver(self, topic: str, message: dict[str, Any]) -> int:
        subs = self.by_topic.get(topic)
        if not subs:
            return 0
        for sub in tuple(subs):
            sub.deliver(message)
        return len(subs)

    def close_all(self) -> None:
        for subs in list(self.by_topic.values()):
            for sub in tuple(subs):
                sub.close()
        self.by_topic.clear()


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise ValueError("a topic is a non-empty string")


# --------------------------------------------------------------------------
# in process
# --------------------------------------------------------------------------


class InProcessHub:
    """Subscribers in this process only (one node, tests, demos)."""

    def __init__(self, *, maxsize: int = DEFAULT_MAXSIZE):
        self.maxsize = maxsize
        self._topics = _LocalTopics()
        self._closed = False
        self.stats: dict[str, int] = {"published": 0, "delivered": 0}

    @property
    def connected(self) -> bool:
        return not self._closed

    def subscribers(self, topic: str) -> int:
        return len(self._topics.by_topic.get(topic, ()))

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        _check_topic(topic)
        if self._closed:
            return
        self.stats["published"] += 1
        self.stats["delivered"] += self._topics.deliver(topic, message)

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> Subscription:
        _check_topic(topic)
        if self._closed:
            raise HubClosed("the hub is closed")
        sub = Subscription(topic, maxsize or self.maxsize, on_close=self._topics.remove)
        self._topics.add(sub)
        return sub

    async def close(self) -> None:
        self._closed = True
        self._topics.close_all()


# --------------------------------------------------------------------------
# across nodes: Redis pub/sub
# --------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisHub:
    """Subscribers on every node that shares one Redis (see the module docstring).

    redis            a URL (``redis://[user:password@]host:port/db``,
                     ``rediss://`` for TLS, ``unix:///path``) or a ready
                     ``redis.asyncio.Redis``; a client given is used to
                     publish and left open, its connection settings are used
                     for the subscriber connection
    prefix           Redis channel name = prefix + topic
    node_id          names this node in the envelope (random by default)
    maxsize          default bound of a subscription's queue
    ping_interval    a PING on the subscriber connection this often; no
    ping_timeout     reply within ping_interval + ping_timeout: reconnect
    reconnect_initial, reconnect_max   backoff between connection attempts
    publish_timeout  one batch of publishes to Redis may take this long
    max_outbox       messages waiting to go to Redis before the oldest are dropped
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "ivr:hub:",
        node_id: str | None = None,
        maxsize: int = DEFAULT_MAXSIZE,
        ping_interval: float = 5.0,
        ping_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        publish_timeout: float = 1.0,
        max_outbox: int = 10_000,
        publish_batch: int = 500,
    ):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self.prefix = prefix
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.maxsize = maxsize
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.publish_timeout = publish_timeout
        self.publish_batch = publish_batch
        if isinstance(redis, str):
            self._client = aioredis.Redis.from_url(
                redis, socket_timeout=publish_timeout, socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._owns_client = True
        else:
            self._client = redis
            self._owns_client = False
        pool = self._client.connection_pool
        self._connection_class = pool.connection_class
        # The client's address, TLS, credentials and protocol; replies as bytes; one connection attempt
        # per try (the hub backs off itself); no read timeout (the hub's PING tells a dead connection).
        self._connection_kwargs = {
            **pool.connection_kwargs, "decode_responses": False, "socket_timeout": None,
            "health_check_interval": 0, "retry": Retry(NoBackoff(), 0),
        }
        self._topics = _LocalTopics()
        self._outbox: deque[tuple[str, str]] = deque(maxlen=max_outbox)
        self._outbox_ready = asyncio.Event()
        self._connection: Any = None  # the subscriber connection while it is up
        self._commands: deque[tuple[str, ...]] = deque()  # for the subscriber connection, in order
        self._commands_ready = asyncio.Event()
        self._confirmed: set[str] = set()  # channels Redis confirmed on the current connection
        self._state_changed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._down_logged = False
        self._rng = random.Random()
        self.last_error: str | None = None
        self.stats: dict[str, int] = {
            "published": 0, "delivered": 0, "sent": 0, "received": 0, "lost": 0,
            "outbox_dropped": 0, "bad_messages": 0, "connects": 0, "disconnects": 0,
        }

    def __repr__(self) -> str:
        return f"RedisHub(node={self.node_id!r}, connected={self.connected})"

    # -- state ---------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """The subscriber connection to Redis is up."""
        return self._connection is not None

    def subscribers(self, topic: str) -> int:
        return len(self._topics.by_topic.get(topic, ()))

    def channel(self, topic: str) -> str:
        return self.prefix + topic

    # -- the Hub interface -----------------------------------------------------
    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        _check_topic(topic)
        if self._closed:
            return
        payload = json.dumps({"node": self.node_id, "topic": topic, "message": message},
                             ensure_ascii=False, separators=(",", ":"))
        self._start()
        self.stats["published"] += 1
        self.stats["delivered"] += self._topics.deliver(topic, message)
        if len(self._outbox) == self._outbox.maxlen:
            self.stats["outbox_dropped"] += 1
        self._outbox.append((self.channel(topic), payload))
        self._outbox_ready.set()

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> Subscription:
        _check_topic(topic)
        if self._closed:
            raise HubClosed("the hub is closed")
        self._start()
        sub = Subscription(topic, maxsize or self.maxsize, on_close=self._unsubscribe, ready=self._wait_topic)
        if self._topics.add(sub):
            self._send("SUBSCRIBE", self.channel(topic))
        return sub

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._topics.close_all()
        for task in (self._listener, self._sender):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._listener, self._sender) if t is not None), return_exceptions=True)
        self._listener = self._sender = None
        if self._owns_client:
            try:
                await self._client.aclose()
            except Exception:  # noqa: BLE001 - closing a client of a dead Redis
                pass

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """True once the subscriber connection is up (False after `timeout`)."""
        return await self._wait(lambda: self.connected, timeout)

    # -- internals: subscriptions ----------------------------------------------
    def _unsubscribe(self, sub: Subscription) -> None:
        if self._topics.remove(sub) and not self._closed:
            self._send("UNSUBSCRIBE", self.channel(sub.topic))

    async def _wait_topic(self, topic: str, timeout: float | None) -> bool:
        channel = self.channel(topic)
        return await self._wait(lambda: channel in self._confirmed, timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        self._start()
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    if self._closed:
                        return False
                    self._state_changed.clear()
                    await self._state_changed.wait()
        except TimeoutError:
            return predicate()
        return True

    def _changed(self) -> None:
        self._state_changed.set()

    def _send(self, *command: str) -> None:
        """Queue a command for the subscriber connection (never waits)."""
        if self._connection is None:
            return  # subscribed again from the topic list on the next connection
        self._commands.append(command)
        self._commands_ready.set()

    def _start(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done():
            self._listener = loop.create_task(self._listen(), name=f"hub-listener-{self.node_id}")
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_loop(), name=f"hub-sender-{self.node_id}")

    # -- internals: outage reporting (once per outage) ---------------------------
    def _went_down(self, reason: str) -> None:
        self.last_error = reason
        if not self._down_logged:
            self._down_logged = True
            log.warning("hub: Redis unavailable (%s); messages to and from other nodes are lost "
                        "until it is back; this node's subscribers still get this node's messages", reason)

    def _came_back(self) -> None:
        if self._down_logged:
            self._down_logged = False
            log.info("hub: Redis is back; messages flow between nodes again")
        self.last_error = None

    # -- internals: the subscriber connection ---------------------------------------
    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        attempt = 0
        while not self._closed:
            connection: Any = None
            writer: asyncio.Task[None] | None = None
            try:
                connection = self._connection_class(**self._connection_kwargs)
                async with asyncio.timeout(self.connect_timeout):
                    await connection.connect()
                # No await between reading the topic list and publishing the connection:
                # a subscribe() after this line queues its own SUBSCRIBE.
                channels = [self.channel(t) for t in self._topics.by_topic]
                self._commands.clear()  # what an earlier connection left unsent
                if channels:
                    self._commands.append(("SUBSCRIBE", *channels))
                self._commands.append(("PING",))
                self._connection = connection
                self.stats["connects"] += 1
                self._came_back()
                self._changed()
                attempt = 0
                writer = asyncio.get_running_loop().create_task(self._write(connection), name="hub-writer")
                await self._read(connection)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, RedisError) as exc:
                self._went_down(str(exc) or type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - keep the hub alive whatever it was
                log.exception("hub: subscriber connection failed")
                self._went_down(str(exc) or type(exc).__name__)
            finally:
                if writer is not None:
                    writer.cancel()
                if self._connection is connection:
                    self.stats["disconnects"] += 1
                self._connection = None
                self._confirmed.clear()
                self._changed()
                if connection is not None:
                    await connection.disconnect(nowait=True)
            if self._closed:
                return
            delay = min(self.reconnect_max, self.reconnect_initial * 2 ** min(attempt, 20))
            attempt += 1
            await asyncio.sleep(delay * (0.5 + 0.5 * self._rng.random()))

    async def _write(self, connection: Any) -> None:
        """Send the queued commands in order, and a PING every `ping_interval`."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval
        try:
            # Checked before every send: redis-py would open a closed connection again by itself.
            while connection.is_connected:
                if self._commands:
                    command = connection.pack_command(*self._commands.popleft())
                    await connection.send_packed_command(command, check_health=False)
                    continue
                self._commands_ready.clear()
                try:
                    async with asyncio.timeout_at(next_ping):
                        await self._commands_ready.wait()
                except TimeoutError:
                    self._commands.append(("PING",))
                    next_ping = loop.time() + self.ping_interval
        except Exception as exc:  # noqa: BLE001 - the reader notices and reconnects
            log.debug("hub: write to Redis failed: %s", exc)

    async def _read(self, connection: Any) -> None:
        silence = self.ping_interval + self.ping_timeout
        while True:
            try:
                async with asyncio.timeout(silence):
                    reply = await connection.read_response(push_request=True)  # RESP3: pub/sub pushes too
            except TimeoutError:
                raise TimeoutError(f"no answer from Redis for {silence:g} s") from None
            self._on_reply(reply)

    def _on_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return  # PONG before any subscription
        kind = _text(reply[0]).lower()
        if kind == "message" and len(reply) >= 3:
            self._on_message(_text(reply[1]), reply[2])
        elif kind == "subscribe" and len(reply) >= 2:
            self._confirmed.add(_text(reply[1]))
            self._changed()
        elif kind == "unsubscribe" and len(reply) >= 2:
            channel = _text(reply[1])
            topic = channel[len(self.prefix):] if channel.startswith(self.prefix) else None
            if topic is None or topic not in self._topics.by_topic:
                self._confirmed.discard(channel)
            self._changed()

    def _on_message(self, channel: str, data: Any) -> None:
        try:
            envelope = json.loads(data)
            if envelope.get("node") == self.node_id:
                return  # ours: already delivered locally by publish()
            topic = envelope.get("topic") or channel[len(self.prefix):]
            message = envelope["message"]
            if not isinstance(message, dict):
                raise ValueError("message is not an object")
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the hub
            self.stats["bad_messages"] += 1
            log.warning("hub: ignored a message on %s that is not a hub envelope: %s", channel, exc)
            return
        self.stats["received"] += 1
        self.stats["delivered"] += self._topics.deliver(topic, message)

    # -- internals: publishing to Redis ---------------------------------------------
    async def _send_loop(self) -> None:
        failures = 0
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            batch = [self._outbox.popleft() for _ in range(min(self.publish_batch, len(self._outbox)))]
            try:
                async with asyncio.timeout(self.publish_timeout):
                    async with self._client.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                self.stats["sent"] += len(batch)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: lose these, keep going
                self.stats["lost"] += len(batch)
                self._went_down(f"publish failed: {exc or type(exc).__name__}")
                delay = min(self.reconnect_max, self.reconnect_initial * 2 ** min(failures, 20))
                failures += 1
                await asyncio.sleep(delay)
