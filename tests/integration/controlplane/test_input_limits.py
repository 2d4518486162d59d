"""Bad input over the admin API is refused with INVALID_ARGUMENT and changes nothing:
identifiers and names, page tokens, far-off times, oversized prices, webhook URLs that name
this machine (docs/limits.md)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from controlplane.clock import FrozenClock
from controlplane.notifications.types import NotificationSettings
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from meterline.admin.v1 import (
    billing_pb2,
    catalog_pb2,
    customers_pb2,
    gateway_pb2,
    notifications_pb2,
    notifications_pb2_grpc,
)

from .conftest import T0, Harness


async def refused(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value.details() or ""


def customer(key: str, **fields: object) -> customers_pb2.CreateCustomerRequest:
    return customers_pb2.CreateCustomerRequest(customer=customers_pb2.Customer(key=key, **fields))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("acme/evil", "must be letters, digits", id="slash"),
        pytest.param("acme\x00", "must be letters, digits", id="nul"),
        pytest.param("acme\n", "must be letters, digits", id="newline"),
        pytest.param("acme\u202egnp.exe", "must be letters, digits", id="bidi-override"),
        pytest.param("ac me", "must be letters, digits", id="space"),
        pytest.param("-acme", "must be letters, digits", id="leading-dash"),
        pytest.param("a" * 100_000, "at most 128", id="100KB"),
        pytest.param("a" * 129, "at most 128", id="129"),
    ],
)
async def test_customer_keys_are_validated(harness: Harness, key: str, message: str) -> None:
    details = await refused(harness.customers.CreateCustomer(customer(key, subjects=["s"])))
    assert "customer.key" in details and message in details
    assert len(details) < 1000  # never echoes 100 KB back
    listed = await harness.customers.ListCustomers(customers_pb2.ListCustomersRequest())
    assert list(listed.customers) == []


@pytest.mark.parametrize("key", ["acme", "cus_123", "a.b~c:d@e-f", "A" * 128, "0"])
async def test_valid_customer_keys_are_accepted(harness: Harness, key: str) -> None:
    created = await harness.customers.CreateCustomer(customer(key))
    assert created.key == key


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"display_name": "x" * 201}, "at most 200", id="long-name"),
        pytest.param({"display_name": "Acme\u202e"}, "U+202E", id="bidi-name"),
        pytest.param({"subjects": ["a" * 1_000_000]}, "at most 200", id="1MB-subject"),
        pytest.param({"subjects": ["ok", "bad\x07"]}, "U+0007", id="bell-subject"),
    ],
)
async def test_customer_names_and_subjects_are_bounded(
    harness: Harness, fields: dict[str, object], message: str
) -> None:
    details = await refused(harness.customers.CreateCustomer(customer("acme", **fields)))
    assert message in details
    listed = await harness.customers.ListCustomers(customers_pb2.ListCustomersRequest())
    assert list(listed.customers) == []


@pytest.mark.parametrize(
    ("username", "message"),
    [
        pytest.param("x" * 1_000_000, "at most 200", id="1MB"),
        pytest.param("alice\u200b", "U+200B", id="zero-width"),
        pytest.param("alice\r\nbob", "U+000D", id="crlf"),
        pytest.param("alice/bob", "must not hold '/'", id="slash"),
    ],
)
async def test_consumer_names_are_bounded(harness: Harness, username: str, message: str) -> None:
    request = gateway_pb2.CreateConsumerRequest(consumer=gateway_pb2.Consumer(username=username))
    assert message in await refused(harness.gateway.CreateConsumer(request))
    # The same rule holds for declarative files
    document = f'_format_version: "3.0"\nconsumers:\n  - username: "{username[:300]}"\n'
    if "\r" not in username and "\n" not in username:
        assert (
            message
            in await refused(
                harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
            )
            or "at most 200" in message
        )
    listed = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert list(listed.consumers) == []


def forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(forged("o:-1"), id="negative"),
        pytest.param(forged("o:-1000000"), id="very-negative"),
        pytest.param(forged("o:99999999999999999999"), id="huge"),
        pytest.param(forged("o:007"), id="leading-zeros"),
        pytest.param(forged("o:+1"), id="plus"),
        pytest.param(forged("o: 1"), id="space"),
        pytest.param(forged("o:1") + "==", id="padding"),
        pytest.param("not base64!", id="garbage"),
        pytest.param("A" * 10_000, id="long"),
    ],
)
async def test_forged_page_tokens_are_refused(harness: Harness, token: str) -> None:
    for i in range(3):
        await harness.customers.CreateCustomer(customer(f"c{i}"))
    details = await refused(
        asyncio_wait(
            harness.customers.ListCustomers(
                customers_pb2.ListCustomersRequest(page_size=1, page_token=token)
            )
        )
    )
    assert "page_token" in details


async def asyncio_wait(call: object) -> object:
    # A forged token used to page forever: the call must answer promptly either way.
    return await asyncio.wait_for(call, timeout=10)  # type: ignore[arg-type]


async def test_real_page_tokens_walk_every_page(harness: Harness) -> None:
    for i in range(5):
        await harness.customers.CreateCustomer(customer(f"c{i}"))
    keys: list[str] = []
    token = ""
    for _ in range(10):
        page = await harness.customers.ListCustomers(
            customers_pb2.ListCustomersRequest(page_size=2, page_token=token)
        )
        keys += [c.key for c in page.customers]
        token = page.next_page_token
        if not token:
            break
    assert keys == ["c0", "c1", "c2", "c3", "c4"]


def timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


async def subscribed(harness: Harness, walkthrough: str) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(datetime(9999, 12, 31, tzinfo=UTC), id="year-9999"),
        pytest.param(datetime(9000, 1, 1, tzinfo=UTC), id="year-9000"),
        pytest.param(datetime(1969, 12, 31, tzinfo=UTC), id="before-1970"),
    ],
)
async def test_preview_far_from_now_is_invalid_argument_with_the_bounds(
    harness: Harness, walkthrough: str, when: datetime
) -> None:
    await subscribed(harness, walkthrough)
    request = billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    request.as_of_time.FromDatetime(when)
    details = await refused(harness.billing.PreviewInvoice(request))
    assert "as_of_time" in details and "[1970-01-01, 9000-01-01)" in details


async def test_preview_far_ahead_but_in_range_answers(harness: Harness, walkthrough: str) -> None:
    await subscribed(harness, walkthrough)
    request = billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    request.as_of_time.FromDatetime(datetime(8999, 6, 15, tzinfo=UTC))
    invoice = await harness.billing.PreviewInvoice(request)
    assert invoice.period_start_time.ToDatetime().year == 8999


async def test_a_subscription_starting_out_of_range_is_refused(
    harness: Harness, walkthrough: str
) -> None:
    await subscribed(harness, walkthrough)
    sub = customers_pb2.Subscription(customer="customers/acme", plan="plans/starter")
    sub.start_time.CopyFrom(timestamp(253402300799))  # 9999-12-31T23:59:59Z
    details = await refused(
        harness.customers.CreateSubscription(
            customers_pb2.CreateSubscriptionRequest(subscription=sub)
        )
    )
    assert "subscription.start_time" in details


def priced(amount: str) -> catalog_pb2.CreatePlanRequest:
    return catalog_pb2.CreatePlanRequest(
        plan=catalog_pb2.Plan(
            key="pro",
            currency="USD",
            billing_cadence="P1M",
            rate_cards=[
                catalog_pb2.RateCard(
                    key="platform",
                    price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount=amount),
                )
            ],
        )
    )


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        pytest.param("1e400", "at most 10^12 in magnitude", id="1e400"),
        pytest.param("1" * 5000, "at most 100", id="5000-digits"),
        pytest.param("1000000000000.01", "at most 10^12 in magnitude", id="just-over"),
        pytest.param("0." + "0" * 18 + "1", "at most 18 decimal places", id="19-places"),
        pytest.param("1e-400", "at most 18 decimal places", id="tiny"),
    ],
)
async def test_prices_are_bounded_in_magnitude_and_precision(
    harness: Harness, amount: str, message: str
) -> None:
    assert message in await refused(harness.catalog.CreatePlan(priced(amount)))
    # The same bounds hold for declarative files (the checks are shared)
    document = f"""\
_format_version: "3.0"
billing:
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{key: platform, price: {{type: flat, amount: "{amount[:120]}"}}}}
"""
    await refused(harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document)))
    assert list((await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())).plans) == []


@pytest.mark.parametrize("amount", ["1000000000000", "0.000000000000000001", "0.0000025"])
async def test_prices_within_the_bounds_are_kept_exactly(harness: Harness, amount: str) -> None:
    created = await harness.catalog.CreatePlan(priced(amount))
    assert Decimal(created.rate_cards[0].price.amount) == Decimal(amount)


PRIVATE_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
    "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://[::ffff:127.0.0.1]/hook",
]
SECRET = "whsec-0123456789abcdef"


@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_channels_naming_this_machine_or_its_link_are_refused(
    harness: Harness, url: str
) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        request = notifications_pb2.CreateChannelRequest(
            channel=notifications_pb2.NotificationChannel(key="ops", url=url, signing_secret=SECRET)
        )
        details = await refused(stub.CreateChannel(request))
        assert "--allow-private-webhook-urls" in details
        document = f"""\
_format_version: "3.0"
billing:
  notifications:
    channels:
      - {{key: ops, url: "{url}", signing_secret: "{SECRET}"}}
"""
        await refused(
            harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
        )
        listed = await stub.ListChannels(notifications_pb2.ListChannelsRequest())
        assert list(listed.channels) == []


async def test_public_and_private_network_urls_are_accepted(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        for i, url in enumerate(["https://hooks.example.com/x", "http://10.0.0.5/hook"]):
            created = await stub.CreateChannel(
                notifications_pb2.CreateChannelRequest(
                    channel=notifications_pb2.NotificationChannel(
                        key=f"c{i}", url=url, signing_secret=SECRET
                    )
                )
            )
            assert created.url == url


async def test_the_flag_allows_loopback_channels(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'm.db'}")
    cp = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=FrozenClock(T0),
        notifications=NotificationSettings(allow_private_urls=True),
    )
    port = await cp.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notifications_pb2_grpc.NotificationServiceStub(channel)
            created = await stub.CreateChannel(
                notifications_pb2.CreateChannelRequest(
                    channel=notifications_pb2.NotificationChannel(
                        key="local", url=PRIVATE_URLS[0], signing_secret=SECRET
                    )
                )
            )
            assert created.url == PRIVATE_URLS[0]
    finally:
        await cp.stop(0)
        db.dispose()


@pytest.mark.parametrize(
    "name",
    ["customers/acme\x00", "customers/" + "a" * 100_000, "customers/acme\x1b[31m"],
)
async def test_malformed_resource_names_are_invalid_not_internal(
    harness: Harness, name: str
) -> None:
    details = await refused(
        harness.customers.GetCustomer(customers_pb2.GetCustomerRequest(name=name))
    )
    assert "expected a resource name like customers/ID" in details and len(details) < 200
