"""An index on call records by agent and start: the calls an agent may read (ivr.web.access).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_call_records_agent_started", "call_records", ["agent_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_call_records_agent_started", table_name="call_records")
