"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 22:05:42.893675
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "consumers",
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("custom_id", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_consumers")),
    )
    op.create_table(
        "customers",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_customers")),
    )
    op.create_table(
        "dataplanes",
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("config_version", sa.String(length=100), nullable=False),
        sa.Column("sync_status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("last_seen_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_dataplanes")),
    )
    op.create_table(
        "features",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("meter", sa.String(length=200), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_features")),
    )
    op.create_table(
        "plans",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("billing_cadence", sa.String(length=50), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("publish_time", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", "version", name=op.f("pk_plans")),
    )
    op.create_table(
        "plugins",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugins")),
        sa.UniqueConstraint("name", "service", "route", "consumer", name="uq_plugins_scope"),
    )
    op.create_table(
        "services",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_services")),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("token_type", sa.String(length=20), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("ingest_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index("ix_usage_events_subject_time", ["subject", "time"], unique=False)

    op.create_table(
        "customer_subjects",
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"],
            ["customers.key"],
            name=op.f("fk_customer_subjects_customer_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_customer_subjects")),
    )
    op.create_table(
        "keyauth_credentials",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=100), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consumer"],
            ["consumers.username"],
            name=op.f("fk_keyauth_credentials_consumer_consumers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keyauth_credentials")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_keyauth_credentials_key_hash")),
    )
    op.create_table(
        "rate_cards",
        sa.Column("plan_key", sa.String(length=200), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("feature", sa.String(length=200), nullable=False),
        sa.Column("price_type", sa.String(length=20), nullable=True),
        sa.Column("price_amount", sa.String(length=60), nullable=True),
        sa.Column("entitlement_type", sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(
            ["feature"], ["features.key"], name=op.f("fk_rate_cards_feature_features")
        ),
        sa.ForeignKeyConstraint(
            ["plan_key", "plan_version"],
            ["plans.key", "plans.version"],
            name=op.f("fk_rate_cards_plan_key_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_key", "plan_version", "key", name=op.f("pk_rate_cards")),
    )
    op.create_table(
        "routes",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("paths", sa.JSON(), nullable=False),
        sa.Column("methods", sa.JSON(), nullable=False),
        sa.Column("strip_path", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service"], ["services.name"], name=op.f("fk_routes_service_services")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_routes")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("plan_key", sa.String(length=200), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer"], ["customers.key"], name=op.f("fk_subscriptions_customer_customers")
        ),
        sa.ForeignKeyConstraint(
            ["plan_key", "plan_version"],
            ["plans.key", "plans.version"],
            name=op.f("fk_subscriptions_plan_key_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_subscriptions_customer", ["customer"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_subscriptions_customer")

    op.drop_table("subscriptions")
    op.drop_table("routes")
    op.drop_table("rate_cards")
    op.drop_table("keyauth_credentials")
    op.drop_table("customer_subjects")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_subject_time")

    op.drop_table("usage_events")
    op.drop_table("services")
    op.drop_table("plugins")
    op.drop_table("plans")
    op.drop_table("features")
    op.drop_table("dataplanes")
    op.drop_table("customers")
    op.drop_table("consumers")
