"""Rating: turning usage quantities and prices into money. Pure: no clock, no I/O.

Money is ``decimal.Decimal``; products are computed exactly and rounded once per line to the
currency's ISO 4217 minor unit, ties away from zero.
"""

from __future__ import annotations

from controlplane.rating.money import MINOR_UNITS, minor_units, round_money
from controlplane.rating.unit import RatedLine, rate_unit, rate_unit_line

__all__ = [
    "MINOR_UNITS",
    "RatedLine",
    "minor_units",
    "rate_unit",
    "rate_unit_line",
    "round_money",
]
