"""``meterline invoice preview|list|show|issue|void|pay|close|retry-sync``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controlplane.cli.client import add_cp_argument, admin_client
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
    if args.json:
        data: list[dict[str, Any]] = [invoice_dict(i) for i in invoices]
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'ID':36}  {'NUMBER':18}  {'STATE':14}  {'CUSTOMER':16}  {'PERIOD':23}  TOTAL")
    for invoice in invoices:
        period = (
            f"{invoice.period_start_time.ToJsonString()[:10]}.."
            f"{invoice.period_end_time.ToJsonString()[:10]}"
        )
        print(
            f"{invoice.id:36}  {invoice.number or '-':18}  {invoice_state(invoice):14}"
            f"  {invoice.customer.removeprefix('customers/'):16}  {period:23}"
            f"  {invoice.total} {invoice.currency}"
        )
    return 0


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
    with admin_client(args.cp) as client:
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

    invoice = commands.add_parser("invoice", help="invoices")
    sub = invoice.add_subparsers(dest="invoice_command", required=True, metavar="COMMAND")

    p = sub.add_parser("preview", help="preview a customer's current invoice")
    p.add_argument("customer", help="customer key")
    with_json(p)
    add_cp_argument(p)
    p.set_defaults(func=_preview)

    p = sub.add_parser("list", help="stored invoices, oldest period first")
    p.add_argument("--customer", help="only this customer's")
    p.add_argument("--state", action="append", default=[], choices=STATES, help="repeatable")
    with_json(p)
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
