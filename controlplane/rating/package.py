"""The package pricer: ``amount`` per started package of ``quantity_per_package`` units."""

from __future__ import annotations

from decimal import Decimal

from controlplane.errors import InvalidArgument
from controlplane.rating.charge import EXACT, Charge
from controlplane.rating.money import require_decimal, round_money
from controlplane.rating.unit import non_negative


def packages_for(quantity: Decimal, quantity_per_package: Decimal) -> Decimal:
    """Started packages: ``ceil(quantity / quantity_per_package)``; 0 for no usage."""
    whole, rest = EXACT.divmod(quantity, quantity_per_package)
    return whole + 1 if rest else whole


def price_package(
    *, quantity: Decimal, amount: Decimal, quantity_per_package: Decimal, currency: str
) -> Charge:
    """``amount`` for every package started: 1 unit buys a whole package."""
    q = non_negative("quantity", quantity)
    price = non_negative("amount", amount)
    size = require_decimal("quantity_per_package", quantity_per_package)
    if size <= 0:
        raise InvalidArgument(f"quantity_per_package must be positive, got {size}")
    packages = packages_for(q, size)
    exact = EXACT.multiply(packages, price)
    return Charge(
        quantity=q,
        exact_amount=exact,
        amount=round_money(exact, currency),
        unit_price=price,
        packages=packages,
    )
