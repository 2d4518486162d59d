"""Every validation error of a declarative document names the entry it is about."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.declarative import DeclarativeError, parse_document

BASE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "walkthrough.yaml").read_text())
DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def patched(changes: dict[str, object]) -> str:
    """The walkthrough with each dotted path (``routes[0].paths``) set, or deleted, as YAML."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        steps: list[str | int] = [
            name if name else int(index) for name, index in _STEP.findall(path)
        ]
        parent: Any = data
        for step in steps[:-1]:
            parent = parent[step]
        last = steps[-1]
        if value is DELETE:
            del parent[last]
        elif isinstance(parent, list) and last == len(parent):
            parent.append(value)
        else:
            parent[last] = value
    return yaml.safe_dump(data, sort_keys=False)


AI_PROXY = "plugins[1] (ai-proxy)"
MODEL = "plugins[1].config.model"
PLAN = "billing.plans[0] (starter)"
CARD = f"{PLAN}.rate_cards[0]"

CASES = [
    # -- document ------------------------------------------------------------------------------
    pytest.param(
        {"_format_version": DELETE}, '_format_version is required: add _format_version: "3.0"',
        id="format-version-missing",
    ),
    pytest.param(
        {"_format_version": "1.1"}, "_format_version must be \"3.0\", got '1.1'",
        id="format-version-old",
    ),
    pytest.param(
        {"upstream": []}, 'unknown top-level key "upstream" (did you mean "upstreams"?)',
        id="unknown-top-level-key",
    ),
    pytest.param({"services": {"name": "x"}, "routes": DELETE, "plugins[1].service": DELETE},
                 "services: must be a list, got a mapping",
                 id="services-not-a-list"),
    pytest.param({"routes[1]": "chat"}, "routes[1]: must be a mapping, got a string",
                 id="route-not-a-mapping"),
    # -- services ------------------------------------------------------------------------------
    pytest.param({"services[0].name": DELETE, "routes": DELETE, "plugins[1].service": DELETE},
                 "services[0]: name is required",
                 id="service-name-missing"),
    pytest.param({"services[0].name": "ai service", "routes": DELETE,
                  "plugins[1].service": DELETE},
                 'services[0] (ai service): name "ai service" may contain only letters',
                 id="service-name-charset"),
    pytest.param({"services[1]": {"name": "ai-service", "url": "http://y/"}},
                 'services[1] (ai-service): duplicate service name "ai-service", already defined '
                 "at services[0] (ai-service)", id="service-duplicate"),
    pytest.param({"services[0].url": "ftp://x/"},
                 'services[0] (ai-service): url must be an http(s) URL, got "ftp://x/"',
                 id="service-url-scheme"),
    pytest.param({"services[0].url": "http://x:99999/"},
                 "services[0] (ai-service): url must be an http(s) URL",
                 id="service-url-port"),
    pytest.param({"services[0].host": "x"},
                 "services[0] (ai-service): give either url or host, not both",
                 id="service-url-and-host"),
    pytest.param({"services[0].url": DELETE},
                 "services[0] (ai-service): url (or host) is required", id="service-no-url"),
    pytest.param({"services[0].url": DELETE, "services[0].host": "h", "services[0].path": "v1"},
                 'services[0] (ai-service): path must start with "/", got "v1"',
                 id="service-path-relative"),
    pytest.param({"services[0].url": DELETE, "services[0].host": "h", "services[0].port": 0},
                 "services[0] (ai-service): port must be at least 1, got 0",
                 id="service-port-zero"),
    pytest.param({"services[0].retires": 5},
                 'services[0] (ai-service): unknown field "retires" (did you mean "retries"?)',
                 id="service-unknown-field"),
    # -- routes --------------------------------------------------------------------------------
    pytest.param({"routes[0].paths": ["chat"]}, 'routes[0] (chat): paths[0] must start with "/"',
                 id="route-path-relative"),
    pytest.param({"routes[0].paths": DELETE}, "routes[0] (chat): paths is required",
                 id="route-paths-missing"),
    pytest.param({"routes[0].paths": []}, "routes[0] (chat): paths must not be empty",
                 id="route-paths-empty"),
    pytest.param({"routes[0].paths": "/chat"},
                 "routes[0] (chat): paths must be a list of strings, got a string",
                 id="route-paths-not-a-list"),
    pytest.param({"routes[0].paths": ["/chat", "/chat"]},
                 'routes[0] (chat): paths[1] repeats "/chat"', id="route-paths-repeated"),
    pytest.param({"routes[0].methods": ["FETCH"]},
                 'routes[0] (chat): methods[0] "FETCH" is not an HTTP method',
                 id="route-method-unknown"),
    pytest.param({"routes[0].strip_path": "yes"},
                 "routes[0] (chat): strip_path must be true or false, got a string",
                 id="route-strip-path-string"),
    pytest.param({"routes[0].service": "ai-svc"},
                 'routes[0] (chat): service "ai-svc" is not defined', id="route-unknown-service"),
    pytest.param({"routes[0].service": "ai-servic"},
                 'routes[0] (chat): service "ai-servic" is not defined (did you mean '
                 '"ai-service"?)', id="route-unknown-service-suggested"),
    pytest.param({"routes[0].service": {"name": "ai-svc"}},
                 'routes[0] (chat): service "ai-svc" is not defined',
                 id="route-unknown-service-by-mapping"),
    pytest.param({"routes[0].service": {"id": "123"}},
                 'routes[0] (chat): service must be a name or {name: NAME}, got a mapping with '
                 '"id"',
                 id="route-service-by-id"),
    pytest.param({"routes[0].service": DELETE}, "routes[0] (chat): service is required",
                 id="route-service-missing"),
    pytest.param({"routes[0].name": DELETE}, "routes[0]: name is required",
                 id="route-name-missing"),
    pytest.param({"routes[1]": {"name": "chat", "service": "ai-service", "paths": ["/x"]}},
                 'routes[1] (chat): duplicate route name "chat", already defined at routes[0]',
                 id="route-duplicate"),
    pytest.param({"services[0].routes": [{"name": "r", "service": "ai-service", "paths": ["/r"]}]},
                 "services[0] (ai-service).routes[0] (r): service must not be set on a route "
                 "nested under a service", id="nested-route-with-service"),
    pytest.param({"services[0].routes": [{"name": "r", "paths": ["r"]}]},
                 'services[0] (ai-service).routes[0] (r): paths[0] must start with "/"',
                 id="nested-route-path"),
    # -- consumers -----------------------------------------------------------------------------
    pytest.param({"consumers[0].username": DELETE}, "consumers[0]: username is required",
                 id="consumer-username-missing"),
    pytest.param({"consumers[1]": {"username": "bob",
                                   "keyauth_credentials": [{"key": "acme-secret-key"}]}},
                 "consumers[1] (bob).keyauth_credentials[0]: key is already used by "
                 "consumers[0] (acme-corp).keyauth_credentials[0]", id="consumer-key-reused"),
    pytest.param({"consumers[0].keyauth_credentials[1]": {"key": "acme-secret-key"}},
                 "consumers[0] (acme-corp).keyauth_credentials[1]: key is already used",
                 id="consumer-key-twice"),
    pytest.param({"consumers[0].keyauth_credentials[0]": {}},
                 "consumers[0] (acme-corp).keyauth_credentials[0]: key is required",
                 id="consumer-key-missing"),
    pytest.param({"consumers[0].keyauth_credentials[0].tgas": ["a"]},
                 'consumers[0] (acme-corp).keyauth_credentials[0]: unknown field "tgas" '
                 '(did you mean "tags"?)',
                 id="consumer-key-unknown-field"),
    pytest.param({"consumers[0].custom_id": "c1",
                  "consumers[1]": {"username": "bob", "custom_id": "c1"}},
                 'consumers[1] (bob): custom_id "c1" is already used by consumers[0] (acme-corp)',
                 id="consumer-custom-id-reused"),
    pytest.param({"consumers[1]": {"username": "acme-corp"}},
                 'consumers[1] (acme-corp): duplicate consumer username "acme-corp"',
                 id="consumer-duplicate"),
    # -- plugins -------------------------------------------------------------------------------
    pytest.param({"plugins[0].name": "rate-limitng"},
                 'plugins[0] (rate-limitng): name "rate-limitng" is not a plugin Meterline '
                 'serves (did you mean "rate-limiting"?)', id="plugin-unknown"),
    pytest.param({"plugins[0].name": "cors"},
                 'plugins[0] (cors): name "cors" is not a plugin Meterline serves',
                 id="plugin-not-served"),
    pytest.param({"plugins[0].config": {"key_in_headr": True}},
                 'plugins[0] (key-auth): unknown field "config.key_in_headr" '
                 '(did you mean "key_in_header"?)',
                 id="key-auth-unknown-config"),
    pytest.param({"plugins[0].config": {"key_in_query": "yes"}},
                 "plugins[0] (key-auth): config.key_in_query must be true or false",
                 id="key-auth-flag-string"),
    pytest.param({"plugins[0].config": {"key_names": ["api key"]}},
                 'plugins[0] (key-auth): config.key_names[0] "api key" is not a valid header name',
                 id="key-auth-bad-key-name"),
    pytest.param({"plugins[0].config": {"key_names": []}},
                 "plugins[0] (key-auth): config.key_names must not be empty",
                 id="key-auth-no-key-names"),
    pytest.param({"plugins[0].consumer": "acme-corp"},
                 "plugins[0] (key-auth): key-auth cannot be scoped to a consumer",
                 id="key-auth-on-consumer"),
    pytest.param({"plugins[2]": {"name": "key-auth"}},
                 "plugins[2] (key-auth): duplicate key-auth plugin at global scope, already "
                 "defined at plugins[0] (key-auth)", id="plugin-duplicate-global"),
    pytest.param({"services[0].plugins": [{"name": "ai-proxy",
                                           "config": {"model": {"provider": "openai"}}}]},
                 f'{AI_PROXY}: duplicate ai-proxy plugin for service "ai-service", already defined'
                 " at services[0] (ai-service).plugins[0] (ai-proxy)",
                 id="plugin-duplicate-across-forms"),
    pytest.param({"services[0].plugins": [{"name": "ai-proxy-advanced", "config": {
                      "targets": [{"model": {"provider": "openai", "name": "gpt-4o"}}]}}]},
                 f"{AI_PROXY}: ai-proxy plugin beside the ai-proxy-advanced plugin for service "
                 '"ai-service", already defined at services[0] (ai-service).plugins[0] '
                 "(ai-proxy-advanced)", id="ai-proxy-beside-ai-proxy-advanced"),
    pytest.param({"routes[0].paths": ["/metrics"]},
                 'routes[0] (chat): paths[0] "/metrics" is reserved', id="route-on-reserved-path"),
    pytest.param({"plugins[1].route": "chatt"}, f'{AI_PROXY}: route "chatt" is not defined',
                 id="plugin-unknown-route"),
    pytest.param({"plugins[1].consumer": {"name": "bob"}},
                 f'{AI_PROXY}: consumer "bob" is not defined', id="plugin-unknown-consumer"),
    pytest.param({"plugins[1].service": 7},
                 f"{AI_PROXY}: service must be a name or {{name: NAME}}, got an integer",
                 id="plugin-service-not-a-name"),
    pytest.param({"plugins[1].enabled": "true"},
                 f"{AI_PROXY}: enabled must be true or false, got a string",
                 id="plugin-enabled-string"),
    pytest.param({"plugins[1].protocol": ["http"]},
                 f'{AI_PROXY}: unknown field "protocol" (did you mean "protocols"?)',
                 id="plugin-unknown-field"),
    pytest.param({"services[0].plugins": [{"name": "key-auth", "service": "ai-service"}]},
                 "services[0] (ai-service).plugins[0] (key-auth): service must not be set on a "
                 "plugin nested under a service", id="nested-plugin-with-service"),
    pytest.param({"plugins[1].config": DELETE}, f"{AI_PROXY}: config.model is required",
                 id="ai-proxy-no-config"),
    pytest.param({"plugins[1].config.model.provider": "openia"},
                 f'{AI_PROXY}: config.model.provider "openia" is not a provider (did you mean '
                 '"openai"?)',
                 id="ai-proxy-unknown-provider"),
    pytest.param({"plugins[1].config.model.provider": DELETE},
                 f"{AI_PROXY}: config.model.provider is required", id="ai-proxy-no-provider"),
    pytest.param({"plugins[1].config.route_type": "llm/v2/chat"},
                 f'{AI_PROXY}: config.route_type must be one of "llm/v1/chat", '
                 '"llm/v1/completions", "llm/v1/embeddings", "llm/v1/responses", "preserve", '
                 'got "llm/v2/chat" (did you mean "llm/v1/chat"?)',
                 id="ai-proxy-route-type"),
    pytest.param({"plugins[1].config.llm_format": "anthropic"},
                 f'{AI_PROXY}: config.llm_format "anthropic" needs model.provider "anthropic" '
                 'or "bedrock", got "openai"', id="ai-proxy-llm-format-anthropic-on-openai"),
    pytest.param({"plugins[1].config.model.provider": "azure",
                  "plugins[1].config.model.options": DELETE},
                 f'{AI_PROXY}: config.model.options.azure_instance is required for provider '
                 '"azure" (or options.upstream_url)', id="ai-proxy-azure-needs-instance"),
    pytest.param({"plugins[1].config.model.provider": "azure",
                  "plugins[1].config.model.options": {"azure_instance": "acme"}},
                 f'{AI_PROXY}: config.model.options.azure_deployment_id is required for '
                 'provider "azure"', id="ai-proxy-azure-needs-deployment"),
    pytest.param({"plugins[1].config.model.provider": "azure",
                  "plugins[1].config.model.options": {"azure_instance": "a.b",
                                                      "azure_deployment_id": "d"}},
                 f'{AI_PROXY}: config.model.options.azure_instance "a.b" is not an Azure '
                 'resource name', id="ai-proxy-azure-bad-instance"),
    pytest.param({"plugins[1].config.model.options.azure_instance": "acme"},
                 f'{AI_PROXY}: config.model.options.azure_instance is only for provider "azure"',
                 id="ai-proxy-azure-option-on-openai"),
    pytest.param({"plugins[1].config.llm_format": "klingon"},
                 f"{AI_PROXY}: config.llm_format must be one of \"openai\", \"anthropic\", "
                 "\"gemini\"",
                 id="ai-proxy-llm-format"),
    pytest.param({"plugins[1].config.llm_format": "gemini"},
                 f'{AI_PROXY}: config.llm_format "gemini" needs model.provider "gemini", got '
                 '"openai"',
                 id="ai-proxy-gemini-format-on-openai"),
    pytest.param({"plugins[1].config.model.options.gemini": {"project_id": "p"}},
                 f'{AI_PROXY}: config.model.options.gemini is only for provider "gemini"',
                 id="ai-proxy-gemini-options-on-openai"),
    pytest.param({"plugins[1].config.auth.gcp_use_service_account": True},
                 f'{AI_PROXY}: config.auth.gcp_use_service_account is only for provider "gemini"',
                 id="ai-proxy-gcp-auth-on-openai"),
    pytest.param({"plugins[1].config.model.options.upstream_url": "127.0.0.1:9"},
                 f'{AI_PROXY}: config.model.options.upstream_url must be an http(s) URL',
                 id="ai-proxy-upstream-url"),
    pytest.param({"plugins[1].config.model.provider": "openai_compatible",
                  "plugins[1].config.model.options": DELETE},
                 f'{AI_PROXY}: config.model.options.upstream_url is required for provider '
                 '"openai_compatible"', id="ai-proxy-compatible-needs-url"),
    pytest.param({"plugins[1].config.model.options.max_tokens": 0},
                 f"{AI_PROXY}: config.model.options.max_tokens must be at least 1, got 0",
                 id="ai-proxy-max-tokens-zero"),
    pytest.param({"plugins[1].config.model.options.max_tokens": "10"},
                 f"{AI_PROXY}: config.model.options.max_tokens must be an integer, got a string",
                 id="ai-proxy-max-tokens-string"),
    # Kong writes costs as YAML floats: short ones are taken as written; this one lost digits.
    pytest.param({"plugins[1].config.model.options.input_cost": 0.1234567890123456789},
                 f"{AI_PROXY}: config.model.options.input_cost must be a quoted decimal string, "
                 "not the float 0.12345678901234568", id="ai-proxy-cost-float-too-precise"),
    pytest.param({"plugins[1].config.model.options.temprature": 1},
                 f'{AI_PROXY}: unknown field "config.model.options.temprature" '
                 '(did you mean "temperature"?)',
                 id="ai-proxy-unknown-option"),
    pytest.param({"plugins[1].config.auth.header_value": DELETE},
                 f"{AI_PROXY}: config.auth.header_value is required together with "
                 "header_name/header_value", id="ai-proxy-header-without-value"),
    pytest.param({"plugins[1].config.auth": {"param_name": "k", "param_value": "v"}},
                 f"{AI_PROXY}: config.auth.param_location is required with param_name",
                 id="ai-proxy-param-without-location"),
    pytest.param({"plugins[1].config.auth.param_location": "cookie"},
                 f'{AI_PROXY}: config.auth.param_location must be one of "query", "body"',
                 id="ai-proxy-param-location"),
    pytest.param({"plugins[1].config.auth.azure_client_idd": "x"},
                 f'{AI_PROXY}: unknown field "config.auth.azure_client_idd" '
                 '(did you mean "azure_client_id"?)',
                 id="ai-proxy-unknown-auth-field"),
    pytest.param({"plugins[1].config.model": "gpt-4o"},
                 f"{AI_PROXY}: config.model must be a mapping, got a string",
                 id="ai-proxy-model-not-a-mapping"),
    # -- billing: features ---------------------------------------------------------------------
    pytest.param({"billing.features[0].meter": "tokens"},
                 'billing.features[0] (ai-token): meter must be one of "llm_tokens", '
                 'got "tokens"', id="feature-unknown-meter"),
    pytest.param({"billing.features[0].meter": "llm_token"},
                 'got "llm_token" (did you mean "llm_tokens"?): the built-in "llm_tokens" counts '
                 "every token the gateway proxies; a meter of your own is declared under "
                 "billing.meters", id="feature-meter-misspelt"),
    pytest.param({"billing.features[0].filters.region": "eu"},
                 'billing.features[0] (ai-token): filters.region is not a dimension of meter '
                 '"llm_tokens"', id="feature-unknown-dimension"),
    pytest.param({"billing.features[0].filters.type": "prompt"},
                 'billing.features[0] (ai-token): filters.type must be one of "input", '
                 '"output", "cached_input", "reasoning", "cache_write", "request", "response", '
                 'got "prompt"', id="feature-bad-token-type"),
    pytest.param({"billing.features[0].filters.provider": ["openai"]},
                 "billing.features[0] (ai-token): filters.provider must be a non-empty string",
                 id="feature-filter-list"),
    pytest.param({"billing.features[1]": {"key": "ai-token", "meter": "llm_tokens"}},
                 'billing.features[1] (ai-token): duplicate feature key "ai-token"',
                 id="feature-duplicate"),
    pytest.param({"billing.features[0].key": "ai token",
                  "billing.plans[0].rate_cards[0].feature": "ai token"},
                 'billing.features[0] (ai token): key "ai token" must start with a letter',
                 id="feature-key-charset"),
    pytest.param({"billing.unknown": []}, 'billing: unknown field "unknown"',
                 id="billing-unknown-section"),
    # -- billing: plans ------------------------------------------------------------------------
    pytest.param({"billing.plans[0].currency": "XYZ"},
                 f"{PLAN}: unknown currency 'XYZ'", id="plan-unknown-currency"),
    pytest.param({"billing.plans[0].billing_cadence": "P0D"},
                 f"{PLAN}: billing cadence 'P0D' must be positive", id="plan-cadence-zero"),
    pytest.param({"billing.plans[0].billing_cadence": "-P1M"},
                 f"{PLAN}: billing cadence '-P1M'", id="plan-cadence-negative"),
    pytest.param({"billing.plans[0].billing_cadence": "monthly"},
                 f"{PLAN}: billing cadence 'monthly' is not an ISO 8601 duration",
                 id="plan-cadence-not-iso"),
    pytest.param({"billing.plans[0].name": DELETE}, f"{PLAN}: name is required",
                 id="plan-name-missing"),
    pytest.param({"billing.plans[0].rate_cards": DELETE}, f"{PLAN}: rate_cards is required",
                 id="plan-rate-cards-missing"),
    pytest.param({"billing.plans[1]": copy.deepcopy(BASE["billing"]["plans"][0])},
                 'billing.plans[1] (starter): duplicate plan key "starter", already defined at '
                 f"{PLAN}", id="plan-duplicate"),
    pytest.param({"billing.plans[0].rate_cards[0].feature": "ai-tokn"},
                 f'{CARD}: unknown feature "ai-tokn"', id="rate-card-unknown-feature"),
    pytest.param({"billing.plans[0].rate_cards[0].price.amount": 0.1},
                 f"{CARD}: price.amount must be a quoted decimal string, not the float 0.1: "
                 'write amount: "0.1"', id="price-float"),
    pytest.param({"billing.plans[0].rate_cards[0].price.amount": "-1"},
                 f'{CARD}: price.amount must not be negative, got "-1"', id="price-negative"),
    pytest.param({"billing.plans[0].rate_cards[0].price.amount": "one"},
                 f'{CARD}: price.amount must be a decimal number like "0.5", got "one"',
                 id="price-not-a-number"),
    pytest.param({"billing.plans[0].rate_cards[0].price.amount": "NaN"},
                 f'{CARD}: price.amount must be a finite decimal number, got "NaN"',
                 id="price-nan"),
    pytest.param({"billing.plans[0].rate_cards[0].price.amount": True},
                 f"{CARD}: price.amount must be a decimal string", id="price-boolean"),
    pytest.param({"billing.plans[0].rate_cards[0].price.amount": DELETE},
                 f"{CARD}: price.amount is required", id="price-amount-missing"),
    pytest.param({"billing.plans[0].rate_cards[0].price.type": "stepped"},
                 f'{CARD}: price.type must be one of "flat", "unit", "tiered", "package", '
                 '"model_list", got "stepped"', id="price-type"),
    pytest.param({"billing.plans[0].rate_cards[0].entitlement.type": "quota"},
                 f'{CARD}: entitlement.type must be one of "boolean", "static", "metered", '
                 'got "quota"', id="entitlement-type"),
    pytest.param({"billing.plans[0].rate_cards[0].price": DELETE,
                  "billing.plans[0].rate_cards[0].entitlement": DELETE},
                 f"{CARD}: needs a price, an entitlement or both", id="rate-card-empty"),
    pytest.param({"billing.plans[0].rate_cards[1]": {"key": "other", "feature": "ai-token",
                                                     "entitlement": {"type": "boolean"}}},
                 f'{PLAN}.rate_cards[1] (other): feature "ai-token" is already in {CARD}',
                 id="rate-card-feature-twice"),
    pytest.param({"billing.features[1]": {"key": "f2", "meter": "llm_tokens"},
                  "billing.plans[0].rate_cards[1]": {"key": "ai-token", "feature": "f2",
                                                     "entitlement": {"type": "boolean"}}},
                 f'{PLAN}.rate_cards[1] (ai-token): duplicate rate card key "ai-token"',
                 id="rate-card-key-twice"),
    # -- billing: customers and subscriptions --------------------------------------------------
    pytest.param({"billing.customers[0].subjects": []},
                 "billing.customers[0] (acme): subjects must not be empty",
                 id="customer-no-subjects"),
    pytest.param({"billing.customers[1]": {"key": "beta", "name": "B", "subjects": ["acme-corp"]}},
                 'billing.customers[1] (beta): subjects[0] "acme-corp" already belongs to '
                 "billing.customers[0] (acme)", id="subject-in-two-customers"),
    pytest.param({"billing.customers[0].name": DELETE},
                 "billing.customers[0] (acme): name is required", id="customer-name-missing"),
    pytest.param({"billing.customers[0].subjects": [""]},
                 "billing.customers[0] (acme): subjects[0] must be a non-empty string",
                 id="customer-empty-subject"),
    pytest.param({"billing.subscriptions[0].customer": "acm"},
                 'billing.subscriptions[0] (acm): unknown customer "acm"',
                 id="subscription-unknown-customer"),
    pytest.param({"billing.subscriptions[0].plan": "pro"},
                 'billing.subscriptions[0] (acme): unknown plan "pro"',
                 id="subscription-unknown-plan"),
    pytest.param({"billing.subscriptions[0].start": "2025-01-01T00:00:00"},
                 'billing.subscriptions[0] (acme): start "2025-01-01T00:00:00" needs a timezone',
                 id="subscription-naive-start"),
    pytest.param({"billing.subscriptions[0].start": "tomorrow"},
                 'billing.subscriptions[0] (acme): start must be "now" or an ISO 8601 timestamp',
                 id="subscription-bad-start"),
    pytest.param({"billing.subscriptions[1]": {"customer": "acme", "plan": "starter"}},
                 'billing.subscriptions[1] (acme): customer "acme" is already subscribed to plan '
                 '"starter" at billing.subscriptions[0] (acme)', id="subscription-duplicate"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), CASES)
def test_invalid_document_is_rejected_naming_the_entry(
    changes: dict[str, object], message: str
) -> None:
    text = patched(changes)

    with pytest.raises(DeclarativeError) as raised:
        parse_document(text)

    assert any(message in problem for problem in raised.value.problems), raised.value.problems
    assert len(raised.value.problems) == 1, raised.value.problems


def test_base_document_is_valid() -> None:
    parse_document(patched({}))
