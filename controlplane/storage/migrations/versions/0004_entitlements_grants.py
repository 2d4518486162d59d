"""entitlements: static and metered entitlement fields on rate cards, grants

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rate_cards") as batch:
        batch.add_column(sa.Column("entitlement", sa.Text(), nullable=True))
    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("feature", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("effective_time", sa.DateTime(), nullable=False),
        sa.Column("expiration_time", sa.DateTime(), nullable=True),
        sa.Column("recurrence_interval", sa.String(length=50), nullable=True),
        sa.Column("void_time", sa.DateTime(), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_grants_customer_customers")
        ),
        sa.ForeignKeyConstraint(
            ["feature"], ["features.key"], name=op.f("fk_grants_feature_features")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    with op.batch_alter_table("grants") as batch:
        batch.create_index("ix_grants_customer_feature", ["customer", "feature"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_index("ix_grants_customer_feature")
    op.drop_table("grants")
    with op.batch_alter_table("rate_cards") as batch:
        batch.drop_column("entitlement")
