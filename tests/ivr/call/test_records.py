"""Call records against a real SQLite file: batches, refused rows, an outage, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from sqlalchemy import select

from caller_id.models import CallRecord
from ivr.call.records import CallRecorder
from tests.waiting import eventually, within


def call_record(call_id: str, **values: Any) -> dict[str, Any]:
    return {"call_id": call_id, "line": "general", "queue": "support", **values}


async def stored(db: Any) -> dict[str, CallRecord]:
    async with db.session() as session:
        return {r.call_id: r for r in (await session.execute(select(CallRecord))).scalars()}


class FlakyDb:
    """The real database behind a switch that makes every session fail."""

    def __init__(self, db: Any):
        self.db = db
        self.down = False

    def session(self) -> Any:
        if self.down:
            raise ConnectionRefusedError("database down")
        return self.db.session()


async def test_a_flush_writes_everything_pending_in_batches(sqlite_db) -> None:
    recorder = CallRecorder(sqlite_db, batch=3)
    for n in range(8):
        recorder.add(call_record(f"call-{n}", uniqueid=f"1900.{n}", predicted_intent="card_status"))
    assert recorder.pending == 8
    await within(recorder.flush())
    records = await stored(sqlite_db)
    assert sorted(records) == [f"call-{n}" for n in range(8)]
    assert records["call-5"].uniqueid == "1900.5" and records["call-5"].predicted_intent == "card_status"
    assert (recorder.written, recorder.pending, recorder.rejected, recorder.dropped) == (8, 0, 0, 0)


async def test_a_record_gets_the_models_defaults(sqlite_db) -> None:
    recorder = CallRecorder(sqlite_db)
    recorder.add({"call_id": "call-1", "line": "general"})
    await within(recorder.flush())
    record = (await stored(sqlite_db))["call-1"]
    assert record.self_served is False and record.context == {} and record.started_at is not None
    assert record.queue is None and record.answered_at is None


def test_a_value_for_no_column_is_refused_at_once(sqlite_db) -> None:
    recorder = CallRecorder(sqlite_db)
    with pytest.raises(ValueError, match="not call record columns: colour"):
        recorder.add(call_record("call-1", colour="red"))
    assert recorder.pending == 0


async def test_a_refused_record_does_not_block_the_others(sqlite_db, caplog) -> None:
    recorder = CallRecorder(sqlite_db, batch=10)
    recorder.add(call_record("call-1", uniqueid="1900.1"))
    recorder.add(call_record("call-2", uniqueid="1900.2"))
    recorder.add(call_record("call-1", uniqueid="1900.3"))  # the same call id again: the database refuses it
    recorder.add(call_record("call-4", uniqueid="1900.4"))
    with caplog.at_level(logging.ERROR, logger="ivr.call.records"):
        await within(recorder.flush())
    records = await stored(sqlite_db)
    assert sorted(records) == ["call-1", "call-2", "call-4"] and records["call-1"].uniqueid == "1900.1"
    assert (recorder.written, recorder.rejected, recorder.pending) == (3, 1, 0)
    assert "the database refused the record of call call-1" in caplog.text


async def test_records_wait_through_an_outage_and_are_written_after_it(sqlite_db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.call.records")
    flaky = FlakyDb(sqlite_db)
    recorder = CallRecorder(flaky, batch=2)
    flaky.down = True
    for n in range(3):
        recorder.add(call_record(f"call-{n}"))
    with pytest.raises(ConnectionRefusedError):
        await recorder.flush()
    assert recorder.pending == 3 and recorder.written == 0  # nothing lost, nothing counted
    recorder.start()
    try:
        await eventually(lambda: "cannot write records" in caplog.text)
        flaky.down = False
        await eventually(lambda: recorder.written == 3)
        assert sorted(await stored(sqlite_db)) == ["call-0", "call-1", "call-2"]
        await eventually(lambda: "records are written again" in caplog.text)
    finally:
        await recorder.close()


async def test_the_writer_task_writes_a_full_batch_and_close_writes_the_rest(sqlite_db) -> None:
    recorder = CallRecorder(sqlite_db, batch=2, interval=60.0)  # only a full batch wakes the task
    recorder.start()
    try:
        recorder.add(call_record("call-1"))
        recorder.add(call_record("call-2"))
        await eventually(lambda: recorder.written == 2)
        recorder.add(call_record("call-3"))
    finally:
        await recorder.close()
    assert recorder.pending == 0 and sorted(await stored(sqlite_db)) == ["call-1", "call-2", "call-3"]


async def test_when_the_queue_is_full_the_oldest_record_is_dropped(sqlite_db) -> None:
    recorder = CallRecorder(sqlite_db, max_pending=2)
    for n in range(3):
        recorder.add(call_record(f"call-{n}"))
    assert (recorder.pending, recorder.dropped) == (2, 1)
    await within(recorder.flush())
    assert sorted(await stored(sqlite_db)) == ["call-1", "call-2"]


class SlowToFinishDb:
    """The real database, each session lingering after its commit (a connection slow to return)."""

    def __init__(self, db: Any, linger: float):
        self.db, self.linger = db, linger
        self.sessions = 0

    @contextlib.asynccontextmanager
    async def session(self) -> Any:
        async with self.db.session() as session:
            yield session
        self.sessions += 1
        await asyncio.sleep(self.linger)


async def test_closing_during_a_write_lets_it_finish_and_writes_nothing_twice(sqlite_db) -> None:
    slow = SlowToFinishDb(sqlite_db, linger=0.3)
    recorder = CallRecorder(slow, batch=5, interval=0.05)
    recorder.start()
    for n in range(5):
        recorder.add(call_record(f"call-{n}"))
    await eventually(lambda: slow.sessions == 1)  # committed; the write has not returned yet
    await within(recorder.close())
    assert sorted(await stored(sqlite_db)) == [f"call-{n}" for n in range(5)]
    assert (recorder.written, recorder.pending, recorder.rejected) == (5, 0, 0)
