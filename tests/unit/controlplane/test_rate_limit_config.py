"""rate-limiting-advanced / ai-rate-limiting-advanced in the declarative YAML: validation and
the snapshot form a data plane compiles."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative import DeclarativeError, parse_document
from dataplane.proxy.compiler import compile_snapshot

BASE = """
_format_version: "3.0"
services:
  - name: ai-service
    url: http://127.0.0.1:9/
    routes: [{name: chat, paths: [/chat]}]
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
  - name: ai-proxy
    service: ai-service
    config:
      model:
        provider: openai
        options: {upstream_url: "http://127.0.0.1:9/v1", input_cost: "2.5", output_cost: "10"}
"""


def document(*plugins: dict[str, Any]) -> str:
    data = yaml.safe_load(BASE)
    data["plugins"].extend(plugins)
    return yaml.safe_dump(data)


def requests_plugin(**config: Any) -> dict[str, Any]:
    return {
        "name": "rate-limiting-advanced",
        "config": {"limit": [10], "window_size": [60], **config},
    }


def tokens_plugin(**config: Any) -> dict[str, Any]:
    providers = [{"name": "openai", "limit": [1000], "window_size": ["minute"]}]
    return {"name": "ai-rate-limiting-advanced", "config": {"llm_providers": providers, **config}}


def test_defaults_and_the_compiled_route_limits() -> None:
    config = parse_document(
        document(
            {**requests_plugin(limit=[5, 100], window_size=["second", 3600]), "route": "chat"},
            tokens_plugin(
                tokens_count_strategy="cost",
                llm_providers=[{"name": "openai", "limit": ["0.50"], "window_size": ["day"]}],
                strategy="redis",
                redis={"host": "127.0.0.1", "password": "pw"},
                window_type="fixed",
            ),
        )
    )
    by_name = {p.name.value: p for p in config.gateway.plugins}
    assert by_name["rate-limiting-advanced"].config == {
        "limit": [5, 100],
        "window_size": [1, 3600],
        "window_type": "sliding",
        "identifier": "consumer",
        "header_name": "",
        "namespace": "",
        "strategy": "local",
        "redis": {},
        "fault_tolerant": True,
        "hide_client_headers": False,
    }
    assert by_name["ai-rate-limiting-advanced"].config["llm_providers"] == [
        {"name": "openai", "limit": ["0.50"], "window_size": [86400]}
    ]
    # The snapshot carries them; a data plane compiles them onto the route
    runtime = compile_snapshot(build_snapshot(config.gateway).snapshot, version="v1")
    route, _ = runtime.routes.match_prefix("/chat", "POST")
    assert route.rate_limits is not None
    cost, requests = sorted(route.rate_limits.default, key=lambda limit: limit.measure)
    assert (requests.measure, [(w.limit, w.size) for w in requests.windows]) == (
        "requests",
        [(5, 1), (100, 3600)],
    )
    assert cost.measure == "cost" and cost.redis is not None and not cost.sliding
    assert [(w.limit, w.size, w.limit_text) for w in cost.windows] == [
        (500_000_000_000, 86400, b"0.50")
    ]
    assert cost.redis.password == "pw" and "pw" not in repr(cost.redis)


BAD = [
    pytest.param(
        requests_plugin(limit=[-1]),
        "config.limit[0] must not be negative, got -1",
        id="negative-limit",
    ),
    pytest.param(
        requests_plugin(limit=["ten"]),
        "config.limit[0] must be an integer, got a string",
        id="limit-not-int",
    ),
    pytest.param(
        requests_plugin(window_size=["fortnight"]),
        'config.window_size[0] "fortnight" is not a window',
        id="unknown-window",
    ),
    pytest.param(
        requests_plugin(window_size=[0]),
        "config.window_size[0] 0 is not a window",
        id="zero-window",
    ),
    pytest.param(
        requests_plugin(limit=[1, 2]), "limit has 2 value(s) but window_size has 1", id="unpaired"
    ),
    pytest.param(
        requests_plugin(window_type="rolling"),
        'config.window_type must be one of "sliding", "fixed", got "rolling"',
        id="unknown-window-type",
    ),
    pytest.param(
        requests_plugin(strategy="redis"),
        'config.redis.host is required with strategy "redis"',
        id="redis-without-host",
    ),
    pytest.param(requests_plugin(strategy="cluster"), '"cluster" needs a database', id="cluster"),
    pytest.param(
        requests_plugin(identifier="header"),
        'config.header_name is required with identifier "header"',
        id="header-without-name",
    ),
    pytest.param(
        requests_plugin(redis={"host": "h", "port": 70000}),
        "config.redis.port must be at most 65535",
        id="bad-port",
    ),
    pytest.param(
        requests_plugin(tokens_count_strategy="total_tokens"),
        'unknown field "config.tokens_count_strategy"',
        id="tokens-on-requests-plugin",
    ),
    pytest.param(
        tokens_plugin(tokens_count_strategy="words"),
        "config.tokens_count_strategy must be one of",
        id="unknown-token-strategy",
    ),
    pytest.param(
        tokens_plugin(llm_providers=[]), "config.llm_providers must not be empty", id="no-providers"
    ),
    pytest.param(
        tokens_plugin(llm_providers=[{"name": "acme-llm", "limit": [1], "window_size": [1]}]),
        "name must be one of",
        id="unknown-provider",
    ),
    pytest.param(
        tokens_plugin(
            tokens_count_strategy="cost",
            llm_providers=[{"name": "openai", "limit": ["-0.5"], "window_size": [60]}],
        ),
        'limit[0] must not be negative, got "-0.5"',
        id="negative-cost",
    ),
    pytest.param(
        tokens_plugin(
            tokens_count_strategy="cost",
            # Kong's YAML floats are taken as written (0.5 is "0.5") unless digits were lost.
            llm_providers=[
                {"name": "openai", "limit": [0.1234567890123456789], "window_size": [60]}
            ],
        ),
        "must be a quoted decimal string",
        id="float-cost-too-precise",
    ),
]


@pytest.mark.parametrize(("plugin", "message"), BAD)
def test_bad_configs_are_clear_errors(plugin: dict[str, Any], message: str) -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(document(plugin))
    assert message in str(raised.value)
    assert "plugins[2]" in str(raised.value)


def test_the_redis_password_is_a_secret_at_rest_and_in_the_admin_api() -> None:
    from cryptography.fernet import Fernet

    from controlplane.api.convert import plugin_to_proto
    from controlplane.gateway.secrets import SecretBox, open_config, seal_config

    config = parse_document(
        document(requests_plugin(strategy="redis", redis={"host": "10.0.0.7", "password": "pw"}))
    )
    (plugin,) = [p for p in config.gateway.plugins if p.name.value == "rate-limiting-advanced"]
    box = SecretBox([Fernet.generate_key()])
    sealed = seal_config(plugin.config, box)
    assert sealed["redis"]["host"] == "10.0.0.7"
    assert sealed["redis"]["password"] != "pw"
    assert open_config(sealed, box)["redis"]["password"] == "pw"
    shown = plugin_to_proto(plugin, "id")
    assert shown.config["redis"]["password"] == "<redacted>"
