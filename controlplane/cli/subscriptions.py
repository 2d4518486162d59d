"""``meterline subscription list|cancel|change-plan|migrate``."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from controlplane.cli.client import add_cp_argument, admin_client
from controlplane.cli.output import add_output_arguments, emit_one
from meterline.admin.v1 import customers_pb2


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return value


def _name(id: str) -> str:
    return id if id.startswith("subscriptions/") else f"subscriptions/{id}"


def _print(sub: customers_pb2.Subscription, args: argparse.Namespace) -> None:
    from controlplane.cli.resources import SUBSCRIPTIONS

    emit_one(
        args,
        SUBSCRIPTIONS.row(sub),
        SUBSCRIPTIONS.columns,
        data=json_format.MessageToDict(sub, preserving_proto_field_name=True),
    )


def _cancel(args: argparse.Namespace) -> int:
    request = customers_pb2.CancelSubscriptionRequest(name=_name(args.id))
    if args.at_period_end:
        request.timing = customers_pb2.CANCEL_TIMING_PERIOD_END
    elif args.at is not None:
        request.end_time.FromDatetime(args.at)
    else:
        request.timing = customers_pb2.CANCEL_TIMING_IMMEDIATELY
    with admin_client(args.cp) as client:
        _print(client.customers.CancelSubscription(request), args)
    return 0


def _change(args: argparse.Namespace) -> int:
    plan = args.plan if args.plan.startswith("plans/") else f"plans/{args.plan}"
    request = customers_pb2.ChangeSubscriptionPlanRequest(name=_name(args.id), plan=plan)
    if args.at is not None:
        request.change_time.FromDatetime(args.at)
    with admin_client(args.cp) as client:
        _print(client.customers.ChangeSubscriptionPlan(request), args)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    request = customers_pb2.MigrateSubscriptionRequest(
        name=_name(args.id), target_version=args.version or 0
    )
    if args.at is not None:
        request.migrate_time.FromDatetime(args.at)
    with admin_client(args.cp) as client:
        _print(client.customers.MigrateSubscription(request), args)
    return 0


def register(commands: Any) -> Any:
    """Add ``subscriptions`` (alias ``subscription``) to the top-level subparsers; return its
    subparsers (``list`` and ``get`` come from controlplane/cli/resources.py)."""

    subscription = commands.add_parser(
        "subscriptions", aliases=["subscription"], help="subscriptions"
    )
    sub = subscription.add_subparsers(dest="subscription_command", required=True, metavar="COMMAND")

    p = sub.add_parser("cancel", help="end a subscription (now by default)")
    p.add_argument("id", help="subscription id")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at-period-end", action="store_true", help="when its period ends")
    when.add_argument("--at", type=_time, metavar="TIME", help="at this ISO 8601 time")
    add_output_arguments(p)
    add_cp_argument(p)
    p.set_defaults(func=_cancel)

    p = sub.add_parser(
        "change-plan", help="move to another plan; flat fees of both parts are prorated"
    )
    p.add_argument("id", help="subscription id")
    p.add_argument("plan", help="plan key (its active version) or plans/KEY/versions/N")
    p.add_argument("--at", type=_time, metavar="TIME", help="when (default: now)")
    add_output_arguments(p)
    add_cp_argument(p)
    p.set_defaults(func=_change)

    p = sub.add_parser(
        "migrate", help="move to another published version of its plan (like a plan change)"
    )
    p.add_argument("id", help="subscription id")
    p.add_argument("--version", type=int, help="target version (default: the published one)")
    p.add_argument("--at", type=_time, metavar="TIME", help="when (default: now)")
    add_output_arguments(p)
    add_cp_argument(p)
    p.set_defaults(func=_migrate)
    return sub
