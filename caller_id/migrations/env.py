"""Alembic environment for the CRM schema.

`Database.migrate()` hands over an open connection in
``config.attributes["connection"]``.  Called with a configuration that only
names a URL, it connects itself; that is how a new revision is written::

    from alembic import command
    from caller_id.store import alembic_config
    command.revision(alembic_config("sqlite+aiosqlite:///var/empty.sqlite3"),
                     message="what changes", autogenerate=True)

Logging is left to the application: this file configures none.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from caller_id.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**options) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **options)


def _run_on(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run_on(config.attributes["connection"])
else:
    asyncio.run(_run_on_url(config.get_main_option("sqlalchemy.url")))
