"""Benchmark of the FastAGI call path and of the caller lookup.

For each store (SQLite, and PostgreSQL + Redis when their binaries exist) the
CRM holds `--customers` customers (1,000,000 by default; the seeded files are
kept under var/bench/ and reused).  The server runs as `ivr run` in its own
process(es); the simulated Asterisk runs in this one.  Measured, in one run:

* closed loop at 50 and 200 concurrent calls: calls/s and p50/p95/p99 from
  TCP connect to IVR_QUEUE set;
* open loop at a fixed offered rate (300 new calls/s): the same latencies;
* the same three for a bare FastAGI server that only sets one variable (the
  floor), and the ratio of the two;
* cold (cache empty) and warm (cached) caller lookup latency.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from caller_id.cache import InProcessCache, RedisCache
from caller_id.directory import CallerDirectory
from caller_id.lookup import SqlSource
from caller_id.seed import seed
from caller_id.store import Database
from ivr.sim.fastagi_caller import mixed_scripts, percentile, run_closed_loop, run_open_loop, summarize

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def ensure_seeded(url: str, customers: int, marker: Path | None) -> None:
    """Seed; with a marker file (a kept SQLite file) only once."""
    if marker is not None and marker.exists() and marker.read_text() == str(customers):
        return
    db = Database(url)
    try:
        await db.migrate()
        started = time.perf_counter()
        await seed(db, customers, seed=1, progress=sys.stderr.isatty())
        print(f"  seeded {customers} customers in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        await db.dispose()
    if marker is not None:
        marker.write_text(str(customers))


async def sample_numbers(url: str, count: int) -> list[str]:
    from sqlalchemy import func, select

    from caller_id.models import PhoneNumber

    db = Database(url)
    try:
        async with db.session() as session:
            total = await session.scalar(select(func.max(PhoneNumber.id)))
            rng = random.Random(3)
            ids = rng.sample(range(1, total + 1), min(count, total))
            numbers: list[str] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                numbers += list(await session.scalars(select(PhoneNumber.e164).where(PhoneNumber.id.in_(chunk))))
            return numbers
    finally:
        await db.dispose()


async def lookup_latency(url: str, redis_url: str | None, numbers: list[str]) -> dict[str, Any]:
    db = Database(url)
    cache: Any = RedisCache(redis_url, ttl=300) if redis_url else InProcessCache(ttl=300, max_entries=1_000_000)
    directory = CallerDirectory([SqlSource(db)], cache, timeout=5.0, db_for_version=db)
    await directory.start()
    try:
        if redis_url:
            await cache.clear()
        cold, warm = [], []
        for number in numbers:
            t = time.perf_counter()
            await directory.lookup(number)
            cold.append((time.perf_counter() - t) * 1000)
        for number in numbers:
            t = time.perf_counter()
            await directory.lookup(number)
            warm.append((time.perf_counter() - t) * 1000)
    finally:
        await directory.close()
        await db.dispose()
    return {
        "cold_ms": {p: round(percentile(cold, q), 3) for p, q in (("p50", 50), ("p99", 99))},
        "warm_ms": {p: round(percentile(warm, q), 3) for p, q in (("p50", 50), ("p99", 99))},
        "lookups": len(numbers),
    }


def start_process(args: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args} exited: see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{args} did not listen on {port}: see {log}")


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def load_scenarios(port: int, numbers: list[str], calls: int, rate: float) -> dict[str, Any]:
    """Closed loop at 50 and 200, then open loop at `rate`; warm-up first."""
    results: dict[str, Any] = {}
    warmup = mixed_scripts(numbers, min(2000, calls), seed=11)
    await run_closed_loop("127.0.0.1", port, warmup, 50, fast=True)
    for concurrency in (50, 200):
        scripts = mixed_scripts(numbers, calls, seed=concurrency)
        started = time.perf_counter()
        outcome = await run_closed_loop("127.0.0.1", port, scripts, concurrency, fast=True)
        results[f"closed_{concurrency}"] = summarize(outcome, time.perf_counter() - started)
    scripts = mixed_scripts(numbers, int(rate * 10), seed=99)
    started = time.perf_counter()
    outcome = await run_open_loop("127.0.0.1", port, scripts, rate, fast=True)
    results[f"open_{int(rate)}"] = summarize(outcome, time.perf_counter() - started)
    return results


def server_env(url: str, redis_url: str | None, port: int, workers: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "IVR_DATABASE_URL": url, "IVR_REDIS_URL": redis_url or "", "IVR_AGI_PORT": str(port),
        "IVR_AGI_WORKERS": str(workers), "IVR_LOG_LEVEL": "WARNING",
        # the budget is the call path without speech; the web pages are not measured here
        "IVR_SELF_SERVICE": "off", "IVR_WEB_PORT": str(free_port()),
    })
    return env


def run_store(name: str, url: str, redis_url: str | None, args: Any, *, keep: bool) -> dict[str, Any]:
    print(f"[{name}] preparing {args.customers} customers ...", flush=True)
    marker = BENCH_DIR / f"{name}-{args.customers}.seeded" if keep else None
    asyncio.run(ensure_seeded(url, args.customers, marker))
    numbers = asyncio.run(sample_numbers(url, 5000))
    print(f"[{name}] lookup latency ...", flush=True)
    lookups = asyncio.run(lookup_latency(url, redis_url, numbers[:2000]))
    port = free_port()
    log = BENCH_DIR / f"server-{name}.log"
    server = start_process([sys.executable, "-m", "ivr.cli", "run"],
                           server_env(url, redis_url, port, args.workers), port, log)
    try:
        print(f"[{name}] call path ...", flush=True)
        calls = asyncio.run(load_scenarios(port, numbers, args.calls, args.rate))
    finally:
        stop_process(server)
    return {"store": name, "lookup": lookups, "calls": calls}


def run_floor(args: Any) -> dict[str, Any]:
    port = free_port()
    log = BENCH_DIR / "server-floor.log"
    env = dict(os.environ, FLOOR_PORT=str(port), FLOOR_WORKERS=str(args.workers))
    server = start_process([sys.executable, "-m", "benchmarks.floor"], env, port, log)
    try:
        print("[floor] bare FastAGI server ...", flush=True)
        return asyncio.run(load_scenarios(port, ["79161234567"], args.calls, args.rate))
    finally:
        stop_process(server)


def main_call_path(args: Any) -> dict[str, Any]:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"stores": []}
    report["floor"] = run_floor(args)
    sqlite_url = f"sqlite+aiosqlite:///{BENCH_DIR / f'crm-{args.customers}.sqlite3'}"
    report["stores"].append(run_store("sqlite", sqlite_url, None, args, keep=True))
    if not args.skip_postgres:
        try:
            from tests.servers import PostgresCluster, RedisServer
        except Exception as exc:  # noqa: BLE001
            print(f"[postgres] skipped: {exc}")
            return report
        cluster, redis = PostgresCluster(), RedisServer()
        try:
            cluster.start()
            redis.start()
            url = cluster.url(cluster.create_database("bench"))
            report["stores"].append(run_store("postgres+redis", url, redis.url, args, keep=False))
        finally:
            redis.stop()
            cluster.close()
    return report

