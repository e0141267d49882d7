"""`make bench`: run the benchmarks and write BENCHMARKS.md (machine and date included).

    python -m benchmarks.run [--customers N] [--calls N] [--rate R] [--workers W] [--skip-postgres]

Budgets come from the architecture notes; every figure is printed next to
its target, met or not.  The machine is shared and noisy, so the call path
is also given as a ratio to the bare FastAGI floor measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.call_path import BENCH_DIR, main_call_path
from benchmarks.caller_effort import main_caller_effort, render_caller_effort
from benchmarks.machine import machine
from benchmarks.agents import main_agents
from benchmarks.dialog_timing import main_dialog_timing, render_dialog_timing
from benchmarks.idle import main_idle
from benchmarks.reports import main_reports, render_reports
from benchmarks.speech import main_speech
from benchmarks.training import main_training, render_training

ROOT = Path(__file__).resolve().parent.parent


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def render(report: dict[str, Any], args: argparse.Namespace) -> str:
    floor = report["floor"]
    out = [
        "# Benchmarks",
        "",
        f"Measured {dt.date.today().isoformat()} on: {machine()}.",
        f"Run with `make bench` (customers {args.customers}, {args.calls} calls per closed-loop run, "
        f"open loop at {args.rate:.0f} calls/s for 10 s, {args.workers} server worker processes). "
        "The simulated Asterisk runs on the same machine and competes for the same cores.",
        f"Load average before the run: {report.get('load_before', '?')}, after: {report.get('load_after', '?')} "
        "(the machine is shared: compare ratios within one run, not absolute figures across runs).",
        "",
        "## FastAGI call path: AGI connect to routing variables set",
        "",
        "| store | scenario | calls/s | p50 ms | p95 ms | p99 ms | errors | floor calls/s | floor p99 ms | cost vs floor (calls/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for store in report["stores"]:
        for scenario, summary in store["calls"].items():
            base = floor.get(scenario, {})
            ratio = ""
            if base.get("calls_per_second") and summary.get("calls_per_second"):
                ratio = f"{base['calls_per_second'] / summary['calls_per_second']:.2f}x"
            lat = summary["latency_ms"]
            out.append(
                f"| {store['store']} | {scenario.replace('_', ' ')} | {summary['calls_per_second']} | "
                f"{lat['p50']} | {lat['p95']} | {lat['p99']} | {summary['errors']} | "
                f"{base.get('calls_per_second', '')} | {base.get('latency_ms', {}).get('p99', '')} | {ratio} |")
    out += ["", "Targets (architecture notes) and this run:", "",
            "| target | measured | verdict |", "| --- | --- | --- |"]
    for store in report["stores"]:
        calls = store["calls"]
        open_key = next((k for k in calls if k.startswith("open_")), None)
        if open_key:
            p99 = calls[open_key]["latency_ms"]["p99"]
            out.append(f"| {store['store']}: p99 <= 20 ms at {open_key[5:]} new calls/s offered | {p99} ms | {verdict(p99, 20)} |")
        best = max(s["calls_per_second"] or 0 for s in calls.values())
        out.append(f"| {store['store']}: >= 1,000 calls/s at saturation | {best} calls/s | {verdict(best, 1000, True)} |")
        sat = calls.get("closed_200", {})
        fsat = floor.get("closed_200", {})
        if sat.get("calls_per_second") and fsat.get("calls_per_second"):
            ratio = fsat["calls_per_second"] / sat["calls_per_second"]
            out.append(f"| {store['store']}: cost per call <= 3x the bare server | {ratio:.2f}x | {verdict(ratio, 3)} |")
        lookup = store["lookup"]
        out.append(f"| {store['store']}: lookup p99 warm <= 5 ms | {lookup['warm_ms']['p99']} ms | {verdict(lookup['warm_ms']['p99'], 5)} |")
        out.append(f"| {store['store']}: lookup p99 cold <= 30 ms | {lookup['cold_ms']['p99']} ms | {verdict(lookup['cold_ms']['p99'], 30)} |")
    out += ["", "## Caller lookup", "",
            "| store | lookups | cold p50 ms | cold p99 ms | warm p50 ms | warm p99 ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for store in report["stores"]:
        lk = store["lookup"]
        out.append(f"| {store['store']} | {lk['lookups']} | {lk['cold_ms']['p50']} | {lk['cold_ms']['p99']} | "
                   f"{lk['warm_ms']['p50']} | {lk['warm_ms']['p99']} |")
    out += ["", "How to read the call-path figures: each call is 3 AGI round trips (IVR_CALL_ID, then one "
            "`EXEC MSet` with the routing variables; a caller with several roles adds the GET DATA question), "
            "the floor is 1. The open-loop p99 is the figure most sensitive to other work on the machine: "
            "a pause of the simulator or the server shows up there first."]
    out += ["", "Cold: first lookup of a number with an empty cache (SQL). Warm: the same numbers again "
            "(in-process cache for SQLite, Redis for PostgreSQL).", ""]
    speech = report.get("speech")
    if speech:
        out += ["", "## Speech: AudioSocket + Vosk grammar recognition + cached prompts", "",
                "Each dialog: a cached prompt, then the caller (eSpeak NG Korean, real time, 20 ms frames) "
                "says a word of a three-word grammar; the server answers a recognised word with a second "
                "cached prompt. Latency: end of the caller's speech to the first frame of the answer "
                "(endpointing silence 250 ms included).", "",
                "| concurrent dialogs | turns | recognised | p50 ms | p95 ms | server cores busy | dialogs per core | server RSS MiB |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for level in speech["levels"]:
            per_core = round(level["dialogs"] / level["server_cores_busy"], 1) if level["server_cores_busy"] else ""
            out.append(f"| {level['dialogs']} | {level['turns']} | {level['answered']} | {level['p50_ms']} | "
                       f"{level['p95_ms']} | {level['server_cores_busy']} | {per_core} | {level['rss_mib']} |")
        top = speech["levels"][-1]
        per_dialog_kib = (top["rss_mib"] - speech["idle_rss_mib"]) * 1024 / top["dialogs"]
        prompt = speech["prompt_ms"]
        per_core = top["dialogs"] / top["server_cores_busy"] if top["server_cores_busy"] else 0
        out += ["", "| target | measured | verdict |", "| --- | --- | --- |",
                f"| end of utterance to result p95 <= 300 ms | {top['p95_ms']} ms at {top['dialogs']} dialogs | "
                f"{verdict(top['p95_ms'], 300)} |",
                f"| cached prompt to first frame <= 20 ms | p95 {prompt['cached']['p95']} ms | "
                f"{verdict(prompt['cached']['p95'], 20)} |",
                f"| >= 20 concurrent dialogs per core (grammar mode) | {per_core:.0f} per busy core "
                f"({top['dialogs']} dialogs on {top['server_cores_busy']} cores) | {verdict(per_core, 20, True)} |",
                "", f"Cold prompt (synthesis + cache write) to first frame: p50 {prompt['cold']['p50']} ms, "
                f"p95 {prompt['cold']['p95']} ms. Server memory: {speech['idle_rss_mib']} MiB idle "
                f"(the Korean model is most of it), about {per_dialog_kib:.0f} KiB more per concurrent dialog."]
    idle = report.get("idle")
    if idle:
        out += ["", "## Idle calls held", "",
                "Calls that reached the self-service dialog (DTMF mode) and wait in its first GET DATA, "
                "as callers listening to a prompt do; the server's resident memory before and with them.", "",
                "| target | measured | verdict |", "| --- | --- | --- |",
                f"| >= 2,000 idle concurrent calls held | {idle['parked']} of {idle['calls']} held | "
                f"{verdict(idle['parked'], 2000, True)} |",
                f"| memory per held call <= 100 KB | {idle['kib_per_call']} KiB "
                f"({idle['rss_before_mib']} -> {idle['rss_held_mib']} MiB) | {verdict(idle['kib_per_call'], 100)} |"]
    agents = report.get("agents")
    if agents:
        steady, burst = agents["steady"], agents["burst"]
        out += ["", "## Manager side: AMI events to screen-pop cards on the agents' WebSockets", "",
                f"{agents['pages']} real WebSocket clients stand for open agent pages (50 agents logged in, 10 "
                "pages each). The simulated manager and the WebSocket clients run in the same process as the "
                "server side and share its event loop; the card is timed from AgentConnect written by the "
                "simulated Asterisk to the message received on the pages' WebSockets.", "",
                "| target | measured | verdict |", "| --- | --- | --- |",
                f"| AgentConnect to card p99 <= 50 ms at 200 events/s | p99 {steady['p99_ms']} ms "
                f"(p50 {steady['p50_ms']} ms) at {steady['events_per_second']} events/s, {steady['cards']} cards | "
                f"{verdict(steady['p99_ms'], 50)} |",
                "", f"Burst ingestion: {burst['events']} AMI events from {burst['calls']} calls at "
                f"{burst['events_per_second']} events/s."]
    dialog = report.get("dialog")
    if dialog:
        out += render_dialog_timing(dialog)
    for key, render_section in (("effort", render_caller_effort), ("reports", render_reports),
                                ("training", render_training)):
        if report.get(key):
            out.append(render_section(report[key]))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=6000, help="calls per closed-loop scenario")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop offered calls/s")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-speech", action="store_true")
    parser.add_argument("--report-calls", type=int, default=1_000_000, help="call records the reports run over")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    report = main_call_path(args)
    if not args.skip_speech:
        report["speech"] = main_speech()
    report["idle"] = main_idle()
    report["agents"] = main_agents()
    report["dialog"] = main_dialog_timing()
    report["effort"] = main_caller_effort()
    if not args.skip_postgres:
        report["reports"] = main_reports(args)
    report["training"] = main_training(args)
    report["load_before"] = load_before
    report["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "last-report.json").write_text(json.dumps(report, indent=2))
    args.output.write_text(render(report, args), encoding="utf-8")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
