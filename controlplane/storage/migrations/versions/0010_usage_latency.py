"""usage event latency (time to first token, total)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 00:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: events stored before, and events of older data planes, have no latency.
    op.add_column(
        "usage_events", sa.Column("time_to_first_token_ms", sa.BigInteger(), nullable=True)
    )
    op.add_column("usage_events", sa.Column("latency_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("latency_ms")
        batch.drop_column("time_to_first_token_ms")
