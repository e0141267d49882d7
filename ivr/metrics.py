"""Prometheus metrics of the call path (served on /metrics by the web app)."""

from prometheus_client import Counter, Histogram

CALLS = Counter("ivr_calls_total", "Inbound calls handled by the FastAGI flow", ["outcome"])
FAIL_OPEN = Counter(
    "ivr_fail_open_total",
    "Times the call path degraded to the dialplan default or an unknown caller",
    ["reason"],
)
CALL_PATH_SECONDS = Histogram(
    "ivr_call_path_seconds",
    "AGI connect to routing variables set",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
