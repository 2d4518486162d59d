"""usage rollups

Operator meters, their CloudEvents-shaped events, and hourly usage rollups. Rollups of the
llm_tokens events stored before this migration are computed here, so reads that use rollups
see all past usage.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 00:45:00.000000
"""

from __future__ import annotations

from datetime import datetime

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meters",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("aggregation", sa.String(length=20), nullable=False),
        sa.Column("value_property", sa.String(length=500), nullable=True),
        sa.Column("group_by", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meters")),
    )
    op.create_table(
        "meter_events",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("ingest_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "id", name=op.f("pk_meter_events")),
    )
    with op.batch_alter_table("meter_events") as batch:
        batch.create_index(
            "ix_meter_events_type_subject_time", ["type", "subject", "time"], unique=False
        )
    rollups = op.create_table(
        "usage_rollups",
        sa.Column("meter", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("bucket", sa.DateTime(), nullable=False),
        sa.Column("dimensions", sa.String(length=2000), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "meter", "subject", "bucket", "dimensions", "shard", name=op.f("pk_usage_rollups")
        ),
    )
    _backfill_llm_tokens(rollups)
    billed_hours = op.create_table(
        "billed_usage_hours",
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("bucket", sa.DateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "bucket", name=op.f("pk_billed_usage_hours")),
    )
    _backfill_billed_hours(billed_hours)


def _hour(column: sa.ColumnElement[object]) -> sa.ColumnElement[object]:
    if op.get_bind().dialect.name == "postgresql":
        return sa.func.date_trunc("hour", column)
    return sa.func.strftime("%Y-%m-%d %H:00:00.000000", column)


def _as_datetime(value: object) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    assert isinstance(value, datetime)
    return value


def _backfill_billed_hours(billed_hours: sa.Table) -> None:
    # The ledger's events per subscription and hour (controlplane.invoicing.storage.mark_billed
    # keeps this table from now on).
    conn = op.get_bind()
    ledger = sa.table("invoice_usage_events", sa.column("subscription_id"), sa.column("event_id"))
    events = sa.table("usage_events", sa.column("id"), sa.column("time"))
    hour = _hour(events.c.time)
    query = (
        sa.select(ledger.c.subscription_id, hour, sa.func.count())
        .select_from(ledger.join(events, events.c.id == ledger.c.event_id))
        .group_by(ledger.c.subscription_id, sa.text("2"))
    )
    rows = [
        {"subscription_id": sub, "bucket": _as_datetime(bucket), "count": int(count)}
        for sub, bucket, count in conn.execute(query)
    ]
    if rows:
        conn.execute(billed_hours.insert(), rows)


def _backfill_llm_tokens(rollups: sa.Table) -> None:
    # The same rows controlplane.usage.rollups builds on insert: one per subject, hour and
    # (model, provider, route, status_code, type).
    conn = op.get_bind()
    hour = _hour(sa.column("time"))
    columns = ("subject", "model", "provider", "route", "status_code", "token_type")
    events = sa.table("usage_events", *(sa.column(c) for c in (*columns, "time", "tokens")))
    query = sa.select(
        *(events.c[c] for c in columns),
        hour.label("bucket"),
        sa.func.sum(events.c.tokens),
        sa.func.count(),
    ).group_by(*(events.c[c] for c in columns), hour)
    batch = []
    for row in conn.execute(query):
        subject, model, provider, route, status_code, token_type, bucket, total, count = tuple(row)
        bucket = _as_datetime(bucket)
        dimensions = {
            "model": model,
            "provider": provider,
            "route": route,
            "status_code": str(status_code),
            "type": token_type,
        }
        batch.append(
            {
                "meter": "llm_tokens",
                "subject": subject,
                "bucket": bucket,
                "dimensions": orjson.dumps(dimensions, option=orjson.OPT_SORT_KEYS).decode(),
                "shard": 0,
                "value": str(int(total)),
                "count": int(count),
            }
        )
        if len(batch) >= 5000:
            conn.execute(rollups.insert(), batch)
            batch = []
    if batch:
        conn.execute(rollups.insert(), batch)


def downgrade() -> None:
    op.drop_table("billed_usage_hours")
    op.drop_table("usage_rollups")
    with op.batch_alter_table("meter_events") as batch:
        batch.drop_index("ix_meter_events_type_subject_time")
    op.drop_table("meter_events")
    op.drop_table("meters")
