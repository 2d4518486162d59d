"""Prepaid credits at the data plane: compile, burn-down, slicing, refusal, headers."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from dataplane.admission.cost import admit_credits
from dataplane.admission.entitlements import Enforcer, UsageItem, compile_enforcement
from dataplane.errors import CompileError, Rejection
from dataplane.translate.anthropic_format import anthropic_rejection_body
from dataplane.translate.openai_format import rejection_body
from meterline.dataplane.v1 import snapshot_pb2

PRICE = "0.001"  # per token


def snapshot(
    *,
    balance: str | None = "1",
    mode: str = "credit_only",
    feature_balances: dict[str, str] | None = None,
    slices: int = 0,
    price_filters: dict[str, str] | None = None,
    budget: tuple[str, str] | None = None,
) -> snapshot_pb2.Snapshot:
    entries = []
    for consumer in ("c-1", "c-2"):  # two consumers of one customer: one credit balance
        entry = snapshot_pb2.ConsumerEntitlements(
            consumer_id=consumer, username=consumer, customer="acme", has_access=True,
            currency="USD",
        )  # fmt: skip
        entry.prices.add(
            feature="tokens",
            filters=price_filters or {},
            unit_price=PRICE,
            settlement_mode=mode,
        )
        if balance is not None:
            entry.credits.credit_id = "cr-acme"
            entry.credits.balance = balance
            for feature, left in (feature_balances or {}).items():
                entry.credits.feature_balances[feature] = left
        if budget is not None:
            entry.budgets.add(budget_id="bud-1", amount=budget[0], spent=budget[1], hard=True)
        entries.append(entry)
    return snapshot_pb2.Snapshot(consumer_entitlements=entries, balance_slices=slices)


def used(tokens: int, *, model: str = "gpt-4o-mini") -> list[UsageItem]:
    return [UsageItem(provider="openai", model=model, kind="input", status=200, tokens=tokens)]


def record(enforcer: Enforcer, consumer: str, items: list[UsageItem]):
    enforcer.appended += len(items)
    return enforcer.record(consumer_id=consumer, route_id="r", items=items, task=None)


def refused(enforcer: Enforcer, consumer: str = "c-1", model: str = "gpt-4o-mini") -> str | None:
    refusal = enforcer.admit_credits(consumer, provider="openai", model=model)
    return None if refusal is None else refusal.code


class Acks:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def test_credit_only_burns_down_and_refuses_at_zero_across_consumers() -> None:
    acks = Acks()
    enforcer = Enforcer(acked=acks)
    enforcer.apply(compile_enforcement(snapshot(balance="1")))  # $1 = 1000 tokens
    assert refused(enforcer) is None
    figures = record(enforcer, "c-1", used(600))
    assert figures.cost == Decimal("0.6")
    assert enforcer.credits_left("c-2") == Decimal("0.4")  # one balance for both consumers
    assert refused(enforcer, "c-2") is None
    record(enforcer, "c-2", used(400))
    assert enforcer.credits_left("c-1") == 0
    assert refused(enforcer, "c-1") == refused(enforcer, "c-2") == "insufficient_credits"
    # Over the balance (a request in flight when it ran out): shown as 0, still refused.
    record(enforcer, "c-1", used(5))
    assert enforcer.credits_left("c-1") == 0
    # A snapshot reflecting the ACKed usage and a top-up of $2: 2 left, admitted again.
    acks.count = enforcer.appended
    enforcer.apply(compile_enforcement(snapshot(balance="2")))
    assert enforcer.credits_left("c-1") == Decimal(2)
    assert refused(enforcer) is None


def test_credit_then_invoice_never_refuses_but_reports_the_balance() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance="0.5", mode="credit_then_invoice")))
    record(enforcer, "c-1", used(2000))  # $2 of $0.50
    assert refused(enforcer) is None
    assert enforcer.credits_left("c-1") == 0
    headers = dict(record(enforcer, "c-1", used(1)).headers())
    assert b"x-meterline-credits-remaining" not in headers  # record() gives no remaining figures


def test_no_credits_costs_one_lookup_and_reports_nothing() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance=None, mode="")))
    policy = enforcer.table.consumers["c-1"]
    assert policy.credits is None
    assert policy.money_ids == ()
    assert refused(enforcer) is None
    assert enforcer.credits_left("c-1") is None
    assert enforcer.credits_left(None) is None


def test_a_credit_only_price_without_credit_state_has_nothing_to_pay_it() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance=None)))
    assert refused(enforcer) == "insufficient_credits"


def test_slicing_admits_against_a_share_rounded_down() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance="1", slices=3)))
    rule = enforcer.table.consumers["c-1"].credits.only[0]  # type: ignore[union-attr]
    assert rule.allowance == Decimal(1) / Decimal(3)
    assert rule.allowance * 3 <= 1
    record(enforcer, "c-1", used(333))  # 0.333 < 0.3333...
    assert refused(enforcer) is None
    record(enforcer, "c-1", used(1))
    assert refused(enforcer) == "insufficient_credits"
    # The header shows the whole balance minus this data plane's usage, not the slice.
    assert enforcer.credits_left("c-1") == Decimal("0.666")


def test_scoped_grants_feature_balance_and_filters() -> None:
    # Credits that may pay "tokens" are 0.1 of the 5 (the rest is scoped to other features).
    enforcer = Enforcer()
    enforcer.apply(
        compile_enforcement(
            snapshot(
                balance="5", feature_balances={"tokens": "0.1"}, price_filters={"model": "big"}
            )
        )
    )
    record(enforcer, "c-1", used(100, model="big"))
    assert refused(enforcer, model="big") == "insufficient_credits"
    # A model the credit_only feature does not price is not refused for credits.
    assert refused(enforcer, model="gpt-4o-mini") is None
    assert enforcer.credits_left("c-1") == Decimal("4.9")


def test_budgets_and_credits_count_the_same_cost() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance="1", budget=("10", "0"))))
    record(enforcer, "c-1", used(100))
    _, money = enforcer.remaining("c-1", provider="openai", model="gpt-4o-mini", task=None)
    assert money == Decimal("9.9")
    assert enforcer.credits_left("c-1") == Decimal("0.9")


def test_bad_credit_values_do_not_compile() -> None:
    with pytest.raises(CompileError, match="settlement_mode"):
        compile_enforcement(snapshot(mode="credits_maybe"))
    with pytest.raises(CompileError, match="credit balance"):
        compile_enforcement(snapshot(balance="-1"))
    with pytest.raises(CompileError, match="credit balance of tokens"):
        compile_enforcement(snapshot(feature_balances={"tokens": "NaN"}))


def test_the_stage_raises_a_402_in_each_clients_shape() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance="0")))
    with pytest.raises(Rejection) as caught:
        admit_credits(enforcer, consumer_id="c-1", provider="openai", model="gpt-4o-mini")
    rejection = caught.value
    assert rejection.status == 402
    assert rejection.code == "insufficient_credits"
    openai_error = orjson.loads(rejection_body(rejection))["error"]
    assert openai_error["type"] == "insufficient_quota"
    assert openai_error["code"] == "insufficient_credits"
    anthropic_error = orjson.loads(anthropic_rejection_body(rejection))
    assert anthropic_error["type"] == "error"
    assert anthropic_error["error"]["type"] == "billing_error"
    assert anthropic_error["error"]["code"] == "insufficient_credits"
