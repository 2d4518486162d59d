"""The enforcement state in data-plane snapshots: content, determinism, version changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.catalog.types import EntitlementType
from controlplane.configsync.snapshot import balance_id, build_snapshot, entity_id
from controlplane.declarative import parse_document
from controlplane.entitlements.types import Balance, ConsumerAccess, EntitlementValue
from controlplane.errors import InvalidArgument

WALKTHROUGH = parse_document((Path(__file__).parent / "walkthrough.yaml").read_text()).gateway
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)


def value(
    *,
    balance: int = 100,
    feature: str = "all-tokens",
    soft: bool = False,
    meter: str = "llm_tokens",
) -> EntitlementValue:
    return EntitlementValue(
        customer="acme",
        subscription="sub-1",
        feature=feature,
        type=EntitlementType.METERED,
        has_access=soft or balance > 0,
        meter=meter,
        filters={"type": "output"},
        limit=500,
        usage_period="P1M",
        soft_limit=soft,
        balance=Balance(
            period_start=START,
            period_end=END,
            usage=500 - balance,
            balance=balance,
            overage=0,
            granted=500,
            expired=0,
            carried_overage=0,
        ),
    )


def access(
    *metered: EntitlementValue, subject: str = "acme-corp", has_access: bool = True
) -> ConsumerAccess:
    return ConsumerAccess(
        subject=subject, customer="acme", has_access=has_access, metered=tuple(metered)
    )


def test_no_entitlement_state_keeps_the_version_of_the_gateway_config() -> None:
    assert build_snapshot(WALKTHROUGH, ()).version == build_snapshot(WALKTHROUGH).version


def test_state_of_a_consumer() -> None:
    built = build_snapshot(WALKTHROUGH, [access(value(balance=42))])
    [state] = built.snapshot.consumer_entitlements
    assert state.consumer_id == entity_id("consumer", "acme-corp")
    assert (state.username, state.customer, state.has_access) == ("acme-corp", "acme", True)
    [metered] = state.metered
    assert (metered.feature, metered.balance, metered.has_access, metered.soft_limit) == (
        "all-tokens",
        42,
        True,
        False,
    )
    assert dict(metered.filters) == {"type": "output"} and metered.limit == 500
    assert metered.period_end_time.ToDatetime(tzinfo=UTC) == END
    assert metered.balance_id == balance_id(value())


def test_subjects_that_are_not_consumers_and_other_meters_are_left_out() -> None:
    built = build_snapshot(
        WALKTHROUGH,
        [access(value(), value(feature="x", meter="other")), access(subject="ghost")],
    )
    [state] = built.snapshot.consumer_entitlements
    assert [m.feature for m in state.metered] == ["all-tokens"]


def test_order_does_not_change_the_version() -> None:
    a, b = value(feature="a"), value(feature="b")
    assert (
        build_snapshot(WALKTHROUGH, [access(a, b)]).version
        == build_snapshot(WALKTHROUGH, [access(b, a)]).version
    )


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(access(value(balance=41)), id="balance"),
        pytest.param(access(value(), has_access=False), id="access"),
        pytest.param(access(value(soft=True)), id="soft-limit"),
        pytest.param(access(replace(value(), filters={})), id="filters"),
        pytest.param(
            access(replace(value(), balance=replace(value().balance, period_end=START))),
            id="period-end",
        ),
    ],
)
def test_a_state_change_changes_the_version(changed: ConsumerAccess) -> None:
    base = build_snapshot(WALKTHROUGH, [access(value(balance=42))]).version
    assert build_snapshot(WALKTHROUGH, [changed]).version != base


def test_usage_figures_the_data_plane_does_not_need_do_not_change_the_version() -> None:
    # Overage grows with every request under a soft limit; it is not sent, so it does not
    # push a snapshot to every data plane.
    soft = value(balance=0, soft=True)
    more = replace(soft, balance=replace(soft.balance, usage=10**6, overage=10**6))
    assert (
        build_snapshot(WALKTHROUGH, [access(soft)]).version
        == build_snapshot(WALKTHROUGH, [access(more)]).version
    )


def test_balance_slices_are_carried_only_with_entitlement_state_and_change_the_version() -> None:
    state = [access(value())]
    one, two, three = (build_snapshot(WALKTHROUGH, state, balance_slices=n) for n in (1, 2, 3))
    assert build_snapshot(WALKTHROUGH, state).snapshot.balance_slices == 0  # slicing off
    assert one.snapshot.balance_slices == 0  # one data plane: nothing to split
    assert one.version == build_snapshot(WALKTHROUGH, state).version
    assert (two.snapshot.balance_slices, three.snapshot.balance_slices) == (2, 3)
    # A data plane joining or leaving changes the version: the snapshot is pushed again.
    assert len({one.version, two.version, three.version}) == 3
    # Without entitlement state the count is left out: no push when data planes come and go.
    bare = build_snapshot(WALKTHROUGH, balance_slices=5)
    assert bare.snapshot.balance_slices == 0
    assert bare.version == build_snapshot(WALKTHROUGH).version


def test_negative_balance_slices_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="balance_slices must be >= 0"):
        build_snapshot(WALKTHROUGH, [access(value())], balance_slices=-1)
