"""Entitlements in the declarative format: parsed exactly as the issue writes them."""

from __future__ import annotations

import pytest

from controlplane.catalog.types import Entitlement, EntitlementType
from controlplane.declarative import DeclarativeError, parse_document

DOC = """\
_format_version: "3.0"
billing:
  features:
    - {{key: all-tokens, meter: llm_tokens}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens          # meter llm_tokens, no filter: input + output
          price: {{type: unit, amount: "0.000002"}}
          entitlement: {entitlement}
"""
CARD = "billing.plans[0] (starter).rate_cards[0]"


def entitlement_of(text: str) -> Entitlement | None:
    [plan] = parse_document(DOC.format(entitlement=text)).billing.plans
    return plan.rate_cards[0].entitlement


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "{type: metered, limit: 500000, usage_period: P1M, soft_limit: false}",
            Entitlement(type=EntitlementType.METERED, limit=500_000, usage_period="P1M"),
            id="issue-example",
        ),
        pytest.param(
            "{type: metered, limit: 0, usage_period: P1D, soft_limit: true,"
            " preserve_overage_at_reset: true}",
            Entitlement(
                type=EntitlementType.METERED,
                limit=0,
                usage_period="P1D",
                soft_limit=True,
                preserve_overage_at_reset=True,
            ),
            id="soft-preserve-zero-limit",
        ),
        pytest.param(
            "{type: static, config: {b: 1, a: [x, y]}}",
            Entitlement(type=EntitlementType.STATIC, config='{"a":["x","y"],"b":1}'),
            id="static-canonical-json",
        ),
        pytest.param("{type: boolean}", Entitlement(type=EntitlementType.BOOLEAN), id="boolean"),
    ],
)
def test_entitlements_parse(text: str, expected: Entitlement) -> None:
    assert entitlement_of(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "{type: metered, limit: -1, usage_period: P1M}",
            "entitlement.limit must not be negative, got -1",
            id="limit-negative",
        ),
        pytest.param(
            "{type: metered, limit: '5', usage_period: P1M}",
            "entitlement.limit must be a whole number of units, got a string",
            id="limit-string",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: P-1M}",
            "entitlement.usage_period 'P-1M' is not a positive ISO 8601 duration",
            id="usage-period-negative",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: 30}",
            "entitlement.usage_period must be a string, got an integer",
            id="usage-period-integer",
        ),
        pytest.param(
            "{type: metered, limit: 5}",
            "entitlement.usage_period is required for a metered entitlement",
            id="usage-period-missing",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: P1M, soft_limit: yes please}",
            "entitlement.soft_limit must be true or false, got a string",
            id="soft-limit-not-bool",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: P1M, preserve_overage_at_reset: 1}",
            "entitlement.preserve_overage_at_reset must be true or false, got an integer",
            id="preserve-not-bool",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: P1M, window: P1D}",
            'unknown field "entitlement.window"',
            id="unknown-field",
        ),
        pytest.param(
            "{type: static, config: {a: 1}, soft_limit: true}",
            'entitlement.soft_limit is only for metered entitlements, not "static"',
            id="soft-limit-on-static",
        ),
        pytest.param(
            "{type: boolean, config: {a: 1}}",
            'entitlement.config is only for static entitlements, not "boolean"',
            id="config-on-boolean",
        ),
        pytest.param(
            "{type: static, config: {x: .nan}}",
            "entitlement.config must hold only JSON values",
            id="config-not-json",
        ),
    ],
)
def test_bad_entitlements_name_the_rate_card(text: str, message: str) -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(DOC.format(entitlement=text))
    assert any(p.startswith(f"{CARD}: ") and message in p for p in raised.value.problems), (
        raised.value.problems
    )
