"""``meterline plans list|show|publish|archive|new-version`` and ``meterline price-lists``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from google.protobuf import json_format

from controlplane.cli.client import add_cp_argument, admin_client
from controlplane.cli.output import plural
from meterline.admin.v1 import catalog_pb2


def _plan_name(text: str, *, version: int | None = None) -> str:
    name = text if text.startswith("plans/") else f"plans/{text}"
    if version is not None and "/versions/" not in name:
        name = f"{name}/versions/{version}"
    return name


def _state(plan: catalog_pb2.Plan) -> str:
    state = catalog_pb2.PlanState.Name(plan.state).removeprefix("PLAN_STATE_").lower()
    return "published" if state == "active" else state


def _line(plan: catalog_pb2.Plan) -> str:
    return (
        f"{plan.key:20}  v{plan.version:<4}  {_state(plan):10}  {plan.currency}"
        f"  {plan.billing_cadence:5}  {plural(len(plan.rate_cards), 'rate card')}"
        f"  {plan.display_name}"
    )


def _dump(message: Any) -> str:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(data, indent=2, sort_keys=True)


def _show(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        plan = client.catalog.GetPlan(
            catalog_pb2.GetPlanRequest(name=_plan_name(args.plan, version=args.version))
        )
    print(_line(plan))
    print(_dump(plan))
    return 0


def _publish(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        plan = client.catalog.PublishPlan(
            catalog_pb2.PublishPlanRequest(name=_plan_name(args.plan, version=args.version))
        )
    print(_line(plan))
    return 0


def _archive(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        plan = client.catalog.ArchivePlan(
            catalog_pb2.ArchivePlanRequest(name=_plan_name(args.plan, version=args.version))
        )
    print(_line(plan))
    return 0


def _new_version(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        plan = client.catalog.CreatePlanVersion(
            catalog_pb2.CreatePlanVersionRequest(name=_plan_name(args.plan, version=args.source))
        )
    print(_line(plan))
    return 0


def _price_line(price: catalog_pb2.ModelPrice) -> str:
    cells = [
        f"{kind}={getattr(price, kind)}"
        for kind in ("input", "output", "cached_input", "reasoning")
        if getattr(price, kind)
    ]
    since = price.effective_from_time.ToJsonString()
    return f"  {price.model:24}  from {since}  " + "  ".join(cells)


def _print_list(price_list: catalog_pb2.PriceList) -> None:
    print(f"{price_list.key}  {price_list.currency}  {plural(len(price_list.prices), 'price')}")


def _lists(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        response = client.catalog.ListPriceLists(catalog_pb2.ListPriceListsRequest(page_size=1000))
    for price_list in response.price_lists:
        _print_list(price_list)
    return 0


def _list_show(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        price_list = client.catalog.GetPriceList(
            catalog_pb2.GetPriceListRequest(name=f"priceLists/{args.key}")
        )
    _print_list(price_list)
    for price in price_list.prices:
        print(_price_line(price))
    return 0


def register(commands: Any) -> Any:
    """Add ``plans`` and ``price-lists`` to the top-level subparsers; return the subparsers of
    ``plans`` (``list``, ``get`` and ``delete`` come from controlplane/cli/resources.py)."""

    plans = commands.add_parser("plans", help="plan versions: draft -> published -> archived")
    sub = plans_sub = plans.add_subparsers(dest="plans_command", required=True, metavar="COMMAND")

    for name, func, help_text in (
        ("show", _show, "one version with its rate cards (default: the newest)"),
        ("publish", _publish, "publish a draft version (the published one is archived)"),
        ("archive", _archive, "archive the published version (no new subscriptions)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("plan", help="plan key or plans/KEY/versions/N")
        p.add_argument("--version", type=int, help="version number")
        add_cp_argument(p)
        p.set_defaults(func=func)

    p = sub.add_parser("new-version", help="a new draft version copied from an existing one")
    p.add_argument("plan", help="plan key")
    p.add_argument("--from", dest="source", type=int, help="version to copy (default: newest)")
    add_cp_argument(p)
    p.set_defaults(func=_new_version)

    price_lists = commands.add_parser("price-lists", help="model price lists")
    sub = price_lists.add_subparsers(dest="price_lists_command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="price lists")
    add_cp_argument(p)
    p.set_defaults(func=_lists)
    p = sub.add_parser("show", help="a price list's prices per model, over time")
    p.add_argument("key", help="price list key")
    add_cp_argument(p)
    p.set_defaults(func=_list_show)
    return plans_sub
