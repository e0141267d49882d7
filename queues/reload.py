"""Routing rules that follow their file while the server runs.

`LiveRules` holds the last good `RuleSet`.  It re-reads the file when the
file changes (polled: modification time, size and inode, so editors that
write a new file and rename it over the old one are seen) and on SIGHUP.
A broken edit is logged with file, line and reason, and the previous rules
stay in force; the first load, at start-up, has nothing to fall back on and
raises instead.

Every load also checks the rules' queues against Asterisk's queues.conf
(by default $IVR_QUEUES_CONF, else the shipped asterisk_conf/queues.conf),
read again each time and watched like the rules file.  When that file is
absent the check is skipped with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Collection
from pathlib import Path

from conffile import ConfigError
from queues.rules import AsteriskQueues, QueuesNotChecked, RuleSet, load_asterisk_queues, load_rules, queues_conf_path

log = logging.getLogger(__name__)

_Signature = tuple[int, int, int, int]  # device, inode, size, mtime in ns
_NOTHING = object()
_FROM_ENVIRONMENT: object = object()


class LiveRules:
    """The current routing rules of `path`.

    Raises ConfigError when the file cannot be loaded at construction.
    `lines` and `intents` are passed to `load_rules` on every load, and so
    are the queues of `queues_file` (Asterisk's queues.conf; by default
    `queues_conf_path()`, None: no check).
    """

    def __init__(self, path: str | Path, *, poll_interval: float = 1.0,
                 lines: Collection[str] | None = None, intents: Collection[str] | None = None,
                 queues_file: str | Path | None | object = _FROM_ENVIRONMENT):
        self.path = Path(path)
        self.poll_interval = poll_interval
        self._lines = lines
        self._intents = intents
        if queues_file is _FROM_ENVIRONMENT:
            queues_file = queues_conf_path()
        self.queues_file: Path | None = None if queues_file is None else Path(queues_file)  # type: ignore[arg-type]
        self.queues: AsteriskQueues | None = None  # the queues the rules in force were checked against
        self._warned: str | None = None
        self._signature = self._signatures()
        self._current = self._load()
        self._error: ConfigError | None = None
        self._task: asyncio.Task[None] | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        log.info("routing rules loaded from %s: %d rules%s", self.path, len(self._current.rules),
                 self._checked_note())

    @property
    def current(self) -> RuleSet:
        return self._current

    @property
    def error(self) -> ConfigError | None:
        """Why the file on disk is not in force (None when it is)."""
        return self._error

    def reload(self) -> bool:
        """Re-read the file (and queues.conf); keep the previous rules when it is broken."""
        self._signature = self._signatures()
        try:
            rules = self._load()
        except ConfigError as exc:
            self._error = exc
            log.error("routing rules not reloaded, keeping the previous %d rules: %s",
                      len(self._current.rules), exc)
            return False
        self._current = rules
        self._error = None
        log.info("routing rules reloaded from %s: %d rules%s", self.path, len(rules.rules), self._checked_note())
        return True

    def _load(self) -> RuleSet:
        queues = self._asterisk_queues()
        rules = load_rules(self.path, lines=self._lines, intents=self._intents, queues=queues)
        self.queues = queues
        return rules

    def _asterisk_queues(self) -> AsteriskQueues | None:
        """The queues of queues.conf, or None (with a warning, once while the reason stays) when unknown."""
        if self.queues_file is None:
            return None
        try:
            queues = load_asterisk_queues(self.queues_file)
        except QueuesNotChecked as why:
            if str(why) != self._warned:
                log.warning("routing rules: queues not checked against Asterisk's queues.conf: %s", why)
                self._warned = str(why)
            return None
        self._warned = None
        return queues

    def _checked_note(self) -> str:
        return f", queues checked against {self.queues.source}" if self.queues is not None else ""

    def _signatures(self) -> tuple[_Signature | None, _Signature | None]:
        return _signature(self.path), _signature(self.queues_file) if self.queues_file is not None else None

    async def start(self) -> None:
        """Start watching the file (returns at once; `stop` ends it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name=f"watch {self.path.name}")

    async def stop(self) -> None:
        if self._signal_loop is not None:
            self._signal_loop.remove_signal_handler(signal.SIGHUP)
            self._signal_loop = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP (`kill -HUP <pid>`), handled on `loop`."""
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._signal_loop = loop

    async def _watch(self) -> None:
        # A change is acted on once the file has looked the same for two
        # polls in a row, so a file caught half-written is not loaded.
        pending: object = _NOTHING
        while True:
            await asyncio.sleep(self.poll_interval)
            seen = self._signatures()
            if seen == self._signature:
                pending = _NOTHING
            elif seen == pending:
                pending = _NOTHING
                try:
                    self.reload()
                except Exception:  # keep watching whatever happened
                    log.exception("routing rules reload failed")
            else:
                pending = seen


def _signature(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
