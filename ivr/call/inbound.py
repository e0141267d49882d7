"""The `inbound` FastAGI script: identify the caller, predict why, route.

Reads like the call: set the call id, look the caller up, ask once which
role they call in when the line does not settle it, predict, decide, set
the routing variables, remember the context for the agent's screen.

It fails open.  The dialplan sets the line's default IVR_QUEUE before the
AGI, so whatever goes wrong here (a slow CRM, a broken rule, a synthesis
error, the caller hanging up) the call leaves with at least that queue;
each such case is logged with the call id and counted in the metrics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from typing import Any

from caller_id.normalise import mask
from caller_id.profile import Role
from ivr import metrics
from ivr.call.decision import Decision, decide, with_intent
from ivr.asterisk.fastagi import AgiCall, AgiError, AgiTimeout, ChannelGone
from ivr.selfservice.timing import hand_over_reserve
from speech.prompts import Prompt

log = logging.getLogger(__name__)

ROLE_QUESTION_TIMEOUT_MS = 4000
ROLE_QUESTION_MIN_WAIT_MS = 2000  # the key wait is cut down to fit time_to_person, never below this

_ROLE_TEXT = {
    "ru": {
        "intro": "Здравствуйте!",
        "private": "Как частное лицо — {digit},",
        "employee": "по делам компании {org} — {digit},",
        "director": "как руководитель компании {org} — {digit},",
    },
    "en": {
        "intro": "Hello!",
        "private": "as a private client, {digit},",
        "employee": "for {org}, {digit},",
        "director": "as the director of {org}, {digit},",
    },
}


def role_question_text(roles: tuple[Role, ...], language: str) -> str:
    texts = _ROLE_TEXT.get(language, _ROLE_TEXT["en"])
    choices = " ".join(texts[role.kind].format(digit=digit, org=role.organisation.name if role.organisation else "")
                       for digit, role in enumerate(roles, start=1))
    choices = choices[:1].upper() + choices[1:]
    return f"{texts['intro']} {choices.rstrip(',')}."


async def role_question(services: Any, roles: tuple[Role, ...], language: str, *,
                        elapsed: float) -> tuple[Prompt, int]:
    """The role question as Asterisk plays it, asked `elapsed` seconds after the AGI start, and its
    key wait in ms: what is left of the dialog's time_to_person after the prompt and the hand-over
    reserve, between ROLE_QUESTION_MIN_WAIT_MS and ROLE_QUESTION_TIMEOUT_MS."""
    if services.prompts is None:
        raise RuntimeError("prompt synthesis is disabled")
    prompt = await services.prompts.for_asterisk(role_question_text(roles, language), language)
    selfservice = services.selfservice
    if selfservice is None:
        return prompt, ROLE_QUESTION_TIMEOUT_MS
    script = selfservice.script
    reserve = await hand_over_reserve(services.prompts, script, script.language_for(language))
    left_ms = (script.settings.time_to_person - elapsed - prompt.seconds - reserve) * 1000
    return prompt, int(max(ROLE_QUESTION_MIN_WAIT_MS, min(ROLE_QUESTION_TIMEOUT_MS, left_ms)))


def new_call_id() -> str:
    return uuid.uuid4().hex


class InboundScript:
    """Callable registered as the `inbound` FastAGI script."""

    def __init__(self, services: Any):
        self.services = services

    async def __call__(self, call: AgiCall) -> None:
        s = self.services
        started = time.perf_counter()
        call_id = new_call_id()
        env = call.env
        line = s.config.line_for(env.args[0] if env.args and env.args[0] else env.dnid or env.extension)
        state: dict[str, Any] = {"dtmf": [], "degraded": [], "outcome": "routed"}
        decision: Decision | None = None
        try:
            await call.set_variable("IVR_CALL_ID", call_id)
            decision = await self._decide(env.callerid, line, state, call_id)
            if decision is not None and decision.lookup.degraded:
                self._fail_open(state, f"lookup_{decision.lookup.source}", call_id, decision.lookup.degraded)
            if decision is not None and decision.question:
                decision = await self._ask_role(call, decision, state, call_id,
                                                elapsed=time.perf_counter() - started)
            if decision is not None and s.selfservice is not None and decision.line.self_service != "off":
                if state.get("wants_person"):
                    state["dialog_skipped"] = "caller pressed 0"
                elif not decision.route.self_service:
                    state["dialog_skipped"] = f"rule {decision.route.rule}"
                else:
                    decision = await self._self_service(call, decision, state, call_id,
                                                        elapsed=time.perf_counter() - started)
            if decision is not None:
                await self._set_route(call, decision, state, call_id)
        except ChannelGone as exc:
            state["outcome"] = "hangup"
            log.info("call %s: caller gone before routing finished (%s)", call_id, exc)
        except AgiError as exc:
            self._fail_open(state, "agi_error", call_id, exc)
        except Exception as exc:  # noqa: BLE001 - the call must go on
            log.exception("call %s: unexpected error; default queue kept", call_id)
            self._fail_open(state, "internal_error", call_id, exc)
        finally:
            elapsed = time.perf_counter() - started
            metrics.CALLS.labels(outcome=state["outcome"]).inc()
            metrics.CALL_PATH_SECONDS.observe(elapsed)
            await self._remember(call, call_id, line.name, decision, state, elapsed)

    # -- steps ----------------------------------------------------------------
    async def _decide(self, raw_number: str | None, line: Any, state: dict[str, Any], call_id: str) -> Decision | None:
        s = self.services
        try:
            return await asyncio.wait_for(self._identify_and_decide(raw_number, line), s.config.agi.decision_budget)
        except asyncio.TimeoutError:
            self._fail_open(state, "decision_timeout", call_id, "decision budget exceeded")
        except Exception as exc:  # noqa: BLE001 - a broken rule or prediction must not drop the call
            log.exception("call %s: decision failed; default queue kept", call_id)
            self._fail_open(state, "decision_error", call_id, exc)
        return None

    async def _identify_and_decide(self, raw_number: str | None, line: Any, role: Role | None = None) -> Decision:
        s = self.services
        lookup = await s.directory.lookup(raw_number, region=s.config.region)
        return self._decide_for(lookup, line, role)

    def _decide_for(self, lookup: Any, line: Any, role: Role | None) -> Decision:
        s = self.services
        return decide(lookup, line, catalogue=s.catalogue, rules=s.rules.current, now=s.now(), role=role)

    async def _ask_role(self, call: AgiCall, decision: Decision, state: dict[str, Any], call_id: str, *,
                        elapsed: float) -> Decision:
        """Ask once which role the caller calls in, `elapsed` seconds after the AGI start.  No answer
        (or no way to ask) keeps the role the line and the CRM make most likely, already in
        `decision`, noted as not confirmed."""
        roles = decision.question[:9]
        language = decision.view.language or decision.line.language
        pressed, chosen = "", None
        try:
            prompt, wait_ms = await role_question(self.services, roles, language, elapsed=elapsed)
            pressed, _timed_out = await call.get_data(prompt.name, wait_ms, 1, seconds=prompt.seconds)
            if pressed.isdigit() and 1 <= int(pressed) <= len(roles):
                chosen = roles[int(pressed) - 1]
            elif pressed == "0":  # a person, as 0 means in every question: no menu after this one
                state["wants_person"] = True
        except (ChannelGone, AgiTimeout):
            raise
        except AgiError as exc:  # Asterisk refused the command or the file: the session goes on
            self._fail_open(state, "role_question_error", call_id, exc)
        except Exception as exc:  # noqa: BLE001 - synthesis trouble: assume the default role
            self._fail_open(state, "prompt_error", call_id, exc)
        state["dtmf"].append({"step": "role", "pressed": pressed})
        assumed = decision.view.role
        state["role_question"] = {
            "asked": [r.label for r in roles], "pressed": pressed,
            "chosen": chosen.label if chosen else None,
            "confirmed": chosen is not None,
            "assumed": None if chosen is not None or assumed is None else assumed.label,
        }
        if chosen is None:
            log.info("call %s: role not confirmed; routed as %s", call_id, assumed.kind if assumed else "-")
            return decision
        return self._decide_for(decision.lookup, decision.line, chosen)

    async def _self_service(self, call: AgiCall, decision: Decision, state: dict[str, Any],
                            call_id: str, *, elapsed: float) -> Decision:
        """The self-service dialog, `elapsed` seconds after the AGI start; the decision routed again
        for the reason the caller gave."""
        s = self.services
        try:
            dialog = await s.selfservice.converse(call, decision, call_id, s.now(), elapsed=elapsed)
        except ChannelGone as exc:
            state["dialog"] = getattr(exc, "dialog", None)
            raise
        except (AgiError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - the caller still reaches a person
            log.exception("call %s: self-service dialog failed", call_id)
            self._fail_open(state, "dialog_error", call_id, exc)
            return decision
        if dialog is None:
            return decision
        state["dialog"] = dialog
        outcome = dialog.outcome
        if outcome.contained:
            state["outcome"] = "self_served"
        intent = outcome.intent
        if intent is None and outcome.declined is not None and outcome.declined == decision.intent:
            # "not that": route for the next best guess instead of the one the caller turned down
            others = [i.intent for i in decision.intents if i.intent != outcome.declined]
            intent = others[0] if others else s.catalogue.fallback.name
        if intent and intent != decision.intent:
            decision = with_intent(decision, intent, rules=s.rules.current, now=s.now())
        return decision

    async def _prompt(self, text: str, language: str) -> Prompt:
        """A synthesised prompt as Asterisk's STREAM FILE / GET DATA take it, with its length."""
        s = self.services
        if s.prompts is None:
            raise RuntimeError("prompt synthesis is disabled")
        return await s.prompts.for_asterisk(text, language)

    async def _set_route(self, call: AgiCall, decision: Decision, state: dict[str, Any], call_id: str) -> None:
        route = decision.route
        view = decision.view
        values: dict[str, str | int] = {}
        if view.customer is not None:
            values["IVR_CUSTOMER_ID"] = view.customer.id
        if view.segment:
            values["IVR_SEGMENT"] = view.segment  # queue events carry it (manager.conf channelvars)
        if decision.intent is not None:
            values["IVR_INTENT"] = decision.intent
        dialog = state.get("dialog")
        if dialog is not None and dialog.outcome.contained:
            values["IVR_CONTAINED"] = 1  # the dialplan says goodbye instead of queueing
        if route.announcement:
            announcement = await self._announcement(route.announcement, view.language or decision.line.language,
                                                    state, call_id)
            if announcement:
                values["IVR_ANNOUNCE"] = announcement
        if route.manager_interface:
            values["IVR_MANAGER"] = route.manager_interface
            values["IVR_MANAGER_TIMEOUT"] = route.manager_timeout or 20
        values["QUEUE_PRIO"] = route.priority
        values["IVR_QUEUE"] = route.queue  # last: the dialplan reads it as "routed"
        await call.set_variables(values)
        log.info("call %s: %s -> queue %s prio %d (rule %s, intent %s, lookup %s)",
                 call_id, mask(decision.lookup.number), route.queue, route.priority, route.rule,
                 decision.intent or "-", decision.lookup.source)

    async def _announcement(self, name: str, language: str, state: dict[str, Any], call_id: str) -> str:
        """The sound Asterisk plays: a configured text or free text synthesised, else the name itself."""
        texts = self.services.config.announcements.get(name)
        if texts is None and " " not in name.strip():
            return name  # an Asterisk sound name
        text = name if texts is None else texts.get(language) or next(iter(texts.values()))
        try:
            return (await self._prompt(text, language)).name
        except Exception as exc:  # noqa: BLE001 - no announcement rather than no call
            self._fail_open(state, "prompt_error", call_id, exc)
            return ""

    def _fail_open(self, state: dict[str, Any], reason: str, call_id: str, exc: Any) -> None:
        state["degraded"].append(reason)
        if state["outcome"] == "routed":
            state["outcome"] = "fail_open"
        metrics.FAIL_OPEN.labels(reason=reason).inc()
        log.warning("call %s: failing open (%s): %s", call_id, reason, exc)

    async def _remember(
        self, call: AgiCall, call_id: str, line: str, decision: Decision | None,
        state: dict[str, Any], elapsed: float,
    ) -> None:
        """Store the context for the screen-pop and queue the call record; never raises."""
        s = self.services
        try:
            uniqueid = call.env.uniqueid
            context: dict[str, Any] = {
                "call_id": call_id,
                "uniqueid": uniqueid,
                "channel": call.env.channel,
                "line": line,
                "started_at": s.now().isoformat(),
                "outcome": state["outcome"],
                "degraded": state["degraded"],
                "dtmf": state["dtmf"],
                "role_question": state.get("role_question"),
                "dialog_skipped": state.get("dialog_skipped"),  # why no self-service: straight to a person
                "decision_ms": round(elapsed * 1000, 2),
            }
            dialog = state.get("dialog")
            if dialog is not None:
                context["transcript"] = dialog.transcript
                context["self_service"] = dialog.outcome.to_dict()
            record: dict[str, Any] = {
                "call_id": call_id, "uniqueid": uniqueid, "line": line,
                "started_at": dt.datetime.now(dt.timezone.utc),
                "degraded": ",".join(state["degraded"]) or None,
            }
            if dialog is not None:
                record.update(self_served=dialog.outcome.contained, rating=dialog.outcome.rating)
            if decision is not None:
                view = decision.view
                context["decision"] = decision.to_dict()
                top = decision.top_intent
                record.update(
                    number=decision.lookup.number,
                    customer_id=view.customer.id if view.customer else None,
                    role_kind=view.role.kind if view.role else None,
                    organisation_id=view.organisation.id if view.organisation else None,
                    segment=view.segment,
                    predicted_intent=top.intent if top else None,
                    predicted_score=top.score if top else None,
                    queue=decision.route.queue if state["outcome"] not in ("hangup", "self_served") else None,
                    priority=decision.route.priority,
                    rule=decision.route.rule,
                )
            record["context"] = {k: context[k] for k in ("dtmf", "role_question", "outcome", "transcript",
                                                         "self_service") if k in context}
            await s.contexts.put(call_id, context, aliases=(uniqueid,) if uniqueid else ())
            s.recorder.add(record)
        except Exception:  # noqa: BLE001
            log.exception("call %s: could not store the call context or record", call_id)

