"""The CRM database wrapper: migrations, SQLite settings, version counter, errors."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from caller_id.models import Base, Customer, NumberRole, PhoneNumber
from caller_id.store import DATABASE_ERRORS, Database, alembic_config, bump_crm_version, display_url
from tests.servers import free_port


def _schema_differences(connection) -> list:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_name": lambda name, type_, _parent: not (type_ == "table" and name == "alembic_version"),
        },
    )
    return compare_metadata(context, Base.metadata)


async def test_migrated_schema_matches_models(migrated_db):
    async with migrated_db.engine.connect() as conn:
        differences = await conn.run_sync(_schema_differences)
    assert differences == []


async def test_comparison_notices_a_schema_that_differs_from_models(fresh_db_url):
    db = Database(fresh_db_url)
    try:
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP INDEX ix_cases_customer_status"))
            differences = await conn.run_sync(_schema_differences)
    finally:
        await db.dispose()
    assert [d[0] for d in differences] == ["add_index"]


async def test_migrate_twice_keeps_schema_and_data(migrated_db):
    async with migrated_db.session() as session:
        session.add(Customer(name="Ирина", segment="B"))
        await session.commit()
    await migrated_db.migrate()
    async with migrated_db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1


async def test_concurrent_migrations_from_two_nodes_both_succeed(fresh_db_url):
    nodes = [Database(fresh_db_url), Database(fresh_db_url)]
    try:
        await asyncio.gather(*(node.migrate() for node in nodes))
        assert [await node.crm_version() for node in nodes] == [0, 0]
    finally:
        for node in nodes:
            await node.dispose()


async def test_crm_version_starts_at_zero_and_grows_with_each_committed_bump(migrated_db):
    assert await migrated_db.crm_version() == 0
    async with migrated_db.session() as session:
        await bump_crm_version(session)
        await session.commit()
    async with migrated_db.engine.begin() as conn:
        await bump_crm_version(conn)
    assert await migrated_db.crm_version() == 2


async def test_crm_version_bump_is_undone_with_its_transaction(migrated_db):
    async with migrated_db.session() as session:
        await bump_crm_version(session)
        await session.rollback()
    assert await migrated_db.crm_version() == 0


async def test_ping_answers_on_a_live_database(migrated_db):
    await migrated_db.ping()


async def test_sqlite_file_gets_its_directory_wal_and_foreign_keys(tmp_path):
    path = tmp_path / "nested" / "dir" / "crm.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(text("PRAGMA busy_timeout")) >= 1000
        assert path.exists()
    finally:
        await db.dispose()


async def test_role_for_a_missing_customer_is_refused_by_foreign_keys(migrated_db):
    async with migrated_db.engine.connect() as conn:
        number_id = (await conn.execute(insert(PhoneNumber).values(e164="+79161234567"))).inserted_primary_key[0]
        with pytest.raises(IntegrityError):
            await conn.execute(
                insert(NumberRole).values(number_id=number_id, customer_id=999_999, kind="private")
            )


async def test_query_before_migration_raises_a_catchable_database_error(sqlite_url):
    db = Database(sqlite_url)
    try:
        with pytest.raises(DATABASE_ERRORS):
            await db.crm_version()
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_unreachable_postgres_raises_a_catchable_database_error():
    db = Database(f"postgresql+asyncpg://ivr@127.0.0.1:{free_port()}/ivr")
    try:
        with pytest.raises(DATABASE_ERRORS):
            await db.ping()
    finally:
        await db.dispose()


def test_display_url_hides_the_password_but_keeps_the_rest():
    shown = display_url("postgresql+asyncpg://crm:s3cr%40t@127.0.0.1:5432/crm")
    assert "s3cr" not in shown
    assert shown == "postgresql+asyncpg://crm:***@127.0.0.1:5432/crm"
    assert repr(Database(shown)) == f"Database({shown!r})"


def test_alembic_config_keeps_a_url_with_percent_signs_intact():
    url = "postgresql+asyncpg://crm:p%25ss@127.0.0.1:5432/crm"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
