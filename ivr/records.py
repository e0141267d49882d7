"""Call records: written in batches, off the call path.

The FastAGI flow hands a finished decision to `CallRecorder.add`, which
returns at once; a writer task inserts the records in batches.  A database
that is down delays the records (they wait in a bounded queue and are
retried), never a call.  When the queue is full the oldest records are
dropped and counted, so memory stays bounded during a long outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from sqlalchemy import insert

from caller_id.models import CallRecord

log = logging.getLogger(__name__)

_COLUMNS = {c.name for c in CallRecord.__table__.columns} - {"id"}


class CallRecorder:
    def __init__(self, db: Any, *, batch: int = 500, interval: float = 0.2, max_pending: int = 100_000):
        self._db = db
        self._batch = batch
        self._interval = interval
        self._pending: deque[dict[str, Any]] = deque(maxlen=max_pending)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.written = 0
        self.dropped = 0

    def add(self, record: dict[str, Any]) -> None:
        unknown = set(record) - _COLUMNS
        if unknown:
            raise ValueError(f"not call record columns: {', '.join(sorted(unknown))}")
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="call-recorder")

    async def flush(self) -> None:
        """Write everything pending now (raises if the database fails)."""
        while self._pending:
            rows = [self._pending.popleft() for _ in range(min(self._batch, len(self._pending)))]
            try:
                async with self._db.session() as session:
                    await session.execute(insert(CallRecord), rows)
                    await session.commit()
            except BaseException:
                self._pending.extendleft(reversed(rows))
                raise
            self.written += len(rows)

    async def close(self, timeout: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception as exc:  # noqa: BLE001
            log.error("call records: %d not written at shutdown: %s", len(self._pending), exc)

    async def _run(self) -> None:
        delay = self._interval
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried with backoff
                if not self._failing:
                    log.error("call records: database write failed (%s); %d waiting, will retry",
                              exc, len(self._pending))
                self._failing = True
                delay = min(delay * 2, 10.0)
                continue
            if self._failing:
                log.info("call records: database writes work again")
                self._failing = False
            delay = self._interval
