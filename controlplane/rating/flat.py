"""The flat pricer: a fixed amount per billing period, whatever the usage."""

from __future__ import annotations

from decimal import Decimal

from controlplane.rating.charge import Charge
from controlplane.rating.money import round_money
from controlplane.rating.unit import non_negative


def price_flat(*, amount: Decimal, currency: str) -> Charge:
    """One period's flat fee: quantity 1 at ``amount``."""
    exact = non_negative("amount", amount)
    return Charge(
        quantity=Decimal(1),
        exact_amount=exact,
        amount=round_money(exact, currency),
        unit_price=exact,
    )
