"""The pure balance engine: worked examples and properties of the burn-down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.catalog.types import Entitlement, EntitlementType
from controlplane.entitlements import engine
from controlplane.entitlements.types import Balance, Grant

START = datetime(2026, 1, 31, tzinfo=UTC)  # month-end anchor: periods 31 Jan, 28 Feb, 31 Mar


def day(n: float) -> datetime:
    return START + timedelta(days=n)


def metered(limit: int, *, soft: bool = False, preserve: bool = False) -> Entitlement:
    return Entitlement(
        type=EntitlementType.METERED,
        limit=limit,
        usage_period="P1M",
        soft_limit=soft,
        preserve_overage_at_reset=preserve,
    )


def grant(id: str, amount: int, effective: float, **kw: object) -> Grant:
    return Grant(
        id=id, customer="acme", feature="tokens", amount=amount, effective_time=day(effective), **kw
    )  # type: ignore[arg-type]


def run(
    entitlement: Entitlement,
    events: list[tuple[float, int]],
    at: float,
    grants: tuple[Grant, ...] = (),
) -> Balance:
    """Evaluate at day ``at`` with usage events (day, tokens); sums segments like storage."""
    line = engine.timeline(entitlement=entitlement, anchor=START, grants=grants, at=day(at))
    usage = [
        sum(t for when, t in events if start <= day(when) < end) for start, end in line.segments()
    ]
    return engine.evaluate(
        entitlement=entitlement, anchor=START, grants=grants, at=day(at), line=line, usage=usage
    )


def summary(b: Balance) -> tuple[int, int, int, int, int]:
    return (b.usage, b.balance, b.overage, b.granted, b.carried_overage)


CASES = [
    pytest.param(metered(500_000), [], 1, (), (0, 500_000, 0, 500_000, 0), id="fresh"),
    pytest.param(
        metered(500_000),
        [(1, 200_000), (2, 100_000)],
        3,
        (),
        (300_000, 200_000, 0, 500_000, 0),
        id="partly-used",
    ),
    pytest.param(
        metered(500_000), [(1, 600_000)], 3, (), (600_000, 0, 100_000, 500_000, 0), id="overage"
    ),
    pytest.param(
        metered(500_000),
        [(1, 600_000)],
        30,
        (),
        (0, 500_000, 0, 500_000, 0),
        id="reset-next-period-drops-overage",
    ),
    pytest.param(
        metered(500_000, preserve=True),
        [(1, 600_000)],
        30,
        (),
        (0, 400_000, 0, 500_000, 100_000),
        id="preserve-overage-at-reset",
    ),
    pytest.param(
        metered(500_000, preserve=True),
        [(1, 1_600_000)],
        30,
        (),
        (0, 0, 600_000, 500_000, 1_100_000),
        id="preserved-overage-beyond-limit",
    ),
    pytest.param(
        metered(500_000, preserve=True),
        [(-1, 900_000)],
        30,
        (),
        (0, 500_000, 0, 500_000, 0),
        id="usage-before-start-ignored",
    ),
    pytest.param(
        metered(100),
        [(1, 150)],
        3,
        (grant("g", 100, 2),),
        (150, 50, 0, 200, 0),
        id="grant-pays-overage-first",
    ),
    pytest.param(
        metered(100),
        [(1, 50), (3, 100)],
        4,
        (grant("g", 100, 2),),
        (150, 50, 0, 200, 0),
        id="limit-burns-before-grant",
    ),
    pytest.param(
        metered(100),
        [(1, 150)],
        3,
        (grant("g", 100, 5),),
        (150, 0, 50, 100, 0),
        id="future-grant-not-yet",
    ),
    pytest.param(
        metered(100),
        [(1, 50)],
        32,
        (grant("g", 100, 0),),
        (0, 200, 0, 200, 0),
        id="one-off-grant-kept-across-reset",
    ),
    pytest.param(
        metered(100),
        [(1, 150)],
        32,
        (grant("g", 100, 0),),
        (0, 150, 0, 150, 0),
        id="one-off-grant-remaining-carried",
    ),
    pytest.param(
        metered(100),
        [(1, 150)],
        32,
        (grant("g", 100, 0, expiration_time=day(20)),),
        (0, 100, 0, 100, 0),
        id="expired-grant-lost",
    ),
    pytest.param(
        metered(100),
        [(1, 50), (3, 100)],
        4,
        (grant("g", 100, 0, void_time=day(2)),),
        (150, 0, 50, 200, 0),
        id="voided-grant-lost",
    ),
    pytest.param(
        metered(0),
        [(1, 30)],
        12,
        (grant("g", 100, 0, recurrence_interval="P7D"),),
        (30, 100, 0, 200, 0),
        id="recurring-grant-reset-weekly",
    ),
    pytest.param(
        metered(100),
        [(1, 250)],
        3,
        (
            grant("late", 100, 0, expiration_time=day(60)),
            grant("soon", 100, 0, expiration_time=day(10)),
        ),
        (250, 50, 0, 300, 0),
        id="burn-sooner-expiry-first",
    ),
]


@pytest.mark.parametrize(("entitlement", "events", "at", "grants", "expected"), CASES)
def test_worked_examples(
    entitlement: Entitlement,
    events: list[tuple[float, int]],
    at: float,
    grants: tuple[Grant, ...],
    expected: tuple[int, int, int, int, int],
) -> None:
    assert summary(run(entitlement, events, at, grants)) == expected


def test_burn_down_order_priority_then_expiry() -> None:
    # Given a low-priority grant expiring soon and a high-priority one expiring late,
    # when 150 tokens are used past the limit, the high-priority grant is burnt first,
    # so the soon-expiring one keeps its balance until it expires.
    grants = (
        grant("a-low", 100, 0, priority=5, expiration_time=day(5)),
        grant("b-high", 200, 0, priority=1, expiration_time=day(25)),
    )
    before = run(metered(0), [(1, 150)], 3, grants)
    assert (before.balance, before.expired) == (150, 0)
    after = run(metered(0), [(1, 150)], 6, grants)  # a-low expired with its 100 unused
    assert (after.balance, after.expired) == (50, 100)


def test_period_boundaries_follow_subscription_start() -> None:
    b = run(metered(10), [], 29)
    assert (b.period_start, b.period_end) == (
        datetime(2026, 2, 28, tzinfo=UTC),
        datetime(2026, 3, 31, tzinfo=UTC),
    )


def test_access() -> None:
    hard, soft = metered(100), metered(100, soft=True)
    assert engine.metered_access(hard, run(hard, [(1, 99)], 2))
    assert not engine.metered_access(hard, run(hard, [(1, 100)], 2))
    assert engine.metered_access(soft, run(soft, [(1, 1000)], 2))
    assert not engine.metered_access(metered(0), run(metered(0), [], 2))


events_st = st.lists(st.tuples(st.floats(-5, 95), st.integers(0, 300)), max_size=12)
grants_st = st.lists(
    st.builds(
        lambda i, amount, eff, life, prio, rec: grant(
            f"g{i}",
            amount,
            eff,
            priority=prio,
            expiration_time=day(eff + life) if life else None,
            recurrence_interval=rec,
        ),
        st.integers(0, 10**6),
        st.integers(1, 300),
        st.floats(-10, 90),
        st.one_of(st.none(), st.floats(0.5, 60)),
        st.integers(0, 3),
        st.sampled_from([None, None, "P10D"]),
    ),
    max_size=4,
    unique_by=lambda g: g.id,
)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(0, 500),
    soft=st.booleans(),
    preserve=st.booleans(),
    events=events_st,
    grants=grants_st,
    at=st.floats(0, 95),
)
def test_properties(
    limit: int,
    soft: bool,
    preserve: bool,
    events: list[tuple[float, int]],
    grants: list[Grant],
    at: float,
) -> None:
    entitlement = metered(limit, soft=soft, preserve=preserve)
    b = run(entitlement, events, at, tuple(grants))
    # Conservation: what is left minus what nothing covered is what was available minus
    # what was used, lost to expiry and carried over.
    assert b.balance - b.overage == b.granted - b.expired - b.usage - b.carried_overage
    assert b.balance >= 0 and b.overage >= 0 and b.balance * b.overage == 0
    assert b.usage == sum(t for when, t in events if b.period_start <= day(when) < b.period_end)
    assert b.period_start <= day(at) < b.period_end
    if soft:
        assert engine.metered_access(entitlement, b)
    if not grants and not preserve:
        assert b.balance == max(0, limit - b.usage) and b.overage == max(0, b.usage - limit)
    if not preserve:
        assert b.carried_overage == 0


@settings(max_examples=100, deadline=None)
@given(events=events_st, grants=grants_st, at=st.floats(0, 95))
def test_grants_never_reduce_balance(
    events: list[tuple[float, int]], grants: list[Grant], at: float
) -> None:
    without = run(metered(100), events, at)
    with_grants = run(metered(100), events, at, tuple(grants))
    assert with_grants.balance - with_grants.overage >= without.balance - without.overage


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(0, 500), events=events_st, grants=grants_st, at=st.floats(0, 95))
def test_shortened_replay_equals_full_replay(
    limit: int, events: list[tuple[float, int]], grants: list[Grant], at: float
) -> None:
    """Starting the replay late (the current period, or the oldest grant that matters) gives
    the same balance as replaying everything from the subscription start."""
    entitlement = metered(limit)
    full = engine.timeline(
        entitlement=metered(limit, preserve=True), anchor=START, grants=grants, at=day(at)
    )
    usage = [
        sum(t for when, t in events if start <= day(when) < end) for start, end in full.segments()
    ]
    reference = engine.evaluate(
        entitlement=entitlement, anchor=START, grants=grants, at=day(at), line=full, usage=usage
    )
    assert run(entitlement, events, at, tuple(grants)) == reference
