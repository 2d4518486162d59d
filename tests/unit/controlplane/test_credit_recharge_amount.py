"""What an auto-recharge rule buys at a live balance, before the period caps (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controlplane.credits.recharge import top_up_amount
from controlplane.credits.types import RechargeMode, RechargeRule

D = Decimal


def rule(mode: RechargeMode, **fields: str) -> RechargeRule:
    return RechargeRule(
        customer="acme",
        mode=mode,
        threshold=D("5"),
        **{key: D(value) for key, value in fields.items()},  # type: ignore[arg-type]
    )


T, G = RechargeMode.THRESHOLD, RechargeMode.TARGET


@pytest.mark.parametrize(
    ("found", "live", "currency", "expected"),
    [
        pytest.param(rule(T, amount="20"), "4.99", "USD", "20", id="threshold-buys-amount"),
        pytest.param(rule(G, target="50"), "4.99", "USD", "45.01", id="target-exact"),
        pytest.param(rule(G, target="50"), "4.991", "USD", "45.01", id="target-rounds-up-cent"),
        pytest.param(rule(G, target="50"), "4.5", "JPY", "46", id="target-rounds-up-yen"),
        pytest.param(rule(G, target="50"), "0", "KWD", "50", id="target-from-zero"),
        pytest.param(rule(G, target="12", minimum="10"), "4", "USD", "10", id="raised-to-minimum"),
        pytest.param(rule(G, target="50", maximum="25"), "1", "USD", "25", id="cut-to-maximum"),
        pytest.param(
            rule(G, target="50", minimum="10", maximum="25"),
            "4.00",
            "USD",
            "25",
            id="both-bounds",
        ),
    ],
)
def test_top_up_amount(found: RechargeRule, live: str, currency: str, expected: str) -> None:
    assert top_up_amount(found, D(live), currency) == D(expected)
