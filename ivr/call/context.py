"""Call contexts: what the IVR learnt about a call, kept for the agent's screen.

`CallContext` is one call as the FastAGI flow (`ivr.call.inbound`) fills it:
the parts of the routing decision it carries (`DecisionPart`: customer, role,
predicted intents, route), what the caller pressed and said, the outcome and
the reasons the call degraded.  It is the card's contract: `build_card`
derives the customer card the agents' pages render (ivr/web/static/agent.js)
from the fields declared with ``card`` or ``under`` here, so a new card field
is a field of these dataclasses and its rendering on the page.  The call
record keeps the fields declared ``record`` and the prediction's features
(`CallContext.for_record`), which `caller_id.learning` trains on.

A context is stored as the JSON of `CallContext.to_dict` under the call id the
flow sets as IVR_CALL_ID, with the Asterisk channel ids as aliases, so whoever
sees a queue event later (any node) can find it; `CallContext.from_dict` reads
it back (a key it does not know is passed over, a missing one takes its
default, so what an older node stored still loads).  With Redis configured,
contexts live there; otherwise in this process.  A Redis failure never reaches
the call: the context is then kept in this process and the outage is logged
once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import time
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any, Protocol, Self

from caller_id.learning import CallFeatures
from caller_id.predict import Intent
from caller_id.profile import Manager, RecentCall
from ivr.selfservice.dialog import Outcome

log = logging.getLogger(__name__)

_CARD, _RECORD, _OPTIONAL = "card", "record", "optional"


def _field(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, card: bool | str = False,
           under: str | None = None, record: bool = False, optional: bool = False) -> Any:
    """A dataclass field with what the card and the call record make of it.

    card      shown on the card: True under the field's name, a string under that name
    under     shown inside this object of the card (``"ivr"``: what happened in the IVR)
    record    kept in the call record's ``context`` too (`CallContext.for_record`)
    optional  left out of the stored JSON while None
    """
    metadata: dict[str, Any] = {}
    if card or under:
        metadata[_CARD] = (card if isinstance(card, str) else None, under)
    if record:
        metadata[_RECORD] = True
    if optional:
        metadata[_OPTIONAL] = True
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Stored:
    """A dataclass kept in a call context: JSON by its fields and back."""

    @classmethod
    def of(cls, **values: Any) -> Self:
        """This part of these field values, each made into its field's type: a project value (a
        `caller_id` customer, role, case, ...) into the part of the same attribute names."""
        return _make(cls, values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """From its stored JSON; unknown keys are passed over, missing ones take their defaults."""
        return _make(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return _encode_fields(self)


# --------------------------------------------------------------------------
# the decision's parts
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LookupPart(Stored):
    """How the caller was looked up (`caller_id.directory.LookupResult`)."""

    source: str
    degraded: str | None = None
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class OrganisationPart(Stored):
    id: int
    name: str
    segment: str
    is_vip: bool = False


@dataclass(frozen=True)
class CustomerPart(Stored):
    """The customer the caller was identified as."""

    id: int = _field(card=True)
    name: str = _field(card=True)
    segment: str
    is_vip: bool = False
    language: str = _field("ru", card=True)
    manager: Manager | None = None


@dataclass(frozen=True)
class CustomerName(Stored):
    """One of the customers behind the number."""

    id: int
    name: str


@dataclass(frozen=True)
class RolePart(Stored):
    """A role the number plays; `label` as `caller_id.profile.Role.label` names it."""

    kind: str = _field(card=True)
    customer_id: int
    label: str = _field(card=True)
    organisation: OrganisationPart | None = None


@dataclass(frozen=True)
class CasePart(Stored):
    """An open case of the caller's view."""

    id: int
    product: str
    title: str
    status: str
    priority: int
    due_at: dt.datetime | None = None
    customer_owes_next_step: bool = False


@dataclass(frozen=True)
class RoutePart(Stored):
    """Where the call was sent (`queues.rules.RouteDecision`)."""

    queue: str = _field(card=True)
    priority: int = _field(card=True)
    rule: str = _field(card=True)
    manager_interface: str | None = None
    manager_timeout: int | None = None
    announcement: str | None = None
    self_service: bool = True


@dataclass(frozen=True)
class DecisionPart(Stored):
    """The routing decision as the context keeps it (`ivr.call.decision.Decision.part`) and
    `ivr lookup` prints it.  The card shows `number` (else the number Asterisk gave) and `line`
    when the context has none; its ``reason`` and ``other_reasons`` are the first three `intents`."""

    number: str | None = None  # E.164; None for an unusable caller ID
    line: str | None = None
    lookup: LookupPart | None = None
    customer: CustomerPart | None = _field(None, card=True)
    customers: tuple[CustomerName, ...] = ()
    roles: tuple[RolePart, ...] = ()
    role: RolePart | None = _field(None, card=True)  # its organisation is the card's "organisation"
    question: tuple[RolePart, ...] = ()  # the roles the caller was asked to choose from
    segment: str | None = _field(None, card=True)
    is_vip: bool = _field(False, card=True)
    manager: Manager | None = _field(None, card=True)
    open_cases: tuple[CasePart, ...] = _field((), card=True)
    recent_calls: tuple[RecentCall, ...] = _field((), card="previous_calls")
    intents: tuple[Intent, ...] = ()  # best first
    confirmed_intent: str | None = None  # the reason the caller gave in the self-service dialog
    route: RoutePart | None = _field(None, card=True)

    def features(self) -> CallFeatures:
        """What the prediction saw (the guesses' signals and the caller), as the call record keeps it."""
        return CallFeatures.of(self.intents, known=self.customer is not None, vip=self.is_vip,
                               role=self.role.kind if self.role is not None else None,
                               open_cases=len(self.open_cases), recent_calls=len(self.recent_calls))


# --------------------------------------------------------------------------
# the call
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Keypress(Stored):
    """What the caller pressed at one question."""

    step: str  # the question: "role"
    pressed: str  # the keys, "" for none


@dataclass(frozen=True)
class RoleQuestion(Stored):
    """The role question as the caller heard and answered it (roles by their labels)."""

    asked: tuple[str, ...]  # key 1 first
    pressed: str = ""
    chosen: str | None = None
    confirmed: bool = False
    assumed: str | None = None  # the role routed in when none was chosen

    @property
    def wants_person(self) -> bool:
        """0 pressed: a person, as 0 means in every question (no menu after this one)."""
        return self.pressed == "0"


@dataclass
class CallContext(Stored):
    """One call as the IVR saw it (see the module docstring); `call_id` is None only on the card
    of a call whose context is not (yet) found."""

    call_id: str | None = _field(None, card=True)
    uniqueid: str | None = None  # the caller channel's Asterisk ids, for finding the context by them
    channel: str | None = None
    line: str | None = None
    started_at: dt.datetime | None = None
    outcome: str | None = _field(None, under="ivr", record=True)  # ivr.metrics.CALL_OUTCOMES
    degraded: list[str] = _field(factory=list, under="ivr")  # ivr.metrics.FAIL_OPEN_REASONS, in order
    dtmf: list[Keypress] = _field(factory=list, under="ivr", record=True)
    role_question: RoleQuestion | None = _field(None, under="ivr", record=True)
    dialog_skipped: str | None = _field(None, under="ivr")  # why no self-service: straight to a person
    decision_ms: float | None = None
    # The self-service dialog's steps (the card shows them, an empty list as none) and outcome.
    transcript: list[dict[str, Any]] | None = _field(None, record=True, optional=True)
    self_service: Outcome | None = _field(None, under="ivr", record=True, optional=True)
    decision: DecisionPart | None = _field(None, optional=True)

    def for_record(self) -> dict[str, Any]:
        """What the call record keeps of the context (its ``context`` column): the fields declared
        ``record`` and, after a decision, ``features``: what the prediction saw, for learning from
        (`DecisionPart.features`; the signals are those of the decision's own intents, which a
        context read back from its JSON no longer has)."""
        kept = _encode_fields(self, _layout(CallContext).record)
        if self.decision is not None and self.decision.intents:
            kept["features"] = self.decision.features().to_dict()
        return kept


# --------------------------------------------------------------------------
# the card
# --------------------------------------------------------------------------


def _number(raw: str | None) -> str | None:
    """CallerIDNum as the agent should see it; None for ``<unknown>``, ``unknown`` or empty."""
    if not raw or raw.lower() in ("<unknown>", "unknown", "anonymous", "<anonymous>"):
        return None
    return raw


def build_card(
    context: CallContext | Mapping[str, Any] | None,
    *,
    number: str | None = None,
    caller_name: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The customer card from a call context or its stored JSON (``None``: nothing known yet).

    `number` and `caller_name` are what Asterisk says about the caller
    (``CallerIDNum`` / ``CallerIDName``); the context's normalised number
    wins when there is one.  `status` is ``"found"``, ``"pending"`` or
    ``"missing"`` (default: found when there is a context, else pending).
    """
    ctx = context if isinstance(context, CallContext) else CallContext.from_dict(context or {})
    decision = ctx.decision or DecisionPart()
    intents = [_encode(intent) for intent in decision.intents]
    reason = intents[0] if intents else None
    if reason is not None and reason["case_id"] is not None:
        reason["case"] = next((_encode(c) for c in decision.open_cases if c.id == reason["case_id"]), None)
    role = decision.role
    card = {
        "context": status or ("found" if context is not None else "pending"),
        "known": decision.customer is not None,
        "number": decision.number or number,
        "caller_name": caller_name,
        "line": ctx.line or decision.line,
        "organisation": _encode(role.organisation) if role is not None else None,
        "reason": reason,
        "other_reasons": intents[1:3],
        **_shown(decision),
        **_shown(ctx),
    }
    card["ivr"]["transcript"] = ctx.transcript or None
    return card


def _shown(part: Stored) -> dict[str, Any]:
    """The fields of `part` declared ``card``, as the card shows them."""
    card: dict[str, Any] = {}
    for name, key, under in _layout(type(part)).card:
        (card.setdefault(under, {}) if under else card)[key] = _on_card(getattr(part, name))
    return card


def _on_card(value: Any) -> Any:
    """A part that declares card fields as those fields; anything else as it is stored."""
    if isinstance(value, (list, tuple)):
        return [_on_card(item) for item in value]
    if isinstance(value, Stored) and _layout(type(value)).card:
        return _shown(value)
    return _encode(value)


# --------------------------------------------------------------------------
# JSON and back
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    fields: tuple[tuple[str, Callable[[Any], Any], bool], ...]  # name, maker of its type, optional
    card: tuple[tuple[str, str, str | None], ...]  # name, name on the card, object of the card it is in
    record: frozenset[str]


@functools.cache
def _layout(cls: type) -> _Layout:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    return _Layout(
        fields=tuple((f.name, _maker(hints[f.name]), bool(f.metadata.get(_OPTIONAL))) for f in fields),
        card=tuple((f.name, f.metadata[_CARD][0] or f.name, f.metadata[_CARD][1])
                   for f in fields if _CARD in f.metadata),
        record=frozenset(f.name for f in fields if f.metadata.get(_RECORD)),
    )


def _make(cls: type, values: Mapping[str, Any]) -> Any:
    return cls(**{name: make(values[name]) for name, make, _ in _layout(cls).fields if name in values})


def _same(value: Any) -> Any:
    return value


@functools.cache
def _maker(kind: Any) -> Callable[[Any], Any]:
    """What makes a value of the type `kind` from its JSON or from the project value it is made of."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        inner = _maker(others[0]) if len(others) == 1 else _same
        return lambda value: None if value is None else inner(value)
    if origin in (tuple, list):
        item = _maker(args[0])
        return lambda value: origin(item(one) for one in value)
    if dataclasses.is_dataclass(kind):
        def part(value: Any) -> Any:
            if isinstance(value, kind):
                return value
            if isinstance(value, Mapping):
                return _make(kind, value)
            return _make(kind, {name: getattr(value, name) for name, _, _ in _layout(kind).fields})
        return part
    if kind is dt.datetime:
        return lambda value: value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return _same


def _encode(value: Any) -> Any:
    """`value` as JSON holds it: a type's own ``to_dict``, else a dataclass by its fields, sequences
    as lists, times in ISO 8601, anything else (a transcript step) as it is."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    own = getattr(value, "to_dict", None)
    if own is not None:
        return own()
    if dataclasses.is_dataclass(value):
        return _encode_fields(value)
    return value


def _encode_fields(value: Any, only: frozenset[str] | None = None) -> dict[str, Any]:
    encoded = {}
    for name, _, optional in _layout(type(value)).fields:
        if only is not None and name not in only:
            continue
        item = getattr(value, name)
        if item is None and optional:
            continue
        encoded[name] = _encode(item)
    return encoded


# --------------------------------------------------------------------------
# the stores
# --------------------------------------------------------------------------


class CallContexts(Protocol):
    async def put(self, call_id: str, context: CallContext | Mapping[str, Any],
                  aliases: tuple[str, ...] = ()) -> None:
        """Keep `context` (a mapping: its stored JSON already) under the call id and its aliases."""
        ...

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored JSON (`CallContext.from_dict` reads it) by call id or by one of its aliases
        (Asterisk Uniqueid / Linkedid)."""
        ...

    async def close(self) -> None: ...


def _stored(context: CallContext | Mapping[str, Any]) -> dict[str, Any]:
    return context.to_dict() if isinstance(context, CallContext) else dict(context)


class InProcessContexts:
    """Contexts in this process: each kept `ttl` seconds, at most `max_entries` (the oldest go first)."""

    def __init__(self, ttl: float, max_entries: int = 200_000, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._aliases: dict[str, str] = {}

    async def put(self, call_id: str, context: CallContext | Mapping[str, Any],
                  aliases: tuple[str, ...] = ()) -> None:
        self._items[call_id] = (self._clock() + self._ttl, _stored(context))
        self._items.move_to_end(call_id)
        for alias in aliases:
            self._aliases[alias] = call_id
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        if len(self._aliases) > 2 * self._max:
            self._aliases = {a: c for a, c in self._aliases.items() if c in self._items}

    async def get(self, key: str) -> dict[str, Any] | None:
        call_id = key if key in self._items else self._aliases.get(key)
        if call_id is None:
            return None
        entry = self._items.get(call_id)
        if entry is None:
            return None
        expires, context = entry
        if expires < self._clock():
            del self._items[call_id]
            return None
        return context

    async def close(self) -> None:
        self._items.clear()
        self._aliases.clear()


class RedisContexts:
    """Contexts in Redis (shared by every node), this process as the fallback."""

    PREFIX = "ivr:call:"
    ALIAS = "ivr:call-alias:"

    def __init__(self, client: Any, ttl: float, fallback: InProcessContexts | None = None):
        self._redis = client
        self._ttl = int(ttl)
        self._fallback = fallback or InProcessContexts(ttl)
        self._failing = False

    async def put(self, call_id: str, context: CallContext | Mapping[str, Any],
                  aliases: tuple[str, ...] = ()) -> None:
        stored = _stored(context)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self.PREFIX + call_id, json.dumps(stored, ensure_ascii=False), ex=self._ttl)
                for alias in aliases:
                    pipe.set(self.ALIAS + alias, call_id, ex=self._ttl)
                await pipe.execute()
            self._recovered()
        except Exception as exc:  # noqa: BLE001 - any Redis trouble falls back
            self._failed(exc)
            await self._fallback.put(call_id, stored, aliases)

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(self.PREFIX + key)
            if raw is None:
                call_id = await self._redis.get(self.ALIAS + key)
                if call_id is not None:
                    raw = await self._redis.get(self.PREFIX + _text(call_id))
            self._recovered()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return await self._fallback.get(key)
        if raw is None:
            return await self._fallback.get(key)
        return json.loads(raw)

    async def close(self) -> None:
        await self._fallback.close()

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("call contexts: Redis unavailable (%s); keeping contexts in this process", exc)
            self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("call contexts: Redis is back")
            self._failing = False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
