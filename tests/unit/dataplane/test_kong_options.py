"""The compiler's handling of Kong's plugin fields: what each route gets once per snapshot
(request defaults, streaming policy, body limit, model header, key-auth options, rate-limit
policies), and the per-request helpers that apply them."""

from __future__ import annotations

import orjson
import pytest

from dataplane.admission.ratelimit import check_config
from dataplane.config.keys import authenticate, hash_key, key_in_body
from dataplane.config.model import Consumer, KeyAuthPolicy, RequestDefaults
from dataplane.errors import CompileError, Rejection
from dataplane.proxy import kong_options
from dataplane.proxy.compiler import compile_snapshot
from meterline.dataplane.v1 import snapshot_pb2

KEY = "sk-unit-0001"


def snapshot(
    *,
    proxy: snapshot_pb2.AiProxyConfig | None = None,
    key_auth: snapshot_pb2.KeyAuthConfig | None = None,
    name: str = "ai-proxy",
) -> snapshot_pb2.Snapshot:
    proxy = proxy or snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/chat",
        model=snapshot_pb2.AiProxyModel(provider="openai", name="gpt-4o-mini"),
    )
    plugins = [snapshot_pb2.Plugin(id="p", name=name, enabled=True, ai_proxy=proxy)]
    if key_auth is not None:
        plugins.append(
            snapshot_pb2.Plugin(id="k", name="key-auth", enabled=True, key_auth=key_auth)
        )
    return snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s", name="s", url="http://x.invalid")],
        routes=[snapshot_pb2.Route(id="r", name="r", service_id="s", paths=["/r"])],
        consumers=[
            snapshot_pb2.Consumer(id="c-1", username="alice", key_hashes=[hash_key(KEY)]),
            snapshot_pb2.Consumer(id="c-guest", username="guest"),
        ],
        plugins=plugins,
    )


def route(snap: snapshot_pb2.Snapshot):  # type: ignore[no-untyped-def]
    matched = compile_snapshot(snap, version="v").routes.match_prefix("/r/x", "POST")
    assert matched is not None
    return matched[0]


def chat(**options: object) -> snapshot_pb2.AiProxyConfig:
    extra = {
        k: options.pop(k)
        for k in list(options)
        if k not in ("temperature", "top_p", "top_k", "upstream_path")
    }
    return snapshot_pb2.AiProxyConfig(
        route_type=str(extra.pop("route_type", "llm/v1/chat")),
        llm_format=str(extra.pop("llm_format", "openai")),
        model=snapshot_pb2.AiProxyModel(
            provider=str(extra.pop("provider", "openai")),
            options=snapshot_pb2.AiProxyModelOptions(
                upstream_url="https://up.example/v1/chat/completions", **options
            ),
        ),
        **extra,  # type: ignore[arg-type]
    )


# -- request defaults ------------------------------------------------------------------------


def test_a_route_without_options_never_touches_the_body() -> None:
    policy = route(snapshot()).ai_proxy
    assert policy.defaults is None
    assert policy.deny_streaming is False
    assert policy.max_body_bytes == 0
    assert policy.model_name_header is True  # Kong's default


@pytest.mark.parametrize(
    ("llm_format", "provider", "expected"),
    [
        ("openai", "openai", ((("temperature",), 0.5), (("top_p",), 0.25))),
        (
            "openai",
            "anthropic",
            ((("temperature",), 0.5), (("top_p",), 0.25), (("top_k",), 7)),
        ),
        (
            "anthropic",
            "anthropic",
            ((("temperature",), 0.5), (("top_p",), 0.25), (("top_k",), 7)),
        ),
        (
            "gemini",
            "gemini",
            (
                (("generationConfig", "temperature"), 0.5),
                (("generationConfig", "topP"), 0.25),
                (("generationConfig", "topK"), 7),
            ),
        ),
        ("cohere", "cohere", ((("temperature",), 0.5), (("p",), 0.25), (("k",), 7))),
        ("bedrock", "bedrock", ()),
    ],
)
def test_sampling_defaults_are_placed_where_the_client_format_keeps_them(
    llm_format: str, provider: str, expected: tuple[object, ...]
) -> None:
    config = chat(temperature=0.5, top_p=0.25, top_k=7, llm_format=llm_format, provider=provider)
    defaults = kong_options.request_defaults(config, provider=provider, route_type="llm/v1/chat")
    if not expected:
        assert defaults is None
    else:
        assert defaults == RequestDefaults(fill=expected)  # type: ignore[arg-type]


def test_embeddings_get_no_sampling_defaults_and_always_forces_only_streamable_types() -> None:
    config = chat(temperature=0.5, response_streaming="always")
    assert (
        kong_options.request_defaults(config, provider="openai", route_type="llm/v1/embeddings")
        is None
    )
    defaults = kong_options.request_defaults(config, provider="openai", route_type="llm/v1/chat")
    assert defaults is not None and defaults.force_stream


def test_apply_defaults_fills_only_missing_or_null_fields_and_keeps_bytes_otherwise() -> None:
    defaults = RequestDefaults(
        fill=((("temperature",), 0.3), (("generationConfig", "topK"), 4)), force_stream=False
    )
    raw = b'{"temperature": 1.0, "generationConfig": {"topK": 9}}'
    assert kong_options.apply_defaults(raw, defaults) is raw
    out = orjson.loads(kong_options.apply_defaults(b'{"temperature": null}', defaults))
    assert out == {"temperature": 0.3, "generationConfig": {"topK": 4}}
    assert kong_options.apply_defaults(b"not json", defaults) == b"not json"
    forced = RequestDefaults(force_stream=True)
    assert orjson.loads(kong_options.apply_defaults(b'{"stream": false}', forced)) == {
        "stream": True
    }


def test_compiled_route_carries_the_kong_options() -> None:
    config = chat(temperature=0.2, response_streaming="deny", max_request_body_size=2048)
    config.model_name_header = False
    policy = route(snapshot(proxy=config)).ai_proxy
    assert policy.deny_streaming
    assert policy.max_body_bytes == 2048
    assert policy.model_name_header is False
    assert policy.defaults == RequestDefaults(fill=((("temperature",), 0.2),))


def test_upstream_path_replaces_the_path_and_keeps_the_query() -> None:
    assert (
        kong_options.with_upstream_path("https://h.example:8443/a/b?api-version=1", "/c/d")
        == "https://h.example:8443/c/d?api-version=1"
    )
    policy = route(snapshot(proxy=chat(upstream_path="/proxy/chat"))).ai_proxy
    assert policy.target.url == "https://up.example/proxy/chat"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (chat(response_streaming="sometimes"), 'unknown response_streaming "sometimes"'),
        (
            chat(response_streaming="always", llm_format="gemini", provider="gemini"),
            'response_streaming "always" cannot apply to llm_format "gemini"',
        ),
        (chat(max_request_body_size=-1), "max_request_body_size is negative"),
        (chat(upstream_path="v1/chat"), 'upstream_path "v1/chat" is not a path'),
        (chat(temperature=9.0), "model.options.temperature is out of range"),
    ],
)
def test_options_data_planes_cannot_serve_are_refused(
    config: snapshot_pb2.AiProxyConfig, message: str
) -> None:
    with pytest.raises(CompileError, match=message):
        compile_snapshot(snapshot(proxy=config), version="v")


def test_advanced_targets_inherit_the_plugin_options_and_keep_their_alias() -> None:
    target = snapshot_pb2.AiProxyTarget(
        route_type="llm/v1/chat",
        weight=1,
        model=snapshot_pb2.AiProxyModel(
            provider="openai",
            name="gpt-4o",
            model_alias="smart",
            options=snapshot_pb2.AiProxyModelOptions(upstream_url="https://up.example/v1"),
        ),
    )
    config = snapshot_pb2.AiProxyConfig(
        targets=[target], response_streaming="deny", max_request_body_size=99
    )
    compiled = route(snapshot(proxy=config, name="ai-proxy-advanced"))
    assert compiled.balancer is not None
    (only,) = compiled.balancer.targets
    assert (only.policy.deny_streaming, only.policy.max_body_bytes) == (True, 99)
    assert only.policy.model_alias == "smart"
    assert compiled.balancer.plan(model="smart", headers=[]) == [0]


def test_the_model_header_is_left_out_for_a_name_a_header_cannot_carry() -> None:
    policy = route(snapshot()).ai_proxy
    assert kong_options.model_header(policy, "gpt-4o") == (b"x-kong-llm-model", b"openai/gpt-4o")
    assert kong_options.model_header(policy, "evil\r\nset-cookie: x") is None


# -- key-auth ----------------------------------------------------------------------------------


def scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> dict:  # type: ignore[type-arg]
    return {"method": method, "headers": headers or [], "query_string": b""}


def test_key_auth_options_compile_once() -> None:
    config = snapshot_pb2.KeyAuthConfig(
        key_names=["apikey"],
        key_in_body=True,
        anonymous_consumer_id="c-guest",
        run_on_preflight=False,
        realm="gw",
    )
    policy = route(snapshot(key_auth=config)).key_auth
    assert policy.key_in_body
    assert policy.anonymous == Consumer(id="c-guest", username="guest")
    assert policy.run_on_preflight is False
    assert policy.www_authenticate == ((b"www-authenticate", b'Key realm="gw"'),)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (snapshot_pb2.KeyAuthConfig(anonymous_consumer_id="nobody"), 'anonymous consumer "nobody"'),
        (snapshot_pb2.KeyAuthConfig(realm='a"b'), "realm contains a quote"),
    ],
)
def test_key_auth_options_that_cannot_be_served_are_refused(
    config: snapshot_pb2.KeyAuthConfig, message: str
) -> None:
    with pytest.raises(CompileError, match=message):
        compile_snapshot(snapshot(key_auth=config), version="v")


POLICY = KeyAuthPolicy(
    header_names=frozenset({b"apikey"}),
    query_names=frozenset({"apikey"}),
    key_in_query=False,
    key_in_bearer=False,
    key_in_body=True,
)


def test_key_in_body_reads_json_and_forms_and_removes_the_key() -> None:
    json_scope = scope(headers=[(b"content-type", b"application/json")])
    key, body = key_in_body(POLICY, json_scope, b'{"apikey": "k1", "model": "m"}')
    assert (key, orjson.loads(body)) == ("k1", {"model": "m"})
    form_scope = scope(headers=[(b"content-type", b"application/x-www-form-urlencoded")])
    key, body = key_in_body(POLICY, form_scope, b"a=1&apikey=k2&b=2")
    assert (key, body) == ("k2", b"a=1&b=2")
    raw = b'{"model": "m"}'
    assert key_in_body(POLICY, json_scope, raw) == (None, raw)
    multipart = scope(headers=[(b"content-type", b"multipart/form-data; boundary=x")])
    assert key_in_body(POLICY, multipart, b"--x") == (None, b"--x")


def test_anonymous_and_preflight_and_realm_decide_as_kong() -> None:
    consumers = {hash_key(KEY): Consumer(id="c-1", username="alice")}
    guest = Consumer(id="c-guest", username="guest")
    anonymous = KeyAuthPolicy(
        header_names=frozenset({b"apikey"}),
        query_names=frozenset({"apikey"}),
        key_in_query=False,
        key_in_bearer=False,
        anonymous=guest,
    )
    assert authenticate(anonymous, consumers, scope()) == guest
    assert authenticate(anonymous, consumers, scope(headers=[(b"apikey", b"bad")])) == guest
    assert (
        authenticate(anonymous, consumers, scope(headers=[(b"apikey", KEY.encode())]))
        == (consumers[hash_key(KEY)])
    )
    assert authenticate(POLICY, consumers, scope(), body_key=KEY) == consumers[hash_key(KEY)]
    preflight = KeyAuthPolicy(
        header_names=frozenset(),
        query_names=frozenset(),
        key_in_query=False,
        key_in_bearer=False,
        run_on_preflight=False,
        www_authenticate=((b"www-authenticate", b'Key realm="r"'),),
    )
    assert authenticate(preflight, consumers, scope("OPTIONS")) is None
    with pytest.raises(Rejection) as refused:
        authenticate(preflight, consumers, scope())
    assert refused.value.status == 401
    assert refused.value.headers == ((b"www-authenticate", b'Key realm="r"'),)


# -- rate-limit error codes and policies ---------------------------------------------------------


def test_rate_limit_policies_and_error_codes_are_checked() -> None:
    policy = snapshot_pb2.RateLimitPolicy(
        id="p",
        matches=[snapshot_pb2.RateLimitMatch(type="ip", values=["10.0.0.0/8"])],
        limits=[snapshot_pb2.RateLimitPolicyLimit(limit="100", window_size=60)],
    )
    good = snapshot_pb2.RateLimitingConfig(policies=[policy], tokens_count_strategy="total_tokens")
    assert check_config(good, plugin="ai-rate-limiting-advanced") is None
    assert "policies are for" in (check_config(good, plugin="rate-limiting-advanced") or "")
    bad_ip = snapshot_pb2.RateLimitingConfig(tokens_count_strategy="total_tokens")
    bad_ip.policies.add().CopyFrom(policy)
    bad_ip.policies[0].matches[0].values[:] = ["not-an-ip"]
    assert "is not an IP address" in (
        check_config(bad_ip, plugin="ai-rate-limiting-advanced") or ""
    )
    coded = snapshot_pb2.RateLimitingConfig(
        windows=[snapshot_pb2.RateLimitWindow(limit="1", window_size=1)], error_code=200
    )
    assert "not an HTTP error status" in (
        check_config(coded, plugin="rate-limiting-advanced") or ""
    )


def test_allow_override_keeps_the_clients_own_query_credential() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    for allow, expected in ((True, "key=client-own"), (False, "key=configured")):
        config = chat()
        config.auth.CopyFrom(
            snapshot_pb2.AiProxyAuth(
                param_name="key",
                param_value="configured",
                param_location="query",
                allow_override=allow,
            )
        )
        compiled = route(snapshot(proxy=config))
        prepared = kong_options.prepare(
            compiled.translator,
            compiled.ai_proxy,
            body,
            subpath="/v1/chat/completions",
            query=b"key=client-own",
            method="POST",
        )
        assert prepared.url.endswith("?" + expected)
