"""Price types in the declarative ``billing:`` section: the issue's shape, and bad input."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from controlplane.catalog.types import (
    Commitments,
    Discounts,
    PaymentTerm,
    Price,
    PriceType,
    RateCard,
    Tier,
    TierMode,
)
from controlplane.declarative import DeclarativeError, parse_document

D = Decimal

DOCUMENT = """\
_format_version: "3.0"
billing:
  features:
    - {key: tokens-in, meter: llm_tokens, filters: {type: input}}
    - {key: tokens-out, meter: llm_tokens, filters: {type: output}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "49", payment_term: in_advance}}
        - feature: tokens-in
          price:
            type: tiered
            mode: graduated
            tiers:
              - {up_to: "1000", unit_price: "0.01", flat_price: "0"}
              - {unit_price: "0.005"}
          discounts: {usage: "100"}
          commitments: {minimum_amount: "5", maximum_amount: "500"}
        - {feature: tokens-out, price: {type: package, amount: "2", quantity_per_package: "1000"}}
"""


def cards(text: str = DOCUMENT) -> tuple[RateCard, ...]:
    return parse_document(text).billing.plans[0].rate_cards


def test_the_issue_example_parses() -> None:
    platform, tokens_in, tokens_out = cards()
    assert platform == RateCard(
        key="platform",
        feature=None,
        price=Price(type=PriceType.FLAT, amount=D(49), payment_term=PaymentTerm.IN_ADVANCE),
    )
    assert tokens_in == RateCard(
        key="tokens-in",
        feature="tokens-in",
        price=Price(
            type=PriceType.TIERED,
            mode=TierMode.GRADUATED,
            tiers=(
                Tier(up_to=D(1000), unit_price=D("0.01")),
                Tier(up_to=None, unit_price=D("0.005")),
            ),
        ),
        discounts=Discounts(usage=D(100)),
        commitments=Commitments(minimum_amount=D(5), maximum_amount=D(500)),
    )
    assert tokens_out.price == Price(
        type=PriceType.PACKAGE, amount=D(2), quantity_per_package=D(1000)
    )


def test_flat_payment_term_defaults_to_in_advance() -> None:
    text = DOCUMENT.replace(", payment_term: in_advance", "")
    assert cards(text)[0].price.payment_term is PaymentTerm.IN_ADVANCE  # type: ignore[union-attr]


def test_volume_mode_and_arrears_parse() -> None:
    text = DOCUMENT.replace("mode: graduated", "mode: volume").replace("in_advance", "in_arrears")
    platform, tokens_in, _ = cards(text)
    assert platform.price.payment_term is PaymentTerm.IN_ARREARS  # type: ignore[union-attr]
    assert tokens_in.price.mode is TierMode.VOLUME  # type: ignore[union-attr]


def patched(card: int, changes: dict[str, object]) -> str:
    data = yaml.safe_load(DOCUMENT)
    target = data["billing"]["plans"][0]["rate_cards"][card]
    for path, value in changes.items():
        parent = target
        *steps, last = path.split(".")
        for step in steps:
            parent = parent[int(step)] if isinstance(parent, list) else parent[step]
        if value is None:
            del parent[int(last) if isinstance(parent, list) else last]
        elif isinstance(parent, list):
            parent[int(last)] = value
        else:
            parent[last] = value
    return yaml.safe_dump(data, sort_keys=False)


PLAN = "billing.plans[0] (pro)"
FLAT = f"{PLAN}.rate_cards[0] (platform)"
TIERED = f"{PLAN}.rate_cards[1]"
PACKAGE = f"{PLAN}.rate_cards[2]"


@pytest.mark.parametrize(
    ("card", "changes", "message"),
    [
        pytest.param(0, {"price.amount": "-49"}, f'{FLAT}: price.amount must not be negative',
                     id="negative-flat"),
        pytest.param(0, {"price.amount": 49.5}, f"{FLAT}: price.amount must be a quoted decimal",
                     id="float-amount"),
        pytest.param(0, {"price.payment_term": "monthly"},
                     f'{FLAT}: price.payment_term must be one of "in_advance", "in_arrears"',
                     id="payment-term"),
        pytest.param(0, {"price.type": "unit"},
                     f'{FLAT}: a "unit" price needs a feature to meter; only a flat price',
                     id="usage-price-without-feature"),
        pytest.param(0, {"key": None}, f"{PLAN}.rate_cards[0]: key is required when the rate "
                     "card has no feature", id="featureless-without-key"),
        pytest.param(0, {"discounts": {"usage": "10"}},
                     f"{FLAT}: discounts.usage needs a usage-based price, not a flat one",
                     id="usage-discount-on-flat"),
        pytest.param(0, {"commitments": {"minimum_amount": "10"}},
                     f"{FLAT}: commitments need a usage-based price", id="commitment-on-flat"),
        pytest.param(1, {"price.tiers": [{"up_to": "2000", "unit_price": "1"},
                                      {"up_to": "1000", "unit_price": "1"},
                                      {"unit_price": "1"}]},
                     f"{TIERED}: price.tiers[1].up_to must be greater than the previous tier's "
                     "2000", id="tiers-out-of-order"),
        pytest.param(1, {"price.tiers.1.up_to": "5000"},
                     f"{TIERED}: price.tiers[1].up_to must be left out: the last tier is "
                     "open-ended", id="last-tier-with-up-to"),
        pytest.param(1, {"price.tiers.0.up_to": None},
                     f"{TIERED}: price.tiers[0].up_to is required on every tier but the last",
                     id="middle-tier-without-up-to"),
        pytest.param(1, {"price.tiers.0.unit_price": "-0.01"},
                     f'{TIERED}: price.tiers[0].unit_price must not be negative',
                     id="negative-tier-price"),
        pytest.param(1, {"price.tiers": []}, f"{TIERED}: price.tiers must list at least one tier",
                     id="no-tiers"),
        pytest.param(1, {"price.mode": None}, f'{TIERED}: price.mode is required for a tiered',
                     id="mode-missing"),
        pytest.param(1, {"price.mode": "stairstep"},
                     f'{TIERED}: price.mode must be one of "graduated", "volume"',
                     id="mode-unknown"),
        pytest.param(1, {"price.tiers.1": {"flat_price": "1", "up_tp": "3"}},
                     f'{TIERED}: unknown field "price.tiers[1].up_tp"', id="tier-typo"),
        pytest.param(1, {"discounts.percentage": "150"},
                     f"{TIERED}: discounts.percentage must be above 0 and at most 100",
                     id="percentage-over-100"),
        pytest.param(1, {"commitments.minimum_amount": "600"},
                     f"{TIERED}: commitments.minimum_amount 600 must not exceed maximum_amount",
                     id="minimum-above-maximum"),
        pytest.param(1, {"commitments.minimum_amount": "5.001"},
                     f"{TIERED}: commitments.minimum_amount 5.001 has more decimals than USD's 2",
                     id="commitment-below-minor-unit"),
        pytest.param(2, {"price.quantity_per_package": "0"},
                     f"{PACKAGE}: price.quantity_per_package must be positive",
                     id="empty-package"),
        pytest.param(2, {"price.quantity_per_package": None},
                     f"{PACKAGE}: price.quantity_per_package is required",
                     id="package-size-missing"),
        pytest.param(2, {"price.mode": "volume"},
                     f'{PACKAGE}: price.mode is only for tiered prices, not "package"',
                     id="mode-on-package"),
        pytest.param(2, {"price.amount": None}, f"{PACKAGE}: price.amount is required",
                     id="package-amount-missing"),
    ],
)  # fmt: skip
def test_bad_prices_are_rejected_naming_the_entry(
    card: int, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(patched(card, changes))
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_unknown_currency_is_rejected() -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(DOCUMENT.replace("currency: USD", "currency: XYZ"))
    assert any("unknown currency 'XYZ'" in p for p in raised.value.problems)
