"""Credit alerts through the notification channels: signed webhooks received by a test HTTP
server, once per crossing; and the credits CLI for alerts and recharge rules (SQLite and
PostgreSQL). The plan is test_notifications' Starter: 0.01 a token, no flat fee."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from controlplane.cli.main import main as cli
from controlplane.notifications.signing import verify

from .conftest import T0
from .test_notifications import SECRET, Stack, _stack, channel


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    async with _stack(db_url) as item:
        yield item


async def test_credit_alert_webhook_signed_once_per_crossing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        code = cli([*args, "--cp", stack.address])
        out = capsys.readouterr()
        return code, out.out, out.err

    # Given 10.00 of credits and an alert at 50 % of them and at 1.00, made with the CLI
    await channel(stack)
    code, _, err = await asyncio.to_thread(run, "credits", "grant", "acme", "--amount", "10")
    assert code == 0, err
    code, out, err = await asyncio.to_thread(
        run, "credits", "alert", "create", "acme", "low", "--channel", "ops",
        "--percent", "50", "--amount", "1", "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {
        "customer": "acme",
        "key": "low",
        "channel": "ops",
        "percents": ["50"],
        "amounts": ["1"],
    }
    code, out, _ = await asyncio.to_thread(run, "credits", "alert", "list", "acme")
    assert out.splitlines()[1].split() == ["low", "ops", "50", "1"]
    stack.clock.set(T0 + timedelta(days=1))
    assert (await stack.evaluate()).events_created == 0

    # When 6.00 is used (live 4.00: at or below 50 % of 10.00), evaluated twice
    stack.use(600)
    assert (await stack.evaluate()).events_created == 1
    assert (await stack.evaluate()).events_created == 0

    # Then one signed credit.balance_low webhook
    ((headers, body),) = stack.receiver.received
    now = int(stack.clock.now().timestamp())
    assert verify(SECRET, header=headers["meterline-signature"], body=body, now=now)
    event = json.loads(body)
    assert event["type"] == "credit.balance_low"
    assert event["data"] == {
        "alert": "low",
        "customer": "acme",
        "currency": "USD",
        "live": "4.00",
        "settled": "10",
        "threshold_type": "percent",
        "threshold": "50",
        "threshold_amount": "5",
        "last_funded_grant": event["data"]["last_funded_grant"],
        "last_funded_amount": "10",
    }

    # When the balance reaches zero, the absolute threshold fires too, once
    stack.use(500)
    assert (await stack.evaluate()).events_created == 1
    assert [b["data"]["threshold_type"] for b in stack.receiver.bodies()] == ["percent", "amount"]

    # And the CLI refuses a bad recharge rule in one line, changing nothing
    code, _, err = await asyncio.to_thread(
        run, "credits", "recharge", "set", "acme", "--mode", "target", "--threshold", "5",
        "--target", "50", "--min", "30", "--max", "20",
    )  # fmt: skip
    assert code != 0
    [line] = [line for line in err.splitlines() if " INFO " not in line]
    assert "recharge rule minimum 30 is above its maximum 20" in line
    code, _, err = await asyncio.to_thread(run, "credits", "recharge", "show", "acme")
    assert code != 0 and "has no recharge rule" in err
    code, out, err = await asyncio.to_thread(
        run, "credits", "recharge", "set", "acme", "--threshold", "5", "--amount", "20",
        "--max-count", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "rule      threshold: live balance below 5 USD: buy 20" in out
    assert "caps      per billing period: 2 top-ups, - USD" in out
