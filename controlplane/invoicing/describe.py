"""Invoice lines in words: what a line charges and why, e.g. ``calls: 1500 (100 free)``."""

from __future__ import annotations

from controlplane.catalog.types import Feature, Price, PriceType, RateCard
from controlplane.rating import LineType, RatedLine


def describe_line(card: RateCard, feature: Feature | None, line: RatedLine) -> str:
    """A line's explanation in words, e.g. ``calls: 1500 (100 free), graduated tiers``."""
    price = card.price
    assert price is not None
    name = (feature.name or feature.key) if feature is not None else card.key
    if line.type is LineType.FLAT:
        term = price.payment_term.value.replace("_", " ") if price.payment_term else "in advance"
        return f"{name}: flat fee {price.amount} per period, {term}"
    if line.type is LineType.DISCOUNT:
        assert card.discounts is not None
        return f"{name}: {card.discounts.percentage}% discount"
    if line.type is LineType.MAXIMUM_COMMITMENT:
        assert card.commitments is not None
        return f"{name}: maximum commitment {card.commitments.maximum_amount}"
    if line.type is LineType.MINIMUM_COMMITMENT:
        assert card.commitments is not None
        return f"{name}: minimum commitment {card.commitments.minimum_amount} top-up"
    if line.model is not None:
        what = f"{name}: {line.model} {line.token_type} tokens {line.quantity}"
        if line.list_price is None or line.price_from is None:
            return f"{what}, no price in list {price.price_list}: unpriced"
        markup = f" + {price.markup_percent}%" if price.markup_percent else ""
        since = line.price_from.isoformat().replace("+00:00", "Z")
        return f"{what} x {line.list_price}{markup} (list price from {since})"
    quantity = (
        f"{line.quantity} ({line.free_quantity} free)"
        if line.free_quantity
        else (f"{line.quantity}")
    )
    return f"{name}: {quantity} {_price_words(price, line)}"


def _price_words(price: Price, line: RatedLine) -> str:
    if price.type is PriceType.UNIT:
        return f"x {price.amount}"
    if price.type is PriceType.PACKAGE:
        return f"= {line.packages} x {price.amount} per {price.quantity_per_package}"
    mode = price.mode.value if price.mode else "tiered"
    return f"{mode} tiers " + ", ".join(f"{t.tier}: {t.quantity}" for t in line.tiers)
