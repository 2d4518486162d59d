"""portal tokens: customer-scoped bearer tokens for the usage portal (hashes only)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("hash", sa.String(length=80), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("expire_time", sa.DateTime(), nullable=False),
        sa.Column("revoke_time", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["customers.key"],
            name="fk_portal_tokens_customer_customers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_portal_tokens"),
        sa.UniqueConstraint("hash", name="uq_portal_tokens_hash"),
    )
    op.create_index("ix_portal_tokens_customer", "portal_tokens", ["customer"])


def downgrade() -> None:
    op.drop_index("ix_portal_tokens_customer", table_name="portal_tokens")
    op.drop_table("portal_tokens")
