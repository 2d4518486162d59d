"""invoices (lifecycle, frozen lines, billed usage, numbers, Stripe sync); billing anchors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("billing_anchor", sa.DateTime(), nullable=True))
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("period_end", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column("total", sa.Text(), nullable=True),
        sa.Column("issue_time", sa.DateTime(), nullable=True),
        sa.Column("sync_state", sa.String(length=20), nullable=True),
        sa.Column("sync_record", sa.Text(), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_invoices_customer_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "customer", "currency", "period_start", "period_end", name="uq_invoices_period"
        ),
        sa.UniqueConstraint("number", name=op.f("uq_invoices_number")),
    )
    op.create_index("ix_invoices_state", "invoices", ["state"], unique=False)
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    op.create_index("ix_invoice_lines_invoice_id", "invoice_lines", ["invoice_id"], unique=False)
    op.create_table(
        "invoice_usage_events",
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_usage_events_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "event_id", name=op.f("pk_invoice_usage_events")
        ),
    )
    op.create_index(
        "ix_invoice_usage_events_invoice_id",
        "invoice_usage_events",
        ["invoice_id"],
        unique=False,
    )
    op.create_table(
        "invoice_numbers",
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("currency", "year", name=op.f("pk_invoice_numbers")),
    )
    op.create_table(
        "stripe_customers",
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=100), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["customers.key"],
            name=op.f("fk_stripe_customers_customer_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer", name=op.f("pk_stripe_customers")),
    )


def downgrade() -> None:
    op.drop_table("stripe_customers")
    op.drop_table("invoice_numbers")
    op.drop_index("ix_invoice_usage_events_invoice_id", table_name="invoice_usage_events")
    op.drop_table("invoice_usage_events")
    op.drop_index("ix_invoice_lines_invoice_id", table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_index("ix_invoices_state", table_name="invoices")
    op.drop_table("invoices")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("billing_anchor")
