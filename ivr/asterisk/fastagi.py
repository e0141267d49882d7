"""The FastAGI server: a thin asyncio loop around `ivr.asterisk.agi`.

Each connection from Asterisk becomes an `AgiCall` handed to the script
registered under its name (``agi://host:port/<script>``).  A peer that is
not an allowed Asterisk host is closed at once; one that never finishes its
environment block is closed after a timeout; one that sends garbage is
closed with a log line.  None of it can stall another connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ivr.asterisk import agi
from ivr.asterisk.agi import AgiProtocolError, Command, Environment, Hangup, Reply
from ivr.asterisk.listener import TcpListener, parse_allowed

log = logging.getLogger(__name__)

Script = Callable[["AgiCall"], Awaitable[None]]


class AgiError(Exception):
    """A command failed (510 unknown, 520 usage) or the connection broke."""

    def __init__(self, message: str, reply: Reply | None = None):
        super().__init__(message)
        self.reply = reply


class ChannelGone(AgiError):
    """The channel is dead (511) or the connection to Asterisk closed."""


class AgiTimeout(AgiError):
    """No reply within the command's own time: Asterisk is taken for dead and the session closed."""


class PromptNotPlayed(AgiError):
    """Asterisk could not open the sound (``result=-1`` on a channel that is still up): the
    prompt's file is not where Asterisk looks (see ``prompts.asterisk_directory``)."""


# What Asterisk waits for keys when GET DATA has no timeout of its own: the dialplan's
# TIMEOUT(response) before the first key and TIMEOUT(digit) between keys, 10 s and 5 s unless changed.
DEFAULT_FIRST_KEY_WAIT = 10.0
DEFAULT_NEXT_KEY_WAIT = 5.0


def key_wait(timeout_ms: int, max_digits: int) -> float:
    """The longest GET DATA waits for keys after its prompt: the timeout before the first key
    and again after each key until `max_digits` (ast_app_getdata_full)."""
    keys = max(1, max_digits)
    if timeout_ms > 0:
        return timeout_ms / 1000 * keys
    return DEFAULT_FIRST_KEY_WAIT + DEFAULT_NEXT_KEY_WAIT * (keys - 1)


class AgiCall:
    """One FastAGI session as the script sees it."""

    def __init__(self, protocol: _AgiProtocol, env: Environment, peer: str):
        self._protocol = protocol
        self.env = env
        self.peer = peer

    @property
    def hung_up(self) -> bool:
        """True once Asterisk said HANGUP (channel commands will get 511)."""
        return self._protocol.hung_up

    async def send(self, command: Command, timeout: float | None = None) -> Reply:
        """Send one command and wait for its reply, at most `timeout` seconds (the server's
        ``command_timeout`` when None).

        Raises ChannelGone on 511 or a closed connection, AgiTimeout when no reply
        comes in time (the connection is then unusable and closed) and AgiError on
        510/520.
        """
        reply = await self._protocol.request(command.encode(), timeout)
        if reply.code == 200:
            return reply
        if reply.code == 511:
            raise ChannelGone("channel is gone (511)", reply)
        raise AgiError(f"{' '.join(command.words)} failed with {reply.code}: {reply.text[:120]}", reply)

    async def set_variable(self, name: str, value: str | int, timeout: float | None = None) -> None:
        await self.send(agi.set_variable(name, value), timeout)

    async def set_variables(self, values: dict[str, str | int], timeout: float | None = None) -> None:
        """Set several variables in as few round trips as the values allow."""
        for command in agi.set_variables(values):
            await self.send(command, timeout)

    async def get_variable(self, name: str, timeout: float | None = None) -> str | None:
        reply = await self.send(agi.get_variable(name), timeout)
        return reply.data if reply.result == "1" else None

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.send(agi.verbose(message, level))

    def busy_for(self, seconds: float) -> float:
        """The time to wait for the reply of a command that keeps Asterisk busy for `seconds`
        (a prompt playing, keys awaited): that, plus the server's ``command_timeout``."""
        return max(0.0, seconds) + self._protocol.command_timeout

    async def stream_file(self, name: str, escape_digits: str = "", *, seconds: float) -> str | None:
        """Play a sound file that lasts `seconds`; the digit pressed to interrupt it, if any.

        Asterisk replies when the file has played (or a digit stopped it), so the
        reply is awaited that long plus the command timeout.
        """
        reply = await self.send(agi.stream_file(name, escape_digits), self.busy_for(seconds))
        code = reply.result_int
        if code is None or code == 0:
            return None
        if code < 0:
            await self._not_played(name, reply)
        return chr(code)

    async def get_data(self, name: str, timeout_ms: int, max_digits: int, *, seconds: float) -> tuple[str, bool]:
        """Play a prompt of `seconds` and collect up to `max_digits` keys: (digits, timed_out).

        Asterisk replies after the prompt and the key wait (`key_wait`), so the
        reply is awaited that long plus the command timeout.
        """
        reply = await self.send(agi.get_data(name, timeout_ms, max_digits),
                                self.busy_for(seconds + key_wait(timeout_ms, max_digits)))
        if reply.result == "-1":
            await self._not_played(name, reply)
        return reply.result or "", reply.data == "timeout"

    async def _not_played(self, name: str, reply: Reply) -> None:
        """``result=-1``: the caller hung up, or Asterisk could not open the sound.  A channel
        that still answers CHANNEL STATUS is up, so the file is the trouble."""
        if not self.hung_up:  # its HANGUP line may still be on the way
            try:
                await self.send(Command(("CHANNEL", "STATUS")))
            except ChannelGone:  # 511: the caller is gone
                pass
            else:
                if not self.hung_up:
                    raise PromptNotPlayed(f"Asterisk could not play {name!r}", reply)
        raise ChannelGone("the caller hung up during the prompt", reply)

    def close(self) -> None:
        """End the session: Asterisk continues the dialplan."""
        self._protocol.close()


class _AgiProtocol(asyncio.Protocol):
    def __init__(self, server: FastAgiServer):
        self._server = server
        self._parser = agi.AgiParser()
        self._transport: asyncio.Transport | None = None
        self._pending: asyncio.Future[Reply] | None = None
        self._env_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.peer = "?"
        self.hung_up = False
        self.command_timeout = server.command_timeout
        self._stale = 0  # replies still due to commands whose waiters were cancelled

    # -- asyncio callbacks --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        host = peername[0] if peername else ""
        self.peer = host
        if not self._server.is_allowed(host):
            log.warning("FastAGI: refused connection from %s (not an allowed Asterisk host)", host)
            self._server.stats["refused"] += 1
            transport.abort()
            self._closed = True
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._env_timer = loop.call_later(self._server.env_timeout, self._env_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            events = self._parser.feed(data)
        except AgiProtocolError as exc:
            log.warning("FastAGI: malformed data from %s: %s; closing", self.peer, exc)
            self._server.stats["malformed"] += 1
            self._fail(ChannelGone(f"protocol error: {exc}"))
            return
        for event in events:
            if isinstance(event, Environment):
                self._start_script(event)
            elif isinstance(event, Hangup):
                self.hung_up = True
            elif self._stale > 0:
                self._stale -= 1  # the late reply of a cancelled command
            elif self._pending is not None and not self._pending.done():
                self._pending.set_result(event)
                self._pending = None
            else:
                log.debug("FastAGI: unsolicited reply from %s ignored: %s", self.peer, event.text[:80])

    def eof_received(self) -> bool | None:
        self._fail(ChannelGone("Asterisk closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_env_timer()
        self._server.connections.discard(self)
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(ChannelGone("connection lost"))
        self._pending = None

    # -- internals ------------------------------------------------------------
    def _start_script(self, env: Environment) -> None:
        self._cancel_env_timer()
        script = self._server.scripts.get(env.script)
        if script is None:
            log.warning("FastAGI: unknown script %r requested by %s; closing", env.script, self.peer)
            self._server.stats["unknown_script"] += 1
            self.close()
            return
        call = AgiCall(self, env, self.peer)
        self._task = asyncio.get_running_loop().create_task(self._run(script, call))
        self._server.tasks.add(self._task)
        self._task.add_done_callback(self._server.tasks.discard)

    async def _run(self, script: Script, call: AgiCall) -> None:
        try:
            await script(call)
        except asyncio.CancelledError:
            raise
        except Exception:  # a script must never take the server down
            log.exception("FastAGI: script %r failed", call.env.script)
            self._server.stats["script_errors"] += 1
        finally:
            self.close()

    def _env_timed_out(self) -> None:
        self._env_timer = None
        if not self._parser.has_environment and not self._closed:
            log.warning("FastAGI: %s sent no complete environment in %.1f s; closing",
                        self.peer, self._server.env_timeout)
            self._server.stats["env_timeouts"] += 1
            self._fail(ChannelGone("no environment"))

    def _cancel_env_timer(self) -> None:
        if self._env_timer is not None:
            self._env_timer.cancel()
            self._env_timer = None

    def _fail(self, exc: AgiError) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(exc)
        self._pending = None
        self.close()

    async def request(self, line: bytes, timeout: float | None) -> Reply:
        if self._closed or self._transport is None or self._transport.is_closing():
            raise ChannelGone("connection closed")
        if self._pending is not None:
            raise AgiError("a command is already waiting for its reply")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending = future
        self._transport.write(line)
        limit = self.command_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, limit)
        except asyncio.TimeoutError:
            self._pending = None
            self.close()  # the reply stream can no longer be trusted
            raise AgiTimeout(f"no reply in {limit:.1f} s") from None
        except asyncio.CancelledError:
            if self._pending is future:
                self._pending = None
                self._stale += 1  # its reply must not reach the next command
            raise

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._closed = True


class FastAgiServer(TcpListener):
    def __init__(
        self,
        scripts: dict[str, Script],
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        allowed_hosts: Iterable[str] = ("127.0.0.1", "::1"),
        env_timeout: float = 5.0,
        command_timeout: float = 30.0,
        reuse_port: bool = False,
    ):
        self.scripts = dict(scripts)
        self.host = host
        self.port = port
        self.allowed = parse_allowed(allowed_hosts)
        self.env_timeout = env_timeout
        self.command_timeout = command_timeout
        self.reuse_port = reuse_port
        self.connections: set[_AgiProtocol] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {
            "refused": 0, "malformed": 0, "env_timeouts": 0, "unknown_script": 0, "script_errors": 0,
        }
        self._server: asyncio.base_events.Server | None = None

    def protocol(self) -> asyncio.Protocol:
        return _AgiProtocol(self)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let running scripts finish for `grace` seconds, then cancel."""
        await self._stop_accepting(self.tasks, grace)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
