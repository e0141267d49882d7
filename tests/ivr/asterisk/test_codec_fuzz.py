"""Property-based fuzzing of the three wire codecs: FastAGI, AMI and AudioSocket.

For any bytes, in any chunking, each parser raises nothing but its own
protocol error, holds no more than its bounds, and gives the same result
however the bytes were split.  Where the protocol lets a reader find its
footing again (AMI: a blank line ends whatever came before), valid messages
after garbage still come out whole; FastAGI and AudioSocket have no such
point (a length-prefixed or line-numbered stream cannot be re-aligned), so
there the frames before the bad bytes must be the ones delivered and the
parser refuses everything after.  Runs are bounded (`max_examples`).
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.asterisk.agi import MAX_ENV_BYTES, MAX_LINE, MAX_USAGE_BYTES, AgiParser, AgiProtocolError, Environment, Hangup, Reply
from ivr.sim.fastagi_caller import encode_environment
from ivr.asterisk.ami import AmiParser, Banner, Garbage, Message
from ivr.asterisk.audiosocket import (
    HEADER_BYTES,
    AudioFrame,
    DtmfFrame,
    ErrorFrame,
    FrameParser,
    HangupFrame,
    Kind,
    ProtocolError,
    UuidFrame,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# --- FastAGI -------------------------------------------------------------------------------

ENV = encode_environment({"agi_network": "yes", "agi_network_script": "inbound", "agi_uniqueid": "1795333729.1",
                          "agi_callerid": "79161234567", "agi_arg_1": "general"})

AGI_TOKENS = st.sampled_from([
    b"agi_x: y\n", b"agi_arg_1: " + b"v" * 6000 + b"\n", b"\n", b"\r\n", b"200 result=1\n", b"200 result=1 (x)\n",
    b"510 Invalid or unknown command\n", b"511 Command Not Permitted\n", b"520-Invalid command syntax.\n",
    b"Usage " + b"u" * 3000 + b"\n", b"520 End of proper usage.\n", b"HANGUP\n", b"x" * (MAX_LINE + 1), b"\xd0",
])
AGI_NOISE = st.lists(st.one_of(AGI_TOKENS, st.binary(max_size=16)), max_size=60)
AGI_BOUND = MAX_LINE + max(MAX_ENV_BYTES, MAX_USAGE_BYTES)


def agi_events(chunks: list[bytes]) -> tuple[list[object], bool]:
    """Events until the first protocol error, and whether there was one; checks the bounds as it goes."""
    parser = AgiParser()
    events: list[object] = []
    for chunk in chunks:
        try:
            events += parser.feed(chunk)
        except AgiProtocolError:
            assert parser.buffered == 0
            try:
                parser.feed(b"200 result=1\n")
            except AgiProtocolError:
                return events, True
            raise AssertionError("a failed parser took more bytes") from None
        assert parser.buffered <= AGI_BOUND
    return events, False


@FUZZ
@given(parts=AGI_NOISE, cuts=st.lists(st.integers(0, 400_000), max_size=20), env_first=st.booleans())
def test_agi_parser_takes_any_bytes_with_only_its_protocol_error_and_bounded_memory(parts, cuts, env_first):
    stream = (ENV if env_first else b"") + b"".join(parts)
    events, _ = agi_events(split(stream, cuts))
    for event in events:
        assert isinstance(event, (Environment, Reply, Hangup))


REPLIES = st.one_of(
    st.tuples(st.just(b"200 result=1 (v)\n"), st.just(Reply(200, "1", "v", text="200 result=1 (v)"))),
    st.tuples(st.just(b"510 Invalid or unknown command\n"), st.just(Reply(510, text="Invalid or unknown command"))),
    st.tuples(st.just(b"HANGUP\n"), st.just(Hangup())),
    st.lists(st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40)
             .filter(lambda t: not t.startswith("520 ")), max_size=30).map(lambda lines: (
                 ("520-Invalid command syntax.  Proper usage follows:\n" + "".join(f"{x}\n" for x in lines)
                  + "520 End of proper usage.\n").encode(),
                 Reply(520, text="\n".join(["Invalid command syntax.  Proper usage follows:", *lines])))),
)


@FUZZ
@given(replies=st.lists(REPLIES, max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=30))
def test_agi_replies_come_out_the_same_whatever_the_chunking(replies, cuts):
    stream = ENV + b"".join(data for data, _ in replies)
    events, failed = agi_events(split(stream, cuts))
    assert not failed
    assert events[0] == Environment(values=dict(AgiParser().feed(ENV)[0].values))
    assert events[1:] == [event for _, event in replies]


NAMES = st.text(st.characters(whitelist_categories=("Ll", "Nd"), whitelist_characters="_"), min_size=1, max_size=12)
VALUES = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=60)


@FUZZ
@given(values=st.dictionaries(NAMES.map(lambda n: f"agi_{n}"), VALUES, min_size=1, max_size=20),
       cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_agi_environment_values_come_through_as_asterisk_wrote_them(values, cuts):
    events, failed = agi_events(split(encode_environment(values), cuts))
    assert not failed
    (env,) = events
    assert env.values == {k: v.rstrip("\r") for k, v in values.items()}
    if env.uniqueid is not None:
        assert len(env.uniqueid) <= 64


# --- AMI -----------------------------------------------------------------------------------

AMI_TOKENS = st.sampled_from([
    b"Event: X\r\n", b"Response: Success\r\n", b"Response: Follows\r\n", b"Privilege: Command\r\n",
    b"ActionID: cmd-1\r\n", b"ActionID: nobody-2\r\n", b"--END COMMAND--\r\n", b"\r\n", b"\r\n\r\n", b": ", b"\r",
    b"\n", b"\xd0", b"\x98", "Пётр".encode(), b"Asterisk Call Manager/12.0.0\r\n", b"Output: x\r\n",
    b"Data: " + b"z" * 1500,
])
AMI_NOISE = st.lists(st.one_of(AMI_TOKENS, st.binary(max_size=16)), max_size=60)
MAX = 4096  # a small message limit, so the fuzzer reaches it


def ami_items(chunks: list[bytes], *, expect_command: bool) -> list[object]:
    parser = AmiParser(max_message=MAX)
    if expect_command:
        parser.expect_command_output("cmd-1")
    items: list[object] = []
    for chunk in chunks:
        items += parser.feed(chunk)
        assert parser.buffered <= MAX
    return items + parser.close()


@FUZZ
@given(parts=AMI_NOISE, cuts=st.lists(st.integers(0, 100_000), max_size=20), expect_command=st.booleans())
def test_ami_parser_takes_any_bytes_in_any_chunking_with_bounded_memory(parts, cuts, expect_command):
    stream = b"".join(parts)
    whole = ami_items([stream], expect_command=expect_command)
    assert ami_items(split(stream, cuts), expect_command=expect_command) == whole
    assert all(isinstance(item, (Banner, Message, Garbage)) for item in whole)


KEYS = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_"),
               min_size=1, max_size=10).filter(lambda k: k.lower() not in ("event", "response", "actionid"))
EVENTS = st.builds(lambda name, rest: Message((("Event", name), *rest)), KEYS,
                   st.lists(st.tuples(KEYS, VALUES), max_size=6))


@FUZZ
@given(garbage=AMI_NOISE, events=st.lists(EVENTS, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 50_000),
                                                                                           max_size=20))
def test_ami_valid_events_after_garbage_and_a_blank_line_come_out_whole(garbage, events, cuts):
    stream = b"Asterisk Call Manager/12.0.0\r\n" + b"".join(garbage) + b"\r\n\r\n" + b"".join(e.encode() for e in events)
    items = ami_items(split(stream, cuts), expect_command=False)
    tail = [item for item in items if isinstance(item, Message)][-len(events):]
    assert [m.headers for m in tail] == [e.headers for e in events]
    assert not any(m.truncated for m in tail)


@FUZZ
@given(action_id=st.text(st.characters(whitelist_categories=("Ll", "Nd"), whitelist_characters="-"), min_size=1,
                         max_size=12),
       events=st.lists(EVENTS, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_ami_a_follows_block_for_no_command_of_ours_never_hides_the_events_after_it(action_id, events, cuts):
    stray = f"Response: Follows\r\nPrivilege: Command\r\nActionID: {action_id}\r\n\r\n".encode()
    stream = stray + b"".join(e.encode() for e in events)
    items = ami_items(split(stream, cuts), expect_command=action_id != "cmd-1")
    assert [m.headers for m in items[1:]] == [e.headers for e in events]


# --- AudioSocket ---------------------------------------------------------------------------

CALL = uuid.UUID("a6a1a6a2-0b8c-4a59-9f0e-2a1c9a7e3b11")
AS_TOKENS = st.sampled_from([
    bytes([Kind.UUID, 0, 16]) + CALL.bytes, bytes([Kind.AUDIO, 1, 64]) + bytes(320), bytes([Kind.DTMF, 0, 1]) + b"5",
    bytes([Kind.HANGUP, 0, 0]), bytes([Kind.ERROR, 0, 1, 7]), bytes([Kind.AUDIO, 0xFF, 0xFF]), bytes([0x42, 0, 0]),
    bytes([Kind.AUDIO, 0x3E, 0x80]) + bytes(16000),
])
AS_NOISE = st.lists(st.one_of(AS_TOKENS, st.binary(max_size=8)), max_size=40)


def audiosocket_frames(chunks: list[bytes], *, from_server: bool) -> tuple[list[object], bool]:
    parser = FrameParser(from_server=from_server)
    frames: list[object] = []
    for chunk in chunks:
        try:
            frames += parser.feed(chunk)
        except ProtocolError as exc:
            frames += exc.frames
            try:
                parser.feed(bytes([Kind.HANGUP, 0, 0]))
            except ProtocolError:
                return frames, True
            raise AssertionError("a failed parser took more bytes") from None
        assert parser.buffered <= HEADER_BYTES + (0xFFFF if from_server else parser.max_audio)
    return frames, False


@FUZZ
@given(parts=AS_NOISE, cuts=st.lists(st.integers(0, 40_000), max_size=20), from_server=st.booleans())
def test_audiosocket_parser_takes_any_bytes_with_only_its_protocol_error_and_bounded_memory(parts, cuts, from_server):
    stream = b"".join(parts)
    whole, whole_failed = audiosocket_frames([stream], from_server=from_server)
    chunked, chunked_failed = audiosocket_frames(split(stream, cuts), from_server=from_server)
    assert chunked == whole and chunked_failed == whole_failed  # the frames before a bad one are never lost
    assert all(isinstance(f, (UuidFrame, AudioFrame, DtmfFrame, HangupFrame, ErrorFrame)) for f in whole)


FRAMES = st.lists(st.one_of(
    st.binary(min_size=1, max_size=400).map(lambda b: (bytes([Kind.AUDIO]) + (len(b) * 2).to_bytes(2, "big") + b * 2,
                                                       AudioFrame(b * 2))),
    st.sampled_from("0123456789*#ABCD").map(lambda d: (bytes([Kind.DTMF, 0, 1]) + d.encode(), DtmfFrame(d))),
    st.binary(max_size=8).map(lambda c: (bytes([Kind.ERROR]) + len(c).to_bytes(2, "big") + c, ErrorFrame(c))),
), max_size=20)


@FUZZ
@given(frames=FRAMES, cuts=st.lists(st.integers(0, 20_000), max_size=30))
def test_audiosocket_frames_come_out_the_same_whatever_the_chunking(frames, cuts):
    stream = bytes([Kind.UUID, 0, 16]) + CALL.bytes + b"".join(data for data, _ in frames) + bytes([Kind.HANGUP, 0, 0])
    got, failed = audiosocket_frames(split(stream, cuts), from_server=False)
    assert not failed
    assert got == [UuidFrame(CALL), *(frame for _, frame in frames), HangupFrame()]
