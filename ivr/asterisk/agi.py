"""The FastAGI wire protocol without I/O: bytes in, events out; commands out.

Asterisk (res_agi.c) opens the connection and writes an environment block of
``agi_name: value`` lines closed by a blank line.  The server then sends one
command line at a time and reads its reply:

* ``200 result=N [(data)] [endpos=N]`` - done;
* ``510 ...`` - unknown command; ``511 ...`` - not permitted on a dead channel;
* ``520 ...`` or a multi-line block ``520-...`` / usage text / ``520 End of proper usage.``

When the caller hangs up, Asterisk writes a bare ``HANGUP`` line on its own,
after the reply of the command that was running, so it can arrive between
any two replies.  `AgiParser` turns all of this into `Environment`,
`Reply` and `Hangup` events and never falls out of step.

Everything the parser keeps is bounded: a line, the environment block (lines
and bytes) and a ``520-`` usage block (lines and bytes).  A peer that goes
past a bound gets `AgiProtocolError`, like any other malformed data, and the
parser refuses everything after it; the server then closes the connection
and Asterisk continues the dialplan with the line's default queue.  An id
longer than its column in the call records (`Environment.uniqueid`) reads as
absent: Asterisk never writes one, and cutting it would make another id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024  # longest line accepted from the peer
MAX_COMMAND = 8191  # res_agi reads commands into an 8192-byte buffer
MAX_ENV_LINES = 256
MAX_ENV_BYTES = 64 * 1024
# res_agi's longest usage text (from its XML documentation) is a few kilobytes.
MAX_USAGE_LINES = 512
MAX_USAGE_BYTES = 64 * 1024
# caller_id.models.CallRecord.uniqueid is String(64); Asterisk's own ids are far shorter.
MAX_UNIQUEID = 64


class AgiProtocolError(Exception):
    """The peer sent bytes that are not FastAGI."""


@dataclass(frozen=True)
class Environment:
    """The ``agi_*`` block with convenient accessors."""

    values: dict[str, str]

    def get(self, name: str) -> str | None:
        """The value of ``agi_<name>``; Asterisk's ``unknown`` and empty become None."""
        value = self.values.get(f"agi_{name}")
        if value is None or value == "" or value == "unknown":
            return None
        return value

    @property
    def request(self) -> str:
        """``agi_network_script``: everything after the first ``/`` of the URL."""
        return self.values.get("agi_network_script", "")

    @property
    def script(self) -> str:
        """The script name: the request up to ``?`` or the next ``/``."""
        return re.split(r"[?/]", self.request, maxsplit=1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        _, _, query = self.request.partition("?")
        return parse_qs(query, keep_blank_values=True)

    @property
    def args(self) -> list[str]:
        """``agi_arg_1`` .. ``agi_arg_N`` in order (empty strings kept)."""
        args = []
        n = 1
        while f"agi_arg_{n}" in self.values:
            args.append(self.values[f"agi_arg_{n}"])
            n += 1
        return args

    @property
    def uniqueid(self) -> str | None:
        """The channel's id; None when longer than any id Asterisk makes (`MAX_UNIQUEID`)."""
        value = self.get("uniqueid")
        if value is not None and len(value) > MAX_UNIQUEID:
            log.warning("FastAGI: agi_uniqueid of %d characters is no Asterisk id; the call goes on without it",
                        len(value))
            return None
        return value

    @property
    def channel(self) -> str | None:
        return self.get("channel")

    @property
    def callerid(self) -> str | None:
        return self.get("callerid")

    @property
    def calleridname(self) -> str | None:
        return self.get("calleridname")

    @property
    def dnid(self) -> str | None:
        return self.get("dnid")

    @property
    def extension(self) -> str | None:
        return self.get("extension")


@dataclass(frozen=True)
class Reply:
    """One command's reply.

    `result` is the text after ``result=`` (may be empty), `data` the text in
    parentheses, `endpos` the playback offset when given.  For 510/511/520
    `result` is None and `text` holds the message (the usage text for 520).
    """

    code: int
    result: str | None = None
    data: str | None = None
    endpos: int | None = None
    text: str = ""

    @property
    def is_success(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        try:
            return int(self.result) if self.result else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Hangup:
    """The caller hung up (a bare ``HANGUP`` line)."""


Event = Environment | Reply | Hangup

_REPLY_200 = re.compile(r"^200 result=(?P<result>\S*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?\d+))?\s*$")


def parse_reply_line(line: str) -> Reply:
    """Parse a single-line reply (``200 ...``, ``510 ...``, ``511 ...``, ``520 ...``)."""
    if line.startswith("200 "):
        match = _REPLY_200.match(line)
        if match is None:
            # A 200 reply with an unexpected tail: keep what can be read.
            result = line[len("200 result="):].split(" ", 1)[0] if line.startswith("200 result=") else ""
            return Reply(200, result=result, text=line)
        endpos = match.group("endpos")
        return Reply(
            200,
            result=match.group("result"),
            data=match.group("data"),
            endpos=int(endpos) if endpos is not None else None,
            text=line,
        )
    code_text, _, rest = line.partition(" ")
    if len(code_text) == 3 and code_text.isascii() and code_text.isdigit():
        return Reply(int(code_text), text=rest)
    raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")


class AgiParser:
    """Incremental parser of what Asterisk sends on a FastAGI connection.

    Feed it bytes as they arrive; it returns the complete events.  Lines are
    decoded as UTF-8 once whole, so a character split across reads is kept.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._env: dict[str, str] | None = {}
        self._env_bytes = 0
        self._usage: list[str] | None = None  # inside a multi-line 520 block
        self._usage_bytes = 0
        self._error: str | None = None

    @property
    def has_environment(self) -> bool:
        return self._env is None

    @property
    def buffered(self) -> int:
        """Bytes held for what is not complete yet (a line, the environment, a usage block)."""
        return len(self._buffer) + self._env_bytes + self._usage_bytes

    def feed(self, data: bytes) -> list[Event]:
        """The complete events in `data`; raises AgiProtocolError on bytes that are not FastAGI.

        After an error the parser holds nothing and refuses every later feed.
        """
        if self._error is not None:
            raise AgiProtocolError(f"parser already failed: {self._error}")
        try:
            return self._feed(data)
        except AgiProtocolError as exc:
            self._error = str(exc)
            self._buffer = bytearray()
            self._env = self._usage = None
            self._env_bytes = self._usage_bytes = 0
            raise

    def _feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > MAX_LINE:
                    raise AgiProtocolError(f"line longer than {MAX_LINE} bytes")
                return events
            if newline > MAX_LINE:
                raise AgiProtocolError(f"line longer than {MAX_LINE} bytes")
            raw = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            event = self._line(line, len(raw) + 1)
            if event is not None:
                events.append(event)

    def _line(self, line: str, size: int) -> Event | None:
        if self._env is not None:
            return self._env_line(line, size)
        if self._usage is not None:
            if line.startswith("520 "):
                usage = "\n".join(self._usage)
                self._usage, self._usage_bytes = None, 0
                return Reply(520, text=usage)
            self._add_usage(line, size)
            return None
        if line == "HANGUP":
            return Hangup()
        if not line.strip():
            return None
        if line.startswith("520-"):
            self._usage = []
            self._add_usage(line[4:], size)
            return None
        return parse_reply_line(line)

    def _add_usage(self, line: str, size: int) -> None:
        assert self._usage is not None
        if len(self._usage) >= MAX_USAGE_LINES or self._usage_bytes + size > MAX_USAGE_BYTES:
            raise AgiProtocolError(
                f"520 usage block longer than {MAX_USAGE_LINES} lines or {MAX_USAGE_BYTES} bytes without its end")
        self._usage.append(line)
        self._usage_bytes += size

    def _env_line(self, line: str, size: int) -> Event | None:
        assert self._env is not None
        if line == "":
            if not self._env:
                return None  # tolerate blank lines before the block
            env, self._env = self._env, None
            self._env_bytes = 0
            return Environment(env)
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_"):
            raise AgiProtocolError(f"not an AGI environment line: {line[:80]!r}")
        if len(self._env) >= MAX_ENV_LINES or self._env_bytes + size > MAX_ENV_BYTES:
            raise AgiProtocolError(f"environment block longer than {MAX_ENV_LINES} lines or {MAX_ENV_BYTES} bytes")
        self._env[name] = value[1:] if value.startswith(" ") else value
        self._env_bytes += size
        return None


def quote(arg: str | int) -> str:
    """Quote one command argument the way res_agi's parser splits them."""
    text = str(arg)
    if text and not any(c in text for c in ' "\\\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def encode_command(*parts: str | int) -> bytes:
    """One command line.  The first parts are the command words (unquoted)."""
    words: list[str] = []
    for part in parts:
        text = str(part)
        if "\n" in text or "\r" in text or "\x00" in text:
            raise ValueError("AGI arguments cannot contain line breaks or NUL")
        words.append(text)
    line = (" ".join(words) + "\n").encode("utf-8")
    if len(line) > MAX_COMMAND:
        raise ValueError(f"AGI command longer than {MAX_COMMAND} bytes")
    return line


@dataclass
class Command:
    """A command with its quoted arguments, ready to encode."""

    words: tuple[str, ...]
    args: tuple[str | int, ...] = field(default=())

    def encode(self) -> bytes:
        return encode_command(*self.words, *(quote(a) for a in self.args))


def set_variable(name: str, value: str | int) -> Command:
    return Command(("SET", "VARIABLE"), (name, str(value)))


_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@+#*-]*$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def set_variables(values: dict[str, str | int]) -> list[Command]:
    """Commands that set every variable: one ``EXEC MSet`` for plain values.

    MSet (Asterisk's multiple-Set application) takes ``name=value`` pairs
    split on commas, so only values without commas, quotes, spaces or
    backslashes go through it; any other value gets its own SET VARIABLE.
    """
    plain = {k: str(v) for k, v in values.items()
             if _VARIABLE_NAME.match(k) and _PLAIN_VALUE.match(str(v)) and str(v)}
    commands = [set_variable(k, v) for k, v in values.items() if k not in plain]
    if len(plain) == 1:
        commands += [set_variable(k, v) for k, v in plain.items()]
    elif plain:
        commands.append(exec_app("MSet", ",".join(f"{k}={v}" for k, v in plain.items())))
    return commands


def get_variable(name: str) -> Command:
    return Command(("GET", "VARIABLE"), (name,))


def verbose(message: str, level: int = 1) -> Command:
    return Command(("VERBOSE",), (message, level))


def stream_file(name: str, escape_digits: str = "") -> Command:
    return Command(("STREAM", "FILE"), (name, escape_digits))


def get_data(name: str, timeout_ms: int, max_digits: int) -> Command:
    return Command(("GET", "DATA"), (name, timeout_ms, max_digits))


def exec_app(application: str, options: str = "") -> Command:
    return Command(("EXEC",), (application, options) if options else (application,))


# --- the Asterisk side, for the simulator and tests -------------------------
