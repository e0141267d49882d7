"""Self-service before routing: the dialog by voice over AudioSocket, or by keys.

`SelfService` is built at start-up from the configuration: the dialog script
(``speech.dialog_file``), a Vosk model per language (``speech.models``;
each one checked against the script's words), a recognition thread pool and
the AudioSocket server.  For a call, `converse` runs the dialog:

* speech mode, when the line allows it and a model speaks the caller's
  language: the dialog waits under a fresh UUID, the FastAGI session tells
  Asterisk ``EXEC AudioSocket <uuid>,<host:port>``, Asterisk connects with
  that UUID and the dialog runs on the audio; when it ends the server closes
  the socket, ``AudioSocket()`` returns and the AGI command with it;
* DTMF mode otherwise, and from wherever the speech dialog stopped when
  speech fails (no connection within `connect_timeout`, recognition errors,
  the socket lost while the caller is still there): prompts by GET DATA.

`talk` is that machinery for any `Conversation` on a FastAGI session: the
post-call survey (`ivr.call.survey`) runs over it too, by voice where the
dialog would, by keys otherwise.

A model that is missing or does not load, or whose vocabulary lacks the
script's words, is logged at start-up with the reason and that language runs
in DTMF mode; nothing here stops the server or a call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caller_id.catalogue import IntentCatalogue
from ivr.asterisk import agi
from ivr.asterisk.audiosocket_server import AudioSocketCall, AudioSocketServer
from ivr.asterisk.fastagi import AgiCall, AgiError, AgiTimeout, ChannelGone
from ivr.config import Config, Line
from ivr.selfservice.channels import KeypadChannel, SpeechChannel
from ivr.selfservice.dialog import CallerGone, ChannelFailed, Conversation, Dialog, make_plan, static_prompts
from ivr.selfservice.script import DialogScript, load_dialog_script
from ivr.selfservice.timing import SilentPath, check_time_budget, hand_over_reserve, silent_path
from speech.prompts import PromptCache

if TYPE_CHECKING:  # Vosk loads only where a line speaks
    from speech.asr import Recognizer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0  # seconds for Asterisk to connect after EXEC AudioSocket


@dataclass
class _Waiting:
    conversation: Conversation
    language: str
    call_id: str
    connected: asyncio.Event
    done: asyncio.Future


class SelfService:
    def __init__(self, config: Config, prompts: PromptCache | None, catalogue: IntentCatalogue,
                 script: DialogScript, *,
                 models: dict[str, Any] | None = None, executor: ThreadPoolExecutor | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.config = config
        self.prompts = prompts
        self.catalogue = catalogue
        self.script = script
        self.models = dict(models or {})
        self.executor = executor
        self.connect_timeout = connect_timeout
        self.server: AudioSocketServer | None = None
        self.notes: list[str] = []
        self._waiting: dict[uuid.UUID, _Waiting] = {}
        self.stats = {"dialogs": 0, "speech": 0, "dtmf": 0, "fallbacks": 0, "contained": 0, "unknown_uuid": 0}

    # -- life cycle ------------------------------------------------------------
    async def start(self, port_offset: int = 0) -> None:
        """Render the static prompts (before the first call: rendering them while a burst of calls
        comes in costs those calls their lookup time); start the AudioSocket server when some
        language has a model."""
        if self.prompts is not None:
            await self._render_static_prompts()
        if not self.models:
            return
        settings = self.config.speech
        port = settings.audiosocket_port + port_offset if settings.audiosocket_port else 0
        self.server = AudioSocketServer(self._on_audiosocket, settings.audiosocket_host, port,
                                        allowed_hosts=settings.allowed_hosts)
        try:
            await self.server.start()
        except OSError as exc:
            log.error("AudioSocket server cannot listen on %s:%s (%s); dialogs run in DTMF mode",
                      settings.audiosocket_host, port, exc)
            self.notes.append(f"speech dialog: AudioSocket unavailable ({exc}); DTMF mode")
            self.server = None
            return
        if settings.audiosocket_host in ("0.0.0.0", "::", "") and not settings.audiosocket_address:
            log.warning("AudioSocket listens on every address but speech.audiosocket_address is not set: "
                        "Asterisk will be told to connect to %s", self.server.address)
            self.notes.append("speech dialog: set speech.audiosocket_address (IVR_AUDIOSOCKET_ADDRESS) to the "
                              "address Asterisk reaches this server at")

    async def _render_static_prompts(self) -> None:
        formats = {"speech": "sln", "dtmf": "wav8"}
        try:
            for text, language, mode in static_prompts(self.script):
                await self.prompts.path_for(text, language, formats[mode])
        except Exception as exc:  # noqa: BLE001 - they are rendered on first use instead
            log.warning("self-service prompts not rendered at start-up: %s", exc)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close(grace=2.0)
        for waiting in self._waiting.values():
            if not waiting.done.done():
                waiting.done.cancel()
        self._waiting.clear()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def audiosocket_address(self) -> str | None:
        """host:port Asterisk connects to."""
        if self.server is None:
            return None
        return self.config.speech.audiosocket_address or self.server.address

    def describe(self) -> str:
        speech = ", ".join(sorted(self.models)) if self.server is not None else ""
        where = f" on AudioSocket {self.audiosocket_address}" if speech else ""
        return f"speech in {speech}{where}, DTMF otherwise" if speech else "DTMF mode (no speech model)"

    def mode_for(self, line: Line, language: str) -> str:
        if line.self_service == "off" or self.prompts is None:
            return "off"
        if line.self_service == "speech" and language in self.models and self.server is not None:
            return "speech"
        return "dtmf"

    # -- a call ----------------------------------------------------------------
    async def converse(self, call: AgiCall, decision: Any, call_id: str, now: dt.datetime, *,
                       elapsed: float = 0.0) -> Dialog | None:
        """Run the dialog for this call, `elapsed` seconds after its AGI start; None when the line has none.

        Raises ChannelGone when the caller hung up (the dialog so far is in
        the exception's `dialog` attribute).
        """
        plan = make_plan(decision, self.catalogue, self.script, now=now)
        mode = self.mode_for(decision.line, plan.language)
        if mode == "off":
            return None
        reserve = await hand_over_reserve(self.prompts, self.script, plan.language)
        dialog = Dialog(plan, self.script, started=time.monotonic() - elapsed, reserve=reserve)
        self.stats["dialogs"] += 1
        try:
            await self.talk(call, dialog, plan.language, call_id, speech=mode == "speech")
        except CallerGone as exc:
            dialog.stop_as("hangup")
            gone = ChannelGone(f"caller hung up during the dialog ({exc})")
            gone.dialog = dialog  # type: ignore[attr-defined]
            raise gone from exc
        except ChannelFailed as exc:
            log.warning("call %s: self-service dialog stopped (%s); routing to a person", call_id, exc)
            dialog.stop_as("dialog_error")
        if dialog.outcome.contained:
            self.stats["contained"] += 1
        return dialog

    async def talk(self, call: AgiCall, conversation: Conversation, language: str, call_id: str, *,
                   speech: bool, seconds: float | None = None) -> None:
        """Run `conversation` with the caller of this FastAGI session: by voice over AudioSocket when
        `speech` (`mode_for` says "speech"), then by keys from wherever it stopped.  The AudioSocket
        session may last `seconds` (default: the dialog's ``max_seconds``).

        Raises CallerGone when the caller hangs up, ChannelFailed when neither channel can go on
        and AgiTimeout when Asterisk stops answering."""
        if speech:
            await self._by_speech(call, conversation, language, call_id,
                                  self.script.settings.max_seconds if seconds is None else seconds)
        if not conversation.finished:
            if speech:
                self.stats["fallbacks"] += 1
            self.stats["dtmf"] += 1
            await conversation.run(KeypadChannel(call, self.prompts, self.script))

    async def silent_path(self, decision: Any, now: dt.datetime, *, before: float = 0.0) -> SilentPath | None:
        """What a caller of this decision who answers nothing would hear, and when they would reach
        the queue; None when the line has no dialog."""
        plan = make_plan(decision, self.catalogue, self.script, now=now)
        if self.mode_for(decision.line, plan.language) == "off":
            return None
        return await silent_path(plan, self.script, self.prompts, before=before)

    async def check_time_budget(self) -> None:
        """Refuse (ConfigError with the dialog file's line) a script whose first question cannot fit
        ``time_to_person``; note the worst silent caller's path per language."""
        if self.prompts is None:
            return
        titles = {name: dict(self.catalogue.intent(name).title) for name in self.catalogue.names
                  if name != self.catalogue.fallback.name}
        for path in await check_time_budget(self.script, self.prompts, titles):
            self.notes.append(f"silent caller ({path.language}): {path.describe()}")

    async def _by_speech(self, call: AgiCall, conversation: Conversation, language: str, call_id: str,
                         seconds: float) -> None:
        assert self.server is not None
        key = uuid.uuid4()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(conversation, language, call_id, asyncio.Event(), loop.create_future())
        self._waiting[key] = waiting
        command = agi.exec_app("AudioSocket", f"{key},{self.audiosocket_address}")
        # AudioSocket() returns when the conversation closes the socket, within `seconds`
        # (the dialog: max_seconds and the hand-over prompt)
        exec_task = asyncio.ensure_future(call.send(command, timeout=call.busy_for(seconds)))
        connected = asyncio.ensure_future(waiting.connected.wait())
        try:
            await asyncio.wait({exec_task, connected}, timeout=self.connect_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not exec_task.done() and not connected.done():
                log.warning("call %s: Asterisk has not connected to AudioSocket %s after %.0f s",
                            call_id, self.audiosocket_address, self.connect_timeout)
            reply = await exec_task
            if waiting.connected.is_set():
                self.stats["speech"] += 1
                await waiting.done  # the handler closed the socket; it finishes at once
            elif reply.result_int is not None and reply.result_int < 0:
                log.warning("call %s: AudioSocket() failed in Asterisk; DTMF mode", call_id)
        except ChannelGone:
            raise CallerGone("the channel is gone") from None
        except AgiTimeout:
            raise  # Asterisk is taken for dead: the call fails open
        except AgiError as exc:
            raise ChannelFailed(f"EXEC AudioSocket: {exc}") from exc
        finally:
            self._waiting.pop(key, None)
            for task in (exec_task, connected):
                if not task.done():
                    task.cancel()

    async def _on_audiosocket(self, call: AudioSocketCall) -> None:
        waiting = self._waiting.pop(call.uuid, None)
        if waiting is None:
            self.stats["unknown_uuid"] += 1
            log.warning("AudioSocket %s from %s: no dialog waits for this UUID; closing", call.uuid, call.peer)
            return
        waiting.connected.set()
        conversation = waiting.conversation
        recognizer = self._recognizer(waiting.language)
        try:
            await conversation.run(SpeechChannel(call, recognizer, self.prompts, self.script))
        except CallerGone as exc:
            # Asterisk closed the socket: the caller hung up, or AudioSocket() ended on its
            # own.  The AGI side goes on by keys from this step and finds out which.
            log.info("call %s: AudioSocket closed by Asterisk at step %s (%s)",
                     waiting.call_id, conversation.step, exc)
        except ChannelFailed as exc:
            log.warning("call %s: speech failed at step %s (%s); going on by keys",
                        waiting.call_id, conversation.step, exc)
        except Exception:  # noqa: BLE001 - never lose the call: the AGI side carries on by keys
            log.exception("call %s: speech dialog error at step %s; going on by keys",
                          waiting.call_id, conversation.step)
        finally:
            await recognizer.close()
            if not waiting.done.done():
                waiting.done.set_result(None)

    def _recognizer(self, language: str) -> Recognizer:
        from speech.asr import Endpointing, Recognizer

        endpointing = Endpointing(no_input_timeout=None)
        return Recognizer(self.models[language], executor=self.executor, endpointing=endpointing)


async def start_self_service(config: Config, prompts: PromptCache, catalogue: IntentCatalogue, *, port_offset: int = 0,
                             listen: bool = True) -> SelfService:
    """Load the script and the models, check them, start the AudioSocket server (none of the
    speech side without `listen`)."""
    script = load_dialog_script(config.speech.dialog_file, intents=catalogue.names)
    models, notes = {}, []
    if listen:
        models, notes = await asyncio.to_thread(_load_models, config.speech.models, script)
    executor = None
    if models:
        from speech.asr import recognition_executor

        executor = recognition_executor(config.speech.recognition_threads or None)
    service = SelfService(config, prompts, catalogue, script, models=models, executor=executor)
    service.notes.extend(notes)
    await service.check_time_budget()
    if listen:
        await service.start(port_offset)
    return service


def _load_models(paths: dict[str, str], script: DialogScript) -> tuple[dict[str, Any], list[str]]:
    from speech.asr import GrammarError, ModelError, check_grammar, load_model

    models, notes = {}, []
    for language, path in paths.items():
        if language not in script.languages:
            notes.append(f"speech model for {language}: the dialog file has no {language} texts; not used")
            continue
        try:
            model = load_model(path)
            for grammar in script.grammars(language).values():
                check_grammar(model, grammar)
        except (ModelError, GrammarError) as exc:
            log.error("speech for %s unavailable: %s; dialogs in %s run in DTMF mode", language, exc, language)
            notes.append(f"speech model for {language}: {exc}; DTMF mode")
            continue
        models[language] = model
    return models, notes
