"""Fixtures for the call path: a seeded CRM file, the real services, the real FastAGI server."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from caller_id.models import NumberRole, PhoneNumber
from caller_id.seed import seed
from caller_id.store import Database
from ivr.config import Config, PromptSettings, load_config
from ivr.asterisk.fastagi import FastAgiServer
from ivr.server import scripts_for
from ivr.services import Services, build_services

SEEDED_CUSTOMERS = 400


@pytest.fixture(scope="session")
def seeded_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite CRM seeded once per session; tests copy it before writing."""
    path = tmp_path_factory.mktemp("crm") / "seeded.sqlite3"

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
            await seed(db, SEEDED_CUSTOMERS, seed=7)
        finally:
            await db.dispose()

    asyncio.run(go())
    return path


@pytest.fixture
def crm_url(seeded_sqlite_file: Path, tmp_path: Path) -> str:
    copy = tmp_path / "crm.sqlite3"
    shutil.copy(seeded_sqlite_file, copy)
    return f"sqlite+aiosqlite:///{copy}"


@pytest.fixture
def base_config(crm_url: str, tmp_path: Path) -> Config:
    """The shipped configuration on the test's CRM copy, prompts in tmp_path, listeners on free ports.

    The self-service dialog is off on every line: the call-path tests see the
    routing alone; tests/ivr/test_selfservice.py turns it on.  No learned model
    (its file would be in tmp_path): the catalogue's rules rank.
    """
    config = load_config(None, environ={})
    return replace(
        config,
        database_url=crm_url,
        redis_url=None,
        prompts=replace(PromptSettings(), directory=tmp_path / "prompts"),
        agi=replace(config.agi, port=0),
        speech=replace(config.speech, audiosocket_port=0),
        lines=tuple(replace(line, self_service="off") for line in config.lines),
        prediction=replace(config.prediction, model_file=tmp_path / "intent-model.joblib"),  # none: the rules rank
    )


@pytest.fixture
async def listeners() -> AsyncIterator[Callable[..., Any]]:
    """`await listeners(FastAgiServer | AudioSocketServer, handler, **options)` on a free loopback
    port; every listener started is closed at the end."""
    started: list[Any] = []

    async def start(cls: type, handler: Any, **options: Any) -> Any:
        options.setdefault("host", "127.0.0.1")
        server = cls(handler, port=0, **options)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close(grace=1.0)


class RunningServer:
    def __init__(self, services: Services, agi: FastAgiServer):
        self.services = services
        self.agi = agi

    @property
    def port(self) -> int:
        return self.agi.port


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Any]]:
    """Start services + FastAGI server for a config; all stopped at the end."""
    running: list[RunningServer] = []

    async def start(config: Config, *, speech: bool = False, migrate: bool = True) -> RunningServer:
        services = await build_services(config, speech=speech, migrate=migrate)
        agi = FastAgiServer(scripts_for(services), host="127.0.0.1", port=0,
                            allowed_hosts=config.agi.allowed_hosts,
                            env_timeout=config.agi.env_timeout,
                            command_timeout=config.agi.command_timeout)
        await agi.start()
        server = RunningServer(services, agi)
        running.append(server)
        return server

    yield start
    for server in running:
        await server.agi.close(grace=2)
        await server.services.close()


async def numbers_with_roles(db_url: str, *, min_roles: int, kinds: set[str] | None = None) -> list[str]:
    """Seeded numbers with at least `min_roles` roles (optionally of given kinds)."""
    db = Database(db_url)
    try:
        async with db.session() as session:
            query = (
                select(PhoneNumber.e164)
                .join(NumberRole, NumberRole.number_id == PhoneNumber.id)
                .group_by(PhoneNumber.e164)
                .having(func.count(NumberRole.id) >= min_roles)
            )
            if kinds:
                query = query.where(NumberRole.kind.in_(kinds))
            return list(await session.scalars(query.order_by(PhoneNumber.e164)))
    finally:
        await db.dispose()
