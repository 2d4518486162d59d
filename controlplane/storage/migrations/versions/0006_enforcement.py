"""enforcement (budgets)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 00:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period", sa.String(length=50), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_budgets_customer_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
    )
    with op.batch_alter_table("budgets") as batch:
        batch.create_index("ix_budgets_customer", ["customer"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("budgets") as batch:
        batch.drop_index("ix_budgets_customer")
    op.drop_table("budgets")
