"""Prometheus metrics: the call path's counters, and the agent side's state read at scrape time.

The call path (FastAGI flow) counts into the module-level metrics below, in
prometheus_client's default registry.  The agent side (hub, screen-pop, AMI
client, call center, live queues and their statistics) keeps its own
``stats`` dicts and snapshots; `AgentSideCollector` turns them into metrics
when Prometheus scrapes, so nothing on the event path pays for it.  The web
app registers one collector per app in a registry of its own and serves
both registries on ``/metrics`` (`exposition`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# The outcomes of a call (ivr.call.inbound) and the reasons the call path fails open with
# (`InboundScript._fail_open`; "lookup_<source>" for a caller lookup that degraded, see
# caller_id.directory.LookupResult).  Their label sets exist from the start, so a dashboard or an
# alert on rate() sees 0, not "no data", before the first one happens; tests/ivr/test_metrics.py
# checks that ivr/call/inbound.py uses no other.
CALL_OUTCOMES = ("routed", "self_served", "fail_open", "hangup")
FAIL_OPEN_REASONS = (
    "lookup_timeout", "lookup_error", "decision_timeout", "decision_error", "role_question_error",
    "prompt_error", "dialog_error", "agi_error", "internal_error",
)

CALLS = Counter("ivr_calls_total", "Inbound calls handled by the FastAGI flow", ["outcome"])
FAIL_OPEN = Counter(
    "ivr_fail_open_total",
    "Times the call path degraded to the dialplan default or an unknown caller",
    ["reason"],
)
for _outcome in CALL_OUTCOMES:
    CALLS.labels(outcome=_outcome)
for _reason in FAIL_OPEN_REASONS:
    FAIL_OPEN.labels(reason=_reason)
# How post-call surveys ended (ivr.call.survey): every question answered, some, or none.
SURVEY_RESULTS = ("complete", "partial", "unanswered")
SURVEYS = Counter("ivr_surveys_total", "Post-call surveys by how far the caller answered", ["result"])
for _result in SURVEY_RESULTS:
    SURVEYS.labels(result=_result)
CALL_PATH_SECONDS = Histogram(
    "ivr_call_path_seconds",
    "AGI connect to routing variables set",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

AGENT_STATES = ("logged_in", "available", "ringing", "in_call", "busy", "paused", "unavailable")


def calls_handled() -> dict[str, int]:
    """Calls this process's FastAGI flow has handled so far, by outcome (from `CALLS`)."""
    counts: dict[str, int] = {}
    for metric in CALLS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels["outcome"]
                counts[outcome] = counts.get(outcome, 0) + int(sample.value)
    return counts


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text format of the default registry and then of `registries` (their names must not overlap)."""
    return b"".join(generate_latest(registry) for registry in (REGISTRY, *registries))


class AgentSideCollector:
    """The agent side's counters and live queue figures as Prometheus metrics, read at scrape time.

    agent_side  `ivr.services.AgentSide`
    services    `ivr.services.Services` (for the self-service dialog's counters), optional
    sockets     a callable giving the number of open web sockets, optional
    """

    def __init__(self, agent_side: Any, services: Any = None, sockets: Callable[[], int] | None = None):
        self.agent_side = agent_side
        self.services = services
        self.sockets = sockets

    def collect(self) -> Iterator[Metric]:
        side = self.agent_side
        yield self._component_counters()
        yield _gauge("ivr_ami_connected", "1 while the AMI connection is up",
                     1.0 if side.ami is not None and side.ami.connected else 0.0)
        yield _gauge("ivr_hub_connected", "1 while the message hub reaches the other nodes (always 1 in process)",
                     1.0 if getattr(side.hub, "connected", True) else 0.0)
        yield _gauge("ivr_screenpop_calls", "Calls the screen-pop follows now", side.screenpop.calls)
        if self.sockets is not None:
            yield _gauge("ivr_web_sockets", "Open agent and wallboard WebSockets", self.sockets())
        yield from self._queues()

    def _component_counters(self) -> Metric:
        side, services = self.agent_side, self.services
        center = side.center
        sources: dict[str, Mapping[str, Any] | None] = {
            "hub": getattr(side.hub, "stats", None),
            "screenpop": side.screenpop.stats,
            "callcenter": center.stats if center is not None else None,
            "call_records": center.records.stats if center is not None else None,
            "ami": getattr(side.ami, "stats", None) if side.ami is not None else None,
            "queue_state": getattr(side.queue_state, "counters", None),
            "queue_stats": getattr(side.queue_stats, "counters", None),
            "selfservice": getattr(getattr(services, "selfservice", None), "stats", None),
        }
        counters = CounterMetricFamily("ivr_component_events", "Counters the server's components keep",
                                       labels=["component", "counter"])
        for component, stats in sources.items():
            for name, value in (stats or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    counters.add_metric([component, str(name)], value)
        return counters

    def _queues(self) -> Iterator[Metric]:
        stats = self.agent_side.queue_stats
        live = self.agent_side.queue_state.snapshot()["queues"]
        figures = stats.snapshot()
        waiting = GaugeMetricFamily("ivr_queue_callers_waiting", "Callers waiting in the queue now", labels=["queue"])
        longest = GaugeMetricFamily("ivr_queue_longest_wait_seconds", "Wait of the caller waiting longest now",
                                    labels=["queue"])
        agents = GaugeMetricFamily("ivr_queue_agents", "Queue members by state now", labels=["queue", "state"])
        asterisk_level = GaugeMetricFamily(
            "ivr_queue_asterisk_service_level_ratio",
            "Share answered within the service level as Asterisk counts it since its queue statistics were "
            "reset (QueueParams ServicelevelPerf)", labels=["queue"])
        for name, queue in live.items():
            waiting.add_metric([name], queue["callers_waiting"])
            longest.add_metric([name], queue["longest_wait"])
            for state in AGENT_STATES:
                agents.add_metric([name, state], queue["agents"].get(state, 0))
            perf = queue.get("params", {}).get("service_level_perf")
            if perf is not None:
                asterisk_level.add_metric([name], perf / 100.0)
        yield from (waiting, longest, agents, asterisk_level)

        # A queue Asterisk reports but no call reached within the window has zeros, not no samples.
        per_queue = dict(figures["queues"])
        for name in live:
            if name not in per_queue:
                per_queue[name] = {**stats.figures(name), "segments": {}}
        threshold = GaugeMetricFamily("ivr_queue_service_level_threshold_seconds",
                                      "Answered within this many seconds counts for the service level",
                                      labels=["queue"])
        for name in sorted(per_queue):
            if per_queue[name].get("service_level_seconds") is not None:
                threshold.add_metric([name], per_queue[name]["service_level_seconds"])
        yield threshold

        window = " over the statistics window"
        calls = GaugeMetricFamily("ivr_queue_window_calls", "Calls answered / abandoned" + window,
                                  labels=["queue", "segment", "outcome"])
        level = GaugeMetricFamily("ivr_queue_service_level_ratio",
                                  "Share answered within the service-level threshold" + window,
                                  labels=["queue", "segment"])
        wait = GaugeMetricFamily("ivr_queue_average_wait_seconds", "Average wait" + window,
                                 labels=["queue", "segment"])
        talk = GaugeMetricFamily("ivr_queue_average_talk_seconds", "Average talk time" + window,
                                 labels=["queue", "segment"])
        rows: list[tuple[str, str, Mapping[str, Any]]] = [("", "", figures["total"])]
        rows += [("", segment, f) for segment, f in figures["segments"].items()]
        for name in sorted(per_queue):
            rows.append((name, "", per_queue[name]))
            rows += [(name, segment, f) for segment, f in per_queue[name].get("segments", {}).items()]
        for queue, segment, f in rows:  # "" stands for every queue / every segment
            labels = [queue, segment]
            calls.add_metric([*labels, "answered"], f["answered"])
            calls.add_metric([*labels, "abandoned"], f["abandoned"])
            for family, key in ((level, "service_level"), (wait, "average_wait"), (talk, "average_talk")):
                if f.get(key) is not None:
                    family.add_metric(labels, f[key])
        yield from (calls, level, wait, talk)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
