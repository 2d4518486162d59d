"""apply's side of Kong's plugin fields that data planes honour: what is refused (so that no
data plane NACKs), what is stored, and what travels in the snapshot."""

from __future__ import annotations

import json
from typing import Any

from controlplane.configsync.snapshot import build_snapshot, entity_id
from controlplane.declarative import DeclarativeError, parse_document


def document(plugin: str, config: dict[str, Any], **extra: Any) -> str:
    return json.dumps(
        {"_format_version": "3.0", "plugins": [{"name": plugin, "config": config}], **extra}
    )


def problems_of(text: str) -> tuple[str, ...]:
    try:
        parse_document(text)
    except DeclarativeError as exc:
        return exc.problems
    return ()


OPENAI = {"route_type": "llm/v1/chat", "model": {"provider": "openai", "name": "gpt-4o"}}


def test_key_auth_fields_are_stored_and_shipped() -> None:
    config = {
        "key_in_body": True,
        "anonymous": "guest",
        "run_on_preflight": False,
        "realm": "gw",
    }
    parsed = parse_document(document("key-auth", config, consumers=[{"username": "guest"}]))
    assert parsed.notes == ()
    (plugin,) = parsed.gateway.plugins
    assert {k: plugin.config[k] for k in config} == config
    (wire,) = build_snapshot(parsed.gateway).snapshot.plugins
    assert wire.key_auth.key_in_body is True
    assert wire.key_auth.anonymous_consumer_id == entity_id("consumer", "guest")
    assert wire.key_auth.HasField("run_on_preflight") and not wire.key_auth.run_on_preflight
    assert wire.key_auth.realm == "gw"
    default = build_snapshot(parse_document(document("key-auth", {})).gateway).snapshot
    assert not default.plugins[0].key_auth.HasField("run_on_preflight")  # Kong's true


def test_key_auth_refuses_an_undefined_anonymous_consumer_and_a_quoted_realm() -> None:
    assert problems_of(document("key-auth", {"anonymous": "ghost"})) == (
        'plugins[0] (key-auth): config.anonymous: consumer "ghost" is not defined',
    )
    (problem,) = problems_of(document("key-auth", {"realm": 'a"b'}))
    assert "config.realm must not contain quotes" in problem


def test_ai_proxy_fields_travel_typed() -> None:
    config = {
        **OPENAI,
        "response_streaming": "deny",
        "max_request_body_size": 4096,
        "model_name_header": False,
        "auth": {
            "header_name": "Authorization",
            "header_value": "Bearer k",
            "allow_override": True,
        },
        "model": {
            "provider": "openai",
            "name": "gpt-4o",
            "model_alias": "smart",
            "options": {"temperature": 0.5, "top_p": 1, "top_k": 3, "upstream_path": "/x/y"},
        },
    }
    parsed = parse_document(document("ai-proxy", config))
    assert parsed.notes == ()
    (wire,) = build_snapshot(parsed.gateway).snapshot.plugins
    proxy = wire.ai_proxy
    assert (proxy.response_streaming, proxy.max_request_body_size) == ("deny", 4096)
    assert proxy.HasField("model_name_header") and not proxy.model_name_header
    assert proxy.auth.allow_override is True
    assert proxy.model.model_alias == "smart"
    options = proxy.model.options
    assert (options.temperature, options.top_p, options.top_k) == (0.5, 1.0, 3)
    assert options.upstream_path == "/x/y"
    # Unset: Kong's defaults (allow, no route limit, model header on).
    (plain,) = build_snapshot(parse_document(document("ai-proxy", OPENAI)).gateway).snapshot.plugins
    assert plain.ai_proxy.response_streaming == ""
    assert not plain.ai_proxy.HasField("model_name_header")
    assert not plain.ai_proxy.model.options.HasField("temperature")


def test_ai_proxy_advanced_carries_plugin_fields_and_per_target_options() -> None:
    target = {
        "model": {
            "provider": "openai",
            "name": "gpt-4o",
            "model_alias": "smart",
            "options": {"temperature": 0.1},
        },
        "auth": {
            "header_name": "Authorization",
            "header_value": "Bearer k",
            "allow_override": True,
        },
    }
    config = {"targets": [target], "response_streaming": "always", "model_name_header": True}
    (wire,) = build_snapshot(
        parse_document(document("ai-proxy-advanced", config)).gateway
    ).snapshot.plugins
    assert wire.ai_proxy.response_streaming == "always"
    assert wire.ai_proxy.model_name_header is True
    (only,) = wire.ai_proxy.targets
    assert only.model.model_alias == "smart"
    assert only.model.options.temperature == 0.1
    assert only.auth.allow_override is True


def test_options_data_planes_cannot_serve_are_refused_at_apply() -> None:
    gemini = {
        "route_type": "llm/v1/chat",
        "llm_format": "gemini",
        "response_streaming": "always",
        "model": {
            "provider": "gemini",
            "name": "gemini-2.0-flash",
            "options": {"upstream_path": "/v1/x"},
        },
    }
    problems = problems_of(document("ai-proxy", gemini))
    assert any('"always" cannot apply to llm_format "gemini"' in p for p in problems), problems
    assert any("upstream_path is not supported" in p for p in problems), problems
    bad = {**OPENAI, "model": {**OPENAI["model"], "options": {"temperature": 7, "top_k": -1}}}  # type: ignore[dict-item]
    problems = problems_of(document("ai-proxy", bad))
    assert any("temperature must be a number from 0 to 5" in p for p in problems), problems
    assert any("top_k must be at least 0" in p for p in problems), problems


def test_error_code_and_message_of_every_rate_limiting_plugin() -> None:
    for plugin, config in (
        ("rate-limiting", {"minute": 5}),
        ("rate-limiting-advanced", {"limit": [5], "window_size": [60]}),
        (
            "ai-rate-limiting-advanced",
            {"llm_providers": [{"name": "openai", "limit": [5], "window_size": [60]}]},
        ),
    ):
        text = document(plugin, {**config, "error_code": 403.0, "error_message": "Go slow"})
        parsed = parse_document(text)
        assert parsed.notes == (), plugin
        (wire,) = build_snapshot(parsed.gateway).snapshot.plugins
        assert (wire.rate_limiting.error_code, wire.rate_limiting.error_message) == (
            403,
            "Go slow",
        )
        (problem,) = problems_of(document(plugin, {**config, "error_code": 200}))
        assert "config.error_code must be an HTTP error status (400-599), got 200" in problem


def test_policies_are_shipped_and_consumer_group_policies_noted() -> None:
    policies = [
        {
            "id": "per-consumer",
            "match": [{"type": "consumer", "partition_by": True}, {"type": "model"}],
            "limits": [{"limit": 10, "window_size": 60}],
        },
        {
            "id": "gold",
            "match": [{"type": "consumer_group", "values": ["gold"]}],
            "limits": [{"limit": 10, "window_size": 60}],
        },
    ]
    parsed = parse_document(document("ai-rate-limiting-advanced", {"policies": policies}))
    assert parsed.notes == (
        "plugins[0].config.policies[1].match[0].type: accepted, not enforced: consumer groups "
        "are not supported",
    )
    (wire,) = build_snapshot(parsed.gateway).snapshot.plugins
    (policy,) = wire.rate_limiting.policies
    assert policy.id == "per-consumer"
    assert [(m.type, m.partition_by) for m in policy.matches] == [
        ("consumer", True),
        ("model", False),
    ]
    assert [(lim.limit, lim.window_size, lim.tokens_count_strategy) for lim in policy.limits] == [
        ("10", 60, "total_tokens")
    ]
    header = [
        {"id": "h", "match": [{"type": "header"}], "limits": [{"limit": 1, "window_size": 1}]}
    ]
    (problem,) = problems_of(document("ai-rate-limiting-advanced", {"policies": header}))
    assert 'key is required with type "header"' in problem
