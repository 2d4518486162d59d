"""The tiered pricers, graduated and volume (OpenMeter's semantics).

A tier covers the quantities above the previous tier's ``up_to`` up to and including its own
``up_to`` (the last tier has none): 1000 units with ``up_to: 1000`` stay in the first tier,
1000.5 enter the second.

- Graduated: each tier prices the units that fall in it; a tier's ``flat_price`` is charged in
  full once usage enters the tier, and the first tier's flat price even at zero usage.
- Volume: the one tier containing the whole quantity prices all of it (unit price times the
  quantity, plus that tier's flat price), so a total may drop when the quantity passes an edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from controlplane.catalog.types import Tier
from controlplane.errors import InvalidArgument
from controlplane.rating.charge import EXACT, Charge, TierCharge
from controlplane.rating.money import round_money
from controlplane.rating.unit import non_negative


def check_tiers(tiers: Sequence[Tier]) -> None:
    """Tiers ascend strictly by ``up_to`` and only the last one is open-ended."""
    if not tiers:
        raise InvalidArgument("tiers must not be empty")
    previous = Decimal(0)
    for index, tier in enumerate(tiers):
        non_negative(f"tiers[{index}].unit_price", tier.unit_price)
        non_negative(f"tiers[{index}].flat_price", tier.flat_price)
        last = index == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                raise InvalidArgument(f"tiers[{index}].up_to is required on all but the last tier")
            continue
        if last:
            raise InvalidArgument(f"tiers[{index}]: the last tier must not have up_to")
        up_to = non_negative(f"tiers[{index}].up_to", tier.up_to)
        if up_to <= previous:
            raise InvalidArgument(
                f"tiers[{index}].up_to must be greater than {previous}, got {up_to}"
            )
        previous = up_to


def _tier_charge(index: int, tier: Tier, quantity: Decimal) -> TierCharge:
    amount = EXACT.add(EXACT.multiply(quantity, tier.unit_price), tier.flat_price)
    return TierCharge(
        tier=index + 1,
        up_to=tier.up_to,
        quantity=quantity,
        unit_price=tier.unit_price,
        flat_price=tier.flat_price,
        amount=amount,
    )


def price_graduated(*, quantity: Decimal, tiers: Sequence[Tier], currency: str) -> Charge:
    """Each tier prices its own slice of ``quantity``; one line, rounded once."""
    q = non_negative("quantity", quantity)
    check_tiers(tiers)
    charges: list[TierCharge] = []
    lower = Decimal(0)
    for index, tier in enumerate(tiers):
        # Usage enters a tier when it passes the previous edge; the first tier always applies.
        if index > 0 and q <= lower:
            break
        upper = q if tier.up_to is None else min(q, tier.up_to)
        charges.append(_tier_charge(index, tier, EXACT.subtract(upper, lower)))
        if tier.up_to is not None:
            lower = tier.up_to
    exact = Decimal(0)
    for charge in charges:
        exact = EXACT.add(exact, charge.amount)
    return Charge(
        quantity=q, exact_amount=exact, amount=round_money(exact, currency), tiers=tuple(charges)
    )


def volume_tier(quantity: Decimal, tiers: Sequence[Tier]) -> int:
    """Index of the tier whose range holds ``quantity`` (``up_to`` inclusive)."""
    for index, tier in enumerate(tiers):
        if tier.up_to is None or quantity <= tier.up_to:
            return index
    raise InvalidArgument("the last tier must not have up_to")


def price_volume(*, quantity: Decimal, tiers: Sequence[Tier], currency: str) -> Charge:
    """The tier holding ``quantity`` prices all of it, plus that tier's flat price."""
    q = non_negative("quantity", quantity)
    check_tiers(tiers)
    index = volume_tier(q, tiers)
    charge = _tier_charge(index, tiers[index], q)
    return Charge(
        quantity=q,
        exact_amount=charge.amount,
        amount=round_money(charge.amount, currency),
        unit_price=tiers[index].unit_price,
        tiers=(charge,),
    )
