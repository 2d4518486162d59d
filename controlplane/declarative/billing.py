"""The ``billing:`` section of a declarative document: features, plans, customers, subscriptions."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from controlplane.budgets.declarative import parse_budgets
from controlplane.catalog.types import (
    BUILTIN_METERS,
    MODEL_PRICE_TOKEN_TYPES,
    TOKEN_TYPE_ALIASES,
    Commitments,
    Discounts,
    Entitlement,
    EntitlementType,
    Feature,
    ModelPrice,
    PaymentTerm,
    Plan,
    Price,
    PriceList,
    PriceType,
    RateCard,
    SettlementMode,
    Tier,
    TierMode,
)
from controlplane.catalog.validation import price_list_problems, rate_card_problems
from controlplane.credits.declarative import (
    parse_credit_alerts,
    parse_credit_recharge,
    parse_credits,
)
from controlplane.customers.types import Customer
from controlplane.declarative.entry import Entry, describe, quoted
from controlplane.declarative.meters import meter_dimensions, parse_meters
from controlplane.declarative.types import BillingConfig, SubscriptionSpec
from controlplane.errors import InvalidArgument
from controlplane.notifications.declarative import parse_notifications
from controlplane.rating.money import minor_units
from controlplane.subscriptions.periods import parse_cadence
from controlplane.usage.meters import OperatorMeter
from controlplane.usage.types import TokenType

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
TOKEN_TYPES = tuple(t.value for t in TokenType)


def parse_billing(billing: Entry) -> BillingConfig:
    """Read the billing section; problems go to ``billing.problems``."""
    billing.check_keys(
        (
            "meters",
            "features",
            "price_lists",
            "plans",
            "customers",
            "subscriptions",
            "budgets",
            "notifications",
            "credits",
        )
    )
    meters = parse_meters(billing)
    features: dict[str, Feature] = {}
    feature_keys: dict[str, str] = {}
    for entry in billing.entries("features", label="key"):
        feature = _feature(entry, feature_keys, meters)
        if feature is not None:
            features[feature.key] = feature
    price_lists: list[PriceList] = []
    list_keys: dict[str, str] = {}
    for entry in billing.entries("price_lists", label="key"):
        price_list = _price_list(entry, list_keys)
        if price_list is not None:
            price_lists.append(price_list)
    currencies = {p.key: p.currency for p in price_lists}
    plans: list[Plan] = []
    plan_keys: dict[str, str] = {}
    for entry in billing.entries("plans", label="key"):
        plan = _plan(entry, plan_keys, feature_keys, currencies)
        if plan is not None:
            plans.append(plan)
    customers: list[Customer] = []
    customer_keys: dict[str, str] = {}
    subjects: dict[str, str] = {}
    for entry in billing.entries("customers", label="key"):
        customer = _customer(entry, customer_keys, subjects)
        if customer is not None:
            customers.append(customer)
    subscriptions: list[SubscriptionSpec] = []
    seen_pairs: dict[tuple[str, str], str] = {}
    for entry in billing.entries("subscriptions", label="customer"):
        subscription = _subscription(entry, customer_keys, plan_keys, seen_pairs)
        if subscription is not None:
            subscriptions.append(subscription)
    return BillingConfig(
        features=tuple(features.values()),
        price_lists=tuple(price_lists),
        plans=tuple(plans),
        customers=tuple(customers),
        subscriptions=tuple(subscriptions),
        budgets=parse_budgets(billing, customer_keys),
        credits=parse_credits(billing, customer_keys, feature_keys),
        credit_recharge=parse_credit_recharge(billing, customer_keys),
        credit_alerts=parse_credit_alerts(billing, customer_keys),
        notifications=parse_notifications(billing),
        meters=tuple(meters.values()),
    )


def _claim_key(entry: Entry, kind: str, seen: dict[str, str]) -> str | None:
    """Read the entry's ``key`` and register it; None if invalid or already taken."""
    key = entry.string("key", required=True)
    if key is None:
        return None
    if key in seen:
        entry.fail(f'duplicate {kind} key "{key}", already defined at {seen[key]}')
        return None
    # Registered even if malformed, so references to it do not report the same mistake again.
    seen[key] = entry.where
    if not _KEY.match(key):
        entry.fail_field(
            "key", f'"{key}" must start with a letter or digit and contain only "._~-" besides'
        )
        return None
    return key


def _feature(
    entry: Entry, seen: dict[str, str], meters: Mapping[str, OperatorMeter]
) -> Feature | None:
    before = len(entry.problems)
    entry.check_keys(("key", "name", "meter", "filters"))
    key = _claim_key(entry, "feature", seen)
    name = entry.string("name", default="")
    meter_key = entry.choice("meter", (*BUILTIN_METERS, *meters))
    filters: dict[str, str] = {}
    raw_filters = entry.sub("filters")
    if raw_filters is not None and meter_key is not None:
        group_by = meter_dimensions(meter_key, meters) or ()
        if meter_key in BUILTIN_METERS:
            group_by = BUILTIN_METERS[meter_key].group_by
        for dimension, value in raw_filters.data.items():
            if dimension not in group_by:
                raw_filters.fail(
                    f'filters.{dimension} is not a dimension of meter "{meter_key}" '
                    f"(expected one of: {quoted(group_by)})"
                )
                continue
            text = _filter_value(raw_filters, str(dimension), value)
            if text is not None:
                filters[str(dimension)] = text
    if len(entry.problems) > before or key is None or name is None or meter_key is None:
        return None
    return Feature(key=key, meter=meter_key, name=name, filters=filters)


def _filter_value(filters: Entry, dimension: str, value: object) -> str | None:
    """A filter value as a string; token types are normalised to input/output."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # status_code: 200 reads as an integer
    if not isinstance(value, str) or not value.strip():
        filters.fail_field(dimension, f"must be a non-empty string, got {describe(value)}")
        return None
    if dimension == "type":
        normalised = TOKEN_TYPE_ALIASES.get(value, value)
        if normalised not in TOKEN_TYPES:
            accepted = (*TOKEN_TYPES, *TOKEN_TYPE_ALIASES)
            filters.fail_field(dimension, f'must be one of {quoted(accepted)}, got "{value}"')
            return None
        return normalised
    return value


def _time(entry: Entry, key: str, *, required: bool = False) -> datetime | None:
    """An ISO 8601 time with a zone (a string, or a timestamp YAML read already)."""
    value = entry.data.get(key)
    if value is None:
        if required:
            entry.fail_field(key, "is required")
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            entry.fail_field(
                key, f'must be an ISO 8601 timestamp like 2026-01-01T00:00:00Z, got "{value}"'
            )
            return None
    else:
        entry.fail_field(key, f"must be an ISO 8601 timestamp, got {describe(value)}")
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        entry.fail_field(key, f'"{value}" needs a timezone, like Z or +02:00')
        return None
    return moment


def _price_list(entry: Entry, seen: dict[str, str]) -> PriceList | None:
    before = len(entry.problems)
    entry.check_keys(("key", "name", "currency", "prices"))
    key = _claim_key(entry, "price list", seen)
    name = entry.string("name", default="")
    currency = entry.string("currency", required=True)
    prices: list[ModelPrice] = []
    if entry.data.get("prices") is None:
        entry.fail_field("prices", "is required")
    for item in entry.entries("prices", label="model"):
        item.check_keys(("model", "effective_from", *MODEL_PRICE_TOKEN_TYPES))
        model = item.string("model", required=True)
        since = _time(item, "effective_from", required=True)
        amounts = {t: item.decimal(t) for t in MODEL_PRICE_TOKEN_TYPES}
        if model is not None and since is not None:
            prices.append(ModelPrice(model=model, effective_from=since, **amounts))
    if len(entry.problems) > before or key is None or name is None or currency is None:
        return None
    price_list = PriceList(key=key, name=name, currency=currency, prices=tuple(prices))
    for problem in price_list_problems(price_list):
        entry.fail(problem)
    return None if len(entry.problems) > before else price_list


def _plan(
    entry: Entry,
    seen: dict[str, str],
    features: dict[str, str],
    price_lists: dict[str, str] | None = None,
) -> Plan | None:
    before = len(entry.problems)
    entry.check_keys(("key", "name", "currency", "billing_cadence", "billing_anchor", "rate_cards"))
    key = _claim_key(entry, "plan", seen)
    name = entry.string("name", required=True)
    currency = entry.string("currency", required=True)
    if currency is not None:
        try:
            minor_units(currency)
        except InvalidArgument as exc:
            entry.fail(str(exc))
    cadence = entry.string("billing_cadence", required=True)
    if cadence is not None:
        try:
            parse_cadence(cadence)
        except InvalidArgument as exc:
            entry.fail(str(exc))
    anchor = _time(entry, "billing_anchor")
    rate_cards: list[RateCard] = []
    card_keys: dict[str, str] = {}
    priced_features: dict[str, str] = {}
    if entry.data.get("rate_cards") is None:
        entry.fail_field("rate_cards", "is required")
    for card_entry in entry.entries("rate_cards", label="key"):
        card = _rate_card(card_entry, features, card_keys, priced_features, currency)
        if card is not None:
            rate_cards.append(card)
            listed = card.price.price_list if card.price is not None else None
            listed_in = (price_lists or {}).get(listed or "")
            if listed_in is not None and currency is not None and listed_in != currency:
                card_entry.fail(f'price list "{listed}" is in {listed_in}, the plan in {currency}')
    if (
        len(entry.problems) > before
        or key is None
        or name is None
        or currency is None
        or cadence is None
    ):
        return None
    return Plan(
        key=key,
        name=name,
        currency=currency,
        billing_cadence=cadence,
        rate_cards=tuple(rate_cards),
        billing_anchor=anchor,
    )


def _rate_card(
    entry: Entry,
    features: dict[str, str],
    keys: dict[str, str],
    priced: dict[str, str],
    currency: str | None,
) -> RateCard | None:
    before = len(entry.problems)
    entry.check_keys(
        ("key", "feature", "price", "entitlement", "discounts", "commitments", "settlement_mode")
    )
    mode = entry.choice(
        "settlement_mode",
        tuple(m.value for m in SettlementMode),
        default=SettlementMode.CREDIT_THEN_INVOICE.value,
    )
    settlement_mode = SettlementMode(mode or SettlementMode.CREDIT_THEN_INVOICE.value)
    feature: str | None = entry.string("feature", default="") or None
    if feature is not None:
        if feature not in features:
            known = f"the features are {quoted(features)}" if features else "there are none"
            entry.fail(f'unknown feature "{feature}": declare it under billing.features ({known})')
        elif feature in priced:
            entry.fail(f'feature "{feature}" is already in {priced[feature]}')
        else:
            priced[feature] = entry.where
    key = entry.string("key", default=feature or "")
    if key == "" and entry.data.get("feature") is None:
        entry.fail("key is required when the rate card has no feature")
    if key:
        if key in keys:
            entry.fail(f'duplicate rate card key "{key}", already defined at {keys[key]}')
        else:
            keys[key] = entry.where
    price = _price(entry)
    entitlement = _entitlement(entry)
    discounts = _discounts(entry)
    commitments = _commitments(entry)
    if len(entry.problems) > before or not key:
        return None
    card = RateCard(
        key=key,
        feature=feature,
        price=price,
        entitlement=entitlement,
        discounts=discounts,
        commitments=commitments,
        settlement_mode=settlement_mode,
    )
    for problem in rate_card_problems(card, currency=currency):
        entry.fail(problem)
    return None if len(entry.problems) > before else card


def _price(card: Entry) -> Price | None:
    price = card.sub("price")
    if price is None:
        return None
    before = len(price.problems)
    price.check_keys(
        (
            "type",
            "amount",
            "payment_term",
            "mode",
            "tiers",
            "quantity_per_package",
            "price_list",
            "markup_percent",
        )
    )
    kind = price.choice("type", tuple(PriceType))
    price_type = PriceType(kind) if kind is not None else None
    needs_amount = price_type in (PriceType.FLAT, PriceType.UNIT, PriceType.PACKAGE)
    amount = price.decimal("amount", required=needs_amount)
    term = price.choice("payment_term", tuple(PaymentTerm)) if price.has("payment_term") else None
    mode = price.choice("mode", tuple(TierMode)) if price.has("mode") else None
    tiers = tuple(_tiers(price))
    per_package = price.decimal("quantity_per_package")
    price_list = price.string("price_list", default="") or None
    markup = price.decimal("markup_percent")
    if price_type is None or len(price.problems) > before:
        return None
    if term is None and price_type is PriceType.FLAT:
        term = PaymentTerm.IN_ADVANCE.value
    return Price(
        type=price_type,
        amount=amount if amount is not None else Decimal(0),
        payment_term=PaymentTerm(term) if term is not None else None,
        mode=TierMode(mode) if mode is not None else None,
        tiers=tiers,
        quantity_per_package=per_package,
        price_list=price_list,
        markup_percent=markup,
    )


def _tiers(price: Entry) -> list[Tier]:
    tiers: list[Tier] = []
    for index, tier in enumerate(price.entries("tiers", label="up_to")):
        where = f"{price.prefix}tiers[{index}]."
        item = Entry(price.where, tier.data, price.problems, prefix=where)
        item.check_keys(("up_to", "unit_price", "flat_price"))
        up_to = item.decimal("up_to")
        unit_price = item.decimal("unit_price")
        flat_price = item.decimal("flat_price")
        if not item.has("unit_price") and not item.has("flat_price"):
            item.fail(f"{where[:-1]} needs a unit_price, a flat_price or both")
        tiers.append(
            Tier(
                up_to=up_to,
                unit_price=unit_price if unit_price is not None else Decimal(0),
                flat_price=flat_price if flat_price is not None else Decimal(0),
            )
        )
    return tiers


def _discounts(card: Entry) -> Discounts | None:
    discounts = card.sub("discounts")
    if discounts is None:
        return None
    discounts.check_keys(("percentage", "usage"))
    return Discounts(percentage=discounts.decimal("percentage"), usage=discounts.decimal("usage"))


def _commitments(card: Entry) -> Commitments | None:
    commitments = card.sub("commitments")
    if commitments is None:
        return None
    commitments.check_keys(("minimum_amount", "maximum_amount"))
    return Commitments(
        minimum_amount=commitments.decimal("minimum_amount"),
        maximum_amount=commitments.decimal("maximum_amount"),
    )


def _entitlement(card: Entry) -> Entitlement | None:
    entitlement = card.sub("entitlement")
    if entitlement is None:
        return None
    before = len(entitlement.problems)
    entitlement.check_keys(
        ("type", "config", "limit", "usage_period", "soft_limit", "preserve_overage_at_reset")
    )
    kind = entitlement.choice("type", tuple(EntitlementType))
    limit = _limit(entitlement)
    usage_period = entitlement.string("usage_period", default="") or None
    soft_limit = entitlement.boolean("soft_limit", default=False)
    preserve = entitlement.boolean("preserve_overage_at_reset", default=False)
    config = _static_config(entitlement)
    if kind is None or soft_limit is None or preserve is None:
        return None
    if len(entitlement.problems) > before:
        return None
    # The rest (fields of the wrong type, a malformed usage_period) is checked by
    # rate_card_problems, shared with the admin API.
    return Entitlement(
        type=EntitlementType(kind),
        config=config,
        limit=limit,
        usage_period=usage_period,
        soft_limit=soft_limit,
        preserve_overage_at_reset=preserve,
    )


def _limit(entitlement: Entry) -> int | None:
    """``limit``: a whole number of units, zero or more."""
    value = entitlement.data.get("limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        entitlement.fail_field("limit", f"must be a whole number of units, got {describe(value)}")
        return None
    if value < 0:
        entitlement.fail_field("limit", f"must not be negative, got {value}")
        return None
    return value


def _static_config(entitlement: Entry) -> str | None:
    """``config`` of a static entitlement: a mapping, kept as canonical JSON text."""
    value = entitlement.data.get("config")
    if value is None:
        return None
    if not isinstance(value, dict):
        entitlement.fail_field("config", f"must be a mapping, got {describe(value)}")
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        entitlement.fail_field(
            "config", "must hold only JSON values (strings, numbers, booleans, lists, mappings)"
        )
        return None


def _customer(entry: Entry, seen: dict[str, str], subjects: dict[str, str]) -> Customer | None:
    before = len(entry.problems)
    entry.check_keys(("key", "name", "subjects"))
    key = _claim_key(entry, "customer", seen)
    name = entry.string("name", required=True)
    own = entry.string_list("subjects", required=True)
    for index, subject in enumerate(own or ()):
        if subject in subjects:
            entry.fail_field(
                f"subjects[{index}]", f'"{subject}" already belongs to {subjects[subject]}'
            )
        else:
            subjects[subject] = entry.where
    if len(entry.problems) > before or key is None or name is None or own is None:
        return None
    return Customer(key=key, name=name, subjects=own)


def _subscription(
    entry: Entry,
    customers: dict[str, str],
    plans: dict[str, str],
    seen: dict[tuple[str, str], str],
) -> SubscriptionSpec | None:
    before = len(entry.problems)
    entry.check_keys(("customer", "plan", "start", "billing_anchor", "changes", "end"))
    customer = entry.string("customer", required=True)
    if customer is not None and customer not in customers:
        entry.fail(f'unknown customer "{customer}"')
    plan = entry.string("plan", required=True)
    if plan is not None and plan not in plans:
        entry.fail(f'unknown plan "{plan}"')
    start = _start(entry)
    anchor = _time(entry, "billing_anchor")
    if anchor is not None and start is not None and anchor > start:
        entry.fail_field(
            "billing_anchor",
            "must not be after start: periods repeat from the anchor, so give one a period earlier",
        )
    changes = _plan_changes(entry, plans, start)
    end = _end(entry, start, changes)
    if customer is not None and plan is not None:
        if (customer, plan) in seen:
            entry.fail(
                f'customer "{customer}" is already subscribed to plan "{plan}" at '
                f"{seen[customer, plan]}"
            )
        else:
            seen[customer, plan] = entry.where
    if len(entry.problems) > before or customer is None or plan is None:
        return None
    return SubscriptionSpec(
        customer=customer,
        plan=plan,
        start=start,
        billing_anchor=anchor,
        changes=tuple(changes),
        end=end,
    )


def _plan_changes(
    entry: Entry, plans: dict[str, str], start: datetime | None
) -> list[tuple[datetime, str]]:
    """``changes``: plan changes, each later than the previous one and after ``start``."""
    changes: list[tuple[datetime, str]] = []
    for index, item in enumerate(entry.entries("changes", label="plan")):
        item.check_keys(("at", "plan"))
        at = _time(item, "at", required=True)
        target = item.string("plan", required=True)
        if target is not None and target not in plans:
            item.fail(f'unknown plan "{target}"')
        if at is not None and target is not None:
            if changes and at <= changes[-1][0]:
                item.fail_field("at", "must be later than the previous change")
            elif index == 0 and start is not None and at <= start:
                item.fail_field("at", "must be after the subscription's start")
            changes.append((at, target))
    return changes


def _end(
    entry: Entry, start: datetime | None, changes: list[tuple[datetime, str]]
) -> datetime | str | None:
    """``end``: "period_end", or a time after ``start`` and the last plan change."""
    if entry.data.get("end") == "period_end":
        return "period_end"
    if not entry.has("end"):
        return None
    end = _time(entry, "end")
    if end is not None and changes and end <= changes[-1][0]:
        entry.fail_field("end", "must be after the last plan change")
    elif isinstance(end, datetime) and start is not None and end <= start:
        entry.fail_field("end", "must be after start")
    return end


def _start(entry: Entry) -> datetime | None:
    """``start``: absent or "now" mean now (None); otherwise an ISO 8601 time with a zone."""
    value = entry.string("start", default="now")
    if value is None or value == "now":
        return None
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        entry.fail_field(
            "start",
            f'must be "now" or an ISO 8601 timestamp like 2025-01-01T00:00:00Z, got "{value}"',
        )
        return None
    if start.tzinfo is None or start.utcoffset() is None:
        entry.fail_field("start", f'"{value}" needs a timezone, like Z or +02:00')
        return None
    return start
