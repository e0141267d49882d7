"""The simulated Asterisk (ivr.sim.fastagi_caller) answers like res_agi did in the recordings.

`AsteriskChannel` is fed the very command lines the recorded server sent and
must answer with the same replies, split into the same TCP chunks where that
matters (the two-part 520 block, the separate HANGUP line).  `place_call` and
the load drivers are run against the real FastAGI server on the loopback.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from ivr.asterisk.agi import AgiParser, Hangup, Reply
from ivr.sim.fastagi_caller import encode_environment
from ivr.asterisk.fastagi import AgiCall, ChannelGone, FastAgiServer
from ivr.sim.fastagi_caller import (
    DEAD_CHANNEL,
    DIGIT_TIMEOUT,
    RESPONSE_TIMEOUT,
    SAY_ITEM_SECONDS,
    Keys,
    Response,
    UNKNOWN,
    USAGE_HEAD,
    AsteriskChannel,
    CallResult,
    CallScript,
    mixed_scripts,
    percentile,
    place_call,
    run_closed_loop,
    run_open_loop,
    summarize,
)
from speech.audio import TELEPHONE_RATE, Audio, silence, write_wav
from tests.ivr import traces
from tests.waiting import LOOPBACK, LIMIT, within

SOUND = "/var/lib/asterisk/sounds/custom/utterance-en"
SOUND_SECONDS = 4.64  # the recorded utterance: GET DATA 1500 with no key answered 6.135 s after it began


def recorded_sounds(name: str) -> float | None:
    """The sounds of the recording machine, which this one does not have."""
    return SOUND_SECONDS if name == SOUND else None


def channel_for(script: CallScript, **options) -> AsteriskChannel:
    return AsteriskChannel(script, sounds=recorded_sounds, **options)


def _events(chunks: list[bytes]) -> list:
    """The events the server would see for these reply chunks."""
    parser = AgiParser()
    parser.feed(encode_environment({"agi_network_script": "ivr"}))
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def _shape(events: list) -> list:
    return [("HANGUP",) if isinstance(e, Hangup) else (e.code, e.result, e.data) for e in events]


# What the simulator knows that the recorded channel knew (the keys: when the
# observer's PlayDTMF ended, seconds into each command), and what it cannot
# do: it does not evaluate ${...} expressions (GET FULL VARIABLE echoes them).
RECORDED = {
    "agi-basic": CallScript(), "agi-errors": CallScript(), "agi-dtmf": CallScript(dtmf=[
        Keys("5", after=1.12), "", Keys("12#", after=1.12, gap=0.35), Keys("78", after=1.12, gap=0.35),
        Keys("1234", after=0.92, gap=0.3), "", Keys("5", after=1.34), Keys("9", after=0.94)]),
    "agi-hangup-mid-command": CallScript(hangup_at=1),
}
KNOWN_VARIABLES = {"CALLERID(num)": "79161234567", "CHANNEL": "Local/101@from-test-00000001;2"}


@pytest.mark.parametrize("name", list(RECORDED))
def test_channel_answers_the_recorded_commands_like_asterisk(name):
    channel = channel_for(RECORDED[name], variables=KNOWN_VARIABLES)
    _, steps, _ = traces.session(name).steps()
    for line, recorded in steps:
        chunks = channel.handle(line)
        ours, theirs = _shape(_events(chunks)), _shape(_events(recorded))
        if line.upper().startswith("GET FULL VARIABLE"):
            assert [e[0] for e in ours] == [e[0] for e in theirs], line
        else:
            assert ours == theirs, line
        if recorded[0].startswith(b"520-"):
            assert len(chunks) == 2 and chunks[0] == recorded[0] == USAGE_HEAD, line
            assert chunks[1].endswith(b"\n520 End of proper usage.\n")
        elif any(c.startswith(b"HANGUP") for c in recorded):
            assert chunks == recorded, line  # the reply, then HANGUP in its own write
        elif name == "agi-dtmf" or not line.upper().startswith(("GET FULL VARIABLE", "STREAM FILE", "GET DATA")):
            assert chunks == recorded, line  # byte for byte, endpos included
    assert channel.commands == [line for line, _ in steps]


def test_channel_takes_the_time_asterisk_took_in_the_recording():
    """Each reply of agi-dtmf comes as many seconds after its command as Asterisk's did: the
    prompt plays, a key stops it, GET DATA waits its timeout after the last key, and so on."""
    channel = channel_for(RECORDED["agi-dtmf"])
    session = traces.session("agi-dtmf")
    sent = [c for c in session.chunks if c.from_server and c.data]
    replies = [c for c in session.chunks if c.from_asterisk and c.data.startswith(b"200 ")]
    assert len(sent) == len(replies) == 8
    for command, reply in zip(sent, replies):
        took = reply.t - command.t
        assert channel.respond(command.data.decode()).after == pytest.approx(took, abs=0.12), command.data

def test_command_words_are_case_insensitive():
    channel = AsteriskChannel(CallScript())
    assert channel.handle("answer\n") == [b"200 result=0\n"]
    assert channel.handle("Set Variable IVR_QUEUE support\n") == [b"200 result=1\n"]
    assert channel.handle("get variable IVR_QUEUE\n") == [b"200 result=1 (support)\n"]
    assert channel.handle("GET variable ivr_queue\n") == [b"200 result=0\n"]  # variable names keep their case


@pytest.mark.parametrize("line", ["\n", "\r\n", "   \n", "FOOBAR baz\n", "GET\n", "SET VAR X y\n", "STREAMFILE x\n"])
def test_empty_or_unknown_line_gets_510(line):
    channel = AsteriskChannel(CallScript())
    assert channel.handle(line) == [UNKNOWN]
    assert UNKNOWN == b"510 Invalid or unknown command\n"  # as recorded in agi-errors
    assert channel.handle("NOOP\n") == [b"200 result=0\n"]  # still in step


@pytest.mark.parametrize(
    "line",
    ["STREAM FILE\n", "SET VARIABLE ONLYNAME\n", "SET VARIABLE GREETING2 hello world\n", "WAIT FOR DIGIT\n",
     "GET DATA\n", "GET VARIABLE\n", "ANSWER now\n", "VERBOSE\n", "EXEC\n"],
)
def test_wrong_argument_count_gets_the_usage_block_in_two_chunks(line):
    channel = AsteriskChannel(CallScript())
    chunks = channel.handle(line)
    assert len(chunks) == 2
    assert chunks[0] == b"520-Invalid command syntax.  Proper usage follows:\n"
    assert chunks[1].endswith(b"\n520 End of proper usage.\n")
    [reply] = _events(chunks)
    assert reply.code == 520 and reply.text
    assert "SET VARIABLE" not in line or "GREETING2" not in channel.variables


def _dead_channel() -> AsteriskChannel:
    channel = channel_for(CallScript(hangup_at=0))
    assert channel.handle("ANSWER\n") == [b"200 result=-1\n", b"HANGUP\n"]
    assert channel.hung_up
    return channel


@pytest.mark.parametrize(
    "line", ["ANSWER\n", f'STREAM FILE {SOUND} ""\n', "WAIT FOR DIGIT 1000\n", "CHANNEL STATUS\n",
             f"GET DATA {SOUND} 3000 4\n", f'GET OPTION {SOUND} "89" 2000\n', "HANGUP\n"],
)
def test_channel_commands_after_hangup_get_511(line):
    channel = _dead_channel()
    assert channel.handle(line) == [DEAD_CHANNEL]
    assert DEAD_CHANNEL == b"511 Command Not Permitted on a dead channel or intercept routine\n"


@pytest.mark.parametrize(
    "line, reply",
    [
        ("SET VARIABLE IVR_RESULT caller-gone\n", b"200 result=1\n"),
        ("GET VARIABLE IVR_STEP\n", b"200 result=1 (menu1)\n"),
        ("GET FULL VARIABLE ${IVR_STEP}\n", None),
        ('VERBOSE "after hangup" 1\n', b"200 result=1\n"),
        ("EXEC NoOp after-hangup\n", b"200 result=0\n"),
        ("NOOP\n", b"200 result=0\n"),
    ],
)
def test_variable_and_log_commands_still_work_after_hangup(line, reply):
    channel = channel_for(CallScript(hangup_at=1))
    channel.handle("SET VARIABLE IVR_STEP menu1\n")
    assert channel.handle(f'STREAM FILE {SOUND} ""\n') == [b"200 result=-1 endpos=12160\n", b"HANGUP\n"]
    chunks = channel.handle(line)
    assert len(chunks) == 1 and chunks[0].startswith(b"200 ")
    if reply is not None:
        assert chunks == [reply]
    assert channel.handle("NOOP\n") == [b"200 result=0\n"]  # HANGUP is written once, not again


def test_dead_channel_refuses_channel_commands_before_checking_arguments():
    # agi_handle_command() checks the dead flag before the handler counts the
    # arguments, so a channel command with missing arguments on a dead
    # channel gets 511, not the 520 usage block.
    channel = _dead_channel()
    assert channel.handle("STREAM FILE\n") == [DEAD_CHANNEL]
    assert channel.handle("WAIT FOR DIGIT\n") == [DEAD_CHANNEL]


@pytest.mark.parametrize(
    "line, first, second",
    [
        (f'STREAM FILE {SOUND} ""\n', b"200 result=-1 endpos=12160\n", b"HANGUP\n"),
        (f'GET OPTION {SOUND} "89" 2000\n', b"200 result=-1 endpos=12160\n", b"HANGUP\n"),
        (f"GET DATA {SOUND} 3000 4\n", b"200 result=-1\n", b"HANGUP\n"),
        ("WAIT FOR DIGIT 5000\n", b"200 result=-1\n", b"HANGUP\n"),
        ("SET VARIABLE IVR_QUEUE support\n", b"200 result=1\n", b"HANGUP\n"),
        ("NOOP\n", b"200 result=0\n", b"HANGUP\n"),
    ],
)
def test_hangup_at_answers_the_running_command_then_writes_hangup_separately(line, first, second):
    channel = channel_for(CallScript(hangup_at=2))
    assert channel.handle("ANSWER\n") == [b"200 result=0\n"]
    assert channel.handle("NOOP\n") == [b"200 result=0\n"]
    assert not channel.hung_up
    assert channel.handle(line) == [first, second]
    assert channel.hung_up
    if line.startswith("SET VARIABLE"):
        assert channel.variables == {"IVR_QUEUE": "support"}
    events = _events([first, second])
    assert [type(e) for e in events] == [Reply, Hangup]


def test_get_data_answers_digits_max_digits_and_timeout():
    channel = channel_for(CallScript(dtmf=["12", "", "123456", "9", Keys("3", after=30.0)]))
    replies = [channel.respond(line) for line in [f"GET DATA {SOUND} 3000 4\n"] * 3 + [
        f"GET DATA {SOUND}\n", f"GET DATA {SOUND} 3000 4\n", f"GET DATA {SOUND} 3000 4\n"]]
    assert [r.chunks for r in replies] == [
        [b"200 result=12 (timeout)\n"],  # two keys at once, then 3 s without a third
        [b"200 result= (timeout)\n"], [b"200 result=1234\n"],
        [b"200 result=9 (timeout)\n"],  # no maximum: TIMEOUT(digit) after the key
        [b"200 result= (timeout)\n"],  # a key 30 s in comes after Asterisk stopped listening
        [b"200 result= (timeout)\n"]]  # no more keys
    assert [r.after for r in replies] == pytest.approx([0.35 + 3.0, SOUND_SECONDS + 3.0, 1.05, DIGIT_TIMEOUT,
                                                        SOUND_SECONDS + 3.0, SOUND_SECONDS + 3.0])
    assert channel.prompts == [SOUND] * 6
    reply = _events([b"200 result= (timeout)\n"])[0]
    assert (reply.result, reply.data) == ("", "timeout")  # the form recorded in agi-dtmf


def test_get_data_without_a_timeout_waits_the_dialplan_timeouts():
    channel = channel_for(CallScript(dtmf=["", Keys("12", after=SOUND_SECONDS + 1.0, gap=1.0)]))
    silent = channel.respond(f"GET DATA {SOUND}\n")
    assert (silent.chunks, silent.after) == ([b"200 result= (timeout)\n"], SOUND_SECONDS + RESPONSE_TIMEOUT)
    two = channel.respond(f"GET DATA {SOUND} 0 4\n")
    assert two.chunks == [b"200 result=12 (timeout)\n"]
    assert two.after == pytest.approx(SOUND_SECONDS + 2.0 + DIGIT_TIMEOUT)


def test_a_sound_asterisk_cannot_open_fails_at_once():
    """res_agi: ast_openstream fails -> ``200 result=-1 endpos=0``; GET DATA's stream fails -> -1."""
    channel = channel_for(CallScript(dtmf=["1"]))
    assert channel.respond('STREAM FILE no-such-sound ""\n') == Response([b"200 result=-1 endpos=0\n"])
    assert channel.respond("GET DATA no-such-sound 3000 1\n") == Response([b"200 result=-1\n"])
    assert channel.respond('GET OPTION no-such-sound "1" 2000\n') == Response([b"200 result=-1 endpos=0\n"])
    assert not channel.hung_up


def test_wait_for_digit_and_stream_file_escape_digits():
    channel = channel_for(CallScript(dtmf=["5", "3", "9", Keys("7", after=SOUND_SECONDS + 1.0)]))
    assert channel.respond("WAIT FOR DIGIT 5000\n") == Response([b"200 result=53\n"], 0.0)  # '5', as recorded
    played = channel.respond(f'STREAM FILE {SOUND} "#5"\n')  # '3' is no escape digit: the file plays out
    assert played == Response([b"200 result=0 endpos=37120\n"], SOUND_SECONDS)
    assert channel.respond("WAIT FOR DIGIT 1500\n") == Response([b"200 result=51\n"], 0.0)  # '3' was left for it
    assert channel.respond(f'GET OPTION {SOUND} "89" 2000\n') == Response([b"200 result=57 endpos=0\n"], 0.0)
    late = channel.respond(f'GET OPTION {SOUND} "789" 2000\n')  # pressed in the wait after the file
    assert late == Response([b"200 result=55 endpos=37120\n"], SOUND_SECONDS + 1.0)
    no_option = channel.respond(f'GET OPTION {SOUND} "89" 2000\n')  # nothing: the file, then 2 s
    assert no_option == Response([b"200 result=0 endpos=37120\n"], SOUND_SECONDS + 2.0)
    assert channel.respond("WAIT FOR DIGIT 1500\n") == Response([b"200 result=0\n"], 1.5)


def test_say_commands_take_the_time_of_their_items():
    channel = channel_for(CallScript(dtmf=[Keys("#", after=1.0)]))  # no escape digit in the first: kept
    assert channel.respond('SAY DIGITS 4567 ""\n') == Response([b"200 result=0\n"], 4 * SAY_ITEM_SECONDS)
    assert channel.respond('SAY ALPHA abcdef "#"\n') == Response([b"200 result=35\n"], 1.0)
    assert channel.respond('SAY NUMBER twelve ""\n').chunks[0] == USAGE_HEAD
    assert channel.respond('SAY DATE 1795333685 ""\n').after > 0


def test_environment_is_a_block_the_parser_accepts():
    channel = AsteriskChannel(CallScript(number="79161234567", name="Иванов Пётр", line="b2b", dnid="4951234567"))
    [env] = AgiParser().feed(channel.environment("127.0.0.1", 4573))
    assert (env.script, env.callerid, env.calleridname, env.args, env.dnid) == (
        "inbound", "79161234567", "Иванов Пётр", ["b2b"], "4951234567")
    assert env.uniqueid == channel.uniqueid and env.channel == channel.channel
    anonymous = AsteriskChannel(CallScript(number=None, line=None))
    [env] = AgiParser().feed(anonymous.environment("127.0.0.1", 4573))
    assert (env.callerid, env.calleridname, env.get("callingpres"), env.args) == (None, None, "67", [])
    assert anonymous.uniqueid != channel.uniqueid


# --- over TCP ------------------------------------------------------------------------


@pytest.fixture
async def agi_server():
    started: list[FastAgiServer] = []

    async def start(scripts) -> FastAgiServer:
        server = FastAgiServer(scripts, host=LOOPBACK, port=0, env_timeout=2.0, command_timeout=5.0)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close(grace=1.0)


async def route(call: AgiCall) -> None:
    await call.set_variable("IVR_CUSTOMER_ID", f"cust-{call.env.callerid}")
    await call.set_variable("IVR_QUEUE", call.env.args[0] if call.env.args else "general")
    await call.verbose("routed")


async def test_place_call_records_variables_and_time_to_routing(agi_server):
    server = await agi_server({"inbound": route})
    result = await place_call(LOOPBACK, server.port, CallScript(line="b2b"), timeout=LIMIT)
    assert result.error is None and not result.hung_up
    assert result.variables == {"IVR_CUSTOMER_ID": "cust-79161234567", "IVR_QUEUE": "b2b"}
    assert result.queue == "b2b"
    assert result.commands == [
        "SET VARIABLE IVR_CUSTOMER_ID cust-79161234567\n", "SET VARIABLE IVR_QUEUE b2b\n", 'VERBOSE routed 1\n',
    ]
    assert result.routed_after is not None and 0 < result.routed_after <= result.duration


async def test_place_call_has_no_routing_time_when_ivr_queue_is_never_set(agi_server):
    async def identify_only(call: AgiCall) -> None:
        await call.set_variable("IVR_CUSTOMER_ID", "cust-1")

    server = await agi_server({"inbound": identify_only})
    result = await place_call(LOOPBACK, server.port, CallScript(), timeout=LIMIT)
    assert result.error is None
    assert result.variables == {"IVR_CUSTOMER_ID": "cust-1"}
    assert result.routed_after is None and result.queue is None


def sound(directory, name: str, seconds: float) -> str:
    """An 8 kHz WAV file of `seconds` of silence; its name as STREAM FILE takes it."""
    path = directory / f"{name}.wav"
    write_wav(path, Audio(silence(seconds), TELEPHONE_RATE))
    return str(path.with_suffix(""))


async def test_place_call_plays_the_caller_digits_and_records_prompts(agi_server, tmp_path):
    welcome, account = sound(tmp_path, "welcome", 1.0), sound(tmp_path, "enter-account", 2.0)

    async def menu(call: AgiCall) -> None:
        pressed = await call.stream_file(welcome, "12", seconds=1.0)
        digits, timed_out = await call.get_data(account, 3000, 4, seconds=2.0)
        await call.set_variable("IVR_QUEUE", f"{pressed}-{digits}-{timed_out}")

    server = await agi_server({"inbound": menu})
    result = await place_call(LOOPBACK, server.port, CallScript(dtmf=["2", "4321"]), timeout=LIMIT)
    assert result.queue == "2-4321-False"
    assert result.prompts == [welcome, account]


async def test_place_call_answers_when_asterisk_would_and_fast_mode_at_once(agi_server, tmp_path):
    """The caller who presses nothing waits for the prompt and the key timeout, a key during the
    prompt cuts it short, and fast mode (load tests) skips the waiting, with the same replies."""
    prompt = sound(tmp_path, "menu", 1.2)

    async def menu(call: AgiCall) -> None:
        digits, _ = await call.get_data(prompt, 800, 1, seconds=1.2)
        await call.set_variable("IVR_QUEUE", digits or "none")

    server = await agi_server({"inbound": menu})
    silent = await place_call(LOOPBACK, server.port, CallScript(), timeout=LIMIT)
    pressed = await place_call(LOOPBACK, server.port, CallScript(dtmf=[Keys("3", after=0.4)]), timeout=LIMIT)
    fast = await place_call(LOOPBACK, server.port, CallScript(), timeout=LIMIT, fast=True)
    assert (silent.queue, pressed.queue, fast.queue) == ("none", "3", "none")
    assert 1.2 + 0.8 <= silent.routed_after < 1.2 + 0.8 + 1.0
    assert 0.4 <= pressed.routed_after < 1.2
    assert fast.routed_after < 1.0


async def test_place_call_hangs_up_during_the_chosen_command(agi_server):
    seen: dict = {}

    async def menu(call: AgiCall) -> None:
        await call.set_variable("IVR_STEP", "menu1")
        try:
            await call.get_data("enter-account", 3000, 4, seconds=1.0)
        except ChannelGone as exc:
            seen["gone"] = exc.reply.result
        await call.set_variable("IVR_QUEUE", "support")  # still allowed on a dead channel
        seen["hung_up"] = call.hung_up

    server = await agi_server({"inbound": menu})
    result = await place_call(LOOPBACK, server.port, CallScript(hangup_at=1), timeout=LIMIT)
    assert result.hung_up and result.error is None
    assert result.queue == "support"
    assert seen == {"gone": "-1", "hung_up": True}


async def test_place_call_that_closes_before_the_environment_ends_sends_no_commands(agi_server):
    server = await agi_server({"inbound": route})
    result = await place_call(LOOPBACK, server.port, CallScript(close_before_env=True), timeout=LIMIT)
    assert (result.commands, result.variables, result.routed_after, result.error) == ([], {}, None, None)


async def test_place_call_reports_a_server_that_never_answers(agi_server):
    async def stuck(call: AgiCall) -> None:
        await asyncio.Event().wait()

    server = await agi_server({"inbound": stuck})
    result = await within(place_call(LOOPBACK, server.port, CallScript(), timeout=0.3))
    assert result.error == "timeout"


async def test_place_call_reports_a_refused_connection(agi_server):
    server = await agi_server({})
    port = server.port
    await server.close()
    result = await within(place_call(LOOPBACK, port, CallScript(), timeout=LIMIT))
    assert result.error is not None and "Connect" in result.error


async def test_place_call_says_hangup_after_the_server_ends_the_session():
    """Like res_agi: when the server half-closes, Asterisk still writes HANGUP, then closes."""
    received: asyncio.Future = asyncio.get_running_loop().create_future()

    async def half_closing_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\n", b""):
            pass
        writer.write(b"NOOP\n")
        reply = await reader.readline()
        writer.write_eof()
        received.set_result((reply, await reader.read()))
        writer.close()

    server = await asyncio.start_server(half_closing_server, LOOPBACK, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await within(place_call(LOOPBACK, port, CallScript(), timeout=LIMIT))
        assert await within(received) == (b"200 result=0\n", b"HANGUP\n")
        assert result.commands == ["NOOP\n"] and result.error is None
    finally:
        server.close()
        await server.wait_closed()


async def test_closed_and_open_loops_complete_every_call(agi_server):
    server = await agi_server({"inbound": route})
    scripts = [CallScript(number=f"7916{n:07d}", line=("general", "b2b")[n % 2]) for n in range(40)]
    closed = await within(run_closed_loop(LOOPBACK, server.port, scripts, concurrency=8))
    assert len(closed) == 40 and all(r.error is None for r in closed)
    assert sorted(r.variables["IVR_CUSTOMER_ID"] for r in closed) == sorted(f"cust-{s.number}" for s in scripts)
    opened = await within(run_open_loop(LOOPBACK, server.port, scripts[:20], rate=400))
    assert [r.script for r in opened] == scripts[:20]
    assert [r.queue for r in opened] == [s.line for s in scripts[:20]]


# --- reporting ---------------------------------------------------------------------------


PERCENTILES = [
    ([1, 2, 3, 4], 50, 2),
    ([4, 1, 3, 2], 95, 4),
    ([7], 99, 7),
    (list(range(1, 11)), 10, 1),
    (list(range(1, 11)), 30, 3),
    (list(range(1, 11)), 50, 5),
    (list(range(1, 11)), 90, 9),
    (list(range(1, 11)), 100, 10),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 1001)), 99, 990),
    (list(range(100, 0, -1)), 50, 50),
]


@pytest.mark.parametrize(
    "values, p, expected", PERCENTILES, ids=[f"p{p}_of_{len(v)}_values" for v, p, _ in PERCENTILES]
)
def test_percentile_is_the_nearest_rank(values, p, expected):
    # nearest rank: the smallest value with at least p % of the values at or below it
    assert percentile(values, p) == expected


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 99))


def _result(queue: str | None, routed_ms: float | None, *, error: str | None = None, hung_up: bool = False):
    return CallResult(
        script=CallScript(), variables={"IVR_QUEUE": queue} if queue else {},
        routed_after=routed_ms / 1000 if routed_ms is not None else None, error=error, hung_up=hung_up,
    )


def test_summary_of_known_results():
    results = [
        _result("support", 4), _result("support", 1), _result("vip", 3), _result("b2b", 2),
        _result(None, None, error="timeout"), _result(None, None, hung_up=True),
    ]
    summary = summarize(results, wall=2.0)
    assert {k: summary[k] for k in ("calls", "routed", "errors", "hung_up", "wall_seconds", "calls_per_second")} == {
        "calls": 6, "routed": 4, "errors": 1, "hung_up": 1, "wall_seconds": 2.0, "calls_per_second": 3.0,
    }
    assert summary["latency_ms"] == {"p50": 2.0, "p95": 4.0, "p99": 4.0, "max": 4.0, "mean": 2.5}
    assert list(summary["queues"].items()) == [("support", 2), ("(dialplan default)", 2), ("vip", 1), ("b2b", 1)]


def test_summary_of_no_calls():
    summary = summarize([], wall=0.0)
    assert (summary["calls"], summary["routed"], summary["calls_per_second"]) == (0, 0, None)
    assert summary["latency_ms"]["max"] is None and summary["latency_ms"]["mean"] is None
    assert math.isnan(summary["latency_ms"]["p99"])
    assert summary["queues"] == {}


def test_mixed_scripts_are_reproducible_and_use_the_given_numbers():
    numbers = ["79161234567", "74951234567"]
    first = mixed_scripts(numbers, 200, garbage_rate=0.0, seed=7)
    assert first == mixed_scripts(numbers, 200, garbage_rate=0.0, seed=7)
    assert {s.number for s in first} == set(numbers)
    assert {s.line for s in first} <= {"general", "b2b", "b2c"}
    assert all(s.hangup_at is None for s in first)
    with_hangups = mixed_scripts(numbers, 200, hangup_rate=1.0, seed=7)
    assert all(s.hangup_at in range(4) for s in with_hangups)
