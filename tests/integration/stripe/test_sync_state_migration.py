"""Revision 0012 renames the stored failed sync state "sync_failed" to "failed", both copies."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, select

from controlplane.storage import schema as s
from controlplane.storage.db import alembic_config, make_engine
from controlplane.stripe_sync import SyncState
from controlplane.stripe_sync.storage import sync_record_from_json

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _record(invoice_id: str, state: str) -> str:
    return json.dumps(
        {
            "error": "Stripe HTTP 400: No such tax rate" if state == "sync_failed" else None,
            "invoice_id": invoice_id,
            "state": state,
            "stripe_customer_id": "cus_1",
            "stripe_invoice_id": None,
            "synced_line_ids": [],
        },
        sort_keys=True,
    )


# The columns this test reads, all present at 0012 (later revisions add others to invoices).
AT_0012 = (s.invoices.c.id, s.invoices.c.sync_state, s.invoices.c.sync_record)


def test_upgrade_renames_sync_failed_and_downgrade_restores_it(db_url: str) -> None:
    # Given a database at 0011 with a failed sync and a finalized one, stored the old way
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0011")
            conn.execute(
                insert(s.customers).values(
                    key="acme", name="Acme", create_time=NOW, update_time=NOW
                )
            )
            conn.execute(
                insert(s.invoices),
                [
                    {
                        "id": id,
                        "customer": "acme",
                        "currency": currency,
                        "period_start": NOW,
                        "period_end": NOW.replace(month=12, day=2),
                        "state": "issued",
                        "number": f"ML-{currency}-2026-000001",
                        "total": "1.00",
                        "issue_time": NOW,
                        "sync_state": state,
                        "sync_record": _record(id, state),
                        "create_time": NOW,
                        "update_time": NOW,
                    }
                    for id, currency, state in [
                        ("a", "USD", "sync_failed"),
                        ("b", "EUR", "finalized"),
                    ]
                ],
            )

            # When upgraded
            command.upgrade(alembic_config(conn), "0012")
            rows = {r.id: r for r in conn.execute(select(*AT_0012))}

            # Then the failed one says "failed" in both places, and its record still reads
            assert rows["a"].sync_state == "failed"
            failed = sync_record_from_json(rows["a"].sync_record)
            assert failed.state is SyncState.FAILED
            assert failed.error == "Stripe HTTP 400: No such tax rate"
            assert rows["b"].sync_state == "finalized"
            assert sync_record_from_json(rows["b"].sync_record).state is SyncState.FINALIZED

            # And a downgrade gives back what 0011 stored
            command.downgrade(alembic_config(conn), "0011")
            rows = {r.id: r for r in conn.execute(select(*AT_0012))}
            assert rows["a"].sync_state == "sync_failed"
            assert rows["a"].sync_record == _record("a", "sync_failed")
    finally:
        engine.dispose()
