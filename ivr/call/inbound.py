"""The `inbound` FastAGI script: identify the caller, predict why, route.

Reads like the call: set the call id, look the caller up, ask once which
role they call in when the line does not settle it, predict, decide, set
the routing variables, remember the context for the agent's screen.

The call record it queues says what the IVR knows: who called and on which
line, the top three predicted reasons, the one the caller confirmed in the
dialog (``confirmed_by`` caller), and how the call ended when it ended here
(``result`` self_served or ivr_hangup, with ``ended_at``).  What happens
after the AGI comes from Asterisk's events (`ivr.agents.callcenter`).

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
from typing import TYPE_CHECKING, Any, Protocol

from caller_id.catalogue import IntentCatalogue
from caller_id.directory import CallerDirectory, LookupResult
from caller_id.learning import LiveRanker
from caller_id.normalise import mask
from caller_id.profile import Role
from ivr import metrics
from ivr.asterisk.fastagi import AgiCall, AgiError, AgiTimeout, ChannelGone
from ivr.call.context import CallContext, CallContexts, Keypress, RoleQuestion
from ivr.call.decision import Decision, decide, with_intent
from ivr.call.records import CallRecorder, RecordUpdates
from ivr.config import Config, Line
from ivr.selfservice.dialog import Dialog
from ivr.selfservice.timing import hand_over_reserve
from queues import variables
from queues.reload import LiveRules
from speech.prompts import Prompt, PromptCache

if TYPE_CHECKING:
    from ivr.selfservice.service import SelfService

log = logging.getLogger(__name__)


class CallSide(Protocol):
    """What a call needs of the server (`ivr.services.Services` is one)."""

    config: Config
    directory: CallerDirectory
    catalogue: IntentCatalogue
    rules: LiveRules
    contexts: CallContexts
    recorder: CallRecorder
    updates: RecordUpdates
    prompts: PromptCache | None
    selfservice: SelfService | None
    ranker: LiveRanker | None  # the learned prediction; None: the catalogue's rules rank

    def now(self) -> dt.datetime: ...


ROLE_QUESTION_TIMEOUT_MS = 4000
ROLE_QUESTION_MIN_WAIT_MS = 2000  # the key wait is cut down to fit time_to_person, never below this


async def role_question(services: CallSide, roles: tuple[Role, ...], language: str, *,
                        elapsed: float) -> tuple[Prompt, int]:
    """The role question (its texts: config/dialog.yaml) as Asterisk plays it, asked `elapsed`
    seconds after the AGI start, and its key wait in ms: what is left of the dialog's time_to_person
    after the prompt and the hand-over reserve, between ROLE_QUESTION_MIN_WAIT_MS and
    ROLE_QUESTION_TIMEOUT_MS."""
    if services.prompts is None or services.selfservice is None:
        raise RuntimeError("prompt synthesis is disabled")
    script = services.selfservice.script
    language = script.language_for(language)
    prompt = await services.prompts.for_asterisk(script.role_question(roles, language), language)
    reserve = await hand_over_reserve(services.prompts, script, language)
    left_ms = (script.settings.time_to_person - elapsed - prompt.seconds - reserve) * 1000
    return prompt, int(max(ROLE_QUESTION_MIN_WAIT_MS, min(ROLE_QUESTION_TIMEOUT_MS, left_ms)))


def new_call_id() -> str:
    return uuid.uuid4().hex


class InboundScript:
    """Callable registered as the `inbound` FastAGI script.

    The call's state as it goes is its `CallContext`: each step notes on it what the caller
    pressed and said, the outcome and why the call degraded; at the end it is stored for the
    agent's screen and summed up in the call record."""

    def __init__(self, services: CallSide):
        self.services = services

    async def __call__(self, call: AgiCall) -> None:
        s = self.services
        started, began = time.perf_counter(), s.now()  # the call's start, for the card and the record
        env = call.env
        line = s.config.line_for(env.args[0] if env.args and env.args[0] else env.dnid or env.extension)
        context = CallContext(call_id=new_call_id(), uniqueid=env.uniqueid, channel=env.channel, line=line.name,
                              outcome="routed")
        decision: Decision | None = None
        try:
            await call.set_variable(variables.CALL_ID, context.call_id)
            decision = await self._decide(env.callerid, line, context)
            if decision is not None and decision.lookup.degraded:
                self._fail_open(context, f"lookup_{decision.lookup.source}", decision.lookup.degraded)
            if decision is not None and decision.question:
                decision = await self._ask_role(call, decision, context, elapsed=time.perf_counter() - started)
            if decision is not None and s.selfservice is not None and decision.line.self_service != "off":
                if context.role_question is not None and context.role_question.wants_person:
                    context.dialog_skipped = "caller pressed 0"
                elif not decision.route.self_service:
                    context.dialog_skipped = f"rule {decision.route.rule}"
                else:
                    decision = await self._self_service(call, decision, context,
                                                        elapsed=time.perf_counter() - started)
            if decision is not None:
                await self._set_route(call, decision, context)
        except ChannelGone as exc:
            context.outcome = "hangup"
            log.info("call %s: caller gone before routing finished (%s)", context.call_id, exc)
        except AgiError as exc:
            self._fail_open(context, "agi_error", exc)
        except Exception as exc:  # noqa: BLE001 - the call must go on
            log.exception("call %s: unexpected error; default queue kept", context.call_id)
            self._fail_open(context, "internal_error", exc)
        finally:
            elapsed = time.perf_counter() - started
            metrics.CALLS.labels(outcome=context.outcome).inc()
            metrics.CALL_PATH_SECONDS.observe(elapsed)
            await self._remember(context, decision, elapsed, began)

    # -- steps ----------------------------------------------------------------
    async def _decide(self, raw_number: str | None, line: Line, context: CallContext) -> Decision | None:
        s = self.services
        try:
            return await asyncio.wait_for(self._identify_and_decide(raw_number, line), s.config.agi.decision_budget)
        except asyncio.TimeoutError:
            self._fail_open(context, "decision_timeout", "decision budget exceeded")
        except Exception as exc:  # noqa: BLE001 - a broken rule or prediction must not drop the call
            log.exception("call %s: decision failed; default queue kept", context.call_id)
            self._fail_open(context, "decision_error", exc)
        return None

    async def _identify_and_decide(self, raw_number: str | None, line: Line, role: Role | None = None) -> Decision:
        s = self.services
        lookup = await s.directory.lookup(raw_number, region=s.config.region)
        return self._decide_for(lookup, line, role)

    def _decide_for(self, lookup: LookupResult, line: Line, role: Role | None) -> Decision:
        s = self.services
        return decide(lookup, line, catalogue=s.catalogue, rules=s.rules.current, now=s.now(), role=role,
                      ranker=s.ranker)

    async def _ask_role(self, call: AgiCall, decision: Decision, context: CallContext, *,
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
        except (ChannelGone, AgiTimeout):
            raise
        except AgiError as exc:  # Asterisk refused the command or the file: the session goes on
            self._fail_open(context, "role_question_error", exc)
        except Exception as exc:  # noqa: BLE001 - synthesis trouble: assume the default role
            self._fail_open(context, "prompt_error", exc)
        context.dtmf.append(Keypress("role", pressed))
        assumed = decision.view.role
        context.role_question = RoleQuestion(
            asked=tuple(r.label for r in roles), pressed=pressed,
            chosen=chosen.label if chosen else None,
            confirmed=chosen is not None,
            assumed=None if chosen is not None or assumed is None else assumed.label,
        )
        if chosen is None:
            log.info("call %s: role not confirmed; routed as %s", context.call_id, assumed.kind if assumed else "-")
            return decision
        return self._decide_for(decision.lookup, decision.line, chosen)

    async def _self_service(self, call: AgiCall, decision: Decision, context: CallContext, *,
                            elapsed: float) -> Decision:
        """The self-service dialog, `elapsed` seconds after the AGI start; the decision routed again
        for the reason the caller gave."""
        s = self.services
        try:
            dialog = await s.selfservice.converse(call, decision, context.call_id, s.now(), elapsed=elapsed)
        except ChannelGone as exc:
            _note_dialog(context, getattr(exc, "dialog", None))
            raise
        except (AgiError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - the caller still reaches a person
            log.exception("call %s: self-service dialog failed", context.call_id)
            self._fail_open(context, "dialog_error", exc)
            return decision
        if dialog is None:
            return decision
        _note_dialog(context, dialog)
        outcome = dialog.outcome
        if outcome.contained:
            context.outcome = "self_served"
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

    async def _set_route(self, call: AgiCall, decision: Decision, context: CallContext) -> None:
        route = decision.route
        view = decision.view
        values: dict[str, str | int] = {}
        if view.customer is not None:
            values[variables.CUSTOMER_ID] = view.customer.id
        if view.segment:
            values[variables.SEGMENT] = view.segment  # queue events carry it (manager.conf channelvars)
        if decision.intent is not None:
            values[variables.INTENT] = decision.intent
        if context.self_service is not None and context.self_service.contained:
            values[variables.CONTAINED] = 1  # the dialplan says goodbye instead of queueing
        if decision.line.survey != "off":
            values[variables.SURVEY] = decision.line.survey  # the dialplan runs the survey AGI after the call
        if route.announcement:
            announcement = await self._announcement(route.announcement, view.language or decision.line.language,
                                                    context)
            if announcement:
                values[variables.ANNOUNCE] = announcement
        if route.manager_interface:
            values[variables.MANAGER] = route.manager_interface
            values[variables.MANAGER_TIMEOUT] = route.manager_timeout or 20
        values[variables.PRIORITY] = route.priority
        values[variables.QUEUE] = route.queue  # last: the dialplan reads it as "routed"
        await call.set_variables(values)
        log.info("call %s: %s -> queue %s prio %d (rule %s, intent %s, lookup %s)",
                 context.call_id, mask(decision.lookup.number), route.queue, route.priority, route.rule,
                 decision.intent or "-", decision.lookup.source)

    async def _announcement(self, name: str, language: str, context: CallContext) -> str:
        """The sound Asterisk plays: a configured text or free text synthesised, else the name itself."""
        texts = self.services.config.announcements.get(name)
        if texts is None and " " not in name.strip():
            return name  # an Asterisk sound name
        text = name if texts is None else texts.get(language) or next(iter(texts.values()))
        try:
            return (await self._prompt(text, language)).name
        except Exception as exc:  # noqa: BLE001 - no announcement rather than no call
            self._fail_open(context, "prompt_error", exc)
            return ""

    def _fail_open(self, context: CallContext, reason: str, exc: object) -> None:
        context.degraded.append(reason)
        if context.outcome == "routed":
            context.outcome = "fail_open"
        metrics.FAIL_OPEN.labels(reason=reason).inc()
        log.warning("call %s: failing open (%s): %s", context.call_id, reason, exc)

    async def _remember(self, context: CallContext, decision: Decision | None, elapsed: float,
                        began: dt.datetime) -> None:
        """Store the context for the screen-pop and queue the call record; never raises."""
        s = self.services
        try:
            context.started_at = began
            context.decision_ms = round(elapsed * 1000, 2)
            record: dict[str, Any] = {
                "call_id": context.call_id, "uniqueid": context.uniqueid, "line": context.line,
                "started_at": began.astimezone(dt.timezone.utc),
                "degraded": ",".join(context.degraded) or None,
            }
            dialog = context.self_service
            if dialog is not None:
                record.update(self_served=dialog.contained, csat=dialog.rating)
                if dialog.intent:  # a yes to the offer, or the reason picked in the open question
                    record.update(actual_intent=dialog.intent, confirmed_by="caller")
            # How it ended, when it ended here: the dialplan hangs up after the goodbye (a survey
            # may follow); a caller gone in the IVR is gone.  Any other call goes on to Asterisk,
            # whose events tell the rest (ivr.agents.callcenter.QueueOutcomes).
            if dialog is not None and dialog.contained:
                record.update(result="self_served", ended_at=dt.datetime.now(dt.timezone.utc))
            elif context.outcome == "hangup":
                record.update(result="ivr_hangup", ended_at=dt.datetime.now(dt.timezone.utc))
            if decision is not None:
                view = decision.view
                context.decision = decision.part()
                top = decision.top_intent
                predicted = [i.intent for i in decision.intents[:3]]
                record.update(
                    number=decision.lookup.number,
                    customer_id=view.customer.id if view.customer else None,
                    role_kind=view.role.kind if view.role else None,
                    organisation_id=view.organisation.id if view.organisation else None,
                    segment=view.segment,
                    predicted_intent=top.intent if top else None,
                    predicted_score=top.score if top else None,
                    predicted_intent_2=predicted[1] if len(predicted) > 1 else None,
                    predicted_intent_3=predicted[2] if len(predicted) > 2 else None,
                    queue=decision.route.queue if context.outcome not in ("hangup", "self_served") else None,
                    priority=decision.route.priority,
                    rule=decision.route.rule,
                )
            record["context"] = context.for_record()
            await s.contexts.put(context.call_id, context, aliases=(context.uniqueid,) if context.uniqueid else ())
            s.recorder.add(record)
        except Exception:  # noqa: BLE001
            log.exception("call %s: could not store the call context or record", context.call_id)


def _note_dialog(context: CallContext, dialog: Dialog | None) -> None:
    """The self-service dialog's steps and outcome on the call's context (nothing when none ran)."""
    if dialog is not None:
        context.transcript = dialog.transcript
        context.self_service = dialog.outcome
