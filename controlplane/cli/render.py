"""Human-readable and JSON renderings of API results."""

from __future__ import annotations

import json

from meterline.admin.v1 import billing_pb2


def invoice_json(invoice: billing_pb2.Invoice) -> str:
    """Machine-readable invoice: decimals stay decimal strings."""
    return json.dumps(
        {
            "customer": invoice.customer.removeprefix("customers/"),
            "currency": invoice.currency,
            "period_start": invoice.period_start_time.ToJsonString(),
            "period_end": invoice.period_end_time.ToJsonString(),
            "lines": [
                {
                    "subscription": line.subscription.removeprefix("subscriptions/"),
                    "rate_card": line.rate_card,
                    "feature": line.feature,
                    "description": line.description,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "amount": line.amount,
                }
                for line in invoice.lines
            ],
            "total": invoice.total,
        },
        indent=2,
    )


def invoice_table(invoice: billing_pb2.Invoice) -> str:
    """The invoice as a plain-text table."""
    header = ("feature", "quantity", "unit price", "amount")
    rows = [(ln.feature, ln.quantity, ln.unit_price, ln.amount) for ln in invoice.lines]
    footer = ("total", "", "", invoice.total)
    widths = [max(len(r[i]) for r in [header, *rows, footer]) for i in range(4)]

    def fmt(row: tuple[str, str, str, str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    period = (
        f"{invoice.period_start_time.ToJsonString()} .. {invoice.period_end_time.ToJsonString()}"
    )
    lines = [
        f"Invoice preview for {invoice.customer.removeprefix('customers/')}"
        f" ({invoice.currency}), period {period}",
        fmt(header),
        rule,
        *(fmt(r) for r in rows),
        rule,
        fmt(footer),
    ]
    return "\n".join(lines)
