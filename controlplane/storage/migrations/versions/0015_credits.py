"""prepaid credits: credit grants, their ledger, rate cards' settlement mode, invoice kinds

Revision ID: 0015_credits
Revises: 0014
Create Date: 2026-12-07 15:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_credits"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rate_cards", sa.Column("settlement_mode", sa.String(length=30), nullable=True))
    op.add_column("invoices", sa.Column("kind", sa.String(length=30), nullable=True))
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("funding", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("effective_time", sa.DateTime(), nullable=False),
        sa.Column("expire_time", sa.DateTime(), nullable=True),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("void_time", sa.DateTime(), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_credit_grants_customer_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
        sa.UniqueConstraint("customer", "key", name="uq_credit_grants_customer_key"),
    )
    op.create_index("ix_credit_grants_customer", "credit_grants", ["customer"])
    op.create_table(
        "credit_transactions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["customers.key"],
            name=op.f("fk_credit_transactions_customer_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["credit_grants.id"],
            name=op.f("fk_credit_transactions_grant_id_credit_grants"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_credit_transactions_invoice_id_invoices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_transactions")),
        sa.UniqueConstraint("customer", "seq", name="uq_credit_transactions_customer_seq"),
    )
    op.create_index("ix_credit_transactions_grant_id", "credit_transactions", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_credit_transactions_grant_id", table_name="credit_transactions")
    op.drop_table("credit_transactions")
    op.drop_index("ix_credit_grants_customer", table_name="credit_grants")
    op.drop_table("credit_grants")
    op.drop_column("invoices", "kind")
    op.drop_column("rate_cards", "settlement_mode")
