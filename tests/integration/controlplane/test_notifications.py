"""Alerts as signed webhooks: entitlement thresholds and invoice events, received by a test
HTTP server on 127.0.0.1, through the admin API (and the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta

import grpc
import pytest

from controlplane.cli.main import main as cli
from controlplane.clock import FrozenClock
from controlplane.notifications.signing import verify
from controlplane.notifications.types import NotificationSettings
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from controlplane.usage import storage as usage
from controlplane.usage.types import TokenType, UsageEvent
from dataplane.http.asgi import JSON_CONTENT_TYPE, read_body, send_response
from dataplane.http.server import serve_http
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    notifications_pb2_grpc,
)
from meterline.admin.v1 import notifications_pb2 as pb
from support.processes import free_port
from tests.integration.controlplane.conftest import T0

SECRET = "whsec-test-0123456789abcdef"
PLAN = f"""\
_format_version: "3.0"
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: acme-secret-key}}]
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
          price: {{type: unit, amount: "0.01"}}
          entitlement: {{type: metered, limit: 1000, usage_period: P1M, soft_limit: false}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: starter, start: "{T0.isoformat()}"}}
  budgets:
    - {{customer: acme, amount: "10", currency: USD, period: P1M, mode: soft}}
"""


@dataclass
class Receiver:
    """A webhook endpoint: answers ``statuses`` in order, then 200; keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive, limit=1 << 20)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        await send_response(send, status, b"{}", [JSON_CONTENT_TYPE])

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


@dataclass
class Stack:
    cp: ControlPlane
    clock: FrozenClock
    address: str
    notifications: notifications_pb2_grpc.NotificationServiceStub
    gateway: gateway_pb2_grpc.GatewayServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    receiver: Receiver

    def use(self, tokens: int) -> None:
        event = UsageEvent(
            id=str(uuid.uuid4()),
            source="test",
            type="llm.tokens",
            subject="acme-corp",
            time=self.clock.now(),
            provider="openai",
            model="gpt-4o-mini",
            token_type=TokenType.INPUT,
            tokens=tokens,
            status_code=200,
        )
        with self.cp.db.begin() as conn:
            usage.insert_events(conn, [event], ingest_time=self.clock.now())

    async def evaluate(self) -> pb.EvaluateNotificationsResponse:
        return await self.notifications.EvaluateNotifications(pb.EvaluateNotificationsRequest())

    async def deliveries(self) -> list[pb.NotificationDelivery]:
        response = await self.notifications.ListDeliveries(pb.ListDeliveriesRequest())
        return list(response.deliveries)


@contextlib.asynccontextmanager
async def _stack(db_url: str, *, job_seconds: float | None = None) -> AsyncIterator[Stack]:
    clock = FrozenClock(T0)
    db = Database.connect(db_url)
    cp = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=clock,
        poll_seconds=0.5,
        notifications=NotificationSettings(
            max_attempts=3, retry_base_seconds=10, timeout_seconds=5, allow_private_urls=True
        ),
        notification_job_seconds=job_seconds,
    )
    port = await cp.start()
    address = f"127.0.0.1:{port}"
    receiver = Receiver()
    try:
        async with serve_http(receiver) as served, grpc.aio.insecure_channel(address) as channel:
            receiver.url = f"{served.url}/hooks/meterline"
            stack = Stack(
                cp=cp,
                clock=clock,
                address=address,
                notifications=notifications_pb2_grpc.NotificationServiceStub(channel),
                gateway=gateway_pb2_grpc.GatewayServiceStub(channel),
                billing=billing_pb2_grpc.BillingServiceStub(channel),
                receiver=receiver,
            )
            await stack.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=PLAN))
            yield stack
    finally:
        await cp.stop(0)
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()


@pytest.fixture
async def stack(migrated_db_url: str) -> AsyncIterator[Stack]:
    async with _stack(migrated_db_url) as item:
        yield item


async def channel(stack: Stack, key: str = "ops", url: str | None = None) -> None:
    await stack.notifications.CreateChannel(
        pb.CreateChannelRequest(
            channel=pb.NotificationChannel(
                key=key, url=url or stack.receiver.url, signing_secret=SECRET
            )
        )
    )


async def threshold_rule(stack: Stack, *thresholds: str, key: str = "tokens") -> None:
    await stack.notifications.CreateRule(
        pb.CreateRuleRequest(
            rule=pb.NotificationRule(
                key=key,
                type=pb.NOTIFICATION_RULE_TYPE_ENTITLEMENT_THRESHOLD,
                channel="ops",
                thresholds=list(thresholds),
                feature="all-tokens",
            )
        )
    )


async def test_each_threshold_fires_once_per_period_signed(stack: Stack) -> None:
    # Given alerts at 50/80/100% of Starter's 1000 tokens a month
    await channel(stack)
    await threshold_rule(stack, "50", "80", "100")
    stack.clock.set(T0 + timedelta(days=2))
    # When usage reaches 60%, the 50% threshold fires: one signed webhook
    stack.use(600)
    assert (await stack.evaluate()).events_created == 1
    ((headers, body),) = stack.receiver.received
    now = int(stack.clock.now().timestamp())
    assert verify(SECRET, header=headers["meterline-signature"], body=body, now=now)
    timestamp = headers["meterline-signature"].split(",")[0].removeprefix("t=")
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers["meterline-signature"] == f"t={timestamp},v1={expected.hexdigest()}"
    assert not verify(
        "another-secret-0000", header=headers["meterline-signature"], body=body, now=now
    )
    assert not verify(SECRET, header=headers["meterline-signature"], body=body + b" ", now=now)
    (event,) = stack.receiver.bodies()
    assert event["type"] == "entitlement.threshold"
    assert headers["meterline-event-id"] == event["id"]
    data = event["data"]
    assert (data["customer"], data["feature"], data["threshold_percent"]) == (
        "acme",
        "all-tokens",
        "50",
    )
    assert (data["usage"], data["limit"], data["balance"], data["usage_percent"]) == (
        600,
        1000,
        400,
        "60.00",
    )
    # Evaluating again in the same period fires nothing new
    assert (await stack.evaluate()).events_created == 0
    assert len(stack.receiver.received) == 1
    # Past 100%, the 80% and 100% thresholds fire, once each
    stack.use(450)
    assert (await stack.evaluate()).events_created == 2
    assert (await stack.evaluate()).events_created == 0
    fired = sorted(body["data"]["threshold_percent"] for body in stack.receiver.bodies())
    assert fired == ["100", "50", "80"]
    # The next usage period starts afresh: 50% fires again there
    stack.clock.set(T0 + timedelta(days=32))
    stack.use(500)
    assert (await stack.evaluate()).events_created == 1
    last = stack.receiver.bodies()[-1]["data"]
    assert (last["threshold_percent"], last["usage"]) == ("50", 500)
    assert last["period_start"].startswith("2026-12-01T12:00:00")
    # Every event and delivery is visible through the API
    events = await stack.notifications.ListEvents(pb.ListEventsRequest(rule="rules/tokens"))
    assert len(events.events) == 4
    deliveries = await stack.deliveries()
    assert {d.state for d in deliveries} == {pb.DELIVERY_STATE_DELIVERED}
    assert all([a.status_code for a in d.attempts] == [200] for d in deliveries)


async def test_budget_thresholds_fire_once_per_billing_period(stack: Stack) -> None:
    # Given alerts at 50% and 100% of acme's $10 budget (tokens cost $0.01)
    await channel(stack)
    await stack.notifications.CreateRule(
        pb.CreateRuleRequest(
            rule=pb.NotificationRule(
                key="money",
                type=pb.NOTIFICATION_RULE_TYPE_BUDGET_THRESHOLD,
                channel="ops",
                thresholds=["50", "100"],
                customer="acme",
            )
        )
    )
    stack.clock.set(T0 + timedelta(days=1))
    stack.use(600)  # $6.00
    assert (await stack.evaluate()).events_created == 1
    assert (await stack.evaluate()).events_created == 0
    stack.use(500)  # $11.00
    assert (await stack.evaluate()).events_created == 1
    first, second = stack.receiver.bodies()
    assert first["type"] == second["type"] == "budget.threshold"
    assert (first["data"]["threshold_percent"], first["data"]["spent"]) == ("50", "6.00")
    assert (second["data"]["threshold_percent"], second["data"]["remaining"]) == ("100", "-1.00")


async def test_replicas_evaluating_at_once_fire_and_deliver_once(stack: Stack, db_url: str) -> None:
    # Given a second control plane (replica) over the same database, same clock
    other_db = Database.connect(db_url)
    other = ControlPlane(db=other_db, listen="127.0.0.1:0", clock=stack.clock)
    try:
        await channel(stack)
        await threshold_rule(stack, "25", "50", "75", "100")
        stack.use(1000)
        # When both evaluate and deliver at the same time, several times
        for _ in range(3):
            await asyncio.gather(stack.cp.run_notifications(), other.run_notifications())
        # Then each threshold fired once and each webhook was sent once
        events = await stack.notifications.ListEvents(pb.ListEventsRequest())
        assert len(events.events) == 4
        assert len(stack.receiver.received) == 4
        assert sorted(b["data"]["threshold_percent"] for b in stack.receiver.bodies()) == [
            "100",
            "25",
            "50",
            "75",
        ]
    finally:
        await other.stop(0)
        other_db.dispose()


async def test_a_failing_receiver_gets_retries_with_backoff(stack: Stack) -> None:
    # Given a receiver that fails twice with 500
    stack.receiver.statuses = [500, 500]
    await channel(stack)
    await threshold_rule(stack, "10")
    stack.use(200)
    await stack.evaluate()
    (delivery,) = await stack.deliveries()
    assert delivery.state == pb.DELIVERY_STATE_PENDING
    assert delivery.next_attempt_time.ToDatetime(tzinfo=T0.tzinfo) == T0 + timedelta(seconds=10)
    # Not due yet: nothing is sent
    assert (await stack.evaluate()).attempts == 0
    # The second attempt comes after 10 s, the third 20 s after that
    stack.clock.set(T0 + timedelta(seconds=10))
    assert (await stack.evaluate()).attempts == 1
    stack.clock.set(T0 + timedelta(seconds=29))
    assert (await stack.evaluate()).attempts == 0
    stack.clock.set(T0 + timedelta(seconds=30))
    assert (await stack.evaluate()).attempts == 1
    # Then it is delivered, and every attempt is visible
    (delivery,) = await stack.deliveries()
    assert delivery.state == pb.DELIVERY_STATE_DELIVERED
    assert [(a.number, a.status_code, a.error) for a in delivery.attempts] == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 200, ""),
    ]
    ids = {headers["meterline-event-id"] for headers, _ in stack.receiver.received}
    assert ids == {delivery.event}
    assert [h["meterline-delivery-attempt"] for h, _ in stack.receiver.received] == ["1", "2", "3"]


async def test_an_unreachable_receiver_fails_after_max_attempts(stack: Stack) -> None:
    await channel(stack, url=f"http://127.0.0.1:{free_port()}/hook")
    await threshold_rule(stack, "10")
    stack.use(200)
    for seconds in (0, 10, 30):
        stack.clock.set(T0 + timedelta(seconds=seconds))
        assert (await stack.evaluate()).attempts == 1
    stack.clock.set(T0 + timedelta(hours=1))
    assert (await stack.evaluate()).attempts == 0
    (delivery,) = await stack.deliveries()
    assert delivery.state == pb.DELIVERY_STATE_FAILED
    assert [a.status_code for a in delivery.attempts] == [0, 0, 0]
    assert all("ConnectError" in a.error for a in delivery.attempts)


async def test_invoice_events_are_webhooks(stack: Stack) -> None:
    await channel(stack)
    await stack.notifications.CreateRule(
        pb.CreateRuleRequest(
            rule=pb.NotificationRule(
                key="invoices",
                type=pb.NOTIFICATION_RULE_TYPE_INVOICE,
                channel="channels/ops",
                customer="customers/acme",
                invoice_events=["invoice.issued", "invoice.paid"],
            )
        )
    )
    stack.clock.set(T0 + timedelta(days=3))
    stack.use(100)
    await stack.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    (invoice,) = (await stack.billing.ListInvoices(billing_pb2.ListInvoicesRequest())).invoices
    # When the invoice is issued and paid, each is one webhook; nothing was watched before
    await stack.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=invoice.name, force=True))
    await stack.billing.MarkInvoicePaid(billing_pb2.MarkInvoicePaidRequest(name=invoice.name))
    assert (await stack.evaluate()).attempts == 2
    issued, paid = sorted(stack.receiver.bodies(), key=lambda body: body["type"])
    assert (issued["type"], paid["type"]) == ("invoice.issued", "invoice.paid")
    assert issued["data"]["invoice"]["customer"] == "acme"
    assert issued["data"]["invoice"]["number"].startswith("ML-USD-2026-")
    assert issued["data"]["invoice"]["total"] == "1.00"
    assert paid["data"]["invoice"]["state"] == "paid"
    for headers, body in stack.receiver.received:
        now = int(stack.clock.now().timestamp())
        assert verify(SECRET, header=headers["meterline-signature"], body=body, now=now)


BAD_RULES = [
    ({"thresholds": ["-10"]}, "must be a percentage above 0"),
    ({"thresholds": ["0"]}, "must be a percentage above 0"),
    ({"thresholds": ["half"]}, "is not a number"),
    ({"thresholds": []}, "needs thresholds"),
    ({"feature": "nope"}, 'feature "nope" does not exist'),
    ({"customer": "ghost"}, 'customer "ghost" does not exist'),
    ({"key": "bad key!"}, "may contain only"),
]


async def test_bad_rules_are_clear_errors_that_change_nothing(stack: Stack) -> None:
    await channel(stack)
    for change, message in BAD_RULES:
        fields = {
            "key": "r",
            "type": pb.NOTIFICATION_RULE_TYPE_ENTITLEMENT_THRESHOLD,
            "channel": "ops",
            "thresholds": ["50"],
            **change,
        }
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stack.notifications.CreateRule(
                pb.CreateRuleRequest(rule=pb.NotificationRule(**fields))
            )
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, change
        assert message in failed.value.details(), change
    assert list((await stack.notifications.ListRules(pb.ListRulesRequest())).rules) == []


async def test_bad_channels_and_references(stack: Stack) -> None:
    for url, secret, message in [
        ("ftp://example.test/x", SECRET, "must be an absolute http(s) URL"),
        ("not a url", SECRET, "must be an absolute http(s) URL"),
        (stack.receiver.url, "short", "at least 16 characters"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stack.notifications.CreateChannel(
                pb.CreateChannelRequest(
                    channel=pb.NotificationChannel(key="c", url=url, signing_secret=secret)
                )
            )
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in failed.value.details()
    assert list((await stack.notifications.ListChannels(pb.ListChannelsRequest())).channels) == []
    await channel(stack)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await channel(stack)
    assert failed.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stack.notifications.CreateRule(
            pb.CreateRuleRequest(
                rule=pb.NotificationRule(
                    key="r", type=pb.NOTIFICATION_RULE_TYPE_INVOICE, channel="nowhere"
                )
            )
        )
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stack.notifications.CreateRule(
            pb.CreateRuleRequest(
                rule=pb.NotificationRule(
                    key="r",
                    type=pb.NOTIFICATION_RULE_TYPE_INVOICE,
                    channel="ops",
                    invoice_events=["invoice.lost"],
                )
            )
        )
    assert 'unknown invoice event "invoice.lost"' in failed.value.details()
    # A channel in use cannot be deleted; the secret is never returned
    await threshold_rule(stack, "50")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stack.notifications.DeleteChannel(pb.DeleteChannelRequest(name="channels/ops"))
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = await stack.notifications.GetChannel(pb.GetChannelRequest(name="channels/ops"))
    assert got.has_signing_secret and got.signing_secret == ""
    await stack.notifications.DeleteRule(pb.DeleteRuleRequest(name="rules/tokens"))
    await stack.notifications.DeleteChannel(pb.DeleteChannelRequest(name="channels/ops"))
    assert list((await stack.notifications.ListChannels(pb.ListChannelsRequest())).channels) == []


async def test_the_background_job_alerts_after_usage(migrated_db_url: str) -> None:
    # Given a control plane whose notification job runs on its own
    async with _stack(migrated_db_url, job_seconds=0.2) as stack:
        await channel(stack)
        await threshold_rule(stack, "50")
        # When usage crosses the threshold, the webhook arrives without anyone asking
        stack.use(700)
        for _ in range(100):
            if stack.receiver.received:
                break
            await asyncio.sleep(0.05)
        assert [b["data"]["threshold_percent"] for b in stack.receiver.bodies()] == ["50"]


async def test_cli_lists_deliveries_with_attempts(stack: Stack, capsys) -> None:
    cp = ["--cp", stack.address]
    ok = await asyncio.to_thread(
        cli,
        [
            "notifications",
            "channels",
            "create",
            "ops",
            "--url",
            stack.receiver.url,
            "--secret",
            SECRET,
            *cp,
        ],
    )
    assert ok == 0
    assert (
        await asyncio.to_thread(
            cli,
            [
                "notifications",
                "rules",
                "create",
                "tokens",
                "--channel",
                "ops",
                "--thresholds",
                "50,80",
                "--feature",
                "all-tokens",
                *cp,
            ],
        )
        == 0
    )
    stack.receiver.statuses = [503]
    stack.use(900)
    capsys.readouterr()
    assert await asyncio.to_thread(cli, ["notifications", "evaluate", *cp]) == 0
    assert "2 events" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, ["notifications", "deliveries", "--json", *cp]) == 0
    deliveries = json.loads(capsys.readouterr().out)
    assert sorted([a["status_code"] for a in d["attempts"]] for d in deliveries) == [[200], [503]]
    # Bad input: a clear error, exit status 1
    assert (
        await asyncio.to_thread(
            cli,
            [
                "notifications",
                "rules",
                "create",
                "x",
                "--channel",
                "ops",
                "--thresholds",
                "-5",
                *cp,
            ],
        )
        == 1
    )
    assert "must be a percentage above 0" in capsys.readouterr().err


def with_notifications(section: str) -> str:
    return PLAN + "  notifications:\n" + section


YAML_SECTION = f"""\
    channels:
      - {{key: ops, url: "http://127.0.0.1:9/hook", signing_secret: "{SECRET}"}}
    rules:
      - {{key: tokens, type: entitlement_threshold, channel: ops, thresholds: [50, "80", 100],
         feature: all-tokens}}
      - {{key: invoices, type: invoice, channel: ops, events: [invoice.issued]}}
"""


async def test_yaml_notifications_apply_idempotently(stack: Stack) -> None:
    applied = await stack.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=with_notifications(YAML_SECTION))
    )
    assert "created notification rule tokens" in list(applied.changes)
    rules = (await stack.notifications.ListRules(pb.ListRulesRequest())).rules
    assert [(r.key, list(r.thresholds)) for r in rules] == [
        ("invoices", []),
        ("tokens", ["50", "80", "100"]),
    ]
    again = await stack.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=with_notifications(YAML_SECTION))
    )
    assert not [c for c in again.changes if "notification" in c]


BAD_SECTIONS = [
    (YAML_SECTION.replace("[50,", "[-50,"), "must be a percentage above 0"),
    (YAML_SECTION.replace("feature: all-tokens", "feature: nope"), 'feature "nope" does not exist'),
    (
        YAML_SECTION.replace("http://127.0.0.1:9/hook", "mailto:ops@example.com"),
        "must be an absolute http(s) URL",
    ),
    (
        YAML_SECTION.replace("[invoice.issued]", "[invoice.lost]"),
        '"invoice.lost" is not an invoice event',
    ),
]


async def test_yaml_notifications_bad_input_changes_nothing(stack: Stack) -> None:
    for section, message in BAD_SECTIONS:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stack.gateway.ApplyConfig(
                gateway_pb2.ApplyConfigRequest(document=with_notifications(section))
            )
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in failed.value.details()
        channels = (await stack.notifications.ListChannels(pb.ListChannelsRequest())).channels
        assert list(channels) == []
        assert list((await stack.notifications.ListRules(pb.ListRulesRequest())).rules) == []


async def test_a_stored_loopback_channel_is_not_called_without_the_flag(stack: Stack) -> None:
    # Given: a channel on this machine, stored while the control plane allowed it
    await channel(stack)
    await threshold_rule(stack, "50")
    # When: the control plane runs without --allow-private-webhook-urls and the rule fires
    stack.cp.notifications = replace(stack.cp.notifications, allow_private_urls=False)
    stack.clock.set(T0 + timedelta(days=2))
    stack.use(600)
    assert (await stack.evaluate()).events_created == 1
    # Then: nothing reached the receiver; the attempt says why
    assert stack.receiver.received == []
    (delivery,) = (await stack.notifications.ListDeliveries(pb.ListDeliveriesRequest())).deliveries
    (attempt,) = delivery.attempts
    assert attempt.status_code == 0
    assert "loopback" in attempt.error and "--allow-private-webhook-urls" in attempt.error
