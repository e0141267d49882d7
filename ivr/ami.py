"""The Asterisk Manager Interface: a codec without I/O and a small asyncio client.

Why not panoramisk 1.4 (the library the project started with)
----------------------------------------------------------------
Its faults sit in the parts a contact center depends on, not at the edges:

* ``AMIProtocol.data_received`` decodes every TCP chunk on its own with
  ``errors="ignore"``, so a Cyrillic name split across two reads silently
  loses a character;
* ``send_action`` has no timeout, and a waiter cancelled from outside stays
  in its ``responses`` table;
* ``Manager.dispatch`` calls synchronous callbacks inline in
  ``data_received``: one exception there tears the connection down;
* ``ping()`` never looks at the answer, so a half-open Asterisk (socket up,
  nothing answering) is never noticed;
* it reconnects at a fixed interval with no backoff or jitter, and after a
  reconnect (on FullyBooted) it *sends again* every action that was still
  waiting for an answer, which is wrong for actions that are not idempotent
  (QueueAdd, Originate, Hangup).

Patching all of that means replacing its protocol class, its dispatcher, its
pinger and its reconnect loop; little of the library would be left in use.
So this module does without it: a codec in the style of h11 (bytes in,
messages out; no sockets, no asyncio), fuzzed and checked against the
recorded Asterisk streams, and a thin asyncio loop around it.

The codec
---------
* `AmiParser` frames what Asterisk sends: the banner line, then messages of
  ``Name: value\\r\\n`` lines closed by a blank line.  Bytes are buffered and
  decoded only once a message is complete, so a UTF-8 character split across
  reads is intact.  Repeated keys (``ChanVariable``) are kept in order.
  Garbage, invalid UTF-8 and a message cut short (at a line end) by the
  next one are reported or marked, never allowed to swallow the messages
  after them; `_starts_message` has the rule.
* Command output.  Asterisk 12 and later (23 included: ``action_command``
  in main/manager.c) answer ``Action: Command`` with ``Response: Success``,
  ``Message: Command output follows`` and one ``Output:`` header per line,
  closed by the blank line like any message; nothing in them writes
  ``Response: Follows`` any more.  Asterisk 11 and older answered with
  ``Response: Follows``, ``Privilege: Command``, the ActionID, then raw
  output (blank lines included) up to ``--END COMMAND--``.  So a Follows
  block is read raw only when its ActionID is that of a Command action
  this client sent (`AmiParser.expect_command_output`) and has not seen
  answered; any other ``Response: Follows`` is an ordinary message that
  ends at its blank line, and can never hide the messages after it.
* `ActionParser` is the other direction, read the way Asterisk's manager
  reads it (``\\n`` or ``\\r\\n``; a blank line ends an action).
* `encode_action` writes one action with its ``ActionID`` and refuses
  header injection.
* `ActionTracker` pairs responses with actions by ``ActionID`` and gathers
  list responses (``EventList: start`` ... ``*Complete``, e.g. QueueStatus).

The client
----------
`AmiClient` logs in, times out every action, dispatches events to handlers
(sync or async, in order; an exception is logged, never fatal), checks
liveness with a Ping whose Pong it waits for, reconnects with capped
exponential backoff and jitter after EOF, errors, a ``Shutdown`` event or a
missed Pong, and calls ``on_connected`` after every (re)connect.  Actions
that were waiting when a connection died fail; they are never sent again.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

log = logging.getLogger(__name__)

EOL = b"\r\n"
TERMINATOR = b"\r\n\r\n"
FOLLOWS = b"Response: Follows\r\n"
END_COMMAND = b"--END COMMAND--"
MAX_MESSAGE = 4 * 1024 * 1024  # bytes in one message before it is discarded as garbage
MAX_ACTION_LINE = 1024  # Asterisk's manager input buffer (inbuf[1025])
MAX_ACTION_HEADERS = 128  # AST_MAX_MANHEADERS
MAX_PENDING_COMMANDS = 64  # Command actions whose raw (Asterisk 11) output the parser watches for

# Message headers a `Response: Follows` block may carry before its raw output.
_FOLLOWS_HEADERS = {"response", "privilege", "actionid", "message"}


class AmiError(Exception):
    """Base of the AMI errors."""


# --------------------------------------------------------------------------
# codec: messages
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One AMI message: ordered headers (keys may repeat) and command output.

    Lookups are case-insensitive like Asterisk's own (``astman_get_header``).
    `truncated` is set when the next message began before this one's blank
    line; `invalid_utf8` when bytes had to be replaced by U+FFFD; `junk`
    holds lines that are not ``Name: value``.
    """

    headers: tuple[tuple[str, str], ...]
    output: tuple[str, ...] = ()
    truncated: bool = False
    invalid_utf8: bool = False
    junk: tuple[str, ...] = ()

    @classmethod
    def of(cls, *pairs: tuple[str, str], **values: str) -> Message:
        """Build a message from pairs and keyword headers (in that order)."""
        return cls(tuple(pairs) + tuple((k, str(v)) for k, v in values.items()))

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    @property
    def first_key(self) -> str | None:
        return self.headers[0][0] if self.headers else None

    @property
    def is_event(self) -> bool:
        return (self.first_key or "").lower() == "event"

    @property
    def is_response(self) -> bool:
        return (self.first_key or "").lower() == "response"

    @property
    def event(self) -> str | None:
        """The event name (``Event:``), None for a response."""
        return self.headers[0][1] if self.is_event else None

    @property
    def response(self) -> str | None:
        """``Success``, ``Error``, ``Goodbye``, ``Follows``; None for an event."""
        return self.headers[0][1] if self.is_response else None

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def variables(self) -> dict[str, str]:
        """``ChanVariable: NAME=value`` (and ``ChanVariable(<channel>):``) as a dict."""
        return _variables(self.headers, "chanvariable")

    @property
    def dest_variables(self) -> dict[str, str]:
        """``DestChanVariable: NAME=value`` (the member channel of agent events)."""
        return _variables(self.headers, "destchanvariable")

    def to_dict(self) -> dict[str, str]:
        """First value of each key; repeated keys are in `get_all`."""
        result: dict[str, str] = {}
        for key, value in self.headers:
            result.setdefault(key, value)
        return result

    def encode(self) -> bytes:
        """The message as Asterisk writes it (used by the simulator and tests)."""
        lines = "".join(f"{key}: {value}\r\n" for key, value in self.headers)
        return (lines + "\r\n").encode("utf-8")


def _variables(headers: Iterable[tuple[str, str]], prefix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in headers:
        lowered = key.lower()
        if lowered == prefix or (lowered.startswith(prefix + "(") and lowered.endswith(")")):
            name, _, var_value = value.partition("=")
            found[name] = var_value
    return found


@dataclass(frozen=True)
class Banner:
    """The first line Asterisk writes: ``Asterisk Call Manager/12.0.0``."""

    text: str

    @property
    def version(self) -> str | None:
        _, sep, version = self.text.partition("/")
        return version.strip() if sep else None


@dataclass(frozen=True)
class Garbage:
    """Bytes that are not an AMI message; skipped by the client with a log line."""

    data: bytes
    reason: str


Item = Union[Banner, Message, Garbage]


def _split_header(line: str) -> tuple[str, str] | None:
    """``Name: value`` -> (name, value); None if the line is not a header.

    Exactly one space after the colon is dropped, so values keep any other
    leading spaces and an empty value stays empty.
    """
    key, sep, rest = line.partition(":")
    if not sep or not key or key != key.strip():
        return None
    return key, rest[1:] if rest.startswith(" ") else rest


def _key(line: str) -> str | None:
    key, sep, _ = line.partition(":")
    return key if sep else None


def _starts_message(current: list[str], lines: list[str], index: int) -> bool:
    """Does ``lines[index]`` begin a new message inside the frame being read?

    Asterisk writes ``Event`` or ``Response`` first and never twice, so meeting
    one inside a message means that message was cut short and lost its blank
    line.  One exception: ``OriginateResponse`` carries a ``Response`` header
    of its own.  So inside an event, ``Response:`` starts a new message only
    when ``ActionID:`` follows it, as in every response to this client (which
    always sends an ActionID); OriginateResponse has ``Channel:`` there.
    """
    if not current:
        return False
    key = _key(lines[index])
    if key == "Event":
        return True
    if key != "Response":
        return False
    if _key(current[0]) == "Response":
        return True
    return index + 1 < len(lines) and _key(lines[index + 1]) == "ActionID"


class AmiParser:
    """Incremental parser of the bytes Asterisk writes on a manager connection.

    ``feed(data)`` returns the complete items; ``close()`` at end of stream
    returns what was left unfinished as `Garbage`.  The result is the same
    however the bytes are split across ``feed`` calls.  At most
    `max_message` bytes are held (`buffered`); a longer message is dropped.
    """

    def __init__(self, *, expect_banner: bool = True, max_message: int = MAX_MESSAGE):
        self._buffer = bytearray()
        self._want_banner = expect_banner
        self._max = max_message
        self._discarding = False  # inside an over-long message, dropping bytes to its end
        self._commands: OrderedDict[str, None] = OrderedDict()  # ActionIDs of Command actions not answered

    @property
    def buffered(self) -> int:
        """Bytes held for a message that is not complete yet."""
        return len(self._buffer)

    def expect_command_output(self, action_id: str) -> None:
        """A Command action went out with this ActionID: a ``Response: Follows`` for it is raw output.

        Forgotten when its answer comes (in either format); only the newest
        `MAX_PENDING_COMMANDS` are remembered.
        """
        self._commands[action_id] = None
        self._commands.move_to_end(action_id)
        while len(self._commands) > MAX_PENDING_COMMANDS:
            self._commands.popitem(last=False)

    def forget_command_output(self, action_id: str) -> None:
        """The Command action was given up: a late ``Response: Follows`` for it is an ordinary message."""
        self._commands.pop(action_id, None)

    def feed(self, data: bytes) -> list[Item]:
        self._buffer += data
        items: list[Item] = []
        while self._step(items):
            pass
        return items

    def close(self) -> list[Item]:
        """End of stream: an unfinished message is garbage."""
        items: list[Item] = []
        rest = bytes(self._buffer).strip(b"\r\n")
        self._buffer.clear()
        if self._discarding:
            items.append(Garbage(b"", f"message longer than {self._max} bytes"))
            self._discarding = False
        elif rest:
            items.append(Garbage(rest, "connection closed in the middle of a message"))
        return items

    def _step(self, items: list[Item]) -> bool:
        """Take one item off the buffer; False when more bytes are needed."""
        buffer = self._buffer
        if self._discarding:
            end = buffer.find(TERMINATOR)
            if end < 0:
                del buffer[: max(0, len(buffer) - 3)]  # keep a possible partial terminator
                return False
            del buffer[: end + 4]
            self._discarding = False
            items.append(Garbage(b"", f"message longer than {self._max} bytes"))
            return True
        if self._want_banner:
            newline = buffer.find(b"\n")
            if newline < 0:
                return self._check_size()
            line = bytes(buffer[:newline]).rstrip(b"\r")
            self._want_banner = False
            if b": " in line and not line.startswith(b"Asterisk Call Manager"):
                return True  # no banner: the stream starts with a message
            del buffer[: newline + 1]
            items.append(Banner(line.decode("utf-8", "replace")))
            return True
        # Blank lines between messages (app_queue's QueueRule writes two).
        skip = 0
        while skip < len(buffer) and buffer[skip] in (0x0D, 0x0A):
            skip += 1
        if skip:
            del buffer[:skip]
        if not buffer:
            return False
        if self._commands:
            if len(buffer) < len(FOLLOWS) and FOLLOWS.startswith(buffer):
                return False  # could still become `Response: Follows`
            if buffer.startswith(FOLLOWS):
                action_id = self._follows_action_id()
                if action_id is None:
                    return self._check_size()  # its ActionID line has not arrived yet
                if action_id in self._commands:
                    end = buffer.find(END_COMMAND + TERMINATOR)
                    if end < 0:
                        return self._check_size()
                    frame = bytes(buffer[:end])
                    del buffer[: end + len(END_COMMAND) + 4]
                    del self._commands[action_id]
                    items.append(_parse_follows(frame))
                    return True
        end = buffer.find(TERMINATOR)
        if end < 0:
            return self._check_size()
        frame = bytes(buffer[:end])
        del buffer[: end + 4]
        if len(frame) > self._max:
            items.append(Garbage(b"", f"message longer than {self._max} bytes"))
            return True
        parsed = _parse_frame(frame)
        if self._commands:
            for item in parsed:
                if isinstance(item, Message) and item.is_response and item.action_id is not None:
                    self._commands.pop(item.action_id, None)  # answered the Asterisk 12+ way
        items.extend(parsed)
        return True

    def _follows_action_id(self) -> str | None:
        """The ActionID of the ``Response: Follows`` at the start of the buffer.

        ``""`` when its header lines end without one; None while they have not all arrived.
        """
        buffer = self._buffer
        start = 0
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                return None
            key, sep, value = bytes(buffer[start:newline]).rstrip(b"\r").partition(b":")
            key = key.lower()
            if not sep or key.decode("latin-1") not in _FOLLOWS_HEADERS:
                return ""
            if key == b"actionid":
                return value.strip().decode("utf-8", "replace")
            start = newline + 1

    def _check_size(self) -> bool:
        if len(self._buffer) > self._max:
            self._discarding = True
            return True
        return False


def _decode(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True


def _parse_frame(frame: bytes) -> list[Message | Garbage]:
    """One blank-line-delimited frame: usually one message, more if one was cut short."""
    text, invalid = _decode(frame)
    lines = text.split("\r\n")
    groups: list[list[str]] = [[]]
    for index, line in enumerate(lines):
        if _starts_message(groups[-1], lines, index):
            groups.append([])
        groups[-1].append(line)
    items: list[Message | Garbage] = []
    for index, lines in enumerate(groups):
        headers: list[tuple[str, str]] = []
        junk: list[str] = []
        output: list[str] = []
        for line in lines:
            pair = _split_header(line)
            if pair is None:
                junk.append(line)
                continue
            headers.append(pair)
            if pair[0].lower() == "output":
                output.append(pair[1])
        if not headers:
            items.append(Garbage("\r\n".join(lines).encode("utf-8", "replace"), "no header line"))
            continue
        items.append(Message(
            tuple(headers), tuple(output),
            truncated=index < len(groups) - 1,
            invalid_utf8=invalid,
            junk=tuple(junk),
        ))
    return items


def _parse_follows(frame: bytes) -> Message:
    """``Response: Follows`` (Asterisk 11 and older): headers, raw output, ``--END COMMAND--``."""
    text, invalid = _decode(frame)
    lines = [line.rstrip("\r") for line in text.split("\n")]
    headers: list[tuple[str, str]] = []
    output: list[str] = []
    in_headers = True
    for line in lines:
        pair = _split_header(line) if in_headers else None
        if pair is not None and pair[0].lower() in _FOLLOWS_HEADERS:
            headers.append(pair)
            continue
        if pair is not None and pair[0].lower() == "output":  # Asterisk 12/13 style first line
            headers.append(pair)
            output.append(pair[1])
            continue
        in_headers = False
        output.append(line)
    while output and output[-1] == "":
        output.pop()
    return Message(tuple(headers), tuple(output), invalid_utf8=invalid)


# --------------------------------------------------------------------------
# codec: actions
# --------------------------------------------------------------------------

ActionFields = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _action_pairs(action: ActionFields) -> list[tuple[str, str]]:
    items = action.items() if isinstance(action, Mapping) else action
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        if isinstance(value, Mapping):  # Variable={"A": 1} -> Variable: A=1
            pairs.extend((key, f"{name}={_text(v)}") for name, v in value.items())
        elif isinstance(value, (list, tuple)):
            pairs.extend((key, _text(v)) for v in value)
        elif value is not None:
            pairs.append((key, _text(value)))
    return pairs


def action_name(action: ActionFields) -> str:
    for key, value in _action_pairs(action):
        if key.lower() == "action":
            return value
    raise ValueError("an AMI action needs an 'Action' field")


def encode_action(action: ActionFields, action_id: str | None = None) -> bytes:
    """One action: ``Action`` first, then ``ActionID``, then the other fields in order.

    Values may be str, int, bool (``true``/``false``), a list (repeated key)
    or a mapping (``Variable: NAME=value`` lines).  Keys and values with a
    line break are refused: they would inject headers or end the action.
    """
    pairs = _action_pairs(action)
    name = action_name(pairs)
    given = [v for k, v in pairs if k.lower() == "actionid"]
    if action_id is not None and given and given[0] != action_id:
        raise ValueError("ActionID given twice with different values")
    action_id = action_id if action_id is not None else (given[0] if given else None)
    rest = [(k, v) for k, v in pairs if k.lower() not in ("action", "actionid")]
    ordered = [("Action", name)] + ([("ActionID", action_id)] if action_id else []) + rest
    lines = []
    for key, value in ordered:
        if not key or ":" in key or key != key.strip() or any(c in key for c in "\r\n\0"):
            raise ValueError(f"invalid AMI header name {key!r}")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"AMI header {key} cannot contain a line break or NUL")
        lines.append(f"{key}: {value}\r\n")
    return ("".join(lines) + "\r\n").encode("utf-8")


class ActionParser:
    """The client's bytes as Asterisk's manager reads them (Asterisk's side).

    Lines end with ``\\n`` (a ``\\r`` before it is dropped); a blank line ends
    the action, even one without headers (Asterisk answers that with
    ``Missing action in request``).  A line over 1024 bytes or more than 128
    lines are dropped and noted in the action's `junk` (``"line too long"``,
    ``"too many lines"``), which Asterisk answers with an error.
    Values are read the way ``astman_get_header`` does: leading blanks skipped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[str, str]] = []
        self._problems: list[str] = []

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        actions: list[Message] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > MAX_ACTION_LINE:
                    self._buffer = self._buffer[-1:]
                    self._note("line too long")
                return actions
            raw = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_ACTION_LINE:
                self._note("line too long")
                continue
            line = raw.decode("utf-8", "replace")
            if line == "":
                actions.append(Message(tuple(self._lines), junk=tuple(self._problems)))
                self._lines, self._problems = [], []
                continue
            if len(self._lines) >= MAX_ACTION_HEADERS:
                self._note("too many lines")
                continue
            key, sep, value = line.partition(":")
            if sep and key.strip():
                self._lines.append((key.strip(), value.lstrip(" \t")))
            # A line without a colon can never match a header lookup: Asterisk ignores it.

    def _note(self, problem: str) -> None:
        if problem not in self._problems:
            self._problems.append(problem)


# --------------------------------------------------------------------------
# codec: pairing answers with actions
# --------------------------------------------------------------------------


@dataclass
class ActionResult:
    """The answer to one action: the response, plus the events of a list response."""

    response: Message
    events: list[Message] = field(default_factory=list)
    complete: Message | None = None  # the closing ``...Complete`` event of a list

    @property
    def ok(self) -> bool:
        return (self.response.response or "").lower() in ("success", "follows", "goodbye")

    @property
    def message(self) -> str | None:
        return self.response.get("Message")

    @property
    def output(self) -> tuple[str, ...]:
        """Command output lines (``Output:`` headers or a ``Follows`` body)."""
        return self.response.output

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.response.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self.response[name]

    def events_named(self, name: str) -> list[Message]:
        return [e for e in self.events if (e.event or "").lower() == name.lower()]


@dataclass(frozen=True)
class Completed:
    action_id: str
    result: ActionResult


@dataclass(frozen=True)
class Dropped:
    message: Message
    reason: str


class ActionTracker:
    """Routes messages: answers to pending actions, everything else to event handlers.

    * a response whose ActionID is pending completes it, unless it says
      ``EventList: start``; then the events carrying that ActionID are
      gathered until one says ``EventList: Complete`` (or ``Cancelled``);
    * an event with the ActionID of an action already answered (such as
      ``OriginateResponse``) is an ordinary event;
    * what still arrives for an abandoned (timed-out) action is dropped, so a
      late QueueStatus list never reaches the event handlers.
    """

    def __init__(self, *, remember: int = 1024):
        self._pending: set[str] = set()
        self._lists: dict[str, ActionResult] = {}
        self._abandoned: OrderedDict[str, bool] = OrderedDict()  # id -> inside a list
        self._remember = remember

    @property
    def pending(self) -> frozenset[str]:
        return frozenset(self._pending | set(self._lists))

    def expect(self, action_id: str) -> None:
        if action_id in self._pending or action_id in self._lists:
            raise ValueError(f"ActionID {action_id!r} is already waiting for an answer")
        self._abandoned.pop(action_id, None)
        self._pending.add(action_id)

    def abandon(self, action_id: str) -> None:
        in_list = action_id in self._lists
        if action_id in self._pending or in_list:
            self._pending.discard(action_id)
            self._lists.pop(action_id, None)
            self._abandoned[action_id] = in_list
            while len(self._abandoned) > self._remember:
                self._abandoned.popitem(last=False)

    def feed(self, message: Message) -> Completed | Message | Dropped:
        action_id = message.action_id
        list_flag = (message.get("EventList") or "").lower()
        if message.is_response:
            if action_id is not None and action_id in self._pending:
                self._pending.discard(action_id)
                result = ActionResult(message)
                if list_flag == "start":
                    self._lists[action_id] = result
                    return Dropped(message, "list response started")  # nothing to deliver yet
                return Completed(action_id, result)
            if action_id is not None and action_id in self._abandoned:
                if list_flag == "start":
                    self._abandoned[action_id] = True
                else:
                    del self._abandoned[action_id]
                return Dropped(message, "answer to an abandoned action")
            return Dropped(message, "response to no pending action")
        if not message.is_event:
            return Dropped(message, "neither an event nor a response")
        if action_id is not None and action_id in self._lists:
            result = self._lists[action_id]
            if list_flag in ("complete", "cancelled"):
                result.complete = message
                del self._lists[action_id]
                return Completed(action_id, result)
            result.events.append(message)
            return Dropped(message, "list item gathered")
        if action_id is not None and self._abandoned.get(action_id):
            if list_flag in ("complete", "cancelled"):
                del self._abandoned[action_id]
            return Dropped(message, "list item of an abandoned action")
        return message


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


def iter_messages(data: bytes, chunks: Iterable[int] | None = None) -> Iterator[Item]:
    """Parse a whole recorded stream (optionally fed in pieces of the given sizes)."""
    parser = AmiParser()
    if chunks is None:
        yield from parser.feed(data)
    else:
        offset = 0
        for size in chunks:
            yield from parser.feed(data[offset: offset + size])
            offset += size
        yield from parser.feed(data[offset:])
    yield from parser.close()
