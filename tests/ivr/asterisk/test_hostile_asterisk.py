"""Hostile or odd bytes from Asterisk's side, over real TCP, while valid calls keep flowing.

Each test sends the exact bytes of one finding of issue 17 from an
independent Asterisk-side client (FastAGI) or through the manager simulator
(AMI) and checks what a user would see: memory stays bounded, no traceback
reaches the log, the valid events after the odd ones are applied, the call
keeps the dialplan's default queue or is routed, and the next call is routed.
The call-record writers are checked on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tracemalloc
from typing import Any

import pytest
from sqlalchemy import insert, select

from caller_id.models import Agent, CallRecord
from ivr.asterisk.agi import MAX_USAGE_BYTES
from ivr.sim.fastagi_caller import encode_environment
from ivr.asterisk.ami import Message
from ivr.asterisk.ami_client import AmiClient
from ivr.agents.callcenter import QueueOutcomes
from ivr.call.records import CallRecorder
from queues.events import AmiEvent
from ivr.sim.fastagi_caller import USAGE_HEAD, AsteriskChannel, CallScript, place_call
from tests.ivr.agents.test_screenpop import ANNA, BORIS, Rig
from tests.waiting import eventually, within

MB = 1024 * 1024
KNOWN_CALLER = "79000000002"  # seeded: a private client, one role


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info]


async def asterisk_session(port: int, channel: AsteriskChannel, env: bytes) -> list[str]:
    """Asterisk's side of one FastAGI session with a given environment block: the commands it got."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(env)
        while True:
            line = await within(reader.readline())
            if not line:
                return channel.commands
            for chunk in channel.handle(line.decode("utf-8", "replace")):
                writer.write(chunk)
    finally:
        writer.close()


def environment(channel: AsteriskChannel, port: int, **overrides: str) -> bytes:
    """The block `channel` would send, with some values replaced."""
    text = channel.environment("127.0.0.1", port).decode()
    values = dict(line.split(": ", 1) for line in text.splitlines() if line)
    values.update(overrides)
    return encode_environment(values)


async def record_of(db: Any, call_id: str) -> CallRecord | None:
    async with db.session() as session:
        return (await session.execute(select(CallRecord).where(CallRecord.call_id == call_id))).scalar_one_or_none()


# --- FastAGI -----------------------------------------------------------------------------


async def test_an_endless_520_usage_block_is_cut_off_and_the_call_keeps_its_default_queue(
        start_server, base_config, caplog) -> None:
    server = await start_server(base_config)
    channel = AsteriskChannel(CallScript(number=KNOWN_CALLER))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(channel.environment("127.0.0.1", server.port))
    first = (await within(reader.readline())).decode()
    assert first.startswith("SET VARIABLE IVR_CALL_ID")
    line = b"Usage text" + b"x" * 1000 + b"\n"
    chunk = line * 64  # 64 KB of usage lines, never the closing "520 End of proper usage."
    sent = 0
    tracemalloc.start()
    try:
        writer.write(USAGE_HEAD)
        while sent < 50 * MB:
            writer.write(chunk)
            await within(writer.drain())
            sent += len(chunk)
    except (ConnectionError, OSError):
        pass  # the server closed the connection: what Asterisk sees as the end of the AGI
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        writer.close()
    assert sent < 50 * MB, "the server kept reading an endless usage block"
    assert peak < 4 * MB, f"{peak} bytes held while {sent} bytes of usage text came in"
    try:
        rest = await within(reader.read())
    except ConnectionResetError:  # closed with our bytes unread
        rest = b""
    assert rest == b""  # no further command, no IVR_QUEUE: the dialplan's default queue stays
    assert server.agi.stats["malformed"] == 1
    assert "520 usage block longer than" in caplog.text and str(MAX_USAGE_BYTES) in caplog.text
    routed = await place_call("127.0.0.1", server.port, CallScript(number=KNOWN_CALLER, line="b2c"))
    assert routed.error is None and routed.queue
    assert not tracebacks(caplog)


async def test_an_over_long_uniqueid_is_dropped_at_the_edge_and_the_call_routed_and_recorded(
        start_server, base_config, caplog) -> None:
    server = await start_server(base_config)
    channel = AsteriskChannel(CallScript(number=KNOWN_CALLER, line="b2c"))
    with caplog.at_level(logging.WARNING):
        await asterisk_session(server.port, channel, environment(channel, server.port, agi_uniqueid="9" * 16_000))
    assert channel.variables.get("IVR_QUEUE")
    recorder = server.services.recorder
    await within(recorder.flush())
    record = await record_of(server.services.db, channel.variables["IVR_CALL_ID"])
    assert record is not None and record.uniqueid is None and record.queue == channel.variables["IVR_QUEUE"]
    assert "agi_uniqueid of 16000 characters" in caplog.text
    assert not tracebacks(caplog)


async def test_an_environment_line_longer_than_any_asterisk_writes_ends_only_that_session(
        start_server, base_config, caplog) -> None:
    server = await start_server(base_config)
    channel = AsteriskChannel(CallScript(number=KNOWN_CALLER))
    commands = await asterisk_session(server.port, channel, environment(channel, server.port,
                                                                        agi_uniqueid="9" * 17 * 1024))
    assert commands == [] and server.agi.stats["malformed"] == 1  # closed: the dialplan's default queue
    routed = await place_call("127.0.0.1", server.port, CallScript(number=KNOWN_CALLER, line="b2c"))
    assert routed.error is None and routed.queue
    assert not tracebacks(caplog)


# --- AMI ---------------------------------------------------------------------------------


def raw_event(name: str, *pairs: tuple[str, str]) -> bytes:
    return Message((("Event", name), ("Privilege", "agent,all"), *pairs)).encode()


def member_of(rig: Rig, queue: str, interface: str) -> dict[str, Any] | None:
    snapshot = rig.state.queue_snapshot(queue)
    return next((m for m in snapshot["members"] if m["interface"] == interface), None) if snapshot else None


def is_paused(rig: Rig, interface: str) -> bool:
    member = member_of(rig, "support", interface)
    return bool(member and member["paused"])


@pytest.fixture
async def rig(sqlite_db):
    rig = Rig(sqlite_db)
    await rig.start()
    yield rig
    await rig.close()


async def test_a_stray_follows_block_does_not_blind_the_client(rig: Rig, caplog) -> None:
    pauses: list[Message] = []
    rig.ami.on_event("QueueMemberPause", pauses.append)
    rig.ami.ping_interval = 30.0  # the liveness check must not be what brings the events back
    rig.sim.send_raw(b"Response: Follows\r\nPrivilege: Command\r\nActionID: nobody-2\r\n\r\n")
    rig.clock.advance(1)
    rig.sim.pause_member(ANNA, True, "lunch")
    await eventually(lambda: is_paused(rig, ANNA), 1.0)
    assert pauses and pauses[0]["Interface"] == ANNA
    assert member_of(rig, "support", ANNA)["paused_reason"] == "lunch"
    assert rig.ami.state.connects == 1  # no reconnect was needed
    assert (await rig.ami.action({"Action": "Ping"}, timeout=1.0))["Ping"] == "Pong"
    assert not tracebacks(caplog)


@pytest.mark.parametrize("stamp", ["1e20", "4102444800"])  # out of any range; 2100-01-01
async def test_a_far_future_timestamp_does_not_freeze_member_state(rig: Rig, caplog, stamp: str) -> None:
    rig.sim.send_raw(raw_event(
        "QueueCallerJoin", ("Timestamp", stamp), ("Channel", "PJSIP/trunk-1"), ("CallerIDNum", "79161234567"),
        ("Uniqueid", "1900.1"), ("Linkedid", "1900.1"), ("ChanVariable", "IVR_CALL_ID=call-future"),
        ("Queue", "support"), ("Position", "1"), ("Count", "1")))
    await eventually(lambda: rig.state.queue_snapshot("support")["callers_waiting"] == 1)
    await rig.sim.restart(down_for=0.2)
    await rig.resynced(2)
    rig.clock.advance(1)
    rig.sim.pause_member(BORIS, True, "break")
    await eventually(lambda: is_paused(rig, BORIS), 1.0)
    rig.clock.advance(1)
    rig.sim.pause_member(BORIS, False)
    await eventually(lambda: not is_paused(rig, BORIS), 1.0)
    assert rig.state.counters["errors"] == 0 and rig.center.stats["errors"] == 0
    assert not tracebacks(caplog)


async def test_numbers_no_asterisk_writes_cost_only_their_field(rig: Rig, caplog) -> None:
    async with rig.db.session() as session:
        now = dt.datetime.now(dt.timezone.utc)
        await session.execute(insert(CallRecord), [
            {"call_id": f"call-n{n}", "uniqueid": f"1900.{n}", "started_at": now} for n in (1, 2, 3)])
        await session.commit()

    def call(n: int) -> tuple[tuple[str, str], ...]:
        return (("Channel", f"PJSIP/trunk-{n}"), ("CallerIDNum", "79161234567"), ("Uniqueid", f"1900.{n}"),
                ("Linkedid", f"1900.{n}"), ("ChanVariable", f"IVR_CALL_ID=call-n{n}"), ("Queue", "support"))

    agent = (("Interface", ANNA), ("MemberName", "Анна Смирнова"), ("DestChannel", f"{ANNA}-0001"))
    penalty = member_of(rig, "support", ANNA)["penalty"]
    stamp = ("Timestamp", "1e20")
    rig.sim.send_raw(b"".join([
        raw_event("QueueCallerJoin", stamp, *call(1), ("Position", "inf"), ("Count", "1")),
        raw_event("AgentConnect", *call(1), *agent, ("HoldTime", "3"), ("RingTime", "nan")),
        raw_event("AgentComplete", *call(1), *agent, ("HoldTime", "3"), ("TalkTime", "inf"), ("Reason", "caller")),
        raw_event("QueueCallerJoin", *call(2), ("Position", "1"), ("Count", "1")),
        raw_event("AgentConnect", *call(2), *agent, ("HoldTime", "1e15"), ("RingTime", "1")),
        raw_event("AgentComplete", *call(2), *agent, ("HoldTime", "1"), ("TalkTime", "nan"), ("Reason", "agent")),
        raw_event("QueueCallerJoin", *call(3), ("Position", "1"), ("Count", "1")),
        raw_event("QueueCallerAbandon", *call(3), ("Position", "inf"), ("OriginalPosition", "1e400"),
                  ("HoldTime", "1e15")),
        raw_event("QueueMemberPenalty", ("Queue", "support"), ("Interface", ANNA), ("MemberName", "Анна Смирнова"),
                  ("Penalty", "1e400"), ("Paused", "0"), ("Status", "1")),
        raw_event("UserEvent", ("UserEvent", "after")),
    ]))
    seen: list[Message] = []
    rig.ami.on_event("UserEvent", seen.append)
    await eventually(lambda: seen)
    assert member_of(rig, "support", ANNA)["penalty"] == penalty  # the last usable value stays

    async def written() -> bool:
        records = [await record_of(rig.db, f"call-n{n}") for n in (1, 2, 3)]
        return all(r is not None and r.ended_at is not None for r in records)

    async with asyncio.timeout(5):
        while not await written():
            await asyncio.sleep(0.02)
    one, two, three = [await record_of(rig.db, f"call-n{n}") for n in (1, 2, 3)]
    assert (one.queue, one.wait_seconds, one.talk_seconds, one.agent_id) == ("support", 3, None, 1)
    assert one.answered_at is not None
    assert (two.wait_seconds, two.talk_seconds) == (1, None) and two.answered_at is not None  # HoldTime of the end
    assert three.answered_at is None and three.wait_seconds is None
    figures = rig.stats.figures("support")
    assert (figures["answered"], figures["completed"], figures["abandoned"]) == (2, 2, 1)
    for counters in (rig.state.counters, rig.stats.counters):
        assert counters["errors"] == 0 and counters["bad"] == 0
    assert rig.center.stats["errors"] == 0
    assert "'inf' is not a usable number" in caplog.text and "'1e15' is not a usable number" in caplog.text
    assert not tracebacks(caplog)


async def test_over_long_ids_from_the_manager_are_refused_at_the_edge(rig: Rig, caplog) -> None:
    long_call_id = "c" * 65
    rig.sim.send_raw(b"".join([
        raw_event("QueueCallerJoin", ("Uniqueid", "1900.7"), ("Linkedid", "1900.7"), ("Queue", "q" * 81),
                  ("Position", "1")),
        raw_event("QueueCallerJoin", ("Uniqueid", "1900.8"), ("Linkedid", "1900.8"), ("Queue", "support"),
                  ("ChanVariable", f"IVR_CALL_ID={long_call_id}"), ("Position", "1")),
        raw_event("UserEvent", ("UserEvent", "after")),
    ]))
    seen: list[Message] = []
    rig.ami.on_event("UserEvent", seen.append)
    await eventually(lambda: seen)
    assert "q" * 81 not in rig.state.queue_names()
    (caller,) = rig.state.queue_snapshot("support")["callers"]
    assert caller["uniqueid"] == "1900.8" and caller["call_id"] is None
    assert "longer than any" in caplog.text
    assert not tracebacks(caplog)


# --- a stream that never ends a message ----------------------------------------------------


async def test_an_endless_manager_message_is_dropped_in_bounded_memory_and_reading_goes_on(caplog) -> None:
    """A fake manager logs the client in, then sends 50 MB without a blank line, then an event."""
    garbage = b"Event: Endless\r\nData: " + b"x" * (64 * 1024 - 22)
    streamed = asyncio.Event()

    async def manager(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/12.0.0\r\n")
        login = await reader.readuntil(b"\r\n\r\n")
        action_id = next(line.split(b": ", 1)[1] for line in login.split(b"\r\n") if line.startswith(b"ActionID"))
        writer.write(b"Response: Success\r\nActionID: " + action_id + b"\r\nMessage: Authentication accepted\r\n\r\n")
        await writer.drain()
        sent = 0
        while sent < 50 * MB:
            writer.write(garbage)
            await writer.drain()
            sent += len(garbage)
        writer.write(b"\r\n\r\n" + raw_event("UserEvent", ("UserEvent", "after")))
        await writer.drain()
        streamed.set()
        await reader.read()

    server = await asyncio.start_server(manager, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AmiClient("127.0.0.1", port, "ivr", "secret", ping_interval=0, login_timeout=2.0)
    seen: list[Message] = []
    client.on_event("UserEvent", seen.append)
    tracemalloc.start()
    try:
        await client.connect(reconnect=False)
        await within(streamed.wait(), 30)
        await eventually(lambda: seen)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await client.close()
        server.close()
    assert seen[0]["UserEvent"] == "after"
    assert peak < 12 * MB, f"{peak} bytes held for a 50 MB message"  # the 4 MB message limit, and some
    assert client.stats["malformed"] >= 1 and client.state.connects == 1
    assert not tracebacks(caplog)


# --- the call-record writers on SQLite and PostgreSQL ----------------------------------------


def call_record(call_id: str, **values: Any) -> dict[str, Any]:
    return {"call_id": call_id, "line": "general", "queue": "support", **values}


async def test_the_call_recorder_drops_only_the_records_the_database_refuses(migrated_db, caplog) -> None:
    recorder = CallRecorder(migrated_db)
    recorder.add(call_record("rec-1", uniqueid="1900.1"))
    recorder.add(call_record("rec-2", uniqueid="9" * 16_000))  # PostgreSQL: too long for String(64)
    recorder.add(call_record("rec-3", uniqueid="1900.3"))
    recorder.add(call_record("rec-1", uniqueid="1900.4"))  # the same call id twice: refused everywhere
    with caplog.at_level(logging.ERROR, logger="ivr.call.records"):
        await within(recorder.flush())
    stored = {call_id for call_id in ("rec-1", "rec-2", "rec-3") if await record_of(migrated_db, call_id)}
    refused_long = migrated_db.dialect == "postgresql"
    assert stored == ({"rec-1", "rec-3"} if refused_long else {"rec-1", "rec-2", "rec-3"})
    assert (await record_of(migrated_db, "rec-1")).uniqueid == "1900.1"
    assert recorder.rejected == (2 if refused_long else 1) and recorder.pending == 0
    assert "refused the record of call rec-1" in caplog.text
    assert "9" * 100 not in caplog.text  # the refused value is not copied into the log
    written = recorder.written
    recorder.add(call_record("rec-5"))  # the writer is not stuck
    recorder.start()
    try:
        await eventually(lambda: recorder.written == written + 1)
        assert await record_of(migrated_db, "rec-5") is not None
    finally:
        await recorder.close()
    assert not tracebacks(caplog)


async def test_queue_outcomes_the_database_refuses_do_not_hold_up_the_others(migrated_db, caplog) -> None:
    async with migrated_db.session() as session:
        await session.execute(insert(Agent), [{"id": 1, "name": "Анна", "interface": ANNA}])
        now = dt.datetime.now(dt.timezone.utc)
        await session.execute(insert(CallRecord), [
            {"call_id": call_id, "started_at": now, "line": "general"} for call_id in ("out-1", "out-2")])
        await session.commit()
    # A stale agent list: the member who answered out-1 is an agent the database no longer has.
    updates = QueueOutcomes(migrated_db, agents=lambda interface: 1 if interface == ANNA else 999)

    def connect(call_id: str, interface: str, queue: str = "support") -> AmiEvent:
        return AmiEvent.of({"Event": "AgentConnect", "Queue": queue, "Uniqueid": f"u-{call_id}",
                            "Interface": interface, "ChanVariable": {"IVR_CALL_ID": call_id}, "HoldTime": "4"})

    updates.note(connect("out-1", "PJSIP/ghost"))
    updates.note(connect("out-2", ANNA, queue="q" * 81))  # a queue name no column holds: left out
    with caplog.at_level(logging.ERROR, logger="ivr.call.records"):
        assert await within(updates.flush(everything=True)) == 1
    one, two = await record_of(migrated_db, "out-1"), await record_of(migrated_db, "out-2")
    assert one.answered_at is None  # refused (no such agent) and dropped
    assert two.answered_at is not None and two.agent_id == 1 and two.wait_seconds == 4 and two.queue is None
    assert updates.stats["rejected"] == 1 and updates.pending == 0
    assert "refused the queue outcomes for call_id out-1" in caplog.text
    assert not tracebacks(caplog)
