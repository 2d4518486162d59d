"""Parsing whole declarative documents: the walkthrough, both decK shapes, YAML and JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from controlplane.catalog.types import (
    Entitlement,
    EntitlementType,
    Feature,
    Plan,
    Price,
    PriceType,
    RateCard,
)
from controlplane.customers.types import Customer
from controlplane.declarative import (
    BillingConfig,
    DeclarativeConfig,
    DeclarativeError,
    SubscriptionSpec,
    parse_document,
)
from controlplane.errors import InvalidArgument
from controlplane.gateway.keys import hash_key
from controlplane.gateway.types import Consumer, GatewayConfig, Plugin, PluginName, Route, Service

WALKTHROUGH = (Path(__file__).parent / "walkthrough.yaml").read_text()

KEY_AUTH_DEFAULT_CONFIG = {
    "key_names": ["apikey"],
    "hide_credentials": False,
    "key_in_query": True,
    "key_in_bearer": True,
    "key_in_body": False,
    "run_on_preflight": True,
}
AI_PROXY_CONFIG = {
    "route_type": "llm/v1/chat",
    "llm_format": "openai",
    "auth": {"header_name": "Authorization", "header_value": "Bearer sk-test"},
    "model": {
        "provider": "openai",
        "name": "gpt-4o-mini",
        "options": {"upstream_url": "http://127.0.0.1:9/v1"},
    },
}


def test_walkthrough_parses_to_the_expected_objects() -> None:
    config = parse_document(WALKTHROUGH)

    assert config == DeclarativeConfig(
        gateway=GatewayConfig(
            services=(Service(name="ai-service", url="http://127.0.0.1:9/"),),
            routes=(Route(name="chat", service="ai-service", paths=("/chat",)),),
            consumers=(Consumer(username="acme-corp", key_hashes=(hash_key("acme-secret-key"),)),),
            plugins=(
                Plugin(name=PluginName.AI_PROXY, service="ai-service", config=AI_PROXY_CONFIG),
                Plugin(name=PluginName.KEY_AUTH, config=KEY_AUTH_DEFAULT_CONFIG),
            ),
        ),
        billing=BillingConfig(
            features=(
                Feature(
                    key="ai-token",
                    meter="llm_tokens",
                    filters={"provider": "openai", "type": "input"},
                ),
            ),
            plans=(
                Plan(
                    key="starter",
                    name="Starter",
                    currency="USD",
                    billing_cadence="P1M",
                    rate_cards=(
                        RateCard(
                            key="ai-token",
                            feature="ai-token",
                            price=Price(type=PriceType.UNIT, amount=Decimal("1")),
                            entitlement=Entitlement(type=EntitlementType.BOOLEAN),
                        ),
                    ),
                ),
            ),
            customers=(Customer(key="acme", name="Acme Corp", subjects=("acme-corp",)),),
            subscriptions=(SubscriptionSpec(customer="acme", plan="starter", start=None),),
        ),
    )


def test_plain_keys_are_never_kept() -> None:
    config = parse_document(WALKTHROUGH)

    assert "acme-secret-key" not in repr(config)


FLAT = """
_format_version: "3.0"
services:
  - name: ai-service
    url: http://127.0.0.1:9/
  - name: other
    protocol: https
    host: example.com
routes:
  - name: chat
    service: ai-service
    paths: [/chat]
    methods: [post]
  - name: legacy
    service: {name: ai-service}
    paths: [/v1/completions, /old]
    strip_path: false
consumers:
  - username: acme-corp
    custom_id: acme-1
    keyauth_credentials: [{key: k1}, {key: k2}]
  - username: bob
plugins:
  - name: key-auth
    config: {key_names: [x-api-key], hide_credentials: true}
  - name: ai-proxy
    service: ai-service
    config: {model: {provider: openai}}
  - name: ai-proxy
    route: legacy
    enabled: false
    config:
      route_type: llm/v1/chat
      model: {provider: anthropic, name: claude-3-5-haiku, options: {max_tokens: 512}}
  - name: ai-proxy
    consumer: {name: bob}
    config: {llm_format: anthropic, model: {provider: anthropic, name: claude-x}}
"""

NESTED = """
_format_version: "3.0"
_info: {select_tags: [demo]}
_workspace: default
services:
  - name: other
    url: https://example.com:443
  - name: ai-service
    url: http://127.0.0.1:9/
    tags: [ai]
    plugins:
      - name: ai-proxy
        config: {model: {provider: openai}}
    routes:
      - name: legacy
        paths: [/v1/completions, /old]
        strip_path: false
        plugins:
          - name: ai-proxy
            enabled: false
            config:
              route_type: llm/v1/chat
              model: {provider: anthropic, name: claude-3-5-haiku, options: {max_tokens: 512}}
      - name: chat
        paths: [/chat]
        methods: [POST]
consumers:
  - username: bob
    plugins:
      - name: ai-proxy
        config: {llm_format: anthropic, model: {provider: anthropic, name: claude-x}}
  - username: acme-corp
    custom_id: acme-1
    keyauth_credentials: [{key: k1}, {key: k2, tags: [rotated]}]
plugins:
  - name: key-auth
    config: {key_names: [x-api-key], hide_credentials: true}
"""


def _without_attributes(config: GatewayConfig) -> GatewayConfig:
    return GatewayConfig(
        services=tuple(replace(s, attributes={}) for s in config.services),
        routes=tuple(replace(r, attributes={}) for r in config.routes),
        consumers=tuple(replace(c, attributes={}) for c in config.consumers),
        plugins=tuple(replace(p, attributes={}) for p in config.plugins),
    )


def test_flat_and_nested_forms_give_equal_gateway_configs() -> None:
    flat = parse_document(FLAT).gateway
    nested = parse_document(NESTED).gateway

    # The nested file's tags (its own and _info.select_tags) are the only difference.
    assert nested.services[0].attributes == {"tags": ["ai", "demo"]}
    assert all("demo" in route.attributes["tags"] for route in nested.routes)
    assert _without_attributes(flat) == _without_attributes(nested)
    assert [plugin.scope for plugin in flat.plugins] == [
        ("ai-proxy", "", "", "bob"),
        ("ai-proxy", "", "legacy", ""),
        ("ai-proxy", "ai-service", "", ""),
        ("key-auth", "", "", ""),
    ]
    assert flat.services[1] == Service(name="other", url="https://example.com:443")
    assert flat.routes[0] == Route(
        name="chat", service="ai-service", paths=("/chat",), methods=("POST",)
    )
    assert flat.consumers[0].key_hashes == (hash_key("k1"), hash_key("k2"))
    assert flat.plugins[3].config == {
        "key_names": ["x-api-key"],
        "hide_credentials": True,
        "key_in_query": True,
        "key_in_bearer": True,
        "key_in_body": False,
        "run_on_preflight": True,
    }
    assert flat.plugins[1].enabled is False


def test_json_document_equals_its_yaml_twin() -> None:
    data = yaml.safe_load(WALKTHROUGH)

    assert parse_document(json.dumps(data, indent="\t")) == parse_document(WALKTHROUGH)


def test_service_url_is_built_from_kong_parts() -> None:
    text = """
_format_version: "3.0"
services:
  - {name: a, host: upstream.local}
  - {name: b, protocol: https, host: api.example.com, port: 8443, path: /v1}
"""
    services = parse_document(text).gateway.services

    assert [service.url for service in services] == [
        "http://upstream.local:80",
        "https://api.example.com:8443/v1",
    ]


def test_ai_proxy_options_are_normalised() -> None:
    text = """
_format_version: 3.0
services: [{name: s, url: "http://x/"}]
plugins:
  - name: ai-proxy
    service: s
    config:
      route_type: preserve
      auth: {param_name: key, param_value: secret, param_location: query}
      model:
        provider: openai_compatible
        options:
          upstream_url: https://llm.internal/v1
          max_tokens: 1024
          input_cost: "0.15"
          output_cost: 1
          anthropic_version: "2023-06-01"
"""
    (plugin,) = parse_document(text).gateway.plugins

    assert plugin.config == {
        "route_type": "preserve",
        "llm_format": "openai",
        "auth": {"param_name": "key", "param_value": "secret", "param_location": "query"},
        "model": {
            "provider": "openai_compatible",
            "name": "",
            "options": {
                "upstream_url": "https://llm.internal/v1",
                "max_tokens": 1024,
                "input_cost": "0.15",
                "output_cost": "1",
                "anthropic_version": "2023-06-01",
            },
        },
    }


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param("now", None, id="now"),
        pytest.param(None, None, id="absent-means-now"),
        pytest.param("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC), id="utc-z"),
        pytest.param(
            "2025-03-01T09:30:00+02:00",
            datetime(2025, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
            id="offset",
        ),
    ],
)
def test_subscription_start(start: str | None, expected: datetime | None) -> None:
    data = yaml.safe_load(WALKTHROUGH)
    subscription = data["billing"]["subscriptions"][0]
    if start is None:
        del subscription["start"]
    else:
        subscription["start"] = start

    (spec,) = parse_document(yaml.safe_dump(data)).billing.subscriptions

    assert spec.start == expected


def test_unquoted_timestamp_is_still_read_with_its_zone() -> None:
    text = WALKTHROUGH.replace("start: now", "start: 2025-01-01T00:00:00Z")

    (spec,) = parse_document(text).billing.subscriptions

    assert spec.start == datetime(2025, 1, 1, tzinfo=UTC)


def test_feature_filter_aliases_and_integer_status_code() -> None:
    text = WALKTHROUGH.replace(
        "filters: {provider: openai, type: input}",
        "filters: {type: response, status_code: 200}",
    )

    (feature,) = parse_document(text).billing.features

    assert feature.filters == {"type": "output", "status_code": "200"}


def test_rate_card_key_and_price_only_card() -> None:
    text = WALKTHROUGH.replace(
        '- {feature: ai-token, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}',
        '- {key: tokens, feature: ai-token, price: {type: unit, amount: "0.0000025"}}',
    )

    (card,) = parse_document(text).billing.plans[0].rate_cards

    assert card == RateCard(
        key="tokens",
        feature="ai-token",
        price=Price(type=PriceType.UNIT, amount=Decimal("0.0000025")),
    )


def test_gateway_only_document() -> None:
    config = parse_document('_format_version: "3.0"\n')

    assert config == DeclarativeConfig(gateway=GatewayConfig(), billing=BillingConfig())


@given(
    # Within the catalog's bounds (docs/limits.md): at most 10^12, at most 18 decimal places.
    amount=st.integers(0, 18).flatmap(
        lambda places: st.decimals(
            min_value=0, max_value=10**12, places=places, allow_nan=False, allow_infinity=False
        )
    ),
)
def test_any_quoted_decimal_amount_is_kept_exactly(amount: Decimal) -> None:
    data = yaml.safe_load(WALKTHROUGH)
    data["billing"]["plans"][0]["rate_cards"][0]["price"]["amount"] = str(amount)

    config = parse_document(yaml.safe_dump(data))

    price = config.billing.plans[0].rate_cards[0].price
    assert price is not None
    assert price.amount == amount
    assert str(price.amount) == str(amount)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '_format_version: "3.0"\nservices:\n  - name: a\n    url: [unclosed\n',
            "invalid YAML at line 5, column 1",
            id="unclosed-flow-sequence",
        ),
        pytest.param(
            '_format_version: "3.0"\nservices:\n- name: a\n  name: b\n',
            "invalid YAML at line 4, column 3: while constructing a mapping, "
            "found duplicate key 'name'",
            id="duplicate-key",
        ),
        pytest.param(
            '{"_format_version": "3.0",\n "services": [}',
            "invalid JSON at line 2, column 15",
            id="bad-json",
        ),
        pytest.param(
            '{"_format_version": "3.0", "_format_version": "3.0"}',
            "invalid JSON: duplicate key '_format_version'",
            id="json-duplicate-key",
        ),
        pytest.param("- a\n- b\n", "the document must be a mapping", id="not-a-mapping"),
        pytest.param(
            '_format_version: "3.0"\n---\n_format_version: "3.0"\n',
            "invalid YAML at line 2, column 1: expected a single document in the stream, but found "
            "another document",
            id="two-documents",
        ),
        pytest.param("a: b: c\n", "invalid YAML at line 1, column 5", id="nested-colon"),
        pytest.param("", "the document must be a mapping", id="empty"),
    ],
)
def test_malformed_text_is_rejected_with_its_position(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_document(text)

    assert message in str(raised.value)


def test_every_problem_is_reported_in_document_order() -> None:
    text = """
_format_version: "3.0"
services:
  - {name: ai-service, url: "ftp://x"}
routes:
  - {name: chat, service: ai-service, paths: [chat]}
billing:
  plans:
    - {key: starter, name: S, currency: usd, billing_cadence: P1M, rate_cards: []}
"""
    with pytest.raises(DeclarativeError) as raised:
        parse_document(text)

    assert raised.value.problems == (
        'services[0] (ai-service): url must be an http(s) URL, got "ftp://x"',
        'routes[0] (chat): paths[0] must start with "/"',
        "billing.plans[0] (starter): unknown currency 'usd': "
        "expected an upper-case ISO 4217 code like USD",
    )
    assert str(raised.value).startswith("3 problems in the declarative config:\n- services[0]")
    assert isinstance(raised.value, InvalidArgument)


def test_one_mistake_is_reported_once() -> None:
    # The bad service name must not also make every reference to it "not defined".
    text = """
_format_version: "3.0"
services: [{name: "ai service", url: "http://x/"}]
routes: [{name: chat, service: "ai service", paths: [/chat]}]
"""
    with pytest.raises(DeclarativeError) as raised:
        parse_document(text)

    assert raised.value.problems == (
        'services[0] (ai service): name "ai service" may contain only letters, digits and "._~-"',
    )
