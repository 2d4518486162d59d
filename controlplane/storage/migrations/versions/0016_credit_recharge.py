"""credit auto-recharge rules, the top-ups they issued, credit alerts, spending samples

Revision ID: 0016_credit_recharge
Revises: 0015_credits
Create Date: 2026-12-07 17:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_credit_recharge"
down_revision = "0015_credits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_recharge_rules",
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("threshold", sa.Text(), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("minimum", sa.Text(), nullable=False),
        sa.Column("maximum", sa.Text(), nullable=False),
        sa.Column("max_count", sa.Integer(), nullable=False),
        sa.Column("max_amount", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["customers.key"],
            name=op.f("fk_credit_recharge_rules_customer_customers"),
        ),
        sa.PrimaryKeyConstraint("customer", name=op.f("pk_credit_recharge_rules")),
    )
    op.create_table(
        "credit_recharges",
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_recharges_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_credit_recharges_customer_customers")
        ),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_credit_recharges")),
    )
    op.create_index("ix_credit_recharges_customer", "credit_recharges", ["customer"])
    op.create_table(
        "credit_alerts",
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("percents", sa.JSON(), nullable=False),
        sa.Column("amounts", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_credit_alerts_customer_customers")
        ),
        sa.ForeignKeyConstraint(
            ["channel"],
            ["notification_channels.key"],
            name=op.f("fk_credit_alerts_channel_notification_channels"),
        ),
        sa.PrimaryKeyConstraint("customer", "key", name=op.f("pk_credit_alerts")),
    )
    op.create_table(
        "credit_usage_samples",
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("spent", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["customers.key"],
            name=op.f("fk_credit_usage_samples_customer_customers"),
        ),
        sa.PrimaryKeyConstraint("customer", "time", name=op.f("pk_credit_usage_samples")),
    )


def downgrade() -> None:
    op.drop_table("credit_usage_samples")
    op.drop_table("credit_alerts")
    op.drop_index("ix_credit_recharges_customer", table_name="credit_recharges")
    op.drop_table("credit_recharges")
    op.drop_table("credit_recharge_rules")
