"""Regressions from Kong's documented decK examples (tests/fixtures/deck/kong-docs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.declarative import parse_document
from controlplane.errors import InvalidArgument


def _plugin(name: str, config: dict[str, Any]) -> str:
    return json.dumps({"_format_version": "3.0", "plugins": [{"name": name, "config": config}]})


def _target(model: str, weight: int) -> dict[str, Any]:
    return {
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": "Bearer sk-x"},
        "model": {"provider": "openai", "name": model},
        "weight": weight,
    }


def test_priority_groups_are_kongs_weights_highest_first() -> None:
    # Kong's "Load balancing: Priority" example: gpt-4 and gpt-4o-mini (70) before gpt-3 (25).
    config = {
        "balancer": {"algorithm": "priority"},
        "targets": [_target("gpt-4", 70), _target("gpt-4o-mini", 70), _target("gpt-3", 25)],
    }
    (plugin,) = parse_document(_plugin("ai-proxy-advanced", config)).gateway.plugins
    assert [t["priority"] for t in plugin.config["targets"]] == [0, 0, 1]
    # Meterline's own targets[].priority still wins when given.
    config["targets"][2]["priority"] = 0
    config["targets"][0]["priority"] = 1
    config["targets"][1]["priority"] = 1
    (plugin,) = parse_document(_plugin("ai-proxy-advanced", config)).gateway.plugins
    assert [t["priority"] for t in plugin.config["targets"]] == [1, 1, 0]
    # One weight, no priorities: a single group, refused.
    same = {"balancer": {"algorithm": "priority"}, "targets": [_target("a", 5), _target("b", 5)]}
    with pytest.raises(InvalidArgument, match="at least two priority groups"):
        parse_document(_plugin("ai-proxy-advanced", same))


def test_ai_rate_limiting_policies_without_id_are_named_by_position() -> None:
    policy = {
        "match": [{"type": "ip", "values": ["127.0.0.1"]}],
        "limits": [{"limit": 100, "window_size": 60}],
    }
    config = {"policies": [policy, dict(policy)]}
    (plugin,) = parse_document(_plugin("ai-rate-limiting-advanced", config)).gateway.plugins
    assert [p["id"] for p in plugin.config["policies"]] == ["policy-1", "policy-2"]
    named = {"policies": [{**policy, "id": "policy-2"}, dict(policy)]}
    with pytest.raises(InvalidArgument, match='repeats policy "policy-2"'):
        parse_document(_plugin("ai-rate-limiting-advanced", named))


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        pytest.param(
            "key-auth",
            {"principals": {"enabled": True, "directory": "d"}},
            'field "config.principals" (keys of a Konnect directory\'s principals) is not '
            "supported yet by data planes of this version",
            id="principals",
        ),
        pytest.param(
            "ai-rate-limiting-advanced",
            {
                "strategy": "redis",
                "redis": {"cluster_nodes": [{"ip": "10.0.0.1", "port": 6379}]},
                "llm_providers": [{"name": "openai", "limit": [10], "window_size": [60]}],
            },
            "Redis Cluster, redis.cluster_nodes, and Redis Sentinel, redis.sentinel_nodes, are "
            "not supported yet",
            id="redis-cluster",
        ),
        pytest.param(
            "ai-proxy",
            {
                "route_type": "llm/v1/chat",
                "model": {"provider": "openai", "name": "$(uri_captures.model)"},
            },
            'config.model.name "$(uri_captures.model)": Kong\'s template values',
            id="template-model",
        ),
        pytest.param(
            "ai-proxy-advanced",
            {
                "targets": [
                    {
                        "route_type": "llm/v1/chat",
                        "model": {
                            "provider": "azure",
                            "name": "gpt-4o",
                            "options": {
                                "azure_instance": "i",
                                "azure_deployment_id": "$(headers.x-deployment)",
                            },
                        },
                    }
                ]
            },
            'config.targets[0].model.options.azure_deployment_id "$(headers.x-deployment)": '
            "Kong's template values",
            id="template-option",
        ),
        pytest.param(
            "rate-limiting-advanced",
            {"limit": [10], "window_size": [60], "counter_key": "consumer.username"},
            'field "config.counter_key" (Kong 3.14\'s counter key) is not supported yet',
            id="counter-key",
        ),
    ],
)
def test_newer_kong_features_are_refused_by_name(
    name: str, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_document(_plugin(name, config))
    assert message in str(caught.value)
