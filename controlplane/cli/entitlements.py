"""``meterline entitlements list``, ``meterline grants create|list|void`` (and budgets)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from controlplane.cli.client import add_cp_argument, ready_channel
from controlplane.cli.output import Column, add_output_arguments, emit_list
from meterline.admin.v1 import (
    catalog_pb2,
    customers_pb2,
    customers_pb2_grpc,
    entitlements_pb2,
    entitlements_pb2_grpc,
)


def register(subparsers: Any) -> None:
    """Add ``entitlements`` and ``grants`` to the ``meterline`` subcommands."""

    entitlements = subparsers.add_parser(
        "entitlements", help="customers' entitlements: usage, balance, overage, access"
    )
    commands = entitlements.add_subparsers(dest="entitlements_command", required=True)
    listing = commands.add_parser(
        "list", help="entitlements evaluated now: every customer's, or one customer's"
    )
    listing.add_argument("customer", nargs="?", help="only this customer's (default: all)")
    listing.add_argument("--customer", dest="customer_flag", metavar="KEY", help="the same")
    listing.add_argument("--feature", help="only this feature's")
    listing.add_argument(
        "--no-access", action="store_true", help="only entitlements without access now"
    )
    add_output_arguments(listing)
    add_cp_argument(listing)
    listing.set_defaults(func=_cmd_entitlements_list)

    grants = subparsers.add_parser("grants", help="token grants on metered entitlements")
    grant_commands = grants.add_subparsers(dest="grants_command", required=True)
    create = grant_commands.add_parser("create", help="grant a customer units of a feature")
    create.add_argument("customer", help="customer key")
    create.add_argument("--feature", required=True, help="feature key")
    create.add_argument("--amount", required=True, type=int, help="units (tokens)")
    create.add_argument("--priority", type=int, help="burn-down order, lower first (default 1)")
    create.add_argument("--effective", metavar="TIME", help="ISO 8601 time (default: now)")
    create.add_argument("--expires", metavar="TIME", help="ISO 8601 time (default: never)")
    create.add_argument(
        "--recurrence", metavar="DURATION", help="reset to amount every DURATION (e.g. P1M)"
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    add_cp_argument(create)
    create.set_defaults(func=_cmd_grants_create)

    glist = grant_commands.add_parser("list", help="a customer's grants")
    glist.add_argument("customer", help="customer key")
    glist.add_argument("--feature", help="only this feature")
    glist.add_argument("--all", action="store_true", help="include voided grants")
    add_output_arguments(glist)
    add_cp_argument(glist)
    glist.set_defaults(func=_cmd_grants_list)

    void = grant_commands.add_parser("void", help="void a grant from now on")
    void.add_argument("customer", help="customer key")
    void.add_argument("grant", help="grant id")
    add_cp_argument(void)
    void.set_defaults(func=_cmd_grants_void)


@contextmanager
def _stub(address: str) -> Iterator[entitlements_pb2_grpc.EntitlementServiceStub]:
    with ready_channel(address) as channel:
        yield entitlements_pb2_grpc.EntitlementServiceStub(channel)


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> str:
    return ts.ToJsonString() if present else ""


def _timestamp(text: str, flag: str) -> timestamp_pb2.Timestamp:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {flag} must be an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise SystemExit(f"error: {flag} needs a timezone, like Z or +02:00")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def entitlement_json(value: entitlements_pb2.EntitlementValue) -> dict[str, Any]:
    kind = catalog_pb2.EntitlementType.Name(value.type).removeprefix("ENTITLEMENT_TYPE_")
    data: dict[str, Any] = {
        "feature": value.feature,
        "type": kind.lower(),
        "has_access": value.has_access,
        "subscription": value.subscription.removeprefix("subscriptions/"),
    }
    if value.config:
        data["config"] = json.loads(value.config)
    if value.type == catalog_pb2.ENTITLEMENT_TYPE_METERED:
        data |= {
            "limit": value.limit,
            "usage_period": value.usage_period,
            "soft_limit": value.soft_limit,
            "preserve_overage_at_reset": value.preserve_overage_at_reset,
            "period_start": value.period_start_time.ToJsonString(),
            "period_end": value.period_end_time.ToJsonString(),
            "usage": value.usage,
            "balance": value.balance,
            "overage": value.overage,
            "granted": value.granted,
            "expired": value.expired,
            "carried_overage": value.carried_overage,
        }
    return data


def grant_json(grant: entitlements_pb2.Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "feature": grant.feature,
        "amount": grant.amount,
        "priority": grant.priority,
        "effective": _time(grant.effective_time, grant.HasField("effective_time")),
        "expires": _time(grant.expiration_time, grant.HasField("expiration_time")),
        "recurrence": grant.recurrence_interval,
        "voided": _time(grant.void_time, grant.HasField("void_time")),
    }


_ENTITLEMENT_COLUMNS = (
    Column("customer"),
    Column("feature"),
    Column("kind", "type"),
    Column("limit", right=True),
    Column("usage", right=True),
    Column("balance", right=True),
    Column("overage", right=True),
    Column("access"),
    Column("period_end", "resets", time=True),
)


def _customer_keys(channel: grpc.Channel) -> list[str]:
    stub = customers_pb2_grpc.CustomerServiceStub(channel)
    keys: list[str] = []
    token = ""
    while True:
        response = stub.ListCustomers(
            customers_pb2.ListCustomersRequest(page_size=1000, page_token=token)
        )
        keys.extend(c.key for c in response.customers)
        token = response.next_page_token
        if not token:
            return keys


def _cmd_entitlements_list(args: argparse.Namespace) -> int:
    customer = args.customer_flag or args.customer
    values: list[dict[str, Any]] = []
    with ready_channel(args.cp) as channel:
        stub = entitlements_pb2_grpc.EntitlementServiceStub(channel)
        for key in [customer] if customer else _customer_keys(channel):
            response = stub.ListEntitlements(
                entitlements_pb2.ListEntitlementsRequest(customer=f"customers/{key}")
            )
            values += [{"customer": key, **entitlement_json(v)} for v in response.entitlements]
    values = [
        v
        for v in values
        if (not args.feature or v["feature"] == args.feature)
        and not (args.no_access and v["has_access"])
    ]
    rows = []
    for v in values:
        metered = v["type"] == "metered"
        rows.append(
            {
                "customer": v["customer"],
                "feature": v["feature"],
                "kind": v["type"] + (" (soft)" if v.get("soft_limit") else ""),
                "limit": v["limit"] if metered else "",
                "usage": v["usage"] if metered else "",
                "balance": v["balance"] if metered else "",
                "overage": v["overage"] if metered else "",
                "access": "yes" if v["has_access"] else "NO",
                "period_end": v["period_end"] if metered else "",
            }
        )
    emit_list(args, rows, _ENTITLEMENT_COLUMNS, noun=("entitlement", "entitlements"), data=values)
    return 0


def _cmd_grants_create(args: argparse.Namespace) -> int:
    grant = entitlements_pb2.Grant(feature=args.feature, amount=args.amount)
    if args.priority is not None:
        grant.priority = args.priority
    if args.effective:
        grant.effective_time.CopyFrom(_timestamp(args.effective, "--effective"))
    if args.expires:
        grant.expiration_time.CopyFrom(_timestamp(args.expires, "--expires"))
    if args.recurrence:
        grant.recurrence_interval = args.recurrence
    with _stub(args.cp) as stub:
        created = stub.CreateGrant(
            entitlements_pb2.CreateGrantRequest(parent=f"customers/{args.customer}", grant=grant)
        )
    if args.json:
        print(json.dumps(grant_json(created), indent=2))
    else:
        print(f"created grant {created.id}: {created.amount} units of {created.feature}")
    return 0


def _cmd_grants_list(args: argparse.Namespace) -> int:
    found: list[entitlements_pb2.Grant] = []
    with _stub(args.cp) as stub:
        token = ""
        while True:
            response = stub.ListGrants(
                entitlements_pb2.ListGrantsRequest(
                    parent=f"customers/{args.customer}",
                    feature=args.feature or "",
                    include_voided=args.all,
                    page_size=1000,
                    page_token=token,
                )
            )
            found.extend(response.grants)
            token = response.next_page_token
            if not token:
                break
    grants = [grant_json(g) for g in found]
    emit_list(args, grants, _GRANT_COLUMNS, noun=("grant", "grants"))
    return 0


_GRANT_COLUMNS = (
    Column("id"),
    Column("feature"),
    Column("amount", right=True),
    Column("priority", right=True),
    Column("effective", time=True),
    Column("expires", time=True),
    Column("recurrence"),
    Column("voided", time=True),
)


def _cmd_grants_void(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        voided = stub.VoidGrant(
            entitlements_pb2.VoidGrantRequest(name=f"customers/{args.customer}/grants/{args.grant}")
        )
    print(f"voided grant {voided.id} from {voided.void_time.ToJsonString()}")
    return 0
