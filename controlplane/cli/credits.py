"""``meterline credits show|grant|void|ledger|top-up|recharge|alert``: prepaid credits.

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
from decimal import Decimal
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
RECHARGE_MODES = {
    "threshold": credits_pb2.CREDIT_RECHARGE_MODE_THRESHOLD,
    "target": credits_pb2.CREDIT_RECHARGE_MODE_TARGET,
}
_RECHARGE_MODE_NAMES = {value: key for key, value in RECHARGE_MODES.items()}


def register(subparsers: Any) -> None:
    """Add ``credits`` to the ``meterline`` subcommands."""
    credits = subparsers.add_parser(
        "credits", help="prepaid credits: grants, balance, ledger (docs/credits.md)"
    )
    commands = credits.add_subparsers(dest="credits_command", required=True)

    show = commands.add_parser("show", help="a customer's credit balance and grants")
    show.add_argument("customer", help="customer key")
    show.add_argument("--at", default="", help="balance at this ISO 8601 time (default: now)")
    show.add_argument(
        "--window", type=int, default=0, help="days of spending the burn rate covers (default 7)"
    )
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

    _register_recharge(commands)
    _register_alerts(commands)

    ledger = commands.add_parser("ledger", help="the credit ledger of a customer")
    ledger.add_argument("customer", help="customer key")
    ledger.add_argument("--grant", default="", help="only this grant's entries (grant id)")
    _output(ledger)
    ledger.set_defaults(func=_cmd_ledger)


def _register_recharge(commands: Any) -> None:
    recharge = commands.add_parser(
        "recharge", help="auto-recharge: a top-up invoice when the balance runs low"
    )
    verbs = recharge.add_subparsers(dest="recharge_command", required=True)
    set_ = verbs.add_parser("set", help="create or replace a customer's recharge rule")
    set_.add_argument("customer", help="customer key")
    set_.add_argument("--mode", choices=sorted(RECHARGE_MODES), default="threshold")
    set_.add_argument("--threshold", required=True, help="fires when the live balance is below")
    set_.add_argument("--amount", default="", help="threshold mode: the amount bought")
    set_.add_argument("--target", default="", help="target mode: the balance to bring back")
    set_.add_argument("--min", dest="minimum", default="", help="smallest top-up")
    set_.add_argument("--max", dest="maximum", default="", help="largest top-up")
    set_.add_argument("--max-count", type=int, default=0, help="top-ups per billing period")
    set_.add_argument("--max-amount", default="", help="top-up total per billing period")
    set_.add_argument("--currency", default="", help="ISO 4217 (default: the plan's)")
    _output(set_)
    set_.set_defaults(func=_cmd_recharge_set)
    show = verbs.add_parser("show", help="a customer's recharge rule")
    show.add_argument("customer", help="customer key")
    _output(show)
    show.set_defaults(func=_cmd_recharge_show)
    delete = verbs.add_parser("delete", help="delete a customer's recharge rule")
    delete.add_argument("customer", help="customer key")
    add_cp_argument(delete)
    delete.set_defaults(func=_cmd_recharge_delete)


def _register_alerts(commands: Any) -> None:
    alert = commands.add_parser("alert", help="credit-balance alerts through a channel")
    verbs = alert.add_subparsers(dest="alert_command", required=True)
    create = verbs.add_parser("create", help="alert when the balance falls to thresholds")
    create.add_argument("customer", help="customer key")
    create.add_argument("key", help="alert key")
    create.add_argument("--channel", required=True, help="notification channel key")
    create.add_argument(
        "--percent", action="append", default=[], help="of the last funded grant (repeatable)"
    )
    create.add_argument(
        "--amount", action="append", default=[], help="absolute balance (repeatable)"
    )
    _output(create)
    create.set_defaults(func=_cmd_alert_create)
    list_ = verbs.add_parser("list", help="a customer's credit alerts")
    list_.add_argument("customer", help="customer key")
    _output(list_)
    list_.set_defaults(func=_cmd_alert_list)
    delete = verbs.add_parser("delete", help="delete a credit alert")
    delete.add_argument("customer", help="customer key")
    delete.add_argument("key", help="alert key")
    add_cp_argument(delete)
    delete.set_defaults(func=_cmd_alert_delete)


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
    request = credits_pb2.GetCreditBalanceRequest(
        customer=f"customers/{args.customer}", burn_window_days=args.window
    )
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
        "pending": found.pending,
        "burn_window_days": found.burn_window_days,
        "burn_window_start": _time(found.burn_window_start, found.HasField("burn_window_start")),
        "spent_in_window": found.spent_in_window or None,
        "burn_per_day": found.burn_per_day or None,
        "run_out_time": _time(found.run_out_time, found.HasField("run_out_time")),
        "grants": [grant_json(g) for g in grants.credit_grants],
    }
    burn = (
        f"{_money(found.burn_per_day)} {found.currency}/day over the last"
        f" {found.burn_window_days} days (since {data['burn_window_start']})"
        if found.burn_per_day
        else f"unknown (no spending samples in the last {found.burn_window_days} days yet)"
    )
    table = (
        f"customer  {found.customer}\n"
        f"settled   {found.settled} {found.currency}\n"
        f"live      {found.live} {found.currency}  (less usage not invoiced yet)\n"
        f"burn      {burn}\n"
        f"run-out   {data['run_out_time'] or 'not projected (nothing burns)'}\n\n"
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


def _money(text: str) -> str:
    """A decimal string for reading (the JSON keeps every digit): at most 4 decimals."""
    value = Decimal(text)
    rounded = value.quantize(Decimal("0.0001"))
    return str(rounded) if rounded == value else f"~{rounded}"


def rule_json(rule: credits_pb2.CreditRechargeRule) -> dict[str, Any]:
    return {
        "customer": rule.customer,
        "mode": _RECHARGE_MODE_NAMES.get(rule.mode, "unspecified"),
        "threshold": rule.threshold,
        "amount": rule.amount,
        "target": rule.target,
        "minimum": rule.minimum,
        "maximum": rule.maximum,
        "max_count_per_period": rule.max_count_per_period,
        "max_amount_per_period": rule.max_amount_per_period,
        "currency": rule.currency,
    }


def _rule_table(row: dict[str, Any]) -> str:
    buys = (
        f"buy {row['amount']}"
        if row["mode"] == "threshold"
        else f"bring it back to {row['target']}"
    )
    none = ("", "0")
    bounds = (
        f"  min {row['minimum'] if row['minimum'] not in none else '-'}"
        f"  max {row['maximum'] if row['maximum'] not in none else '-'}"
    )
    count = row["max_count_per_period"] or "-"
    total = row["max_amount_per_period"] if row["max_amount_per_period"] not in none else "-"
    return (
        f"customer  {row['customer']}\n"
        f"rule      {row['mode']}: live balance below {row['threshold']} {row['currency']}:"
        f" {buys}\n"
        f"bounds   {bounds}\n"
        f"caps      per billing period: {count} top-ups, {total} {row['currency']}"
    )


def _cmd_recharge_set(args: argparse.Namespace) -> int:
    message = credits_pb2.CreditRechargeRule(
        name=f"customers/{args.customer}/creditRechargeRule",
        mode=RECHARGE_MODES[args.mode],
        threshold=args.threshold,
        amount=args.amount,
        target=args.target,
        minimum=args.minimum,
        maximum=args.maximum,
        max_count_per_period=args.max_count,
        max_amount_per_period=args.max_amount,
        currency=args.currency,
    )
    with _stub(args.cp) as stub:
        rule = stub.UpdateCreditRechargeRule(
            credits_pb2.UpdateCreditRechargeRuleRequest(
                credit_recharge_rule=message, allow_missing=True
            )
        )
    row = rule_json(rule)
    _emit(row, args.output, _rule_table(row))
    return 0


def _cmd_recharge_show(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        rule = stub.GetCreditRechargeRule(
            credits_pb2.GetCreditRechargeRuleRequest(
                name=f"customers/{args.customer}/creditRechargeRule"
            )
        )
    row = rule_json(rule)
    _emit(row, args.output, _rule_table(row))
    return 0


def _cmd_recharge_delete(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        stub.DeleteCreditRechargeRule(
            credits_pb2.DeleteCreditRechargeRuleRequest(
                name=f"customers/{args.customer}/creditRechargeRule"
            )
        )
    print(f"deleted the recharge rule of {args.customer}", file=sys.stderr)
    return 0


def alert_json(alert: credits_pb2.CreditAlert) -> dict[str, Any]:
    return {
        "customer": alert.customer,
        "key": alert.key,
        "channel": alert.channel,
        "percents": list(alert.percents),
        "amounts": list(alert.amounts),
    }


def _alert_table(rows: Sequence[dict[str, Any]]) -> str:
    return _table(
        ("KEY", "CHANNEL", "PERCENTS", "AMOUNTS"),
        [
            (
                row["key"],
                row["channel"],
                ",".join(row["percents"]) or "-",
                ",".join(row["amounts"]) or "-",
            )
            for row in rows
        ],
    )


def _cmd_alert_create(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        alert = stub.CreateCreditAlert(
            credits_pb2.CreateCreditAlertRequest(
                parent=f"customers/{args.customer}",
                credit_alert=credits_pb2.CreditAlert(
                    key=args.key, channel=args.channel, percents=args.percent, amounts=args.amount
                ),
            )
        )
    row = alert_json(alert)
    _emit(row, args.output, _alert_table([row]))
    return 0


def _cmd_alert_list(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        found = stub.ListCreditAlerts(
            credits_pb2.ListCreditAlertsRequest(parent=f"customers/{args.customer}", page_size=1000)
        )
    rows = [alert_json(alert) for alert in found.credit_alerts]
    if not rows and args.output == "table":
        print("no credit alerts", file=sys.stderr)
        return 0
    _emit(rows, args.output, _alert_table(rows))
    return 0


def _cmd_alert_delete(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        stub.DeleteCreditAlert(
            credits_pb2.DeleteCreditAlertRequest(
                name=f"customers/{args.customer}/creditAlerts/{args.key}"
            )
        )
    print(f"deleted credit alert {args.key} of {args.customer}", file=sys.stderr)
    return 0
