"""Operator API servicers: translate messages to domain calls and back, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import Connection

from controlplane.api import convert
from controlplane.api.operator.paging import (
    M,
    checked_page_size,
    decode_offset,
    encode_offset,
    newest_first,
    ordered,
    page,
)
from controlplane.catalog import storage as catalog
from controlplane.catalog.types import BUILTIN_METERS, Plan
from controlplane.clock import Clock
from controlplane.configsync.hub import ConfigHub
from controlplane.configsync.validate import SnapshotValidator
from controlplane.customers import storage as customers
from controlplane.customers.types import Customer
from controlplane.declarative.apply import apply_document
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.gateway import storage as gateway
from controlplane.gateway.dump import DeckExport, export_document
from controlplane.gateway.keys import generate_key, hash_key
from controlplane.gateway.secrets import SecretBox
from controlplane.gateway.types import Consumer
from controlplane.invoicing import lifecycle
from controlplane.invoicing.lifecycle import InvoicingSettings
from controlplane.invoicing.preview import preview_invoice
from controlplane.invoicing.types import Invoice, InvoiceState
from controlplane.portal import service as portal_service
from controlplane.portal import storage as portal_storage
from controlplane.storage.db import Database
from controlplane.stripe_sync import storage as stripe_storage
from controlplane.subscriptions import service as subscription_service
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.types import Subscription
from controlplane.usage import meter_storage as usage_meters
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)

T = TypeVar("T")
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext


class _Base:
    def __init__(self, *, db: Database, clock: Clock, hub: ConfigHub) -> None:
        self._db = db
        self._clock = clock
        self._hub = hub

    async def _tx(self, fn: Callable[[Connection], T]) -> T:
        """Run fn in one transaction, off the event loop."""

        def run() -> T:
            with self._db.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    async def _page(
        self,
        load: Callable[[Connection], Sequence[T]],
        request: Any,
        to_proto: Callable[[T], Any] | None = None,
    ) -> tuple[list[Any], str]:
        """One page of what ``load`` reads (AIP-158), converted, and the next page's token."""
        items = await self._tx(load)
        chunk, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return ([to_proto(i) for i in chunk] if to_proto else list(chunk)), token

    async def _ordered_page(
        self, load: Callable[[Connection], Sequence[M]], request: Any
    ) -> tuple[list[M], str]:
        """Like ``_page`` for messages, in the request's ``order_by`` (AIP-132) order."""
        items = ordered(await self._tx(load), request.order_by)
        return page(items, page_size=request.page_size, page_token=request.page_token)

    async def _changed_gateway(self) -> None:
        await self._hub.notify()


def _require(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    return value


class GatewayServicer(_Base, gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        hub: ConfigHub,
        allow_private_webhooks: bool = False,
        secrets: SecretBox | None = None,
        validate_snapshot: SnapshotValidator | None = None,
    ) -> None:
        super().__init__(db=db, clock=clock, hub=hub)
        # Notification channels of applied documents may name loopback/link-local hosts.
        self._allow_private_webhooks = allow_private_webhooks
        # The key provider keys are stored under (None: plaintext, development only).
        self._secrets = secrets
        # The data plane's compiler, injected by the CLI (None: declarative checks only).
        self._validate_snapshot = validate_snapshot

    async def ListServices(
        self, request: gateway_pb2.ListServicesRequest, context: Ctx
    ) -> gateway_pb2.ListServicesResponse:
        def load(conn: Connection) -> list[gateway_pb2.Service]:
            times = gateway.entity_times(conn, "services")
            return [
                convert.service_to_proto(x, times.get(x.name)) for x in gateway.list_services(conn)
            ]

        items, token = await self._ordered_page(load, request)
        return gateway_pb2.ListServicesResponse(services=items, next_page_token=token)

    async def GetService(
        self, request: gateway_pb2.GetServiceRequest, context: Ctx
    ) -> gateway_pb2.Service:
        name = convert.resource_id(request.name, "services")

        def get(conn: Connection) -> gateway_pb2.Service:
            service = gateway.get_service(conn, name)
            return convert.service_to_proto(service, gateway.entity_times(conn, "services")[name])

        return await self._tx(get)

    async def DeleteService(
        self, request: gateway_pb2.DeleteServiceRequest, context: Ctx
    ) -> empty_pb2.Empty:
        name = convert.resource_id(request.name, "services")
        await self._tx(lambda c: gateway.delete_service(c, name))
        await self._changed_gateway()
        return empty_pb2.Empty()

    async def ListRoutes(
        self, request: gateway_pb2.ListRoutesRequest, context: Ctx
    ) -> gateway_pb2.ListRoutesResponse:
        def load(conn: Connection) -> list[gateway_pb2.Route]:
            times = gateway.entity_times(conn, "routes")
            return [convert.route_to_proto(x, times.get(x.name)) for x in gateway.list_routes(conn)]

        items, token = await self._ordered_page(load, request)
        return gateway_pb2.ListRoutesResponse(routes=items, next_page_token=token)

    async def GetRoute(
        self, request: gateway_pb2.GetRouteRequest, context: Ctx
    ) -> gateway_pb2.Route:
        name = convert.resource_id(request.name, "routes")

        def get(conn: Connection) -> gateway_pb2.Route:
            route = gateway.get_route(conn, name)
            return convert.route_to_proto(route, gateway.entity_times(conn, "routes")[name])

        return await self._tx(get)

    async def DeleteRoute(
        self, request: gateway_pb2.DeleteRouteRequest, context: Ctx
    ) -> empty_pb2.Empty:
        name = convert.resource_id(request.name, "routes")
        await self._tx(lambda c: gateway.delete_route(c, name))
        await self._changed_gateway()
        return empty_pb2.Empty()

    async def ListConsumers(
        self, request: gateway_pb2.ListConsumersRequest, context: Ctx
    ) -> gateway_pb2.ListConsumersResponse:
        def load(conn: Connection) -> list[gateway_pb2.Consumer]:
            times = gateway.entity_times(conn, "consumers")
            return [
                convert.consumer_to_proto(x, times.get(x.username))
                for x in gateway.list_consumers(conn)
            ]

        items, token = await self._ordered_page(load, request)
        return gateway_pb2.ListConsumersResponse(consumers=items, next_page_token=token)

    async def GetConsumer(
        self, request: gateway_pb2.GetConsumerRequest, context: Ctx
    ) -> gateway_pb2.Consumer:
        username = convert.resource_id(request.name, "consumers")

        def get(conn: Connection) -> gateway_pb2.Consumer:
            consumer = gateway.get_consumer(conn, username)
            times = gateway.entity_times(conn, "consumers")[username]
            return convert.consumer_to_proto(consumer, times)

        return await self._tx(get)

    async def CreateConsumer(
        self, request: gateway_pb2.CreateConsumerRequest, context: Ctx
    ) -> gateway_pb2.Consumer:
        username = _require(request.consumer.username, "consumer.username")
        consumer = Consumer(username=username, custom_id=request.consumer.custom_id)
        now = self._clock.now()

        def create(conn: Connection) -> Consumer:
            gateway.create_consumer(conn, consumer, now=now)
            return gateway.get_consumer(conn, username)

        created = await self._tx(create)
        await self._changed_gateway()
        return convert.consumer_to_proto(created)

    async def DeleteConsumer(
        self, request: gateway_pb2.DeleteConsumerRequest, context: Ctx
    ) -> empty_pb2.Empty:
        username = convert.resource_id(request.name, "consumers")
        await self._tx(lambda c: gateway.delete_consumer(c, username))
        await self._changed_gateway()
        return empty_pb2.Empty()

    async def CreateKeyAuthCredential(
        self, request: gateway_pb2.CreateKeyAuthCredentialRequest, context: Ctx
    ) -> gateway_pb2.KeyAuthCredential:
        username = convert.resource_id(request.parent, "consumers")
        key = request.key or generate_key()
        if len(key) < 8:
            raise InvalidArgument("key must be at least 8 characters long")
        now = self._clock.now()

        def add(conn: Connection) -> None:
            gateway.get_consumer(conn, username)
            if not gateway.add_credential(conn, username=username, key_hash=hash_key(key), now=now):
                raise InvalidArgument("the consumer already has that key")

        await self._tx(add)
        await self._changed_gateway()
        return gateway_pb2.KeyAuthCredential(
            consumer=f"consumers/{username}", key=key, create_time=convert.to_timestamp(now)
        )

    async def ListPlugins(
        self, request: gateway_pb2.ListPluginsRequest, context: Ctx
    ) -> gateway_pb2.ListPluginsResponse:
        def load(conn: Connection) -> list[gateway_pb2.Plugin]:
            ids = gateway.plugin_ids(conn)
            times = gateway.entity_times(conn, "plugins")
            return [
                convert.plugin_to_proto(p, ids[p.scope], times.get(ids[p.scope]))
                for p in gateway.list_plugins(conn, secrets=self._secrets)
            ]

        items, token = await self._ordered_page(load, request)
        return gateway_pb2.ListPluginsResponse(plugins=items, next_page_token=token)

    async def GetPlugin(
        self, request: gateway_pb2.GetPluginRequest, context: Ctx
    ) -> gateway_pb2.Plugin:
        plugin_id = convert.resource_id(request.name, "plugins")

        def get(conn: Connection) -> gateway_pb2.Plugin:
            plugin = gateway.get_plugin(conn, plugin_id, secrets=self._secrets)
            times = gateway.entity_times(conn, "plugins")[plugin_id]
            return convert.plugin_to_proto(plugin, plugin_id, times)

        return await self._tx(get)

    async def DeletePlugin(
        self, request: gateway_pb2.DeletePluginRequest, context: Ctx
    ) -> empty_pb2.Empty:
        plugin_id = convert.resource_id(request.name, "plugins")
        await self._tx(lambda c: gateway.delete_plugin(c, plugin_id))
        await self._changed_gateway()
        return empty_pb2.Empty()

    async def ApplyConfig(
        self, request: gateway_pb2.ApplyConfigRequest, context: Ctx
    ) -> gateway_pb2.ApplyConfigResponse:
        now = self._clock.now()
        result = await asyncio.to_thread(
            apply_document,
            self._db,
            text=request.document,
            now=now,
            validate_only=request.validate_only,
            allow_private_webhooks=self._allow_private_webhooks,
            sync=request.sync,
            secrets=self._secrets,
            validate_snapshot=self._validate_snapshot,
        )
        if result.changes and not request.validate_only:
            await self._changed_gateway()
        version = await self._hub.current_version()
        return gateway_pb2.ApplyConfigResponse(
            changes=result.changes, config_version=version, notes=result.notes
        )

    async def ExportConfig(
        self, request: gateway_pb2.ExportConfigRequest, context: Ctx
    ) -> gateway_pb2.ExportConfigResponse:
        def export(conn: Connection) -> DeckExport:
            return export_document(
                gateway.load_config(conn, secrets=self._secrets),
                include_secrets=request.include_secrets,
                select_tags=tuple(request.select_tags),
            )

        exported = await self._tx(export)
        return gateway_pb2.ExportConfigResponse(
            document=exported.document, secret_variables=exported.secret_variables
        )


# catalog.proto's MeterAggregation has no LATEST yet: such meters list it as UNSPECIFIED.


class CatalogServicer(_Base, catalog_pb2_grpc.CatalogServiceServicer):
    async def ListMeters(
        self, request: catalog_pb2.ListMetersRequest, context: Ctx
    ) -> catalog_pb2.ListMetersResponse:
        """Every meter a feature can use: the built-in ones, then the operator's by key (the
        full definitions, JSONPaths included, are ``UsageService.ListMeters``)."""
        operator = await self._tx(usage_meters.list_meters)
        meters = [
            *(convert.meter_to_proto(m) for m in BUILTIN_METERS.values()),
            *(convert.operator_meter_to_proto(m) for m in operator),
        ]
        chunk, token = page(meters, page_size=request.page_size, page_token=request.page_token)
        return catalog_pb2.ListMetersResponse(meters=chunk, next_page_token=token)

    async def CreateFeature(
        self, request: catalog_pb2.CreateFeatureRequest, context: Ctx
    ) -> catalog_pb2.Feature:
        feature = convert.feature_from_proto(request.feature)
        _require(feature.key, "feature.key")
        meter = BUILTIN_METERS.get(feature.meter)
        for dimension in feature.filters:
            if meter is not None and dimension not in meter.group_by:
                raise InvalidArgument(
                    f"feature.filters: {dimension!r} is not a dimension of meter {meter.key}"
                    f" ({', '.join(meter.group_by)})"
                )
        now = self._clock.now()

        def create(conn: Connection) -> catalog_pb2.Feature:
            if meter is None:  # an operator meter (controlplane/usage/meters.py)
                operator = usage_meters.find_meter(conn, feature.meter)
                if operator is None:
                    known = [*BUILTIN_METERS, *(m.key for m in usage_meters.list_meters(conn))]
                    raise InvalidArgument(
                        f"feature.meter {feature.meter!r} is not a meter; known: {known}"
                    )
                for dimension in feature.filters:
                    if dimension not in operator.group_by:
                        raise InvalidArgument(
                            f"feature.filters: {dimension!r} is not a dimension of meter "
                            f"{operator.key} ({', '.join(sorted(operator.group_by))})"
                        )
            catalog.create_feature(conn, feature, now=now)
            return convert.feature_to_proto(catalog.get_feature(conn, feature.key))

        return await self._tx(create)

    async def GetFeature(
        self, request: catalog_pb2.GetFeatureRequest, context: Ctx
    ) -> catalog_pb2.Feature:
        key = convert.resource_id(request.name, "features")

        def get(conn: Connection) -> catalog_pb2.Feature:
            feature = catalog.get_feature(conn, key)
            return convert.feature_to_proto(feature, catalog.feature_times(conn).get(key))

        return await self._tx(get)

    async def ListFeatures(
        self, request: catalog_pb2.ListFeaturesRequest, context: Ctx
    ) -> catalog_pb2.ListFeaturesResponse:
        def load(conn: Connection) -> list[catalog_pb2.Feature]:
            times = catalog.feature_times(conn)
            return [
                convert.feature_to_proto(f, times.get(f.key)) for f in catalog.list_features(conn)
            ]

        items, token = await self._ordered_page(load, request)
        return catalog_pb2.ListFeaturesResponse(features=items, next_page_token=token)

    async def DeleteFeature(
        self, request: catalog_pb2.DeleteFeatureRequest, context: Ctx
    ) -> empty_pb2.Empty:
        key = convert.resource_id(request.name, "features")
        await self._tx(lambda c: catalog.delete_feature(c, key))
        return empty_pb2.Empty()

    async def DeletePlan(
        self, request: catalog_pb2.DeletePlanRequest, context: Ctx
    ) -> empty_pb2.Empty:
        key, version = convert.parse_plan_name(request.name)
        if version is None:
            raise InvalidArgument(
                f"name must name one version (plans/{key}/versions/N), got {request.name!r}"
            )
        await self._tx(lambda c: catalog.delete_draft_plan(c, key, version))
        return empty_pb2.Empty()

    async def CreatePlan(
        self, request: catalog_pb2.CreatePlanRequest, context: Ctx
    ) -> catalog_pb2.Plan:
        plan = convert.plan_from_proto(request.plan)
        _require(plan.key, "plan.key")
        if len(plan.currency) != 3 or not plan.currency.isalpha():
            raise InvalidArgument("plan.currency must be an ISO 4217 code such as USD")
        _require(plan.billing_cadence, "plan.billing_cadence")
        now = self._clock.now()
        stored = await self._tx(lambda c: catalog.insert_plan_version(c, plan, now=now))
        return convert.plan_to_proto(stored)

    async def GetPlan(self, request: catalog_pb2.GetPlanRequest, context: Ctx) -> catalog_pb2.Plan:
        key, version = convert.parse_plan_name(request.name)
        return convert.plan_to_proto(await self._tx(lambda c: catalog.get_plan(c, key, version)))

    async def ListPlans(
        self, request: catalog_pb2.ListPlansRequest, context: Ctx
    ) -> catalog_pb2.ListPlansResponse:
        items, token = await self._ordered_page(
            lambda c: [convert.plan_to_proto(p) for p in catalog.list_plans(c)], request
        )
        return catalog_pb2.ListPlansResponse(plans=items, next_page_token=token)

    async def PublishPlan(
        self, request: catalog_pb2.PublishPlanRequest, context: Ctx
    ) -> catalog_pb2.Plan:
        key, version = convert.parse_plan_name(request.name)
        if version is None:
            raise InvalidArgument("name must name a version: plans/KEY/versions/N")
        now = self._clock.now()
        return convert.plan_to_proto(
            await self._tx(lambda c: catalog.publish_plan(c, key, version, now=now))
        )

    async def UpdatePlan(
        self, request: catalog_pb2.UpdatePlanRequest, context: Ctx
    ) -> catalog_pb2.Plan:
        key, version = convert.parse_plan_name(_require(request.plan.name, "plan.name"))
        if version is None:
            raise InvalidArgument("plan.name must name a version: plans/KEY/versions/N")
        paths = set(request.update_mask.paths) or set(_PLAN_FIELDS)
        unknown = sorted(paths - set(_PLAN_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"update_mask: cannot update {', '.join(unknown)}; updatable:"
                f" {', '.join(_PLAN_FIELDS)}"
            )
        message = catalog_pb2.Plan()
        message.CopyFrom(request.plan)
        message.key = key
        wanted = convert.plan_from_proto(message)
        now = self._clock.now()

        def update(conn: Connection) -> Plan:
            current = catalog.get_plan(conn, key, version)
            merged = replace(
                current,
                name=wanted.name if "display_name" in paths else current.name,
                currency=wanted.currency if "currency" in paths else current.currency,
                billing_cadence=(
                    wanted.billing_cadence
                    if "billing_cadence" in paths
                    else current.billing_cadence
                ),
                rate_cards=wanted.rate_cards if "rate_cards" in paths else current.rate_cards,
                billing_anchor=(
                    wanted.billing_anchor
                    if "billing_anchor_time" in paths
                    else current.billing_anchor
                ),
            )
            return catalog.update_draft(conn, merged, version=version, now=now)

        return convert.plan_to_proto(await self._tx(update))

    async def CreatePlanVersion(
        self, request: catalog_pb2.CreatePlanVersionRequest, context: Ctx
    ) -> catalog_pb2.Plan:
        key, version = convert.parse_plan_name(_require(request.name, "name"))
        now = self._clock.now()
        return convert.plan_to_proto(
            await self._tx(lambda c: catalog.new_version(c, key, source=version, now=now))
        )

    async def ArchivePlan(
        self, request: catalog_pb2.ArchivePlanRequest, context: Ctx
    ) -> catalog_pb2.Plan:
        key, version = convert.parse_plan_name(_require(request.name, "name"))
        if version is None:
            raise InvalidArgument("name must name a version: plans/KEY/versions/N")
        now = self._clock.now()
        return convert.plan_to_proto(
            await self._tx(lambda c: catalog.archive_plan(c, key, version, now=now))
        )

    async def CreatePriceList(
        self, request: catalog_pb2.CreatePriceListRequest, context: Ctx
    ) -> catalog_pb2.PriceList:
        price_list = convert.price_list_from_proto(request.price_list)
        _require(price_list.key, "price_list.key")
        now = self._clock.now()
        return convert.price_list_to_proto(
            await self._tx(lambda c: catalog.create_price_list(c, price_list, now=now))
        )

    async def GetPriceList(
        self, request: catalog_pb2.GetPriceListRequest, context: Ctx
    ) -> catalog_pb2.PriceList:
        key = convert.resource_id(_require(request.name, "name"), "priceLists")
        return convert.price_list_to_proto(await self._tx(lambda c: catalog.get_price_list(c, key)))

    async def ListPriceLists(
        self, request: catalog_pb2.ListPriceListsRequest, context: Ctx
    ) -> catalog_pb2.ListPriceListsResponse:
        items, token = await self._page(
            catalog.list_price_lists, request, convert.price_list_to_proto
        )
        return catalog_pb2.ListPriceListsResponse(price_lists=items, next_page_token=token)

    async def AddModelPrices(
        self, request: catalog_pb2.AddModelPricesRequest, context: Ctx
    ) -> catalog_pb2.PriceList:
        key = convert.resource_id(_require(request.name, "name"), "priceLists")
        prices = convert.model_prices_from_proto(request.prices, where="prices")
        if not prices:
            raise InvalidArgument("prices must list at least one model price")
        now = self._clock.now()
        return convert.price_list_to_proto(
            await self._tx(lambda c: catalog.add_model_prices(c, key, prices, now=now))
        )


_PLAN_FIELDS = ("display_name", "currency", "billing_cadence", "billing_anchor_time", "rate_cards")


class CustomerServicer(_Base, customers_pb2_grpc.CustomerServiceServicer):
    async def CreateCustomer(
        self, request: customers_pb2.CreateCustomerRequest, context: Ctx
    ) -> customers_pb2.Customer:
        message = request.customer
        customer = Customer(
            key=_require(message.key, "customer.key"),
            name=message.display_name or message.key,
            subjects=tuple(message.subjects),
        )
        now = self._clock.now()
        stripe_id = message.stripe_customer_id

        def create(conn: Connection) -> customers_pb2.Customer:
            created = customers.create_customer(conn, customer, now=now)
            if stripe_id:
                stripe_storage.link_stripe_customer(conn, created.key, stripe_id, now=now)
            return convert.customer_to_proto(created, stripe_customer_id=stripe_id or None)

        return await self._tx(create)

    async def GetCustomer(
        self, request: customers_pb2.GetCustomerRequest, context: Ctx
    ) -> customers_pb2.Customer:
        key = convert.resource_id(request.name, "customers")

        def get(conn: Connection) -> customers_pb2.Customer:
            customer = customers.get_customer(conn, key)
            stripe_id = stripe_storage.stripe_customer_id(conn, key)
            return convert.customer_to_proto(customer, stripe_customer_id=stripe_id)

        return await self._tx(get)

    async def LinkStripeCustomer(
        self, request: customers_pb2.LinkStripeCustomerRequest, context: Ctx
    ) -> customers_pb2.Customer:
        key = convert.resource_id(_require(request.name, "name"), "customers")
        stripe_id = _require(request.stripe_customer_id, "stripe_customer_id")
        now = self._clock.now()

        def link(conn: Connection) -> customers_pb2.Customer:
            customer = customers.get_customer(conn, key)
            stripe_storage.link_stripe_customer(conn, key, stripe_id, now=now)
            return convert.customer_to_proto(customer, stripe_customer_id=stripe_id)

        return await self._tx(link)

    async def ListCustomers(
        self, request: customers_pb2.ListCustomersRequest, context: Ctx
    ) -> customers_pb2.ListCustomersResponse:
        # One page (+1 row to know whether another follows) read at a time, never all.
        size = checked_page_size(request.page_size)
        offset = decode_offset(request.page_token)
        order = newest_first(request.order_by)

        def load(conn: Connection) -> list[customers_pb2.Customer]:
            found = customers.page_customers(
                conn,
                search=request.search.strip(),
                limit=size + 1,
                offset=offset,
                newest_first=order,
            )
            stripe_ids = stripe_storage.stripe_customer_ids(conn, [c.key for c in found])
            return [
                convert.customer_to_proto(c, stripe_customer_id=stripe_ids.get(c.key))
                for c in found
            ]

        items = await self._tx(load)
        token = encode_offset(offset + size) if len(items) > size else ""
        return customers_pb2.ListCustomersResponse(customers=items[:size], next_page_token=token)

    async def DeleteCustomer(
        self, request: customers_pb2.DeleteCustomerRequest, context: Ctx
    ) -> empty_pb2.Empty:
        key = convert.resource_id(request.name, "customers")
        await self._tx(lambda c: customers.delete_customer(c, key))
        return empty_pb2.Empty()

    async def CreateSubscription(
        self, request: customers_pb2.CreateSubscriptionRequest, context: Ctx
    ) -> customers_pb2.Subscription:
        message = request.subscription
        customer_key = convert.resource_id(
            _require(message.customer, "subscription.customer"), "customers"
        )
        plan_key, version = convert.parse_plan_name(_require(message.plan, "subscription.plan"))
        now = self._clock.now()
        start = (
            convert.from_timestamp(message.start_time, field="subscription.start_time")
            if message.HasField("start_time")
            else now
        )
        anchor = (
            convert.from_timestamp(
                message.billing_anchor_time, field="subscription.billing_anchor_time"
            )
            if message.HasField("billing_anchor_time")
            else None
        )

        def create(conn: Connection) -> customers_pb2.Subscription:
            sub = subscription_service.subscribe(
                conn,
                customer=customer_key,
                plan_key=plan_key,
                version=version,
                start=start,
                anchor=anchor,
                now=now,
            )
            return convert.subscription_to_proto(sub)

        return await self._tx(create)

    async def GetSubscription(
        self, request: customers_pb2.GetSubscriptionRequest, context: Ctx
    ) -> customers_pb2.Subscription:
        id = convert.resource_id(request.name, "subscriptions")
        return convert.subscription_to_proto(
            await self._tx(lambda c: subscriptions.get_subscription(c, id))
        )

    async def ListSubscriptions(
        self, request: customers_pb2.ListSubscriptionsRequest, context: Ctx
    ) -> customers_pb2.ListSubscriptionsResponse:
        customer = convert.resource_id(request.parent, "customers") if request.parent else None
        items, token = await self._ordered_page(
            lambda c: [
                convert.subscription_to_proto(s)
                for s in subscriptions.list_subscriptions(c, customer)
            ],
            request,
        )
        return customers_pb2.ListSubscriptionsResponse(subscriptions=items, next_page_token=token)

    async def DeleteSubscription(
        self, request: customers_pb2.DeleteSubscriptionRequest, context: Ctx
    ) -> empty_pb2.Empty:
        id = convert.resource_id(request.name, "subscriptions")
        now = self._clock.now()
        await self._tx(lambda c: subscriptions.delete_unstarted_subscription(c, id, now=now))
        return empty_pb2.Empty()

    async def CancelSubscription(
        self, request: customers_pb2.CancelSubscriptionRequest, context: Ctx
    ) -> customers_pb2.Subscription:
        id = convert.resource_id(request.name, "subscriptions")
        now = self._clock.now()
        if request.timing == customers_pb2.CANCEL_TIMING_PERIOD_END:
            if request.HasField("end_time"):
                raise InvalidArgument("end_time and timing PERIOD_END exclude each other")

            def at_period_end(conn: Connection) -> Subscription:
                sub = subscriptions.get_subscription(conn, id)
                plan = catalog.get_plan(conn, sub.plan_key, sub.plan_version)
                return subscriptions.cancel_at_period_end(
                    conn, id, cadence=plan.billing_cadence, now=now
                )

            return convert.subscription_to_proto(await self._tx(at_period_end))
        if request.timing == customers_pb2.CANCEL_TIMING_IMMEDIATELY and request.HasField(
            "end_time"
        ):
            raise InvalidArgument("end_time and timing IMMEDIATELY exclude each other")
        end = (
            convert.from_timestamp(request.end_time, field="end_time")
            if request.HasField("end_time")
            else now
        )
        return convert.subscription_to_proto(
            await self._tx(lambda c: subscriptions.cancel_subscription(c, id, end_time=end))
        )

    async def ChangeSubscriptionPlan(
        self, request: customers_pb2.ChangeSubscriptionPlanRequest, context: Ctx
    ) -> customers_pb2.Subscription:
        id = convert.resource_id(_require(request.name, "name"), "subscriptions")
        plan_key, version = convert.parse_plan_name(_require(request.plan, "plan"))
        now = self._clock.now()
        at = (
            convert.from_timestamp(request.change_time, field="change_time")
            if request.HasField("change_time")
            else now
        )

        def change(conn: Connection) -> Subscription:
            plan = subscription_service.subscribable_plan(conn, plan_key, version)
            return subscription_service.change_to(conn, id, plan=plan, at=at, now=now)

        return convert.subscription_to_proto(await self._tx(change))

    async def MigrateSubscription(
        self, request: customers_pb2.MigrateSubscriptionRequest, context: Ctx
    ) -> customers_pb2.Subscription:
        id = convert.resource_id(_require(request.name, "name"), "subscriptions")
        if request.target_version < 0:
            raise InvalidArgument(f"target_version must be positive, got {request.target_version}")
        now = self._clock.now()
        at = (
            convert.from_timestamp(request.migrate_time, field="migrate_time")
            if request.HasField("migrate_time")
            else now
        )
        version = request.target_version or None
        return convert.subscription_to_proto(
            await self._tx(
                lambda c: subscription_service.migrate(c, id, version=version, at=at, now=now)
            )
        )

    async def CreatePortalToken(
        self, request: customers_pb2.CreatePortalTokenRequest, context: Ctx
    ) -> customers_pb2.PortalToken:
        key = convert.resource_id(_require(request.parent, "parent"), "customers")
        if request.ttl_seconds <= 0:
            raise InvalidArgument(f"ttl_seconds must be positive, got {request.ttl_seconds}")
        ttl = timedelta(seconds=min(request.ttl_seconds, 10**9))
        now = self._clock.now()
        created = await self._tx(lambda c: portal_service.create(c, customer=key, ttl=ttl, now=now))
        return convert.portal_token_to_proto(created)

    async def ListPortalTokens(
        self, request: customers_pb2.ListPortalTokensRequest, context: Ctx
    ) -> customers_pb2.ListPortalTokensResponse:
        customer = convert.resource_id(request.parent, "customers") if request.parent else None
        items, token = await self._page(
            lambda c: portal_storage.list_tokens(c, customer),
            request,
            convert.portal_token_to_proto,
        )
        return customers_pb2.ListPortalTokensResponse(portal_tokens=items, next_page_token=token)

    async def RevokePortalToken(
        self, request: customers_pb2.RevokePortalTokenRequest, context: Ctx
    ) -> customers_pb2.PortalToken:
        name = _require(request.name, "name")
        customer, _, id = name.removeprefix("customers/").partition("/portalTokens/")
        if not customer or not id or "/" in id:
            raise InvalidArgument(
                f"expected a name like customers/KEY/portalTokens/ID, got {name!r}"
            )
        now = self._clock.now()

        def revoke(conn: Connection) -> customers_pb2.PortalToken:
            if portal_storage.get_token(conn, id).customer != customer:
                raise NotFound(f"portal token {name!r} not found")
            return convert.portal_token_to_proto(portal_service.revoke(conn, id, now=now))

        return await self._tx(revoke)


class BillingServicer(_Base, billing_pb2_grpc.BillingServiceServicer):
    async def PreviewInvoice(
        self, request: billing_pb2.PreviewInvoiceRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        key = convert.resource_id(_require(request.customer, "customer"), "customers")
        at = (
            convert.from_timestamp(request.as_of_time, field="as_of_time")
            if request.HasField("as_of_time")
            else self._clock.now()
        )
        invoice = await self._tx(lambda c: preview_invoice(c, customer_key=key, at=at))
        return convert.invoice_to_proto(invoice)

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        hub: ConfigHub,
        invoicing: InvoicingSettings | None = None,
        on_issued: Callable[[str], Awaitable[None]] | None = None,
        retry_sync: Callable[[str], Awaitable[None]] | None = None,
        on_settled: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(db=db, clock=clock, hub=hub)
        self._invoicing = invoicing or InvoicingSettings()
        # Hooks of the Stripe sync (None when it is off); on_settled: voided or marked paid.
        self._on_issued = on_issued
        self._retry_sync = retry_sync
        self._on_settled = on_settled

    async def ListInvoices(
        self, request: billing_pb2.ListInvoicesRequest, context: Ctx
    ) -> billing_pb2.ListInvoicesResponse:
        customer = convert.resource_id(request.parent, "customers") if request.parent else None
        states = convert.invoice_states_from_proto(request.states) or None
        # One page (+1 row to know whether another follows) read at a time, never all.
        size = checked_page_size(request.page_size)
        offset = decode_offset(request.page_token)
        found, more = await self._tx(
            lambda c: lifecycle.page_invoices(
                c, customer=customer, states=states, offset=offset, size=size
            )
        )
        return billing_pb2.ListInvoicesResponse(
            invoices=[convert.invoice_to_proto(i) for i in found],
            next_page_token=encode_offset(offset + size) if more else "",
        )

    async def GetInvoice(
        self, request: billing_pb2.GetInvoiceRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        id = convert.resource_id(_require(request.name, "name"), "invoices")
        return convert.invoice_to_proto(await self._tx(lambda c: lifecycle.get_invoice(c, id)))

    async def IssueInvoice(
        self, request: billing_pb2.IssueInvoiceRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        id = convert.resource_id(_require(request.name, "name"), "invoices")
        now = self._clock.now()
        invoice = await self._tx(
            lambda c: lifecycle.issue_invoice(c, id=id, now=now, force=request.force)
        )
        if self._on_issued is not None:
            await self._on_issued(id)
        return convert.invoice_to_proto(invoice)

    async def VoidInvoice(
        self, request: billing_pb2.VoidInvoiceRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        id = convert.resource_id(_require(request.name, "name"), "invoices")
        now = self._clock.now()
        invoice = await self._tx(lambda c: lifecycle.void_invoice(c, id=id, now=now))
        return convert.invoice_to_proto(await self._settled(invoice))

    async def MarkInvoicePaid(
        self, request: billing_pb2.MarkInvoicePaidRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        id = convert.resource_id(_require(request.name, "name"), "invoices")
        now = self._clock.now()

        def mark(conn: Connection) -> Invoice:
            invoice, changed = lifecycle.set_payment_state(
                conn, id=id, state=InvoiceState.PAID, now=now
            )
            if not changed:
                raise FailedPrecondition(f"invoice {id!r} is already paid")
            return invoice

        return convert.invoice_to_proto(await self._settled(await self._tx(mark)))

    async def _settled(self, invoice: Invoice) -> Invoice:
        """Start carrying a void or mark-paid to Stripe; the invoice as it now reads."""
        if self._on_settled is None:
            return invoice
        await self._on_settled(invoice.id)
        return await self._tx(lambda c: lifecycle.get_invoice(c, invoice.id))

    async def CloseInvoices(
        self, request: billing_pb2.CloseInvoicesRequest, context: Ctx
    ) -> billing_pb2.CloseInvoicesResponse:
        now = self._clock.now()
        result = await asyncio.to_thread(
            lifecycle.advance, self._db, now=now, settings=self._invoicing
        )
        if self._on_issued is not None:
            for id in result.issued:
                await self._on_issued(id)
        return billing_pb2.CloseInvoicesResponse(
            created_invoices=[f"invoices/{i}" for i in result.created],
            drafted_invoices=[f"invoices/{i}" for i in result.drafted],
            issued_invoices=[f"invoices/{i}" for i in result.issued],
        )

    async def RetryInvoiceSync(
        self, request: billing_pb2.RetryInvoiceSyncRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        id = convert.resource_id(_require(request.name, "name"), "invoices")
        invoice = await self._tx(lambda c: lifecycle.get_invoice(c, id))
        if self._retry_sync is None:
            raise FailedPrecondition("Stripe sync is not configured on this control plane")
        if invoice.state.open:
            raise FailedPrecondition(f"invoice {id!r} is {invoice.state.value}, not issued")
        await self._retry_sync(id)
        return convert.invoice_to_proto(await self._tx(lambda c: lifecycle.get_invoice(c, id)))
