"""`ivr run --demo-data` in a process of its own, for the benchmarks that call it as Asterisk would.

The server runs with its own SQLite file and prompt directory in a temporary
directory (the demo customers seeded on its first start), on free FastAGI
and web ports, with no ``IVR_*`` variable of the caller's environment but
those set here.  `running_ivr` starts it, waits for its banner (the line
"Press Ctrl-C ...") and stops it with SIGINT, as a person would, so its
call records are flushed before the directory is read.

Its log goes to ``ivr.log`` beside the prompt directory (its tail is in the
error when it stops before it is ready).  `environment` is also what a benchmark passes to `ivr.config.load_config`
to read the same configuration in its own process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.call_path import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 180.0  # seconds for the first start: migrations, the demo seed, the prompts


@dataclass(frozen=True)
class RunningIvr:
    port: int  # FastAGI
    banner: tuple[str, ...]  # what `ivr run` printed before it was ready
    environment: dict[str, str]

    @property
    def database_url(self) -> str:
        return self.environment["IVR_DATABASE_URL"]

    @property
    def database_file(self) -> Path:
        return Path(self.database_url.split("///", 1)[1])


def environment(directory: Path, *, config_file: Path | None = None, **extra: str) -> dict[str, str]:
    """The server's environment: this one without its IVR_* variables, then the benchmark's."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(IVR_AGI_PORT=str(free_port()), IVR_DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'crm.sqlite3'}",
               IVR_PROMPTS_DIR=str(directory / "prompts"), IVR_WEB_PORT=str(free_port()),
               IVR_MODEL_FILE=str(directory / "intent-model.joblib"))
    if config_file is not None:
        env["IVR_CONFIG"] = str(config_file)
    env.update(extra)
    return env


@asynccontextmanager
async def running_ivr(env: dict[str, str]) -> AsyncIterator[RunningIvr]:
    """`ivr run --demo-data` with `env` (see `environment`), ready for calls; stopped on exit."""
    log = Path(env["IVR_PROMPTS_DIR"]).parent / "ivr.log"
    with log.open("wb") as errors:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr.cli", "run", "--demo-data", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=errors)
    banner: list[str] = []
    drain: asyncio.Future[bytes] | None = None
    try:
        assert server.stdout is not None
        while not banner or not banner[-1].startswith("Press Ctrl-C"):
            line = (await asyncio.wait_for(server.stdout.readline(), READY_TIMEOUT)).decode()
            if not line:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise RuntimeError("ivr run ended before it was ready:\n" + "".join(banner) + tail)
            banner.append(line)
        drain = asyncio.ensure_future(server.stdout.read())  # whatever it prints later never blocks it
        yield RunningIvr(int(env["IVR_AGI_PORT"]), tuple(banner), env)
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGINT)
        await server.wait()
        if drain is not None:
            await drain


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def verdict(value: float | None, target: float) -> str:
    return "n/a" if value is None else ("met" if value <= target else "MISSED")
