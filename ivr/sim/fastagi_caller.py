"""Asterisk's side of FastAGI, for tests, benchmarks and `ivr simulate`.

`AsteriskChannel` answers command lines the way res_agi.c does (as seen in
the traces of Asterisk 23): case-insensitive command words, ``510`` for
unknown commands, the multi-line ``520`` usage block (its text in a later
TCP segment), ``511`` for channel commands once the caller is gone and a
bare ``HANGUP`` line written on its own after the hangup and again when the
server closes the session.

Time is part of the protocol: Asterisk answers a command only when it is
done.  ``STREAM FILE`` replies once the file has played (or an escape digit
stopped it), ``GET DATA`` once the prompt has played and the caller has
pressed enough keys, ``#``, or nothing for the key timeout (restarted after
each key), ``GET OPTION`` after the file and then its own wait for a key,
``WAIT FOR DIGIT`` after its timeout, ``SAY *`` after the spoken items.  The
length of a file comes from the file the server names (`speech.audio.
sound_seconds`); a name Asterisk cannot open gets ``result=-1`` at once, as
res_agi answers.  The caller's keys (`Keys`) come at given moments of a
command, so a key pressed during a prompt interrupts it.  `place_call` waits
those seconds before it writes the reply; ``fast=True`` writes every reply
at once, for load tests.  `place_call` drives one call over real TCP;
`run_closed_loop` / `run_open_loop` drive many and time them from the TCP
connect to the moment IVR_QUEUE is set (the last routing variable).

``EXEC AudioSocket <uuid>,<host:port>`` is run the way app_audiosocket does:
the channel connects to that address with `AsteriskAudioSocket`, streams the
caller (the script's `voice` turns: speech or keys after each prompt, or in
the middle of one), and the command returns ``200 result=0`` once the server
closes the socket, ``200 result=-1`` when the connection fails or the caller
hangs up.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivr.sim.audiosocket_peer import AsteriskAudioSocket
from queues.variables import QUEUE
from speech.audio import TELEPHONE_RATE, sound_seconds


def encode_environment(values: dict[str, str]) -> bytes:
    """The environment block as Asterisk writes it."""
    lines = "".join(f"{name}: {value}\n" for name, value in values.items())
    return (lines + "\n").encode("utf-8")


def split_command(line: str) -> list[str]:
    """Split a command line into words the way res_agi does (quotes, backslashes)."""
    words: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    had_word = False
    for char in line.rstrip("\r\n"):
        if escaped:
            current.append(char)
            escaped = False
            had_word = True
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
            had_word = True
        elif char in " \t" and not in_quotes:
            if had_word:
                words.append("".join(current))
                current, had_word = [], False
        else:
            current.append(char)
            had_word = True
    if had_word:
        words.append("".join(current))
    return words

DEAD_CHANNEL = b"511 Command Not Permitted on a dead channel or intercept routine\n"
UNKNOWN = b"510 Invalid or unknown command\n"
USAGE_HEAD = b"520-Invalid command syntax.  Proper usage follows:\n"
USAGE_TAIL = "\n520 End of proper usage.\n"

# Commands that still work after the caller hung up (res_agi's `dead` flag).
_DEAD_OK = {"GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "VERBOSE", "EXEC", "NOOP", "ASYNCAGI BREAK"}

_USAGE = {
    "STREAM FILE": "Send the given file, allowing playback to be interrupted by the given digits, if any.",
    "SET VARIABLE": "Sets a variable to the current channel.",
    "GET VARIABLE": "Gets a channel variable.",
    "WAIT FOR DIGIT": "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF digit.",
    "GET DATA": "Stream the given <replaceable>file</replaceable>, and receive DTMF data.",
}
# Allowed numbers of words (command words included) per command.
_ARGC = {
    "ANSWER": (1, 1), "HANGUP": (1, 2), "NOOP": (1, 99), "VERBOSE": (2, 3),
    "SET VARIABLE": (4, 4), "GET VARIABLE": (3, 3), "GET FULL VARIABLE": (4, 5),
    "CHANNEL STATUS": (2, 3), "EXEC": (2, 99), "STREAM FILE": (4, 5),
    "GET DATA": (3, 5), "WAIT FOR DIGIT": (4, 4), "GET OPTION": (4, 5),
    "SAY DIGITS": (4, 4), "SAY NUMBER": (4, 5), "SAY ALPHA": (4, 4), "SAY PHONETIC": (4, 4),
    "SAY DATE": (4, 4), "SAY TIME": (4, 4), "SAY DATETIME": (4, 6),
}
# What res_agi waits when a command gives no time of its own: the dialplan's TIMEOUT(response)
# before the first key of GET DATA, TIMEOUT(digit) between keys and for GET OPTION.
RESPONSE_TIMEOUT = 10.0
DIGIT_TIMEOUT = 5.0
SAY_ITEM_SECONDS = 0.6  # one digit, letter or word of SAY *: the length of a core sound file
# Spoken items of SAY DATE / TIME / DATETIME (weekday, month, day, year / hour, minutes, am-pm).
_SAY_ITEMS = {"SAY DATE": 5, "SAY TIME": 4, "SAY DATETIME": 9}
_COMMANDS = sorted(_ARGC, key=lambda c: -len(c.split()))


@dataclass(frozen=True)
class Keys:
    """The keys a caller presses during one command: the first `after` seconds into it,
    each next one `gap` seconds later.  A plain string in `CallScript.dtmf` is pressed at once."""

    digits: str
    after: float = 0.0
    gap: float = 0.35

    def times(self) -> list[tuple[float, str]]:
        return [(self.after + n * self.gap, digit) for n, digit in enumerate(self.digits)]


@dataclass(frozen=True)
class Response:
    """Asterisk's reply to one command: the chunks it writes, `after` seconds of work."""

    chunks: list[bytes]
    after: float = 0.0


@dataclass
class Turn:
    """One answer of the caller on the AudioSocket: speech and/or keys.

    It comes when the server's prompt has ended (`barge_in` None) or
    `barge_in` seconds after the prompt started; `hang_up` ends the call instead.
    """

    say: bytes | None = None  # 8 kHz signed 16-bit mono PCM
    press: str = ""
    barge_in: float | None = None
    hang_up: bool = False
    raw: bytes = b""  # bytes written as they are (malformed frames)


@dataclass
class CallScript:
    """What the simulated caller does."""

    number: str | None = "79161234567"
    name: str | None = None
    line: str | None = "general"  # first AGI argument (None: no argument)
    args: tuple[str, ...] = ()  # the AGI arguments after the line (agi_arg_2, ...): the survey's call id
    dnid: str | None = None
    script: str = "inbound"
    dtmf: list[str | Keys] = field(default_factory=list)  # keys for GET DATA, WAIT FOR DIGIT, ..., in order
    hangup_at: int | None = None  # hang up during the Nth command (0-based)
    close_before_env: bool = False  # connect, send half the environment, close
    voice: list[Turn] = field(default_factory=list)  # answers on the AudioSocket, in order
    audiosocket_timeout: float = 120.0  # seconds an AudioSocket() session may last


@dataclass
class CallResult:
    script: CallScript
    uniqueid: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    routed_after: float | None = None  # seconds from connect to IVR_QUEUE set
    duration: float = 0.0
    hung_up: bool = False
    error: str | None = None
    audiosocket: AsteriskAudioSocket | None = None  # the last AudioSocket() session, to inspect
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds from connect, AGI command)

    @property
    def queue(self) -> str | None:
        return self.variables.get(QUEUE)


class AsteriskChannel:
    """One channel's AGI session, Asterisk's side, without I/O.

    `sounds` tells how many seconds a sound name plays (None: Asterisk cannot open it);
    by default it reads the files the names point to.
    """

    _ids = itertools.count(1)

    def __init__(self, script: CallScript, variables: dict[str, str] | None = None,
                 sounds: Callable[[str], float | None] = sound_seconds):
        self.script = script
        self.variables: dict[str, str] = dict(variables or {})
        self.hung_up = False
        self.commands: list[str] = []
        self.prompts: list[str] = []
        self._sounds = sounds
        self._dtmf = [keys if isinstance(keys, Keys) else Keys(keys) for keys in script.dtmf]
        n = next(self._ids)
        self.uniqueid = f"{int(time.time())}.{n}"
        self.channel = f"PJSIP/trunk-{n:08x}"

    def environment(self, host: str, port: int) -> bytes:
        s = self.script
        values = {
            "agi_network": "yes",
            "agi_network_script": s.script,
            "agi_request": f"agi://{host}:{port}/{s.script}",
            "agi_channel": self.channel,
            "agi_language": "ru",
            "agi_type": "PJSIP",
            "agi_uniqueid": self.uniqueid,
            "agi_version": "23.4.1",
            "agi_callerid": s.number or "unknown",
            "agi_calleridname": s.name or "unknown",
            "agi_callingpres": "0" if s.number else "67",
            "agi_callingani2": "0",
            "agi_callington": "0",
            "agi_callingtns": "0",
            "agi_dnid": s.dnid or "unknown",
            "agi_rdnis": "unknown",
            "agi_context": "from-pstn",
            "agi_extension": s.dnid or "s",
            "agi_priority": "4",
            "agi_enhanced": "0.0",
            "agi_accountcode": "",
            "agi_threadid": "140658115872448",
        }
        if s.line is not None:
            values["agi_arg_1"] = s.line
            for n, arg in enumerate(s.args, start=2):
                values[f"agi_arg_{n}"] = arg
        return encode_environment(values)

    def handle(self, line: str) -> list[bytes]:
        """The reply to one command line, as the chunks Asterisk writes (its timing left out)."""
        return self.respond(line).chunks

    def respond(self, line: str) -> Response:
        """The reply to one command line and the seconds Asterisk works before writing it."""
        index = len(self.commands)
        self.commands.append(line)
        words = split_command(line)
        command = _match(words)
        if command is None:
            return Response([UNKNOWN])
        if self.hung_up and command not in _DEAD_OK:
            return Response([DEAD_CHANNEL])
        low, high = _ARGC[command]
        if not low <= len(words) <= high:
            usage = _USAGE.get(command, "Usage text.")
            return Response([USAGE_HEAD, (usage + USAGE_TAIL).encode()])
        args = words[len(command.split()):]
        if self.script.hangup_at is not None and index >= self.script.hangup_at and not self.hung_up:
            if command in _DEAD_OK:
                self.hung_up = True
                return Response([self._reply(command, args), b"HANGUP\n"])
            self.hung_up = True
            endpos = " endpos=12160" if command in ("STREAM FILE", "GET OPTION") else ""
            return Response([f"200 result=-1{endpos}\n".encode(), b"HANGUP\n"])
        timed = self._timed(command, args)
        if timed is not None:
            return timed
        return Response([self._reply(command, args)])

    # -- commands that take time ---------------------------------------------------------------
    def _timed(self, command: str, args: list[str]) -> Response | None:
        if command == "GET DATA":
            return self._get_data(args)
        if command in ("STREAM FILE", "GET OPTION"):
            return self._stream(command, args)
        if command == "WAIT FOR DIGIT":
            return self._wait_for_digit(args)
        if command.startswith("SAY "):
            return self._say(command, args)
        return None

    def _keys(self) -> list[tuple[float, str]]:
        """The caller's keys for this command (consumed), as (seconds into it, digit)."""
        return self._dtmf.pop(0).times() if self._dtmf else []

    def _escape(self, escape: str, until: float) -> tuple[float, str] | None:
        """The caller's next key when it is one of `escape` pressed before `until` (consumed then);
        otherwise it is left for a later command, as the answer to a later question."""
        if not self._dtmf:
            return None
        at, digit = self._dtmf[0].times()[0] if self._dtmf[0].digits else (0.0, "")
        if digit and digit in escape and at < until:
            self._dtmf.pop(0)
            return at, digit
        return None

    def _get_data(self, args: list[str]) -> Response:
        # ast_app_getdata_full: the prompt (stopped by any key), then ast_readstring.
        self.prompts.append(args[0])
        plays = self._sounds(args[0])
        if plays is None:
            return Response([b"200 result=-1\n"])
        timeout = _milliseconds(args[1]) / 1000 if len(args) > 1 else 0.0
        first, between = (timeout, timeout) if timeout > 0 else (RESPONSE_TIMEOUT, DIGIT_TIMEOUT)
        maximum = int(args[2]) if len(args) > 2 and args[2].isdigit() and int(args[2]) > 0 else 1024
        keys = self._keys()
        deadline = plays + first  # the first key by then (one during the prompt stops it), else "(timeout)"
        digits = ""
        for at, digit in keys:
            if at > deadline:
                break  # pressed after Asterisk stopped listening
            if digit == "#":
                return Response([f"200 result={digits}\n".encode()], at)
            digits += digit
            if len(digits) >= maximum:
                return Response([f"200 result={digits}\n".encode()], at)
            deadline = at + between
        return Response([f"200 result={digits} (timeout)\n".encode()], deadline)

    def _stream(self, command: str, args: list[str]) -> Response:
        # handle_streamfile / handle_getoption: the file (an escape digit stops it), and for GET
        # OPTION then a wait for one key of its own timeout (ms, TIMEOUT(digit) by default).
        self.prompts.append(args[0])
        plays = self._sounds(args[0])
        if plays is None:
            return Response([b"200 result=-1 endpos=0\n"])
        escape = args[1] if len(args) > 1 else ""
        wait = 0.0
        if command == "GET OPTION":
            wait = _milliseconds(args[2]) / 1000 if len(args) > 2 else DIGIT_TIMEOUT
        pressed = self._escape(escape, plays + wait)
        endpos = round(plays * TELEPHONE_RATE)
        if pressed is None:
            return Response([f"200 result=0 endpos={endpos}\n".encode()], plays + wait)
        at, digit = pressed
        if at < plays:
            endpos = round(at * TELEPHONE_RATE)
        return Response([f"200 result={ord(digit)} endpos={endpos}\n".encode()], at)

    def _wait_for_digit(self, args: list[str]) -> Response:
        timeout = _milliseconds(args[0]) / 1000
        forever = timeout < 0
        for at, digit in self._keys():
            if forever or at < timeout:
                return Response([f"200 result={ord(digit)}\n".encode()], at)
        return Response([b"200 result=0\n"], 0.0 if forever else timeout)

    def _say(self, command: str, args: list[str]) -> Response:
        if command == "SAY NUMBER" and not args[0].lstrip("-").isdigit():
            return Response([USAGE_HEAD, ("Say a given number." + USAGE_TAIL).encode()])
        plays = _SAY_ITEMS.get(command, len(args[0])) * SAY_ITEM_SECONDS
        pressed = self._escape(args[1], plays)
        if pressed is None:
            return Response([b"200 result=0\n"], plays)
        return Response([f"200 result={ord(pressed[1])}\n".encode()], pressed[0])

    def _reply(self, command: str, args: list[str]) -> bytes:
        if command == "SET VARIABLE":
            self.variables[args[0]] = args[1]
            return b"200 result=1\n"
        if command == "GET VARIABLE":
            value = self.variables.get(args[0])
            return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()
        if command == "GET FULL VARIABLE":
            return f"200 result=1 ({args[0]})\n".encode()
        if command == "VERBOSE":
            return b"200 result=1\n"
        if command == "CHANNEL STATUS":
            return b"200 result=6\n"
        if command == "HANGUP":
            self.hung_up = True
            return b"200 result=1\n"
        if command == "EXEC" and args[0].lower() == "mset" and len(args) > 1:
            for pair in args[1].split(","):  # MSet(name=value,...)
                name, sep, value = pair.partition("=")
                if sep:
                    self.variables[name] = value
            return b"200 result=0\n"
        return b"200 result=0\n"  # ANSWER, EXEC, NOOP


def _audiosocket_target(line: str) -> tuple[str, str, int] | None:
    """(uuid, host, port) of an ``EXEC AudioSocket uuid,host:port`` line, else None."""
    words = split_command(line)
    if len(words) < 3 or [w.upper() for w in words[:2]] != ["EXEC", "AUDIOSOCKET"]:
        return None
    call_uuid, _, address = words[2].partition(",")
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return None
    return call_uuid, host.strip("[]"), int(port)


async def _run_audiosocket(
    call_uuid: str, host: str, port: int, script: CallScript
) -> tuple[bytes, AsteriskAudioSocket | None]:
    """app_audiosocket's part: connect, stream the caller, return when the server closes."""
    try:
        peer = await AsteriskAudioSocket.connect(host, port, call_uuid=uuid_module.UUID(call_uuid), timeout=2.0)
    except (OSError, ValueError, asyncio.TimeoutError):
        return b"200 result=-1\n", None  # AudioSocket() could not connect
    caller = asyncio.ensure_future(_speak(peer, script.voice))
    try:
        outcome = await peer.wait_closed(script.audiosocket_timeout)
    except asyncio.TimeoutError:
        outcome = "failed"
        await peer.hang_up()
    finally:
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
    return (b"200 result=0\n" if outcome == "returned" else b"200 result=-1\n"), peer


async def _speak(peer: AsteriskAudioSocket, turns: list[Turn]) -> None:
    since = -1.0
    for turn in turns:
        if turn.barge_in is None:
            since = await prompt_ended(peer, since)
        else:
            started = await prompt_started(peer, since)
            await asyncio.sleep(turn.barge_in)
            since = started
        if turn.hang_up:
            await peer.hang_up()
            return
        if turn.say:
            await peer.say(turn.say)
        if turn.press:
            peer.press(turn.press)
        if turn.raw:
            peer.send_raw(turn.raw)
        since = asyncio.get_running_loop().time() + 0.1  # the prompt's last frames in flight


async def prompt_started(peer: AsteriskAudioSocket, since: float, poll: float = 0.02) -> float:
    """When the server's next prompt (sound after `since`, loop time) started."""
    while not peer.is_closed:
        voiced = peer.voiced(since)
        if voiced:
            return voiced[0].t
        await asyncio.sleep(poll)
    raise ConnectionError("the AudioSocket session ended")


async def prompt_ended(peer: AsteriskAudioSocket, since: float, quiet: float = 0.4, poll: float = 0.02) -> float:
    """When the server's next prompt after `since` ended (followed by `quiet` seconds of silence)."""
    await prompt_started(peer, since)
    loop = asyncio.get_running_loop()
    while not peer.is_closed:
        last = peer.voiced(since)[-1].t
        if loop.time() - last >= quiet:
            return last
        await asyncio.sleep(poll)
    raise ConnectionError("the AudioSocket session ended")


def _milliseconds(text: str) -> float:
    """A millisecond argument as res_agi reads it (atoi: leading digits, else 0)."""
    digits = ""
    for n, char in enumerate(text.strip()):
        if char.isdigit() or (n == 0 and char == "-"):
            digits += char
        else:
            break
    return float(digits) if digits not in ("", "-") else 0.0


def _match(words: list[str]) -> str | None:
    upper = [w.upper() for w in words]
    for command in _COMMANDS:
        parts = command.split()
        if upper[: len(parts)] == parts:
            return command
    return None


async def place_call(host: str, port: int, script: CallScript, *, timeout: float = 120.0,
                     fast: bool = False) -> CallResult:
    """One call over real TCP, Asterisk's way: each reply written when Asterisk would write it,
    or at once with `fast` (load tests)."""
    channel = AsteriskChannel(script)
    result = CallResult(script=script, uniqueid=channel.uniqueid)
    started = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        env = channel.environment(host, port)
        if script.close_before_env:
            writer.write(env[: len(env) // 2])
            await writer.drain()
            return result
        writer.write(env)
        deadline = started + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise asyncio.TimeoutError
            raw = await asyncio.wait_for(reader.readline(), remaining)
            if not raw:  # the server ended the session: Asterisk says HANGUP and closes
                try:
                    writer.write(b"HANGUP\n")
                except (ConnectionError, RuntimeError):
                    pass
                break
            line = raw.decode("utf-8", errors="replace")
            result.timeline.append((time.perf_counter() - started, line.rstrip("\n")))
            audiosocket = _audiosocket_target(line)
            if audiosocket is not None and not channel.hung_up:
                channel.commands.append(line.rstrip("\n"))
                reply, result.audiosocket = await _run_audiosocket(*audiosocket, script)
                if result.audiosocket is not None and result.audiosocket.outcome == "caller-hangup":
                    channel.hung_up = True
                    chunks = [reply, b"HANGUP\n"]
                else:
                    chunks = [reply]
            else:
                response = channel.respond(line)
                if response.after > 0 and not fast:
                    await asyncio.sleep(response.after)
                chunks = response.chunks
            for chunk in chunks:
                writer.write(chunk)
            if QUEUE in channel.variables and result.routed_after is None:
                result.routed_after = time.perf_counter() - started
    except asyncio.TimeoutError:
        result.error = "timeout"
    except (ConnectionError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
    result.variables = channel.variables
    result.commands = channel.commands
    result.prompts = channel.prompts
    result.hung_up = channel.hung_up
    result.duration = time.perf_counter() - started
    return result


async def run_closed_loop(
    host: str, port: int, scripts: Sequence[CallScript], concurrency: int, *, fast: bool = False
) -> list[CallResult]:
    """`concurrency` callers, each placing its next call as soon as one ends."""
    queue = iter(scripts)
    results: list[CallResult] = []

    async def caller() -> None:
        for script in queue:
            results.append(await place_call(host, port, script, fast=fast))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return results


async def run_open_loop(host: str, port: int, scripts: Sequence[CallScript], rate: float, *,
                        fast: bool = False) -> list[CallResult]:
    """New calls at a fixed rate whatever the server does (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for n, script in enumerate(scripts):
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(place_call(host, port, script, fast=fast)))
    return list(await asyncio.gather(*tasks))


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered) - 1e-9) - 1))  # nearest rank
    return ordered[k]


def summarize(results: Sequence[CallResult], wall: float) -> dict[str, Any]:
    routed = [r.routed_after * 1000 for r in results if r.routed_after is not None]
    queues: dict[str, int] = {}
    for r in results:
        queues[r.queue or "(dialplan default)"] = queues.get(r.queue or "(dialplan default)", 0) + 1
    return {
        "calls": len(results),
        "routed": len(routed),
        "errors": sum(1 for r in results if r.error),
        "hung_up": sum(1 for r in results if r.hung_up),
        "wall_seconds": round(wall, 3),
        "calls_per_second": round(len(results) / wall, 1) if wall > 0 else None,
        "latency_ms": {
            "p50": round(percentile(routed, 50), 2),
            "p95": round(percentile(routed, 95), 2),
            "p99": round(percentile(routed, 99), 2),
            "max": round(max(routed), 2) if routed else None,
            "mean": round(statistics.fmean(routed), 2) if routed else None,
        },
        "queues": dict(sorted(queues.items(), key=lambda kv: -kv[1])),
    }


GARBAGE_NUMBERS = ["unknown", "anonymous", "", "12", "+0000000", "'; DROP TABLE customers;--",
                   "1" * 40, "Иван", "(495) 123-45-67 доб. 5"]


def mixed_scripts(
    numbers: Iterable[str], calls: int, *, lines: Sequence[str] = ("general", "b2b", "b2c"),
    dtmf: str = "1", hangup_rate: float = 0.0, garbage_rate: float = 0.05, seed: int = 1,
) -> list[CallScript]:
    """A realistic mix of calls: known numbers, garbage, lines, hangups."""
    rng = random.Random(seed)
    pool = list(numbers) or ["79161234567"]
    scripts = []
    for _ in range(calls):
        number = rng.choice(GARBAGE_NUMBERS) if rng.random() < garbage_rate else rng.choice(pool)
        hangup = rng.randint(0, 3) if rng.random() < hangup_rate else None
        scripts.append(CallScript(number=number, line=rng.choice(list(lines)), dtmf=[dtmf], hangup_at=hangup))
    return scripts
