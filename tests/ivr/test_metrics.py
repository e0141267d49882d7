"""Prometheus metrics: label sets that exist from the start, and the per-queue gauges from real traces."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ivr import metrics
from ivr.services import AgentSide
from ivr.metrics import AGENT_STATES, CALL_OUTCOMES, FAIL_OPEN_REASONS, SURVEY_RESULTS, AgentSideCollector
from queues.state import QueueState
from queues.stats import QueueStatistics
from tests.queues.test_state import Clock, Replay, read_trace

PROJECT = Path(__file__).resolve().parents[2]


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format (labels must match exactly)."""
    for line in text.splitlines():
        found = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if found is None or found.group(1) != name:
            continue
        if dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(2) or "")) == labels:
            return float(found.group(3))
    return None


def _calls_of(path: Path, function: str) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == function]


def _degraded_lookup_sources() -> set[str]:
    """The lookup sources caller_id/directory.py returns with a `degraded` reason (its `_result` calls)."""
    sources = set()
    for call in _calls_of(PROJECT / "caller_id" / "directory.py", "_result"):
        source, degraded = call.args[2], call.args[3]
        if not (isinstance(degraded, ast.Constant) and degraded.value is None):
            assert isinstance(source, ast.Constant), ast.unparse(call)
            sources.add(source.value)
    return sources


def test_every_fail_open_reason_of_the_call_path_is_initialised():
    """Scan ivr/call/inbound.py: each `_fail_open(state, reason, ...)` names a reason of FAIL_OPEN_REASONS."""
    used = set()
    calls = _calls_of(PROJECT / "ivr" / "call" / "inbound.py", "_fail_open")
    assert calls, "no _fail_open calls found: the scan is out of date"
    for call in calls:
        reason = call.args[1]
        if isinstance(reason, ast.Constant):
            used.add(reason.value)
        elif isinstance(reason, ast.JoinedStr):  # f"lookup_{decision.lookup.source}"
            prefix = reason.values[0]
            assert isinstance(prefix, ast.Constant) and prefix.value == "lookup_", ast.unparse(reason)
            degraded = _degraded_lookup_sources()
            assert degraded, "caller_id/directory.py returns no degraded lookups: the scan is out of date"
            used |= {f"lookup_{source}" for source in degraded}
        else:
            pytest.fail(f"a fail-open reason the scan cannot read: {ast.unparse(reason)}")
    assert {"agi_error", "decision_timeout", "lookup_timeout"} <= used  # the scan found what it should
    assert used <= set(FAIL_OPEN_REASONS), f"not in metrics.FAIL_OPEN_REASONS: {used - set(FAIL_OPEN_REASONS)}"


def test_every_call_outcome_of_the_call_path_is_initialised():
    """Scan ivr/call/inbound.py for the outcomes it records (`CallContext(..., outcome=...)` and
    `context.outcome = ...`)."""
    tree = ast.parse((PROJECT / "ivr" / "call" / "inbound.py").read_text(encoding="utf-8"))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword):
            if node.arg == "outcome" and isinstance(node.value, ast.Constant):
                used.add(node.value.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            used |= {node.value.value for target in node.targets
                     if isinstance(target, ast.Attribute) and target.attr == "outcome"}
    assert {"routed", "hangup", "fail_open"} <= used
    assert used <= set(CALL_OUTCOMES), f"not in metrics.CALL_OUTCOMES: {used - set(CALL_OUTCOMES)}"


def test_a_fresh_process_exposes_every_reason_and_outcome_at_zero():
    """What Prometheus scrapes before the first call: every series there, at 0."""
    code = "import sys; from ivr.metrics import exposition; sys.stdout.write(exposition().decode())"
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=PROJECT, timeout=60).stdout
    for reason in FAIL_OPEN_REASONS:
        assert _sample(text, "ivr_fail_open_total", reason=reason) == 0, reason
    for outcome in CALL_OUTCOMES:
        assert _sample(text, "ivr_calls_total", outcome=outcome) == 0, outcome
    for result in SURVEY_RESULTS:
        assert _sample(text, "ivr_surveys_total", result=result) == 0, result


def test_calls_handled_counts_by_outcome():
    before = metrics.calls_handled()
    metrics.CALLS.labels(outcome="hangup").inc()
    after = metrics.calls_handled()
    assert after["hangup"] == before["hangup"] + 1
    assert set(CALL_OUTCOMES) <= set(after)


async def test_per_queue_gauges_follow_a_recorded_asterisk_call(base_config, start_server):
    """The resync answer and an answered call of the real Asterisk 23 traces, read as Prometheus reads them."""
    server = await start_server(base_config)
    side = AgentSide(base_config, server.services)
    clock = Clock()
    side.queue_state = QueueState(clock=clock)
    side.queue_stats = QueueStatistics(window=3600, clock=clock)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentSideCollector(side, server.services))
    try:
        Replay(read_trace("ami-login-and-status"), clock, side.queue_state, side.queue_stats).rest()
        queues = set(side.queue_state.snapshot()["queues"])
        assert {"support", "vip", "b2b", "ringtest"} <= queues

        text = generate_latest(registry).decode()
        for queue in queues:  # before any call: every queue has its series, at 0
            assert _sample(text, "ivr_queue_callers_waiting", queue=queue) == 0
            assert _sample(text, "ivr_queue_longest_wait_seconds", queue=queue) == 0
            for outcome in ("answered", "abandoned"):
                assert _sample(text, "ivr_queue_window_calls", queue=queue, segment="", outcome=outcome) == 0
            for state in AGENT_STATES:
                assert _sample(text, "ivr_queue_agents", queue=queue, state=state) is not None
            assert _sample(text, "ivr_queue_service_level_threshold_seconds", queue=queue) is not None
            assert _sample(text, "ivr_queue_asterisk_service_level_ratio", queue=queue) == 0.0
        assert _sample(text, "ivr_queue_service_level_ratio", queue="support", segment="") is None  # no call yet

        call = Replay(read_trace("ami-queue-answered"), clock, side.queue_state, side.queue_stats)
        call.until("QueueCallerJoin")
        clock.advance(3.0)
        text = generate_latest(registry).decode()
        assert _sample(text, "ivr_queue_callers_waiting", queue="support") == 1
        assert _sample(text, "ivr_queue_longest_wait_seconds", queue="support") == pytest.approx(3.0)
        assert _sample(text, "ivr_queue_callers_waiting", queue="vip") == 0

        call.until("QueueMemberStatus", Queue="b2b")
        text = generate_latest(registry).decode()
        assert _sample(text, "ivr_queue_agents", queue="support", state="in_call") == 1
        assert _sample(text, "ivr_queue_agents", queue="vip", state="busy") == 1

        call.rest()
        text = generate_latest(registry).decode()
        assert _sample(text, "ivr_queue_callers_waiting", queue="support") == 0
        assert _sample(text, "ivr_queue_window_calls", queue="support", segment="", outcome="answered") == 1
        assert _sample(text, "ivr_queue_window_calls", queue="vip", segment="", outcome="answered") == 0
        assert _sample(text, "ivr_queue_service_level_ratio", queue="support", segment="") == 1.0
        assert _sample(text, "ivr_queue_agents", queue="support", state="available") == 1
    finally:
        await side.stop()
