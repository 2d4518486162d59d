"""rate card prices as JSON: flat, unit, tiered and package prices, discounts, commitments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_cards = sa.table(
    "rate_cards",
    sa.column("plan_key", sa.String),
    sa.column("plan_version", sa.Integer),
    sa.column("key", sa.String),
    sa.column("price_type", sa.String),
    sa.column("price_amount", sa.String),
    sa.column("price", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("rate_cards") as batch:
        batch.add_column(sa.Column("price", sa.Text(), nullable=True))
        batch.add_column(sa.Column("discounts", sa.Text(), nullable=True))
        batch.add_column(sa.Column("commitments", sa.Text(), nullable=True))
        batch.alter_column("feature", existing_type=sa.String(length=200), nullable=True)
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            _cards.c.plan_key,
            _cards.c.plan_version,
            _cards.c.key,
            _cards.c.price_type,
            _cards.c.price_amount,
        ).where(_cards.c.price_type.is_not(None))
    ).all()
    for row in rows:
        # Version 0001 knew only unit prices: {"type": "unit", "amount": "<decimal string>"}.
        price = json.dumps({"type": row.price_type, "amount": row.price_amount}, sort_keys=True)
        conn.execute(
            sa.update(_cards)
            .where(
                (_cards.c.plan_key == row.plan_key)
                & (_cards.c.plan_version == row.plan_version)
                & (_cards.c.key == row.key)
            )
            .values(price=price)
        )
    with op.batch_alter_table("rate_cards") as batch:
        batch.drop_column("price_type")
        batch.drop_column("price_amount")


def downgrade() -> None:
    with op.batch_alter_table("rate_cards") as batch:
        batch.add_column(sa.Column("price_type", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("price_amount", sa.String(length=60), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_cards.c.plan_key, _cards.c.plan_version, _cards.c.key, _cards.c.price).where(
            _cards.c.price.is_not(None)
        )
    ).all()
    for row in rows:
        price = json.loads(row.price)
        if price.get("type") != "unit":
            raise RuntimeError(
                f"cannot downgrade: rate card {row.key!r} of plan {row.plan_key!r} "
                f"version {row.plan_version} has a {price.get('type')} price"
            )
        conn.execute(
            sa.update(_cards)
            .where(
                (_cards.c.plan_key == row.plan_key)
                & (_cards.c.plan_version == row.plan_version)
                & (_cards.c.key == row.key)
            )
            .values(price_type="unit", price_amount=price["amount"])
        )
    with op.batch_alter_table("rate_cards") as batch:
        batch.drop_column("commitments")
        batch.drop_column("discounts")
        batch.drop_column("price")
        batch.alter_column("feature", existing_type=sa.String(length=200), nullable=False)
