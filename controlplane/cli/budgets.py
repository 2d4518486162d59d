"""``meterline budgets create|list|delete``: money budgets per customer and billing period."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controlplane.cli.client import add_cp_argument
from controlplane.cli.output import Column, add_output_arguments, emit_list
from meterline.admin.v1 import entitlements_pb2

_MODES = {"hard": entitlements_pb2.BUDGET_MODE_HARD, "soft": entitlements_pb2.BUDGET_MODE_SOFT}
_MODE_NAMES = {value: key for key, value in _MODES.items()}


def register(subparsers: Any) -> None:
    """Add ``budgets`` to the ``meterline`` subcommands."""

    budgets = subparsers.add_parser(
        "budgets", help="money budgets per customer and billing period (hard: block; soft: alert)"
    )
    commands = budgets.add_subparsers(dest="budgets_command", required=True)
    create = commands.add_parser("create", help="cap a customer's spending per billing period")
    create.add_argument("customer", help="customer key")
    create.add_argument("--amount", required=True, help='decimal amount, e.g. "100"')
    create.add_argument("--currency", default="", help="ISO 4217 (default: the plan's)")
    create.add_argument("--period", default="", help="ISO 8601 (default: the plan's cadence)")
    create.add_argument("--mode", choices=sorted(_MODES), default="hard")
    create.add_argument("--json", action="store_true", help="print JSON")
    add_cp_argument(create)
    create.set_defaults(func=_cmd_create)

    listing = commands.add_parser("list", help="budgets with what is spent and left")
    listing.add_argument("customer", nargs="?", help="customer key (default: every customer)")
    add_output_arguments(listing)
    add_cp_argument(listing)
    listing.set_defaults(func=_cmd_list)

    delete = commands.add_parser("delete", help="delete a budget")
    delete.add_argument("customer", help="customer key")
    delete.add_argument("budget", help="budget id")
    add_cp_argument(delete)
    delete.set_defaults(func=_cmd_delete)


def budget_json(budget: entitlements_pb2.Budget) -> dict[str, Any]:
    return {
        "id": budget.id,
        "customer": budget.name.split("/")[1] if budget.name else "",
        "amount": budget.amount,
        "currency": budget.currency,
        "period": budget.period,
        "mode": _MODE_NAMES.get(budget.mode, "unspecified"),
        "spent": budget.spent or None,
        "remaining": budget.remaining or None,
        "period_end": budget.period_end_time.ToJsonString()
        if budget.HasField("period_end_time")
        else None,
    }


def _cmd_create(args: argparse.Namespace) -> int:
    from controlplane.cli.entitlements import _stub

    budget = entitlements_pb2.Budget(
        amount=args.amount, currency=args.currency, period=args.period, mode=_MODES[args.mode]
    )
    with _stub(args.cp) as stub:
        created = stub.CreateBudget(
            entitlements_pb2.CreateBudgetRequest(parent=f"customers/{args.customer}", budget=budget)
        )
    if args.json:
        print(json.dumps(budget_json(created), indent=2))
    else:
        print(
            f"created {args.mode} budget {created.id}: {created.amount} {created.currency} "
            f"per {created.period} (spent {created.spent or '0'})"
        )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from controlplane.cli.entitlements import _stub

    found: list[entitlements_pb2.Budget] = []
    with _stub(args.cp) as stub:
        token = ""
        while True:
            response = stub.ListBudgets(
                entitlements_pb2.ListBudgetsRequest(
                    parent=f"customers/{args.customer}" if args.customer else "",
                    page_size=1000,
                    page_token=token,
                )
            )
            found.extend(response.budgets)
            token = response.next_page_token
            if not token:
                break
    rows = [budget_json(b) for b in found]
    emit_list(args, rows, _COLUMNS, noun=("budget", "budgets"))
    return 0


_COLUMNS = (
    Column("id"),
    Column("customer"),
    Column("amount", right=True),
    Column("currency"),
    Column("period"),
    Column("mode"),
    Column("spent", right=True),
    Column("remaining", right=True),
    Column("period_end", "resets", time=True),
)


def _cmd_delete(args: argparse.Namespace) -> int:
    from controlplane.cli.entitlements import _stub

    with _stub(args.cp) as stub:
        deleted = stub.DeleteBudget(
            entitlements_pb2.DeleteBudgetRequest(
                name=f"customers/{args.customer}/budgets/{args.budget}"
            )
        )
    print(f"deleted budget {deleted.id}")
    return 0
