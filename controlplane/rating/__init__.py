"""Rating: turning usage quantities and prices into money. Pure: no clock, no I/O.

One pricer per price type (``flat``, ``unit``, ``tiered`` graduated and volume, ``package``);
``rate_card_lines`` applies a rate card's discounts and commitments around its price. Money is
``decimal.Decimal``; every intermediate result is exact and each line is rounded once to the
currency's ISO 4217 minor unit, ties away from zero (ROUND_HALF_UP).
"""

from __future__ import annotations

from controlplane.rating.charge import Charge, LineType, RatedLine, TierCharge
from controlplane.rating.flat import price_flat
from controlplane.rating.money import MINOR_UNITS, minor_units, round_money
from controlplane.rating.package import packages_for, price_package
from controlplane.rating.ratecard import price_quantity, rate_card_lines
from controlplane.rating.tiered import check_tiers, price_graduated, price_volume
from controlplane.rating.unit import price_unit, rate_unit, rate_unit_line

__all__ = [
    "MINOR_UNITS",
    "Charge",
    "LineType",
    "RatedLine",
    "TierCharge",
    "check_tiers",
    "minor_units",
    "packages_for",
    "price_flat",
    "price_graduated",
    "price_package",
    "price_quantity",
    "price_unit",
    "price_volume",
    "rate_card_lines",
    "rate_unit",
    "rate_unit_line",
    "round_money",
]
