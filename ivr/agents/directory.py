"""The agent directory: Asterisk member interface (or member name) -> agent id, from the agents table."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from caller_id.models import Agent

log = logging.getLogger(__name__)


class AgentDirectory:
    """Asterisk member interface (or member name) -> agent id, from the ``agents`` table.

    The table is small: it is read whole into memory, again in the
    background every `refresh` seconds, and at most every `miss_refresh`
    seconds when an interface is not in it (an agent added since).  A card
    never waits on the database for long: the first load may take up to
    `first_wait` seconds, a reload for an unknown interface `miss_wait`
    (it goes on in the background after that).  A database that is down
    keeps the last map in use (logged once).  Interfaces match exactly,
    then case-insensitively; a member name matches an agent's name when
    only one agent has it.
    """

    def __init__(self, db: Any, *, refresh: float = 60.0, miss_refresh: float = 5.0,
                 first_wait: float = 2.0, miss_wait: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self._db = db
        self.refresh = refresh
        self.miss_refresh = miss_refresh
        self.first_wait = first_wait
        self.miss_wait = miss_wait
        self._clock = clock
        self._exact: dict[str, Any] = {}
        self._folded: dict[str, Any] = {}
        self._names: dict[str, Any] = {}
        self._loaded_at = -math.inf
        self._tried_at = -math.inf
        self._loading: asyncio.Task[bool] | None = None
        self._failing = False

    async def __call__(self, interface: str) -> Any:
        if not interface:
            return None
        now = self._clock()
        if self._loaded_at == -math.inf and now - self._tried_at >= self.miss_refresh:
            await self._wait_reload(self.first_wait)
        elif now - self._loaded_at >= self.refresh and now - self._tried_at >= self.miss_refresh:
            self._reload_soon()  # serve the map we have meanwhile
        found = self._find(interface)
        if found is None and self._clock() - self._tried_at >= self.miss_refresh:
            await self._wait_reload(self.miss_wait)
            found = self._find(interface)
        return found

    def _find(self, interface: str) -> Any:
        found = self._exact.get(interface)
        if found is None:
            folded = interface.casefold()
            found = self._folded.get(folded)
            if found is None:
                found = self._names.get(folded)
        return found

    def _reload_soon(self) -> asyncio.Task[bool]:
        if self._loading is None or self._loading.done():
            self._tried_at = self._clock()
            self._loading = asyncio.get_running_loop().create_task(self._load(), name="agent-directory")
        return self._loading

    async def _wait_reload(self, wait: float) -> None:
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(self._reload_soon())
        except TimeoutError:
            pass  # it goes on in the background; the next card gets its result

    async def reload(self) -> bool:
        """Read the agents table now; False (old map kept) when the database fails."""
        return await asyncio.shield(self._reload_soon())

    async def _load(self) -> bool:
        try:
            async with self._db.session() as session:
                rows = (await session.execute(select(Agent.id, Agent.interface, Agent.name))).all()
        except Exception as exc:  # noqa: BLE001 - keep the map we have
            if not self._failing:
                log.warning("screen-pop: cannot read the agents table (%s); using the last known agents", exc)
                self._failing = True
            return False
        if self._failing:
            log.info("screen-pop: agents table readable again")
            self._failing = False
        exact: dict[str, Any] = {}
        folded: dict[str, Any] = {}
        names: dict[str, Any] = {}
        ambiguous: set[str] = set()
        for agent_id, interface, name in rows:
            if interface:
                exact[interface] = agent_id
                folded.setdefault(interface.casefold(), agent_id)
            if name:
                key = name.casefold()
                if key in names and names[key] != agent_id:
                    ambiguous.add(key)
                names[key] = agent_id
        for key in ambiguous:
            del names[key]
        self._exact, self._folded, self._names = exact, folded, names
        self._loaded_at = self._clock()
        return True
