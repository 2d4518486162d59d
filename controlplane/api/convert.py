"""The one place where domain types become protobuf messages and back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from controlplane.catalog.types import (
    Aggregation,
    Entitlement,
    EntitlementType,
    Feature,
    Meter,
    Plan,
    PlanState,
    Price,
    PriceType,
    RateCard,
)
from controlplane.customers.types import Customer
from controlplane.errors import InvalidArgument
from controlplane.gateway.types import Consumer, Plugin, Route, Service
from controlplane.invoicing.types import Invoice, InvoiceLine
from controlplane.subscriptions.types import Subscription
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import (
    billing_pb2,
    catalog_pb2,
    customers_pb2,
    gateway_pb2,
)
from meterline.admin.v1 import usage_pb2 as admin_usage_pb2
from meterline.dataplane.v1 import usage_pb2

SECRET_KEYS = {"header_value", "param_value"}


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def parse_decimal(text: str, *, field: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument(f"{field} must be a decimal string, got {text!r}") from None
    if not value.is_finite():
        raise InvalidArgument(f"{field} must be finite, got {text!r}")
    return value


def resource_id(name: str, collection: str) -> str:
    """The id of "collection/id"; the bare id is accepted too."""
    prefix = collection + "/"
    value = name[len(prefix) :] if name.startswith(prefix) else name
    if not value or "/" in value:
        raise InvalidArgument(f"expected a resource name like {collection}/ID, got {name!r}")
    return value


# Gateway ------------------------------------------------------------------------------------


def service_to_proto(service: Service) -> gateway_pb2.Service:
    return gateway_pb2.Service(
        name=f"services/{service.name}", service_name=service.name, url=service.url
    )


def route_to_proto(route: Route) -> gateway_pb2.Route:
    return gateway_pb2.Route(
        name=f"routes/{route.name}",
        route_name=route.name,
        service=f"services/{route.service}",
        paths=route.paths,
        methods=route.methods,
        strip_path=route.strip_path,
    )


def consumer_to_proto(consumer: Consumer) -> gateway_pb2.Consumer:
    return gateway_pb2.Consumer(
        name=f"consumers/{consumer.username}",
        username=consumer.username,
        custom_id=consumer.custom_id,
        key_count=len(consumer.key_hashes),
    )


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: ("<redacted>" if k in SECRET_KEYS and v else _redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def plugin_to_proto(plugin: Plugin, plugin_id: str) -> gateway_pb2.Plugin:
    config = struct_pb2.Struct()
    config.update(_redact(plugin.config))
    return gateway_pb2.Plugin(
        name=f"plugins/{plugin_id}",
        id=plugin_id,
        plugin_name=plugin.name.value,
        service=f"services/{plugin.service}" if plugin.service else "",
        route=f"routes/{plugin.route}" if plugin.route else "",
        consumer=f"consumers/{plugin.consumer}" if plugin.consumer else "",
        enabled=plugin.enabled,
        config=config,
    )


# Catalog ------------------------------------------------------------------------------------


AGGREGATIONS = {
    Aggregation.SUM: catalog_pb2.METER_AGGREGATION_SUM,
    Aggregation.COUNT: catalog_pb2.METER_AGGREGATION_COUNT,
    Aggregation.MAX: catalog_pb2.METER_AGGREGATION_MAX,
    Aggregation.UNIQUE_COUNT: catalog_pb2.METER_AGGREGATION_UNIQUE_COUNT,
}

PLAN_STATES = {
    PlanState.DRAFT: catalog_pb2.PLAN_STATE_DRAFT,
    PlanState.ACTIVE: catalog_pb2.PLAN_STATE_ACTIVE,
    PlanState.ARCHIVED: catalog_pb2.PLAN_STATE_ARCHIVED,
}


def meter_to_proto(meter: Meter) -> catalog_pb2.Meter:
    return catalog_pb2.Meter(
        name=f"meters/{meter.key}",
        key=meter.key,
        event_type=meter.event_type,
        aggregation=AGGREGATIONS[meter.aggregation],
        value_property=meter.value_property,
        group_by=meter.group_by,
    )


def feature_to_proto(feature: Feature) -> catalog_pb2.Feature:
    return catalog_pb2.Feature(
        name=f"features/{feature.key}",
        key=feature.key,
        display_name=feature.name,
        meter=feature.meter,
        filters=dict(feature.filters),
    )


def feature_from_proto(message: catalog_pb2.Feature) -> Feature:
    return Feature(
        key=message.key,
        name=message.display_name,
        meter=message.meter,
        filters=dict(message.filters),
    )


def plan_name(plan: Plan) -> str:
    return f"plans/{plan.key}/versions/{plan.version}"


def parse_plan_name(name: str) -> tuple[str, int | None]:
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "plans" and parts[1]:
        return parts[1], None
    if len(parts) == 4 and parts[0] == "plans" and parts[2] == "versions" and parts[3].isdigit():
        return parts[1], int(parts[3])
    raise InvalidArgument(f"expected plans/KEY or plans/KEY/versions/N, got {name!r}")


def plan_to_proto(plan: Plan) -> catalog_pb2.Plan:
    message = catalog_pb2.Plan(
        name=plan_name(plan),
        key=plan.key,
        version=plan.version,
        display_name=plan.name,
        currency=plan.currency,
        billing_cadence=plan.billing_cadence,
        state=PLAN_STATES[plan.state],
        create_time=to_timestamp(plan.create_time),
        publish_time=to_timestamp(plan.publish_time),
    )
    for card in plan.rate_cards:
        rc = message.rate_cards.add(key=card.key, feature=card.feature)
        if card.price is not None:
            rc.price.type = catalog_pb2.PRICE_TYPE_UNIT
            rc.price.amount = str(card.price.amount)
        if card.entitlement is not None:
            rc.entitlement.type = catalog_pb2.ENTITLEMENT_TYPE_BOOLEAN
    return message


def plan_from_proto(message: catalog_pb2.Plan) -> Plan:
    cards = []
    for i, rc in enumerate(message.rate_cards):
        price = None
        if rc.HasField("price"):
            if rc.price.type != catalog_pb2.PRICE_TYPE_UNIT:
                raise InvalidArgument(f"rate_cards[{i}].price.type must be PRICE_TYPE_UNIT")
            amount = parse_decimal(rc.price.amount, field=f"rate_cards[{i}].price.amount")
            if amount < 0:
                raise InvalidArgument(f"rate_cards[{i}].price.amount must not be negative")
            price = Price(type=PriceType.UNIT, amount=amount)
        entitlement = None
        if rc.HasField("entitlement"):
            if rc.entitlement.type != catalog_pb2.ENTITLEMENT_TYPE_BOOLEAN:
                raise InvalidArgument(
                    f"rate_cards[{i}].entitlement.type must be ENTITLEMENT_TYPE_BOOLEAN"
                )
            entitlement = Entitlement(type=EntitlementType.BOOLEAN)
        if not rc.feature:
            raise InvalidArgument(f"rate_cards[{i}].feature is required")
        cards.append(
            RateCard(
                key=rc.key or rc.feature, feature=rc.feature, price=price, entitlement=entitlement
            )
        )
    return Plan(
        key=message.key,
        name=message.display_name or message.key,
        currency=message.currency,
        billing_cadence=message.billing_cadence,
        rate_cards=tuple(cards),
    )


# Customers ----------------------------------------------------------------------------------


def customer_to_proto(customer: Customer) -> customers_pb2.Customer:
    return customers_pb2.Customer(
        name=f"customers/{customer.key}",
        key=customer.key,
        display_name=customer.name,
        subjects=customer.subjects,
        create_time=to_timestamp(customer.create_time),
        update_time=to_timestamp(customer.update_time),
    )


def subscription_to_proto(sub: Subscription) -> customers_pb2.Subscription:
    return customers_pb2.Subscription(
        name=f"subscriptions/{sub.id}",
        id=sub.id,
        customer=f"customers/{sub.customer}",
        plan=f"plans/{sub.plan_key}/versions/{sub.plan_version}",
        start_time=to_timestamp(sub.start_time),
        end_time=to_timestamp(sub.end_time),
        state=(
            customers_pb2.SUBSCRIPTION_STATE_ACTIVE
            if sub.end_time is None
            else customers_pb2.SUBSCRIPTION_STATE_CANCELED
        ),
        create_time=to_timestamp(sub.create_time),
    )


# Billing ------------------------------------------------------------------------------------


def line_to_proto(line: InvoiceLine) -> billing_pb2.InvoiceLine:
    return billing_pb2.InvoiceLine(
        subscription=f"subscriptions/{line.subscription}",
        rate_card=line.rate_card,
        feature=line.feature,
        description=line.description,
        quantity=str(line.quantity),
        unit_price=str(line.unit_price),
        amount=str(line.amount),
        period_start_time=to_timestamp(line.period_start),
        period_end_time=to_timestamp(line.period_end),
    )


def invoice_to_proto(invoice: Invoice) -> billing_pb2.Invoice:
    return billing_pb2.Invoice(
        customer=f"customers/{invoice.customer}",
        currency=invoice.currency,
        period_start_time=to_timestamp(invoice.period_start),
        period_end_time=to_timestamp(invoice.period_end),
        lines=[line_to_proto(line) for line in invoice.lines],
        total=str(invoice.total),
        state=billing_pb2.INVOICE_STATE_GATHERING,
    )


# Usage --------------------------------------------------------------------------------------

TOKEN_TYPES = {
    usage_pb2.TOKEN_TYPE_INPUT: TokenType.INPUT,
    usage_pb2.TOKEN_TYPE_OUTPUT: TokenType.OUTPUT,
    usage_pb2.TOKEN_TYPE_CACHED_INPUT: TokenType.CACHED_INPUT,
    usage_pb2.TOKEN_TYPE_REASONING: TokenType.REASONING,
    usage_pb2.TOKEN_TYPE_CACHE_WRITE: TokenType.CACHE_WRITE,
}


def usage_event_from_proto(message: usage_pb2.UsageEvent, *, index: int) -> UsageEvent:
    where = f"events[{index}] ({message.id or 'no id'})"
    if not message.id:
        raise InvalidArgument(f"{where}: id is required")
    if not message.HasField("time"):
        raise InvalidArgument(f"{where}: time is required")
    if not message.HasField("llm_tokens"):
        raise InvalidArgument(f"{where}: llm_tokens data is required")
    llm = message.llm_tokens
    token_type = TOKEN_TYPES.get(llm.token_type)
    if token_type is None:
        raise InvalidArgument(f"{where}: token_type {llm.token_type} is not a known TokenType")
    if llm.tokens < 0:
        raise InvalidArgument(f"{where}: tokens must not be negative")
    return UsageEvent(
        id=message.id,
        source=message.source,
        type=message.type,
        subject=message.subject,
        time=from_timestamp(message.time),
        provider=llm.provider,
        model=llm.model,
        token_type=token_type,
        tokens=llm.tokens,
        status_code=llm.status_code,
        route=llm.route,
        request_id=llm.request_id,
        estimated=llm.estimated,
    )


def usage_event_to_admin_proto(event: UsageEvent) -> admin_usage_pb2.UsageEvent:
    return admin_usage_pb2.UsageEvent(
        id=event.id,
        source=event.source,
        type=event.type,
        subject=event.subject,
        time=to_timestamp(event.time),
        data={
            "provider": event.provider,
            "model": event.model,
            "type": event.token_type.value,
            "status_code": str(event.status_code),
            "route": event.route,
            "request_id": event.request_id,
            "estimated": "true" if event.estimated else "false",
        },
        value=event.tokens,
    )
