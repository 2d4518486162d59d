"""Operator API over a real grpc.aio server, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from meterline.admin.v1 import (
    catalog_pb2,
    customers_pb2,
    gateway_pb2,
)


async def test_apply_walkthrough_then_again_changes_nothing(harness, walkthrough) -> None:
    first = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    assert "created consumer acme-corp" in first.changes
    assert any(c.startswith("created subscription") for c in first.changes)
    second = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    assert list(second.changes) == []
    assert second.config_version == first.config_version

    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert [(c.username, c.key_count) for c in consumers.consumers] == [("acme-corp", 1)]
    plans = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    assert [(p.key, p.version, p.state) for p in plans.plans] == [
        ("starter", 1, catalog_pb2.PLAN_STATE_ACTIVE)
    ]
    subs = await harness.customers.ListSubscriptions(
        customers_pb2.ListSubscriptionsRequest(parent="customers/acme")
    )
    assert len(subs.subscriptions) == 1


async def test_plugin_secrets_are_redacted_in_the_admin_api(harness, walkthrough) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    plugins = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    ai_proxy = next(p for p in plugins.plugins if p.plugin_name == "ai-proxy")
    assert ai_proxy.config["auth"]["header_value"] == "<redacted>"
    assert "sk-test" not in str(plugins)


async def test_invalid_entry_applies_nothing(harness, walkthrough) -> None:
    bad = walkthrough.replace("paths: [/chat]", "paths: [chat]")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chat" in err.value.details()
    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert list(consumers.consumers) == []
    features = await harness.catalog.ListFeatures(catalog_pb2.ListFeaturesRequest())
    assert list(features.features) == []


async def test_validate_only_stores_nothing(harness, walkthrough) -> None:
    response = await harness.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=walkthrough, validate_only=True)
    )
    assert "created consumer acme-corp" in response.changes
    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert list(consumers.consumers) == []


async def test_subject_of_two_customers_is_rejected_atomically(harness, walkthrough) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.customers.CreateCustomer(
            customers_pb2.CreateCustomerRequest(
                customer=customers_pb2.Customer(key="other", subjects=["acme-corp"])
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "acme-corp" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await harness.customers.GetCustomer(
            customers_pb2.GetCustomerRequest(name="customers/other")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("call", "request_message", "code", "needle"),
    [
        pytest.param(
            "catalog.CreateFeature",
            catalog_pb2.CreateFeatureRequest(
                feature=catalog_pb2.Feature(key="f", meter="no_such_meter")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no_such_meter",
            id="unknown-meter",
        ),
        pytest.param(
            "catalog.CreateFeature",
            catalog_pb2.CreateFeatureRequest(
                feature=catalog_pb2.Feature(key="f", meter="llm_tokens", filters={"colour": "red"})
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "colour",
            id="unknown-dimension",
        ),
        pytest.param(
            "customers.GetCustomer",
            customers_pb2.GetCustomerRequest(name="customers/nobody"),
            grpc.StatusCode.NOT_FOUND,
            "nobody",
            id="missing-customer",
        ),
        pytest.param(
            "gateway.GetConsumer",
            gateway_pb2.GetConsumerRequest(name="consumers/a/b"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "consumers/ID",
            id="malformed-name",
        ),
        pytest.param(
            "catalog.GetPlan",
            catalog_pb2.GetPlanRequest(name="plans/x/versions/one"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "plans/KEY",
            id="malformed-plan-name",
        ),
        pytest.param(
            "gateway.ListConsumers",
            gateway_pb2.ListConsumersRequest(page_token="garbage"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
            id="bad-page-token",
        ),
        pytest.param(
            "gateway.ApplyConfig",
            gateway_pb2.ApplyConfigRequest(document="_format_version: '3.0'\nservices: [:"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            id="malformed-yaml",
        ),
    ],
)
async def test_bad_input_gets_a_clear_status(harness, call, request_message, code, needle) -> None:
    service, method = call.split(".")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(getattr(harness, service), method)(request_message)
    assert err.value.code() == code
    assert needle in err.value.details()


async def test_plan_lifecycle_and_subscription_preconditions(harness) -> None:
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(
            feature=catalog_pb2.Feature(key="out", meter="llm_tokens", filters={"type": "output"})
        )
    )
    plan = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key="pro",
                currency="USD",
                billing_cadence="P1M",
                rate_cards=[
                    catalog_pb2.RateCard(
                        feature="out",
                        price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_UNIT, amount="0.00002"),
                    )
                ],
            )
        )
    )
    assert plan.state == catalog_pb2.PLAN_STATE_DRAFT
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="c1", subjects=["s1"])
        )
    )
    subscribe = customers_pb2.CreateSubscriptionRequest(
        subscription=customers_pb2.Subscription(customer="customers/c1", plan="plans/pro")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.customers.CreateSubscription(subscribe)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    published = await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))
    assert published.state == catalog_pb2.PLAN_STATE_ACTIVE
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    sub = await harness.customers.CreateSubscription(subscribe)
    assert sub.plan == "plans/pro/versions/1"
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await harness.customers.CreateSubscription(subscribe)
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
