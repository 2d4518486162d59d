"""Recharge rules, credit alerts and the balance outlook over the real gRPC server (SQLite and
PostgreSQL): bad input is INVALID_ARGUMENT (or NOT_FOUND) and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from controlplane.credits import jobs
from controlplane.notifications import storage as notifications
from controlplane.notifications.types import Channel
from meterline.admin.v1 import credits_pb2, credits_pb2_grpc

from .conftest import T0, Harness
from .test_credits_api import grant, setup

RULE_NAME = "customers/acme/creditRechargeRule"
THRESHOLD = credits_pb2.CREDIT_RECHARGE_MODE_THRESHOLD
TARGET = credits_pb2.CREDIT_RECHARGE_MODE_TARGET


@pytest.fixture
async def credits(harness: Harness) -> AsyncIterator[credits_pb2_grpc.CreditServiceStub]:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        yield credits_pb2_grpc.CreditServiceStub(channel)


def rule(**fields: object) -> credits_pb2.UpdateCreditRechargeRuleRequest:
    values: dict[str, object] = {"name": RULE_NAME, "mode": THRESHOLD, "threshold": "5"}
    values.update(fields)
    return credits_pb2.UpdateCreditRechargeRuleRequest(
        credit_recharge_rule=credits_pb2.CreditRechargeRule(**values),  # type: ignore[arg-type]
        allow_missing=True,
    )


async def test_rule_set_get_replace_delete(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    await setup(harness)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await credits.GetCreditRechargeRule(
            credits_pb2.GetCreditRechargeRuleRequest(name=RULE_NAME)
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    made = await credits.UpdateCreditRechargeRule(rule(amount="20", max_count_per_period=2))
    assert (made.mode, made.threshold, made.amount, made.currency) == (THRESHOLD, "5", "20", "USD")
    assert made.max_count_per_period == 2
    replaced = await credits.UpdateCreditRechargeRule(
        rule(mode=TARGET, target="50", minimum="10", maximum="40")
    )
    got = await credits.GetCreditRechargeRule(
        credits_pb2.GetCreditRechargeRuleRequest(name=RULE_NAME)
    )
    assert got == replaced
    assert (got.mode, got.target, got.amount, got.max_count_per_period) == (TARGET, "50", "0", 0)
    await credits.DeleteCreditRechargeRule(
        credits_pb2.DeleteCreditRechargeRuleRequest(name=RULE_NAME)
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await credits.DeleteCreditRechargeRule(
            credits_pb2.DeleteCreditRechargeRuleRequest(name=RULE_NAME)
        )
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        pytest.param({"amount": "-20"}, "INVALID_ARGUMENT", "must not be negative", id="negative"),
        pytest.param(
            {"mode": TARGET, "target": "50", "minimum": "30", "maximum": "20"},
            "INVALID_ARGUMENT",
            "minimum 30 is above its maximum 20",
            id="min-above-max",
        ),
        pytest.param(
            {"amount": "20", "currency": "EUR"},
            "INVALID_ARGUMENT",
            "'EUR' is not the currency of customer 'acme'",
            id="wrong-currency",
        ),
        pytest.param({"amount": "abc"}, "INVALID_ARGUMENT", "decimal string", id="not-a-number"),
        pytest.param({"amount": "20", "mode": 0}, "INVALID_ARGUMENT", "mode", id="no-mode"),
        pytest.param(
            {"amount": "20", "name": "customers/ghost/creditRechargeRule"},
            "NOT_FOUND",
            "ghost",
            id="unknown-customer",
        ),
    ],
)
async def test_bad_rule_refused_and_nothing_changed(
    harness: Harness,
    credits: credits_pb2_grpc.CreditServiceStub,
    fields: dict[str, object],
    code: str,
    message: str,
) -> None:
    await setup(harness)
    before = await credits.UpdateCreditRechargeRule(rule(amount="20"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await credits.UpdateCreditRechargeRule(rule(**fields))
    assert refused.value.code().name == code
    assert message in str(refused.value.details())
    after = await credits.GetCreditRechargeRule(
        credits_pb2.GetCreditRechargeRuleRequest(name=RULE_NAME)
    )
    assert after == before


async def test_alerts_create_list_delete(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    await setup(harness)
    with harness.cp.db.begin() as conn:
        notifications.insert_channel(
            conn,
            Channel(key="ops", url="https://hooks.example.com/x", signing_secret="s" * 20),
            now=T0,
        )
    request = credits_pb2.CreateCreditAlertRequest(
        parent="customers/acme",
        credit_alert=credits_pb2.CreditAlert(
            key="low", channel="ops", percents=["20", "50"], amounts=["5"]
        ),
    )
    made = await credits.CreateCreditAlert(request)
    assert (made.name, list(made.percents), list(made.amounts)) == (
        "customers/acme/creditAlerts/low",
        ["50", "20"],
        ["5"],
    )
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await credits.CreateCreditAlert(request)
    assert twice.value.code() is grpc.StatusCode.ALREADY_EXISTS
    for bad, message in (
        (credits_pb2.CreditAlert(key="x", channel="nowhere", amounts=["5"]), "does not exist"),
        (credits_pb2.CreditAlert(key="y", channel="ops", percents=["150"]), "at most 100"),
        (credits_pb2.CreditAlert(key="z", channel="ops", amounts=["-1"]), "must not be negative"),
        (credits_pb2.CreditAlert(key="w", channel="ops"), "needs percents or amounts"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await credits.CreateCreditAlert(
                credits_pb2.CreateCreditAlertRequest(parent="customers/acme", credit_alert=bad)
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(refused.value.details())
    listed = await credits.ListCreditAlerts(
        credits_pb2.ListCreditAlertsRequest(parent="customers/acme")
    )
    assert [a.key for a in listed.credit_alerts] == ["low"]
    await credits.DeleteCreditAlert(
        credits_pb2.DeleteCreditAlertRequest(name="customers/acme/creditAlerts/low")
    )
    listed = await credits.ListCreditAlerts(
        credits_pb2.ListCreditAlertsRequest(parent="customers/acme")
    )
    assert list(listed.credit_alerts) == []


async def test_balance_reports_burn_rate_and_run_out(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    from .test_credit_recharge import event

    await setup(harness)
    await grant(credits, "40")  # live 30.00 (the 10.00 flat fee)
    request = credits_pb2.GetCreditBalanceRequest(customer="customers/acme", burn_window_days=3)
    before = await credits.GetCreditBalance(request)
    assert (before.live, before.burn_per_day, before.HasField("run_out_time")) == (
        "30.00",
        "",
        False,
    )
    jobs.run(harness.cp.db, now=T0)
    harness.clock.set(T0 + timedelta(hours=12))
    from controlplane.usage import storage as usage_storage

    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(100)], ingest_time=T0)  # 2.00
    found = await credits.GetCreditBalance(request)
    # 2.00 in half a day: 4.00 a day; 28.00 left: 7 days.
    assert (found.live, found.pending, found.spent_in_window, found.burn_per_day) == (
        "28.00",
        "12.00",
        "2.00",
        "4.000000",
    )
    assert found.burn_window_days == 3
    assert found.burn_window_start.ToDatetime().isoformat() == "2026-11-01T12:00:00"
    assert found.run_out_time.ToDatetime().isoformat() == "2026-11-09T00:00:00"
