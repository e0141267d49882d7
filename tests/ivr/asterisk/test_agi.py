"""The FastAGI codec (ivr.asterisk.agi) against the bytes a real Asterisk 23 wrote.

Every recorded session is replayed through `AgiParser` with Asterisk's own
TCP chunking, then byte by byte and in random splits; the events must be
what the server side of the recording saw.  The command encoder is checked
against a line-by-line port of res_agi's argument splitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ivr.asterisk.agi import MAX_ENV_LINES, MAX_LINE, AgiParser, AgiProtocolError, Command, Environment, Hangup, Reply, encode_command, exec_app, get_data, get_variable, quote, set_variable, stream_file, verbose
from ivr.sim.fastagi_caller import encode_environment, split_command
from tests.ivr import traces

SESSIONS = traces.agi_sessions()
SESSION_IDS = [s.id for s in SESSIONS]

DEAD = "Command Not Permitted on a dead channel or intercept routine"
UNKNOWN = "Invalid or unknown command"
SOUND = "/var/lib/asterisk/sounds/custom/utterance-en"


# --- what the server side of each recording saw --------------------------------


@dataclass(frozen=True)
class Ok:
    """A ``200`` reply."""

    result: str
    data: str | None = None
    endpos: int | None = None

    def matches(self, event: object) -> bool:
        return isinstance(event, Reply) and (event.code, event.result, event.data, event.endpos) == (
            200, self.result, self.data, self.endpos)


@dataclass(frozen=True)
class Refused:
    """A single-line ``510`` / ``511`` reply."""

    code: int
    text: str

    def matches(self, event: object) -> bool:
        return isinstance(event, Reply) and event.code == self.code and event.text == self.text


@dataclass(frozen=True)
class Usage:
    """A multi-line ``520`` block: one reply carrying the usage text."""

    usage: str

    def matches(self, event: object) -> bool:
        if not isinstance(event, Reply) or event.code != 520:
            return False
        text = event.text
        return (text == self.usage or text.endswith("\n" + self.usage)) and "End of proper usage" not in text


class HangupLine:
    def matches(self, event: object) -> bool:
        return isinstance(event, Hangup)

    def __repr__(self) -> str:
        return "HANGUP"


HANGUP = HangupLine()

SET_VARIABLE_USAGE = "Sets a variable to the current channel."
STREAM_FILE_USAGE = (
    "Send the given file, allowing playback to be interrupted by the given digits, if any. Returns "
    "<literal>0</literal> if playback completes without a digit being pressed, or the ASCII numerical value "
    "of the digit if one was pressed, or <literal>-1</literal> on error or if the channel was disconnected. "
    "If musiconhold is playing before calling stream file it will be automatically stopped and will not be "
    "restarted after completion.\n"
    "It sets the following channel variables upon completion:\n"
    "<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n"
    "    <value>SUCCESS</value>\n"
    "    <value>FAILED</value>"
)
WAIT_FOR_DIGIT_USAGE = (
    "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF digit. Returns "
    "<literal>-1</literal> on channel failure, <literal>0</literal> if no digit is received in the timeout, "
    "or the numerical value of the ascii of the digit if one is received. Use <literal>-1</literal> for the "
    "<replaceable>timeout</replaceable> value if you desire the call to block indefinitely."
)
GET_DATA_USAGE = (
    "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\n"
    "Returns the digits received from the channel at the other end."
)

# The events after the environment block, in order, as the recording shows them.
EXPECTED_EVENTS: dict[str, list] = {
    "agi-basic#1": [
        Ok("0"),  # ANSWER
        Ok("1"),  # VERBOSE
        Ok("1"),  # SET VARIABLE GREETING "hello world"
        Ok("1", "hello world"),  # GET VARIABLE GREETING
        Usage(SET_VARIABLE_USAGE),  # SET VARIABLE GREETING2 hello world
        Ok("0"),  # GET VARIABLE GREETING2
        Ok("0"),  # GET VARIABLE NO_SUCH_VARIABLE
        Ok("1", "79161234567"),  # GET VARIABLE CALLERID(num)
        Ok("1", "79161234567"),  # GET FULL VARIABLE ${CALLERID(num)}
        Ok("1", "Test Caller calls 100"),
        Ok("1", ""),  # GET FULL VARIABLE ${NO_SUCH_VARIABLE}
        Ok("6"),  # CHANNEL STATUS
        Ok("0"),  # EXEC Noop "agi-basic test"
        Ok("0"),  # EXEC Noop
        Ok("0"),  # NOOP
        HANGUP,  # after the server's FIN
    ],
    "agi-errors#1": [
        Refused(510, UNKNOWN),  # FOOBAR baz
        Usage(STREAM_FILE_USAGE),
        Usage(SET_VARIABLE_USAGE),
        Usage(WAIT_FOR_DIGIT_USAGE),
        Usage(GET_DATA_USAGE),
        Ok("0"),  # answer
        Ok("1", "Local/101@from-test-00000001;2"),  # get variable CHANNEL
        Refused(510, UNKNOWN),  # empty line
        Ok("1"),  # VERBOSE ... \r\n
        Ok("1", "Local/101@from-test-00000001;2"),
        Ok("0"),  # NOOP
        HANGUP,
    ],
    "agi-hangup-mid-command#1": [
        Ok("1"),  # SET VARIABLE IVR_STEP menu1
        Ok("-1", endpos=12160),  # STREAM FILE, the caller hangs up
        HANGUP,
        Refused(511, DEAD),  # STREAM FILE
        Refused(511, DEAD),  # WAIT FOR DIGIT
        Refused(511, DEAD),  # ANSWER
        Refused(511, DEAD),  # CHANNEL STATUS
        Ok("1", "menu1"),  # GET VARIABLE IVR_STEP
        Ok("1"),  # SET VARIABLE IVR_RESULT caller-gone
        Ok("1", "caller-gone"),
        Ok("1", "79161234567"),  # GET FULL VARIABLE
        Ok("1"),  # VERBOSE
        Ok("0"),  # EXEC NoOp after-hangup
        Ok("0"),  # NOOP
        Refused(511, DEAD),  # HANGUP (the command)
        HANGUP,  # again, after the server's FIN
    ],
    "agi-dtmf#1": [
        Ok("53"),  # WAIT FOR DIGIT: '5'
        Ok("0"),  # WAIT FOR DIGIT: timeout
        Ok("12"),  # GET DATA ended by '#'
        Ok("78", "timeout"),  # GET DATA: two digits, then timeout
        Ok("1234"),  # GET DATA: max digits
        Ok("", "timeout"),  # GET DATA: no input
        Ok("53", endpos=10720),  # STREAM FILE interrupted by '5'
        Ok("57", endpos=7520),  # GET OPTION interrupted by '9'
        HANGUP,
    ],
    "agi-cyrillic-callerid#1": [
        Ok("1", '"Иванов Пётр" <89161234567>'), Ok("1", "Иванов Пётр"), Ok("1", "89161234567"), Ok("1"), HANGUP,
    ],
    "agi-cyrillic-callerid#2": [Ok("1", '"" <>'), Ok("1", ""), Ok("1", ""), Ok("1"), HANGUP],
    "agi-cyrillic-callerid#3": [Ok("1", '"anonymous" <>'), Ok("1", "anonymous"), Ok("1", ""), Ok("1"), HANGUP],
    "agi-cyrillic-callerid#4": [
        Ok("1", '"Anonymous" <anonymous>'), Ok("1", "Anonymous"), Ok("1", "anonymous"), Ok("1"), HANGUP,
    ],
    "agi-args#1": [Ok("0"), HANGUP],
    "agi-args#2": [Ok("0"), HANGUP],
    "agi-args#3": [Ok("0"), HANGUP],
    "ami-queue-abandoned.agi#1": [Ok("1"), Ok("1"), Ok("1"), HANGUP],
    "ami-queue-answered.agi#1": [Ok("1"), Ok("1"), Ok("1"), HANGUP],
    "ami-queue-ringnoanswer.agi#1": [Ok("1"), Ok("1"), Ok("1"), HANGUP],
}

# Environment.get(name) for each session (None: Asterisk sent `unknown` or nothing).
EXPECTED_ENV: dict[str, dict[str, str | None]] = {
    "agi-basic#1": {"callerid": "79161234567", "calleridname": "Test Caller", "extension": "100",
                    "channel": "Local/100@from-test-00000000;2", "uniqueid": "1795333658.1"},
    "agi-cyrillic-callerid#1": {"callerid": "89161234567", "calleridname": "Иванов Пётр", "callingpres": "0"},
    "agi-cyrillic-callerid#2": {"callerid": None, "calleridname": None, "callingpres": "67"},
    "agi-cyrillic-callerid#3": {"callerid": None, "calleridname": "anonymous", "callingpres": "0"},
    "agi-cyrillic-callerid#4": {"callerid": "anonymous", "calleridname": "Anonymous"},
    "agi-args#1": {"arg_1": "arg1", "arg_2": "arg two", "arg_3": None, "extension": "1001"},
    "agi-args#3": {"arg_1": None, "arg_2": "quoted, comma", "arg_3": "Привет"},
}


def _events(chunks: list[bytes]) -> list:
    parser = AgiParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def _check_events(session: traces.Session, events: list) -> None:
    assert events, f"{session.id}: no events"
    assert isinstance(events[0], Environment), f"{session.id}: the first event is {events[0]!r}"
    assert not any(isinstance(e, Environment) for e in events[1:])
    expected = EXPECTED_EVENTS[session.id]
    rest = events[1:]
    assert len(rest) == len(expected), f"{session.id}: {rest!r}"
    for n, (event, want) in enumerate(zip(rest, expected)):
        assert want.matches(event), f"{session.id} event {n}: expected {want!r}, got {event!r}"


def _interesting_split(data: bytes) -> int:
    """An offset inside the first multi-byte UTF-8 character of `data`."""
    for n, byte in enumerate(data):
        if byte >= 0xC0:
            return n + 1
    raise AssertionError("no multi-byte character")


# --- replaying the recordings ---------------------------------------------------


def test_every_recorded_session_has_expectations():
    assert sorted(EXPECTED_EVENTS) == sorted(SESSION_IDS)


@pytest.mark.parametrize("session", SESSIONS, ids=SESSION_IDS)
def test_recorded_asterisk_bytes_give_the_events_the_server_saw(session):
    _check_events(session, _events(session.asterisk_chunks))


@pytest.mark.parametrize("session", SESSIONS, ids=SESSION_IDS)
def test_parser_has_each_reply_before_the_server_sent_its_next_command(session):
    """Walk the recording in time order: a command is only sent once every earlier one has its reply."""
    parser = AgiParser()
    sent = replies = environments = hangups = 0
    for chunk in session.chunks:
        if chunk.from_server and chunk.data:
            assert environments == 1, "the server spoke before the environment block was complete"
            assert replies == sent, f"{session.id}: {sent} commands sent but {replies} replies parsed"
            sent += len(chunk.data.decode().splitlines())
        elif chunk.from_asterisk and chunk.data:
            for event in parser.feed(chunk.data):
                replies += isinstance(event, Reply)
                environments += isinstance(event, Environment)
                hangups += isinstance(event, Hangup)
    assert replies == sent == len(session.commands)
    assert hangups == session.asterisk_bytes.count(b"HANGUP\n")


@pytest.mark.parametrize("session", SESSIONS, ids=SESSION_IDS)
def test_one_byte_at_a_time_gives_the_same_events(session):
    data = session.asterisk_bytes
    assert _events([data[n:n + 1] for n in range(len(data))]) == _events(session.asterisk_chunks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=st.sampled_from(SESSIONS), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30))
def test_random_splits_give_the_same_events(session, cuts):
    data = session.asterisk_bytes
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in zip(points, points[1:])]
    events = _events(pieces)
    _check_events(session, events)
    assert events == _events(session.asterisk_chunks)


def test_environment_block_split_in_two_segments_is_one_environment():
    session = traces.session("agi-basic")
    env_chunks, _, _ = session.steps()
    assert len(env_chunks) == 2  # as Asterisk sent it
    parser = AgiParser()
    assert parser.feed(env_chunks[0]) == []
    assert not parser.has_environment
    [env] = parser.feed(env_chunks[1])
    assert parser.has_environment
    assert env.values["agi_network"] == "yes"
    assert env.values["agi_threadid"] == "140658115872448"


@pytest.mark.parametrize("session", SESSIONS, ids=SESSION_IDS)
def test_environment_values_come_through(session):
    env = _events(session.asterisk_chunks)[0]
    assert env.get("network") == "yes"
    assert env.get("version") == "23.4.1"
    assert env.get("dnid") is None and env.get("rdnis") is None  # `unknown`
    assert env.values["agi_accountcode"] == "" and env.get("accountcode") is None
    assert env.uniqueid and env.channel and env.channel.startswith("Local/")
    for name, value in EXPECTED_ENV.get(session.id, {}).items():
        assert env.get(name) == value, name
    assert env.callerid == env.get("callerid")
    assert env.calleridname == env.get("calleridname")


def test_cyrillic_caller_name_and_unknown_caller_id():
    envs = [_events(s.asterisk_chunks)[0] for s in traces.sessions("agi-cyrillic-callerid")]
    assert [(e.callerid, e.calleridname) for e in envs] == [
        ("89161234567", "Иванов Пётр"),
        (None, None),
        (None, "anonymous"),
        ("anonymous", "Anonymous"),
    ]
    assert envs[1].values["agi_callerid"] == "unknown"


def test_script_name_arguments_and_query_from_the_agi_url():
    first, second, third = (_events(s.asterisk_chunks)[0] for s in traces.sessions("agi-args"))
    assert (first.script, first.request, first.args, first.query) == ("inbound", "inbound", ["arg1", "arg two"], {})
    assert (second.script, second.request, second.args) == ("inbound", "inbound?x=1", [])
    assert second.query == {"x": ["1"]}
    assert third.script == "inbound"
    assert third.request == "inbound/sub?x=1&y=два"
    assert third.query == {"x": ["1"], "y": ["два"]}
    assert third.args == ["", "quoted, comma", "Привет"]


def test_multiline_520_in_two_segments_is_one_reply_with_the_usage_text():
    session = traces.session("agi-basic")
    env, steps, _ = session.steps()
    command, chunks = next((c, ch) for c, ch in steps if c.startswith("SET VARIABLE GREETING2"))
    assert len(chunks) == 2 and chunks[0].startswith(b"520-")  # two TCP segments, as recorded
    parser = AgiParser()
    for chunk in env:
        parser.feed(chunk)
    assert parser.feed(chunks[0]) == []  # nothing yet: the block is not finished
    [reply] = parser.feed(chunks[1])
    assert Usage(SET_VARIABLE_USAGE).matches(reply)
    assert not reply.is_success and reply.result is None
    # the next reply is the next command's, not a left-over of the block
    assert parser.feed(b"200 result=0\n") == [Reply(200, result="0", text="200 result=0")]


def test_hangup_line_between_replies_is_its_own_event():
    parser = AgiParser()
    parser.feed(encode_environment({"agi_network_script": "ivr"}))
    events = parser.feed(b"200 result=-1 endpos=12160\nHANGUP\n511 " + DEAD.encode() + b"\n")
    assert [type(e) for e in events] == [Reply, Hangup, Reply]
    assert events[0].endpos == 12160 and events[0].result_int == -1
    assert events[2].code == 511


def test_utf8_character_split_across_reads_survives():
    session = traces.session("agi-cyrillic-callerid", 1)
    data = session.asterisk_bytes
    cut = _interesting_split(data)  # inside the "И" of "Иванов"
    with pytest.raises(UnicodeDecodeError):
        data[:cut].decode("utf-8")
    events = _events([data[:cut], data[cut:]])
    assert events[0].calleridname == "Иванов Пётр"
    reply = "200 result=1 (Иванов Пётр)\n".encode()
    cut = _interesting_split(reply)
    parser = AgiParser()
    parser.feed(encode_environment({"agi_network_script": "ivr"}))
    assert parser.feed(reply[:cut]) == []
    [event] = parser.feed(reply[cut:])
    assert event.data == "Иванов Пётр"


def test_crlf_line_endings_are_accepted():
    parser = AgiParser()
    [env] = parser.feed(b"agi_network: yes\r\nagi_network_script: ivr\r\n\r\n")
    assert env.script == "ivr"
    assert parser.feed(b"200 result=1 (x)\r\nHANGUP\r\n") == [Reply(200, "1", "x", text="200 result=1 (x)"), Hangup()]


@pytest.mark.parametrize(
    "line, code, result, data, endpos",
    [
        ("200 result=0", 200, "0", None, None),
        ("200 result= (timeout)", 200, "", "timeout", None),
        ("200 result=78 (timeout)", 200, "78", "timeout", None),
        ('200 result=1 ("Иванов Пётр" <89161234567>)', 200, "1", '"Иванов Пётр" <89161234567>', None),
        ("200 result=1 ()", 200, "1", "", None),
        ("200 result=-1 endpos=12160", 200, "-1", None, 12160),
        ("200 result=0 (timeout) endpos=8000", 200, "0", "timeout", 8000),
        ("510 Invalid or unknown command", 510, None, None, None),
        ("511 " + DEAD, 511, None, None, None),
        ("520 Invalid command syntax.  Proper usage not available.", 520, None, None, None),
    ],
)
def test_single_reply_lines(line, code, result, data, endpos):
    parser = AgiParser()
    parser.feed(b"agi_network: yes\n\n")
    [reply] = parser.feed(line.encode() + b"\n")
    assert (reply.code, reply.result, reply.data, reply.endpos) == (code, result, data, endpos)


# --- hostile input -------------------------------------------------------------

ENV = encode_environment({"agi_network": "yes", "agi_network_script": "ivr", "agi_callerid": "79161234567"})

FRAGMENTS = st.sampled_from([
    b"200", b"510", b"511", b"520", b"520-", b"200 result=", b" ", b"-", b"1", b"(", b")", b"endpos=",
    b"HANGUP", b"\n", b"\r", b"\r\n", b"agi_", b":", b"\x00", b"\xff", b"\xd0", b"\xd0\x98",
    "²".encode(), "①".encode(), "٣".encode(), "\u2028".encode(),
])
REPLY_LIKE = st.builds(
    lambda code, tail, end: (code + tail + end).encode(),
    st.text(alphabet="0125-²①٣", min_size=2, max_size=4),
    st.sampled_from(["", " ", "-", " result=", " result=1 (x)", " result= (timeout)", " result=-1 endpos=5", " (("]),
    st.sampled_from(["\n", "\r\n", ""]),
)
NOISE = st.lists(
    st.one_of(FRAGMENTS, REPLY_LIKE, st.binary(max_size=12), st.text(max_size=6).map(str.encode)), max_size=40
)


def _feed_noise(parser: AgiParser, parts: list[bytes]) -> None:
    try:
        for part in parts:
            for event in parser.feed(part):
                assert isinstance(event, (Environment, Reply, Hangup))
    except AgiProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(NOISE)
def test_random_bytes_before_the_environment_raise_only_protocol_errors(parts):
    _feed_noise(AgiParser(), parts)


@settings(max_examples=300, deadline=None)
@given(NOISE)
@example([b"\xc2\xb2\xc2\xb2\xc2\xb2 x\n"])  # "²²² x": str.isdigit() is true, int() fails
def test_random_bytes_after_the_environment_raise_only_protocol_errors(parts):
    parser = AgiParser()
    parser.feed(ENV)
    _feed_noise(parser, parts)


@pytest.mark.parametrize(
    "line", ["²²² x", "²00 result=1", "١٢٣ something", "①②③ x"],
    ids=["superscripts", "superscript_in_200", "arabic_indic_digits", "circled_digits"],
)
def test_reply_code_must_be_three_ascii_digits(line):
    parser = AgiParser()
    parser.feed(ENV)
    with pytest.raises(AgiProtocolError):
        parser.feed(line.encode() + b"\n")


@pytest.mark.parametrize("line", [b"hello", b"20 result=1", b"2000 result=1", b"OK"])
def test_non_reply_lines_are_protocol_errors(line):
    parser = AgiParser()
    parser.feed(ENV)
    with pytest.raises(AgiProtocolError):
        parser.feed(line + b"\n")


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00\x01\x00\n", b"hello: world\n"])
def test_non_agi_environment_is_a_protocol_error(data):
    with pytest.raises(AgiProtocolError):
        AgiParser().feed(data)


def test_overlong_line_without_newline_is_rejected_before_it_ends():
    parser = AgiParser()
    parser.feed(b"agi_network: yes\nagi_callerid: ")
    with pytest.raises(AgiProtocolError):
        for _ in range(MAX_LINE // 1024 + 2):
            parser.feed(b"7" * 1024)


def test_overlong_reply_line_is_rejected():
    parser = AgiParser()
    parser.feed(ENV)
    with pytest.raises(AgiProtocolError):
        parser.feed(b"200 result=1 (" + b"x" * MAX_LINE + b")\n")


def test_line_of_the_maximum_length_is_accepted():
    parser = AgiParser()
    prefix = b"agi_calleridname: "
    line = prefix + b"x" * (MAX_LINE - len(prefix))
    assert len(line) == MAX_LINE
    [env] = parser.feed(line + b"\n\n")
    assert len(env.get("calleridname")) == MAX_LINE - len(prefix)


def test_endless_environment_block_is_rejected():
    parser = AgiParser()
    with pytest.raises(AgiProtocolError):
        for n in range(MAX_ENV_LINES + 2):
            parser.feed(f"agi_x{n}: y\n".encode())


# --- encoding commands -----------------------------------------------------------


def res_agi_parse_args(line: str, max_args: int = 128) -> list[str]:
    """res_agi.c parse_args() (Asterisk 23) ported statement by statement: the reference splitter.

    The C code copies characters in place through `cur`; argv entries point
    into that buffer and end at the next NUL it wrote.
    """
    source = line.split("\0", 1)[0]  # a C string ends at NUL
    buf = list(source) + ["\0"]
    starts: list[int] = []
    quoted = escaped = False
    whitespace = True
    cur = 0
    for char in source:
        normal = False
        if char == '"':
            if escaped:
                normal = True
            else:
                quoted = not quoted
                if quoted and whitespace:
                    starts.append(cur)  # starting a quote off white space starts a word
                    whitespace = False
                escaped = False
        elif char in " \t":
            if not quoted and not escaped:
                whitespace = True
                buf[cur] = "\0"
                cur += 1
            else:
                normal = True
        elif char == "\\":
            if escaped:
                normal = True
            else:
                escaped = True
        else:
            normal = True
        if normal:
            if whitespace:
                if len(starts) >= max_args - 1:
                    continue  # "Too many arguments, truncating"
                starts.append(cur)
                whitespace = False
            buf[cur] = char
            cur += 1
            escaped = False
    buf[cur] = "\0"
    return ["".join(buf[start:buf.index("\0", start)]) for start in starts]


def test_reference_splitter_agrees_with_asterisk_on_recorded_commands():
    # res_agi's answers in agi-basic: the quoted value is one argument, the unquoted one is two (520).
    assert res_agi_parse_args('SET VARIABLE GREETING "hello world"') == ["SET", "VARIABLE", "GREETING", "hello world"]
    assert len(res_agi_parse_args("SET VARIABLE GREETING2 hello world")) == 5


NO_LINE_BREAKS = st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",))
TRICKY = st.sampled_from([" ", "\t", '"', "\\", "\\\\", '\\"', "a", "Ж", "ё", "$", "{", "'", ",", "\x0b", "\u2028"])
LINES = st.lists(st.one_of(TRICKY, NO_LINE_BREAKS), max_size=60).map("".join)
TEXTS = st.one_of(st.text(NO_LINE_BREAKS, max_size=40), LINES)


@settings(max_examples=400, deadline=None)
@given(LINES)
def test_split_command_splits_like_res_agi(line):
    assert split_command(line) == res_agi_parse_args(line)
    assert split_command(line + "\n") == res_agi_parse_args(line)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_quoted_argument_is_one_word_for_res_agi(text):
    line = f"SET VARIABLE X {quote(text)}"
    assert res_agi_parse_args(line) == ["SET", "VARIABLE", "X", text]
    assert split_command(line) == ["SET", "VARIABLE", "X", text]


@settings(max_examples=300, deadline=None)
@given(name=TEXTS, value=TEXTS)
def test_set_variable_round_trips_through_asterisk_splitting(name, value):
    line = set_variable(name, value).encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode("utf-8")
    assert res_agi_parse_args(text[:-1]) == ["SET", "VARIABLE", name, value]
    assert split_command(text) == ["SET", "VARIABLE", name, value]


@pytest.mark.parametrize(
    "value, line",
    [
        ("hello world", 'SET VARIABLE GREETING "hello world"\n'),
        ("menu1", "SET VARIABLE GREETING menu1\n"),
        ("", 'SET VARIABLE GREETING ""\n'),
        ('say "hi"', 'SET VARIABLE GREETING "say \\"hi\\""\n'),
        ("C:\\calls\\in", 'SET VARIABLE GREETING "C:\\\\calls\\\\in"\n'),
        ("Иванов Пётр", 'SET VARIABLE GREETING "Иванов Пётр"\n'),
        ("Пётр", "SET VARIABLE GREETING Пётр\n"),
        ("a\tb", 'SET VARIABLE GREETING "a\tb"\n'),
        (42, "SET VARIABLE GREETING 42\n"),
    ],
)
def test_set_variable_quotes_what_needs_quoting(value, line):
    encoded = set_variable("GREETING", value).encode()
    assert encoded == line.encode("utf-8")
    assert res_agi_parse_args(encoded.decode()[:-1])[3] == str(value)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "line\n", "\r"])
def test_line_breaks_in_arguments_are_rejected(bad):
    with pytest.raises(ValueError):
        set_variable("X", bad).encode()
    with pytest.raises(ValueError):
        set_variable(bad, "x").encode()
    with pytest.raises(ValueError):
        verbose(bad).encode()
    with pytest.raises(ValueError):
        encode_command("EXEC", bad)


def test_nul_in_an_argument_is_rejected():
    # res_agi reads the line with fgets() and then uses strlen(): at a NUL it
    # sees no newline, keeps reading and glues the next command line on.
    with pytest.raises(ValueError):
        set_variable("X", "a\x00b").encode()


def test_command_longer_than_res_agi_buffer_is_rejected():
    # res_agi reads commands into an 8192-byte buffer (AGI_BUF_LEN): a longer
    # line is cut, and its tail runs as a second command with its own reply.
    assert len(set_variable("X", "x" * 4000).encode()) < 8191
    with pytest.raises(ValueError):
        set_variable("X", "x" * 8200).encode()


@pytest.mark.parametrize(
    "command, line",
    [
        (verbose("agi-basic: hello from the server"), 'VERBOSE "agi-basic: hello from the server" 1\n'),
        (set_variable("GREETING", "hello world"), 'SET VARIABLE GREETING "hello world"\n'),
        (get_variable("GREETING"), "GET VARIABLE GREETING\n"),
        (get_variable("CALLERID(num)"), "GET VARIABLE CALLERID(num)\n"),
        (exec_app("Noop", "agi-basic test"), 'EXEC Noop "agi-basic test"\n'),
        (exec_app("Noop"), "EXEC Noop\n"),
        (Command(("NOOP",)), "NOOP\n"),
        (set_variable("IVR_STEP", "menu1"), "SET VARIABLE IVR_STEP menu1\n"),
        (stream_file(SOUND), f'STREAM FILE {SOUND} ""\n'),
        (get_data(SOUND, 3000, 4), f"GET DATA {SOUND} 3000 4\n"),
        (verbose("Звонок от ${CALLERID(name)}"), 'VERBOSE "Звонок от ${CALLERID(name)}" 1\n'),
        (set_variable("IVR_QUEUE", "support"), "SET VARIABLE IVR_QUEUE support\n"),
    ],
)
def test_helpers_encode_the_lines_the_traces_show_asterisk_accepting(command, line):
    recorded = {cmd for s in SESSIONS for cmd in s.commands}
    assert line in recorded  # the exact bytes Asterisk answered with 200
    assert command.encode() == line.encode("utf-8")


def test_stream_file_escape_digits_are_one_argument():
    words = split_command(stream_file(SOUND, "#5").encode().decode())
    assert words == ["STREAM", "FILE", SOUND, "#5"]
    assert words == split_command(f'STREAM FILE {SOUND} "#5"\n')  # as recorded in agi-dtmf


@pytest.mark.parametrize(
    "line, words",
    [
        ('SET VARIABLE GREETING "hello world"\n', ["SET", "VARIABLE", "GREETING", "hello world"]),
        ("SET VARIABLE GREETING2 hello world\n", ["SET", "VARIABLE", "GREETING2", "hello", "world"]),
        ('GET FULL VARIABLE "${CALLERID(name)} calls ${EXTEN}"\n',
         ["GET", "FULL", "VARIABLE", "${CALLERID(name)} calls ${EXTEN}"]),
        ('VERBOSE "Звонок от ${CALLERID(name)}" 1\n', ["VERBOSE", "Звонок от ${CALLERID(name)}", "1"]),
        (f'STREAM FILE {SOUND} ""\n', ["STREAM", "FILE", SOUND, ""]),
        (f'GET OPTION {SOUND} "89" 2000\n', ["GET", "OPTION", SOUND, "89", "2000"]),
        ('VERBOSE "crlf line ending" 1\r\n', ["VERBOSE", "crlf line ending", "1"]),
        ('SET VARIABLE IVR_CUSTOMER_ID "cust-12345"\n', ["SET", "VARIABLE", "IVR_CUSTOMER_ID", "cust-12345"]),
        ("get variable CHANNEL\n", ["get", "variable", "CHANNEL"]),
        ("\n", []),
    ],
)
def test_recorded_commands_split_into_the_right_words(line, words):
    recorded = {cmd for s in SESSIONS for cmd in s.commands}
    assert line in recorded
    assert split_command(line) == words


@pytest.mark.parametrize("line", sorted({c for s in SESSIONS for c in s.commands}))
def test_every_recorded_command_splits_like_res_agi(line):
    assert split_command(line) == res_agi_parse_args(line.rstrip("\r\n"))
