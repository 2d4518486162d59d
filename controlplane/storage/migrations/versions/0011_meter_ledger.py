"""billing ledger of operator-meter events, with hourly counts to find late ones

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 01:50:00.000000
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# Before this revision an issued invoice froze the quantity of its operator meters over the
# events stored when it was issued. Those events are recorded as billed by it, so the first
# invoice issued after the upgrade does not bill them again; events stored after their period's
# issue were never billed and become late usage of the next invoice.
BACKFILL = """
INSERT INTO invoice_meter_events (subscription_id, source, event_id, invoice_id)
SELECT sub.id, e.source, e.id, MIN(inv.id)
FROM invoices inv
JOIN subscriptions sub ON sub.customer = inv.customer
JOIN plans p ON p.key = sub.plan_key AND p.version = sub.plan_version
    AND p.currency = inv.currency
JOIN customer_subjects cs ON cs.customer = inv.customer
JOIN meter_events e ON e.subject = cs.subject
WHERE inv.state IN ('issued', 'paid', 'payment_failed', 'void')
    AND e.time >= inv.period_start AND e.time < inv.period_end
    AND e.time >= sub.start_time AND (sub.end_time IS NULL OR e.time < sub.end_time)
    AND e.ingest_time <= inv.issue_time
GROUP BY sub.id, e.source, e.id
"""


def upgrade() -> None:
    op.create_table(
        "invoice_meter_events",
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_meter_events_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "source", "event_id", name=op.f("pk_invoice_meter_events")
        ),
    )
    op.create_index(
        "ix_invoice_meter_events_invoice_id",
        "invoice_meter_events",
        ["invoice_id"],
        unique=False,
    )
    op.execute(sa.text(BACKFILL))
    op.create_table(
        "billed_meter_hours",
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("bucket", sa.DateTime(), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_billed_meter_hours_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "bucket", "invoice_id", name=op.f("pk_billed_meter_hours")
        ),
    )
    _backfill_counts()


def _hour(column: sa.ColumnElement[object]) -> sa.ColumnElement[object]:
    if op.get_bind().dialect.name == "postgresql":
        return sa.func.date_trunc("hour", column)
    return sa.func.strftime("%Y-%m-%d %H:00:00.000000", column)


def _as_datetime(value: object) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    assert isinstance(value, datetime)
    return value


def _backfill_counts() -> None:
    # What controlplane.usage.ingest and controlplane.invoicing.storage.mark_billed keep from
    # now on: stored meter events per subject and hour (rollup meter ":events", dimensions "{}"),
    # and the ledger's events per subscription, hour and invoice.
    conn = op.get_bind()
    events = sa.table(
        "meter_events",
        sa.column("source"),
        sa.column("id"),
        sa.column("subject"),
        sa.column("time"),
    )
    ledger = sa.table(
        "invoice_meter_events",
        sa.column("subscription_id"),
        sa.column("source"),
        sa.column("event_id"),
        sa.column("invoice_id"),
    )
    rollups = sa.table(
        "usage_rollups",
        *(sa.column(c) for c in ("meter", "subject", "dimensions", "shard", "value", "count")),
        sa.column("bucket", sa.DateTime()),
    )
    hours = sa.table(
        "billed_meter_hours",
        sa.column("subscription_id"),
        sa.column("invoice_id"),
        sa.column("count"),
        sa.column("bucket", sa.DateTime()),
    )
    hour = _hour(events.c.time)
    counted = [
        {
            "meter": ":events",
            "subject": subject,
            "bucket": _as_datetime(bucket),
            "dimensions": "{}",
            "shard": 0,
            "value": "0",
            "count": int(n),
        }
        for subject, bucket, n in conn.execute(
            sa.select(events.c.subject, hour, sa.func.count()).group_by(
                events.c.subject, sa.text("2")
            )
        )
    ]
    if counted:
        conn.execute(rollups.insert(), counted)
    billed = [
        {"subscription_id": sub, "bucket": _as_datetime(bucket), "invoice_id": inv, "count": n}
        for sub, bucket, inv, n in conn.execute(
            sa.select(ledger.c.subscription_id, hour, ledger.c.invoice_id, sa.func.count())
            .select_from(
                ledger.join(
                    events,
                    sa.and_(events.c.source == ledger.c.source, events.c.id == ledger.c.event_id),
                )
            )
            .group_by(ledger.c.subscription_id, sa.text("2"), ledger.c.invoice_id)
        )
    ]
    if billed:
        conn.execute(hours.insert(), billed)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM usage_rollups WHERE meter = ':events'"))
    op.drop_table("billed_meter_hours")
    op.drop_index("ix_invoice_meter_events_invoice_id", table_name="invoice_meter_events")
    op.drop_table("invoice_meter_events")
