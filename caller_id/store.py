"""The CRM database: one async SQLAlchemy engine, its sessions and its schema.

`Database(url)` works on a SQLite file (the default, for one box) and on
PostgreSQL (production, shared by every node).  The schema is owned by the
Alembic migrations shipped in `caller_id/migrations`; `await db.migrate()`
brings any database to the newest revision without an ``alembic.ini`` in the
working directory.

Every write of CRM data made through this project also calls
`bump_crm_version` in the same transaction, so a cache on any node can compare
`crm_version()` with the version it filled from and drop what is stale.

Errors are not hidden: a failed query raises one of `DATABASE_ERRORS`, which
the call path catches to fail open to the default queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from caller_id.models import CrmVersion

_log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///var/crm.sqlite3"

# What a failing database raises: SQL errors, refused or dropped connections,
# timeouts while connecting.  Catch these to fail open.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, asyncio.TimeoutError)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Taken by `migrate` on PostgreSQL so nodes starting together upgrade one at a time.
_MIGRATION_LOCK_KEY = 0x1C_4D_0001


def as_utc(value: dt.datetime) -> dt.datetime:
    """`value` made aware, a naive one taken as UTC (an aware one is returned as it is).

    SQLite gives back naive datetimes, and everything this project stores is UTC;
    an import file's time without a zone is UTC too."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def display_url(url: str | URL) -> str:
    """The URL as it may appear in a start-up line: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic configuration for the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    if url is not None:
        # Config values go through ConfigParser interpolation: escape '%'.
        rendered = make_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


class Database:
    """An async engine for one CRM database, with sessions and migrations."""

    def __init__(
        self, url: str | URL = DEFAULT_URL, *, pool_size: int = 10, connect_timeout: float = 5.0, echo: bool = False,
    ):
        self.url = make_url(url)
        self.pool_size = pool_size
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # hide_parameters: statement parameters (names, tokens, hashes) stay out of exception
        # messages, which the call path and the web app log.
        options: dict[str, Any] = {"echo": echo, "json_serializer": _json_text, "hide_parameters": True}
        if self.is_sqlite:
            self._prepare_sqlite_file()
            options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            options.update(
                pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
                pool_timeout=connect_timeout, connect_args={"timeout": connect_timeout},
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _configure_sqlite_connection)
        else:
            # executemany() of an INSERT goes out as multi-row INSERTs, not row by row.
            self.engine.dialect.use_insertmanyvalues_wo_returning = True
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._blocking: Engine | None = None

    def __repr__(self) -> str:
        return f"Database({display_url(self.url)!r})"

    def blocking_engine(self) -> Engine | None:
        """For SQLite, a plain (blocking) engine on the same file; None otherwise.

        aiosqlite hops to its thread for every cursor call; a read that
        runs all its statements on one worker thread costs one hop instead.
        """
        if not self.is_sqlite:
            return None
        if self._blocking is None:
            self._blocking = create_engine(
                self.url.set(drivername="sqlite"),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                json_serializer=_json_text, hide_parameters=True,
            )
            event.listen(self._blocking, "connect", _configure_sqlite_connection)
        return self._blocking

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def _prepare_sqlite_file(self) -> None:
        database = self.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; commit it yourself, it is rolled back if left open."""
        async with self._sessions() as session:
            yield session

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (a no-op when current)."""
        async with self.engine.begin() as conn:
            # One node upgrades at a time; the others wait, then find it done.
            if self.is_sqlite:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await conn.run_sync(_upgrade_to_head)

    async def ping(self) -> None:
        """Run a trivial query; raises one of DATABASE_ERRORS when unreachable."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def crm_version(self) -> int:
        """The CRM data version: it grows with every write of CRM data."""
        async with self.engine.connect() as conn:
            version = await conn.scalar(select(CrmVersion.version).where(CrmVersion.id == 1))
        if version is None:
            raise LookupError("crm_version row is missing: run migrate() first")
        return version

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._blocking is not None:
            self._blocking.dispose()


async def bump_crm_version(session: AsyncSession | AsyncConnection) -> None:
    """Increase the CRM data version inside the caller's transaction.

    Accepts an AsyncSession or an AsyncConnection; the caller commits.
    """
    await session.execute(
        update(CrmVersion).where(CrmVersion.id == 1).values(version=CrmVersion.version + 1)
    )


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0].lower() not in ("wal", "memory"):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:  # busy: another connection holds a lock
                # WAL is kept in the file: the next connection switches it.
                _log.debug("SQLite WAL not enabled on this connection: %s", exc)
    finally:
        cursor.close()
