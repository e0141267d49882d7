"""Benchmark: what callers spend in the self-service dialog, on Asterisk's real playback timing.

`ivr run --demo-data` runs with the shipped configuration (the general line's
dialog by keys: no speech model is configured) on its own SQLite file.  The
simulated Asterisk answers `GET DATA` and `STREAM FILE` only after the file
the server names has played and the key wait has run, as res_agi does.  Each
showcase caller calls once per kind of behaviour, all at once:

* silent: presses nothing;
* wrong: presses 9 at every question;
* operator: presses 0 at the first question;
* follows: presses 1 at every question (the offer, or the first reason of the
  key menu; "helped"), then rates 5.

Then the prompt cache, first pass against warm: 500 calls of the demo's
customers (50 at once, Asterisk's side answering at once) with only the prompts
rendered at start-up, then the same 500 again, and what the directory holds after.

Reported per kind: time to the queue (IVR_QUEUE set; for a self-served call,
after the goodbye) and, for callers who followed, time to the first word
of the answer, against ``settings.time_to_person`` of the dialog file.

    python -m benchmarks.dialog_timing
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.ivr_process import environment, rounded, running_ivr, verdict
from ivr.selfservice.script import load_dialog_script
from ivr.sim.fastagi_caller import (CallResult, CallScript, mixed_scripts, percentile, place_call, run_closed_loop,
                                    summarize)
from queues.variables import CONTAINED

ROOT = Path(__file__).resolve().parent.parent

CALLERS = {
    "VIP, card reissue overdue": "79000000001",
    "documents owed": "79000000002",
    "card ready": "79000000003",
    "three roles": "79000000005",
    "unknown number": "79990001122",
    "withheld number": None,
}
SECTION = "## Self-service dialog: seconds a caller spends, on real playback timing"
KINDS = {
    "silent": [],
    "wrong": ["9"] * 6,
    "operator": ["0"],
    "follows": ["1", "1", "1", "5"],
}


def time_to_answer(result: CallResult) -> float | None:
    """When the answer began: the first STREAM FILE of a call that ended self-served."""
    if result.variables.get(CONTAINED) != "1":
        return None
    return next((t for t, command in result.timeline if command.upper().startswith("STREAM FILE")), None)


async def _run(directory: Path) -> dict[str, Any]:
    async with running_ivr(environment(directory)) as server:
        plans = [line.strip() for line in server.banner if line.strip().startswith("silent caller")]
        calls = [(kind, caller, CallScript(number=number, dtmf=list(keys)))
                 for kind, keys in KINDS.items() for caller, number in CALLERS.items()]
        results = await asyncio.gather(*(place_call("127.0.0.1", server.port, script, timeout=120)
                                         for _, _, script in calls))
        passes = await _prompt_passes(server.port, directory)
    rows = []
    for (kind, caller, _), result in zip(calls, results):
        rows.append({"kind": kind, "caller": caller, "error": result.error,
                     "to_queue_s": rounded(result.routed_after), "to_answer_s": rounded(time_to_answer(result)),
                     "contained": result.variables.get(CONTAINED) == "1",
                     "duration_s": rounded(result.duration)})
    return {"rows": rows, "plans": plans, "passes": passes}


async def _prompt_passes(port: int, directory: Path) -> dict[str, Any]:
    from benchmarks.call_path import sample_numbers

    numbers = await sample_numbers(f"sqlite+aiosqlite:///{directory / 'crm.sqlite3'}", 500)
    scripts = mixed_scripts(numbers, 500, lines=("general",), dtmf="", garbage_rate=0.0, seed=5)
    passes: dict[str, Any] = {}
    for name in ("first", "warm"):
        started = asyncio.get_running_loop().time()
        outcome = await run_closed_loop("127.0.0.1", port, scripts, 50, fast=True)
        passes[name] = summarize(outcome, asyncio.get_running_loop().time() - started)
    files = [p for p in (directory / "prompts").iterdir() if p.is_file()]
    passes["prompt_files"] = len(files)
    passes["prompt_mib"] = round(sum(p.stat().st_size for p in files) / 2**20, 1)
    return passes


def main_dialog_timing() -> dict[str, Any]:
    script = load_dialog_script(ROOT / "config" / "dialog.yaml")
    with tempfile.TemporaryDirectory(prefix="ivr-dialog-bench-") as directory:
        report = asyncio.run(_run(Path(directory)))
    report["budget_s"] = script.settings.time_to_person
    kinds = {}
    for kind in KINDS:
        rows = [r for r in report["rows"] if r["kind"] == kind]
        queued = [r["to_queue_s"] for r in rows if r["to_queue_s"] is not None]
        answered = [r["to_answer_s"] for r in rows if r["to_answer_s"] is not None]
        kinds[kind] = {"calls": len(rows), "errors": sum(1 for r in rows if r["error"]),
                       "queued": len(queued), "to_queue_p50_s": rounded(percentile(queued, 50)) if queued else None,
                       "to_queue_max_s": max(queued) if queued else None,
                       "answered": len(answered), "to_answer_max_s": max(answered) if answered else None}
    report["kinds"] = kinds
    return report


def render_dialog_timing(report: dict[str, Any]) -> list[str]:
    budget = report["budget_s"]
    out = ["", SECTION, "",
           "The shipped configuration (keys; no speech model), `ivr run --demo-data`, a simulated Asterisk "
           "that answers GET DATA / STREAM FILE after the prompt has played and the key wait has run. "
           "Each showcase caller once per kind, all at once. Time to queue: AGI connect to the routing "
           "variables set (IVR_QUEUE; for a call self-service answered, after its goodbye, when the "
           "dialplan hangs up instead of queueing). Time to answer: to the first word of the answer; "
           "'-' where no answer was given (no dialog by the rules, or a reason only a person handles).", "",
           "| caller | silent: to queue s | wrong keys: to queue s | presses 0: to queue s | "
           "follows: to answer s | follows: to queue s |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    by = {(r["kind"], r["caller"]): r for r in report["rows"]}
    for caller in CALLERS:
        def cell(kind: str, key: str) -> str:
            value = by[(kind, caller)][key]
            return "-" if value is None else f"{value}"
        out.append(f"| {caller} | {cell('silent', 'to_queue_s')} | {cell('wrong', 'to_queue_s')} | "
                   f"{cell('operator', 'to_queue_s')} | {cell('follows', 'to_answer_s')} | "
                   f"{cell('follows', 'to_queue_s')} |")
    silent = report["kinds"]["silent"]
    wrong = report["kinds"]["wrong"]
    operator = report["kinds"]["operator"]
    out += ["", "| target | measured | verdict |", "| --- | --- | --- |",
            f"| a silent caller reaches the queue <= {budget:g} s after the AGI start | "
            f"max {silent['to_queue_max_s']} s ({silent['queued']} of {silent['calls']} queued) | "
            f"{verdict(silent['to_queue_max_s'], budget)} |",
            f"| a caller pressing wrong keys reaches the queue <= {budget:g} s | max {wrong['to_queue_max_s']} s | "
            f"{verdict(wrong['to_queue_max_s'], budget)} |",
            f"| a caller pressing 0 is not held by a menu (<= 5 s) | max {operator['to_queue_max_s']} s | "
            f"{verdict(operator['to_queue_max_s'], 5)} |"]
    passes = report.get("passes")
    if passes:
        first, warm = passes["first"], passes["warm"]
        out += ["", "The prompt cache: 500 calls of the demo's customers on the general line (keys, 50 at once, "
                "Asterisk's side answering at once), first with only the prompts rendered at start-up, then again:", "",
                "| pass | calls/s | p50 ms | p95 ms | p99 ms | errors |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, summary in (("first (prompts rendered)", first), ("warm (prompts cached)", warm)):
            lat = summary["latency_ms"]
            out.append(f"| {name} | {summary['calls_per_second']} | {lat['p50']} | {lat['p95']} | {lat['p99']} | "
                       f"{summary['errors']} |")
        out += ["", f"The prompt directory then holds {passes['prompt_files']} files, {passes['prompt_mib']} MiB "
                "(bounded by `prompts.max_megabytes`)."]
    if report.get("plans"):
        out += ["", "The server's own plan at start-up (worst first question per language):", ""]
        out += [f"- {plan}" for plan in report["plans"]]
    return out


def update_benchmarks_file(path: Path, section: list[str]) -> None:
    """Put this benchmark's section into BENCHMARKS.md (replacing an older one), dated, with the machine."""
    import datetime as dt

    from benchmarks.machine import machine

    section = list(section)
    at = section.index(SECTION)
    section.insert(at + 1, "")
    section.insert(at + 2, f"Measured {dt.date.today().isoformat()} on: {machine()} "
                           "(`python -m benchmarks.dialog_timing`; `make bench` measures it with the rest).")
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        start = text.index(SECTION)
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start].rstrip("\n") + ("" if following < 0 else "\n" + text[following:])
    path.write_text(text.rstrip("\n") + "\n" + "\n".join(section) + "\n", encoding="utf-8")


if __name__ == "__main__":
    result = main_dialog_timing()
    lines = render_dialog_timing(result)
    print("\n".join(lines))
    update_benchmarks_file(ROOT / "BENCHMARKS.md", lines)
    print(f"written {ROOT / 'BENCHMARKS.md'}")
