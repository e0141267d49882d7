"""Alembic migrations of the CRM schema (run them with `Database.migrate()`)."""
