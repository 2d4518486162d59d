"""Prepaid credits at the gateway (issue #20 item 4), end to end.

A real control plane and two real data planes (balance slicing on) in front of the fake OpenAI
and Anthropic providers, driven by the openai and anthropic SDKs (tests/support/
credit_gateway.py). Every request costs 0.01 USD exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from meterline.admin.v1 import billing_pb2, credits_pb2
from support.credit_gateway import (
    REQUEST_COST,
    REQUEST_TOKENS,
    Stack,
    credit_stack,
    message,
    race,
    wait_for,
)

CREDIT = billing_pb2.INVOICE_LINE_TYPE_CREDIT
UNCOVERED = billing_pb2.INVOICE_LINE_TYPE_UNCOVERED
USAGE = billing_pb2.INVOICE_LINE_TYPE_USAGE


@pytest.fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    async with credit_stack(tmp_path, dataplanes=2) as found:
        yield found


async def chat(stack: Stack, key: str, dp: int = 0):
    async with stack.dps[dp].client(key) as client:
        return await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=message(), max_tokens=1
        )


async def issue_period(stack: Stack, customer: str) -> billing_pb2.Invoice:
    """Close the first billing period and issue the customer's invoice."""
    stack.clock.set(stack.start + timedelta(days=31, hours=2))
    closed = await stack.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    for name in closed.drafted_invoices:
        found = await stack.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=name))
        if found.customer == f"customers/{customer}":
            break
    else:
        raise AssertionError(f"no invoice of {customer} was drafted")
    return await stack.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=name))


async def ledger(stack: Stack, customer: str) -> list[tuple[str, Decimal]]:
    found = await stack.credits.ListCreditTransactions(
        credits_pb2.ListCreditTransactionsRequest(parent=f"customers/{customer}")
    )
    return [
        (
            credits_pb2.CreditTransactionType.Name(entry.type).removeprefix(
                "CREDIT_TRANSACTION_TYPE_"
            ),
            Decimal(entry.amount),
        )
        for entry in found.credit_transactions
    ]


async def test_credit_only_is_refused_at_zero_before_the_provider_is_called(stack) -> None:
    # Given prepaid-co on a credit_only plan with 0.05 USD of credits, 0.01 USD per request,
    # and two data planes each holding half of it.
    assert await stack.live("prepaid-co") == Decimal("0.05")
    admitted: list[Decimal] = []
    refusals = 0
    # When its app spends them through one data plane with the openai SDK
    for _ in range(200):
        # The snapshot the request is admitted against (or refused by).
        held = _held(stack)
        try:
            response = await chat(stack, "prepaid-key")
        except openai.APIStatusError as exc:
            # Then refusals are OpenAI-shaped 402s, insufficient_credits ...
            assert exc.status_code == 402
            error = exc.response.json()["error"]
            assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_credits")
            assert "prepaid-co" in error["message"]
            refusals += 1
            if await stack.live("prepaid-co") <= 0:
                break
            # ... while the other data plane holds an unused slice: the next snapshot
            # re-splits what is left.
            await wait_for(
                lambda held=held: _snapshot_moved(stack, held),
                what="a re-split snapshot",
            )
            continue
        headers = response.http_response.headers
        assert Decimal(headers["x-meterline-cost"]) == REQUEST_COST
        admitted.append(Decimal(headers["x-meterline-credits-remaining"]))
    else:
        raise AssertionError("the credits were never spent")
    # Exactly the credits were spent (0.05 = 5 requests; one at a time nothing overshoots),
    # and the provider saw exactly the admitted requests, none of the refused ones.
    assert len(admitted) == 5
    assert admitted[0] == Decimal("0.04")  # the balance left, in the cost headers
    assert admitted[-1] == 0
    assert len(stack.fake.requests) == 5
    # Both data planes refuse once they hold the snapshot of the spent balance (until then
    # the idle one could still spend a slice of an older one: the overshoot bound), and
    # still call no provider.
    await stack.drained()

    async def current() -> bool:
        built = await stack.cp.hub.current()
        return all(dp.config.version == built.version for dp in stack.dps)

    await wait_for(current, what="both data planes to hold the current snapshot")
    for dp in (0, 1):
        with pytest.raises(openai.APIStatusError) as refused:
            await chat(stack, "prepaid-key", dp)
        assert refused.value.status_code == 402
    assert len(stack.fake.requests) == 5
    # And the invoice: 0.05 of usage, paid by the grant, nothing uncovered or due.
    issued = await issue_period(stack, "prepaid-co")
    lines = [(line.type, Decimal(line.amount)) for line in issued.lines]
    assert lines == [(USAGE, Decimal("0.05")), (CREDIT, Decimal("-0.05"))]
    assert Decimal(issued.total) == 0
    assert await ledger(stack, "prepaid-co") == [
        ("FUNDED", Decimal("0.05")),
        ("CONSUMED", Decimal("-0.05")),
    ]


def _held(stack: Stack) -> tuple[str, object]:
    """The snapshot data plane 0 holds: its version and which stored usage it counts (the
    same version comes again with a later count after a build a usage store overlapped)."""
    config = stack.dps[0].config
    return config.version, config.usage_marker


async def _snapshot_moved(stack: Stack, held: tuple[str, object]) -> bool:
    return _held(stack) != held or await stack.live("prepaid-co") <= 0


async def test_a_customer_without_credits_on_credit_only_is_refused_on_both_formats(
    stack,
) -> None:
    # broke-co is on the credit_only plan and never had a grant: nothing pays its usage.
    with pytest.raises(openai.APIStatusError) as refused:
        await chat(stack, "broke-key")
    assert refused.value.status_code == 402
    assert refused.value.response.json()["error"]["code"] == "insufficient_credits"
    # The cost estimate says so too, and names no credits left.
    async with httpx.AsyncClient() as http:
        estimate = await http.post(
            f"{stack.dps[0].url}/chat/cost/estimate",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"apikey": "broke-key"},
        )
    assert estimate.status_code == 200, estimate.text
    assert estimate.json()["allowed"] is False
    assert estimate.json()["refusal_code"] == "insufficient_credits"
    assert estimate.json()["remaining_credits"] == "0"
    # The Anthropic-format route renders it in Anthropic's error shape (billing_error, 402).
    async with anthropic.AsyncAnthropic(
        base_url=f"{stack.dps[1].url}/claude", api_key="broke-key", max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(
                model="claude-3-5-haiku-latest",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
            )
    assert caught.value.status_code == 402
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert body["error"]["code"] == "insufficient_credits"
    assert len(stack.fake.requests) == 0
    assert len(stack.claude.requests) == 0


async def test_anthropic_route_burns_the_same_credits_and_reports_them(stack) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=f"{stack.dps[0].url}/claude", api_key="prepaid-key", max_retries=0
    ) as client:
        answer = await client.messages.with_raw_response.create(
            model="claude-3-5-haiku-latest",
            max_tokens=16,
            messages=[{"role": "user", "content": "one two three"}],
        )
    headers = answer.http_response.headers
    tokens = int(headers["x-meterline-input-tokens"]) + int(headers["x-meterline-output-tokens"])
    cost = Decimal(headers["x-meterline-cost"])
    assert cost == tokens * Decimal("0.00001")
    assert Decimal(headers["x-meterline-credits-remaining"]) == Decimal("0.05") - cost


async def test_credit_then_invoice_is_never_refused_and_invoices_exactly_the_remainder(
    stack,
) -> None:
    # Given postpaid-co (credit_then_invoice) with 0.03 USD of credits: 5 requests cost 0.05.
    remaining = []
    for i in range(5):
        response = await chat(stack, "postpaid-key", dp=i % 2)
        remaining.append(Decimal(response.http_response.headers["x-meterline-credits-remaining"]))
    # Then none is refused; the headers show the credits going to zero, never below.
    assert remaining[0] == Decimal("0.02")
    assert remaining[-1] == 0
    assert len(stack.fake.requests) == 5
    # A customer without any credits gets no credits header at all.
    plain = await chat(stack, "plain-key")
    assert "x-meterline-credits-remaining" not in plain.http_response.headers
    await stack.drained()

    async def live_zero() -> bool:
        return await stack.live("postpaid-co") == 0

    await wait_for(live_zero, what="the live balance to reach zero")
    # And the invoice takes 0.03 from credits and invoices exactly the remaining 0.02.
    issued = await issue_period(stack, "postpaid-co")
    lines = [(line.type, Decimal(line.amount)) for line in issued.lines]
    assert lines == [(USAGE, 5 * REQUEST_COST), (CREDIT, Decimal("-0.03"))]
    assert Decimal(issued.total) == Decimal("0.02")
    assert await ledger(stack, "postpaid-co") == [
        ("FUNDED", Decimal("0.03")),
        ("CONSUMED", Decimal("-0.03")),
    ]


async def test_two_dataplanes_burning_one_balance_concurrently_overshoot_within_bound(
    stack,
) -> None:
    # Given race-co (credit_only) with 1.00 USD, 100 requests' worth, and 4 concurrent clients
    # on each of the two data planes; a refused client retries until the balance is spent.
    result = await race(stack, concurrency=4)
    print("\n" + result.line())
    # Then the balance was really spent, the overshoot is within N x C x R, and the provider
    # saw exactly the admitted requests.
    assert result.grant == Decimal("1.00")
    assert result.spent >= result.grant
    assert result.overshoot <= result.bound == Decimal("0.08")
    assert len(stack.fake.requests) == result.admitted
    # Every ACK and snapshot carried the control plane's usage sequence: the data planes know
    # which stored usage their snapshot reflects (a build racing a store cannot drop usage).
    hub = stack.cp.hub
    for dp in stack.dps:
        assert dp.config.usage_marker is not None
        assert dp.config.usage_marker[0] == hub.usage_epoch
        assert dp.reporter.acked_through(hub.usage_epoch, hub.usage_sequence) == (
            dp.reporter.stats.acked_events
        )
    # And the ledger is exact once the usage is stored: every admitted token was metered, the
    # live balance is zero, and the invoice takes the whole grant, the rest uncovered.
    assert await stack.live("race-co") == 0
    issued = await issue_period(stack, "race-co")
    lines = [(line.type, Decimal(line.amount)) for line in issued.lines]
    assert lines[0] == (USAGE, result.spent)
    assert issued.lines[0].quantity == str(result.admitted * REQUEST_TOKENS)
    assert lines[1] == (CREDIT, Decimal("-1.00"))
    if result.overshoot:
        assert lines[2:] == [(UNCOVERED, -result.overshoot)]
    else:
        assert lines[2:] == []
    assert Decimal(issued.total) == 0
    assert await ledger(stack, "race-co") == [
        ("FUNDED", Decimal("1.00")),
        ("CONSUMED", Decimal("-1.00")),
    ]


async def test_a_stream_reports_the_credits_left_at_start_and_after_its_usage(stack) -> None:
    # The head leaves before the usage is known: the credits left when the request started;
    # the usage chunk the client asked for carries them after the request (0.03 - its cost).
    async with stack.dps[0].client("postpaid-key") as client:
        response = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        assert Decimal(response.http_response.headers["x-meterline-credits-remaining"]) == Decimal(
            "0.03"
        )
        final = None
        async for chunk in response.parse():
            if chunk.usage is not None:
                final = chunk
    assert final is not None and final.model_extra is not None
    figures = final.model_extra["meterline"]
    cost = Decimal(figures["cost"])
    assert cost == (final.usage.prompt_tokens + final.usage.completion_tokens) * Decimal("0.00001")
    assert Decimal(figures["remaining_credits"]) == Decimal("0.03") - cost
