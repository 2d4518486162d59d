"""Checks of rate cards and plans, shared by the declarative parser and the admin API.

Each check returns problems as messages that start with the field they are about, relative
to the rate card (``price.tiers[1].up_to must be greater than 1000``), so callers can say
which entry is wrong.
"""

from __future__ import annotations

import json
from decimal import Context, Decimal

from controlplane.catalog.types import (
    MODEL_PRICE_TOKEN_TYPES,
    Entitlement,
    EntitlementType,
    Plan,
    Price,
    PriceList,
    PriceType,
    RateCard,
)
from controlplane.errors import InvalidArgument
from controlplane.rating.money import minor_units
from controlplane.subscriptions.periods import parse_cadence

HUNDRED = Decimal(100)
# Every decimal of the catalog (prices, tiers, commitments, discounts, model prices): at most
# 10^12 in magnitude and 18 decimal places, so at most 31 digits (docs/limits.md).
MAX_DECIMAL = Decimal(10) ** 12
MAX_DECIMAL_PLACES = 18


def _shown(value: Decimal) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{value:.6E} ({len(value.as_tuple().digits)} digits)"


def decimal_problems(field: str, value: Decimal | None) -> list[str]:
    """Why ``value`` is out of the catalog's decimal bounds (empty if it is not)."""
    if value is None:
        return []
    if not value.is_finite():
        return [f"{field} must be a finite number, got {value}"]
    if abs(value) > MAX_DECIMAL:
        return [f"{field} must be at most 10^12 in magnitude, got {_shown(value)}"]
    # Trailing zeros do not count: 1.50000 has one decimal place.
    exponent = value.normalize(_WIDE).as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MAX_DECIMAL_PLACES:
        return [
            f"{field} must have at most {MAX_DECIMAL_PLACES} decimal places, got {_shown(value)}"
        ]
    return []


_WIDE = Context(prec=200)


def _negative(field: str, value: Decimal | None) -> list[str]:
    problems = decimal_problems(field, value)
    if problems:
        return problems
    if value is not None and value < 0:
        return [f"{field} must not be negative, got {value}"]
    return []


def price_problems(price: Price) -> list[str]:
    """What is wrong with a price on its own."""
    problems = _negative("price.amount", price.amount)
    problems += _fields_of_other_types(price)
    if price.type is PriceType.PACKAGE:
        problems += _package_problems(price)
    if price.type is PriceType.MODEL_LIST:
        problems += _model_list_problems(price)
    else:
        problems += _model_list_fields(price)
    if price.type is PriceType.TIERED:
        problems += _tiered_problems(price)
    return problems


def _fields_of_other_types(price: Price) -> list[str]:
    """Flat, tiered and package fields on a price of another type."""
    kind = price.type.value
    problems: list[str] = []
    if price.payment_term is not None and price.type is not PriceType.FLAT:
        problems.append(f'price.payment_term is only for flat prices, not "{kind}"')
    if price.type is not PriceType.TIERED:
        if price.mode is not None:
            problems.append(f'price.mode is only for tiered prices, not "{kind}"')
        if price.tiers:
            problems.append(f'price.tiers are only for tiered prices, not "{kind}"')
    if price.type is not PriceType.PACKAGE and price.quantity_per_package is not None:
        problems.append(f'price.quantity_per_package is only for package prices, not "{kind}"')
    return problems


def _package_problems(price: Price) -> list[str]:
    problems = decimal_problems("price.quantity_per_package", price.quantity_per_package)
    if price.quantity_per_package is None:
        problems.append("price.quantity_per_package is required for a package price")
    elif price.quantity_per_package <= 0:
        problems.append(
            f"price.quantity_per_package must be positive, got {price.quantity_per_package}"
        )
    return problems


def _model_list_fields(price: Price) -> list[str]:
    """Model-list fields on a price of another type."""
    kind = price.type.value
    problems: list[str] = []
    if price.price_list is not None:
        problems.append(f'price.price_list is only for model_list prices, not "{kind}"')
    if price.markup_percent is not None:
        problems.append(f'price.markup_percent is only for model_list prices, not "{kind}"')
    return problems


def _model_list_problems(price: Price) -> list[str]:
    problems: list[str] = []
    if price.amount:
        problems.append("price.amount is not used by model_list prices: the list prices")
    if not price.price_list:
        problems.append("price.price_list is required for a model_list price")
    return problems + _negative("price.markup_percent", price.markup_percent)


def _tiered_problems(price: Price) -> list[str]:
    problems: list[str] = []
    if price.amount:
        problems.append("price.amount is not used by tiered prices: price the tiers")
    if price.mode is None:
        problems.append('price.mode is required for a tiered price: "graduated" or "volume"')
    return problems + tier_problems(price)


def tier_problems(price: Price) -> list[str]:
    """Tiers ascend strictly by ``up_to``; only the last one, and it must, has no ``up_to``."""
    if not price.tiers:
        return ["price.tiers must list at least one tier"]
    problems: list[str] = []
    previous: Decimal | None = None
    last = len(price.tiers) - 1
    for index, tier in enumerate(price.tiers):
        where = f"price.tiers[{index}]"
        problems += _negative(f"{where}.unit_price", tier.unit_price)
        problems += _negative(f"{where}.flat_price", tier.flat_price)
        if index == last:
            if tier.up_to is not None:
                problems.append(
                    f"{where}.up_to must be left out: the last tier is open-ended "
                    f"(it has up_to {tier.up_to})"
                )
            continue
        problems += decimal_problems(f"{where}.up_to", tier.up_to)
        if tier.up_to is None:
            problems.append(f"{where}.up_to is required on every tier but the last")
        elif tier.up_to <= 0:
            problems.append(f"{where}.up_to must be positive, got {tier.up_to}")
        elif previous is not None and tier.up_to <= previous:
            problems.append(
                f"{where}.up_to must be greater than the previous tier's {previous} "
                f"(tiers go in ascending order), got {tier.up_to}"
            )
        else:
            previous = tier.up_to
    return problems


def entitlement_problems(entitlement: Entitlement) -> list[str]:
    """What is wrong with an entitlement on its own (its feature is checked by the rate card)."""
    problems: list[str] = []
    kind = entitlement.type.value
    metered = entitlement.type is EntitlementType.METERED
    if not metered:
        only_metered = [
            field
            for field, value in (
                ("limit", entitlement.limit),
                ("usage_period", entitlement.usage_period),
                ("soft_limit", entitlement.soft_limit or None),
                ("preserve_overage_at_reset", entitlement.preserve_overage_at_reset or None),
            )
            if value is not None
        ]
        problems += [
            f'entitlement.{field} is only for metered entitlements, not "{kind}"'
            for field in only_metered
        ]
    if entitlement.type is not EntitlementType.STATIC and entitlement.config is not None:
        problems.append(f'entitlement.config is only for static entitlements, not "{kind}"')
    if entitlement.type is EntitlementType.STATIC:
        if entitlement.config is None:
            problems.append("entitlement.config is required for a static entitlement")
        else:
            try:
                config = json.loads(entitlement.config)
            except ValueError:
                problems.append("entitlement.config must be a JSON object")
            else:
                if not isinstance(config, dict):
                    problems.append("entitlement.config must be a JSON object")
    if metered:
        if entitlement.limit is None:
            problems.append("entitlement.limit is required for a metered entitlement")
        elif entitlement.limit < 0:
            problems.append(f"entitlement.limit must not be negative, got {entitlement.limit}")
        if entitlement.usage_period is None:
            problems.append(
                "entitlement.usage_period is required for a metered entitlement (like P1M)"
            )
        else:
            try:
                parse_cadence(entitlement.usage_period)
            except InvalidArgument:
                problems.append(
                    f"entitlement.usage_period {entitlement.usage_period!r} is not a positive "
                    "ISO 8601 duration (like P1M, P1D, PT1H)"
                )
    return problems


def rate_card_problems(card: RateCard, *, currency: str | None = None) -> list[str]:
    """What is wrong with a rate card; ``currency`` checks commitments' precision too."""
    problems: list[str] = []
    price = card.price
    if price is not None:
        problems += price_problems(price)
        if price.usage_based and not card.feature:
            problems.append(
                f'a "{price.type.value}" price needs a feature to meter; '
                "only a flat price can stand without one"
            )
    elif card.entitlement is None:
        problems.append("needs a price, an entitlement or both")
    if card.entitlement is not None:
        if not card.feature:
            problems.append(
                f'a "{card.entitlement.type.value}" entitlement needs a feature; '
                "a rate card without a feature can only have a flat price"
            )
        problems += entitlement_problems(card.entitlement)
    problems += _discount_problems(card)
    problems += _commitment_problems(card, currency)
    return problems


def _discount_problems(card: RateCard) -> list[str]:
    discounts, price = card.discounts, card.price
    if discounts is None:
        return []
    problems: list[str] = []
    if price is None:
        problems.append("discounts need a price")
    pct = discounts.percentage
    problems += decimal_problems("discounts.percentage", pct)
    if pct is not None and not 0 < pct <= HUNDRED:
        problems.append(f"discounts.percentage must be above 0 and at most 100, got {pct}")
    if discounts.usage is not None:
        problems += _negative("discounts.usage", discounts.usage)
        if price is not None and not price.usage_based:
            problems.append("discounts.usage needs a usage-based price, not a flat one")
        if price is not None and price.type is PriceType.MODEL_LIST:
            problems.append(
                "discounts.usage is not for model_list prices (free tokens of which model?)"
            )
    return problems


def _commitment_problems(card: RateCard, currency: str | None) -> list[str]:
    commitments, price = card.commitments, card.price
    if commitments is None:
        return []
    problems: list[str] = []
    if price is not None and not price.usage_based:
        problems.append("commitments need a usage-based price, not a flat one")
    elif price is None:
        problems.append("commitments need a price")
    low, high = commitments.minimum_amount, commitments.maximum_amount
    problems += _negative("commitments.minimum_amount", low)
    problems += _negative("commitments.maximum_amount", high)
    if low is not None and high is not None and low > high:
        problems.append(f"commitments.minimum_amount {low} must not exceed maximum_amount {high}")
    if currency is not None:
        problems += _precision_problems(commitments.minimum_amount, "minimum", currency)
        problems += _precision_problems(commitments.maximum_amount, "maximum", currency)
    return problems


def _precision_problems(amount: Decimal | None, which: str, currency: str) -> list[str]:
    try:
        places = minor_units(currency)
    except InvalidArgument:
        return []  # the plan's currency is reported on its own
    if amount is None or amount == amount.quantize(Decimal(1).scaleb(-places)):
        return []
    return [f"commitments.{which}_amount {amount} has more decimals than {currency}'s {places}"]


def check_plan(plan: Plan) -> None:
    """Raise InvalidArgument naming every bad rate card of ``plan``."""
    problems: list[str] = []
    try:
        minor_units(plan.currency)
    except InvalidArgument as exc:
        problems.append(f"plan.currency: {exc}")
    try:
        # The YAML parser checks the same way (controlplane/declarative/billing.py).
        parse_cadence(plan.billing_cadence)
    except InvalidArgument as exc:
        problems.append(f"plan.billing_cadence: {exc}")
    keys: set[str] = set()
    for index, card in enumerate(plan.rate_cards):
        where = f"plan.rate_cards[{index}] ({card.key or card.feature or 'no key'})"
        if not card.key:
            problems.append(f"{where}: key is required when there is no feature")
        elif card.key in keys:
            problems.append(f"{where}: duplicate rate card key {card.key!r}")
        keys.add(card.key)
        problems += [
            f"{where}: {problem}" for problem in rate_card_problems(card, currency=plan.currency)
        ]
    if problems:
        raise InvalidArgument("; ".join(problems))


def price_list_problems(price_list: PriceList) -> list[str]:
    """What is wrong with a price list: currency, and each entry's model, time and prices."""
    problems: list[str] = []
    try:
        minor_units(price_list.currency)
    except InvalidArgument as exc:
        problems.append(f"currency: {exc}")
    seen: set[tuple[str, object]] = set()
    for index, entry in enumerate(price_list.prices):
        where = f"prices[{index}] ({entry.model or 'no model'})"
        if not entry.model:
            problems.append(f"{where}: model is required")
        at = entry.effective_from
        if at.tzinfo is None or at.utcoffset() is None:
            problems.append(f"{where}: effective_from needs a timezone, like Z")
        elif (entry.model, at) in seen:
            problems.append(
                f"{where}: a second price for {entry.model} from {at.isoformat()}; one entry"
                " per model and effective_from"
            )
        seen.add((entry.model, at))
        prices = [(t, entry.price_of(t)) for t in MODEL_PRICE_TOKEN_TYPES]
        if all(value is None for _, value in prices):
            problems.append(f"{where}: needs at least one of {', '.join(MODEL_PRICE_TOKEN_TYPES)}")
        for token_type, value in prices:
            problems += [f"{where}: {p}" for p in _negative(token_type, value)]
    return problems


def check_price_list(price_list: PriceList) -> None:
    """Raise InvalidArgument naming every problem of ``price_list``."""
    problems = price_list_problems(price_list)
    if problems:
        raise InvalidArgument(f"price list {price_list.key!r}: " + "; ".join(problems))


__all__ = [
    "check_plan",
    "check_price_list",
    "entitlement_problems",
    "price_list_problems",
    "price_problems",
    "rate_card_problems",
    "tier_problems",
]
