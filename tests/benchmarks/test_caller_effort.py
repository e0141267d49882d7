"""The caller-effort benchmark's scoring (benchmarks/caller_effort.py), on hand-made calls and one real run.

The hand-made calls are what the FastAGI simulator records of a call: the
commands with their moments, the variables the server set, how long the AGI
lasted.  The real run starts `ivr run --demo-data` and drives two callers
through it on real playback time.
"""

from __future__ import annotations

from benchmarks.caller_effort import Caller, runs, run_population, score, summarize_group, wants
from benchmarks.ivr_process import environment
from ivr.asterisk.audiosocket import AudioFrame, Kind
from ivr.selfservice.dialog import Question
from ivr.sim.audiosocket_peer import AsteriskAudioSocket, Received, Sent
from ivr.sim.fastagi_caller import CallResult, CallScript

PROMPTS = "/var/lib/asterisk/sounds/ivr"
SOUNDS = {f"{PROMPTS}/role": 5.0, f"{PROMPTS}/offer": 6.0, f"{PROMPTS}/answer": 4.0, f"{PROMPTS}/helped": 2.5,
          f"{PROMPTS}/transfer": 1.9, f"{PROMPTS}/closed": 3.0}


def call(commands: list[tuple[float, str]], variables: dict[str, str], duration: float) -> CallResult:
    result = CallResult(script=CallScript(), variables={"IVR_CALL_ID": "c1", **variables}, duration=duration)
    result.timeline = [(0.01, "SET VARIABLE IVR_CALL_ID c1"), *commands]
    return result


def predicted(**changes) -> Caller:
    values = dict(group="predicted", channel="keys", number="+79000000003", behaviour="yes", script=CallScript(),
                  reason="card_pickup", expect_answer=True, answer_prompts=("answer",))
    return Caller(**{**values, **changes})


def test_a_caller_answered_after_one_yes_within_ten_seconds_meets_the_goal():
    result = call([(0.1, f"GET DATA {PROMPTS}/offer 4000 1"), (6.7, f'STREAM FILE {PROMPTS}/answer ""'),
                   (10.6, f"GET DATA {PROMPTS}/helped 4000 1")], {"IVR_CONTAINED": "1", "IVR_QUEUE": "support"}, 14.0)
    row = score(predicted(), result, sounds=SOUNDS.get)
    assert (row["to_answer_s"], row["questions"], row["questions_before_answer"]) == (6.7, 2, 1)
    assert row["got"] == "answer" and row["to_person_s"] is None  # a self-served call is not queued
    assert row["right"] and row["met"]
    assert row["path"][0] == "0.1 get data 6.0 s + wait 0.6 s"  # the offer's prompt, then the caller's key


def test_a_role_question_first_makes_two_questions_before_the_answer_and_misses_the_goal():
    result = call([(0.05, f"GET DATA {PROMPTS}/role 4000 1"), (5.6, f"GET DATA {PROMPTS}/offer 4000 1"),
                   (12.2, f'STREAM FILE {PROMPTS}/answer ""')], {"IVR_CONTAINED": "1"}, 17.0)
    row = score(predicted(identity_prompts=("role",)), result, sounds=SOUNDS.get)
    assert (row["questions_before_answer"], row["identity_asked"], row["to_answer_s"]) == (2, 1, 12.2)
    assert row["right"] and not row["met"]


def test_identity_asked_twice_fails_whatever_the_time():
    result = call([(0.05, f"GET DATA {PROMPTS}/role 4000 1"), (9.1, f"GET DATA {PROMPTS}/role 4000 1"),
                   (14.2, f'STREAM FILE {PROMPTS}/transfer ""')], {"IVR_QUEUE": "support"}, 0.5)
    caller = Caller(group="roles", channel="keys", number="+79000000005", behaviour="other", script=CallScript(),
                    expect_queue="support", identity_prompts=("role",))
    row = score(caller, result, sounds=SOUNDS.get)
    assert row["identity_asked"] == 2 and row["right"] and not row["met"]


def test_time_to_a_person_is_the_agi_end_plus_the_announcement_and_the_queue_must_be_the_rules_one():
    commands = [(0.05, f"GET DATA {PROMPTS}/offer 4000 1"), (6.6, f'STREAM FILE {PROMPTS}/transfer ""')]
    variables = {"IVR_QUEUE": "after_hours", "IVR_INTENT": "card_ready", "IVR_ANNOUNCE": f"{PROMPTS}/closed"}
    caller = Caller(group="other", channel="keys", number="+79000000002", behaviour="other", script=CallScript(),
                    reason="card_ready", expect_queue="after_hours", expect_intent="card_ready")
    row = score(caller, call(commands, variables, 8.6), sounds=SOUNDS.get)
    assert row["to_person_s"] == 11.6 and row["reached_s"] == 11.6  # 8.6 s of AGI, then 3 s of announcement
    assert row["right"] and row["reason_passed"] and row["met"]
    wrong = score(caller, call(commands, {**variables, "IVR_QUEUE": "support", "IVR_ANNOUNCE": ""}, 8.6),
                  sounds=SOUNDS.get)
    assert not wrong["right"] and not wrong["met"] and wrong["to_person_s"] == 8.6
    late = score(caller, call(commands, variables, 12.5), sounds=SOUNDS.get)
    assert late["right"] and not late["met"]  # 15.5 s to the person
    lost = score(caller, call(commands, {**variables, "IVR_INTENT": "general_question"}, 8.6), sounds=SOUNDS.get)
    assert lost["right"] and lost["reason_passed"] is False  # the right queue, but the agent sees another reason


def test_a_call_that_failed_never_meets_its_goal():
    result = call([(0.05, f"GET DATA {PROMPTS}/offer 4000 1")], {}, 120.0)
    result.error = "timeout"
    caller = Caller(group="silent", channel="keys", number="+79000000012", behaviour="silent", script=CallScript(),
                    expect_queue="support")
    row = score(caller, result, sounds=SOUNDS.get)
    assert row["reached_s"] is None and not row["right"] and not row["met"]


def frames(start: float, end: float, step: float = 0.02) -> list[float]:
    return [start + n * step for n in range(int(round((end - start) / step)) + 1)]


def test_by_voice_the_answer_is_the_first_sound_after_the_caller_began_to_say_yes():
    """The AudioSocket session as the simulator records it (loop time; connected at 100.0, 0.2 s after
    the AGI start): the offer, the caller's "yes", the answer; the server's transcript of the dialog."""
    peer = AsteriskAudioSocket()
    peer.connected_at = 100.0
    sound, quiet = b"\x10\x00" * 160, bytes(320)
    peer.received = [Received(t, AudioFrame(sound)) for t in frames(100.0, 103.0) + frames(104.3, 106.0)]
    peer.received += [Received(t, AudioFrame(quiet)) for t in frames(103.02, 104.28)]
    peer.sent = [Sent(t, Kind.AUDIO, sound) for t in frames(103.4, 104.0)]  # "yes", its tail still going
    peer.sent += [Sent(t, Kind.AUDIO, quiet) for t in frames(100.0, 103.38)]
    result = call([(0.2, "EXEC AudioSocket 0c2c6b7e-0000-4000-8000-000000000001,127.0.0.1:9092")],
                  {"IVR_CONTAINED": "1"}, 12.0)
    result.audiosocket = peer
    transcript = [{"step": "offer", "heard": "네", "meaning": "yes"}, {"step": "answer", "said": "..."},
                  {"step": "helped", "heard": "네", "meaning": "yes"}]
    row = score(predicted(channel="voice", answer_after=0), result, transcript)
    assert row["to_answer_s"] == 4.5  # 104.3 on the loop clock, 0.2 s after the AGI start
    assert (row["questions"], row["questions_before_answer"]) == (2, 1) and row["met"]
    assert row["path"][:3] == ["0.2-3.2 server", "3.6-4.2 caller", "4.5-6.2 server"]
    unanswered = score(predicted(channel="voice", answer_after=0), result, transcript[:1])
    assert unanswered["to_answer_s"] is None and not unanswered["met"]  # no answer in the server's transcript


def test_runs_split_frames_at_the_silence_between_prompts():
    frames = [0.0, 0.02, 0.04, 1.0, 1.02, 1.3]
    assert runs(frames, 0.1) == [(0.0, 0.04), (1.0, 1.02), (1.3, 1.3)]
    assert runs(frames, 0.4) == [(0.0, 0.04), (1.0, 1.3)]


def test_the_caller_presses_the_key_the_menu_reads_for_their_reason_else_zero():
    menu = Question(step="open_question", name="open_question", text="", keys_text="",
                    digits={"0": "operator", "1": "card_ready", "2": "documents_missing"})
    offer = Question(step="confirm", name="offer", text="", keys_text="", digits={"0": "operator", "1": "yes"})
    assert wants("other", "documents_missing")(menu) == "2"
    assert wants("other", "loan_payment")(menu) == "0"  # not read out: "anything else, 0"
    assert (wants("other", "card_ready")(offer), wants("yes", None)(offer)) == ("2", "1")
    assert wants("operator", None)(offer) == "0" and wants("silent", None)(menu) == ""


def test_a_group_meets_its_goal_only_when_every_caller_does():
    rows = [{"reached_s": s, "questions": q, "identity_asked": 1, "error": None, "right": True,
             "reason_passed": None, "met": s <= 15} for s, q in ((9.0, 1), (12.0, 2), (16.0, 2))]
    group = summarize_group(rows, "right queue <= 15 s")
    assert (group["median_s"], group["p90_s"], group["max_s"], group["questions_max"]) == (12.0, 16.0, 16.0, 2)
    assert group["verdict"] == "MISSED" and group["met"] == 2
    assert summarize_group(rows[:2], "")["verdict"] == "met"


async def test_two_real_callers_through_ivr_run(tmp_path):
    """A caller a rule sends to a person at once, and one who presses 0 at the first question, on real
    playback time: each reaches the queue the rules give, with the questions the server asked."""
    rows = await run_population(environment(tmp_path), "keys", sizes={"by_rule": 1, "operator": 1}, stagger=0.0)
    by_group = {row["group"]: row for row in rows}
    assert set(by_group) == {"by_rule", "operator"}
    for row in rows:
        assert row["error"] is None and row["right"] and row["met"], row
        assert row["questions"] == row["questions_in_record"]  # the simulator and the call record agree
    assert by_group["by_rule"]["questions"] == 0 and by_group["by_rule"]["reached_s"] < 2.0
    operator = by_group["operator"]
    assert operator["questions"] == 1 and operator["identity_asked"] <= 1
    first_prompt = float(operator["path"][0].split()[3])  # "t get data N s + wait W s"
    assert first_prompt + 0.5 <= operator["reached_s"] <= 15.0  # heard the whole question, then 0
