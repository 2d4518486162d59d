"""Kong fields of gateway entities beyond Meterline's columns (tags, route hosts/headers...)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TABLES = ("services", "routes", "consumers", "plugins")


def upgrade() -> None:
    # Nullable: rows stored before have none (read as {}).
    for table in _TABLES:
        op.add_column(table, sa.Column("attributes", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("attributes")
