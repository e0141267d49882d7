"""Call records complete: how the call ended, the top three predicted intents, who confirmed the real
one, and the post-call survey (CSAT, NPS and whether it was answered in full).

``rating`` (the self-service dialog's 1-5 question) becomes ``csat``: one column for the same answer.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_records") as table:
        table.alter_column("rating", new_column_name="csat", existing_type=sa.Integer(), existing_nullable=True)
        table.add_column(sa.Column("result", sa.String(16), nullable=True))
        table.add_column(sa.Column("predicted_intent_2", sa.String(64), nullable=True))
        table.add_column(sa.Column("predicted_intent_3", sa.String(64), nullable=True))
        table.add_column(sa.Column("confirmed_by", sa.String(16), nullable=True))
        table.add_column(sa.Column("nps", sa.Integer(), nullable=True))
        table.add_column(sa.Column("survey", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_records") as table:
        for column in ("survey", "nps", "confirmed_by", "predicted_intent_3", "predicted_intent_2", "result"):
            table.drop_column(column)
        table.alter_column("csat", new_column_name="rating", existing_type=sa.Integer(), existing_nullable=True)
