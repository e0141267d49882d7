"""The AMI codec (ivr.asterisk.ami) against the bytes a real Asterisk 23 wrote, and the client against the simulator.

Codec: every ``*.ami.raw`` stream is parsed whole, with Asterisk's own TCP
chunking (the ``.jsonl`` recordings), byte by byte and in random splits,
including splits inside Cyrillic characters; the result must be the frames
Asterisk wrote, read by an independent line splitter.  Hypothesis throws
random bytes and random messages at the parser.  The action encoder must
reproduce the recorded client actions byte for byte.

Client: `AmiClient` over real TCP against `AmiSimulator`: login, refused
login, action timeouts, list actions, handlers that raise, reconnect after a
restart (with ``on_connected`` again), a half-open Asterisk found by the
Ping check, malformed input, and Cyrillic names cut across TCP segments.
Intervals are small; no test needs more than about a second.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.asterisk.ami import (
    ActionResult,
    ActionTracker,
    AmiParser,
    Banner,
    Completed,
    Dropped,
    Garbage,
    Message,
    encode_action,
)
from ivr.asterisk.ami_client import AmiActionError, AmiAuthError, AmiClient, AmiNotConnected, AmiTimeout, backoff_delay
from ivr.sim.ami_server import MALFORMED, ActionParser, AmiSimulator, iter_messages
from queues.events import AmiEvent
from tests.ivr import traces
from tests.waiting import eventually

LIMIT = 5.0  # seconds; only so that a broken test fails instead of hanging
TRACES = traces.trace_dir()
RAW_TRACES = sorted(p.name for p in TRACES.glob("*.ami.raw"))
AMI_RECORDINGS = sorted(
    p.name[: -len(".jsonl")]
    for p in TRACES.glob("*.jsonl")
    if (p.name.startswith("ami-") and not p.name.endswith(".agi.jsonl")) or ".observer-ami." in p.name
)
CYRILLIC_TRACE = "agi-cyrillic-callerid.observer-ami"


def raw(name: str) -> bytes:
    return (TRACES / name).read_bytes()


def reference_frames(data: bytes) -> tuple[str, list[list[tuple[str, str]]]]:
    """An independent reading of a recorded stream: banner line, then frames split on blank lines."""
    text = data.decode("utf-8")
    banner, _, rest = text.partition("\r\n")
    frames = []
    for frame in rest.split("\r\n\r\n"):
        if not frame:
            continue
        pairs = []
        for line in frame.split("\r\n"):
            key, sep, value = line.partition(": ")
            assert sep, f"unexpected line in the recording: {line!r}"
            pairs.append((key, value))
        frames.append(pairs)
    return banner, frames


def messages(items: list) -> list[Message]:
    return [item for item in items if isinstance(item, Message)]


def asterisk_chunks(name: str) -> dict[int, list[bytes]]:
    """What Asterisk wrote on each connection of a recording, one item per recv()."""
    by_conn: dict[int, list[bytes]] = {}
    for chunk in traces.load(name):
        if chunk.from_asterisk and chunk.data:
            by_conn.setdefault(chunk.conn, []).append(chunk.data)
    return by_conn


def client_actions(name: str) -> list[bytes]:
    return [c.data for c in traces.load(name) if c.from_server and c.data]


def feed_in(parser: AmiParser, data: bytes, cuts: list[int]) -> list:
    items = []
    start = 0
    for cut in sorted(set(cuts)):
        items += parser.feed(data[start:cut])
        start = cut
    items += parser.feed(data[start:])
    return items + parser.close()


# --- the recorded streams ------------------------------------------------------------


@pytest.mark.parametrize("name", RAW_TRACES)
def test_every_recorded_stream_parses_to_the_frames_asterisk_wrote(name: str) -> None:
    data = raw(name)
    banner, frames = reference_frames(data)
    items = list(iter_messages(data))
    assert items[0] == Banner(banner) and items[0].version == "12.0.0"
    parsed = items[1:]
    assert not [i for i in parsed if not isinstance(i, Message)]
    assert [list(m.headers) for m in parsed] == frames
    assert not any(m.truncated or m.invalid_utf8 or m.junk for m in parsed)


@pytest.mark.parametrize("name", AMI_RECORDINGS)
def test_asterisks_own_tcp_chunking_gives_the_same_messages(name: str) -> None:
    for conn, chunks in asterisk_chunks(name).items():
        whole = list(iter_messages(b"".join(chunks)))
        parser = AmiParser()
        chunked = [item for chunk in chunks for item in parser.feed(chunk)] + parser.close()
        assert chunked == whole, f"{name} conn {conn}"
        assert not [i for i in whole if isinstance(i, Garbage)]


def test_recordings_include_the_raw_streams() -> None:
    """The .jsonl recordings and the .ami.raw byte streams agree (so both views are tested)."""
    for name in ("ami-queue-answered", "ami-login-and-status", "ami-restart"):
        assert b"".join(asterisk_chunks(name)[1]) == raw(f"{name}.ami.raw")


@pytest.mark.parametrize("name", ["ami-login-and-status.ami.raw", "ami-member-management.ami.raw",
                                  "ami-restart.ami.raw", "ami-restart.conn2.ami.raw",
                                  "ami-login-and-status.conn2.ami.raw"])
def test_byte_by_byte_gives_the_same_messages(name: str) -> None:
    data = raw(name)
    parser = AmiParser()
    items = [item for i in range(len(data)) for item in parser.feed(data[i: i + 1])] + parser.close()
    assert items == list(iter_messages(data))


@pytest.mark.parametrize("name", RAW_TRACES)
def test_random_splits_give_the_same_messages(name: str) -> None:
    data = raw(name)
    whole = list(iter_messages(data))
    rng = random.Random(name)
    for _ in range(20):
        cuts = rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(1, 200)))
        assert feed_in(AmiParser(), data, cuts) == whole


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_splits_of_every_stream(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(RAW_TRACES))
    stream = raw(name)
    cuts = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=50))
    assert feed_in(AmiParser(), stream, cuts) == list(iter_messages(stream))


def test_a_split_inside_a_cyrillic_character_keeps_the_name() -> None:
    chunks = asterisk_chunks(CYRILLIC_TRACE)[1]
    stream = b"".join(chunks)
    name = "Иванов Пётр".encode()
    first = stream.index(name)
    whole = messages(list(iter_messages(stream)))
    for cut in (first + 1, first + 3, first + len("Иванов ".encode()) + 3):  # inside И, в and ё
        with pytest.raises(UnicodeDecodeError):
            stream[:cut].decode("utf-8")  # the cut really is inside a character
        items = messages(feed_in(AmiParser(), stream, [cut]))
        assert items == whole
    names = {m.get("CallerIDName") for m in whole}
    assert "Иванов Пётр" in names
    assert not any("\ufffd" in (m.get("CallerIDName") or "") for m in whole)


def test_repeated_channel_variables_are_kept_in_order() -> None:
    items = messages(list(iter_messages(raw("ami-queue-answered.ami.raw"))))
    join = next(m for m in items if m.event == "QueueCallerJoin")
    assert join.get_all("ChanVariable") == ["IVR_CALL_ID=call-0001", "IVR_CUSTOMER_ID=cust-12345"]
    assert AmiEvent.from_headers(join.headers).variables == {"IVR_CALL_ID": "call-0001", "IVR_CUSTOMER_ID": "cust-12345"}
    assert (join["Uniqueid"], join["Linkedid"]) == ("1795333729.23", "1795333729.22")
    called = next(m for m in items if m.event == "AgentCalled")
    assert AmiEvent.from_headers(called.headers).variables["IVR_CALL_ID"] == "call-0001"
    assert called.get_all("DestChanVariable") == ["IVR_CALL_ID=", "IVR_CUSTOMER_ID="]
    assert AmiEvent.from_headers(called.headers).dest_variables == {}  # the member channel's are empty
    assert called["MemberName"] == "Local/100@agents" and called["DestChannel"].endswith(";1")
    # OriginateResponse carries `Response: Success` and `ChanVariable(<channel>)` keys; it stays one event.
    originate = next(m for m in items if m.event == "OriginateResponse")
    assert originate["Response"] == "Success" and not originate.truncated
    assert [value for key, value in originate.headers if key.startswith("ChanVariable(")] == [
        "IVR_CALL_ID=", "IVR_CUSTOMER_ID="]
    assert AmiEvent.from_headers(originate.headers).variables == {}  # both empty: left out
    assert originate.action_id == "originate-2"
    complete = next(m for m in items if m.event == "AgentComplete")
    assert (complete["HoldTime"], complete["TalkTime"], complete["Reason"]) == ("0", "4", "caller")


def test_empty_values_and_lookups_are_case_insensitive() -> None:
    status = next(m for m in messages(list(iter_messages(raw("ami-queue-answered.ami.raw"))))
                  if m.event == "QueueMemberStatus")
    assert status.get("pausedreason") == "" and status["PausedReason"] == ""
    assert "STATUS" in status and "Nope" not in status
    assert status.get("Queue") == "ringtest"


# --- the codec on its own --------------------------------------------------------------


def test_command_output_in_both_formats() -> None:
    modern = (b"Response: Success\r\nActionID: c-1\r\nMessage: Command output follows\r\n"
              b"Output: Name/username   Host\r\nOutput: \r\nOutput: 1 sip peers\r\n\r\n")
    old = (b"Response: Follows\r\nPrivilege: Command\r\nActionID: c-2\r\n"
           b"Channel   Location\nSIP/x  s@default\r\n\r\n\nEvent: fake, not an event\n"
           b"1 active channel\n--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n")
    def parser_of_a_client_that_sent_both() -> AmiParser:
        parser = AmiParser(expect_banner=False)
        parser.expect_command_output("c-1")
        parser.expect_command_output("c-2")
        return parser

    stream = modern + old
    for cut in range(1, len(stream)):
        items = feed_in(parser_of_a_client_that_sent_both(), stream, [cut])
        assert len(items) == 3, cut
    first, second, third = parser_of_a_client_that_sent_both().feed(stream)
    assert first.output == ("Name/username   Host", "", "1 sip peers")
    assert second.response == "Follows" and second.action_id == "c-2"
    assert second.output == ("Channel   Location", "SIP/x  s@default", "", "", "Event: fake, not an event",
                             "1 active channel")
    assert third.event == "Next"
    assert ActionResult(second).ok and ActionResult(second).output == second.output


def test_a_message_cut_short_does_not_swallow_the_next() -> None:
    stream = MALFORMED["truncated"] + b"Event: After\r\nA: 1\r\n\r\n"
    cut_short, after = iter_messages(stream, ())
    assert cut_short.truncated and cut_short.event == "QueueMemberStatus"
    assert after == Message((("Event", "After"), ("A", "1")))
    # A response cut short inside an event is found by its ActionID line.
    stream = b"Event: X\r\nQueue: q\r\nResponse: Success\r\nActionID: p-1\r\nPing: Pong\r\n\r\n"
    event, response = iter_messages(stream, ())
    assert event.truncated and response.action_id == "p-1" and not response.truncated


def test_garbage_and_invalid_utf8_are_reported_and_skipped() -> None:
    stream = (b"Asterisk Call Manager/12.0.0\r\n" + MALFORMED["garbage"] + MALFORMED["no_colon"]
              + MALFORMED["invalid_utf8"] + MALFORMED["blank_lines"] + b"Event: Fine\r\n\r\n")
    items = list(iter_messages(stream))
    assert isinstance(items[0], Banner)
    assert [type(i) for i in items[1:]] == [Garbage, Garbage, Message, Message]
    bad = items[3]
    assert bad.invalid_utf8 and bad["Data"] == "\ufffd\ufffd\ufffd"
    assert items[4] == Message((("Event", "Fine"),))


def test_an_over_long_message_is_dropped_and_reading_goes_on() -> None:
    huge = b"Event: Huge\r\nData: " + b"x" * 5000 + b"\r\n\r\n"
    stream = huge + b"Event: Small\r\n\r\n"
    for cuts in ([], list(range(100, len(stream), 700))):
        items = feed_in(AmiParser(expect_banner=False, max_message=1000), stream, cuts)
        assert [type(i) for i in items] == [Garbage, Message]
        assert items[1].event == "Small"


def test_end_of_stream_in_the_middle_of_a_message_is_garbage() -> None:
    parser = AmiParser()
    assert parser.feed(b"Asterisk Call Manager/12.0.0\r\nEvent: Half\r\nQueue: su") == [
        Banner("Asterisk Call Manager/12.0.0")]
    (rest,) = parser.close()
    assert isinstance(rest, Garbage) and rest.data.startswith(b"Event: Half")


def test_a_stream_without_banner_starts_with_a_message() -> None:
    assert list(iter_messages(b"Event: X\r\nA: b\r\n\r\n")) == [Message((("Event", "X"), ("A", "b")))]


AMI_TOKENS = [b"Event: X\r\n", b"Response: Success\r\n", b"ActionID: 1\r\n", b"\r\n", b"\r\n\r\n",
              b"Response: Follows\r\n", b"--END COMMAND--\r\n", b"\xd0", b"\x98", "Иван".encode(),
              b"Asterisk Call Manager/12.0.0\r\n", b": ", b"\n", b"\r", b"Output: x\r\n", b"EventList: start\r\n"]


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.one_of(st.sampled_from(AMI_TOKENS), st.binary(max_size=12)), max_size=60),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_fuzz_any_bytes_in_any_chunking_give_the_same_items(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = list(iter_messages(stream))
    assert feed_in(AmiParser(), stream, [c for c in cuts if 0 < c < len(stream)]) == whole
    for item in whole:
        assert isinstance(item, (Banner, Message, Garbage))
        if isinstance(item, Message):
            ActionTracker().feed(item)  # routing never raises either


KEY = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_()/@;"),
              min_size=1, max_size=12).filter(lambda k: k not in ("Event", "Response", "Output"))
VALUE = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=30)


@st.composite
def ami_messages(draw: st.DrawFn) -> Message:
    first = draw(st.sampled_from(["Event", "Response"]))
    first_value = draw(VALUE.filter(lambda v: v != "Follows"))
    rest = draw(st.lists(st.tuples(KEY, VALUE), max_size=8))
    return Message(((first, first_value), *rest))


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(ami_messages(), min_size=1, max_size=6), cuts=st.lists(st.integers(0, 3000), max_size=15))
def test_fuzz_messages_round_trip_through_any_chunking(batch: list[Message], cuts: list[int]) -> None:
    stream = b"Asterisk Call Manager/12.0.0\r\n" + b"".join(m.encode() for m in batch)
    items = feed_in(AmiParser(), stream, [c for c in cuts if 0 < c < len(stream)])
    assert items[0] == Banner("Asterisk Call Manager/12.0.0")
    assert [m.headers for m in messages(items)] == [m.headers for m in batch]
    assert not any(m.truncated for m in messages(items))


# --- actions -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AMI_RECORDINGS)
def test_encoder_reproduces_the_recorded_actions_byte_for_byte(name: str) -> None:
    for data in client_actions(name):
        (action,) = ActionParser().feed(data)
        fields = [(k, v) for k, v in action.headers if k not in ("ActionID",)]
        assert encode_action(fields, action.action_id) == data


def test_encoder_puts_action_and_actionid_first_and_expands_values() -> None:
    data = encode_action({"Channel": "Local/100@agents", "Action": "Originate", "Async": True,
                          "Variable": {"IVR_CALL_ID": "c-1", "NAME": "Пётр"}, "Codecs": ["ulaw", "alaw"],
                          "Skipped": None}, "orig-1")
    assert data == ("Action: Originate\r\nActionID: orig-1\r\nChannel: Local/100@agents\r\nAsync: true\r\n"
                    "Variable: IVR_CALL_ID=c-1\r\nVariable: NAME=Пётр\r\nCodecs: ulaw\r\nCodecs: alaw\r\n\r\n"
                    ).encode()


@pytest.mark.parametrize("bad", [
    {"Action": "Ping", "X": "a\r\nAction: Logoff"},
    {"Action": "Ping\n"},
    {"Action": "Ping", "Bad:Key": "1"},
    {"Action": "Ping", "": "1"},
    {"NoAction": "1"},
])
def test_encoder_refuses_header_injection_and_missing_action(bad: dict) -> None:
    with pytest.raises(ValueError):
        encode_action(bad, "x-1")


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(st.tuples(KEY.filter(lambda k: k.lower() not in ("action", "actionid")),
                                 VALUE.filter(lambda v: v == v.lstrip(" \t"))), max_size=8),
       cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_fuzz_actions_read_back_as_asterisk_reads_them(fields: list, cuts: list[int]) -> None:
    data = encode_action([("Action", "Test")] + fields, "t-1")
    parser = ActionParser()
    got: list[Message] = []
    start = 0
    for cut in sorted(c for c in cuts if 0 < c < len(data)):
        got += parser.feed(data[start:cut])
        start = cut
    got += parser.feed(data[start:])
    assert [m.headers for m in got] == [(("Action", "Test"), ("ActionID", "t-1"), *fields)]


def test_action_parser_reads_like_asterisks_manager() -> None:
    parser = ActionParser()
    items = parser.feed(b"Action:Ping\nActionID:   a-1\n\n\r\nno colon here\nAction: X\r\n"
                        + b"Long: " + b"y" * 2000 + b"\r\n\r\n")
    assert items[0].headers == (("Action", "Ping"), ("ActionID", "a-1"))
    assert items[1].headers == ()  # a lone blank line is an (empty) action
    assert items[2].headers == (("Action", "X"),) and "line too long" in items[2].junk


# --- pairing answers with actions -------------------------------------------------------------


def test_tracker_pairs_the_recorded_session() -> None:
    tracker = ActionTracker()
    for action_id in ("login-1", "corestatus-2", "queuestatus-3", "queuesummary-4", "ping-5", "logoff-6"):
        tracker.expect(action_id)
    done: dict[str, ActionResult] = {}
    events = []
    for message in messages(list(iter_messages(raw("ami-login-and-status.ami.raw")))):
        routed = tracker.feed(message)
        if isinstance(routed, Completed):
            done[routed.action_id] = routed.result
        elif isinstance(routed, Message):
            events.append(routed.event)
    assert set(done) == {"login-1", "corestatus-2", "queuestatus-3", "queuesummary-4", "ping-5", "logoff-6"}
    status = done["queuestatus-3"]
    assert status.ok and status.message == "Queue status will follow"
    assert [e.event for e in status.events] == ["QueueParams", "QueueMember", "QueueMember"] + [
        "QueueParams", "QueueMember"] * 3
    assert status.complete is not None and status.complete["ListItems"] == str(len(status.events))
    assert [e["Queue"] for e in done["queuesummary-4"].events_named("QueueSummary")] == [
        "ringtest", "support", "vip", "b2b"]
    assert done["ping-5"]["Ping"] == "Pong" and done["logoff-6"].ok
    assert events == ["FullyBooted", "SuccessfulAuth", "RequestNotAllowed", "InvalidPassword"]
    assert tracker.pending == frozenset()


def test_tracker_passes_events_that_reuse_a_finished_actionid() -> None:
    tracker = ActionTracker()
    tracker.expect("originate-2")
    items = messages(list(iter_messages(raw("ami-queue-answered.ami.raw"))))
    routed = [tracker.feed(m) for m in items]
    assert any(isinstance(r, Completed) and r.action_id == "originate-2" for r in routed)
    assert any(isinstance(r, Message) and r.event == "OriginateResponse" for r in routed)


def test_tracker_drops_what_arrives_for_an_abandoned_action() -> None:
    tracker = ActionTracker()
    tracker.expect("queuestatus-3")
    stream = messages(list(iter_messages(raw("ami-login-and-status.ami.raw"))))
    response_index = next(i for i, m in enumerate(stream) if m.action_id == "queuestatus-3")
    tracker.abandon("queuestatus-3")  # timed out before anything came
    routed = [tracker.feed(m) for m in stream[response_index:]]
    list_part = [r for r, m in zip(routed, stream[response_index:]) if m.action_id == "queuestatus-3"]
    assert list_part and all(isinstance(r, Dropped) for r in list_part)
    assert not any(isinstance(r, Message) and r.event in ("QueueParams", "QueueMember") for r in routed)
    with pytest.raises(ValueError):
        tracker.expect("x")
        tracker.expect("x")


@settings(max_examples=200, deadline=None)
@given(attempt=st.integers(0, 200), initial=st.floats(0.01, 5), maximum=st.floats(0.01, 120),
       jitter=st.floats(0, 1), seed=st.integers())
def test_backoff_is_capped_exponential_with_bounded_jitter(attempt, initial, maximum, jitter, seed) -> None:
    delay = backoff_delay(attempt, initial=initial, maximum=maximum, jitter=jitter, rng=random.Random(seed))
    base = min(maximum, initial * 2 ** min(attempt, 64))
    assert base * (1 - jitter) - 1e-9 <= delay <= base <= maximum


# --- the client over TCP against the simulator ------------------------------------------------------


class Events:
    """An event handler that records what it gets and lets a test wait for it."""

    def __init__(self) -> None:
        self.items: list[Message] = []
        self._changed = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.items.append(message)
        self._changed.set()

    def named(self, *names: str) -> list[Message]:
        return [m for m in self.items if m.event in names]

    async def until(self, predicate: Callable[[list[Message]], bool], limit: float = LIMIT) -> None:
        async with asyncio.timeout(limit):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def sim():
    simulator = AmiSimulator.like_traces(auth_delay=0.2)
    await simulator.start()
    yield simulator
    await simulator.close()


@pytest.fixture
async def make_client(sim: AmiSimulator):
    made: list[AmiClient] = []

    def make(secret: str = "ivrsecret", **options) -> AmiClient:
        settings_ = dict(ping_interval=0.2, ping_timeout=0.3, backoff_initial=0.05, backoff_max=0.2,
                         stable_after=0.5, action_timeout=2.0, login_timeout=2.0, handler_timeout=1.0)
        settings_.update(options)
        client = AmiClient("127.0.0.1", sim.port, "ivr", secret, **settings_)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_login_gives_a_connected_state_for_startup_lines(sim, make_client) -> None:
    client = make_client()
    seen = Events()
    client.on_event("FullyBooted", seen)
    before = time.time()
    await client.connect()
    state = client.state
    assert state.connected and state.version == "12.0.0" and state.connects == 1
    assert state.since is not None and state.since >= before and state.last_error is None
    assert state.describe().startswith(f"connected to 127.0.0.1:{sim.port} since ")
    await seen.until(lambda items: len(items) == 1)
    assert (await client.action({"Action": "Ping"})).get("Ping") == "Pong"
    assert await client.ping() < 1.0


async def test_wrong_secret_fails_with_authentication_failed(sim, make_client) -> None:
    client = make_client(secret="wrongsecret")
    started = time.monotonic()
    with pytest.raises(AmiAuthError, match="Authentication failed"):
        await client.connect()
    assert time.monotonic() - started >= sim.auth_delay  # Asterisk sleeps before answering
    state = client.state
    assert not state.connected and "Authentication failed" in (state.last_error or "")
    assert "Authentication failed" in state.describe()
    with pytest.raises(AmiNotConnected, match="Authentication failed"):
        await client.action({"Action": "Ping"})


async def test_action_times_out_and_its_late_answer_goes_nowhere(sim, make_client) -> None:
    client = make_client(ping_interval=0)
    everything = Events()
    client.on_event("*", everything)
    await client.connect()
    sim.action_delays["queuestatus"] = 0.5
    started = time.monotonic()
    with pytest.raises(AmiTimeout, match="QueueStatus"):
        await client.action({"Action": "QueueStatus"}, timeout=0.1)
    assert time.monotonic() - started < 0.45  # before the late answer (0.5 s)
    # The connection stays; the next answer is the Ping's, not the late QueueStatus.
    result = await client.action({"Action": "Ping"}, timeout=2)
    assert result["Ping"] == "Pong"
    await asyncio.sleep(0.05)
    assert not everything.named("QueueParams", "QueueMember", "QueueStatusComplete")
    assert client.connected and client.state.connects == 1


async def test_list_action_returns_the_response_and_its_events(sim, make_client) -> None:
    client = make_client()
    everything = Events()
    client.on_event("*", everything)
    await client.connect()
    sim.place_caller("support", "1795333729.23", "1795333729.22", '"Test Caller" <79161234567>',
                     {"IVR_CALL_ID": "call-0001"})
    await everything.until(lambda items: bool([m for m in items if m.event == "QueueCallerJoin"]))
    result = await client.action({"Action": "QueueStatus"}, timeout=5)
    assert result.ok and result.message == "Queue status will follow"
    assert result.complete is not None and int(result.complete["ListItems"]) == len(result.events) == 10
    (entry,) = result.events_named("QueueEntry")
    assert (entry["Queue"], entry["Uniqueid"], entry["CallerIDName"]) == ("support", "1795333729.23", "Test Caller")
    assert [m["Location"] for m in result.events_named("QueueMember") if m["Queue"] == "ringtest"] == [
        "Local/101@agents-noanswer", "Local/100@agents"]
    filtered = await client.action({"Action": "QueueStatus", "Queue": "vip"})
    assert [e.event for e in filtered.events] == ["QueueParams", "QueueMember"]
    assert not everything.named("QueueParams", "QueueMember", "QueueEntry", "QueueStatusComplete")


async def test_command_output_and_checked_errors(sim, make_client) -> None:
    client = make_client()
    await client.connect()
    version = await client.action({"Action": "Command", "Command": "core show version"})
    assert version.ok and version.output == ("Asterisk 23.4.1 (simulated manager)",)
    add = {"Action": "QueueAdd", "Queue": "support", "Interface": "Local/300@agents", "MemberName": "Agent Smith"}
    assert (await client.action(add, check=True)).message == "Added interface to queue"
    with pytest.raises(AmiActionError, match="Already there") as failure:
        await client.action(add, check=True)
    assert failure.value.result.response.response == "Error"


async def test_handlers_that_fail_never_drop_the_connection(sim, make_client, caplog) -> None:
    client = make_client(handler_timeout=0.2)
    delivered = Events()

    def sync_boom(message: Message) -> None:
        raise RuntimeError("sync handler bug")

    async def async_boom(message: Message) -> None:
        raise ValueError("async handler bug")

    async def too_slow(message: Message) -> None:
        await asyncio.sleep(5)

    client.on_event("QueueCallerJoin", sync_boom)
    client.on_event("QueueCallerJoin", async_boom)
    client.on_event("QueueCallerJoin", too_slow)
    client.on_event("QueueCallerJoin", delivered)
    client.on_event("QueueCallerAbandon", delivered)
    await client.connect()
    with caplog.at_level(logging.ERROR, logger="ivr.asterisk.ami"):
        caller = sim.place_caller("vip", callerid="79161234567")
        sim.caller_hangs_up(caller.uniqueid)
        await delivered.until(lambda items: len(items) == 2)
    assert [m.event for m in delivered.items] == ["QueueCallerJoin", "QueueCallerAbandon"]
    assert client.stats["handler_errors"] == 3
    assert client.connected and client.state.connects == 1 and sim.connections == 1
    assert "sync handler bug" in caplog.text and "async handler bug" in caplog.text
    assert "took longer than" in caplog.text
    assert (await client.action({"Action": "Ping"})).ok


async def test_events_reach_handlers_in_order_with_async_handlers(sim, make_client) -> None:
    client = make_client()
    order: list[str] = []

    async def slow_first(message: Message) -> None:
        await asyncio.sleep(0.01 if message.event == "QueueCallerJoin" else 0)
        order.append(message.event or "")

    client.on_event("*", slow_first)
    await client.connect()
    caller = sim.place_caller("support", callerid='"A" <1>')
    sim.agent_answers(caller.uniqueid, "Local/100@agents")
    sim.complete_call(caller.uniqueid)
    await eventually(lambda: "AgentComplete" in order)
    queue_events = [e for e in order if e.startswith(("Queue", "Agent"))]
    assert queue_events[:4] == ["QueueCallerJoin", "AgentCalled", "QueueCallerLeave", "AgentConnect"]
    assert queue_events.index("AgentComplete") > queue_events.index("AgentConnect")


async def test_reconnects_after_restart_and_calls_on_connected_again(sim, make_client, caplog) -> None:
    resyncs: list[list[str]] = []

    async def resync(client: AmiClient) -> None:
        result = await client.action({"Action": "QueueStatus", "Queue": "support"}, timeout=2)
        resyncs.append([m["Location"] for m in result.events_named("QueueMember")])

    client = make_client(on_connected=resync)
    shutdown = Events()
    client.on_event("Shutdown", shutdown)
    await client.connect()
    await eventually(lambda: len(resyncs) == 1)
    await client.action({"Action": "QueueAdd", "Queue": "support", "Interface": "PJSIP/201"}, check=True)
    await resync(client)
    assert resyncs == [["Local/100@agents"], ["Local/100@agents", "PJSIP/201"]]
    caplog.set_level(logging.WARNING, logger="ivr.asterisk.ami")
    restart = asyncio.create_task(sim.restart(down_for=0.4))
    await shutdown.until(lambda items: len(items) == 1)
    assert shutdown.items[0]["Restart"] == "True"
    await eventually(lambda: not client.connected)
    assert "shutting down" in (client.state.last_error or "")
    with pytest.raises(AmiNotConnected):
        await client.action({"Action": "Ping"})
    await restart
    await client.wait_connected(LIMIT)
    await eventually(lambda: len(resyncs) == 3)
    assert resyncs[2] == ["Local/100@agents"]  # on_connected ran again; the dynamic member is gone
    assert client.state.connects == 2
    assert "cannot connect" in caplog.text  # refused while Asterisk was down, retried with backoff
    assert (await client.action({"Action": "Ping"})).ok


async def test_half_open_asterisk_is_found_by_ping_and_reconnected(sim, make_client) -> None:
    connects: list[float] = []
    client = make_client(ping_interval=0.1, ping_timeout=0.2, on_connected=lambda c: connects.append(time.monotonic()))
    await client.connect()
    await eventually(lambda: len(connects) == 1)
    sim.go_silent()  # the socket stays open; nothing is answered any more
    silent_since = time.monotonic()
    await eventually(lambda: len(connects) == 2)
    assert connects[1] - silent_since < 1.5
    assert "Ping" in (client.state.last_error or "") and client.state.connects == 2
    assert (await client.action({"Action": "Ping"})).ok


@pytest.mark.parametrize("kind", [*MALFORMED, "all"])
async def test_malformed_input_is_skipped_without_losing_the_events_after_it(sim, make_client, kind) -> None:
    client = make_client()
    seen = Events()
    client.on_event("*", seen)
    await client.connect()
    sim.emit("UserEvent", {"UserEvent": "before"})
    sim.send_malformed(kind)
    sim.emit("UserEvent", {"UserEvent": "after", "Name": "Пётр"})
    await seen.until(lambda items: any(m.get("UserEvent") == "after" for m in items))
    user = [m["UserEvent"] for m in seen.named("UserEvent")]
    assert user[0] == "before" and user[-1] == "after"
    assert set(user) <= {"before", "malformed", "after"}
    assert seen.named("UserEvent")[-1]["Name"] == "Пётр"
    assert not seen.named("QueueMemberStatus")  # the truncated one never reaches a handler
    assert client.connected and client.state.connects == 1
    if kind in ("garbage", "no_colon", "truncated", "all"):
        assert client.stats["malformed"] >= 1
    assert (await client.action({"Action": "Ping"})).ok


async def test_cyrillic_names_survive_tcp_segments_cut_inside_characters(monkeypatch) -> None:
    received: list[bytes] = []
    original_feed = AmiParser.feed

    def recording_feed(self: AmiParser, data: bytes) -> list:
        received.append(data)
        return original_feed(self, data)

    monkeypatch.setattr(AmiParser, "feed", recording_feed)
    async with AmiSimulator.like_traces(split_utf8_writes=True) as simulator:
        client = AmiClient("127.0.0.1", simulator.port, "ivr", "ivrsecret", ping_interval=0)
        seen = Events()
        client.on_event("*", seen)
        async with client:
            add = await client.action({"Action": "QueueAdd", "Queue": "support", "Interface": "PJSIP/301",
                                       "MemberName": "Иванова Мария"}, check=True)
            assert add.ok
            caller = simulator.place_caller("support", callerid='"Иванов Пётр" <79161234567>',
                                            variables={"IVR_CALL_ID": "звонок-1"})
            simulator.agent_answers(caller.uniqueid, "PJSIP/301")
            await seen.until(lambda items: bool([m for m in items if m.event == "AgentConnect"]))
            status = await client.action({"Action": "QueueStatus", "Queue": "support"})
    join = seen.named("QueueCallerJoin")[0]
    assert join["CallerIDName"] == "Иванов Пётр" and join["CallerIDNum"] == "79161234567"
    assert AmiEvent.from_headers(join.headers).variables["IVR_CALL_ID"] == "звонок-1"
    connect = seen.named("AgentConnect")[0]
    assert connect["MemberName"] == "Иванова Мария" and connect["DestCallerIDName"] == "Иванов Пётр"
    assert seen.named("QueueMemberAdded")[0]["MemberName"] == "Иванова Мария"
    assert [m["Name"] for m in status.events_named("QueueMember")] == ["Local/100@agents", "Иванова Мария"]
    cut_inside = [chunk for chunk in received if not _is_utf8(chunk)]
    assert cut_inside, "no TCP read ended inside a UTF-8 character: the test did not test the split"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def test_start_while_asterisk_is_down_retries_until_it_comes_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AmiClient("127.0.0.1", port, "ivr", "ivrsecret", backoff_initial=0.02, backoff_max=0.1,
                       ping_interval=0)
    client.start()
    try:
        await eventually(lambda: client.state.attempts >= 3)
        state = client.state
        assert not state.connected and "connect failed" in (state.last_error or "")
        assert state.describe().startswith(f"not connected to 127.0.0.1:{port} since ")
        async with AmiSimulator(port=port):
            await client.wait_connected(LIMIT)
            assert client.state.connects == 1 and client.state.attempts == 0
    finally:
        await client.close()


async def test_close_logs_off_and_stops_reconnecting(sim, make_client) -> None:
    client = make_client()
    await client.connect()
    await eventually(lambda: sim.sessions == 1)
    await client.close()
    assert not client.connected
    await eventually(lambda: sim.sessions == 0)
    await asyncio.sleep(0.3)
    assert sim.connections == 1
    with pytest.raises(AmiNotConnected):
        await client.action({"Action": "Ping"})


async def test_events_off_gets_answers_but_no_events(sim, make_client) -> None:
    client = make_client(events=False)
    seen = Events()
    client.on_event("*", seen)
    await client.connect()
    sim.place_caller("support")
    result = await client.action({"Action": "QueueSummary", "Queue": "support"})
    assert result.events_named("QueueSummary")[0]["Callers"] == "1"
    await asyncio.sleep(0.05)
    assert seen.items == []


def test_codec_needs_no_event_loop() -> None:
    """Parser, encoder and tracker are plain objects: bytes in, messages out (sans-IO)."""
    parser = AmiParser()
    tracker = ActionTracker()
    tracker.expect("p-1")
    assert parser.feed(encode_action({"Action": "Ping"}, "p-1")[:0] + b"Asterisk Call Manager/12.0.0\r\n")
    (response,) = parser.feed(b"Response: Success\r\nActionID: p-1\r\nPing: Pong\r\n\r\n")
    assert isinstance(tracker.feed(response), Completed)
