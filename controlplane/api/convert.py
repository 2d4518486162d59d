"""The one place where domain types become protobuf messages and back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from controlplane.catalog.types import (
    Aggregation,
    Commitments,
    Discounts,
    Entitlement,
    EntitlementType,
    Feature,
    Meter,
    ModelPrice,
    PaymentTerm,
    Plan,
    PlanState,
    Price,
    PriceList,
    PriceType,
    RateCard,
    SettlementMode,
    Tier,
    TierMode,
)
from controlplane.customers.types import Customer
from controlplane.errors import InvalidArgument
from controlplane.gateway.secrets import SECRET_FIELDS
from controlplane.gateway.types import Consumer, Plugin, Route, Service
from controlplane.invoicing.types import Invoice, InvoiceLine, InvoiceState
from controlplane.portal.types import PortalToken
from controlplane.rating.charge import LineType, TierCharge
from controlplane.subscriptions.periods import EARLIEST_TIME, LATEST_TIME
from controlplane.subscriptions.types import Subscription
from controlplane.usage.meters import MeterAggregation, OperatorMeter
from controlplane.usage.quantities import MAX_EVENT_TOKENS
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import (
    billing_pb2,
    catalog_pb2,
    customers_pb2,
    gateway_pb2,
)
from meterline.admin.v1 import usage_pb2 as admin_usage_pb2
from meterline.dataplane.v1 import usage_pb2

# Every secret field sealed at rest (provider keys, Redis passwords, Kong's cloud credentials).
SECRET_KEYS = SECRET_FIELDS


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Times the API takes: billing periods of the longest cadence starting before LATEST_TIME still
# end inside what datetime holds (docs/limits.md).
_MIN_SECONDS = int((EARLIEST_TIME - _EPOCH).total_seconds())
_MAX_SECONDS = int((LATEST_TIME - _EPOCH).total_seconds())


def from_timestamp(ts: timestamp_pb2.Timestamp, *, field: str = "time") -> datetime:
    """A timestamp of the API as an aware UTC datetime; InvalidArgument outside
    [1970-01-01, 9000-01-01)."""
    if not _MIN_SECONDS <= ts.seconds < _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(
            f"{field} (seconds={ts.seconds}) is outside the supported range "
            f"[{EARLIEST_TIME.date()}, {LATEST_TIME.date()})"
        )
    # What Timestamp.ToDatetime(tzinfo=UTC) returns (microseconds, truncated), without its
    # pure-Python detour: usage ingestion converts every event's time.
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def parse_decimal(text: str, *, field: str) -> Decimal:
    if len(text) > 100:
        # The catalog's bounds (10^12, 18 places) fit in far fewer; never parse 5,000 digits.
        raise InvalidArgument(
            f"{field} is a decimal of {len(text)} characters; at most 100 (and at most 10^12"
            " in magnitude with 18 decimal places)"
        )
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
    # No stored id is longer than 200 characters or holds a control character (PostgreSQL
    # text cannot even hold NUL): such a name is malformed, not missing.
    if not value or "/" in value or len(value) > 200 or any(c < " " or c == "\x7f" for c in value):
        raise InvalidArgument(
            f"expected a resource name like {collection}/ID, got {name[:60]!r}"
            + ("..." if len(name) > 60 else "")
        )
    return value


# Gateway ------------------------------------------------------------------------------------


Times = tuple[datetime, datetime]


def _times(times: Times | None) -> dict[str, Any]:
    """create_time/update_time fields of a gateway entity (its domain type has none)."""
    if times is None:
        return {}
    return {"create_time": to_timestamp(times[0]), "update_time": to_timestamp(times[1])}


def service_to_proto(service: Service, times: Times | None = None) -> gateway_pb2.Service:
    return gateway_pb2.Service(
        name=f"services/{service.name}",
        service_name=service.name,
        url=service.url,
        attributes=_struct(service.attributes),
        **_times(times),
    )


def route_to_proto(route: Route, times: Times | None = None) -> gateway_pb2.Route:
    return gateway_pb2.Route(
        **_times(times),
        name=f"routes/{route.name}",
        route_name=route.name,
        service=f"services/{route.service}",
        paths=route.paths,
        methods=route.methods,
        strip_path=route.strip_path,
        attributes=_struct(route.attributes),
    )


def consumer_to_proto(consumer: Consumer, times: Times | None = None) -> gateway_pb2.Consumer:
    return gateway_pb2.Consumer(
        **_times(times),
        name=f"consumers/{consumer.username}",
        username=consumer.username,
        custom_id=consumer.custom_id,
        key_count=len(consumer.key_hashes),
        attributes=_struct(consumer.attributes),
    )


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(values))
    return message


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: ("<redacted>" if k in SECRET_KEYS and v else _redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def plugin_to_proto(
    plugin: Plugin, plugin_id: str, times: Times | None = None
) -> gateway_pb2.Plugin:
    config = struct_pb2.Struct()
    config.update(_redact(plugin.config))
    return gateway_pb2.Plugin(
        **_times(times),
        name=f"plugins/{plugin_id}",
        id=plugin_id,
        plugin_name=plugin.name.value,
        service=f"services/{plugin.service}" if plugin.service else "",
        route=f"routes/{plugin.route}" if plugin.route else "",
        consumer=f"consumers/{plugin.consumer}" if plugin.consumer else "",
        enabled=plugin.enabled,
        config=config,
        attributes=_struct(plugin.attributes),
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


def feature_to_proto(feature: Feature, create_time: datetime | None = None) -> catalog_pb2.Feature:
    return catalog_pb2.Feature(
        create_time=to_timestamp(create_time) if create_time else None,
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


PRICE_TYPES = {
    PriceType.FLAT: catalog_pb2.PRICE_TYPE_FLAT,
    PriceType.UNIT: catalog_pb2.PRICE_TYPE_UNIT,
    PriceType.TIERED: catalog_pb2.PRICE_TYPE_TIERED,
    PriceType.PACKAGE: catalog_pb2.PRICE_TYPE_PACKAGE,
    PriceType.MODEL_LIST: catalog_pb2.PRICE_TYPE_MODEL_LIST,
}
PAYMENT_TERMS = {
    PaymentTerm.IN_ADVANCE: catalog_pb2.PAYMENT_TERM_IN_ADVANCE,
    PaymentTerm.IN_ARREARS: catalog_pb2.PAYMENT_TERM_IN_ARREARS,
}
TIER_MODES = {
    TierMode.GRADUATED: catalog_pb2.TIER_MODE_GRADUATED,
    TierMode.VOLUME: catalog_pb2.TIER_MODE_VOLUME,
}


def _text(value: Decimal | None) -> str:
    # Positional notation: per-token prices like 1.5E-7 read as 0.00000015.
    return "" if value is None else format(value, "f")


def price_to_proto(price: Price) -> catalog_pb2.Price:
    message = catalog_pb2.Price(
        type=PRICE_TYPES[price.type],
        amount="" if price.type in (PriceType.TIERED, PriceType.MODEL_LIST) else str(price.amount),
        quantity_per_package=_text(price.quantity_per_package),
        price_list=price.price_list or "",
        markup_percent=_text(price.markup_percent),
    )
    if price.payment_term is not None:
        message.payment_term = PAYMENT_TERMS[price.payment_term]
    if price.mode is not None:
        message.tier_mode = TIER_MODES[price.mode]
    for tier in price.tiers:
        item = message.tiers.add(unit_price=str(tier.unit_price), flat_price=str(tier.flat_price))
        if tier.up_to is not None:
            item.up_to = str(tier.up_to)
    return message


ENTITLEMENT_TYPES = {
    EntitlementType.BOOLEAN: catalog_pb2.ENTITLEMENT_TYPE_BOOLEAN,
    EntitlementType.STATIC: catalog_pb2.ENTITLEMENT_TYPE_STATIC,
    EntitlementType.METERED: catalog_pb2.ENTITLEMENT_TYPE_METERED,
}


def entitlement_to_proto(entitlement: Entitlement) -> catalog_pb2.Entitlement:
    message = catalog_pb2.Entitlement(
        type=ENTITLEMENT_TYPES[entitlement.type],
        config=entitlement.config or "",
        usage_period=entitlement.usage_period or "",
        soft_limit=entitlement.soft_limit,
        preserve_overage_at_reset=entitlement.preserve_overage_at_reset,
    )
    if entitlement.limit is not None:
        message.limit = entitlement.limit
    return message


def entitlement_from_proto(message: catalog_pb2.Entitlement, *, where: str) -> Entitlement:
    """Syntax only; ``entitlement_problems`` checks the fields against the type."""
    kind: EntitlementType = _enum(
        message.type,
        ENTITLEMENT_TYPES,
        field=f"{where}.type",
        names="ENTITLEMENT_TYPE_BOOLEAN, ENTITLEMENT_TYPE_STATIC, ENTITLEMENT_TYPE_METERED",
    )
    config: str | None = None
    if message.config:
        try:
            config = json.dumps(json.loads(message.config), sort_keys=True, separators=(",", ":"))
        except ValueError:
            raise InvalidArgument(f"{where}.config must be a JSON object") from None
    return Entitlement(
        type=kind,
        config=config,
        limit=message.limit if message.HasField("limit") else None,
        usage_period=message.usage_period or None,
        soft_limit=message.soft_limit,
        preserve_overage_at_reset=message.preserve_overage_at_reset,
    )


SETTLEMENT_MODES = {
    SettlementMode.CREDIT_THEN_INVOICE: catalog_pb2.SETTLEMENT_MODE_CREDIT_THEN_INVOICE,
    SettlementMode.CREDIT_ONLY: catalog_pb2.SETTLEMENT_MODE_CREDIT_ONLY,
}


def _settlement_mode(value: int, *, where: str) -> SettlementMode:
    if value == catalog_pb2.SETTLEMENT_MODE_UNSPECIFIED:
        return SettlementMode.CREDIT_THEN_INVOICE
    mode: SettlementMode = _enum(
        value,
        SETTLEMENT_MODES,
        field=f"{where}: settlement_mode",
        names="SETTLEMENT_MODE_CREDIT_THEN_INVOICE, SETTLEMENT_MODE_CREDIT_ONLY",
    )
    return mode


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
        billing_anchor_time=to_timestamp(plan.billing_anchor),
    )
    for card in plan.rate_cards:
        rc = message.rate_cards.add(key=card.key, feature=card.feature or "")
        if card.price is not None:
            rc.price.CopyFrom(price_to_proto(card.price))
        if card.entitlement is not None:
            rc.entitlement.CopyFrom(entitlement_to_proto(card.entitlement))
        if card.discounts is not None:
            rc.discounts.percentage = _text(card.discounts.percentage)
            rc.discounts.usage = _text(card.discounts.usage)
        if card.commitments is not None:
            rc.commitments.minimum_amount = _text(card.commitments.minimum_amount)
            rc.commitments.maximum_amount = _text(card.commitments.maximum_amount)
        rc.settlement_mode = SETTLEMENT_MODES[card.settlement_mode]
    return message


def _amount(text: str, *, field: str, required: bool = False) -> Decimal | None:
    """A non-negative decimal string; empty means absent (an error when ``required``)."""
    if not text:
        if required:
            raise InvalidArgument(f"{field} is required")
        return None
    value = parse_decimal(text, field=field)
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {text!r}")
    return value


def _enum(value: int, table: Mapping[Any, int], *, field: str, names: str) -> Any:
    for domain, wire in table.items():
        if wire == value:
            return domain
    raise InvalidArgument(f"{field} must be one of {names}, got {value}")


def price_from_proto(message: catalog_pb2.Price, *, where: str) -> Price:
    price_type: PriceType = _enum(
        message.type,
        PRICE_TYPES,
        field=f"{where}.type",
        names=(
            "PRICE_TYPE_FLAT, PRICE_TYPE_UNIT, PRICE_TYPE_TIERED, PRICE_TYPE_PACKAGE,"
            " PRICE_TYPE_MODEL_LIST"
        ),
    )
    term: PaymentTerm | None = None
    if message.payment_term:
        term = _enum(
            message.payment_term,
            PAYMENT_TERMS,
            field=f"{where}.payment_term",
            names="PAYMENT_TERM_IN_ADVANCE, PAYMENT_TERM_IN_ARREARS",
        )
    elif price_type is PriceType.FLAT:
        term = PaymentTerm.IN_ADVANCE
    mode: TierMode | None = None
    if message.tier_mode:
        mode = _enum(
            message.tier_mode,
            TIER_MODES,
            field=f"{where}.tier_mode",
            names="TIER_MODE_GRADUATED, TIER_MODE_VOLUME",
        )
    tiers = tuple(
        Tier(
            up_to=_amount(t.up_to, field=f"{where}.tiers[{i}].up_to")
            if t.HasField("up_to")
            else None,
            unit_price=_amount(t.unit_price, field=f"{where}.tiers[{i}].unit_price") or Decimal(0),
            flat_price=_amount(t.flat_price, field=f"{where}.tiers[{i}].flat_price") or Decimal(0),
        )
        for i, t in enumerate(message.tiers)
    )
    amount = _amount(
        message.amount,
        field=f"{where}.amount",
        required=price_type not in (PriceType.TIERED, PriceType.MODEL_LIST),
    )
    return Price(
        type=price_type,
        amount=amount if amount is not None else Decimal(0),
        payment_term=term,
        mode=mode,
        tiers=tiers,
        quantity_per_package=_amount(
            message.quantity_per_package, field=f"{where}.quantity_per_package"
        ),
        price_list=message.price_list or None,
        markup_percent=_amount(message.markup_percent, field=f"{where}.markup_percent"),
    )


def price_list_to_proto(price_list: PriceList) -> catalog_pb2.PriceList:
    return catalog_pb2.PriceList(
        name=f"priceLists/{price_list.key}",
        key=price_list.key,
        display_name=price_list.name,
        currency=price_list.currency,
        prices=[
            catalog_pb2.ModelPrice(
                model=p.model,
                effective_from_time=to_timestamp(p.effective_from),
                input=_text(p.input),
                output=_text(p.output),
                cached_input=_text(p.cached_input),
                reasoning=_text(p.reasoning),
            )
            for p in price_list.prices
        ],
        create_time=to_timestamp(price_list.create_time),
        update_time=to_timestamp(price_list.update_time),
    )


def model_prices_from_proto(
    messages: Iterable[catalog_pb2.ModelPrice], *, where: str
) -> tuple[ModelPrice, ...]:
    prices = []
    for i, m in enumerate(messages):
        at = f"{where}[{i}] ({m.model or 'no model'})"
        if not m.HasField("effective_from_time"):
            raise InvalidArgument(f"{at}.effective_from_time is required")
        prices.append(
            ModelPrice(
                model=m.model,
                effective_from=from_timestamp(m.effective_from_time),
                input=_amount(m.input, field=f"{at}.input"),
                output=_amount(m.output, field=f"{at}.output"),
                cached_input=_amount(m.cached_input, field=f"{at}.cached_input"),
                reasoning=_amount(m.reasoning, field=f"{at}.reasoning"),
            )
        )
    return tuple(prices)


def price_list_from_proto(message: catalog_pb2.PriceList) -> PriceList:
    return PriceList(
        key=message.key,
        name=message.display_name,
        currency=message.currency,
        prices=model_prices_from_proto(message.prices, where="price_list.prices"),
    )


def plan_from_proto(message: catalog_pb2.Plan) -> Plan:
    """A plan from the wire; only syntax is checked here (``check_plan`` does the rest)."""
    cards = []
    for i, rc in enumerate(message.rate_cards):
        where = f"plan.rate_cards[{i}] ({rc.key or rc.feature or 'no key'})"
        price = (
            price_from_proto(rc.price, where=f"{where}: price") if rc.HasField("price") else None
        )
        entitlement = None
        if rc.HasField("entitlement"):
            entitlement = entitlement_from_proto(rc.entitlement, where=f"{where}: entitlement")
        discounts = None
        if rc.HasField("discounts"):
            discounts = Discounts(
                percentage=_amount(rc.discounts.percentage, field=f"{where}: discounts.percentage"),
                usage=_amount(rc.discounts.usage, field=f"{where}: discounts.usage"),
            )
        commitments = None
        if rc.HasField("commitments"):
            commitments = Commitments(
                minimum_amount=_amount(
                    rc.commitments.minimum_amount, field=f"{where}: commitments.minimum_amount"
                ),
                maximum_amount=_amount(
                    rc.commitments.maximum_amount, field=f"{where}: commitments.maximum_amount"
                ),
            )
        cards.append(
            RateCard(
                key=rc.key or rc.feature,
                feature=rc.feature or None,
                price=price,
                entitlement=entitlement,
                discounts=discounts,
                commitments=commitments,
                settlement_mode=_settlement_mode(rc.settlement_mode, where=where),
            )
        )
    return Plan(
        key=message.key,
        name=message.display_name or message.key,
        currency=message.currency,
        billing_cadence=message.billing_cadence,
        rate_cards=tuple(cards),
        billing_anchor=(
            from_timestamp(message.billing_anchor_time)
            if message.HasField("billing_anchor_time")
            else None
        ),
    )


# Customers ----------------------------------------------------------------------------------


def customer_to_proto(
    customer: Customer, *, stripe_customer_id: str | None = None
) -> customers_pb2.Customer:
    return customers_pb2.Customer(
        stripe_customer_id=stripe_customer_id or "",
        name=f"customers/{customer.key}",
        key=customer.key,
        display_name=customer.name,
        subjects=customer.subjects,
        create_time=to_timestamp(customer.create_time),
        update_time=to_timestamp(customer.update_time),
    )


def portal_token_to_proto(token: PortalToken) -> customers_pb2.PortalToken:
    return customers_pb2.PortalToken(
        name=f"customers/{token.customer}/portalTokens/{token.id}",
        id=token.id,
        customer=f"customers/{token.customer}",
        create_time=to_timestamp(token.create_time),
        expire_time=to_timestamp(token.expire_time),
        token=token.token or "",
        revoke_time=to_timestamp(token.revoke_time),
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
        billing_anchor_time=to_timestamp(sub.anchor),
    )


# Billing ------------------------------------------------------------------------------------


LINE_TYPES = {
    LineType.FLAT: billing_pb2.INVOICE_LINE_TYPE_FLAT,
    LineType.USAGE: billing_pb2.INVOICE_LINE_TYPE_USAGE,
    LineType.DISCOUNT: billing_pb2.INVOICE_LINE_TYPE_DISCOUNT,
    LineType.MAXIMUM_COMMITMENT: billing_pb2.INVOICE_LINE_TYPE_MAXIMUM_COMMITMENT,
    LineType.MINIMUM_COMMITMENT: billing_pb2.INVOICE_LINE_TYPE_MINIMUM_COMMITMENT,
    LineType.CREDIT: billing_pb2.INVOICE_LINE_TYPE_CREDIT,
    LineType.UNCOVERED: billing_pb2.INVOICE_LINE_TYPE_UNCOVERED,
}


def tier_to_proto(tier: TierCharge) -> billing_pb2.InvoiceLineTier:
    message = billing_pb2.InvoiceLineTier(
        tier=tier.tier,
        quantity=str(tier.quantity),
        unit_price=str(tier.unit_price),
        flat_price=str(tier.flat_price),
        amount=str(tier.amount),
    )
    if tier.up_to is not None:
        message.up_to = str(tier.up_to)
    return message


def line_to_proto(line: InvoiceLine) -> billing_pb2.InvoiceLine:
    return billing_pb2.InvoiceLine(
        subscription=f"subscriptions/{line.subscription}" if line.subscription else "",
        rate_card=line.rate_card,
        feature=line.feature or "",
        description=line.description,
        quantity=str(line.quantity),
        unit_price=_text(line.unit_price),
        amount=str(line.amount),
        period_start_time=to_timestamp(line.period_start),
        period_end_time=to_timestamp(line.period_end),
        type=LINE_TYPES[line.type],
        price_type=(
            PRICE_TYPES[line.price_type] if line.price_type else catalog_pb2.PRICE_TYPE_UNSPECIFIED
        ),
        payment_term=(
            PAYMENT_TERMS[line.payment_term]
            if line.payment_term
            else catalog_pb2.PAYMENT_TERM_UNSPECIFIED
        ),
        free_quantity=str(line.free_quantity) if line.free_quantity else "",
        packages=_text(line.packages),
        tiers=[tier_to_proto(t) for t in line.tiers],
        id=line.id,
        late_usage=line.late_usage,
        model=line.model or "",
        token_type=line.token_type or "",
        credit_grant=line.credit_grant or "",
    )


INVOICE_STATES = {
    InvoiceState.GATHERING: billing_pb2.INVOICE_STATE_GATHERING,
    InvoiceState.DRAFT: billing_pb2.INVOICE_STATE_DRAFT,
    InvoiceState.ISSUED: billing_pb2.INVOICE_STATE_ISSUED,
    InvoiceState.PAID: billing_pb2.INVOICE_STATE_PAID,
    InvoiceState.PAYMENT_FAILED: billing_pb2.INVOICE_STATE_PAYMENT_FAILED,
    InvoiceState.VOID: billing_pb2.INVOICE_STATE_VOID,
}
INVOICE_STATES_FROM_PROTO: dict[int, InvoiceState] = {v: k for k, v in INVOICE_STATES.items()}


def _sync_state(state: str | None) -> billing_pb2.InvoiceSyncState:
    if state is None:
        return billing_pb2.INVOICE_SYNC_STATE_NONE
    # Stripe holds what the invoice's state asks: finalized (issued), paid, or voided.
    if state in ("finalized", "paid", "voided"):
        return billing_pb2.INVOICE_SYNC_STATE_SYNCED
    if state == "failed":
        return billing_pb2.INVOICE_SYNC_STATE_FAILED
    if state == "pending":
        return billing_pb2.INVOICE_SYNC_STATE_PENDING
    return billing_pb2.INVOICE_SYNC_STATE_IN_PROGRESS


def invoice_to_proto(invoice: Invoice) -> billing_pb2.Invoice:
    return billing_pb2.Invoice(
        name=f"invoices/{invoice.id}" if invoice.id else "",
        id=invoice.id,
        customer=f"customers/{invoice.customer}",
        currency=invoice.currency,
        period_start_time=to_timestamp(invoice.period_start),
        period_end_time=to_timestamp(invoice.period_end),
        lines=[line_to_proto(line) for line in invoice.lines],
        total=str(invoice.total),
        state=INVOICE_STATES[invoice.state],
        number=invoice.number or "",
        issue_time=to_timestamp(invoice.issue_time),
        create_time=to_timestamp(invoice.create_time),
        update_time=to_timestamp(invoice.update_time),
        sync_state=_sync_state(invoice.sync_state),
        sync_error=invoice.sync_error or "",
        stripe_invoice_id=invoice.stripe_invoice_id or "",
    )


def invoice_states_from_proto(values: Iterable[int]) -> list[InvoiceState]:
    states = []
    for value in values:
        if value not in INVOICE_STATES_FROM_PROTO:
            raise InvalidArgument(f"states: unknown invoice state {value}")
        states.append(INVOICE_STATES_FROM_PROTO[value])
    return states


# Usage --------------------------------------------------------------------------------------

TOKEN_TYPES = {
    usage_pb2.TOKEN_TYPE_INPUT: TokenType.INPUT,
    usage_pb2.TOKEN_TYPE_OUTPUT: TokenType.OUTPUT,
    usage_pb2.TOKEN_TYPE_CACHED_INPUT: TokenType.CACHED_INPUT,
    usage_pb2.TOKEN_TYPE_REASONING: TokenType.REASONING,
    usage_pb2.TOKEN_TYPE_CACHE_WRITE: TokenType.CACHE_WRITE,
}


def usage_event_from_proto(message: usage_pb2.UsageEvent, *, index: int) -> UsageEvent:
    def where() -> str:
        return f"events[{index}] ({message.id or 'no id'})"

    if not message.id:
        raise InvalidArgument(f"{where()}: id is required")
    if not message.HasField("time"):
        raise InvalidArgument(f"{where()}: time is required")
    if not message.HasField("llm_tokens"):
        raise InvalidArgument(f"{where()}: llm_tokens data is required")
    llm = message.llm_tokens
    token_type = TOKEN_TYPES.get(llm.token_type)
    if token_type is None:
        raise InvalidArgument(f"{where()}: token_type {llm.token_type} is not a known TokenType")
    if llm.tokens < 0:
        raise InvalidArgument(f"{where()}: tokens must not be negative")
    if llm.tokens > MAX_EVENT_TOKENS:
        # The data plane never reports more (it marks such counts invalid and estimates).
        raise InvalidArgument(
            f"{where()}: tokens must be at most 10^12 per event, got {llm.tokens}"
        )
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
        time_to_first_token_ms=(
            llm.time_to_first_token_ms if llm.HasField("time_to_first_token_ms") else None
        ),
        # attempt is 0 only from data planes that do not measure latency yet.
        latency_ms=llm.latency_ms if llm.attempt else None,
    )


def usage_event_to_admin_proto(event: UsageEvent) -> admin_usage_pb2.UsageEvent:
    data = {
        "provider": event.provider,
        "model": event.model,
        "type": event.token_type.value,
        "status_code": str(event.status_code),
        "route": event.route,
        "request_id": event.request_id,
        "estimated": "true" if event.estimated else "false",
    }
    # Latency travels only where the data plane measured it.
    if event.time_to_first_token_ms is not None:
        data["time_to_first_token_ms"] = str(event.time_to_first_token_ms)
    if event.latency_ms is not None:
        data["latency_ms"] = str(event.latency_ms)
    return admin_usage_pb2.UsageEvent(
        id=event.id,
        source=event.source,
        type=event.type,
        subject=event.subject,
        time=to_timestamp(event.time),
        data=data,
        value=event.tokens,
    )


CATALOG_AGGREGATIONS = {
    MeterAggregation.SUM: catalog_pb2.METER_AGGREGATION_SUM,
    MeterAggregation.COUNT: catalog_pb2.METER_AGGREGATION_COUNT,
    MeterAggregation.MAX: catalog_pb2.METER_AGGREGATION_MAX,
    MeterAggregation.UNIQUE_COUNT: catalog_pb2.METER_AGGREGATION_UNIQUE_COUNT,
}


def operator_meter_to_proto(meter: OperatorMeter) -> catalog_pb2.Meter:
    return catalog_pb2.Meter(
        name=f"meters/{meter.key}",
        key=meter.key,
        event_type=meter.event_type,
        aggregation=CATALOG_AGGREGATIONS.get(
            meter.aggregation, catalog_pb2.METER_AGGREGATION_UNSPECIFIED
        ),
        value_property=meter.value_property or "",
        group_by=sorted(meter.group_by),
    )
