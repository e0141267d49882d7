"""The Asterisk Manager Interface: the codec, without I/O (the client is `ivr.asterisk.ami_client`).

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
So the project does without it: a codec in the style of h11 (bytes in,
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
* `encode_action` writes one action with its ``ActionID`` and refuses
  header injection.
* `ActionTracker` pairs responses with actions by ``ActionID`` and gathers
  list responses (``EventList: start`` ... ``*Complete``, e.g. QueueStatus).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

log = logging.getLogger(__name__)

EOL = b"\r\n"
TERMINATOR = b"\r\n\r\n"
FOLLOWS = b"Response: Follows\r\n"
END_COMMAND = b"--END COMMAND--"
MAX_MESSAGE = 4 * 1024 * 1024  # bytes in one message before it is discarded as garbage
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

    def encode(self) -> bytes:
        """The message as Asterisk writes it (used by the simulator and tests)."""
        lines = "".join(f"{key}: {value}\r\n" for key, value in self.headers)
        return (lines + "\r\n").encode("utf-8")


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
