"""Call contexts: what the IVR learnt about a call, kept for the agent's screen.

The FastAGI flow stores a context (customer card, role, predicted intents,
route, what the caller pressed) under the call id it sets as IVR_CALL_ID,
with the Asterisk channel ids as aliases, so whoever sees a queue event
later (any node) can find it.  With Redis configured, contexts live there;
otherwise in this process.  A Redis failure never reaches the call: the
context is then kept in this process and the outage is logged once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol


def _number(raw: str | None) -> str | None:
    """CallerIDNum as the agent should see it; None for ``<unknown>``, ``unknown`` or empty."""
    if not raw or raw.lower() in ("<unknown>", "unknown", "anonymous", "<anonymous>"):
        return None
    return raw


def build_card(
    context: Mapping[str, Any] | None,
    *,
    number: str | None = None,
    caller_name: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The customer card from a call context (``None``: nothing known yet).

    `number` and `caller_name` are what Asterisk says about the caller
    (``CallerIDNum`` / ``CallerIDName``); the context's normalised number
    wins when there is one.  `status` is ``"found"``, ``"pending"`` or
    ``"missing"`` (default: found when there is a context, else pending).
    """
    ctx: Mapping[str, Any] = context or {}
    decision: Mapping[str, Any] = ctx.get("decision") or {}
    customer = decision.get("customer")
    role = decision.get("role")
    organisation = role.get("organisation") if isinstance(role, Mapping) else None
    intents = [i for i in decision.get("intents") or () if isinstance(i, Mapping)]
    open_cases = list(decision.get("open_cases") or ())
    top = dict(intents[0]) if intents else None
    if top is not None and top.get("case_id") is not None:
        top["case"] = next((c for c in open_cases if c.get("id") == top["case_id"]), None)
    route = decision.get("route") or {}
    transcript = ctx.get("transcript")
    return {
        "context": status or ("found" if context is not None else "pending"),
        "known": customer is not None,
        "call_id": ctx.get("call_id"),
        "number": decision.get("number") or number,
        "caller_name": caller_name,
        "line": ctx.get("line") or decision.get("line"),
        "customer": None if not customer else {
            "id": customer.get("id"), "name": customer.get("name"), "language": customer.get("language"),
        },
        "role": None if not role else {"kind": role.get("kind"), "label": role.get("label")},
        "organisation": None if not organisation else {
            "id": organisation.get("id"), "name": organisation.get("name"),
            "segment": organisation.get("segment"), "is_vip": organisation.get("is_vip"),
        },
        "segment": decision.get("segment"),
        "is_vip": bool(decision.get("is_vip")),
        "manager": decision.get("manager"),
        "open_cases": open_cases,
        "reason": top,
        "other_reasons": intents[1:3],
        "ivr": {
            "dtmf": list(ctx.get("dtmf") or ()),
            "role_question": ctx.get("role_question"),
            "transcript": transcript if transcript else None,
            "self_service": ctx.get("self_service"),
            "dialog_skipped": ctx.get("dialog_skipped"),
            "outcome": ctx.get("outcome"),
            "degraded": list(ctx.get("degraded") or ()),
        },
        "previous_calls": list(ctx.get("recent_calls") or decision.get("recent_calls") or ()),
        "route": None if not route else {
            "queue": route.get("queue"), "priority": route.get("priority"), "rule": route.get("rule"),
        },
    }

log = logging.getLogger(__name__)


class CallContexts(Protocol):
    async def put(self, call_id: str, context: dict[str, Any], aliases: tuple[str, ...] = ()) -> None: ...

    async def get(self, key: str) -> dict[str, Any] | None:
        """By call id or by one of its aliases (Asterisk Uniqueid / Linkedid)."""
        ...

    async def close(self) -> None: ...


class InProcessContexts:
    def __init__(self, ttl: float, max_entries: int = 200_000, clock=time.monotonic):
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._aliases: dict[str, str] = {}

    async def put(self, call_id: str, context: dict[str, Any], aliases: tuple[str, ...] = ()) -> None:
        self._items[call_id] = (self._clock() + self._ttl, context)
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

    async def put(self, call_id: str, context: dict[str, Any], aliases: tuple[str, ...] = ()) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self.PREFIX + call_id, json.dumps(context, ensure_ascii=False), ex=self._ttl)
                for alias in aliases:
                    pipe.set(self.ALIAS + alias, call_id, ex=self._ttl)
                await pipe.execute()
            self._recovered()
        except Exception as exc:  # noqa: BLE001 - any Redis trouble falls back
            self._failed(exc)
            await self._fallback.put(call_id, context, aliases)

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
