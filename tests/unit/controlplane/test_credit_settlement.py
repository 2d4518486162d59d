"""The pure credit application: which grant pays which charge, table-tested."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane.catalog.types import SettlementMode
from controlplane.credits.apply import AvailableCredit, DueCharge, settle, spending_order

D = Decimal
JAN = datetime(2027, 1, 1, tzinfo=UTC)
FEB = datetime(2027, 2, 1, tzinfo=UTC)
MAR = datetime(2027, 3, 1, tzinfo=UTC)
ONLY = SettlementMode.CREDIT_ONLY


def credit(
    id: str,
    remaining: str,
    *,
    priority: int = 10,
    expires: datetime | None = None,
    effective: datetime = JAN,
    features: tuple[str, ...] = (),
) -> AvailableCredit:
    return AvailableCredit(
        grant_id=id,
        remaining=D(remaining),
        priority=priority,
        effective_time=effective,
        expire_time=expires,
        features=frozenset(features),
    )


def charge(
    card: str,
    amount: str,
    *,
    feature: str | None = "",
    mode: SettlementMode = SettlementMode.CREDIT_THEN_INVOICE,
) -> DueCharge:
    return DueCharge(
        subscription="s1",
        rate_card=card,
        feature=card if feature == "" else feature,
        amount=D(amount),
        settlement_mode=mode,
    )


CASES = [
    pytest.param(
        [credit("a", "5")],
        [charge("tokens", "3")],
        {"a": D("3")},
        {"tokens": D("0")},
        id="one grant pays less than it holds",
    ),
    pytest.param(
        [credit("a", "5")],
        [charge("tokens", "8.25")],
        {"a": D("5")},
        {"tokens": D("3.25")},
        id="one grant runs out: the rest is left to invoice",
    ),
    pytest.param(
        [credit("low", "4", priority=20), credit("high", "4", priority=1)],
        [charge("tokens", "6")],
        {"high": D("4"), "low": D("2")},
        {"tokens": D("0")},
        id="lower priority number first",
    ),
    pytest.param(
        [credit("later", "4", expires=MAR), credit("sooner", "4", expires=FEB)],
        [charge("tokens", "5")],
        {"sooner": D("4"), "later": D("1")},
        {"tokens": D("0")},
        id="same priority: earlier expiry first",
    ),
    pytest.param(
        [credit("never", "4"), credit("expiring", "4", expires=MAR)],
        [charge("tokens", "5")],
        {"expiring": D("4"), "never": D("1")},
        {"tokens": D("0")},
        id="never-expiring grants last",
    ),
    pytest.param(
        [credit("never", "4", priority=0), credit("expiring", "4", priority=5, expires=FEB)],
        [charge("tokens", "5")],
        {"never": D("4"), "expiring": D("1")},
        {"tokens": D("0")},
        id="priority beats expiry",
    ),
    pytest.param(
        [credit("img", "10", features=("images",))],
        [charge("tokens", "3"), charge("images", "2")],
        {"img": D("2")},
        {"tokens": D("3"), "images": D("0")},
        id="a grant scoped to a feature never pays another",
    ),
    pytest.param(
        [credit("tok", "10", features=("tokens",))],
        [charge("platform", "9", feature=None)],
        {},
        {"platform": D("9")},
        id="a scoped grant never pays a flat fee without feature",
    ),
    pytest.param(
        [credit("all", "10")],
        [charge("platform", "9", feature=None), charge("tokens", "3")],
        {"all": D("10")},
        {"platform": D("0"), "tokens": D("2")},
        id="an unscoped grant pays flat fees too, in invoice order",
    ),
    pytest.param(
        [credit("all", "5")],
        [charge("tokens", "4"), charge("images", "4", mode=ONLY)],
        {"all": D("5")},
        {"tokens": D("3"), "images": D("0")},
        id="credit_only charges are paid first",
    ),
    pytest.param(
        [credit("all", "5")],
        [charge("tokens", "-2"), charge("images", "0")],
        {},
        {"tokens": D("0"), "images": D("0")},
        id="a net credit or zero needs no credit",
    ),
    pytest.param(
        [credit("a", "0.000001")],
        [charge("tokens", "0.000003")],
        {"a": D("0.000001")},
        {"tokens": D("0.000002")},
        id="amounts stay exact",
    ),
    pytest.param(
        [],
        [charge("tokens", "7", mode=ONLY)],
        {},
        {"tokens": D("7")},
        id="no credits: credit_only left uncovered",
    ),
]


@pytest.mark.parametrize(("credits", "charges", "used", "left"), CASES)
def test_settle(
    credits: list[AvailableCredit],
    charges: list[DueCharge],
    used: dict[str, Decimal],
    left: dict[str, Decimal],
) -> None:
    result = settle(credits, charges)
    assert result.used_by_grant() == used
    assert {c.rate_card: amount for c, amount in result.left} == left
    # Nothing is created or lost: what was due is what credits paid plus what is left.
    due = sum((max(c.amount, D(0)) for c in charges), D(0))
    assert sum(used.values(), D(0)) + sum(left.values(), D(0)) == due
    # No grant pays more than it holds.
    for c in credits:
        assert used.get(c.grant_id, D(0)) <= c.remaining


def test_uncovered_lists_only_credit_only_charges_with_a_rest() -> None:
    result = settle(
        [credit("a", "1")],
        [charge("tokens", "4"), charge("images", "3", mode=ONLY), charge("calls", "1", mode=ONLY)],
    )
    # tokens (credit_then_invoice) is left to invoice, not uncovered; credit_only charges are
    # paid in invoice order, so images took the credit and calls got none.
    assert [(c.rate_card, amount) for c, amount in result.uncovered()] == [
        ("images", D("2")),
        ("calls", D("1")),
    ]
    assert result.used_by_grant() == {"a": D("1")}
    assert [u.rate_card for u in result.uses] == ["images"]


def test_spending_order_breaks_ties_by_effective_time_then_id() -> None:
    older = credit("b", "1", effective=JAN)
    newer = credit("a", "1", effective=FEB)
    same = credit("c", "1", effective=JAN)
    assert sorted([newer, same, older], key=spending_order) == [older, same, newer]
