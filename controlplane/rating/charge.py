"""What pricers return: a charge for one quantity, and the lines a rate card becomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from enum import StrEnum

# Every sum and product of rating is exact: 200 digits hold any realistic amount, and an
# inexact result raises instead of rounding silently (only ``round_money`` rounds).
EXACT = Context(
    prec=200,
    rounding=ROUND_HALF_UP,
    traps=[Inexact, InvalidOperation, DivisionByZero, Overflow],
)


@dataclass(frozen=True)
class TierCharge:
    """The slice of a quantity one tier prices; ``amount`` is exact (not rounded).

    ``tier`` counts from 1; ``quantity`` is the units priced by this tier, ``amount`` is
    ``quantity * unit_price + flat_price``.
    """

    tier: int
    up_to: Decimal | None
    quantity: Decimal
    unit_price: Decimal
    flat_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Charge:
    """A price applied to one quantity: the exact amount, rounded once, and its breakdown."""

    quantity: Decimal
    exact_amount: Decimal
    amount: Decimal
    unit_price: Decimal | None = None
    packages: Decimal | None = None
    tiers: tuple[TierCharge, ...] = ()
    # model_list lines: the model and token type, the list price before markup and when that
    # price took effect (None: the list has no price for it, the line is unpriced at 0).
    model: str | None = None
    token_type: str | None = None
    list_price: Decimal | None = None
    price_from: datetime | None = None


class LineType(StrEnum):
    """The kinds of line a rate card becomes on an invoice (see ``rate_card_lines``)."""

    FLAT = "flat"
    USAGE = "usage"
    DISCOUNT = "discount"
    MAXIMUM_COMMITMENT = "maximum_commitment"
    MINIMUM_COMMITMENT = "minimum_commitment"
    # Not rating's: invoicing adds these after rating (controlplane.credits.settlement).
    # A credit grant paying part of the invoice (negative).
    CREDIT = "credit"
    # What credits left of a credit_only rate card's charge: taken off, never invoiced.
    UNCOVERED = "uncovered"


@dataclass(frozen=True)
class RatedLine:
    """One line of money; ``amount`` is rounded to the currency's minor unit.

    Usage lines: ``quantity`` is the metered quantity, ``free_quantity`` the part a usage
    discount made free, and the price applies to the rest. Adjustment lines (discount,
    commitments) have quantity 1 and ``unit_price == amount``.
    """

    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    type: LineType = LineType.USAGE
    free_quantity: Decimal = Decimal(0)
    packages: Decimal | None = None
    tiers: tuple[TierCharge, ...] = ()
    # model_list lines: the model and token type, the list price before markup and when that
    # price took effect (None: the list has no price for it, the line is unpriced at 0).
    model: str | None = None
    token_type: str | None = None
    list_price: Decimal | None = None
    price_from: datetime | None = None
