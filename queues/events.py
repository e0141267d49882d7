"""One AMI event, read once: `AmiEvent`, and the tables by which its consumers declare what they handle.

`ivr.agents.callcenter` turns every AMI message it keeps into one `AmiEvent`
(`AmiEvent.from_headers`) and hands that same value to every consumer:
`queues.state`, `queues.stats`, the screen-pop and the call-record updates.
A replay or a test builds one from a mapping of header to value
(`AmiEvent.of`).

What Asterisk (or anything posing as it) sends is judged here, once:

- header names are case-insensitive (as Asterisk's own ``astman_get_header``);
  a header that repeats keeps its first value; values are stripped;
- ``ChanVariable: NAME=value`` lines (also the ``ChanVariable(<channel>)``
  form of OriginateResponse) become `variables`, ``DestChanVariable`` lines
  (the member's leg) `dest_variables`, and those of the other channel
  snapshots an event may carry (``TransfereeChanVariable``,
  ``OrigTransfererChanVariable``... of the transfer events) `party_variables`
  by their prefix (`AmiEvent.party`); empty values are left out;
- an id or a name longer than its column in caller_id/models.py reads as
  absent, with a warning: no Asterisk writes one, and a cut one would be
  another id (and the call-record writer could not store it);
- a number is finite and in range (`AmiEvent.number`), else absent, with a
  warning;
- an event's time is never later than its receive time plus MAX_CLOCK_SKEW
  (`AmiEvent.timestamp`), so one far-future Timestamp cannot make every
  later event look stale.

Each consumer lists the events it handles where its handlers are written, in
a `Handlers` table (``@_handles("QueueCallerJoin")`` on the handler); the
table's `events` are the consumer's ``EVENTS``, and the AMI listener takes
the union.  A new AMI event is one more handler in the consumer that needs it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from caller_id.models import Agent, CallRecord
from queues.variables import CALL_ID

log = logging.getLogger(__name__)

__all__ = ["MAX_CLOCK_SKEW", "MAX_DURATION", "AmiEvent", "BadEvent", "Handlers"]

ID_LENGTH = CallRecord.__table__.c.uniqueid.type.length  # Uniqueid, Linkedid, IVR_CALL_ID
QUEUE_LENGTH = CallRecord.__table__.c.queue.type.length
MEMBER_LENGTH = Agent.__table__.c.interface.type.length  # an interface or a member's name
_LENGTHS = {
    "Uniqueid": ID_LENGTH, "Linkedid": ID_LENGTH, "DestUniqueid": ID_LENGTH, "DestLinkedid": ID_LENGTH,
    "TransfereeUniqueid": ID_LENGTH, "TransfereeLinkedid": ID_LENGTH,
    "Queue": QUEUE_LENGTH,
    "Interface": MEMBER_LENGTH, "Location": MEMBER_LENGTH, "StateInterface": MEMBER_LENGTH,
    "MemberName": MEMBER_LENGTH, "Name": MEMBER_LENGTH,
}
_VARIABLE_LENGTHS = {CALL_ID: ID_LENGTH}
_LIMITS = tuple((name.lower(), name, limit) for name, limit in _LENGTHS.items())

MAX_CLOCK_SKEW = 5.0  # seconds an event may be dated after its arrival (two clocks never agree exactly)
MAX_DURATION = 31 * 86400.0  # seconds; no queue call waits or talks a month
MAX_NUMBER = float(2**53)  # beyond it a float holds no exact whole number

_CHAN_VARIABLE, _DEST_VARIABLE = "chanvariable", "destchanvariable"
_PARTY = "party:"  # the family of another prefix's ChanVariable lines: "party:transferee"


class BadEvent(ValueError):
    """An event that cannot be applied (a required header missing or malformed)."""


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """What one AMI event says, judged as the module docstring tells.

    name            the ``Event`` header ("" when there is none)
    headers         header name in lower case -> its first value, stripped
                    (the channel-variable lines are in the next two)
    variables       ``ChanVariable`` lines: the caller channel's variables
    dest_variables  ``DestChanVariable`` lines: the member channel's
    party_variables ``<Prefix>ChanVariable`` lines of any other prefix, by the prefix in
                    lower case (``transferee``, ``origtransferer``...): `party`
    """

    name: str
    headers: Mapping[str, str]
    variables: Mapping[str, str]
    dest_variables: Mapping[str, str]
    party_variables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_headers(cls, pairs: Iterable[tuple[str, str]]) -> AmiEvent:
        """An event from its header lines in order (``ivr.asterisk.ami.Message.headers``)."""
        reading = _Reading()
        for key, value in pairs:
            reading.add(key, value)
        return reading.event()

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> AmiEvent:
        """An event from a mapping of header to value (replays, tests).

        A list or tuple holds the values of a repeated header; a channel
        variable header may also map names to values (``{"ChanVariable":
        {"IVR_CALL_ID": "call-1"}}``) or hold one ``NAME=value`` string.
        Other values are read as text; None and keys that are not strings
        are left out.
        """
        reading = _Reading()
        for key, value in event.items():
            if not isinstance(key, str) or value is None:
                continue
            family = _family(key.lower()) if isinstance(value, Mapping) else None
            if family is not None:
                for name, item in value.items():
                    reading.add_variable(family, _text(name), "" if item is None else _text(item))
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if item is not None:
                        reading.add(key, _text(item))
            else:
                reading.add(key, _text(value))
        return reading.event()

    # -- reading ---------------------------------------------------------------
    def header(self, name: str) -> str | None:
        """The value of header `name` (in any case), None when absent."""
        return self.headers.get(name.lower())

    def required(self, name: str) -> str:
        """The value of header `name`; `BadEvent` when it is absent or empty."""
        value = self.headers.get(name.lower())
        if not value:
            raise BadEvent(f"{name} missing")
        return value

    def flag(self, name: str) -> bool | None:
        """A yes/no header (``1``, ``yes``, ``true``, ``on`` are yes); None when absent or empty."""
        raw = self.headers.get(name.lower())
        if not raw:
            return None
        return raw.lower() in ("1", "yes", "true", "on")

    def number(self, name: str, *, low: float = -MAX_NUMBER, high: float = MAX_NUMBER) -> float | None:
        """Header `name` as a finite number in [low, high]; None when absent, empty or unusable.

        ``inf``, ``nan``, ``1e400``, words and values out of range are logged
        (no traceback) and read as missing: one odd header costs that field,
        never the event.
        """
        raw = self.headers.get(name.lower())
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            log.warning("AMI %s: %s %r is not a usable number; read as missing", self.name or "unnamed", name,
                        raw[:40])
            return None
        return value

    def integer(self, name: str, default: int | None = None, *, low: float = -MAX_NUMBER,
                high: float = MAX_NUMBER) -> int | None:
        """`number` as a whole number (the fraction dropped), `default` when it is missing."""
        value = self.number(name, low=low, high=high)
        return default if value is None else int(value)

    def timestamp(self, now: float) -> float | None:
        """The ``Timestamp`` header (epoch seconds) of the event received at `now`; None when absent or unusable.

        Never later than ``now + MAX_CLOCK_SKEW``: an event cannot come from the
        future, and a clamp (rather than the receive time itself) keeps events
        from a clock a little ahead of ours in their order.
        """
        value = self.number("Timestamp", low=0.0)
        if value is None or value == 0:
            return None
        return min(value, now + MAX_CLOCK_SKEW)

    def at(self, clock: Callable[[], float] = time.time) -> float:
        """When the event happened: its `timestamp` received now (`clock()`), else `clock()`."""
        now = clock()
        stamp = self.timestamp(now)
        return now if stamp is None else stamp

    def party(self, prefix: str) -> Mapping[str, str]:
        """The channel variables of the snapshot with header prefix `prefix` (``Transferee``...)."""
        return self.party_variables.get(prefix.lower(), {})

    def member(self) -> str | None:
        """The queue member an agent event names: ``Interface``, else ``MemberName``."""
        return self.headers.get("interface") or self.headers.get("membername")


class _Reading:
    """An event being read, header line by header line."""

    __slots__ = ("headers", "variables", "dest_variables", "parties")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.variables: dict[str, str] = {}
        self.dest_variables: dict[str, str] = {}
        self.parties: dict[str, dict[str, str]] = {}

    def add(self, key: str, value: str) -> None:
        name = key.lower()
        family = _family(name) if "variable" in name else None
        if family is None:
            if name not in self.headers:
                self.headers[name] = value.strip()
            return
        variable, _, text = value.partition("=")
        self.add_variable(family, variable, text)

    def add_variable(self, family: str, variable: str, text: str) -> None:
        variable, text = variable.strip(), text.strip()
        if not (variable and text):
            return
        if family == _CHAN_VARIABLE:
            self.variables[variable] = text
        elif family == _DEST_VARIABLE:
            self.dest_variables[variable] = text
        else:
            self.parties.setdefault(family[len(_PARTY):], {})[variable] = text

    def event(self) -> AmiEvent:
        headers = self.headers
        name = headers.get("event", "")
        for key, header, limit in _LIMITS:
            value = headers.get(key)
            if value is not None and len(value) > limit:
                log.warning("AMI %s: %s of %d characters is longer than any Asterisk writes (%d); read as missing",
                            name or "unnamed", header, len(value), limit)
                del headers[key]
        for variables in (self.variables, self.dest_variables, *self.parties.values()):
            for variable, limit in _VARIABLE_LENGTHS.items():
                value = variables.get(variable)
                if value is not None and len(value) > limit:
                    log.warning("AMI %s: %s of %d characters is longer than any the IVR sets (%d); read as missing",
                                name or "unnamed", variable, len(value), limit)
                    del variables[variable]
        return AmiEvent(name, headers, self.variables, self.dest_variables, self.parties)


def _family(name: str) -> str | None:
    """Which channel-variable header a lower-case header name is, if any: `_CHAN_VARIABLE`,
    `_DEST_VARIABLE`, or ``party:<prefix>`` for another snapshot's (``transfereechanvariable``)."""
    for family in (_CHAN_VARIABLE, _DEST_VARIABLE):
        if name == family or name.startswith(family + "("):
            return family
    if name.endswith(_CHAN_VARIABLE) and name[:-len(_CHAN_VARIABLE)].isalnum():
        return _PARTY + name[:-len(_CHAN_VARIABLE)]
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- who handles what -------------------------------------------------------------

Handler = TypeVar("Handler", bound=Callable[..., Any])


class Handlers(dict[str, Callable[..., Any]]):
    """A consumer's table of event name -> handler, filled where the handlers are written::

        _handles = Handlers()

        class Consumer:
            @_handles("QueueCallerLeave", "QueueCallerAbandon")
            def _on_leave(self, event: AmiEvent) -> None: ...

            EVENTS = _handles.events

    A name given to two handlers of one table is an error.
    """

    def __call__(self, *names: str) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            for name in names:
                if name in self:
                    raise ValueError(f"{name} has a handler already: {self[name].__qualname__}")
                self[name] = handler
            return handler

        return add

    @property
    def events(self) -> frozenset[str]:
        """The event names the table handles."""
        return frozenset(self)
