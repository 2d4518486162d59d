"""Building data-plane snapshots: deterministic ids and versions, resolved references."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from controlplane.configsync.snapshot import BuiltSnapshot, build_snapshot, entity_id
from controlplane.declarative import parse_document
from controlplane.errors import InvalidArgument
from controlplane.gateway.keys import hash_key
from controlplane.gateway.types import Consumer, GatewayConfig, Plugin, PluginName, Route, Service

WALKTHROUGH = parse_document((Path(__file__).parent / "walkthrough.yaml").read_text()).gateway


def _built(config: GatewayConfig = WALKTHROUGH) -> BuiltSnapshot:
    return build_snapshot(config)


def test_same_config_gives_the_same_bytes_and_version() -> None:
    first, second = _built(), build_snapshot(replace(WALKTHROUGH))

    assert first.version == second.version
    assert first.snapshot.SerializeToString(
        deterministic=True
    ) == second.snapshot.SerializeToString(deterministic=True)
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", first.version)


def test_entity_order_does_not_change_the_version() -> None:
    config = replace(
        WALKTHROUGH,
        services=(*WALKTHROUGH.services, Service(name="aaa", url="http://a/")),
        plugins=tuple(reversed(WALKTHROUGH.plugins)),
        consumers=(
            Consumer(username="zed", key_hashes=(hash_key("b"), hash_key("a"))),
            *WALKTHROUGH.consumers,
        ),
    )
    shuffled = replace(
        config,
        services=tuple(reversed(config.services)),
        plugins=tuple(reversed(config.plugins)),
        consumers=(
            config.consumers[1],
            Consumer(username="zed", key_hashes=(hash_key("a"), hash_key("b"))),
        ),
    )

    assert _built(config).version == _built(shuffled).version
    assert [s.name for s in _built(shuffled).snapshot.services] == ["aaa", "ai-service"]


def _with_ai_proxy(change: Callable[[dict[str, object]], None]) -> GatewayConfig:
    plugins = []
    for plugin in WALKTHROUGH.plugins:
        if plugin.name is PluginName.AI_PROXY:
            config = {
                **plugin.config,
                "model": {
                    **plugin.config["model"],
                    "options": {**plugin.config["model"]["options"]},
                },
            }
            change(config)
            plugin = replace(plugin, config=config)
        plugins.append(plugin)
    return replace(WALKTHROUGH, plugins=tuple(plugins))


CHANGES = [
    pytest.param(
        replace(WALKTHROUGH, services=(Service(name="ai-service", url="http://127.0.0.1:10/"),)),
        id="service-url",
    ),
    pytest.param(
        replace(WALKTHROUGH, routes=(replace(WALKTHROUGH.routes[0], paths=("/chat2",)),)),
        id="route-path",
    ),
    pytest.param(
        replace(WALKTHROUGH, routes=(replace(WALKTHROUGH.routes[0], strip_path=False),)),
        id="route-strip-path",
    ),
    pytest.param(
        replace(WALKTHROUGH, routes=(replace(WALKTHROUGH.routes[0], methods=("POST",)),)),
        id="route-methods",
    ),
    pytest.param(
        replace(
            WALKTHROUGH,
            consumers=(replace(WALKTHROUGH.consumers[0], key_hashes=(hash_key("other"),)),),
        ),
        id="consumer-key",
    ),
    pytest.param(
        replace(WALKTHROUGH, consumers=(replace(WALKTHROUGH.consumers[0], custom_id="c1"),)),
        id="consumer-custom-id",
    ),
    pytest.param(
        replace(WALKTHROUGH, plugins=tuple(replace(p, enabled=False) for p in WALKTHROUGH.plugins)),
        id="plugin-disabled",
    ),
    pytest.param(
        _with_ai_proxy(lambda c: c.update(auth={"header_name": "Authorization",
                                                "header_value": "Bearer sk-rotated"})),
        id="provider-secret-rotated",
    ),
    pytest.param(
        _with_ai_proxy(lambda c: c["model"].update(name="gpt-4o")),  # type: ignore[attr-defined]
        id="model-name",
    ),
    pytest.param(
        _with_ai_proxy(lambda c: c["model"]["options"].update(input_cost="0.15")),  # type: ignore[index]
        id="model-cost",
    ),
    pytest.param(replace(WALKTHROUGH, plugins=WALKTHROUGH.plugins[:1]), id="plugin-removed"),
    pytest.param(
        replace(WALKTHROUGH, consumers=(*WALKTHROUGH.consumers, Consumer(username="bob"))),
        id="consumer-added",
    ),
]  # fmt: skip


@pytest.mark.parametrize("changed", CHANGES)
def test_any_change_gives_a_new_version(changed: GatewayConfig) -> None:
    assert changed != WALKTHROUGH
    assert _built(changed).version != _built().version


def test_walkthrough_snapshot_resolves_references() -> None:
    snapshot = _built().snapshot

    (service,) = snapshot.services
    (route,) = snapshot.routes
    (consumer,) = snapshot.consumers
    ai_proxy, key_auth = snapshot.plugins
    assert service.id == entity_id("service", "ai-service")
    assert route.service_id == service.id
    assert list(route.paths) == ["/chat"]
    assert route.strip_path is True
    assert consumer.username == "acme-corp"
    assert list(consumer.key_hashes) == [hash_key("acme-secret-key")]
    assert ai_proxy.name == "ai-proxy"
    assert ai_proxy.service_id == service.id
    assert (ai_proxy.route_id, ai_proxy.consumer_id) == ("", "")
    assert ai_proxy.WhichOneof("config") == "ai_proxy"
    assert key_auth.name == "key-auth"
    assert (key_auth.service_id, key_auth.route_id, key_auth.consumer_id) == ("", "", "")
    assert key_auth.WhichOneof("config") == "key_auth"
    assert list(key_auth.key_auth.key_names) == ["apikey"]
    assert key_auth.key_auth.key_in_bearer is True
    assert key_auth.key_auth.key_in_query is True
    assert key_auth.key_auth.hide_credentials is False
    assert len({service.id, route.id, consumer.id, ai_proxy.id, key_auth.id}) == 5


def test_provider_secrets_reach_the_data_plane_but_plain_keys_do_not() -> None:
    snapshot = _built().snapshot

    ai_proxy = snapshot.plugins[0].ai_proxy
    assert ai_proxy.auth.header_name == "Authorization"
    assert ai_proxy.auth.header_value == "Bearer sk-test"
    assert ai_proxy.model.provider == "openai"
    assert ai_proxy.model.name == "gpt-4o-mini"
    assert ai_proxy.model.options.upstream_url == "http://127.0.0.1:9/v1"
    assert ai_proxy.route_type == "llm/v1/chat"
    assert ai_proxy.llm_format == "openai"
    assert b"acme-secret-key" not in snapshot.SerializeToString()


def test_route_and_consumer_scoped_plugins_get_their_ids() -> None:
    config = parse_document(
        """
_format_version: "3.0"
services: [{name: s, url: "http://x/"}]
routes: [{name: r, service: s, paths: [/r]}]
consumers: [{username: bob}]
plugins:
  - name: ai-proxy
    route: r
    consumer: bob
    config:
      model:
        provider: anthropic
        options: {max_tokens: 256, anthropic_version: "2023-06-01", output_cost: "15"}
"""
    ).gateway

    (plugin,) = build_snapshot(config).snapshot.plugins

    assert plugin.route_id == entity_id("route", "r")
    assert plugin.consumer_id == entity_id("consumer", "bob")
    assert plugin.service_id == ""
    assert plugin.id == entity_id("plugin", "ai-proxy", "", "r", "bob")
    options = plugin.ai_proxy.model.options
    assert (options.max_tokens, options.anthropic_version, options.output_cost) == (
        256,
        "2023-06-01",
        "15",
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            GatewayConfig(routes=(Route(name="r", service="missing", paths=("/",)),)),
            'route "r" refers to unknown service "missing"',
            id="route-to-missing-service",
        ),
        pytest.param(
            GatewayConfig(plugins=(Plugin(name=PluginName.KEY_AUTH, route="missing"),)),
            'key-auth plugin refers to unknown route "missing"',
            id="plugin-to-missing-route",
        ),
    ],
)
def test_dangling_references_are_refused(config: GatewayConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build_snapshot(config)


def test_empty_config() -> None:
    built = build_snapshot(GatewayConfig())

    assert built.snapshot.ByteSize() == 0
    assert built.version.startswith("sha256:")


def test_stored_configs_with_nulls_and_missing_fields_get_defaults() -> None:
    config = GatewayConfig(
        plugins=(
            Plugin(name=PluginName.KEY_AUTH, config={"key_names": None, "key_in_query": None}),
            Plugin(
                name=PluginName.AI_PROXY,
                config={"auth": None, "model": {"provider": "openai", "name": None}},
            ),
        )
    )

    ai_proxy, key_auth = build_snapshot(config).snapshot.plugins

    assert list(key_auth.key_auth.key_names) == ["apikey"]
    assert key_auth.key_auth.key_in_query is True
    assert key_auth.key_auth.key_in_bearer is True
    assert ai_proxy.ai_proxy.route_type == "llm/v1/chat"
    assert ai_proxy.ai_proxy.model.name == ""
    assert ai_proxy.ai_proxy.auth.header_value == ""


def test_ai_proxy_azure_options_reach_the_snapshot() -> None:
    from controlplane.configsync.snapshot import ai_proxy_config

    config = ai_proxy_config(
        {
            "route_type": "llm/v1/embeddings",
            "llm_format": "openai",
            "model": {
                "provider": "azure",
                "name": "",
                "options": {
                    "azure_instance": "acme",
                    "azure_deployment_id": "emb-3",
                    "azure_api_version": "2024-10-21",
                },
            },
        }
    )
    assert config.route_type == "llm/v1/embeddings"
    assert (
        config.model.options.azure_instance,
        config.model.options.azure_deployment_id,
        config.model.options.azure_api_version,
    ) == ("acme", "emb-3", "2024-10-21")
