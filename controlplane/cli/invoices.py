"""``meterline invoice preview|list|show|issue|void|pay|close|retry-sync``."""

from __future__ import annotations

import argparse
from datetime import UTC
from typing import Any

from controlplane.cli.client import add_cp_argument, admin_client
from controlplane.cli.output import Column, add_output_arguments, emit_list, rfc3339
from controlplane.cli.progress import elapsed
from controlplane.cli.render import invoice_dict, invoice_json, invoice_state, invoice_table
from meterline.admin.v1 import billing_pb2

STATES = ["gathering", "draft", "issued", "paid", "payment_failed", "void"]


def _name(id: str) -> str:
    return id if id.startswith("invoices/") else f"invoices/{id}"


def _show(invoice: billing_pb2.Invoice, args: argparse.Namespace, *, preview: bool = False) -> None:
    if getattr(args, "json", False):
        print(invoice_json(invoice))
    else:
        print(invoice_table(invoice, preview=preview))


def _preview(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.PreviewInvoice(
            billing_pb2.PreviewInvoiceRequest(customer=f"customers/{args.customer}")
        )
    _show(invoice, args, preview=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    request = billing_pb2.ListInvoicesRequest(
        parent=f"customers/{args.customer}" if args.customer else "",
        states=[f"INVOICE_STATE_{s.upper()}" for s in args.state],
        page_size=1000,
    )
    invoices: list[billing_pb2.Invoice] = []
    with admin_client(args.cp) as client:
        while True:
            response = client.billing.ListInvoices(request)
            invoices += response.invoices
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
    invoices.reverse()  # newest period first, as every list
    rows = [
        {
            "id": i.id,
            "number": i.number,
            "state": invoice_state(i),
            "customer": i.customer.removeprefix("customers/"),
            "period_start": rfc3339(i.period_start_time.ToDatetime(tzinfo=UTC)),
            "period_end": rfc3339(i.period_end_time.ToDatetime(tzinfo=UTC)),
            "total": f"{i.total} {i.currency}",
        }
        for i in invoices
    ]
    emit_list(
        args,
        rows,
        _COLUMNS,
        noun=("invoice", "invoices"),
        data=[invoice_dict(i) for i in invoices],
    )
    return 0


_COLUMNS = (
    Column("id"),
    Column("number"),
    Column("state"),
    Column("customer"),
    Column("period_start", "from", time=True),
    Column("period_end", "to", time=True),
    Column("total", right=True),
)


def _get(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=_name(args.id)))
    _show(invoice, args)
    return 0


def _issue(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.IssueInvoice(
            billing_pb2.IssueInvoiceRequest(name=_name(args.id), force=args.force)
        )
    _show(invoice, args)
    return 0


def _void(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=_name(args.id)))
    print(f"invoice {invoice.number or invoice.id} is {invoice_state(invoice)}")
    return 0


def _pay(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.MarkInvoicePaid(
            billing_pb2.MarkInvoicePaidRequest(name=_name(args.id))
        )
    print(f"invoice {invoice.number or invoice.id} is {invoice_state(invoice)}")
    return 0


def _close(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client, elapsed("closing invoices"):
        response = client.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    print(
        f"{len(response.created_invoices)} created, {len(response.drafted_invoices)} drafted,"
        f" {len(response.issued_invoices)} issued"
    )
    return 0


def _retry_sync(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.RetryInvoiceSync(
            billing_pb2.RetryInvoiceSyncRequest(name=_name(args.id))
        )
    _show(invoice, args)
    return 0


def register(commands: Any) -> None:
    """Add the ``invoice`` command and its subcommands to the top-level subparsers."""

    def with_json(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")

    invoice = commands.add_parser("invoices", aliases=["invoice"], help="invoices")
    sub = invoice.add_subparsers(dest="invoice_command", required=True, metavar="COMMAND")

    p = sub.add_parser("preview", help="preview a customer's current invoice")
    p.add_argument("customer", help="customer key")
    with_json(p)
    add_cp_argument(p)
    p.set_defaults(func=_preview)

    p = sub.add_parser("list", help="stored invoices, newest period first")
    p.add_argument("--customer", help="only this customer's")
    p.add_argument("--state", action="append", default=[], choices=STATES, help="repeatable")
    add_output_arguments(p)
    add_cp_argument(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="one invoice with its lines")
    p.add_argument("id", help="invoice id")
    with_json(p)
    add_cp_argument(p)
    p.set_defaults(func=_get)

    p = sub.add_parser("issue", help="issue a draft: number it, freeze lines and total")
    p.add_argument("id", help="invoice id")
    p.add_argument(
        "--force",
        action="store_true",
        help="issue a gathering invoice before its period ends (later usage becomes late usage)",
    )
    with_json(p)
    add_cp_argument(p)
    p.set_defaults(func=_issue)

    p = sub.add_parser("void", help="void an issued invoice (not a paid one)")
    p.add_argument("id", help="invoice id")
    add_cp_argument(p)
    p.set_defaults(func=_void)

    p = sub.add_parser("pay", help="mark an issued invoice paid (payment outside Stripe)")
    p.add_argument("id", help="invoice id")
    add_cp_argument(p)
    p.set_defaults(func=_pay)

    p = sub.add_parser("close", help="run the invoicing job once: create, draft, issue")
    add_cp_argument(p)
    p.set_defaults(func=_close)

    p = sub.add_parser("retry-sync", help="run the Stripe sync of an issued invoice again")
    p.add_argument("id", help="invoice id")
    with_json(p)
    add_cp_argument(p)
    p.set_defaults(func=_retry_sync)
