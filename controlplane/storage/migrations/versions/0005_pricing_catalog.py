"""pricing catalog (meters, plan versions, model price lists)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 00:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("billing_anchor", sa.DateTime(), nullable=True))
    op.create_table(
        "price_lists",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_price_lists")),
    )
    op.create_table(
        "model_prices",
        sa.Column("price_list", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("effective_from", sa.DateTime(), nullable=False),
        sa.Column("input", sa.String(length=50), nullable=True),
        sa.Column("output", sa.String(length=50), nullable=True),
        sa.Column("cached_input", sa.String(length=50), nullable=True),
        sa.Column("reasoning", sa.String(length=50), nullable=True),
        sa.ForeignKeyConstraint(
            ["price_list"],
            ["price_lists.key"],
            name=op.f("fk_model_prices_price_list_price_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "price_list", "model", "effective_from", name=op.f("pk_model_prices")
        ),
    )


def downgrade() -> None:
    op.drop_table("model_prices")
    op.drop_table("price_lists")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("billing_anchor")
