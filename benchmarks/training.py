"""The learned prediction at scale: train on a million confirmed call records, rank one live call.

    python -m benchmarks.training [--records N] [--customers N] [--days D]

A CRM is seeded (`caller_id.seed`) and a call history generated over it by
the real process (`caller_id.seed_history`: the real lookup and `predict` for
every call), enough calls that about `records` of them are confirmed.  Then,
as `ivr model train` does: the confirmed records are read back from SQLite
(their stored features), vectorised and fitted (`caller_id.learning.train`),
timed and with the peak memory that training added; the held-out figures of
the model and both baselines; and the live ranker's cost for one call
(`LiveRanker.rerank`, the vectorisation included) over held-out calls.

Target (issue 10): training on 1,000,000 records in <= 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

ZONE = "Europe/Moscow"
HOLDOUT_DAYS = 14.0
CONFIRMED_SHARE = 0.8  # caller_id.seed_history: CALLER_CONFIRMS + AGENT_CONFIRMS


class _PeakMemory:
    """The process's largest resident set while the block runs, sampled every 50 ms."""

    def __init__(self) -> None:
        self.start_mib = self.peak_mib = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mib = max(self.peak_mib, _rss_mib())

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, _rss_mib())


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _history(path: Path, customers: int, calls: int, days: float) -> dict[str, Any]:
    from caller_id.catalogue import load_catalogue
    from caller_id.seed import seed
    from caller_id.seed_history import seed_history
    from caller_id.store import Database
    from ivr.config import load_config

    config = load_config(None, environ={})
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.migrate()
        started = time.perf_counter()
        await seed(db, customers, seed=1)
        crm_seconds = time.perf_counter() - started
        started = time.perf_counter()
        summary = await seed_history(db, load_catalogue(config.intents_file), calls, seed=1, days=days,
                                     zone=ZONE, callers=customers * 2)
        return {"crm_seconds": round(crm_seconds, 1), "history_seconds": round(time.perf_counter() - started, 1),
                "calls": summary.calls, "unknown_callers": summary.unknown_callers}
    finally:
        await db.dispose()


async def _examples(path: Path) -> list[Any]:
    from caller_id import learning
    from caller_id.store import Database

    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        return await learning.load_examples(db, ZONE)
    finally:
        await db.dispose()


def main_training(args: Any) -> dict[str, Any]:
    """Seed, generate, read back, train, rank; the figures as a dict (`render_training`)."""
    from caller_id import learning
    from caller_id.catalogue import load_catalogue
    from caller_id.predict import Intent
    from ivr.config import load_config

    records = getattr(args, "records", None) or 1_000_000
    customers = getattr(args, "training_customers", None) or max(2_000, records // 5)
    days = getattr(args, "days", None) or 60.0
    calls = round(records / CONFIRMED_SHARE)
    catalogue = load_catalogue(load_config(None, environ={}).intents_file)
    report: dict[str, Any] = {"machine": machine(), "records_wanted": records, "customers": customers,
                              "days": days, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as folder:
        path = Path(folder) / "history.sqlite3"
        report["generation"] = asyncio.run(_history(path, customers, calls, days))
        with _PeakMemory() as memory:
            started = time.perf_counter()
            examples = asyncio.run(_examples(path))
            read = time.perf_counter() - started
            started = time.perf_counter()
            model = learning.train(examples, catalogue, holdout_days=HOLDOUT_DAYS)
            fit = time.perf_counter() - started
        report["training"] = {
            "records": len(examples), "read_seconds": round(read, 1), "fit_seconds": round(fit, 1),
            "total_seconds": round(read + fit, 1), "trained_calls": model.trained["calls"],
            "rss_before_mib": round(memory.start_mib), "rss_peak_mib": round(memory.peak_mib),
            "temperature": model.trained["temperature"],
        }
        evaluation = model.evaluation
        report["evaluation"] = evaluation.to_dict()
        ranker = learning.LiveRanker(model, catalogue)
        held_out = [e for e in examples if e.at >= evaluation.since][:5000]
        costs = []
        for example in held_out:
            intents = [Intent(name, signals.get("rules", 0.0), (), None, signals)
                       for name, signals in example.features.intents]
            started = time.perf_counter()
            ranker.rerank(intents, example.features, line=example.line, segment=example.segment, now=example.at)
            costs.append((time.perf_counter() - started) * 1e6)
        costs.sort()
        report["live"] = {"calls": len(costs), "p50_us": round(statistics.median(costs), 1),
                          "p99_us": round(costs[int(len(costs) * 0.99) - 1], 1),
                          "mean_guesses": round(statistics.mean(len(e.features.intents) for e in held_out), 2),
                          "failures": ranker.failures}
    return report


def render_training(report: dict[str, Any]) -> str:
    """The figures as a Markdown section."""
    training, live, generation = report["training"], report["live"], report["generation"]
    evaluation = report["evaluation"]
    verdict = "met" if training["total_seconds"] <= 120 else "MISSED"
    out = [
        "## Learned prediction: training and live ranking", "",
        f"Measured {dt.date.today().isoformat()} on: {report['machine']}. A CRM of {report['customers']:,} "
        f"customers and a history of {generation['calls']:,} calls over {report['days']:.0f} days "
        f"(caller_id.seed_history, the real lookup and prediction for every call: CRM "
        f"{generation['crm_seconds']} s, history {generation['history_seconds']} s), of which "
        f"{training['records']:,} confirmed; trained as `ivr model train` does.", "",
        "| target | measured | verdict |", "| --- | --- | --- |",
        f"| training on 1,000,000 records <= 2 min on 2 cores | {training['records']:,} records: read "
        f"{training['read_seconds']} s + vectorise and fit {training['fit_seconds']} s = "
        f"{training['total_seconds']} s | {verdict} |",
        f"| ranking one live call well under 1 ms | p50 {live['p50_us']} µs, p99 {live['p99_us']} µs "
        f"({live['mean_guesses']} guesses a call) | {'met' if live['p99_us'] < 1000 else 'MISSED'} |", "",
        f"Memory: {training['rss_before_mib']} MiB before reading the records, {training['rss_peak_mib']} MiB "
        f"at the peak of training. Fitted on {training['trained_calls']:,} calls before the held-out "
        f"period (temperature {training['temperature']}).", "",
        f"Held out: the last {HOLDOUT_DAYS:.0f} days, {evaluation['model']['calls']:,} confirmed calls.", "",
        "| ranking | top-1 | top-3 | Brier | ECE |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (("model", "learned model"), ("rules", "catalogue rules"),
                       ("newest_case", "newest open case")):
        scores = evaluation[key]
        brier = "-" if scores["brier"] is None else scores["brier"]
        ece = "-" if scores["ece"] is None else scores["ece"]
        out.append(f"| {label} | {scores['top1']} | {scores['top3']} | {brier} | {ece} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training")
    parser.add_argument("--records", type=int, default=1_000_000, help="confirmed call records to train on")
    parser.add_argument("--customers", dest="training_customers", type=int,
                        help="CRM customers (default: records / 5)")
    parser.add_argument("--days", type=float, default=60.0,
                        help="days the history covers (the seeded cases are of the last 60 days)")
    report = main_training(parser.parse_args())
    print(render_training(report))


if __name__ == "__main__":
    main()
