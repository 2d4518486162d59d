"""trust (provider keys encrypted at rest; data-plane registry stream ids)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 00:45:00.000000

Provider keys stay inside ``plugins.config`` (JSON), each one replaced by
``enc:fernet:<token>`` when a secrets key is configured. Migrations run without that key, so
existing rows are encrypted by the control plane itself at its next start with a key
(``reseal_plugin_secrets`` in controlplane/gateway/storage.py, called by controlplane/server.py
``serve``), which also finishes a key rotation.

``dataplanes.stream_id``: the config stream that last recorded a connect, so a late write of
an older stream (on a replica that lost the data plane) is ignored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataplanes") as batch:
        batch.add_column(sa.Column("stream_id", sa.String(length=32), nullable=True))
    op.execute("UPDATE dataplanes SET stream_id = ''")
    with op.batch_alter_table("dataplanes") as batch:
        batch.alter_column("stream_id", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("dataplanes") as batch:
        batch.drop_column("stream_id")
