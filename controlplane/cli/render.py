"""Human-readable and JSON renderings of API results."""

from __future__ import annotations

import json
from typing import Any

from meterline.admin.v1 import billing_pb2, catalog_pb2


def _line_type(line: billing_pb2.InvoiceLine) -> str:
    name = billing_pb2.InvoiceLineType.Name(line.type)
    return name.removeprefix("INVOICE_LINE_TYPE_").lower()


def _tier_json(tier: billing_pb2.InvoiceLineTier) -> dict[str, Any]:
    return {
        "tier": tier.tier,
        "up_to": tier.up_to if tier.HasField("up_to") else None,
        "quantity": tier.quantity,
        "unit_price": tier.unit_price,
        "flat_price": tier.flat_price,
        "amount": tier.amount,
    }


def _line_json(line: billing_pb2.InvoiceLine) -> dict[str, Any]:
    data: dict[str, Any] = {
        "subscription": line.subscription.removeprefix("subscriptions/"),
        "rate_card": line.rate_card,
        "feature": line.feature,
        "type": _line_type(line),
        "description": line.description,
        "quantity": line.quantity,
        "unit_price": line.unit_price,
        "amount": line.amount,
    }
    if line.price_type:
        data["price_type"] = catalog_pb2.PriceType.Name(line.price_type)
        data["price_type"] = data["price_type"].removeprefix("PRICE_TYPE_").lower()
    if line.payment_term:
        term = catalog_pb2.PaymentTerm.Name(line.payment_term)
        data["payment_term"] = term.removeprefix("PAYMENT_TERM_").lower()
    if line.free_quantity:
        data["free_quantity"] = line.free_quantity
    if line.packages:
        data["packages"] = line.packages
    if line.tiers:
        data["tiers"] = [_tier_json(t) for t in line.tiers]
    if line.model:
        data["model"] = line.model
        data["token_type"] = line.token_type
    if line.late_usage:
        data["late_usage"] = True
        data["period_start"] = line.period_start_time.ToJsonString()
        data["period_end"] = line.period_end_time.ToJsonString()
    if line.id:
        data["id"] = line.id
    return data


def invoice_state(invoice: billing_pb2.Invoice) -> str:
    """``gathering``, ``draft``, ``issued``, ``paid``, ``payment_failed`` or ``void``."""
    return billing_pb2.InvoiceState.Name(invoice.state).removeprefix("INVOICE_STATE_").lower()


def sync_state(invoice: billing_pb2.Invoice) -> str:
    return (
        billing_pb2.InvoiceSyncState.Name(invoice.sync_state)
        .removeprefix("INVOICE_SYNC_STATE_")
        .lower()
    )


def invoice_json(invoice: billing_pb2.Invoice) -> str:
    """Machine-readable invoice: decimals stay decimal strings."""
    return json.dumps(invoice_dict(invoice), indent=2)


def invoice_dict(invoice: billing_pb2.Invoice) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if invoice.id:
        data["id"] = invoice.id
        data["number"] = invoice.number or None
        data["state"] = invoice_state(invoice)
    data.update(
        {
            "customer": invoice.customer.removeprefix("customers/"),
            "currency": invoice.currency,
            "period_start": invoice.period_start_time.ToJsonString(),
            "period_end": invoice.period_end_time.ToJsonString(),
            "lines": [_line_json(line) for line in invoice.lines],
            "total": invoice.total,
        }
    )
    if invoice.id:
        data["issue_time"] = (
            invoice.issue_time.ToJsonString() if invoice.HasField("issue_time") else None
        )
        data["sync_state"] = sync_state(invoice)
        if invoice.sync_error:
            data["sync_error"] = invoice.sync_error
        if invoice.stripe_invoice_id:
            data["stripe_invoice_id"] = invoice.stripe_invoice_id
    return data


Row = tuple[str, str, str, str, str]


def _rows(line: billing_pb2.InvoiceLine) -> list[Row]:
    name = line.feature or line.rate_card
    if line.model:
        name = f"{name} {line.model} {line.token_type}"
    if line.late_usage:
        name = f"{name} (late, {line.period_start_time.ToJsonString()[:10]})"
    quantity = line.quantity
    if line.free_quantity:
        quantity = f"{line.quantity} ({line.free_quantity} free)"
    if line.packages:
        quantity = f"{line.quantity} ({line.packages} pkg)"
    rows: list[Row] = [(name, _line_type(line), quantity, line.unit_price, line.amount)]
    for tier in line.tiers:
        bound = f"<= {tier.up_to}" if tier.HasField("up_to") else "and above"
        price = tier.unit_price
        if tier.flat_price and tier.flat_price != "0":
            price = f"{tier.unit_price} + {tier.flat_price}"
        rows.append((f"  tier {tier.tier} ({bound})", "", tier.quantity, price, tier.amount))
    return rows


def invoice_table(invoice: billing_pb2.Invoice, *, preview: bool = False) -> str:
    """The invoice as a plain-text table; tiered lines list their tiers underneath."""
    header: Row = ("feature", "line", "quantity", "unit price", "amount")
    rows = [row for line in invoice.lines for row in _rows(line)]
    footer: Row = ("total", "", "", "", invoice.total)
    widths = [max(len(r[i]) for r in [header, *rows, footer]) for i in range(len(header))]

    def fmt(row: Row) -> str:
        left = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        rest = [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        return "  ".join([*left, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    period = (
        f"{invoice.period_start_time.ToJsonString()} .. {invoice.period_end_time.ToJsonString()}"
    )
    customer = invoice.customer.removeprefix("customers/")
    title = f"Invoice preview for {customer}"
    if invoice.id:
        label = f"{invoice.number or invoice.id} [{invoice_state(invoice)}]"
        title = (
            f"Invoice preview for {customer}: invoice {label}"
            if preview
            else f"Invoice {label} for {customer}"
        )
    lines = [
        f"{title} ({invoice.currency}), period {period}",
        fmt(header),
        rule,
        *(fmt(r) for r in rows),
        rule,
        fmt(footer),
    ]
    if invoice.id and invoice.sync_state not in (
        billing_pb2.INVOICE_SYNC_STATE_UNSPECIFIED,
        billing_pb2.INVOICE_SYNC_STATE_NONE,
    ):
        sync = f"Stripe sync: {sync_state(invoice)}"
        if invoice.stripe_invoice_id:
            sync += f" ({invoice.stripe_invoice_id})"
        if invoice.sync_error:
            sync += f": {invoice.sync_error}"
        lines.append(sync)
    return "\n".join(lines)
