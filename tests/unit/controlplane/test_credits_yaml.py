"""``billing.credits`` and rate cards' ``settlement_mode`` in a declarative document."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.catalog.types import SettlementMode
from controlplane.credits.types import CreditGrantSpec, Funding
from controlplane.declarative import DeclarativeError, parse_document

BASE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "walkthrough.yaml").read_text())


def document(credits: list[dict[str, Any]], *, mode: str | None = None) -> str:
    data = copy.deepcopy(BASE)
    data["billing"]["credits"] = credits
    if mode is not None:
        data["billing"]["plans"][0]["rate_cards"][0]["settlement_mode"] = mode
    return yaml.safe_dump(data, sort_keys=False)


def test_credits_and_settlement_mode_are_read() -> None:
    config = parse_document(
        document(
            [
                {
                    "customer": "acme",
                    "amount": "20",
                    "funding": "promotional",
                    "key": "welcome-credit",
                    "expires": "P90D",
                },
                {
                    "customer": "acme",
                    "amount": 5,
                    "key": "tokens-only",
                    "features": ["ai-token"],
                    "priority": 1,
                    "funding": "external",
                },
            ],
            mode="credit_only",
        )
    )
    assert config.billing.credits == (
        CreditGrantSpec(
            customer="acme",
            amount=Decimal("20"),
            funding=Funding.PROMOTIONAL,
            key="welcome-credit",
            expires="P90D",
        ),
        CreditGrantSpec(
            customer="acme",
            amount=Decimal("5"),
            funding=Funding.EXTERNAL,
            key="tokens-only",
            priority=1,
            features=("ai-token",),
        ),
    )
    assert config.billing.plans[0].rate_cards[0].settlement_mode is SettlementMode.CREDIT_ONLY


def test_settlement_mode_defaults_to_credit_then_invoice() -> None:
    config = parse_document(document([]))
    card = config.billing.plans[0].rate_cards[0]
    assert card.settlement_mode is SettlementMode.CREDIT_THEN_INVOICE


GOOD = {"customer": "acme", "amount": "20", "key": "welcome-credit"}
WHERE = "billing.credits[0] (welcome-credit)"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"amount": "-5"}, f'{WHERE}: amount must not be negative, got "-5"', id="neg"),
        pytest.param({"amount": "0"}, f"{WHERE}: amount must be above zero", id="zero"),
        pytest.param({"amount": 0.5}, f"{WHERE}: amount must be a quoted decimal", id="float"),
        pytest.param({"customer": "nobody"}, f'{WHERE}: unknown customer "nobody"', id="customer"),
        pytest.param({"funding": "gift"}, f"{WHERE}: funding must be one of", id="funding"),
        pytest.param({"expires": "90 days"}, f"{WHERE}: expires must be an ISO 8601", id="expires"),
        pytest.param(
            {"features": ["images"]},
            f'{WHERE}: features names unknown feature "images"',
            id="feature",
        ),
        pytest.param({"key": None}, "billing.credits[0]: key is required", id="no-key"),
        pytest.param({"priority": -1}, f"{WHERE}: priority must be at least 0", id="priority"),
        pytest.param({"colour": "red"}, f'{WHERE}: unknown field "colour"', id="unknown-key"),
    ],
)
def test_bad_credits_are_refused_naming_the_entry(changes: dict[str, Any], message: str) -> None:
    entry = {**GOOD, **changes}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(DeclarativeError) as raised:
        parse_document(document([entry]))
    assert message in str(raised.value)


def test_a_key_twice_for_one_customer_is_refused() -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(document([GOOD, {**GOOD, "amount": "30"}]))
    assert 'credit key "welcome-credit" of "acme" is already used' in str(raised.value)


def test_an_unknown_settlement_mode_is_refused() -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(document([], mode="prepaid"))
    assert "settlement_mode must be one of" in str(raised.value)
