"""Compiling snapshots: what is accepted, what is rejected and why, and plugin precedence."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dataplane.compiler import CompileError, compile_snapshot
from dataplane.keys import hash_key
from meterline.dataplane.v1 import snapshot_pb2

Mutation = Callable[[snapshot_pb2.Snapshot], None]


def test_valid_snapshot_compiles(valid_snapshot) -> None:
    config = compile_snapshot(valid_snapshot, version="v1")

    assert config.version == "v1"
    assert len(config.routes) == 2
    assert config.consumers_by_key_hash[hash_key("k-acme")].username == "acme-corp"
    chat = config.routes.match("/chat/chat/completions", "POST")
    assert chat is not None and chat.name == "chat"
    assert chat.key_auth is not None and chat.key_auth.header_names == {b"apikey"}
    assert chat.ai_proxy is not None
    target = chat.ai_proxy.target
    assert target.url == "https://api.openai.com/v1/chat/completions"
    assert target.origin == "https://api.openai.com:443"
    assert target.auth_headers == ((b"authorization", b"Bearer sk-secret"),)
    assert chat.ai_proxy.model == "gpt-4o-mini"
    assert b"apikey" in chat.dropped_headers and b"authorization" in chat.dropped_headers


def test_secrets_stay_out_of_reprs(valid_snapshot) -> None:
    config = compile_snapshot(valid_snapshot, version="v1")
    route = config.routes.match("/chat", "POST")
    assert route is not None
    assert "sk-secret" not in repr(route)
    assert "sk-secret" not in repr(config)


def _plugin(snapshot: snapshot_pb2.Snapshot, plugin_id: str) -> snapshot_pb2.Plugin:
    return next(p for p in snapshot.plugins if p.id == plugin_id)


def _set_provider(provider: str) -> Mutation:
    def mutate(s: snapshot_pb2.Snapshot) -> None:
        _plugin(s, "ai").ai_proxy.model.provider = provider

    return mutate


def _set_upstream(url: str) -> Mutation:
    def mutate(s: snapshot_pb2.Snapshot) -> None:
        _plugin(s, "ai").ai_proxy.model.options.upstream_url = url

    return mutate


def _wrong_oneof(s: snapshot_pb2.Snapshot) -> None:
    plugin = _plugin(s, "ka")
    plugin.ai_proxy.route_type = "llm/v1/chat"  # sets the other member of the oneof


def _no_config(s: snapshot_pb2.Snapshot) -> None:
    _plugin(s, "ka").ClearField("key_auth")


def _route_type(value: str) -> Mutation:
    def mutate(s: snapshot_pb2.Snapshot) -> None:
        _plugin(s, "ai").ai_proxy.route_type = value

    return mutate


def _shared_key(s: snapshot_pb2.Snapshot) -> None:
    s.consumers[1].key_hashes.append(hash_key("k-acme"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda s: setattr(s.routes[0], "service_id", "nope"),
            'route "chat": unknown service_id "nope"',
            id="route-unknown-service",
        ),
        pytest.param(
            lambda s: s.routes[0].paths.append("chat/v2"),
            'route "chat": path "chat/v2" does not start with "/"',
            id="route-path-without-slash",
        ),
        pytest.param(
            lambda s: s.routes[0].ClearField("paths"), 'route "chat" has no paths', id="no-paths"
        ),
        pytest.param(
            lambda s: s.routes[0].methods.append("post"),
            "not an upper-case HTTP method",
            id="lower-case-method",
        ),
        pytest.param(
            lambda s: s.plugins.add(id="rl", name="rate-limiting"),
            'plugin "rl": unknown plugin name "rate-limiting"',
            id="unknown-plugin",
        ),
        pytest.param(
            _wrong_oneof,
            'plugin "ka": a "key-auth" plugin needs config "key_auth", got "ai_proxy"',
            id="config-oneof-mismatch",
        ),
        pytest.param(
            _no_config,
            'plugin "ka": a "key-auth" plugin needs config "key_auth", got "none"',
            id="config-missing",
        ),
        pytest.param(
            _set_provider("gemini"),
            'provider "gemini" is not supported yet',
            id="provider-gemini-unsupported",
        ),
        pytest.param(
            _set_provider("azure"),
            'provider "azure" needs model.options.azure_instance',
            id="azure-without-instance",
        ),
        pytest.param(
            lambda s: (
                _set_provider("azure")(s),
                setattr(_plugin(s, "ai").ai_proxy.model.options, "azure_instance", "acme"),
            ),
            'provider "azure" needs model.options.azure_deployment_id',
            id="azure-without-deployment",
        ),
        pytest.param(
            lambda s: (
                _set_provider("azure")(s),
                setattr(_plugin(s, "ai").ai_proxy.model.options, "azure_instance", "a.b/c"),
                setattr(_plugin(s, "ai").ai_proxy.model.options, "azure_deployment_id", "d"),
            ),
            'azure_instance "a.b/c" is not a host name label',
            id="azure-bad-instance",
        ),
        pytest.param(
            lambda s: (_set_provider("anthropic")(s), _route_type("llm/v1/embeddings")(s)),
            'provider "anthropic" does not serve route_type "llm/v1/embeddings"',
            id="anthropic-embeddings",
        ),
        pytest.param(
            _set_provider("acme-llm"), 'unknown provider "acme-llm"', id="provider-unknown"
        ),
        pytest.param(_set_provider(""), 'unknown provider ""', id="provider-empty"),
        pytest.param(
            _route_type("llm/v1/responses"),
            'route_type "llm/v1/responses" is not supported yet',
            id="route-type-responses",
        ),
        pytest.param(_route_type(""), 'unknown route_type ""', id="route-type-empty"),
        pytest.param(
            _set_upstream("ftp://files.example/chat"),
            'upstream_url "ftp://files.example/chat" is not an http(s) URL',
            id="upstream-not-http",
        ),
        pytest.param(
            _set_upstream("http:///no-host"), "is not an http(s) URL", id="upstream-without-host"
        ),
        pytest.param(
            lambda s: _set_provider("openai_compatible")(s),
            'provider "openai_compatible" needs model.options.upstream_url',
            id="compatible-without-url",
        ),
        pytest.param(
            _shared_key,
            'duplicate key hash: consumers "acme-corp" and "beta-inc" share a key',
            id="duplicate-key-hash",
        ),
        pytest.param(
            lambda s: s.consumers[0].key_hashes.append("md5:abc"),
            'consumer "acme-corp": key hash is not "sha256:"',
            id="malformed-key-hash",
        ),
        pytest.param(
            lambda s: setattr(s.consumers[0], "username", ""),
            'consumer "c1" has no username',
            id="consumer-without-username",
        ),
        pytest.param(
            lambda s: setattr(_plugin(s, "ai"), "route_id", "r9"),
            'plugin "ai": unknown route_id "r9"',
            id="plugin-unknown-route",
        ),
        pytest.param(
            lambda s: s.routes.add(id="r1", service_id="s1", paths=["/x"]),
            'duplicate route id "r1"',
            id="duplicate-route-id",
        ),
        pytest.param(
            lambda s: setattr(_plugin(s, "ai").ai_proxy, "llm_format", "anthropic"),
            'llm_format "anthropic" needs provider "anthropic", got "openai"',
            id="llm-format-anthropic-on-openai",
        ),
        pytest.param(
            lambda s: setattr(_plugin(s, "ai").ai_proxy, "llm_format", "gemini"),
            'unknown llm_format "gemini"',
            id="llm-format-unknown",
        ),
        pytest.param(
            lambda s: setattr(_plugin(s, "ai").ai_proxy.auth, "header_value", ""),
            "auth needs both header_name and header_value",
            id="auth-header-without-value",
        ),
    ],
)
def test_invalid_snapshots_are_rejected(valid_snapshot, mutate: Mutation, message: str) -> None:
    mutate(valid_snapshot)
    with pytest.raises(CompileError) as caught:
        compile_snapshot(valid_snapshot, version="v2")
    assert message in str(caught.value)


def test_disabled_invalid_plugin_is_still_rejected(valid_snapshot) -> None:
    _plugin(valid_snapshot, "ai").enabled = False
    _plugin(valid_snapshot, "ai").ai_proxy.model.provider = "gemini"
    with pytest.raises(CompileError):
        compile_snapshot(valid_snapshot, version="v2")


def test_same_key_twice_on_one_consumer_is_fine(valid_snapshot) -> None:
    valid_snapshot.consumers[0].key_hashes.append(hash_key("k-acme"))
    compile_snapshot(valid_snapshot, version="v1")


def _ai_plugin(plugin_id: str, model: str, **scope: str) -> snapshot_pb2.Plugin:
    return snapshot_pb2.Plugin(
        id=plugin_id,
        name="ai-proxy",
        enabled=True,
        ai_proxy=snapshot_pb2.AiProxyConfig(
            route_type="llm/v1/chat",
            model=snapshot_pb2.AiProxyModel(provider="openai", name=model),
        ),
        **scope,
    )


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        pytest.param([("g", {})], "g", id="global-only"),
        pytest.param([("g", {}), ("s", {"service_id": "s1"})], "s", id="service-beats-global"),
        pytest.param(
            [("s", {"service_id": "s1"}), ("r", {"route_id": "r1"}), ("g", {})],
            "r",
            id="route-beats-service",
        ),
        pytest.param(
            [("r2", {"route_id": "r2"}), ("g", {})], "g", id="other-routes-plugin-ignored"
        ),
        pytest.param(
            [("c", {"consumer_id": "c1"}), ("g", {})], "g", id="consumer-scoped-ignored-for-now"
        ),
    ],
)
def test_plugin_precedence(snapshot_factory, plugins, expected) -> None:
    snapshot = snapshot_factory()
    snapshot.plugins.remove(_plugin(snapshot, "ai"))
    for plugin_id, scope in plugins:
        snapshot.plugins.append(_ai_plugin(plugin_id, f"model-{plugin_id}", **scope))
    config = compile_snapshot(snapshot, version="v1")
    route = config.routes.match("/chat/completions", "POST")
    assert route is not None and route.id == "r1"
    assert route.ai_proxy is not None
    assert route.ai_proxy.model == f"model-{expected}"


def test_disabled_route_plugin_falls_back_to_service_plugin(snapshot_factory) -> None:
    snapshot = snapshot_factory()
    snapshot.plugins.append(_ai_plugin("r", "model-r", route_id="r1"))
    _plugin(snapshot, "r").enabled = False
    route = compile_snapshot(snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and route.ai_proxy is not None
    assert route.ai_proxy.model == "gpt-4o-mini"


def test_auth_query_param_goes_into_the_url(valid_snapshot) -> None:
    ai = _plugin(valid_snapshot, "ai").ai_proxy
    ai.auth.Clear()
    ai.auth.param_name = "key"
    ai.auth.param_value = "s3cret"
    ai.auth.param_location = "query"
    route = compile_snapshot(valid_snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and route.ai_proxy is not None
    assert route.ai_proxy.target.url.endswith("/v1/chat/completions?key=s3cret")
    assert route.ai_proxy.target.auth_headers == ()
