"""Invoice preview: the stored-invoice computation of the period containing a moment.

Kept as its own module for callers; the computation is ``lifecycle.preview_invoice``, the
same code that computes and issues stored invoices.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from controlplane.invoicing import lifecycle
from controlplane.invoicing.types import Invoice


def preview_invoice(conn: Connection, *, customer_key: str, at: datetime) -> Invoice:
    """The invoice of ``customer_key``'s billing period containing ``at``, as of now."""
    return lifecycle.preview_invoice(conn, customer=customer_key, at=at)
