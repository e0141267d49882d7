"""Call records: written in batches, off the call path.

The FastAGI flow hands a finished decision to `CallRecorder.add`, which
returns at once; a writer task inserts the records in batches.  A database
that is down delays the records (they wait in a bounded queue and are
retried), never a call.  When the queue is full the oldest records are
dropped and counted, so memory stays bounded during a long outage.

A record the database refuses (`is_refused_row`: a value too long for its
column on PostgreSQL, a duplicate call id) must not hold up the others: a
batch that fails that way is written again one record at a time, and the
refused ones are logged and dropped (counted in `rejected`).  Values from
Asterisk are bounded where they come in (`ivr.asterisk.agi`, `queues.state`), so this
is the last line, not the usual path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from caller_id.models import CallRecord, utcnow

log = logging.getLogger(__name__)

_COLUMNS = tuple(c.name for c in CallRecord.__table__.columns if c.name != "id")
# Every record is stored with every column, so a batch is one statement compiled once
# (the ORM would group records by the columns they happen to have, each group its own).
_INSERT = CallRecord.__table__.insert()


# SQLSTATE classes of errors about the values of a row: data exception, integrity constraint violation.
_ROW_SQLSTATES = ("22", "23")


def is_refused_row(exc: BaseException) -> bool:
    """Did the database refuse the values of a row, rather than fail as a whole?

    A value it cannot store (too long, out of range), a broken constraint,
    or a value that could not even be bound (a StatementError that is no
    database error).  The asyncpg driver reports data exceptions as plain
    database errors, so their SQLSTATE decides.  Anything else (a lost
    connection, a timeout, a locked file) is the database's, and retried.
    """
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in _ROW_SQLSTATES
    return isinstance(exc, StatementError)


def refusal(exc: BaseException) -> str:
    """The first line of what the database said, for a log line (no parameters, no row)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0][:200]}" if text else type(original).__name__


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
        self.dropped = 0  # the oldest, when the queue was full
        self.rejected = 0  # refused by the database

    def add(self, record: dict[str, Any]) -> None:
        unknown = set(record).difference(_COLUMNS)
        if unknown:
            raise ValueError(f"not call record columns: {', '.join(sorted(unknown))}")
        row = dict.fromkeys(_COLUMNS)
        row.update(self_served=False, context={}, started_at=utcnow())  # the model's defaults
        row.update(record)
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(row)
        if len(self._pending) >= self._batch:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="call-recorder")

    async def flush(self) -> None:
        """Write everything pending now (raises if the database fails; what is not written stays pending)."""
        while self._pending:
            rows = [self._pending.popleft() for _ in range(min(self._batch, len(self._pending)))]
            try:
                await self._insert(rows)
            except Exception as exc:
                if not is_refused_row(exc):
                    self._pending.extendleft(reversed(rows))
                    raise
                await self._insert_each(rows)
                continue
            except BaseException:
                self._pending.extendleft(reversed(rows))
                raise
            self.written += len(rows)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._db.session() as session:
            await session.execute(_INSERT, rows)
            await session.commit()

    async def _insert_each(self, rows: list[dict[str, Any]]) -> None:
        """A batch the database refused, one record at a time: the refused ones are dropped."""
        for index, row in enumerate(rows):
            try:
                await self._insert([row])
            except Exception as exc:
                if not is_refused_row(exc):
                    self._pending.extendleft(reversed(rows[index:]))
                    raise
                self.rejected += 1
                log.error("call records: the database refused the record of call %s (%s); dropped",
                          str(row.get("call_id"))[:64], refusal(exc))
                continue
            except BaseException:
                self._pending.extendleft(reversed(rows[index:]))
                raise
            self.written += 1

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
