"""The data plane's enforcement: compiled tables, local counters, task budgets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dataplane.admission.entitlements import (
    BadTaskHeaders,
    Enforcer,
    TaskBudget,
    UsageItem,
    compile_enforcement,
    money_slice,
    task_budget,
    token_slice,
)
from dataplane.proxy.compiler import CompileError, compile_snapshot
from meterline.dataplane.v1 import snapshot_pb2


def snapshot(
    *,
    balance: int = 100,
    filters: dict[str, str] | None = None,
    soft: bool = False,
    has_access: bool = True,
    prices: list[tuple[dict[str, str], str]] = (),
    budget: tuple[str, str] | None = None,
    slices: int = 0,
) -> snapshot_pb2.Snapshot:
    entries = []
    for consumer in ("c-1", "c-2"):  # two consumers of one customer: one balance
        entry = snapshot_pb2.ConsumerEntitlements(
            consumer_id=consumer,
            username=consumer,
            customer="acme",
            has_access=has_access,
            currency="USD",
        )
        entry.metered.add(
            balance_id="b-1",
            feature="tokens",
            filters=filters or {},
            balance=balance,
            soft_limit=soft,
            limit=100,
        )
        for price_filters, price in prices:
            entry.prices.add(feature="f", filters=price_filters, unit_price=price)
        if budget is not None:
            entry.budgets.add(budget_id="bud-1", amount=budget[0], spent=budget[1], hard=True)
        entries.append(entry)
    return snapshot_pb2.Snapshot(consumer_entitlements=entries, balance_slices=slices)


def items(input: int, output: int, *, status: int = 200, model: str = "gpt-4o-mini"):
    return [
        UsageItem(provider="openai", model=model, kind="input", status=status, tokens=input),
        UsageItem(provider="openai", model=model, kind="output", status=status, tokens=output),
    ]


class Acks:
    """The usage reporter's ACK count, as the test decides it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def admit(enforcer: Enforcer, consumer: str = "c-1", **kwargs):
    return enforcer.admit(consumer, provider="openai", model="gpt-4o-mini", task=None, **kwargs)


def record(enforcer: Enforcer, consumer: str, used, *, task: TaskBudget | None = None):
    enforcer.appended += len(used)  # what the gateway's counting sink does
    return enforcer.record(consumer_id=consumer, route_id="r", items=used, task=task)


def test_local_usage_counts_until_a_snapshot_after_its_ack_reflects_it() -> None:
    acks = Acks()
    enforcer = Enforcer(acked=acks)
    enforcer.apply(compile_enforcement(snapshot(balance=100)))
    record(enforcer, "c-1", items(40, 20))  # 60 of 100, on consumer 1
    assert admit(enforcer, "c-2") is None  # 40 left for consumer 2: the same balance
    record(enforcer, "c-2", items(30, 20))
    refusal = admit(enforcer)
    assert refusal is not None and refusal.code == "entitlement_exhausted"
    # A snapshot built before the usage was stored (nothing ACKed): still counted locally.
    enforcer.apply(compile_enforcement(snapshot(balance=100)))
    assert admit(enforcer) is not None
    assert enforcer.remaining("c-1", provider="openai", model="m", task=None)[0] == 0
    # ACKed, and a snapshot that reflects it: not counted twice.
    acks.count = 4
    enforcer.apply(compile_enforcement(snapshot(balance=0)))
    assert admit(enforcer) is not None
    enforcer.apply(compile_enforcement(snapshot(balance=30)))  # a grant of 30
    assert admit(enforcer) is None
    assert enforcer.remaining("c-1", provider="openai", model="m", task=None)[0] == 30


def test_only_matching_tokens_of_successful_requests_count() -> None:
    enforcer = Enforcer()
    enforcer.apply(
        compile_enforcement(snapshot(balance=50, filters={"type": "output", "model": "big"}))
    )
    record(enforcer, "c-1", items(1_000, 1_000, model="small"))  # other model
    record(enforcer, "c-1", items(1_000, 1_000, model="big", status=500))  # failed
    record(enforcer, "c-1", items(1_000, 49, model="big"))  # 49 output tokens
    assert enforcer.admit("c-1", provider="openai", model="big", task=None) is None
    # A request to another model cannot use the feature: never refused by it.
    record(enforcer, "c-1", items(0, 1, model="big"))
    assert enforcer.admit("c-1", provider="openai", model="big", task=None) is not None
    assert enforcer.admit("c-1", provider="openai", model="small", task=None) is None


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        pytest.param({"has_access": False}, "access_denied", id="no-subscription"),
        pytest.param({"balance": 0}, "entitlement_exhausted", id="exhausted"),
        pytest.param({"budget": ("1.00", "1.00")}, "budget_exceeded", id="budget-spent"),
    ],
)
def test_refusals(kwargs, code) -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(**kwargs)))
    refusal = admit(enforcer)
    assert refusal is not None and refusal.code == code
    assert admit(enforcer, "unknown-consumer") is None  # not restricted


def test_soft_limit_never_refuses() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance=0, soft=True)))
    assert admit(enforcer) is None


def test_prices_and_budget_spend() -> None:
    enforcer = Enforcer()
    enforcer.apply(
        compile_enforcement(
            snapshot(
                balance=10**9,
                prices=[({"type": "input"}, "0.001"), ({"type": "output"}, "0.002")],
                budget=("1", "0.70"),
            )
        )
    )
    figures = record(enforcer, "c-1", items(100, 50))
    assert figures.cost == Decimal("0.200")
    assert (figures.input_tokens, figures.output_tokens, figures.currency) == (100, 50, "USD")
    assert admit(enforcer) is None  # 1 - 0.70 - 0.20 = 0.10 left
    record(enforcer, "c-2", items(100, 0))  # 0.10 more on the same customer's budget
    refusal = admit(enforcer)
    assert refusal is not None and refusal.code == "budget_exceeded"
    # A failed request costs nothing.
    assert record(enforcer, "c-1", items(100, 50, status=502)).cost == 0


def test_task_budgets_are_bounded_in_memory() -> None:
    now = [0.0]
    enforcer = Enforcer(max_tasks=2, task_ttl_s=60, clock=lambda: now[0])
    enforcer.apply(compile_enforcement(snapshot(prices=[({}, "0.01")])))
    task = TaskBudget(task="t-1", budget=Decimal("0.5"))
    record(enforcer, "c-1", items(30, 20), task=task)  # 0.50: spent
    refusal = enforcer.admit("c-1", provider="openai", model="m", task=task)
    assert refusal is not None and refusal.code == "task_budget_exceeded"
    assert enforcer.admit("c-2", provider="openai", model="m", task=task) is None  # per consumer
    for name in ("t-2", "t-3"):
        record(enforcer, "c-1", items(1, 0), task=TaskBudget(task=name, budget=Decimal(1)))
    assert enforcer.tasks_tracked == 2  # least recently used forgotten first
    assert enforcer.task_spent("c-1", "t-1") is None
    now[0] = 61.0
    record(enforcer, "c-1", items(1, 0), task=TaskBudget(task="t-4", budget=Decimal(1)))
    assert enforcer.tasks_tracked == 1  # the others were unused for longer than the TTL


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param(
            [(b"x-meterline-task", b"run-1"), (b"x-meterline-task-budget", b"0.50")],
            TaskBudget(task="run-1", budget=Decimal("0.50")),
            id="task",
        ),
        pytest.param(
            [(b"x-meterline-task", b" run 2 "), (b"x-meterline-task-budget", b"0")],
            TaskBudget(task="run 2", budget=Decimal(0)),
            id="zero-budget",
        ),
    ],
)
def test_task_headers(headers, expected) -> None:
    assert task_budget(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"x-meterline-task-budget", b"1")], id="budget-without-task"),
        pytest.param([(b"x-meterline-task", b"t")], id="task-without-budget"),
        pytest.param([(b"x-meterline-task", b""), (b"x-meterline-task-budget", b"1")], id="empty"),
        pytest.param([(b"x-meterline-task", b"t"), (b"x-meterline-task-budget", b"-1")], id="neg"),
        pytest.param([(b"x-meterline-task", b"t"), (b"x-meterline-task-budget", b"1e9")], id="exp"),
        pytest.param([(b"x-meterline-task", b"t"), (b"x-meterline-task-budget", b"inf")], id="inf"),
        pytest.param([(b"x-meterline-task", b"t"), (b"x-meterline-task-budget", b"x")], id="text"),
        pytest.param(
            [(b"x-meterline-task", b"t" * 201), (b"x-meterline-task-budget", b"1")], id="long"
        ),
    ],
)
def test_bad_task_headers(headers) -> None:
    with pytest.raises(BadTaskHeaders):
        task_budget(headers)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        pytest.param(
            lambda s: s.consumer_entitlements[0].prices.add(unit_price="cheap"),
            "decimal",
            id="bad-price",
        ),
        pytest.param(
            lambda s: s.consumer_entitlements[0].prices.add(unit_price="-1"),
            "non-negative",
            id="negative-price",
        ),
        pytest.param(
            lambda s: s.consumer_entitlements[0].metered[0].filters.update({"region": "eu"}),
            "unknown filter",
            id="unknown-dimension",
        ),
        pytest.param(
            lambda s: s.consumer_entitlements[0].budgets.add(budget_id="b", amount="x", spent="0"),
            "budget amount",
            id="bad-budget",
        ),
    ],
)
def test_malformed_enforcement_state_is_rejected(change, needle) -> None:
    wire = snapshot()
    change(wire)
    with pytest.raises(CompileError, match=needle):
        compile_snapshot(wire, version="v1")


# -- balance slicing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "slices", "expected"),
    [
        pytest.param(100, 0, 100, id="off"),
        pytest.param(100, 1, 100, id="one-dataplane"),
        pytest.param(100, 2, 50, id="two-even"),
        pytest.param(101, 2, 51, id="two-odd-rounds-up"),
        pytest.param(100, 3, 34, id="three"),
        pytest.param(99, 3, 33, id="three-exact"),
        pytest.param(1, 3, 1, id="one-token-left-still-spendable"),
        pytest.param(2, 3, 1, id="fewer-tokens-than-dataplanes"),
        pytest.param(0, 3, 0, id="zero"),
        pytest.param(500_000, 7, 71_429, id="odd-large"),
    ],
)
def test_token_slice(balance: int, slices: int, expected: int) -> None:
    share = token_slice(balance, slices)
    assert share == expected
    n = max(slices, 1)
    # The slices cover the balance, exceeding it by less than one token per data plane.
    assert balance <= share * n <= balance + n - 1 or balance == 0 == share


@pytest.mark.parametrize(
    ("left", "slices", "expected"),
    [
        pytest.param("1.00", 0, "1.00", id="off"),
        pytest.param("1.00", 1, "1.00", id="one-dataplane"),
        pytest.param("1.00", 2, "0.5", id="two"),
        pytest.param("0.000003", 2, "0.0000015", id="odd-cents"),
        pytest.param("1", 3, "0.3333333333333333333333333333", id="three-rounds-down"),
        pytest.param("2", 3, "0.6666666666666666666666666666", id="three-never-up"),
        pytest.param("0", 3, "0", id="zero"),
        pytest.param("-0.25", 3, "-0.25", id="overspent-stays-negative"),
    ],
)
def test_money_slice(left: str, slices: int, expected: str) -> None:
    share = money_slice(Decimal(left), slices)
    assert share == Decimal(expected)
    assert isinstance(share, Decimal)
    if Decimal(left) > 0:
        assert 0 < share * max(slices, 1) <= Decimal(left)


def test_each_dataplane_admits_against_its_slice_until_a_snapshot_resplits() -> None:
    # Given two data planes sharing a balance of 100 (slices of 50).
    acks = Acks()
    enforcer = Enforcer(acked=acks)
    enforcer.apply(compile_enforcement(snapshot(balance=100, slices=2)))
    record(enforcer, "c-1", items(30, 19))  # 49 of its 50
    assert admit(enforcer) is None
    record(enforcer, "c-2", items(1, 0))  # 50: the slice is spent, though 50 are left
    refusal = admit(enforcer)
    assert refusal is not None and refusal.code == "entitlement_exhausted"
    # The figures still show the whole balance minus local usage.
    assert enforcer.remaining("c-1", provider="openai", model="m", task=None)[0] == 50
    # When the usage is ACKed and a snapshot re-splits the 50 left (the other data plane
    # spent 10 meanwhile): 40 left, a slice of 20.
    acks.count = 4
    enforcer.apply(compile_enforcement(snapshot(balance=40, slices=2)))
    assert admit(enforcer) is None
    record(enforcer, "c-1", items(20, 0))
    assert admit(enforcer) is not None
    # A balance of 0 refuses everywhere; a lone data plane (N = 1) gets the whole balance.
    acks.count = 6
    enforcer.apply(compile_enforcement(snapshot(balance=0, slices=2)))
    assert admit(enforcer) is not None
    enforcer.apply(compile_enforcement(snapshot(balance=20, slices=1)))
    record(enforcer, "c-1", items(19, 0))
    assert admit(enforcer) is None


def test_one_dataplane_behaves_as_without_slicing() -> None:
    for slices in (0, 1):
        enforcer = Enforcer()
        enforcer.apply(compile_enforcement(snapshot(balance=100, slices=slices)))
        record(enforcer, "c-1", items(60, 39))
        assert admit(enforcer) is None  # 1 left
        record(enforcer, "c-1", items(1, 0))
        assert admit(enforcer) is not None


def test_soft_limits_are_not_sliced() -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(snapshot(balance=100, soft=True, slices=4)))
    record(enforcer, "c-1", items(500, 0))
    assert admit(enforcer) is None
    assert enforcer.remaining("c-1", provider="openai", model="m", task=None)[0] == 0


def test_hard_budget_admits_against_its_money_slice() -> None:
    # Given a budget of 1.00 with 0.40 spent, three data planes: a slice of 0.20 each.
    enforcer = Enforcer()
    enforcer.apply(
        compile_enforcement(
            snapshot(
                balance=10**9,
                prices=[({}, "0.01")],
                budget=("1.00", "0.40"),
                slices=3,
            )
        )
    )
    record(enforcer, "c-1", items(19, 0))  # 0.19
    assert admit(enforcer) is None
    record(enforcer, "c-1", items(1, 0))  # 0.20: the slice is spent
    refusal = admit(enforcer)
    assert refusal is not None and refusal.code == "budget_exceeded"
    assert enforcer.remaining("c-1", provider="openai", model="m", task=None)[1] == Decimal("0.40")
