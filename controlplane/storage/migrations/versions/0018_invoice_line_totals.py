"""invoice_line_totals: each frozen invoice line's feature, model and amount, indexed

Revision ID: 0018_invoice_line_totals
Revises: 0017_console
Create Date: 2026-12-07 21:45:00.000000
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0018_invoice_line_totals"
down_revision = "0017_console"
branch_labels = None
depends_on = None

# Lines read and rows written per statement by the backfill.
BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "invoice_line_totals",
        sa.Column("line_id", sa.String(length=36), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("feature", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_line_totals_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["invoice_lines.id"],
            name=op.f("fk_invoice_line_totals_line_id_invoice_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("line_id", name=op.f("pk_invoice_line_totals")),
    )
    op.create_index(
        "ix_invoice_line_totals_invoice_id", "invoice_line_totals", ["invoice_id"], unique=False
    )
    op.create_index(
        "ix_invoice_line_totals_feature",
        "invoice_line_totals",
        ["feature", "period_start"],
        unique=False,
    )
    op.create_index(
        "ix_invoice_line_totals_model",
        "invoice_line_totals",
        ["model", "period_start"],
        unique=False,
    )
    backfill(op.get_bind())


def backfill(conn: sa.Connection) -> None:
    """One row per stored invoice line, as ``controlplane.invoicing.storage.freeze`` writes
    from now on; every invoice's lines, void ones included (readers join the invoice's state).
    Batched by line id, so memory stays flat however many invoices were issued."""
    lines = sa.table("invoice_lines", sa.column("id"), sa.column("invoice_id"), sa.column("line"))
    invoices = sa.table(
        "invoices",
        sa.column("id"),
        sa.column("customer"),
        sa.column("currency"),
        sa.column("period_start", sa.DateTime()),
    )
    totals = sa.table(
        "invoice_line_totals",
        *(
            sa.column(c)
            for c in ("line_id", "invoice_id", "customer", "currency", "feature", "model", "amount")
        ),
        sa.column("period_start", sa.DateTime()),
    )
    query = (
        sa.select(
            lines.c.id,
            lines.c.invoice_id,
            lines.c.line,
            invoices.c.customer,
            invoices.c.currency,
            invoices.c.period_start,
        )
        .select_from(lines.join(invoices, invoices.c.id == lines.c.invoice_id))
        .order_by(lines.c.id)
        .limit(BATCH)
    )
    after = ""
    while True:
        batch = conn.execute(query.where(lines.c.id > after)).all()
        if not batch:
            return
        conn.execute(sa.insert(totals), [_row(r) for r in batch])
        after = batch[-1].id


def _row(r: Any) -> dict[str, Any]:
    line = json.loads(r.line)
    return {
        "line_id": r.id,
        "invoice_id": r.invoice_id,
        "customer": r.customer,
        "currency": r.currency,
        "period_start": r.period_start,
        # controlplane.invoicing.storage.line_feature: the feature, or the rate card.
        "feature": line["feature"] or line["rate_card"],
        "model": line.get("model"),
        "amount": line["amount"],
    }


def downgrade() -> None:
    op.drop_index("ix_invoice_line_totals_model", table_name="invoice_line_totals")
    op.drop_index("ix_invoice_line_totals_feature", table_name="invoice_line_totals")
    op.drop_index("ix_invoice_line_totals_invoice_id", table_name="invoice_line_totals")
    op.drop_table("invoice_line_totals")
