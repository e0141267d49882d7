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
Asterisk are bounded where they come in (`ivr.asterisk.agi`, `queues.events`), so this
is the last line, not the usual path.

`BatchedWriter` is that writer task, its backoff and its refused-row rule.
`RecordUpdates` is one too: what is learnt about a call after its record
was queued (its queue outcome from AMI events, `ivr.agents.callcenter`; the
post-call survey; an agent's disposition), merged per call and written as
updates.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import func, update
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


MAX_BACKOFF = 10.0  # seconds between two tries at most while the database fails

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchedWriter(abc.ABC):
    """A background task that writes what is pending to the database in batches, with backoff.

    A subclass keeps what is pending in `_pending` (anything with a length),
    writes it in `_write_pending()` (which raises when the database fails,
    leaving what was not written pending), through `_write_refusing` so that a row
    the database refuses is dropped (`_refused`) without holding up the
    others, and calls `_wake()` when a batch is ready.  The task then waits
    `gather` seconds more for what follows to join the batch, and writes at
    least every `interval` seconds.  While the database fails, the wait
    doubles after each failure up to `MAX_BACKOFF` (what arrives meanwhile
    does not cut it short) and the failure is logged once; `what` names what
    is written in those log lines.
    """

    _pending: Any

    def __init__(self, *, interval: float, gather: float, what: str, task_name: str):
        self.interval = interval
        self.gather = gather
        self.what = what
        self._task_name = task_name
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._writing = False  # the task is inside flush(): a cancel now could cut a committed write short
        # One write at a time: a flush() asked for (a page that must see the record) waits for the task's
        # write in progress, whose rows are no longer pending but not committed yet.
        self._flush_lock = asyncio.Lock()
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, **options: Any) -> Any:
        """Write what is pending, after the write in progress if there is one (raises when the database
        fails; what was not written stays pending).  `options` go to `_write_pending`."""
        async with self._flush_lock:
            return await self._write_pending(**options)

    @abc.abstractmethod
    async def _write_pending(self) -> Any:
        """Write what is pending (raises when the database fails; what was not written stays pending)."""

    async def _flush_at_close(self) -> None:
        """What `close` writes: everything pending."""
        await self.flush()

    @abc.abstractmethod
    def _refused(self, item: Any) -> str:
        """Forget an item the database refused; what it was, for the log line."""

    def _wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._closing = False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._task_name)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the task, then write what is pending, for at most `timeout` seconds.

        A write the task is doing is let finish (for up to `timeout`), never cancelled: a cancel
        that lands after the commit would put its rows back, and they would be written twice."""
        if self._task is not None:
            self._closing = True
            if self._writing:
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
                except Exception:  # noqa: BLE001 - a slow or failed write: cancelled below, the rest below
                    pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with asyncio.timeout(timeout):
                await self._flush_at_close()
        except Exception as exc:  # noqa: BLE001
            log.error("call records: %d %s not written at shutdown: %s", self.pending, self.what, exc)

    async def _run(self) -> None:
        delay = self.interval
        while not self._closing:
            if self._failing:
                await asyncio.sleep(delay)  # what arrives meanwhile does not cut a backoff short
            else:
                try:
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                        if self.gather:
                            await asyncio.sleep(self.gather)  # what follows joins the batch
                except TimeoutError:
                    pass
            self._wakeup.clear()
            if self._closing:
                return
            self._writing = True
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried with backoff
                self._failed(exc)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            finally:
                self._writing = False
            if self._failing:
                log.info("call records: %s are written again", self.what)
                self._failing = False
            delay = self.interval

    def _failed(self, exc: Exception) -> None:
        """A write failed: said once until writes work again."""
        if not self._failing:
            log.error("call records: cannot write %s (%s); %d waiting, will retry", self.what, exc, self.pending)
            self._failing = True

    async def _write_refusing(self, items: deque[Item],
                              write: Callable[[list[Item]], Awaitable[Result]]) -> list[Result]:
        """`write` the items in one go; a batch the database refused, one item at a time.

        The items it refuses (`is_refused_row`) are dropped (`_refused`) and
        logged; any other failure is raised.  Each item written or dropped is
        taken off the left of `items`, so what is left there when this raises
        was not written.  Returns what each `write` returned.
        """
        try:
            result = await write(list(items))
        except Exception as exc:
            if not is_refused_row(exc):
                raise
        else:
            items.clear()
            return [result]
        results = []
        while items:
            try:
                results.append(await write([items[0]]))
            except Exception as exc:
                if not is_refused_row(exc):
                    raise
                log.error("call records: the database refused %s (%s); dropped", self._refused(items[0]),
                          refusal(exc))
            items.popleft()
        return results


class CallRecorder(BatchedWriter):
    """Finished calls' records, inserted `batch` at a time (see the module docstring)."""

    def __init__(self, db: Any, *, batch: int = 500, interval: float = 0.2, max_pending: int = 100_000):
        super().__init__(interval=interval, gather=0.0, what="records", task_name="call-recorder")
        self._db = db
        self._batch = batch
        self._pending: deque[dict[str, Any]] = deque(maxlen=max_pending)
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
            self._wake()

    async def _write_pending(self) -> None:
        """Write everything pending now (raises if the database fails; what is not written stays pending)."""
        while self._pending:
            rows = deque(self._pending.popleft() for _ in range(min(self._batch, len(self._pending))))
            try:
                await self._write_refusing(rows, self._insert)
            finally:
                self._pending.extendleft(reversed(rows))  # those neither written nor refused

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._db.session() as session:
            await session.execute(_INSERT, rows)
            await session.commit()
        self.written += len(rows)

    def _refused(self, row: dict[str, Any]) -> str:
        self.rejected += 1
        return f"the record of call {str(row.get('call_id'))[:64]}"


@dataclass(slots=True)
class _Update:
    column: str  # "call_id" or "uniqueid"
    key: str
    values: dict[str, Any] = field(default_factory=dict)  # set
    fill: dict[str, Any] = field(default_factory=dict)  # set only where NULL
    interface: str | None = None  # agent_id to resolve at write time
    first_seen: float = 0.0  # monotonic
    next_try: float = 0.0
    tries: int = 0


_Written = tuple[_Update, tuple[Any, ...], int]  # the update, what of it was written, rows changed


class RecordUpdates(BatchedWriter):
    """Changes to call records, merged per call and written to ``call_records`` in batches.

    `change(...)` (synchronous, no I/O) notes what to set on the record of a
    call, found by its call id or its caller's Uniqueid; a background task
    writes every `interval` seconds.  The record may not be there yet (the
    FastAGI side inserts in batches too), so an update whose record is not
    there is retried with backoff until `max_age` seconds; when the database
    fails, everything waits (bounded by `max_pending` calls, the oldest
    dropped) and the failure is logged once.
    """

    WHAT = "call record updates"  # in the log lines

    def __init__(
        self,
        db: Any,
        agents: Callable[[str], Any] | None = None,
        *,
        interval: float = 0.2,
        max_age: float = 120.0,
        max_pending: int = 50_000,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(interval=interval, gather=interval, what=self.WHAT, task_name="call-record-updates")
        self._db = db
        self._agents = agents
        self.max_age = max_age
        self.max_pending = max_pending
        self._clock = clock
        self._pending: OrderedDict[tuple[str, str], _Update] = OrderedDict()
        self.stats: dict[str, int] = {
            "noted": 0, "written": 0, "unmatched": 0, "dropped": 0, "db_errors": 0, "retries": 0, "rejected": 0,
        }

    def change(self, *, call_id: str | None = None, uniqueid: str | None = None,
               values: Mapping[str, Any] | None = None, fill: Mapping[str, Any] | None = None,
               interface: str | None = None) -> bool:
        """Set `values` on the record of the call (by `call_id`, else by the caller's `uniqueid`), and
        `fill` where the record has NULL; `interface` names the member whose agent it was (``agent_id``,
        resolved at write time).  Later changes to a column win.  False when neither id is given."""
        if call_id:
            column, key = "call_id", call_id
        elif uniqueid:
            column, key = "uniqueid", uniqueid
        else:
            return False
        unknown = set(values or ()).union(fill or ()).difference(_COLUMNS)
        if unknown:
            raise ValueError(f"not call record columns: {', '.join(sorted(unknown))}")
        self._merge(column, key, dict(values or {}), dict(fill or {}), interface)
        return True

    def _merge(self, column: str, key: str, values: dict[str, Any], fill: dict[str, Any],
               interface: str | None) -> None:
        self.stats["noted"] += 1
        now = time.monotonic()
        entry = self._pending.get((column, key))
        if entry is None:
            while len(self._pending) >= self.max_pending:
                self._pending.popitem(last=False)
                self.stats["dropped"] += 1
            entry = self._pending[(column, key)] = _Update(column, key, first_seen=now)
        entry.values.update(values)
        for column_name, value in fill.items():
            if column_name not in entry.values:
                entry.fill.setdefault(column_name, value)  # the first fill wins, as written one by one
        if interface:
            entry.interface = interface
        entry.next_try = 0.0
        self._wake()

    def _failed(self, exc: Exception) -> None:
        self.stats["db_errors"] += 1
        super()._failed(exc)

    async def _flush_at_close(self) -> None:
        await self.flush(everything=True)

    async def _write_pending(self, *, everything: bool = False) -> int:
        """Write the updates that are due (all with `everything`); how many rows changed.

        Raises when the database fails (the updates stay pending).
        """
        now = time.monotonic()
        due = [u for u in self._pending.values() if everything or u.next_try <= now]
        if not due:
            return 0
        agent_ids: dict[str, Any] = {}
        if self._agents is not None:
            for interface in {u.interface for u in due if u.interface}:
                try:
                    found = self._agents(interface)
                    agent_ids[interface] = await found if inspect.isawaitable(found) else found
                except Exception as exc:  # noqa: BLE001 - written without the agent
                    log.warning("call records: agent lookup for %s failed: %s", interface, exc)

        async def write(entries: list[_Update]) -> list[_Written]:
            return await self._write(entries, agent_ids)

        batches = await self._write_refusing(deque(due), write)
        written = 0
        for entry, snapshot, rows in (result for batch in batches for result in batch):
            current = self._pending.get((entry.column, entry.key))
            if current is not entry:
                continue
            if rows:
                written += rows
                self.stats["written"] += 1
                if snapshot == (entry.values, entry.fill, entry.interface):
                    del self._pending[(entry.column, entry.key)]  # nothing new arrived meanwhile
                continue
            if now - entry.first_seen >= self.max_age:
                del self._pending[(entry.column, entry.key)]
                self.stats["unmatched"] += 1
                log.info("call records: no call record with %s %s; its %s are dropped",
                         entry.column, entry.key, self.what)
                continue
            entry.tries += 1
            self.stats["retries"] += 1
            entry.next_try = now + min(self.interval * 2 ** entry.tries, 5.0)
        return written

    async def _write(self, entries: list[_Update], agent_ids: dict[str, Any]) -> list[_Written]:
        """Run the updates in one transaction: (entry, what was written, rows changed) each."""
        results: list[_Written] = []
        async with self._db.session() as session:
            for entry in entries:
                snapshot = (dict(entry.values), dict(entry.fill), entry.interface)
                values: dict[str, Any] = dict(entry.values)
                for name, value in entry.fill.items():
                    if name not in values:
                        values[name] = func.coalesce(getattr(CallRecord, name), value)
                agent_id = agent_ids.get(entry.interface) if entry.interface else None
                if agent_id is not None:
                    values["agent_id"] = agent_id
                if not values:
                    results.append((entry, snapshot, 1))
                    continue
                column = CallRecord.call_id if entry.column == "call_id" else CallRecord.uniqueid
                result = await session.execute(update(CallRecord).where(column == entry.key).values(**values))
                results.append((entry, snapshot, result.rowcount or 0))
            await session.commit()
        return results

    def _refused(self, entry: _Update) -> str:
        if self._pending.get((entry.column, entry.key)) is entry:
            del self._pending[(entry.column, entry.key)]
        self.stats["rejected"] += 1
        return f"the {self.what} for {entry.column} {entry.key}"
