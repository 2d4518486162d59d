"""Revision 0011 records operator-meter events that invoices issued before it froze as billed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import insert, select

from controlplane.storage import schema as s
from controlplane.storage.db import alembic_config, make_engine

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
ISSUED = DEC + timedelta(hours=2)


def test_upgrade_bills_what_issued_invoices_froze_and_leaves_later_events_late(
    db_url: str,
) -> None:
    # Given a database at 0010 with an issued November invoice, a December one still open, and
    # November events stored before the issue, after it, and of another customer
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0010")
            conn.execute(
                insert(s.customers),
                [
                    {"key": k, "name": k, "create_time": NOV, "update_time": NOV}
                    for k in ("acme", "other")
                ],
            )
            conn.execute(
                insert(s.customer_subjects),
                [
                    {"subject": "acme-app", "customer": "acme"},
                    {"subject": "x", "customer": "other"},
                ],
            )
            conn.execute(
                insert(s.plans).values(
                    key="p",
                    version=1,
                    name="P",
                    currency="USD",
                    billing_cadence="P1M",
                    state="active",
                    create_time=NOV,
                )
            )
            conn.execute(
                insert(s.subscriptions),
                [
                    {
                        "id": f"sub-{c}",
                        "customer": c,
                        "plan_key": "p",
                        "plan_version": 1,
                        "start_time": NOV,
                        "create_time": NOV,
                    }
                    for c in ("acme", "other")
                ],
            )
            conn.execute(
                insert(s.invoices),
                [
                    {
                        "id": "nov",
                        "customer": "acme",
                        "currency": "USD",
                        "period_start": NOV,
                        "period_end": DEC,
                        "state": "issued",
                        "number": "ML-USD-2026-000001",
                        "total": "1.00",
                        "issue_time": ISSUED,
                        "create_time": NOV,
                        "update_time": ISSUED,
                    },
                    {
                        "id": "dec",
                        "customer": "acme",
                        "currency": "USD",
                        "period_start": DEC,
                        "period_end": DEC + timedelta(days=31),
                        "state": "gathering",
                        "number": None,
                        "total": None,
                        "issue_time": None,
                        "create_time": DEC,
                        "update_time": DEC,
                    },
                ],
            )

            def stored(
                id: str, subject: str, at: datetime, ingested: datetime
            ) -> dict[str, object]:
                return {
                    "source": "app",
                    "id": id,
                    "type": "api.request",
                    "subject": subject,
                    "time": at,
                    "data": "{}",
                    "ingest_time": ingested,
                }

            conn.execute(
                insert(s.meter_events),
                [
                    stored(
                        "billed",
                        "acme-app",
                        NOV + timedelta(days=3, minutes=7),
                        NOV + timedelta(days=3),
                    ),
                    stored(
                        "late", "acme-app", NOV + timedelta(days=4), ISSUED + timedelta(hours=1)
                    ),
                    stored(
                        "december", "acme-app", DEC + timedelta(days=1), DEC + timedelta(days=1)
                    ),
                    stored("others", "x", NOV + timedelta(days=3), NOV + timedelta(days=3)),
                ],
            )

        # When the schema is upgraded
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")

        # Then only the event the issued invoice priced is in the ledger, billed by it
        with engine.connect() as conn:
            t = s.invoice_meter_events
            rows = conn.execute(
                select(t.c.subscription_id, t.c.source, t.c.event_id, t.c.invoice_id)
            )
            assert sorted(tuple(r) for r in rows) == [("sub-acme", "app", "billed", "nov")]
            # And the hourly counts that find late events: 3 stored for acme, 1 of them billed
            h = s.billed_meter_hours
            hours = select(h.c.subscription_id, h.c.bucket, h.c.invoice_id, h.c.count)
            assert [tuple(r) for r in conn.execute(hours)] == [
                ("sub-acme", NOV + timedelta(days=3), "nov", 1)
            ]
            r = s.usage_rollups
            counted = conn.execute(
                select(r.c.subject, r.c.bucket, r.c.count)
                .where(r.c.meter == ":events")
                .order_by(r.c.subject, r.c.bucket)
            )
            assert [tuple(row) for row in counted] == [
                ("acme-app", NOV + timedelta(days=3), 1),
                ("acme-app", NOV + timedelta(days=4), 1),
                ("acme-app", DEC + timedelta(days=1), 1),
                ("x", NOV + timedelta(days=3), 1),
            ]
    finally:
        engine.dispose()
