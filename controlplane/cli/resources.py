"""``meterline <noun> list|get|delete`` for the gateway's and the catalog's resources.

Nouns then verbs, as kubectl and gh have them: ``meterline routes list``, ``meterline
customers get acme``, ``meterline consumers delete acme-corp``. Lists are newest first
(``order_by: create_time desc``), a page at a time (``--limit``, ``--page-token``); every read
takes ``--output table|json|yaml``. JSON and YAML print the whole resource as the API returns
it (protobuf's JSON mapping, field names as in the .proto files).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from controlplane.cli.client import AdminClient, add_cp_argument, admin_client
from controlplane.cli.output import (
    Column,
    add_output_arguments,
    add_paging_arguments,
    emit_list,
    emit_one,
    rfc3339,
)
from meterline.admin.v1 import catalog_pb2, customers_pb2, gateway_pb2

NEWEST_FIRST = "create_time desc"

# (items, next page token) of one List call.
Page = tuple[Sequence[Any], str]


@dataclass(frozen=True)
class Resource:
    """How the CLI lists, gets and deletes one kind of resource."""

    noun: str  # plural, the command's name: "routes"
    singular: str
    columns: tuple[Column, ...]
    row: Callable[[Any], dict[str, Any]]
    list_page: Callable[[AdminClient, argparse.Namespace], Page]
    get: Callable[[AdminClient, argparse.Namespace], Any] | None = None
    delete: Callable[[AdminClient, argparse.Namespace], str] | None = None
    aliases: tuple[str, ...] = ()
    list_filters: Callable[[argparse.ArgumentParser], object] | None = None
    name_help: str = "name"
    name_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _time(ts: timestamp_pb2.Timestamp, present: bool = True) -> str:
    return rfc3339(ts.ToDatetime(tzinfo=UTC)) if present and ts.seconds else ""


def _bare(name: str, collection: str) -> str:
    return name.removeprefix(f"{collection}/")


def _paging(args: argparse.Namespace) -> dict[str, Any]:
    return {"page_size": args.limit, "page_token": args.page_token, "order_by": NEWEST_FIRST}


def _method(client: AdminClient, call: str) -> Callable[[Any], Any]:
    """``"gateway.ListRoutes"``: that method of that stub."""
    stub, method = call.split(".")
    found: Callable[[Any], Any] = getattr(getattr(client, stub), method)
    return found


def _lister(
    call: str, request: Any, field: str
) -> Callable[[AdminClient, argparse.Namespace], Page]:
    """A List method as a resource's ``list_page``: newest first, one page."""

    def list_page(client: AdminClient, args: argparse.Namespace) -> Page:
        response = _method(client, call)(request(**_paging(args)))
        return getattr(response, field), response.next_page_token

    return list_page


def _getter(
    call: str, request: Any, collection: str
) -> Callable[[AdminClient, argparse.Namespace], Any]:
    def get(client: AdminClient, args: argparse.Namespace) -> Any:
        return _method(client, call)(request(name=f"{collection}/{_bare(args.name, collection)}"))

    return get


def _deleter(
    call: str, request: Any, collection: str
) -> Callable[[AdminClient, argparse.Namespace], str]:
    def delete(client: AdminClient, args: argparse.Namespace) -> str:
        name = _bare(args.name, collection)
        _method(client, call)(request(name=f"{collection}/{name}"))
        return f"deleted {collection.removesuffix('s')} {name}"

    return delete


# Gateway ----------------------------------------------------------------------------------


def _service_row(m: gateway_pb2.Service) -> dict[str, Any]:
    return {
        "name": m.service_name,
        "url": m.url,
        "created": _time(m.create_time),
        "updated": _time(m.update_time),
    }


def _route_row(m: gateway_pb2.Route) -> dict[str, Any]:
    return {
        "name": m.route_name,
        "service": _bare(m.service, "services"),
        "paths": list(m.paths),
        "methods": list(m.methods),
        "strip_path": m.strip_path,
        "created": _time(m.create_time),
    }


def _consumer_row(m: gateway_pb2.Consumer) -> dict[str, Any]:
    return {
        "username": m.username,
        "custom_id": m.custom_id,
        "keys": m.key_count,
        "created": _time(m.create_time),
    }


def _plugin_scope(m: gateway_pb2.Plugin) -> str:
    parts = [
        f"{kind}={_bare(value, kind + 's')}"
        for kind, value in (("service", m.service), ("route", m.route), ("consumer", m.consumer))
        if value
    ]
    return ",".join(parts) or "global"


def _plugin_row(m: gateway_pb2.Plugin) -> dict[str, Any]:
    return {
        "id": m.id,
        "plugin": m.plugin_name,
        "scope": _plugin_scope(m),
        "enabled": m.enabled,
        "created": _time(m.create_time),
    }


SERVICES = Resource(
    noun="services",
    singular="service",
    columns=(Column("name"), Column("url"), Column("created", time=True)),
    row=_service_row,
    list_page=_lister("gateway.ListServices", gateway_pb2.ListServicesRequest, "services"),
    get=_getter("gateway.GetService", gateway_pb2.GetServiceRequest, "services"),
    delete=_deleter("gateway.DeleteService", gateway_pb2.DeleteServiceRequest, "services"),
)

ROUTES = Resource(
    noun="routes",
    singular="route",
    columns=(
        Column("name"),
        Column("service"),
        Column("paths"),
        Column("methods"),
        Column("created", time=True),
    ),
    row=_route_row,
    list_page=_lister("gateway.ListRoutes", gateway_pb2.ListRoutesRequest, "routes"),
    get=_getter("gateway.GetRoute", gateway_pb2.GetRouteRequest, "routes"),
    delete=_deleter("gateway.DeleteRoute", gateway_pb2.DeleteRouteRequest, "routes"),
)

CONSUMERS = Resource(
    noun="consumers",
    singular="consumer",
    columns=(
        Column("username"),
        Column("custom_id"),
        Column("keys", right=True),
        Column("created", time=True),
    ),
    row=_consumer_row,
    list_page=_lister("gateway.ListConsumers", gateway_pb2.ListConsumersRequest, "consumers"),
    get=_getter("gateway.GetConsumer", gateway_pb2.GetConsumerRequest, "consumers"),
    delete=_deleter("gateway.DeleteConsumer", gateway_pb2.DeleteConsumerRequest, "consumers"),
    name_help="username",
)

PLUGINS = Resource(
    noun="plugins",
    singular="plugin",
    columns=(
        Column("id"),
        Column("plugin"),
        Column("scope"),
        Column("enabled"),
        Column("created", time=True),
    ),
    row=_plugin_row,
    list_page=_lister("gateway.ListPlugins", gateway_pb2.ListPluginsRequest, "plugins"),
    get=_getter("gateway.GetPlugin", gateway_pb2.GetPluginRequest, "plugins"),
    delete=_deleter("gateway.DeletePlugin", gateway_pb2.DeletePluginRequest, "plugins"),
    name_help="plugin id (see `meterline plugins list`)",
)


# Billing ----------------------------------------------------------------------------------


def _customer_row(m: customers_pb2.Customer) -> dict[str, Any]:
    return {
        "key": m.key,
        "name": m.display_name,
        "subjects": list(m.subjects),
        "stripe_customer": m.stripe_customer_id,
        "created": _time(m.create_time),
    }


def subscription_state(m: customers_pb2.Subscription) -> str:
    name = customers_pb2.SubscriptionState.Name(m.state)
    return name.removeprefix("SUBSCRIPTION_STATE_").lower()


def _subscription_row(m: customers_pb2.Subscription) -> dict[str, Any]:
    return {
        "id": m.id,
        "customer": _bare(m.customer, "customers"),
        "plan": m.plan,
        "state": subscription_state(m),
        "start": _time(m.start_time),
        "end": _time(m.end_time, m.HasField("end_time")),
        "created": _time(m.create_time),
    }


def _feature_row(m: catalog_pb2.Feature) -> dict[str, Any]:
    return {
        "key": m.key,
        "name": m.display_name,
        "meter": m.meter,
        "filters": dict(sorted(m.filters.items())),
        "created": _time(m.create_time),
    }


def plan_state(m: catalog_pb2.Plan) -> str:
    state = catalog_pb2.PlanState.Name(m.state).removeprefix("PLAN_STATE_").lower()
    return "published" if state == "active" else state


def _plan_row(m: catalog_pb2.Plan) -> dict[str, Any]:
    return {
        "key": m.key,
        "version": f"v{m.version}",
        "state": plan_state(m),
        "currency": m.currency,
        "cadence": m.billing_cadence,
        "rate_cards": len(m.rate_cards),
        "name": m.display_name,
        "created": _time(m.create_time),
    }


def _plan_name(a: argparse.Namespace) -> str:
    name = a.name if a.name.startswith("plans/") else f"plans/{a.name}"
    version = getattr(a, "version", None)
    if version is not None and "/versions/" not in name:
        name = f"{name}/versions/{version}"
    return name


def _list_subscriptions(c: AdminClient, a: argparse.Namespace) -> Page:
    request = customers_pb2.ListSubscriptionsRequest(
        parent=f"customers/{a.customer}" if a.customer else "", **_paging(a)
    )
    response = c.customers.ListSubscriptions(request)
    return response.subscriptions, response.next_page_token


def _list_plans(c: AdminClient, a: argparse.Namespace) -> Page:
    response = c.catalog.ListPlans(catalog_pb2.ListPlansRequest(**_paging(a)))
    plans = [p for p in response.plans if not a.key or p.key == a.key]
    return plans, response.next_page_token


def _delete_plan(c: AdminClient, a: argparse.Namespace) -> str:
    if a.version is None and "/versions/" not in a.name:
        raise SystemExit("error: plans delete: give the draft version to delete (--version N)")
    name = _plan_name(a)
    c.catalog.DeletePlan(catalog_pb2.DeletePlanRequest(name=name))
    return f"deleted draft {name}"


def _plan_version_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, help="version number (get: default the newest)")


CUSTOMERS = Resource(
    noun="customers",
    singular="customer",
    columns=(
        Column("key"),
        Column("name"),
        Column("subjects"),
        Column("stripe_customer", "stripe"),
        Column("created", time=True),
    ),
    row=_customer_row,
    list_page=_lister("customers.ListCustomers", customers_pb2.ListCustomersRequest, "customers"),
    get=_getter("customers.GetCustomer", customers_pb2.GetCustomerRequest, "customers"),
    delete=_deleter("customers.DeleteCustomer", customers_pb2.DeleteCustomerRequest, "customers"),
    name_help="customer key",
)

SUBSCRIPTIONS = Resource(
    noun="subscriptions",
    singular="subscription",
    aliases=("subscription",),
    columns=(
        Column("id"),
        Column("customer"),
        Column("plan"),
        Column("state"),
        Column("start", time=True),
        Column("end", time=True),
    ),
    row=_subscription_row,
    list_page=_list_subscriptions,
    get=_getter("customers.GetSubscription", customers_pb2.GetSubscriptionRequest, "subscriptions"),
    delete=_deleter(
        "customers.DeleteSubscription", customers_pb2.DeleteSubscriptionRequest, "subscriptions"
    ),
    list_filters=lambda p: p.add_argument("--customer", help="only this customer's"),
    name_help="subscription id",
)

FEATURES = Resource(
    noun="features",
    singular="feature",
    columns=(
        Column("key"),
        Column("name"),
        Column("meter"),
        Column("filters"),
        Column("created", time=True),
    ),
    row=_feature_row,
    list_page=_lister("catalog.ListFeatures", catalog_pb2.ListFeaturesRequest, "features"),
    get=_getter("catalog.GetFeature", catalog_pb2.GetFeatureRequest, "features"),
    delete=_deleter("catalog.DeleteFeature", catalog_pb2.DeleteFeatureRequest, "features"),
    name_help="feature key",
)

PLANS = Resource(
    noun="plans",
    singular="plan version",
    columns=(
        Column("key"),
        Column("version"),
        Column("state"),
        Column("currency"),
        Column("cadence"),
        Column("rate_cards", right=True),
        Column("name"),
        Column("created", time=True),
    ),
    row=_plan_row,
    list_page=_list_plans,
    get=lambda c, a: c.catalog.GetPlan(catalog_pb2.GetPlanRequest(name=_plan_name(a))),
    delete=_delete_plan,
    list_filters=lambda p: p.add_argument("key", nargs="?", help="only this plan's versions"),
    name_help="plan key or plans/KEY/versions/N",
    name_arguments=_plan_version_argument,
)

ALL = (SERVICES, ROUTES, CONSUMERS, PLUGINS, CUSTOMERS, SUBSCRIPTIONS, FEATURES, PLANS)


# Commands ---------------------------------------------------------------------------------


def _whole(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _cmd_list(resource: Resource) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with admin_client(args.cp) as client:
            items, token = resource.list_page(client, args)
        emit_list(
            args,
            [resource.row(m) for m in items],
            resource.columns,
            noun=(resource.singular, resource.singular + "s"),
            data=[_whole(m) for m in items],
            next_page_token=token,
        )
        return 0

    return run


def _cmd_get(resource: Resource) -> Callable[[argparse.Namespace], int]:
    assert resource.get is not None
    get = resource.get

    def run(args: argparse.Namespace) -> int:
        with admin_client(args.cp) as client:
            message = get(client, args)
        emit_one(args, resource.row(message), resource.columns, data=_whole(message))
        return 0

    return run


def _cmd_delete(resource: Resource) -> Callable[[argparse.Namespace], int]:
    assert resource.delete is not None
    delete = resource.delete

    def run(args: argparse.Namespace) -> int:
        with admin_client(args.cp) as client:
            print(delete(client, args))
        return 0

    return run


def add_verbs(sub: Any, resource: Resource) -> None:
    """Add ``list``, ``get`` and ``delete`` (those the resource has) to a noun's subparsers."""
    p = sub.add_parser("list", help=f"{resource.noun}, newest first")
    if resource.list_filters is not None:
        resource.list_filters(p)
    add_paging_arguments(p)
    add_output_arguments(p)
    add_cp_argument(p)
    p.set_defaults(func=_cmd_list(resource))
    if resource.get is not None:
        p = sub.add_parser("get", help=f"one {resource.singular}")
        p.add_argument("name", help=resource.name_help)
        if resource.name_arguments is not None:
            resource.name_arguments(p)
        add_output_arguments(p)
        add_cp_argument(p)
        p.set_defaults(func=_cmd_get(resource))
    if resource.delete is not None:
        p = sub.add_parser("delete", help=f"delete a {resource.singular}")
        p.add_argument("name", help=resource.name_help)
        if resource.name_arguments is not None:
            resource.name_arguments(p)
        add_cp_argument(p)
        p.set_defaults(func=_cmd_delete(resource))


def register(commands: Any, existing: dict[str, Any]) -> None:
    """Add a command per noun, or the verbs to a noun's existing subparsers (``existing``)."""
    for resource in ALL:
        sub = existing.get(resource.noun)
        if sub is None:
            parser = commands.add_parser(
                resource.noun, aliases=list(resource.aliases), help=f"{resource.noun}"
            )
            sub = parser.add_subparsers(
                dest=f"{resource.noun}_command", required=True, metavar="COMMAND"
            )
        add_verbs(sub, resource)
