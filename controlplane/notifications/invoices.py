"""Invoice events: recorded in the transaction that changes the invoice.

Kept apart from the rest of the notification use cases so the invoicing code can call it
without importing entitlements or delivery.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

from sqlalchemy import Connection

from controlplane.invoicing.types import Invoice
from controlplane.notifications import storage
from controlplane.notifications.types import JOB_FAILED_EVENT, RuleType


def event_payload(event_id: str, event_type: str, now: datetime, data: dict[str, object]) -> str:
    """The webhook body: ``{"id", "type", "created", "data"}`` as compact, sorted JSON."""
    return json.dumps(
        {"id": event_id, "type": event_type, "created": now.isoformat(), "data": data},
        sort_keys=True,
        separators=(",", ":"),
    )


def emit_invoice_event(conn: Connection, invoice: Invoice, event: str, *, now: datetime) -> int:
    """Record ``event`` ("invoice.issued", ...) for every rule that watches it; how many.

    Called inside the transaction that changes the invoice, so the event exists exactly when
    the change does. Once per rule, invoice and event type.
    """
    created = 0
    for rule in storage.list_rules(conn, type=RuleType.INVOICE):
        if rule.customer not in ("", invoice.customer):
            continue
        if rule.invoice_events and event not in rule.invoice_events:
            continue
        event_id = str(uuid.uuid4())
        payload = event_payload(
            event_id,
            event,
            now,
            {
                "rule": rule.key,
                "invoice": {
                    "id": invoice.id,
                    "number": invoice.number,
                    "customer": invoice.customer,
                    "currency": invoice.currency,
                    "total": str(invoice.total),
                    "state": invoice.state.value,
                    "period_start": invoice.period_start.isoformat(),
                    "period_end": invoice.period_end.isoformat(),
                    "sync_state": invoice.sync_state,
                    "sync_error": invoice.sync_error,
                },
            },
        )
        created += storage.insert_event(
            conn,
            rule=rule,
            dedupe_key=f"invoice|{rule.key}|{invoice.id}|{event}",
            type=event,
            payload=payload,
            event_id=event_id,
            now=now,
        )
    return created


def emit_invoicing_failure(conn: Connection, *, customer: str, reason: str, now: datetime) -> int:
    """Record that the invoicing job could not advance ``customer`` (``invoice.job_failed``)
    for every invoice rule that watches it; how many.

    Once per rule, customer and reason: the job retries every run, the alert fires once until
    the reason changes.
    """
    created = 0
    digest = hashlib.sha256(reason.encode()).hexdigest()[:16]
    for rule in storage.list_rules(conn, type=RuleType.INVOICE):
        if rule.customer not in ("", customer):
            continue
        if rule.invoice_events and JOB_FAILED_EVENT not in rule.invoice_events:
            continue
        event_id = str(uuid.uuid4())
        payload = event_payload(
            event_id,
            JOB_FAILED_EVENT,
            now,
            {"rule": rule.key, "customer": customer, "reason": reason},
        )
        created += storage.insert_event(
            conn,
            rule=rule,
            dedupe_key=f"invoice-job|{rule.key}|{customer}|{digest}",
            type=JOB_FAILED_EVENT,
            payload=payload,
            event_id=event_id,
            now=now,
        )
    return created
