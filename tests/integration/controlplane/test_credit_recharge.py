"""Auto-recharge, credit alerts and the burn rate, on SQLite and PostgreSQL.

Plan "prepaid" (test_credits_api): a flat 10.00 fee and output tokens at 0.02 (credit_only).
A 20.00 grant therefore leaves a live balance of 10.00 before any usage.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from controlplane.api.convert import to_timestamp
from controlplane.credits import alerts, jobs, outlook, recharge
from controlplane.credits import recharge_storage as store
from controlplane.credits.types import CreditAlert, RechargeMode, RechargeRule
from controlplane.errors import InvalidArgument, NotFound
from controlplane.invoicing import lifecycle
from controlplane.invoicing import storage as invoices
from controlplane.invoicing.types import InvoiceState
from controlplane.notifications import storage as notifications
from controlplane.notifications.types import Channel
from controlplane.storage import schema as s
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.dataplane.v1 import usage_pb2

from .conftest import T0, Harness
from .test_credits_api import setup

D = Decimal
_ids = itertools.count()


def event(tokens: int, *, at_minutes: int = 1) -> UsageEvent:
    return UsageEvent(
        id=f"burn-{next(_ids)}",
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=T0 + timedelta(minutes=at_minutes),
        provider="openai",
        model="gpt-4o",
        token_type=TokenType.OUTPUT,
        tokens=tokens,
        status_code=200,
    )


def later(harness: Harness, delta: timedelta) -> None:
    harness.clock.set(harness.clock.now() + delta)


def top_ups(harness: Harness) -> list[invoices.InvoiceRow]:
    with harness.cp.db.begin() as conn:
        return [
            row
            for row in invoices.list_invoice_rows(conn, customer="acme", top_ups=True)
            if row.kind == invoices.TOP_UP_KIND
        ]


def grant_promo(harness: Harness, amount: str, key: str) -> None:
    from controlplane.credits import service
    from controlplane.credits.types import CreditGrant, Funding

    with harness.cp.db.begin() as conn:
        service.create_grant(
            conn,
            CreditGrant(
                id="",
                customer="acme",
                amount=D(amount),
                currency="",
                funding=Funding.PROMOTIONAL,
                priority=0,
                effective_time=harness.clock.now(),
                expire_time=None,
                features=(),
                key=key,
            ),
            now=harness.clock.now(),
        )


def set_rule(harness: Harness, **fields: object) -> RechargeRule:
    rule = RechargeRule(customer="acme", **fields)  # type: ignore[arg-type]
    with harness.cp.db.begin() as conn:
        return recharge.set_rule(conn, rule, now=harness.clock.now())


def live(harness: Harness) -> Decimal:
    from controlplane.credits import service

    with harness.cp.db.begin() as conn:
        return service.balance(conn, customer="acme", at=harness.clock.now()).live


def pay(harness: Harness, invoice_id: str, state: InvoiceState = InvoiceState.PAID) -> None:
    with harness.cp.db.begin() as conn:
        lifecycle.set_payment_state(conn, id=invoice_id, state=state, now=harness.clock.now())


async def test_auto_recharge_fires_once_under_concurrent_burn(harness: Harness) -> None:
    # Given: 20.00 of credits (live 10.00) and "below 5.00: buy 20.00"
    await setup(harness)
    grant_promo(harness, "20", "welcome")
    set_rule(harness, mode=RechargeMode.THRESHOLD, threshold=D("5"), amount=D("20"))
    later(harness, timedelta(hours=1))
    assert live(harness) == D("10.00")

    # When: eight data planes stream a batch each at once (8 x 50 tokens x 0.02 = 8.00), and
    # eight more threads ingest and evaluate directly on their own connections
    async def stream(index: int) -> None:
        async def batches():  # type: ignore[no-untyped-def]
            yield usage_pb2.UsageBatch(
                batch_id=f"b-{index}",
                events=[
                    usage_pb2.UsageEvent(
                        id=f"stream-{index}",
                        source="dp",
                        type="llm.tokens",
                        subject="acme-corp",
                        time=to_timestamp(T0 + timedelta(minutes=2)),
                        llm_tokens=usage_pb2.LlmTokens(
                            provider="openai",
                            model="gpt-4o",
                            token_type=usage_pb2.TOKEN_TYPE_OUTPUT,
                            tokens=50,
                            status_code=200,
                        ),
                    )
                ],
            )

        async for _ack in harness.usage_stream.StreamUsage(batches()):
            pass

    def ingest_and_run(index: int) -> None:
        with harness.cp.db.begin_write() as conn:
            usage_storage.insert_events(conn, [event(1)], ingest_time=harness.clock.now())
        jobs.run(harness.cp.db, now=harness.clock.now(), subjects={"acme-corp"})

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=8) as pool:
        direct = [loop.run_in_executor(pool, ingest_and_run, i) for i in range(8)]
        await asyncio.gather(*(stream(i) for i in range(8)), *direct)
    task = harness.cp._credit_task
    if task is not None:
        await task

    # Then: one top-up invoice of 20.00, recorded once as an auto-recharge, nothing granted yet
    found = top_ups(harness)
    assert [(row.state, row.total) for row in found] == [(InvoiceState.ISSUED, D("20.00"))]
    with harness.cp.db.begin() as conn:
        assert conn.execute(select(s.credit_recharges.c.invoice_id)).scalars().all() == [
            found[0].id
        ]
    assert live(harness) == D("10.00") - D("8.00") - D("0.16")

    # When: it is paid; then the credits exist and the rule is quiet (balance above threshold)
    pay(harness, found[0].id)
    assert live(harness) == D("21.84")
    assert jobs.run(harness.cp.db, now=harness.clock.now()) == []
    assert len(top_ups(harness)) == 1


async def test_target_mode_min_max_and_caps(harness: Harness) -> None:
    await setup(harness)
    grant_promo(harness, "12", "welcome")  # live 2.00
    later(harness, timedelta(hours=1))
    # Target 30 from 2.00 wants 28.00; the maximum cuts it to 25.00.
    set_rule(
        harness,
        mode=RechargeMode.TARGET,
        threshold=D("5"),
        target=D("30"),
        minimum=D("10"),
        maximum=D("25"),
        max_count=2,
        max_amount=D("40"),
    )
    [first] = jobs.run(harness.cp.db, now=harness.clock.now())
    assert first.amount == D("25.00")
    # In flight: nothing more, however often the job runs.
    assert jobs.run(harness.cp.db, now=harness.clock.now()) == []
    pay(harness, first.invoice_id)
    # Burn it down again: 27.00 live -> 1.00 (1300 tokens x 0.02 = 26.00).
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(1300)], ingest_time=harness.clock.now())
    later(harness, timedelta(minutes=1))
    assert live(harness) == D("1.00")
    # The amount cap leaves 15.00 of 40.00 (target would want 29.00, maximum 25.00).
    [second] = jobs.run(harness.cp.db, now=harness.clock.now())
    assert second.amount == D("15.00")
    pay(harness, second.invoice_id)
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(800)], ingest_time=harness.clock.now())
    later(harness, timedelta(minutes=1))
    assert live(harness) == D("0")
    # max_count 2 reached: no third top-up this period.
    with harness.cp.db.begin_write() as conn:
        outcome = recharge.evaluate(conn, customer="acme", now=harness.clock.now())
    assert outcome.invoice_id == "" and "max_count 2" in outcome.reason
    assert len(top_ups(harness)) == 2


async def test_failed_payment_grants_nothing_alerts_and_blocks(harness: Harness) -> None:
    await setup(harness)
    grant_promo(harness, "12", "welcome")  # live 2.00
    with harness.cp.db.begin() as conn:
        notifications.insert_channel(
            conn,
            Channel(key="ops", url="https://hooks.example.com/x", signing_secret="s" * 20),
            now=harness.clock.now(),
        )
        alerts.set_alert(
            conn,
            CreditAlert(customer="acme", key="low", channel="ops", amounts=(D("1"),)),
            now=harness.clock.now(),
        )
    set_rule(harness, mode=RechargeMode.THRESHOLD, threshold=D("5"), amount=D("20"))
    later(harness, timedelta(hours=1))
    [outcome] = jobs.run(harness.cp.db, now=harness.clock.now())
    pay(harness, outcome.invoice_id, InvoiceState.PAYMENT_FAILED)
    assert live(harness) == D("2.00")
    with harness.cp.db.begin() as conn:
        events = [e.type for e in notifications.list_events(conn)]
    assert events.count("credit.top_up_failed") == 1
    # The failed top-up blocks another until it is voided.
    assert jobs.run(harness.cp.db, now=harness.clock.now()) == []
    with harness.cp.db.begin() as conn:
        lifecycle.void_invoice(conn, id=outcome.invoice_id, now=harness.clock.now())
    later(harness, timedelta(seconds=1))
    [again] = jobs.run(harness.cp.db, now=harness.clock.now())
    assert again.invoice_id != outcome.invoice_id


async def test_credit_alerts_fire_once_per_crossing(harness: Harness) -> None:
    await setup(harness)
    grant_promo(harness, "40", "welcome")  # live 30.00
    with harness.cp.db.begin() as conn:
        notifications.insert_channel(
            conn,
            Channel(key="ops", url="https://hooks.example.com/x", signing_secret="s" * 20),
            now=harness.clock.now(),
        )
        alerts.set_alert(
            conn,
            CreditAlert(
                customer="acme", key="low", channel="ops", percents=(D("50"),), amounts=(D("5"),)
            ),
            now=harness.clock.now(),
        )

    def fired() -> list[tuple[str, str]]:
        with harness.cp.db.begin() as conn:
            rows = [json.loads(e.payload)["data"] for e in notifications.list_events(conn)]
        return sorted((row["threshold_type"], row["threshold"]) for row in rows)

    later(harness, timedelta(hours=1))
    jobs.run(harness.cp.db, now=harness.clock.now())
    assert fired() == []
    # 30.00 -> 19.00: at or below 50 % of 40.00 (20.00)
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(550)], ingest_time=harness.clock.now())
    for _ in range(3):
        jobs.run(harness.cp.db, now=harness.clock.now())
    assert fired() == [("percent", "50")]
    # 19.00 -> 4.00: the absolute threshold too, each once
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(750)], ingest_time=harness.clock.now())
    jobs.run(harness.cp.db, now=harness.clock.now())
    jobs.run(harness.cp.db, now=harness.clock.now())
    assert fired() == [("amount", "5"), ("percent", "50")]
    # A new grant of 10 re-arms: live 14.00 is above 50 % of 10 and above 5: nothing new
    later(harness, timedelta(minutes=1))
    grant_promo(harness, "10", "more")
    jobs.run(harness.cp.db, now=harness.clock.now())
    assert len(fired()) == 2
    # ... until it crosses again (14.00 -> 4.00): both fire a second time
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(500)], ingest_time=harness.clock.now())
    jobs.run(harness.cp.db, now=harness.clock.now())
    assert fired() == [("amount", "5"), ("amount", "5"), ("percent", "50"), ("percent", "50")]


async def test_burn_rate_and_run_out(harness: Harness) -> None:
    await setup(harness)
    grant_promo(harness, "40", "welcome")  # live 30.00
    later(harness, timedelta(hours=1))
    jobs.run(harness.cp.db, now=harness.clock.now())  # sample: spent 10.00 (the flat fee)
    later(harness, timedelta(days=2))
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event(300)], ingest_time=harness.clock.now())
        # 6.00 over 2 days: 3.00 a day; 24.00 left: 8 days.
        found = outlook.outlook(conn, customer="acme", at=harness.clock.now(), days=7)
    assert found.balance.live == D("24.00")
    assert found.spent_in_window == D("6.00")
    assert str(found.burn_per_day) == "3.000000"
    assert found.run_out_time == harness.clock.now() + timedelta(days=8)
    with harness.cp.db.begin() as conn, pytest.raises(InvalidArgument):
        outlook.outlook(conn, customer="acme", at=harness.clock.now(), days=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"mode": RechargeMode.THRESHOLD, "threshold": D("-1"), "amount": D("5")},
            "must not be negative",
            id="negative",
        ),
        pytest.param(
            {
                "mode": RechargeMode.TARGET,
                "threshold": D("5"),
                "target": D("50"),
                "minimum": D("30"),
                "maximum": D("20"),
            },
            "minimum 30 is above its maximum 20",
            id="min-above-max",
        ),
        pytest.param(
            {
                "mode": RechargeMode.THRESHOLD,
                "threshold": D("5"),
                "amount": D("5"),
                "currency": "EUR",
            },
            "is not the currency",
            id="wrong-currency",
        ),
        pytest.param(
            {"mode": RechargeMode.THRESHOLD, "threshold": D("5"), "amount": D("5.001")},
            "more decimals than USD",
            id="sub-cent",
        ),
        pytest.param(
            {"mode": RechargeMode.TARGET, "threshold": D("5"), "target": D("5")},
            "must be above its threshold",
            id="target-not-above-threshold",
        ),
    ],
)
async def test_bad_rules_refused_nothing_changed(
    harness: Harness, fields: dict[str, object], message: str
) -> None:
    await setup(harness)
    set_rule(harness, mode=RechargeMode.THRESHOLD, threshold=D("3"), amount=D("10"))
    with pytest.raises(InvalidArgument, match=message):
        set_rule(harness, **fields)
    with harness.cp.db.begin() as conn:
        assert store.get_rule(conn, "acme") == store.get_rule(conn, "acme")
        assert recharge.get_rule(conn, customer="acme").threshold == D("3")
    with pytest.raises(NotFound), harness.cp.db.begin() as conn:
        recharge.set_rule(
            conn,
            RechargeRule(
                customer="ghost", mode=RechargeMode.THRESHOLD, threshold=D("1"), amount=D("1")
            ),
            now=harness.clock.now(),
        )
