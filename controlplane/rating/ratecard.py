"""A rate card's price, discounts and commitments applied to one period's quantity.

A rate card becomes these lines, in this order (each rounded once to the currency's minor
unit, ties away from zero; the invoice total is the sum of the rounded lines):

1. the price line: ``flat`` (quantity 1, the period's fee) or ``usage`` (the metered quantity;
   a usage discount first makes ``discounts.usage`` units free from the start of the period,
   shown as the line's ``free_quantity``, and the price, tiers included, applies to the rest);
2. ``discount``: ``-round(percentage% of the price line)``, when not zero;
3. ``maximum_commitment``: ``-(amount so far - maximum_amount)`` when the amount so far is
   above the cap;
4. ``minimum_commitment``: ``minimum_amount - amount so far`` when it is below the floor (a
   top-up; a preview shows it as if the period ended now).
"""

from __future__ import annotations

from decimal import Decimal

from controlplane.catalog.types import Commitments, Discounts, Price, PriceType, TierMode
from controlplane.errors import InvalidArgument
from controlplane.rating.charge import EXACT, Charge, LineType, RatedLine
from controlplane.rating.flat import price_flat
from controlplane.rating.money import round_money
from controlplane.rating.package import price_package
from controlplane.rating.tiered import price_graduated, price_volume
from controlplane.rating.unit import non_negative, price_unit

HUNDRED = Decimal(100)


def price_quantity(*, price: Price, quantity: Decimal, currency: str) -> Charge:
    """The charge of ``price`` for ``quantity`` units (a flat price ignores the quantity)."""
    if price.type is PriceType.FLAT:
        return price_flat(amount=price.amount, currency=currency)
    if price.type is PriceType.UNIT:
        return price_unit(quantity=quantity, unit_price=price.amount, currency=currency)
    if price.type is PriceType.PACKAGE:
        if price.quantity_per_package is None:
            raise InvalidArgument("a package price needs quantity_per_package")
        return price_package(
            quantity=quantity,
            amount=price.amount,
            quantity_per_package=price.quantity_per_package,
            currency=currency,
        )
    if price.mode is TierMode.GRADUATED:
        return price_graduated(quantity=quantity, tiers=price.tiers, currency=currency)
    if price.mode is TierMode.VOLUME:
        return price_volume(quantity=quantity, tiers=price.tiers, currency=currency)
    if price.type is PriceType.MODEL_LIST:
        raise InvalidArgument("a model_list price is rated per model: use model_list_lines")
    raise InvalidArgument("a tiered price needs mode graduated or volume")


def _adjustment(kind: LineType, amount: Decimal) -> RatedLine:
    return RatedLine(quantity=Decimal(1), unit_price=amount, amount=amount, type=kind)


def rate_card_lines(
    *,
    price: Price,
    quantity: Decimal,
    currency: str,
    discounts: Discounts | None = None,
    commitments: Commitments | None = None,
) -> tuple[RatedLine, ...]:
    """The lines of one rate card for one period (see the module docstring for the order)."""
    q = non_negative("quantity", quantity)
    discounts = discounts or Discounts()
    commitments = commitments or Commitments()
    if price.type is PriceType.FLAT:
        charge = price_flat(amount=price.amount, currency=currency)
        lines = [
            RatedLine(
                quantity=charge.quantity,
                unit_price=charge.unit_price,
                amount=charge.amount,
                type=LineType.FLAT,
            )
        ]
    else:
        free = min(q, non_negative("discounts.usage", discounts.usage or Decimal(0)))
        charge = price_quantity(price=price, quantity=EXACT.subtract(q, free), currency=currency)
        lines = [
            RatedLine(
                quantity=q,
                unit_price=charge.unit_price,
                amount=charge.amount,
                type=LineType.USAGE,
                free_quantity=free,
                packages=charge.packages,
                tiers=charge.tiers,
            )
        ]
    return (
        *lines,
        *adjustment_lines(
            total=charge.amount, currency=currency, discounts=discounts, commitments=commitments
        ),
    )


def adjustment_lines(
    *,
    total: Decimal,
    currency: str,
    discounts: Discounts | None,
    commitments: Commitments | None,
) -> list[RatedLine]:
    """Discount and commitment lines for a rate card whose price lines add up to ``total``."""
    discounts = discounts or Discounts()
    commitments = commitments or Commitments()
    lines: list[RatedLine] = []
    if discounts.percentage is not None:
        percentage = non_negative("discounts.percentage", discounts.percentage)
        if percentage > HUNDRED:
            raise InvalidArgument(f"discounts.percentage must be at most 100, got {percentage}")
        off = round_money(EXACT.divide(EXACT.multiply(total, percentage), HUNDRED), currency)
        if off:
            lines.append(_adjustment(LineType.DISCOUNT, -off))
            total = EXACT.subtract(total, off)
    maximum, minimum = commitments.maximum_amount, commitments.minimum_amount
    if maximum is not None and total > non_negative("commitments.maximum_amount", maximum):
        cap = round_money(EXACT.subtract(maximum, total), currency)
        lines.append(_adjustment(LineType.MAXIMUM_COMMITMENT, cap))
        total = EXACT.add(total, cap)
    if minimum is not None and total < non_negative("commitments.minimum_amount", minimum):
        top_up = round_money(EXACT.subtract(minimum, total), currency)
        if top_up:
            lines.append(_adjustment(LineType.MINIMUM_COMMITMENT, top_up))
    return lines
