"""Call records: where the agent transferred the call (``transferred_to``).

A blind transfer's ``extension@context``, an attended transfer's target (the
channel's interface, or the application it ran).  A column rather than a key
in the JSON ``context``: reports count transfers by target, and the record
updates are plain column updates on SQLite and PostgreSQL alike.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_records") as table:
        table.add_column(sa.Column("transferred_to", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_records") as table:
        table.drop_column("transferred_to")
