"""console sign-in sessions in the database (shared by every control-plane replica)

Revision ID: 0017_console
Revises: 0016_credit_recharge
Create Date: 2026-12-07 18:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_console"
down_revision = "0016_credit_recharge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=80), nullable=False),
        sa.Column("csrf", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=True),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("principal_expire_time", sa.DateTime(), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("expire_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_expire_time", "console_sessions", ["expire_time"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expire_time", table_name="console_sessions")
    op.drop_table("console_sessions")
