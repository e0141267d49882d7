"""The FastAGI server (ivr.asterisk.fastagi) over real TCP on the loopback interface.

Asterisk's side is either a hand-driven socket (`FakeAsterisk`) that writes
exactly the bytes a test needs, in the TCP segments it needs, or the
simulator's `place_call`.  Time limits below only keep a broken test from
hanging; nothing asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import functools
import socket

import pytest

from ivr.asterisk.agi import MAX_LINE, Command
from ivr.sim.fastagi_caller import encode_environment
from ivr.asterisk.fastagi import (
    DEFAULT_FIRST_KEY_WAIT,
    DEFAULT_NEXT_KEY_WAIT,
    AgiCall,
    AgiError,
    AgiTimeout,
    ChannelGone,
    FastAgiServer,
    PromptNotPlayed,
    key_wait,
)
from ivr.sim.fastagi_caller import CallScript, place_call
from tests.ivr import traces
from tests.waiting import LOOPBACK, LIMIT, within, eventually as wait_until

SOUND = "/var/lib/asterisk/sounds/custom/utterance-en"
SOUND_SECONDS = 4.64
DEAD = b"511 Command Not Permitted on a dead channel or intercept routine\n"


def environment(script: str = "ivr", **values: str) -> bytes:
    """An environment block shaped like the recorded ones."""
    env = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_channel": "Local/100@from-test-00000000;2",
        "agi_language": "en",
        "agi_type": "Local",
        "agi_uniqueid": "1795333658.1",
        "agi_version": "23.4.1",
        "agi_callerid": "79161234567",
        "agi_calleridname": "Test Caller",
        "agi_callingpres": "0",
        "agi_dnid": "unknown",
        "agi_rdnis": "unknown",
        "agi_context": "from-test",
        "agi_extension": "100",
        "agi_priority": "3",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
    }
    env.update({f"agi_{k}": v for k, v in values.items()})
    return encode_environment(env)


class FakeAsterisk:
    """Asterisk's end of one FastAGI connection, driven step by step by a test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: FastAgiServer, *, local_host: str | None = None) -> FakeAsterisk:
        local = (local_host, 0) if local_host else None
        reader, writer = await within(asyncio.open_connection(server.host, server.port, local_addr=local))
        return cls(reader, writer)

    async def write(self, *chunks: bytes, gap: float = 0.02) -> None:
        """Each chunk in its own TCP segment (a short pause between them)."""
        for n, chunk in enumerate(chunks):
            if n and gap:
                await asyncio.sleep(gap)
            self.writer.write(chunk)
            await within(self.writer.drain())

    async def command(self) -> str:
        line = await within(self.reader.readline())
        assert line.endswith(b"\n"), f"the server closed the connection instead of sending a command: {line!r}"
        return line.decode("utf-8")

    async def closed_by_server(self) -> bytes:
        """Whatever the server still sends before it closes the connection."""
        try:
            return await within(self.reader.read())
        except ConnectionResetError:
            return b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def agi_server(listeners):
    return functools.partial(listeners, FastAgiServer)


def routing_script(call_log: list | None = None):
    async def route(call: AgiCall) -> None:
        number = call.env.callerid or "anonymous"
        await call.set_variable("IVR_CUSTOMER_ID", f"cust-{number}")
        await call.set_variable("IVR_QUEUE", f"{call.env.args[0] if call.env.args else 'general'}-{number}")
        if call_log is not None:
            call_log.append(number)

    return route


# --- a call, step by step ----------------------------------------------------------


async def test_script_gets_the_environment_then_one_reply_per_command(agi_server):
    seen: dict = {}

    async def inbound(call: AgiCall) -> None:
        env = call.env
        seen.update(script=env.script, args=env.args, query=env.query, name=env.calleridname, peer=call.peer)
        await call.set_variable("IVR_GREETING", "hello world")
        seen["greeting"] = await call.get_variable("IVR_GREETING")
        seen["missing"] = await call.get_variable("NO_SUCH_VARIABLE")
        await call.verbose("Звонок от Иванов Пётр")

    server = await agi_server({"inbound": inbound})
    env_chunks, _, _ = traces.session("agi-args", 3).steps()  # inbound/sub?x=1&y=два with three arguments
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(*env_chunks)
    assert await asterisk.command() == 'SET VARIABLE IVR_GREETING "hello world"\n'
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.command() == "GET VARIABLE IVR_GREETING\n"
    await asterisk.write(b"200 result=1 (hello world)\n")
    assert await asterisk.command() == "GET VARIABLE NO_SUCH_VARIABLE\n"
    await asterisk.write(b"200 result=0\n")
    assert await asterisk.command() == 'VERBOSE "Звонок от Иванов Пётр" 1\n'
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.closed_by_server() == b""  # the script ended: back to the dialplan
    assert seen == {
        "script": "inbound", "args": ["", "quoted, comma", "Привет"], "query": {"x": ["1"], "y": ["два"]},
        "name": "Test Caller", "peer": LOOPBACK, "greeting": "hello world", "missing": None,
    }


async def test_dtmf_replies_become_digits_and_timeouts(agi_server):
    got: list = []

    async def menu(call: AgiCall) -> None:
        got.append(await call.stream_file(SOUND, "#5", seconds=SOUND_SECONDS))
        got.append(await call.stream_file(SOUND, seconds=SOUND_SECONDS))
        for _ in range(4):
            got.append(await call.get_data(SOUND, 3000, 4, seconds=SOUND_SECONDS))

    server = await agi_server({"ivr": menu})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == f"STREAM FILE {SOUND} #5\n"
    await asterisk.write(b"200 result=53 endpos=10720\n")
    assert await asterisk.command() == f'STREAM FILE {SOUND} ""\n'
    await asterisk.write(b"200 result=0 endpos=12160\n")
    for reply in (b"200 result=12\n", b"200 result=78 (timeout)\n", b"200 result=1234\n", b"200 result= (timeout)\n"):
        assert await asterisk.command() == f"GET DATA {SOUND} 3000 4\n"
        await asterisk.write(reply)
    assert await asterisk.closed_by_server() == b""
    assert got == ["5", None, ("12", False), ("78", True), ("1234", False), ("", True)]


def _first_reply_code(chunks: list[bytes]) -> int:
    for line in b"".join(chunks).decode().splitlines():
        if line != "HANGUP":
            return int(line[:3])
    raise AssertionError("no reply")


@pytest.mark.parametrize("session", traces.agi_sessions(), ids=lambda s: s.id)
async def test_server_stays_in_step_replaying_a_recorded_session(agi_server, session):
    """The script sends the recorded commands; Asterisk's recorded bytes answer them, segment by segment."""
    env_chunks, steps, _ = session.steps()
    outcomes: list = []
    finished = asyncio.Event()
    state: dict = {}

    async def replay(call: AgiCall) -> None:
        try:
            for line, _ in steps:
                command = Command((line.rstrip("\r\n"),))
                try:
                    outcomes.append(await call.send(command))
                except AgiError as exc:
                    outcomes.append(exc)
            state["hung_up"] = call.hung_up
        finally:
            finished.set()

    server = await agi_server({"ivr": replay, "inbound": replay})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(*env_chunks)
    for line, chunks in steps:
        assert (await asterisk.command()).rstrip("\r\n") == line.rstrip("\r\n")
        await asterisk.write(*chunks)
    await within(finished.wait())
    assert await asterisk.closed_by_server() == b""

    assert len(outcomes) == len(steps)
    for (line, chunks), outcome in zip(steps, outcomes):
        code = _first_reply_code(chunks)
        if code == 200:
            reply_line = next(x for x in b"".join(chunks).decode().splitlines() if x != "HANGUP")
            assert not isinstance(outcome, Exception), (line, outcome)
            assert outcome.text == reply_line, line
        elif code == 511:
            assert isinstance(outcome, ChannelGone) and outcome.reply.code == 511, (line, outcome)
        else:
            assert type(outcome) is AgiError and outcome.reply.code == code, (line, outcome)
    assert state["hung_up"] == (session.trace == "agi-hangup-mid-command")


# --- HANGUP lines, dead channels, errors -------------------------------------------

REPLY_ON_HANGUP = b"200 result=-1 endpos=12160\n"
STEP_REPLY = b"200 result=1 (menu1)\n"

# (what Asterisk writes after STREAM FILE, what it writes after the next command)
# Where the HANGUP line lands after the ``result=-1`` of a hangup.  When it has not come with the
# reply, the server asks CHANNEL STATUS (a -1 on a live channel is a sound Asterisk cannot
# open), which Asterisk answers 511: (after the reply, to the probe, to the next command).
HANGUP_PLACEMENTS = {
    "hangup_in_the_reply_segment": ([REPLY_ON_HANGUP + b"HANGUP\n"], None, [STEP_REPLY]),
    "hangup_in_its_own_segment": ([REPLY_ON_HANGUP, b"HANGUP\n"], [DEAD], [STEP_REPLY]),
    "hangup_after_the_probe_was_sent": ([REPLY_ON_HANGUP], [b"HANGUP\n", DEAD], [STEP_REPLY]),
    "hangup_with_the_probe_reply": ([REPLY_ON_HANGUP], [b"HANGUP\n" + DEAD], [STEP_REPLY]),
    "hangup_split_across_segments": ([REPLY_ON_HANGUP + b"HAN"], [b"GUP\n" + DEAD[:9], DEAD[9:]],
                                     [STEP_REPLY[:9], STEP_REPLY[9:]]),
}


@pytest.mark.parametrize("placement", list(HANGUP_PLACEMENTS))
async def test_hangup_during_stream_file_keeps_replies_in_step(agi_server, placement):
    after_stream, after_probe, after_next = HANGUP_PLACEMENTS[placement]
    seen: dict = {}

    async def menu(call: AgiCall) -> None:
        await call.set_variable("IVR_STEP", "menu1")
        try:
            seen["pressed"] = await call.stream_file(SOUND, seconds=SOUND_SECONDS)
        except ChannelGone as exc:
            seen["stream"] = exc.reply
        seen["step"] = await call.get_variable("IVR_STEP")
        await call.set_variable("IVR_RESULT", "caller-gone")
        seen["hung_up"] = call.hung_up

    server = await agi_server({"ivr": menu})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "SET VARIABLE IVR_STEP menu1\n"
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.command() == f'STREAM FILE {SOUND} ""\n'
    await asterisk.write(*after_stream)
    if after_probe is not None:
        assert await asterisk.command() == "CHANNEL STATUS\n"
        await asterisk.write(*after_probe)
    assert await asterisk.command() == "GET VARIABLE IVR_STEP\n"
    await asterisk.write(*after_next)
    assert await asterisk.command() == "SET VARIABLE IVR_RESULT caller-gone\n"
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.closed_by_server() == b""
    assert "pressed" not in seen
    assert seen["stream"].result == "-1" and seen["stream"].endpos == 12160
    assert seen["step"] == "menu1"  # its own reply, not the STREAM FILE one
    assert seen["hung_up"] is True


async def test_channel_command_after_hangup_raises_channel_gone_while_set_variable_still_works(agi_server):
    seen: dict = {}

    async def menu(call: AgiCall) -> None:
        await call.set_variable("IVR_STEP", "menu1")
        try:
            await call.stream_file(SOUND, seconds=SOUND_SECONDS)
        except ChannelGone:
            seen["first"] = "gone"
        with pytest.raises(ChannelGone) as dead:
            await call.stream_file(SOUND, seconds=SOUND_SECONDS)
        seen["dead_code"] = dead.value.reply.code
        seen["hung_up"] = call.hung_up  # the HANGUP line came before the 511
        with pytest.raises(ChannelGone):
            await call.send(Command(("ANSWER",)))
        seen["step"] = await call.get_variable("IVR_STEP")
        await call.verbose("after hangup")
        await call.set_variable("IVR_QUEUE", "support")

    server = await agi_server({"inbound": menu})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment("inbound"))
    assert await asterisk.command() == "SET VARIABLE IVR_STEP menu1\n"
    await asterisk.write(b"200 result=1\n")
    await asterisk.command()
    await asterisk.write(REPLY_ON_HANGUP, b"HANGUP\n")
    for expected in ("CHANNEL STATUS\n", f'STREAM FILE {SOUND} ""\n', "ANSWER\n"):
        assert await asterisk.command() == expected
        await asterisk.write(DEAD)
    assert await asterisk.command() == "GET VARIABLE IVR_STEP\n"
    await asterisk.write(STEP_REPLY)
    assert await asterisk.command() == 'VERBOSE "after hangup" 1\n'
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.command() == "SET VARIABLE IVR_QUEUE support\n"
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.closed_by_server() == b""
    assert seen == {"first": "gone", "hung_up": True, "dead_code": 511, "step": "menu1"}


async def test_usage_error_520_raises_agi_error_and_next_command_gets_its_own_reply(agi_server):
    _, steps, _ = traces.session("agi-basic").steps()
    usage_chunks = next(chunks for line, chunks in steps if line.startswith("SET VARIABLE GREETING2"))
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        with pytest.raises(AgiError) as failed:
            await call.send(Command(("SET", "VARIABLE"), ("GREETING2", "hello", "world")))
        seen["error"] = failed.value
        seen["value"] = await call.get_variable("CALLERID(num)")

    server = await agi_server({"ivr": script})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "SET VARIABLE GREETING2 hello world\n"
    await asterisk.write(*usage_chunks, gap=0.04)  # two segments ~40 ms apart, as recorded
    assert await asterisk.command() == "GET VARIABLE CALLERID(num)\n"
    await asterisk.write(b"200 result=1 (79161234567)\n")
    assert await asterisk.closed_by_server() == b""
    error = seen["error"]
    assert not isinstance(error, ChannelGone)
    assert error.reply.code == 520 and "Sets a variable to the current channel." in error.reply.text
    assert seen["value"] == "79161234567"


async def test_unknown_command_510_raises_agi_error_and_next_command_gets_its_own_reply(agi_server):
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        with pytest.raises(AgiError) as failed:
            await call.send(Command(("FOOBAR",), ("baz",)))
        seen["code"] = failed.value.reply.code
        seen["gone"] = isinstance(failed.value, ChannelGone)
        seen["channel"] = await call.get_variable("CHANNEL")

    server = await agi_server({"ivr": script})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "FOOBAR baz\n"
    await asterisk.write(b"510 Invalid or unknown command\n")
    assert await asterisk.command() == "GET VARIABLE CHANNEL\n"
    await asterisk.write(b"200 result=1 (Local/101@from-test-00000001;2)\n")
    assert await asterisk.closed_by_server() == b""
    assert seen == {"code": 510, "gone": False, "channel": "Local/101@from-test-00000001;2"}


async def test_command_without_reply_raises_agi_error_after_command_timeout(agi_server):
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        try:
            await call.get_variable("SLOW")
        except AgiError as exc:
            seen["error"] = exc

    server = await agi_server({"ivr": script}, command_timeout=0.2)
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "GET VARIABLE SLOW\n"
    # no reply: the server gives up on the command and on the connection
    assert await asterisk.closed_by_server() == b""
    assert isinstance(seen["error"], AgiError)


async def test_a_prompt_and_its_key_wait_are_waited_for_beyond_the_command_timeout(agi_server):
    """GET DATA's reply comes after the prompt and the key timeout: longer than command_timeout,
    and still no dead peer.  The same command with no reply at all fails after that time."""
    seen: dict = {}
    loop = asyncio.get_running_loop()

    async def script(call: AgiCall) -> None:
        seen["digits"] = await call.get_data(SOUND, 500, 1, seconds=1.0)
        started = loop.time()
        try:
            await call.get_data(SOUND, 500, 1, seconds=1.0)
        except AgiTimeout as exc:
            seen["error"], seen["waited"] = exc, loop.time() - started

    server = await agi_server({"ivr": script}, command_timeout=0.3)
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == f"GET DATA {SOUND} 500 1\n"
    await asyncio.sleep(1.5)  # Asterisk plays 1 s, then waits 0.5 s for a key
    await asterisk.write(b"200 result= (timeout)\n")
    assert await asterisk.command() == f"GET DATA {SOUND} 500 1\n"
    assert await asterisk.closed_by_server() == b""  # no reply: taken for dead
    assert seen["digits"] == ("", True)
    assert isinstance(seen["error"], AgiTimeout)
    assert 1.0 + 0.5 + 0.3 - 0.05 <= seen["waited"] <= 1.0 + 0.5 + 0.3 + 1.0


def test_key_wait_is_the_timeout_per_key_or_the_dialplan_defaults():
    assert key_wait(5000, 1) == 5.0
    assert key_wait(3000, 4) == 12.0  # the timeout starts again after each key
    assert key_wait(0, 1) == DEFAULT_FIRST_KEY_WAIT
    assert key_wait(0, 3) == DEFAULT_FIRST_KEY_WAIT + 2 * DEFAULT_NEXT_KEY_WAIT


async def test_a_sound_asterisk_cannot_open_is_told_from_a_hangup(agi_server):
    """``result=-1`` with the channel still up (CHANNEL STATUS answers 200): the file is missing."""
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        try:
            await call.stream_file("no-such-file", seconds=1.0)
        except PromptNotPlayed as exc:
            seen["error"] = exc
        seen["hung_up"] = call.hung_up
        await call.set_variable("IVR_QUEUE", "support")

    server = await agi_server({"ivr": script})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == 'STREAM FILE no-such-file ""\n'
    await asterisk.write(b"200 result=-1 endpos=0\n")
    assert await asterisk.command() == "CHANNEL STATUS\n"
    await asterisk.write(b"200 result=6\n")
    assert await asterisk.command() == "SET VARIABLE IVR_QUEUE support\n"
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.closed_by_server() == b""
    assert isinstance(seen["error"], PromptNotPlayed) and "no-such-file" in str(seen["error"])
    assert seen["hung_up"] is False


async def test_per_command_timeout_overrides_command_timeout(agi_server):
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        try:
            await call.get_variable("SLOW", timeout=0.2)
        except AgiError as exc:
            seen["error"] = exc

    server = await agi_server({"ivr": script}, command_timeout=60)
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "GET VARIABLE SLOW\n"
    assert await asterisk.closed_by_server() == b""
    assert isinstance(seen["error"], AgiError)


async def test_cancelled_command_does_not_hand_its_reply_to_the_next_command(agi_server):
    """A script that gives up on a command (asyncio.wait_for) and goes on must get the next command's own reply."""
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        try:
            await asyncio.wait_for(call.get_variable("SLOW"), 0.1)
        except asyncio.TimeoutError:
            seen["gave_up"] = True
        seen["queue"] = await call.get_variable("IVR_QUEUE")

    server = await agi_server({"ivr": script}, command_timeout=60)
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "GET VARIABLE SLOW\n"
    next_command = await asterisk.command()  # sent after the script gave up
    await asterisk.write(b"200 result=1 (late)\n")  # Asterisk still answers the first command first
    assert next_command == "GET VARIABLE IVR_QUEUE\n"
    await asterisk.write(b"200 result=1 (support)\n")
    assert await asterisk.closed_by_server() == b""
    assert seen == {"gave_up": True, "queue": "support"}


# --- peers that are not (good) Asterisk ------------------------------------------------


async def _early_closer(server: FastAgiServer, data: bytes) -> None:
    asterisk = await FakeAsterisk.connect(server)
    if data:
        await asterisk.write(data)
    asterisk.close()


async def test_peers_closing_before_the_blank_line_do_not_stall_other_calls(agi_server):
    server = await agi_server({"inbound": routing_script()})
    half = environment("inbound")
    closers = []
    for n in range(10):
        closers.append(_early_closer(server, b""))  # connect, close
        closers.append(_early_closer(server, half[: len(half) // 2]))  # half a block, close
        closers.append(_early_closer(server, b"agi_network: yes\nagi_netw"))  # in the middle of a line
    calls = [place_call(LOOPBACK, server.port, CallScript(number=f"7916{n:07d}"), timeout=LIMIT) for n in range(50)]
    results = await within(asyncio.gather(*closers, *calls))
    routed = results[len(closers):]
    assert [r.queue for r in routed] == [f"general-7916{n:07d}" for n in range(50)]
    assert all(r.error is None for r in routed)
    await wait_until(lambda: not server.connections)  # nothing left behind for the early closers
    assert server.stats["env_timeouts"] == 0


async def test_silent_peers_do_not_block_other_calls(agi_server):
    server = await agi_server({"inbound": routing_script()}, env_timeout=60)
    silent = [await FakeAsterisk.connect(server) for _ in range(3)]
    half = environment("inbound")
    await silent[1].write(half[: len(half) // 2])
    await silent[2].write(b"agi_network: yes\nagi_network_scr")
    results = await within(asyncio.gather(
        *(place_call(LOOPBACK, server.port, CallScript(number=f"7495{n:07d}"), timeout=LIMIT) for n in range(50))
    ))
    assert [r.queue for r in results] == [f"general-7495{n:07d}" for n in range(50)]
    # the silent peers are still connected while all of that happened
    await wait_until(lambda: len(server.connections) == 3)
    for peer in silent:
        peer.close()
    await wait_until(lambda: not server.connections)


async def test_half_environment_is_closed_after_env_timeout(agi_server):
    ran: list = []

    async def script(call: AgiCall) -> None:
        ran.append(call)

    server = await agi_server({"ivr": script}, env_timeout=0.2)
    asterisk = await FakeAsterisk.connect(server)
    env = environment()
    await asterisk.write(env[: len(env) // 2])
    assert await asterisk.closed_by_server() == b""  # closed, no command sent
    assert server.stats["env_timeouts"] == 1
    assert ran == []


async def test_connection_that_sends_nothing_is_closed_after_env_timeout(agi_server):
    server = await agi_server({"ivr": routing_script()}, env_timeout=0.2)
    asterisk = await FakeAsterisk.connect(server)
    assert await asterisk.closed_by_server() == b""
    assert server.stats["env_timeouts"] == 1


GARBAGE = {
    "http_request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "binary_noise": bytes(range(256)) + b"\n\n",
    "overlong_line": b"agi_network: yes\nagi_callerid: " + b"7" * (MAX_LINE + 10),
    "reply_instead_of_environment": b"200 result=1\n",
}


@pytest.mark.parametrize("kind", list(GARBAGE))
async def test_garbage_closes_only_that_connection(agi_server, kind):
    release = asyncio.Event()

    async def held(call: AgiCall) -> None:
        await call.set_variable("IVR_STEP", "waiting")
        await release.wait()
        await call.set_variable("IVR_QUEUE", "support")

    server = await agi_server({"ivr": held})
    caller = await FakeAsterisk.connect(server)
    await caller.write(environment())
    assert await caller.command() == "SET VARIABLE IVR_STEP waiting\n"
    await caller.write(b"200 result=1\n")

    intruder = await FakeAsterisk.connect(server)
    await intruder.write(GARBAGE[kind])
    assert await intruder.closed_by_server() == b""
    assert server.stats["malformed"] == 1

    release.set()  # the call in progress goes on as if nothing happened
    assert await caller.command() == "SET VARIABLE IVR_QUEUE support\n"
    await caller.write(b"200 result=1\n")
    assert await caller.closed_by_server() == b""


@pytest.mark.parametrize("reply", [b"hello there\n", b"200 result=1 (" + b"x" * (MAX_LINE + 10) + b")\n"],
                         ids=["not_a_reply", "overlong_reply"])
async def test_garbage_reply_ends_that_call_with_channel_gone(agi_server, reply):
    seen: dict = {}

    async def script(call: AgiCall) -> None:
        try:
            await call.get_variable("X")
        except AgiError as exc:
            seen["error"] = exc

    server = await agi_server({"ivr": script})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    assert await asterisk.command() == "GET VARIABLE X\n"
    await asterisk.write(reply)
    assert await asterisk.closed_by_server() == b""
    assert isinstance(seen["error"], ChannelGone)
    assert server.stats["malformed"] == 1


async def test_unknown_script_name_closes_the_connection_without_commands(agi_server):
    server = await agi_server({"inbound": routing_script()})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment("outbound?x=1"))
    assert await asterisk.closed_by_server() == b""
    assert server.stats["unknown_script"] == 1
    # the simulator sees the same: no command at all
    result = await place_call(LOOPBACK, server.port, CallScript(script="nope"), timeout=LIMIT)
    assert (result.commands, result.error) == ([], None)


async def test_script_that_raises_does_not_affect_other_calls(agi_server):
    async def broken(call: AgiCall) -> None:
        await call.set_variable("IVR_CALL_ID", call.env.callerid)
        raise RuntimeError("a bug in a call script")

    server = await agi_server({"broken": broken, "inbound": routing_script()})
    broken_calls = [place_call(LOOPBACK, server.port, CallScript(script="broken", number=f"7{n:010d}"), timeout=LIMIT)
                    for n in range(20)]
    good_calls = [place_call(LOOPBACK, server.port, CallScript(number=f"8{n:010d}"), timeout=LIMIT)
                  for n in range(20)]
    results = await within(asyncio.gather(*broken_calls, *good_calls))
    for n, result in enumerate(results[:20]):
        # the session ends after the failure: Asterisk goes back to the dialplan (default queue)
        assert (result.error, result.variables, result.queue) == (None, {"IVR_CALL_ID": f"7{n:010d}"}, None)
    assert [r.queue for r in results[20:]] == [f"general-8{n:010d}" for n in range(20)]
    assert server.stats["script_errors"] == 20


# --- who may connect ------------------------------------------------------------------


async def test_peer_not_in_allowed_hosts_is_closed_without_any_command(agi_server):
    ran: list = []

    async def script(call: AgiCall) -> None:
        ran.append(call)
        await call.set_variable("IVR_QUEUE", "support")

    server = await agi_server({"ivr": script}, allowed_hosts=["127.0.0.2"])
    asterisk = await FakeAsterisk.connect(server)  # from 127.0.0.1
    try:
        await asterisk.write(environment())
    except ConnectionError:
        pass  # already reset
    assert await asterisk.closed_by_server() == b""
    await wait_until(lambda: server.stats["refused"] == 1)
    assert ran == []


async def test_listed_source_address_is_served(agi_server):
    server = await agi_server({"ivr": routing_script()}, allowed_hosts=["127.0.0.2"])
    asterisk = await FakeAsterisk.connect(server, local_host="127.0.0.2")
    await asterisk.write(environment())
    assert await asterisk.command() == "SET VARIABLE IVR_CUSTOMER_ID cust-79161234567\n"
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.command() == "SET VARIABLE IVR_QUEUE general-79161234567\n"
    await asterisk.write(b"200 result=1\n")
    assert await asterisk.closed_by_server() == b""
    assert server.stats["refused"] == 0


async def test_peer_in_allowed_network_is_served(agi_server):
    server = await agi_server({"inbound": routing_script()}, allowed_hosts=["127.0.0.0/8"])
    result = await place_call(LOOPBACK, server.port, CallScript(), timeout=LIMIT)
    assert result.queue == "general-79161234567"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_peer_is_checked_against_ipv6_entries(agi_server):
    served = await agi_server({"inbound": routing_script()}, host="::1", allowed_hosts=["::1"])
    result = await place_call("::1", served.port, CallScript(), timeout=LIMIT)
    assert result.queue == "general-79161234567"
    refused = await agi_server({"inbound": routing_script()}, host="::1", allowed_hosts=["127.0.0.1"])
    result = await place_call("::1", refused.port, CallScript(), timeout=LIMIT)
    assert result.commands == [] and result.queue is None
    await wait_until(lambda: refused.stats["refused"] == 1)


def test_ipv4_mapped_ipv6_peer_is_checked_as_ipv4():
    server = FastAgiServer({}, port=0, allowed_hosts=["127.0.0.1", "10.0.0.0/24"])
    assert server.is_allowed("::ffff:127.0.0.1")
    assert server.is_allowed("::ffff:10.0.0.77")
    assert not server.is_allowed("::ffff:127.0.0.2")
    assert not server.is_allowed("::ffff:10.0.1.1")
    assert not server.is_allowed("::1")
    assert not server.is_allowed("not an address")
    assert not server.is_allowed("")
    scoped = FastAgiServer({}, port=0, allowed_hosts=["fe80::/64"])
    assert scoped.is_allowed("fe80::1%eth0")


# --- load and shutdown -----------------------------------------------------------------


async def test_200_concurrent_calls_keep_their_own_variables(agi_server):
    async def echo(call: AgiCall) -> None:
        number = call.env.callerid
        await call.set_variable("IVR_CUSTOMER_ID", f"cust-{number}")
        await asyncio.sleep(0)  # let the other calls interleave
        echoed = await call.get_variable("IVR_CUSTOMER_ID")
        await call.set_variable("IVR_QUEUE", f"{call.env.args[0]}:{echoed}")

    server = await agi_server({"inbound": echo})
    scripts = [CallScript(number=f"7{n:010d}", line=f"line{n}") for n in range(200)]
    results = await within(asyncio.gather(*(place_call(LOOPBACK, server.port, s, timeout=LIMIT) for s in scripts)),
                           30)
    assert [r.error for r in results] == [None] * 200
    assert [r.variables for r in results] == [
        {"IVR_CUSTOMER_ID": f"cust-7{n:010d}", "IVR_QUEUE": f"line{n}:cust-7{n:010d}"} for n in range(200)
    ]


async def test_close_waits_for_running_calls_then_stops_accepting(agi_server):
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(call: AgiCall) -> None:
        await call.set_variable("IVR_STEP", "thinking")
        started.set()
        await release.wait()
        await call.set_variable("IVR_QUEUE", "support")

    server = await agi_server({"inbound": slow})
    port = server.port
    call = asyncio.create_task(place_call(LOOPBACK, port, CallScript(), timeout=LIMIT))
    await within(started.wait())
    closing = asyncio.create_task(server.close(grace=LIMIT))
    await asyncio.sleep(0.1)
    assert not closing.done()  # the call is still running
    with pytest.raises(OSError):  # no new calls meanwhile
        await within(asyncio.open_connection(LOOPBACK, port))
    release.set()
    result = await within(call)
    await within(closing)
    assert result.variables == {"IVR_STEP": "thinking", "IVR_QUEUE": "support"}
    assert not server.connections


async def test_close_cancels_calls_that_outlive_the_grace_period(agi_server):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(call: AgiCall) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await agi_server({"ivr": stuck})
    asterisk = await FakeAsterisk.connect(server)
    await asterisk.write(environment())
    await within(started.wait())
    await within(server.close(grace=0.2))
    assert cancelled.is_set()
    assert await asterisk.closed_by_server() == b""
