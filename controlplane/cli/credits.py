"""``meterline credits show|grant|void|ledger``: prepaid credits of a customer.

Self-contained (its own stub and rendering) so it registers with one line in ``main.py``.
Reads take ``--output table|json|yaml``; errors go to stderr in one line (``main``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import grpc
import yaml
from google.protobuf import timestamp_pb2

from controlplane.cli.client import add_cp_argument, operator_channel
from meterline.admin.v1 import credits_pb2, credits_pb2_grpc

FUNDINGS = {
    "invoice": credits_pb2.CREDIT_FUNDING_INVOICE,
    "promotional": credits_pb2.CREDIT_FUNDING_PROMOTIONAL,
    "external": credits_pb2.CREDIT_FUNDING_EXTERNAL,
}
_FUNDING_NAMES = {value: key for key, value in FUNDINGS.items()}


def register(subparsers: Any) -> None:
    """Add ``credits`` to the ``meterline`` subcommands."""
    credits = subparsers.add_parser(
        "credits", help="prepaid credits: grants, balance, ledger (docs/credits.md)"
    )
    commands = credits.add_subparsers(dest="credits_command", required=True)

    show = commands.add_parser("show", help="a customer's credit balance and grants")
    show.add_argument("customer", help="customer key")
    show.add_argument("--at", default="", help="balance at this ISO 8601 time (default: now)")
    _output(show)
    show.set_defaults(func=_cmd_show)

    grant = commands.add_parser("grant", help="give a customer credits (idempotent by --key)")
    grant.add_argument("customer", help="customer key")
    grant.add_argument("--amount", required=True, help='decimal amount, e.g. "20"')
    grant.add_argument("--currency", default="", help="ISO 4217 (default: the plan's)")
    grant.add_argument("--funding", choices=sorted(FUNDINGS), default="promotional")
    grant.add_argument("--priority", type=int, default=0, help="lower is spent first")
    grant.add_argument("--key", default="", help="idempotency key: the same key grants once")
    grant.add_argument("--effective", default="", help="ISO 8601 time (default: now)")
    expiry = grant.add_mutually_exclusive_group()
    expiry.add_argument("--expires", default="", help="ISO 8601 duration, e.g. P90D")
    expiry.add_argument("--expire-time", default="", help="ISO 8601 time")
    grant.add_argument(
        "--feature", action="append", default=[], help="only pay this feature (repeatable)"
    )
    grant.add_argument("--description", default="")
    _output(grant)
    grant.set_defaults(func=_cmd_grant)

    void = commands.add_parser("void", help="void a grant: its remainder leaves the balance")
    void.add_argument("customer", help="customer key")
    void.add_argument("grant", help="grant id")
    _output(void)
    void.set_defaults(func=_cmd_void)

    top_up = commands.add_parser(
        "top-up", help="invoice a customer for credits (granted when the invoice is paid)"
    )
    top_up.add_argument("customer", help="customer key")
    top_up.add_argument("--amount", required=True, help='decimal amount, e.g. "50"')
    _output(top_up)
    top_up.set_defaults(func=_cmd_top_up)

    ledger = commands.add_parser("ledger", help="the credit ledger of a customer")
    ledger.add_argument("customer", help="customer key")
    ledger.add_argument("--grant", default="", help="only this grant's entries (grant id)")
    _output(ledger)
    ledger.set_defaults(func=_cmd_ledger)


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help="format"
    )
    add_cp_argument(parser)


@contextmanager
def _stub(address: str) -> Iterator[credits_pb2_grpc.CreditServiceStub]:
    with operator_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"error: no control plane answers at {address}") from None
        yield credits_pb2_grpc.CreditServiceStub(channel)


def _timestamp(text: str, flag: str) -> timestamp_pb2.Timestamp:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {flag} must be an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise SystemExit(f"error: {flag} needs a timezone, like Z or +00:00")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _time(stamp: timestamp_pb2.Timestamp, present: bool) -> str | None:
    return stamp.ToJsonString() if present else None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _emit(data: Any, output: str, table: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(table)


def grant_json(grant: credits_pb2.CreditGrant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "customer": grant.customer,
        "key": grant.key or None,
        "amount": grant.amount,
        "remaining": grant.remaining,
        "currency": grant.currency,
        "funding": _FUNDING_NAMES.get(grant.funding, "unspecified"),
        "priority": grant.priority,
        "features": list(grant.features),
        "effective_time": _time(grant.effective_time, grant.HasField("effective_time")),
        "expire_time": _time(grant.expire_time, grant.HasField("expire_time")),
        "void_time": _time(grant.void_time, grant.HasField("void_time")),
        "description": grant.description,
    }


def _grant_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ("ID", "KEY", "AMOUNT", "REMAINING", "FUNDING", "PRIORITY", "EXPIRES", "FEATURES")
    return _table(
        header,
        [
            (
                row["id"],
                row["key"] or "-",
                f"{row['amount']} {row['currency']}",
                row["remaining"],
                row["funding"],
                str(row["priority"]),
                row["expire_time"] or "never",
                ",".join(row["features"]) or "all",
            )
            for row in rows
        ],
    )


def _cmd_show(args: argparse.Namespace) -> int:
    request = credits_pb2.GetCreditBalanceRequest(customer=f"customers/{args.customer}")
    if args.at:
        request.time.CopyFrom(_timestamp(args.at, "--at"))
    with _stub(args.cp) as stub:
        found = stub.GetCreditBalance(request)
        grants = stub.ListCreditGrants(
            credits_pb2.ListCreditGrantsRequest(parent=f"customers/{args.customer}", page_size=1000)
        )
    data = {
        "customer": found.customer,
        "currency": found.currency,
        "time": found.time.ToJsonString(),
        "settled": found.settled,
        "live": found.live,
        "grants": [grant_json(g) for g in grants.credit_grants],
    }
    table = (
        f"customer  {found.customer}\n"
        f"settled   {found.settled} {found.currency}\n"
        f"live      {found.live} {found.currency}  (less usage not invoiced yet)\n\n"
        + (_grant_table(data["grants"]) if data["grants"] else "no credit grants")
    )
    _emit(data, args.output, table)
    return 0


def _cmd_grant(args: argparse.Namespace) -> int:
    message = credits_pb2.CreditGrant(
        amount=args.amount,
        currency=args.currency,
        funding=FUNDINGS[args.funding],
        priority=args.priority,
        key=args.key,
        features=args.feature,
        description=args.description,
        expires_after=args.expires,
    )
    if args.effective:
        message.effective_time.CopyFrom(_timestamp(args.effective, "--effective"))
    if args.expire_time:
        message.expire_time.CopyFrom(_timestamp(args.expire_time, "--expire-time"))
    with _stub(args.cp) as stub:
        created = stub.CreateCreditGrant(
            credits_pb2.CreateCreditGrantRequest(
                parent=f"customers/{args.customer}", credit_grant=message
            )
        )
    row = grant_json(created)
    _emit(row, args.output, _grant_table([row]))
    return 0


def _cmd_void(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        voided = stub.VoidCreditGrant(
            credits_pb2.VoidCreditGrantRequest(
                name=f"customers/{args.customer}/creditGrants/{args.grant}"
            )
        )
    row = grant_json(voided)
    _emit(row, args.output, _grant_table([row]))
    return 0


def _cmd_ledger(args: argparse.Namespace) -> int:
    parent = f"customers/{args.customer}"
    entries: list[credits_pb2.CreditTransaction] = []
    with _stub(args.cp) as stub:
        token = ""
        while True:
            response = stub.ListCreditTransactions(
                credits_pb2.ListCreditTransactionsRequest(
                    parent=parent,
                    grant=f"{parent}/creditGrants/{args.grant}" if args.grant else "",
                    page_size=1000,
                    page_token=token,
                )
            )
            entries.extend(response.credit_transactions)
            token = response.next_page_token
            if not token:
                break
    rows = [
        {
            "time": entry.time.ToJsonString(),
            "type": credits_pb2.CreditTransactionType.Name(entry.type)
            .removeprefix("CREDIT_TRANSACTION_TYPE_")
            .lower(),
            "amount": entry.amount,
            "currency": entry.currency,
            "grant": entry.grant.rsplit("/", 1)[-1],
            "invoice": entry.invoice.removeprefix("invoices/") or None,
            "description": entry.description,
        }
        for entry in entries
    ]
    table = _table(
        ("TIME", "TYPE", "AMOUNT", "GRANT", "INVOICE", "DESCRIPTION"),
        [
            (
                str(row["time"]),
                str(row["type"]),
                f"{row['amount']} {row['currency']}",
                str(row["grant"]),
                str(row["invoice"] or "-"),
                str(row["description"]),
            )
            for row in rows
        ],
    )
    if not rows and args.output == "table":
        # Only data on stdout (controlplane/cli/output.py): the note goes to stderr.
        print("no credit transactions", file=sys.stderr)
        return 0
    _emit(rows, args.output, table)
    return 0


def _cmd_top_up(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        invoice = stub.CreateCreditTopUp(
            credits_pb2.CreateCreditTopUpRequest(
                parent=f"customers/{args.customer}", amount=args.amount
            )
        )
    data = {
        "invoice": invoice.id,
        "number": invoice.number,
        "total": invoice.total,
        "currency": invoice.currency,
        "stripe_invoice_id": invoice.stripe_invoice_id or None,
    }
    table = (
        f"issued top-up invoice {invoice.number} ({invoice.id}): {invoice.total}"
        f" {invoice.currency}; the credits are granted when it is paid"
    )
    _emit(data, args.output, table)
    return 0
