"""The AMI client: a thin asyncio loop around the codec in `ivr.asterisk.ami`.

It logs in, times out every action, dispatches events to handlers (sync or async, in
order; an exception is logged, never fatal), checks liveness with a Ping whose Pong it
waits for, reconnects with capped exponential backoff and jitter after EOF, errors, a
``Shutdown`` event or a missed Pong, and calls ``on_connected`` after every (re)connect.
Actions that were waiting when a connection died fail; they are never sent again.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Union

from ivr.asterisk.ami import (
    ActionFields,
    ActionResult,
    ActionTracker,
    AmiError,
    AmiParser,
    Banner,
    Completed,
    Garbage,
    Item,
    Message,
    _action_pairs,
    action_name,
    encode_action,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# backoff
# --------------------------------------------------------------------------


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based).

    ``min(maximum, initial * factor**attempt)``, less a random share of up to
    `jitter` of it, so clients that lost Asterisk together do not return
    together.  Never more than `maximum`, never less than ``(1-jitter)`` of the base.
    """
    base = min(maximum, initial * factor ** min(attempt, 64))
    return base * (1.0 - jitter * (rng or random).random())


# --------------------------------------------------------------------------
# the asyncio client
# --------------------------------------------------------------------------


class AmiConnectionError(AmiError):
    """No connection, or it broke while the action was waiting."""


class AmiNotConnected(AmiConnectionError):
    """The action was not sent: there is no logged-in connection now."""


class AmiAuthError(AmiError):
    """Asterisk refused the login (``Authentication failed`` and the like)."""


class AmiTimeout(AmiError, TimeoutError):
    """No (complete) answer within the time limit."""


class AmiActionError(AmiError):
    """``Response: Error`` to an action sent with ``check=True``."""

    def __init__(self, message: str, result: ActionResult):
        super().__init__(message)
        self.result = result


Handler = Callable[[Message], Union[None, Awaitable[None]]]
ConnectedHook = Callable[["AmiClient"], Union[None, Awaitable[None]]]


@dataclass(frozen=True)
class AmiState:
    """Connection state for start-up lines and /healthz."""

    address: str
    connected: bool
    since: float | None  # wall-clock time of the last connect (connected) or loss (not connected)
    last_error: str | None
    version: str | None  # from the banner, e.g. "12.0.0"
    connects: int  # successful logins so far
    attempts: int  # failed attempts since the last successful login

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)) if self.since else None
        if self.connected:
            return f"connected to {self.address} since {when} (manager {self.version or '?'})"
        text = f"not connected to {self.address}"
        if when:
            text += f" since {when}"
        if self.last_error:
            text += f": {self.last_error}"
        return text


_CONNECTED = object()  # marker in the dispatch queue: run on_connected here


class _Connection:
    """One TCP connection: reader task, pinger task, actions waiting for answers."""

    def __init__(self, client: AmiClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.client = client
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser()
        self.tracker = ActionTracker()
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[Banner] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        self.waiting: dict[str, asyncio.Future[ActionResult]] = {}
        self.tasks: list[asyncio.Task[None]] = [loop.create_task(self._read(), name="ami-reader")]
        self.logged_in = False

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    def start_pinger(self) -> None:
        if self.client.ping_interval > 0:
            self.tasks.append(asyncio.get_running_loop().create_task(self._ping(), name="ami-pinger"))

    async def request(self, action: ActionFields, timeout: float) -> ActionResult:
        if not self.alive:
            raise AmiConnectionError(self.lost.result())
        pairs = _action_pairs(action)
        name = action_name(pairs)
        given = [v for k, v in pairs if k.lower() == "actionid"]
        action_id = given[0] if given else f"{name.lower()}-{next(self.client._ids)}"
        data = encode_action(pairs, action_id)
        self.tracker.expect(action_id)
        if name.lower() == "command":
            self.parser.expect_command_output(action_id)
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        self.waiting[action_id] = future
        try:
            self.writer.write(data)
            async with asyncio.timeout(timeout):
                await self.writer.drain()
                return await future
        except TimeoutError:
            raise AmiTimeout(f"no answer to {name} within {timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            self.fail(f"write failed: {exc}")
            raise AmiConnectionError(f"{name} not sent: {exc}") from None
        finally:
            if self.waiting.pop(action_id, None) is not None:
                self.tracker.abandon(action_id)
                self.parser.forget_command_output(action_id)

    async def _read(self) -> None:
        reason = "connection closed by Asterisk"
        try:
            while self.alive:
                data = await self.reader.read(65536)
                if not data:
                    for item in self.parser.close():
                        self._handle(item)
                    break
                for item in self.parser.feed(data):
                    self._handle(item)
                    if not self.alive:
                        return
        except (ConnectionError, OSError) as exc:
            reason = f"read failed: {exc}"
        except asyncio.CancelledError:
            reason = "closed"
            raise
        finally:
            self.fail(reason)

    def _handle(self, item: Item) -> None:
        client = self.client
        if isinstance(item, Banner):
            if not self.banner.done():
                self.banner.set_result(item)
            return
        if isinstance(item, Garbage):
            client.stats["malformed"] += 1
            log.warning("AMI: skipped %d bytes that are not a manager message (%s)", len(item.data), item.reason)
            return
        if not self.banner.done():
            self.banner.set_result(Banner(""))  # a manager without a banner; go on
        if item.truncated:
            client.stats["malformed"] += 1
            log.warning("AMI: skipped a %s message cut short by the next one", item.event or item.response or "?")
            return
        if item.invalid_utf8:
            client.stats["invalid_utf8"] += 1
            log.warning("AMI: %s carried bytes that are not UTF-8; replaced", item.event or item.response or "?")
        routed = self.tracker.feed(item)
        if isinstance(routed, Completed):
            future = self.waiting.pop(routed.action_id, None)
            if future is not None and not future.done():
                future.set_result(routed.result)
        elif isinstance(routed, Message):
            client._enqueue(routed)
            if (routed.event or "").lower() == "shutdown":
                self.fail(f"Asterisk is shutting down (Shutdown: {routed.get('Shutdown', '?')}, "
                          f"Restart: {routed.get('Restart', '?')})")
        elif routed.reason in ("response to no pending action", "neither an event nor a response"):
            client.stats["unexpected"] += 1
            log.debug("AMI: ignored a message: %s", routed.reason)

    async def _ping(self) -> None:
        client = self.client
        while self.alive:
            await asyncio.sleep(client.ping_interval)
            if not self.alive:
                return
            try:
                await self.request({"Action": "Ping"}, client.ping_timeout)
            except AmiTimeout:
                self.fail(f"no answer to Ping within {client.ping_timeout:g} s (Asterisk not responding)")
                return
            except AmiConnectionError:
                return
            # Any answer (even an error) shows Asterisk reads and writes this connection.

    def fail(self, reason: str) -> None:
        """Mark the connection dead, close it, fail what waits on it."""
        if self.lost.done():
            return
        self.lost.set_result(reason)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(AmiConnectionError(f"connection lost: {reason}"))
        self.waiting.clear()
        if not self.banner.done():
            self.banner.set_exception(AmiConnectionError(reason))
            self.banner.exception()  # whoever waits still gets it; nobody waiting is fine too
        self.writer.transport.abort()  # a dead or silent peer must not keep the socket
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.client._connection_lost(self, reason)

    async def close(self, reason: str = "closed") -> None:
        self.fail(reason)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            pass


class AmiClient:
    """A manager client that stays connected.

    ::

        client = AmiClient(host, 5038, "ivr", secret, on_connected=resync)
        client.on_event("QueueCallerJoin", handler)      # sync or async handler
        await client.connect()        # first login; errors raised (AmiAuthError, OSError, AmiTimeout)
        result = await client.action({"Action": "QueueStatus"}, timeout=5)
        ...
        await client.close()

    `start()` instead of `connect()` keeps trying in the background (for a
    server that must come up while Asterisk is down); `state` says how it goes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        events: bool | str = True,
        on_connected: ConnectedHook | None = None,
        connect_timeout: float = 5.0,
        login_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float = 20.0,
        ping_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_factor: float = 2.0,
        backoff_jitter: float = 0.5,
        stable_after: float = 10.0,
        handler_timeout: float = 30.0,
        max_queued_events: int = 10_000,
        rng: random.Random | None = None,
    ):
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.events = events
        self.on_connected = on_connected
        self.connect_timeout = connect_timeout
        self.login_timeout = login_timeout
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_factor = backoff_factor
        self.backoff_jitter = backoff_jitter
        self.stable_after = stable_after
        self.handler_timeout = handler_timeout
        self.max_queued_events = max_queued_events
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._handlers: dict[str, list[Handler]] = {}
        self._conn: _Connection | None = None
        self._connected_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._queue: deque[Any] = deque()
        self._queue_ready: asyncio.Event | None = None
        self._closing = False
        self._connected_event: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._state = AmiState(f"{host}:{port}", False, None, None, None, 0, 0)
        self.stats: dict[str, int] = {
            "events": 0, "handler_errors": 0, "events_dropped": 0, "malformed": 0,
            "invalid_utf8": 0, "unexpected": 0, "disconnects": 0,
        }

    # -- state ---------------------------------------------------------------
    @property
    def state(self) -> AmiState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state.connected

    def _set_state(self, **changes: Any) -> None:
        values = {**self._state.__dict__, **changes}
        self._state = AmiState(**values)

    # -- event handlers ------------------------------------------------------
    def on_event(self, name: str, handler: Handler | None = None) -> Any:
        """Call `handler(message)` for events named `name` (``"*"``: every event).

        Usable as a decorator.  Handlers run one event at a time, in arrival
        order; an async handler is awaited (at most `handler_timeout`) before
        the next event.  Exceptions are logged and counted, never fatal.
        """
        def register(func: Handler) -> Handler:
            self._handlers.setdefault(name.lower(), []).append(func)
            return func
        return register(handler) if handler is not None else register

    def remove_handler(self, name: str, handler: Handler) -> None:
        handlers = self._handlers.get(name.lower(), [])
        if handler in handlers:
            handlers.remove(handler)

    # -- life cycle ------------------------------------------------------------
    async def connect(self, *, reconnect: bool = True) -> None:
        """Connect and log in now; raise what went wrong.  Then keep it up if `reconnect`."""
        self._closing = False
        self._ensure_tasks(supervise=False)
        await self._open()
        if reconnect and self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="ami-supervisor")

    def start(self) -> None:
        """Connect in the background and stay connected (retrying with backoff)."""
        self._closing = False
        self._ensure_tasks(supervise=True)

    async def wait_connected(self, timeout: float | None = None) -> None:
        self._ensure_events()
        assert self._connected_event is not None
        async with asyncio.timeout(timeout):
            await self._connected_event.wait()

    async def close(self) -> None:
        """Log off (briefly), stop reconnecting, stop the dispatcher."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        conn = self._conn
        if conn is not None and conn.alive and conn.logged_in:
            try:
                await conn.request({"Action": "Logoff"}, min(1.0, self.action_timeout))
            except AmiError:
                pass
        if conn is not None:
            await conn.close("closed by the application")
        for task in (self._supervisor, self._dispatcher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._supervisor = self._dispatcher = None

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- actions ---------------------------------------------------------------
    async def action(self, action: ActionFields, *, timeout: float | None = None, check: bool = False) -> ActionResult:
        """Send one action and wait for its answer (all of it, for list actions).

        Raises AmiNotConnected at once when there is no connection,
        AmiTimeout after `timeout` (default `action_timeout`; the connection
        stays up and a late answer is dropped), AmiConnectionError when the
        connection dies meanwhile, and with `check` AmiActionError on
        ``Response: Error``.
        """
        conn = self._conn
        if conn is None or not conn.alive or not conn.logged_in:
            raise AmiNotConnected(f"not connected to {self._state.address}"
                                  + (f": {self._state.last_error}" if self._state.last_error else ""))
        result = await conn.request(action, self.action_timeout if timeout is None else timeout)
        if check and not result.ok:
            raise AmiActionError(f"{action_name(action)} failed: {result.message}", result)
        return result

    async def ping(self, timeout: float | None = None) -> float:
        """Round trip of a Ping in seconds (raises like `action`)."""
        started = time.monotonic()
        result = await self.action({"Action": "Ping"}, timeout=timeout or self.ping_timeout)
        if not result.ok:
            raise AmiError(f"Ping failed: {result.message}")
        return time.monotonic() - started

    # -- internals ---------------------------------------------------------------
    def _ensure_events(self) -> None:
        if self._connected_event is None:
            self._connected_event = asyncio.Event()
            self._wake = asyncio.Event()
            self._queue_ready = asyncio.Event()

    def _ensure_tasks(self, *, supervise: bool) -> None:
        self._ensure_events()
        assert self._wake is not None
        self._wake.clear()  # set by an earlier close()
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch(), name="ami-dispatcher")
        if supervise and (self._supervisor is None or self._supervisor.done()):
            self._supervisor = loop.create_task(self._supervise(), name="ami-supervisor")

    async def _open(self) -> _Connection:
        """One connection attempt: TCP, banner, Login.  Raises on failure."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            self._record_failure(f"connect timed out after {self.connect_timeout:g} s")
            raise AmiTimeout(f"connect to {self._state.address} timed out") from None
        except OSError as exc:
            self._record_failure(f"connect failed: {exc.strerror or exc}")
            raise
        conn = _Connection(self, reader, writer)
        try:
            try:
                async with asyncio.timeout(self.login_timeout):
                    banner = await conn.banner
            except TimeoutError:
                raise AmiTimeout(f"no banner within {self.login_timeout:g} s") from None
            login: dict[str, Any] = {"Action": "Login", "Username": self.username, "Secret": self._secret}
            if self.events is not None:
                login["Events"] = ("on" if self.events else "off") if isinstance(self.events, bool) else self.events
            result = await conn.request(login, self.login_timeout)
            if not result.ok:
                raise AmiAuthError(f"login as {self.username!r} refused: {result.message or result.response.response}")
        except BaseException as exc:
            if isinstance(exc, AmiError):
                self._record_failure(str(exc))
            await conn.close("login failed")
            raise
        conn.logged_in = True
        self._conn = conn
        self._connected_at = time.monotonic()
        self._set_state(connected=True, since=time.time(), version=banner.version,
                        connects=self._state.connects + 1, attempts=0)
        log.info("AMI: connected to %s (manager %s)", self._state.address, banner.version or "?")
        assert self._connected_event is not None
        self._connected_event.set()
        conn.start_pinger()
        self._enqueue(_CONNECTED)
        return conn

    def _record_failure(self, reason: str) -> None:
        keep = self._state.since is not None and not self._state.connected
        self._set_state(last_error=reason, attempts=self._state.attempts + 1,
                        since=self._state.since if keep else time.time())

    def _connection_lost(self, conn: _Connection, reason: str) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self.stats["disconnects"] += 1
        if self._connected_event is not None:
            self._connected_event.clear()
        closing = self._closing
        self._set_state(connected=False, since=time.time(),
                        last_error=self._state.last_error if closing else reason)
        if not closing:
            log.warning("AMI: connection to %s lost: %s", self._state.address, reason)

    async def _supervise(self) -> None:
        assert self._wake is not None
        attempt = 0
        while not self._closing:
            conn = self._conn
            if conn is None:
                try:
                    conn = await self._open()
                except Exception as exc:  # noqa: BLE001 - whatever it was, try again later
                    level = logging.ERROR if isinstance(exc, AmiAuthError) else logging.WARNING
                    log.log(level, "AMI: cannot connect to %s: %s", self._state.address, self._state.last_error or exc)
                    delay = backoff_delay(attempt, initial=self.backoff_initial, maximum=self.backoff_max,
                                          factor=self.backoff_factor, jitter=self.backoff_jitter, rng=self._rng)
                    attempt += 1
                    await self._sleep(delay)
                    continue
            await asyncio.shield(conn.lost)
            lived = time.monotonic() - self._connected_at
            attempt = 0 if lived >= self.stable_after else attempt + 1
            if self._closing:
                return
            delay = backoff_delay(max(attempt - 1, 0), initial=self.backoff_initial, maximum=self.backoff_max,
                                  factor=self.backoff_factor, jitter=self.backoff_jitter, rng=self._rng)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        assert self._wake is not None
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _enqueue(self, item: Any) -> None:
        if item is not _CONNECTED:
            if len(self._queue) >= self.max_queued_events:
                self.stats["events_dropped"] += 1
                if self.stats["events_dropped"] in (1, 10, 100) or self.stats["events_dropped"] % 1000 == 0:
                    log.error("AMI: event handlers are behind; %d events dropped", self.stats["events_dropped"])
                return
            self.stats["events"] += 1
        self._queue.append(item)
        if self._queue_ready is not None:
            self._queue_ready.set()

    async def _dispatch(self) -> None:
        assert self._queue_ready is not None
        while True:
            if not self._queue:
                self._queue_ready.clear()
                await self._queue_ready.wait()
                continue
            item = self._queue.popleft()
            if item is _CONNECTED:
                if self.on_connected is not None:
                    await self._call("on_connected", self.on_connected, self)
                continue
            name = (item.event or "").lower()
            for handler in (*self._handlers.get(name, ()), *self._handlers.get("*", ())):
                await self._call(item.event or "?", handler, item)

    async def _call(self, what: str, func: Callable[[Any], Any], arg: Any) -> None:
        limit: asyncio.Timeout | None = None
        try:
            result = func(arg)
            if inspect.isawaitable(result):
                limit = asyncio.timeout(self.handler_timeout)
                async with limit:
                    await result
        except TimeoutError:
            self.stats["handler_errors"] += 1
            if limit is not None and limit.expired():
                log.error("AMI: handler %s for %s took longer than %g s; cancelled",
                          getattr(func, "__qualname__", func), what, self.handler_timeout)
            else:
                log.exception("AMI: handler %s for %s failed", getattr(func, "__qualname__", func), what)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the dispatcher itself is being stopped
            self.stats["handler_errors"] += 1
            log.error("AMI: handler %s for %s was cancelled", getattr(func, "__qualname__", func), what)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("AMI: handler %s for %s failed", getattr(func, "__qualname__", func), what)
