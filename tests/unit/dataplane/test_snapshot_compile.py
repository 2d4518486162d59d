"""Compiling snapshots: what is accepted, what is rejected and why, and plugin precedence."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from dataplane.config.keys import hash_key
from dataplane.proxy.compiler import CompileError, compile_snapshot
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
            lambda s: s.routes[0].ClearField("paths"),
            'route "chat": has no paths, methods, hosts or headers to match on',
            id="nothing-to-match-on",
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
            _route_type("llm/v1/assistants"),
            'route_type "llm/v1/assistants" is not supported yet',
            id="route-type-assistants",
        ),
        pytest.param(
            lambda s: (_set_provider("anthropic")(s), _route_type("llm/v1/responses")(s)),
            'provider "anthropic" does not serve route_type "llm/v1/responses"',
            id="anthropic-responses",
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
            'llm_format "anthropic" needs provider "anthropic" (or "bedrock"), got "openai"',
            id="llm-format-anthropic-on-openai",
        ),
        pytest.param(
            lambda s: setattr(_plugin(s, "ai").ai_proxy, "llm_format", "klingon"),
            'unknown llm_format "klingon"',
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
    _plugin(valid_snapshot, "ai").ai_proxy.model.provider = "no-such-provider"
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


# -- ai-proxy-advanced ---------------------------------------------------------------------------


def _advanced_snapshot(**balancer) -> snapshot_pb2.Snapshot:
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s1", name="ai-service", url="http://ai.invalid")],
        routes=[snapshot_pb2.Route(id="r1", name="lb", service_id="s1", paths=["/lb"])],
    )
    plugin = snapshot.plugins.add(id="adv", name="ai-proxy-advanced", route_id="r1", enabled=True)
    config = plugin.ai_proxy
    config.route_type = "llm/v1/chat"
    for index, (provider, header, cost) in enumerate(
        [("openai", "authorization", "0.5"), ("anthropic", "x-api-key", "0.25")]
    ):
        target = config.targets.add(route_type="llm/v1/chat", weight=1, priority=index)
        target.auth.header_name, target.auth.header_value = header, f"secret-{index}"
        target.model.provider = provider
        target.model.name = f"model-{index}"
        target.model.options.input_cost = cost
        target.model.options.output_cost = cost
    config.balancer.CopyFrom(snapshot_pb2.AiProxyBalancer(**balancer))
    return snapshot


def test_ai_proxy_advanced_compiles_to_a_balancer_over_complete_targets() -> None:
    snapshot = _advanced_snapshot(algorithm="cost", read_timeout=1500, connect_timeout=200)
    snapshot.plugins[0].ai_proxy.model_aliases["cheap"] = "model-1"
    config = compile_snapshot(snapshot, version="v1")
    route = config.routes.match("/lb", "POST")
    assert route is not None and route.ai_proxy is not None
    balancer = route.balancer
    assert balancer is not None and balancer.algorithm == "cost"
    providers = [t.policy.target.provider for t in balancer.targets]
    assert providers == ["openai", "anthropic"]
    assert [str(t.cost) for t in balancer.targets] == ["1.0", "0.50"]
    # Each target has its own translator, and the route's model policy and timeouts.
    anthropic_target = balancer.targets[1].policy
    assert type(balancer.targets[1].translator).__name__ == "OpenAIToAnthropicTranslator"
    assert dict(anthropic_target.model_aliases) == {"cheap": "model-1"}
    assert anthropic_target.timeout is not None
    assert (anthropic_target.timeout.sock_connect, anthropic_target.timeout.sock_read) == (0.2, 1.5)
    # Every target's credential header is dropped from client requests.
    assert {b"authorization", b"x-api-key"} <= route.dropped_headers
    assert "secret-0" not in repr(route)


def _mutate_advanced(mutation: Callable[[snapshot_pb2.AiProxyConfig], object]) -> Mutation:
    def mutate(snapshot: snapshot_pb2.Snapshot) -> None:
        snapshot.CopyFrom(_advanced_snapshot())
        mutation(snapshot.plugins[0].ai_proxy)

    return mutate


def _second_plugin_on_route(snapshot: snapshot_pb2.Snapshot) -> None:
    snapshot.CopyFrom(_advanced_snapshot())
    snapshot.plugins.add(id="ai", name="ai-proxy", route_id="r1", enabled=True)
    snapshot.plugins[-1].ai_proxy.CopyFrom(
        snapshot_pb2.AiProxyConfig(
            route_type="llm/v1/chat", model=snapshot_pb2.AiProxyModel(provider="openai")
        )
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            _mutate_advanced(lambda c: c.ClearField("targets")),
            "ai-proxy-advanced needs at least one target",
            id="no-targets",
        ),
        pytest.param(
            _mutate_advanced(lambda c: setattr(c.balancer, "algorithm", "random")),
            'unknown balancer.algorithm "random"',
            id="unknown-algorithm",
        ),
        pytest.param(
            _mutate_advanced(lambda c: setattr(c.balancer, "algorithm", "consistent-hashing")),
            "consistent-hashing needs balancer.hash_on_header",
            id="hashing-without-header",
        ),
        pytest.param(
            _mutate_advanced(
                lambda c: (
                    setattr(c.balancer, "algorithm", "priority"),
                    setattr(c.targets[1], "priority", 0),
                )
            ),
            "priority needs targets with at least two different priorities",
            id="priority-without-priorities",
        ),
        pytest.param(
            _mutate_advanced(
                lambda c: (
                    setattr(c.balancer, "algorithm", "cost"),
                    setattr(c.targets[1].model.options, "output_cost", ""),
                )
            ),
            "targets[1]: algorithm cost needs model.options.input_cost and output_cost",
            id="cost-without-costs",
        ),
        pytest.param(
            _mutate_advanced(lambda c: setattr(c.targets[0], "weight", 0)),
            "targets[0]: weight must be at least 1, got 0",
            id="weight-zero",
        ),
        pytest.param(
            _mutate_advanced(lambda c: c.balancer.failover_criteria.append("http_5oo")),
            'unknown failover criterion "http_5oo"',
            id="unknown-criterion",
        ),
        pytest.param(
            _mutate_advanced(lambda c: setattr(c.targets[1], "route_type", "llm/v1/completions")),
            "every target needs the same route_type",
            id="mixed-route-types",
        ),
        pytest.param(
            _mutate_advanced(lambda c: setattr(c.targets[1].model, "provider", "acme")),
            'targets[1]: unknown provider "acme"',
            id="bad-target-provider",
        ),
        pytest.param(
            _mutate_advanced(lambda c: c.model_aliases.update({"fast": ""})),
            "model_aliases needs non-empty names",
            id="empty-alias",
        ),
        pytest.param(
            _mutate_advanced(lambda c: setattr(c.balancer, "max_fails", -1)),
            "balancer.max_fails is negative",
            id="negative-max-fails",
        ),
        pytest.param(
            _second_plugin_on_route,
            'a second "ai-proxy" plugin on the same scope',
            id="ai-proxy-and-advanced-on-one-route",
        ),
    ],
)
def test_invalid_ai_proxy_advanced_is_rejected(valid_snapshot, mutate, message) -> None:
    mutate(valid_snapshot)
    with pytest.raises(CompileError, match=re.escape(message)):
        compile_snapshot(valid_snapshot, version="v1")


def test_an_unchanged_balancer_keeps_its_state_across_snapshots() -> None:
    from dataplane.proxy.gateway import Gateway

    gateway = Gateway(node_id="dp", usage_sink=lambda event: None)
    snapshot = _advanced_snapshot(max_fails=1, fail_timeout=60_000)
    gateway.apply(compile_snapshot(snapshot, version="v1"))
    first = gateway.config.routes.match("/lb", "POST").balancer
    first.failed(0)
    assert first.circuit_open(0)
    # Given a new snapshot that changes something else (a consumer), the circuit stays open.
    snapshot.consumers.add(id="c9", username="new-corp")
    gateway.apply(compile_snapshot(snapshot, version="v2"))
    second = gateway.config.routes.match("/lb", "POST").balancer
    assert second is not first and second.circuit_open(0)
    # A changed balancer config starts afresh.
    snapshot.plugins[0].ai_proxy.balancer.fail_timeout = 30_000
    gateway.apply(compile_snapshot(snapshot, version="v3"))
    third = gateway.config.routes.match("/lb", "POST").balancer
    assert not third.circuit_open(0)
