"""Prepaid credits burnt at the gateway: a real control plane and N real data planes.

Used by tests/integration/test_credits_gateway.py and bench/credits_overshoot.py. A control
plane (grpc.aio, SQLite, frozen clock, balance slicing on) and ``dataplanes`` data planes
(Gateway + ConfigClient + UsageReporter over gRPC, HTTP on ephemeral 127.0.0.1 ports) in front
of the fake OpenAI and fake Anthropic providers. Every price is 0.00001 USD per token and a
request of ``REQUEST_WORDS`` words with max_tokens=1 is 1,000 tokens: 0.01 USD, exactly.

``race`` is the overshoot measurement: C concurrent openai-SDK clients on each of the data
planes spend one ``credit_only`` balance until the control plane's live balance is zero; the
overshoot is what was admitted beyond the grant, against the bound N x C x R.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import openai

from controlplane.clock import FrozenClock
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from dataplane.admission.entitlements import acked_events
from dataplane.config.sync import ConfigClient
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import FakeProvider
from dataplane.usage.reporter import UsageReporter, UsageStreamStub
from meterline.admin.v1 import (
    billing_pb2_grpc,
    credits_pb2,
    credits_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc
from support.databases import sqlite_at_head

PRICE = Decimal("0.00001")
# 996 words + 3 per message = 999 prompt tokens, + 1 completion token (max_tokens=1).
REQUEST_WORDS = 996
REQUEST_TOKENS = 1_000
REQUEST_COST = Decimal("0.01")
assert PRICE * REQUEST_TOKENS == REQUEST_COST


def document(upstream: str, claude: str, *, race_grant: str = "1.00", start: datetime) -> str:
    """Routes /chat (OpenAI) and /claude (Anthropic format); customers on credit_only
    (prepaid-co 0.05 USD, race-co ``race_grant``, broke-co none) and credit_then_invoice
    (postpaid-co 0.03 USD), and plain-co without credits."""
    subscriptions = "".join(
        f'    - {{customer: {customer}, plan: {plan}, start: "{start.isoformat()}"}}\n'
        for customer, plan in (
            ("prepaid-co", "prepaid"),
            ("race-co", "prepaid"),
            ("broke-co", "prepaid"),
            ("postpaid-co", "postpaid"),
            ("plain-co", "postpaid"),
        )
    )
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
            options: {{upstream_url: "{upstream}/v1/chat/completions"}}
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
  - {{username: prepaid-app, keyauth_credentials: [{{key: prepaid-key}}]}}
  - {{username: race-app, keyauth_credentials: [{{key: race-key}}]}}
  - {{username: broke-app, keyauth_credentials: [{{key: broke-key}}]}}
  - {{username: postpaid-app, keyauth_credentials: [{{key: postpaid-key}}]}}
  - {{username: plain-app, keyauth_credentials: [{{key: plain-key}}]}}
plugins:
  - name: key-auth
billing:
  features:
    - {{key: all-tokens, meter: llm_tokens}}
  plans:
    - key: prepaid
      name: Prepaid
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens
          price: {{type: unit, amount: "{PRICE}"}}
          settlement_mode: credit_only
    - key: postpaid
      name: Postpaid
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens
          price: {{type: unit, amount: "{PRICE}"}}
          settlement_mode: credit_then_invoice
  customers:
    - {{key: prepaid-co, name: Prepaid Co, subjects: [prepaid-app]}}
    - {{key: race-co, name: Race Co, subjects: [race-app]}}
    - {{key: broke-co, name: Broke Co, subjects: [broke-app]}}
    - {{key: postpaid-co, name: Postpaid Co, subjects: [postpaid-app]}}
    - {{key: plain-co, name: Plain Co, subjects: [plain-app]}}
  subscriptions:
{subscriptions}  credits:
    - {{customer: prepaid-co, amount: "0.05", key: welcome}}
    - {{customer: race-co, amount: "{race_grant}", key: race}}
    - {{customer: postpaid-co, amount: "0.03", key: trial}}
"""


@dataclass
class DataPlane:
    gateway: Gateway
    reporter: UsageReporter
    config: ConfigClient
    address: ServerAddress

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
    claude: FakeAnthropic
    dps: list[DataPlane]
    channel: grpc.aio.Channel
    start: datetime

    @property
    def credits(self) -> credits_pb2_grpc.CreditServiceStub:
        return credits_pb2_grpc.CreditServiceStub(self.channel)

    @property
    def billing(self) -> billing_pb2_grpc.BillingServiceStub:
        return billing_pb2_grpc.BillingServiceStub(self.channel)

    async def live(self, customer: str) -> Decimal:
        """The control plane's live credit balance of ``customer``."""
        found = await self.credits.GetCreditBalance(
            credits_pb2.GetCreditBalanceRequest(customer=f"customers/{customer}")
        )
        return Decimal(found.live)

    async def drained(self) -> None:
        """Every data plane's usage is stored (ACKed) by the control plane."""
        for dp in self.dps:
            await asyncio.wait_for(dp.reporter.wait_drained(), 10)


async def wait_for(check, *, timeout: float = 10.0, what: str) -> float:  # type: ignore[no-untyped-def]
    """Await ``check()`` until true; the seconds it took."""
    start = time.perf_counter()
    for _ in range(int(timeout / 0.01)):
        if await check():
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _start_dataplane(address: str, node: str, resources: list[object]) -> DataPlane:
    channel = grpc.aio.insecure_channel(address)
    resources.append(channel)
    # The usage reporter's default flush interval (0.2 s), as a deployed data plane has it.
    reporter = UsageReporter(stub=UsageStreamStub(channel))
    gateway = Gateway(node_id=node, usage_sink=reporter.append)
    config = ConfigClient(
        compile=compile_snapshot,
        stub=config_pb2_grpc.ConfigServiceStub(channel),
        node=config_pb2.Node(id=node, hostname="test", version="0.1.0"),
        apply=gateway.apply,
    )
    gateway.enforcer.acked = acked_events(reporter, marker=lambda: config.usage_marker)
    reporter.start()
    task = asyncio.create_task(config.run())
    resources.append(task)
    await asyncio.wait_for(config.wait_applied(), 10)
    server = serve_http(gateway)
    bound = await server.__aenter__()
    resources.append((server, gateway, reporter))
    return DataPlane(gateway=gateway, reporter=reporter, config=config, address=bound)


async def _close(resources: list[object]) -> None:
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


@asynccontextmanager
async def credit_stack(
    directory: Path, *, dataplanes: int = 2, race_grant: str = "1.00"
) -> AsyncIterator[Stack]:
    """The control plane, ``dataplanes`` data planes holding the snapshot sliced that many
    ways, and the fake providers; everything stopped on exit."""
    # Events carry the data plane's real time: the frozen clock stands a little after it.
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    start = now - timedelta(days=1)
    clock = FrozenClock(now)
    db = Database.connect(sqlite_at_head(directory / "meterline.db"))
    cp = ControlPlane(db=db, listen="127.0.0.1:0", clock=clock, poll_seconds=0.5)
    port = await cp.start()
    address = f"127.0.0.1:{port}"
    fake, claude = FakeProvider(), FakeAnthropic()
    resources: list[object] = []
    try:
        async with (
            serve_http(fake) as upstream,
            serve_http(claude) as claude_server,
            grpc.aio.insecure_channel(address) as channel,
        ):
            await gateway_pb2_grpc.GatewayServiceStub(channel).ApplyConfig(
                gateway_pb2.ApplyConfigRequest(
                    document=document(
                        upstream.url, claude_server.url, race_grant=race_grant, start=start
                    )
                )
            )
            try:
                dps = [
                    await _start_dataplane(address, f"dp-{i}", resources) for i in range(dataplanes)
                ]
                expected = dataplanes if dataplanes > 1 else 0

                async def resplit() -> bool:
                    built = await cp.hub.current()
                    return built.snapshot.balance_slices == expected and all(
                        dp.config.version == built.version for dp in dps
                    )

                await wait_for(resplit, what=f"the snapshot of {dataplanes} data planes")
                yield Stack(
                    cp=cp,
                    clock=clock,
                    fake=fake,
                    claude=claude,
                    dps=dps,
                    channel=channel,
                    start=start,
                )
            finally:
                await _close(resources)
    finally:
        await cp.stop(0)
        # Let the cancelled streams finish their last registry writes (worker threads).
        await asyncio.sleep(0.2)
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()


def message(words: int = REQUEST_WORDS) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["w"] * words)}]


@dataclass(frozen=True)
class RaceResult:
    dataplanes: int
    concurrency: int
    grant: Decimal
    admitted: int
    refused: int
    # What the admitted requests cost (exact: REQUEST_COST each) and what of it the grant
    # did not cover.
    spent: Decimal
    overshoot: Decimal
    bound: Decimal
    seconds: float

    def line(self) -> str:
        held = "held" if self.overshoot <= self.bound else "EXCEEDED"
        return (
            f"{self.dataplanes} data planes x {self.concurrency} concurrent clients, "
            f"R = {REQUEST_COST} USD/request, grant {self.grant} USD: spent {self.spent}, "
            f"overshoot {self.overshoot} USD ({self.overshoot / REQUEST_COST:.0f} requests, "
            f"{self.overshoot / self.grant:.1%} of the grant); bound N x C x R = {self.bound} "
            f"({held}); {self.admitted} admitted, {self.refused} refused (402), "
            f"{self.seconds:.2f} s"
        )


async def race(
    stack: Stack,
    *,
    concurrency: int,
    customer: str = "race-co",
    key: str = "race-key",
    max_requests: int = 400,
) -> RaceResult:
    """``concurrency`` clients per data plane spend ``customer``'s credit_only balance; a
    client refused (402) retries after a re-split until the live balance is zero."""
    grant = await stack.live(customer)
    admitted = refused = 0

    async def worker(dp: DataPlane) -> None:
        nonlocal admitted, refused
        async with dp.client(key) as client:
            for _ in range(max_requests):
                try:
                    await client.chat.completions.create(
                        model="gpt-4o-mini", messages=message(), max_tokens=1
                    )
                except openai.APIStatusError as exc:
                    assert exc.status_code == 402, exc
                    assert exc.response.json()["error"]["code"] == "insufficient_credits"
                    refused += 1
                    if await stack.live(customer) <= 0:
                        return
                    await asyncio.sleep(0.02)  # a slice is spent: wait for the re-split
                    continue
                admitted += 1
        raise AssertionError("the credits were never spent")

    began = time.perf_counter()
    await asyncio.gather(*[worker(dp) for dp in stack.dps for _ in range(concurrency)])
    seconds = time.perf_counter() - began
    await stack.drained()
    spent = admitted * REQUEST_COST
    return RaceResult(
        dataplanes=len(stack.dps),
        concurrency=concurrency,
        grant=grant,
        admitted=admitted,
        refused=refused,
        spent=spent,
        overshoot=max(spent - grant, Decimal(0)),
        bound=len(stack.dps) * concurrency * REQUEST_COST,
        seconds=seconds,
    )
