"""Kong's plugin schema (kong_fields.tsv) drives what a decK file may set: every documented
path is accepted (null too), a misspelt one names the closest documented name, and apply
refuses exactly the providers and route types data planes refuse."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative import DeclarativeError, parse_document
from controlplane.declarative import plugins as plugin_rules
from controlplane.declarative.kong_schema import (
    ELEMENT,
    FieldSpec,
    example_value,
    kong_fields,
    set_path,
    split_path,
)
from dataplane.config import providers as dataplane_providers
from dataplane.proxy.compiler import compile_snapshot

BASE: dict[str, dict[str, Any]] = {
    "key-auth": {},
    "ai-proxy": {"route_type": "llm/v1/chat", "model": {"provider": "openai", "name": "gpt-4o"}},
    "ai-proxy-advanced": {"targets": [{"model": {"provider": "openai", "name": "gpt-4o"}}]},
    "rate-limiting": {"minute": 5, "hour": 100},
    "rate-limiting-advanced": {"limit": [5], "window_size": [60]},
    "ai-rate-limiting-advanced": {
        "llm_providers": [{"name": "openai", "limit": [100], "window_size": [60]}]
    },
}
PATHS = [
    pytest.param(plugin, spec, id=f"{plugin}:{spec.path}")
    for plugin, specs in kong_fields().items()
    for spec in specs
]


def value_for(spec: FieldSpec) -> Any:
    """A valid value of the field's type (a URL where the field is one)."""
    if spec.type == "string" and spec.path.endswith("_url") and spec.default is None:
        return "http://127.0.0.1:9/v1"
    if spec.path.endswith("upstream_path"):
        return "/v1/custom"
    return example_value(spec)


def document(plugin: str, config: dict[str, Any]) -> str:
    return json.dumps({"_format_version": "3.0", "plugins": [{"name": plugin, "config": config}]})


def written(path: str) -> list[str]:
    """A TSV path as a file writes it: every list element is the first one."""
    return split_path(path.replace(f".{ELEMENT}", "[0]"))


def problems_of(text: str) -> tuple[str, ...]:
    try:
        parse_document(text)
    except DeclarativeError as exc:
        return exc.problems
    return ()


def test_the_packaged_schema_lists_the_six_plugins_and_every_path() -> None:
    fields = kong_fields()
    assert set(fields) == set(BASE)
    assert sum(len(specs) for specs in fields.values()) >= 400
    assert {spec.path for spec in fields["ai-proxy"]} >= {
        "logging.log_payloads",
        "model.options.temperature",
        "max_request_body_size",
        "model_name_header",
        "genai_category",
        "auth.allow_override",
        "auth.aws_access_key_id",
        "model.options.bedrock.aws_region",
        "model.options.mistral_format",
        "model.options.llama2_format",
    }


@pytest.mark.parametrize(("plugin", "spec"), PATHS)
def test_every_documented_path_is_accepted_with_a_value_and_with_null(
    plugin: str, spec: FieldSpec
) -> None:
    path = written(spec.path)
    shown = "config." + spec.path.replace(f".{ELEMENT}", "[0]")
    for value in (value_for(spec), None):
        config = copy.deepcopy(BASE[plugin])
        set_path(config, path, value)
        problems = problems_of(document(plugin, config))
        # A value may be refused by name as not served yet; the field itself never is.
        assert not [p for p in problems if "unknown field" in p], problems
        assert not [p for p in problems if f"{shown} must be" in p], problems
        if value is None:
            assert not [p for p in problems if "is required" not in p], problems
        if not problems:
            # What apply accepts, the data plane's own compiler accepts: never a NACK.
            built = build_snapshot(parse_document(document(plugin, config)).gateway)
            compile_snapshot(built.snapshot, version=built.version)


@pytest.mark.parametrize(
    ("plugin", "spec"),
    [p for p in PATHS if len(p.values[1].path.split(".")[-1]) > 5],  # type: ignore[union-attr]
)
def test_a_misspelt_field_names_its_path_and_the_closest_documented_name(
    plugin: str, spec: FieldSpec
) -> None:
    path = written(spec.path)
    leaf = path[-1]
    middle = len(leaf) // 2
    typo = leaf[:middle] + leaf[middle + 1 :]  # a letter dropped
    config = copy.deepcopy(BASE[plugin])
    set_path(config, [*path[:-1], typo], value_for(spec))
    shown = ".".join(path[:-1]).replace(".[0]", "[0]")
    where = f"config.{shown}.{typo}" if shown else f"config.{typo}"
    (problem,) = [p for p in problems_of(document(plugin, config)) if "unknown field" in p]
    assert f'unknown field "{where}"' in problem
    assert f'did you mean "{leaf}"?' in problem


def test_apply_refuses_exactly_the_providers_and_route_types_data_planes_refuse() -> None:
    served = {p: set(types) for p, types in plugin_rules.SERVED_ROUTE_TYPES.items()}
    assert served == {p: set(t) for p, t in dataplane_providers.PROVIDER_ROUTE_TYPES.items()}
    assert (
        plugin_rules.NOT_YET_SUPPORTED_PROVIDERS == dataplane_providers.NOT_YET_SUPPORTED_PROVIDERS
    )
    assert set(plugin_rules.ROUTE_TYPES) == set(dataplane_providers.SUPPORTED_ROUTE_TYPES)
    assert set(plugin_rules.SERVED_ROUTE_TYPES) == set(dataplane_providers.DEFAULT_URLS)


def test_every_provider_kong_names_is_served() -> None:
    kong = set(plugin_rules.kong_enum("model.provider"))
    assert kong == set(plugin_rules.PROVIDERS)
    assert kong == set(plugin_rules.SERVED_ROUTE_TYPES)
    assert not plugin_rules.NOT_YET_SUPPORTED_PROVIDERS


def test_a_provider_route_type_pair_data_planes_refuse_is_refused() -> None:
    config = {"route_type": "llm/v1/embeddings", "model": {"provider": "anthropic"}}
    (problem,) = problems_of(document("ai-proxy", config))
    assert 'config.model.provider "anthropic" does not serve route_type "llm/v1/embeddings"' in (
        problem
    )


def test_notes_name_each_path_once_and_say_why() -> None:
    config = {
        "targets": [
            {
                "model": {"provider": "openai", "options": {"temperature": 0.2}},
                "metadata": {"team": "a"},
                "logging": {"log_statistics": False},
            }
        ],
        "vectordb": {"strategy": "redis", "redis": {"host": "h"}},
        "balancer": {"algorithm": "round-robin", "slots": 100},
    }
    parsed = parse_document(document("ai-proxy-advanced", config))
    assert parsed.notes == (
        "plugins[0].config.targets[0].metadata: accepted, not enforced: "
        "target metadata is not used",
        "plugins[0].config.targets[0].logging.log_statistics: accepted, not enforced: "
        "Meterline meters every request for billing",
        "plugins[0].config.vectordb: accepted, not enforced: semantic routing and caching are "
        "not supported",
        "plugins[0].config.balancer.slots: accepted, not enforced: the balancer needs no hash "
        "ring slots",
    )
    # Stored (for dump), never in the honoured config the data plane gets.
    (plugin,) = parsed.gateway.plugins
    assert plugin.config["kong_unenforced"]["vectordb"] == {
        "strategy": "redis",
        "redis": {"host": "h"},
    }
    assert "logging" not in plugin.config["targets"][0]


def test_a_field_at_kong_default_is_not_noted() -> None:
    config = {
        "route_type": "llm/v1/chat",
        "model": {"provider": "openai"},
        "logging": {"log_payloads": False, "log_statistics": True},
        "response_streaming": "allow",
        "auth": {"allow_override": False},
    }
    assert parse_document(document("ai-proxy", config)).notes == ()


def test_a_plugin_entity_field_and_a_disabled_plugin() -> None:
    text = json.dumps(
        {
            "_format_version": "3.0",
            "plugins": [
                {
                    "name": "key-auth",
                    "enabled": False,
                    "instance_name": "auth",
                    "tags": ["t"],
                    "protocols": ["grpc"],
                    "ordering": {"before": {"access": ["ai-proxy"]}},
                    "partials": [{"id": "p"}],
                    "condition": 'http.path == "/x"',
                }
            ],
        }
    )
    parsed = parse_document(text)
    assert [note.split(":")[0] for note in parsed.notes] == [
        "plugins[0].ordering",
        "plugins[0].partials",
        "plugins[0].protocols",
        "plugins[0].condition",
    ]
    assert parsed.gateway.plugins == ()  # a conditional plugin is not applied at all
    del_condition = json.loads(text)
    del del_condition["plugins"][0]["condition"]
    (plugin,) = parse_document(json.dumps(del_condition)).gateway.plugins
    assert plugin.enabled is False
    assert plugin.attributes == {
        "tags": ["t"],
        "instance_name": "auth",
        "protocols": ["grpc"],
        "ordering": {"before": {"access": ["ai-proxy"]}},
    }


def test_docs_list_every_honoured_field_of_each_plugin() -> None:
    from pathlib import Path

    from controlplane.declarative.kong_schema import HONOURED

    docs = (Path(__file__).resolve().parents[3] / "docs" / "declarative.md").read_text()
    for plugin, paths in HONOURED.items():
        section = docs.split(f"### {plugin}\n", 1)[1].split("\n### ", 1)[0]
        for path in paths:
            assert f"`{path}`" in section, (plugin, path)


def test_a_consumer_group_is_noted_and_its_plugin_configs_still_checked() -> None:
    group = {
        "name": "gold",
        "plugins": [{"name": "rate-limiting-advanced", "config": {"limt": [5]}}],
    }
    text = json.dumps({"_format_version": "3.0", "consumer_groups": [group]})
    assert problems_of(text) == (
        "consumer_groups[0] (gold).plugins[0] (rate-limiting-advanced): unknown field "
        '"config.limt" (did you mean "limit"?)',
    )
    group["plugins"][0]["config"] = {"limit": [5], "window_size": [60]}  # type: ignore[index]
    parsed = parse_document(json.dumps({"_format_version": "3.0", "consumer_groups": [group]}))
    assert parsed.notes == (
        "consumer_groups[0].name: accepted, not enforced: consumer groups are not supported",
    )
    assert parsed.gateway.plugins == ()


@pytest.mark.parametrize(
    ("written", "stored"), [(0.15, "0.15"), (10.0, "10.0"), (1e-07, "1E-7"), (3, "3")]
)
def test_kong_costs_written_as_yaml_floats_are_kept_as_written(written: Any, stored: str) -> None:
    config = {
        "model": {"provider": "openai", "options": {"input_cost": written, "output_cost": "1"}}
    }
    (plugin,) = parse_document(document("ai-proxy", config)).gateway.plugins
    assert plugin.config["model"]["options"]["input_cost"] == stored


def test_log_payloads_is_honoured_and_reaches_the_snapshot_per_route_and_per_target() -> None:
    from controlplane.configsync.snapshot import ai_proxy_advanced_config, ai_proxy_config

    config = {
        "route_type": "llm/v1/chat",
        "model": {"provider": "openai", "name": "gpt-4o"},
        "logging": {"log_payloads": True, "log_statistics": True},
    }
    parsed = parse_document(document("ai-proxy", config))
    assert parsed.notes == ()
    (plugin,) = parsed.gateway.plugins
    assert ai_proxy_config(plugin.config).log_payloads is True
    assert ai_proxy_config({**plugin.config, "logging": {}}).log_payloads is False

    target = {"route_type": "llm/v1/chat", "model": {"provider": "openai", "name": "a"}}
    advanced = {
        "targets": [
            {**target, "logging": {"log_payloads": True}},
            {**target, "model": {"provider": "openai", "name": "b"}},
        ]
    }
    parsed = parse_document(document("ai-proxy-advanced", advanced))
    assert parsed.notes == ()
    (plugin,) = parsed.gateway.plugins
    message = ai_proxy_advanced_config(plugin.config)
    assert [t.log_payloads for t in message.targets] == [True, False]
    # Not a boolean: refused, naming the field.
    bad = {**config, "logging": {"log_payloads": "yes"}}
    assert any("log_payloads" in problem for problem in problems_of(document("ai-proxy", bad)))
