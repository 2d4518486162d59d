"""Usage quantities: exact arithmetic and the bounds of one event's value (docs/limits.md).

Token counts are ints, operator-meter values Decimals; neither ever goes through a float.
Bounding what one event may carry keeps every sum well inside what storage holds exactly
(an hour's SQLite rollup of llm_tokens stays a 64-bit integer unless ten million events of
the maximum size land in it, and then the exact Python path takes over: rollups.py).
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow

# One usage event's tokens (the data plane bounds what it reports the same way).
MAX_EVENT_TOKENS = 10**12
# One operator-meter event's value: magnitude and decimal places.
MAX_METER_VALUE = Decimal(10) ** 15
MAX_METER_VALUE_PLACES = 9

# Sums of quantities: 200 digits never round; an inexact result raises instead.
EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])
_WIDE = Context(prec=200)


def meter_value_problem(value: Decimal) -> str | None:
    """Why ``value`` cannot be one event's meter value, or None if it can."""
    if not value.is_finite():
        return f"must be a finite number, got {value}"
    if abs(value) > MAX_METER_VALUE:
        return f"must be at most 10^15 in magnitude, got {value:.6E}"
    # Trailing zeros do not count: 1.50000000000000 is 1.5.
    exponent = value.normalize(_WIDE).as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MAX_METER_VALUE_PLACES:
        return f"must have at most {MAX_METER_VALUE_PLACES} decimal places, got {value}"
    return None
