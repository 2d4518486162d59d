"""the failed Stripe sync state is called "failed" everywhere (was "sync_failed" when stored)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 14:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


# The state is stored twice: in the sync_state column and inside the sync_record JSON, which
# json.dumps writes as "state": "<value>" (sort_keys, default separators).
def _rename(old: str, new: str) -> None:
    op.execute(f"UPDATE invoices SET sync_state = '{new}' WHERE sync_state = '{old}'")
    op.execute(
        "UPDATE invoices SET sync_record = "
        f"REPLACE(sync_record, '\"state\": \"{old}\"', '\"state\": \"{new}\"') "
        f"WHERE sync_record LIKE '%\"state\": \"{old}\"%'"
    )


def upgrade() -> None:
    _rename("sync_failed", "failed")


def downgrade() -> None:
    _rename("failed", "sync_failed")
