"""Translators per provider: request translation, response translation, SSE, usage extraction."""

from __future__ import annotations

import orjson
import pytest

from dataplane.http.client import split_url
from dataplane.proxy.compiler import compile_snapshot
from dataplane.translate.anthropic_anthropic import AnthropicNativeTranslator
from dataplane.translate.anthropic_format import (
    MessageStreamScanner,
    anthropic_error_body,
    read_message_usage,
    usage_from_anthropic,
)
from dataplane.translate.openai_anthropic import (
    MessagesToChatStream,
    OpenAIToAnthropicTranslator,
    anthropic_error_to_openai,
    chat_to_messages_request,
    message_to_chat_completion,
    openai_usage,
)
from dataplane.translate.openai_format import InvalidRequest, usage_from_openai
from dataplane.translate.openai_openai import OpenAITranslator
from dataplane.translate.preserve import PreserveTranslator
from dataplane.usage.estimate import chars_estimate, estimate_tokens, estimate_usage
from dataplane.usage.tokens import TokenUsage


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(
            {"prompt_tokens": 10, "completion_tokens": 5},
            TokenUsage(10, 5),
            id="chat-plain",
        ),
        pytest.param(
            {
                "prompt_tokens": 100,
                "completion_tokens": 50,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 30},
            },
            TokenUsage(40, 20, cached_input_tokens=60, reasoning_tokens=30),
            id="chat-cached-and-reasoning",
        ),
        pytest.param(
            {"prompt_tokens": 8, "total_tokens": 8},
            TokenUsage(8, None),
            id="embeddings-no-completion",
        ),
        pytest.param(
            {
                "input_tokens": 20,
                "output_tokens": 9,
                "input_tokens_details": {"cached_tokens": 4},
                "output_tokens_details": {"reasoning_tokens": 3},
            },
            TokenUsage(16, 6, cached_input_tokens=4, reasoning_tokens=3),
            id="responses-api",
        ),
        pytest.param(
            {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 9},
            },
            TokenUsage(0, 1, cached_input_tokens=5),
            id="cached-above-total-is-capped",
        ),
        pytest.param(
            # Malformed usage is not trusted at all: absent, so the gateway estimates it and
            # marks the event estimated (issue 18, defect 6).
            {"prompt_tokens": -1, "completion_tokens": True},
            None,
            id="junk-counts-are-absent",
        ),
        pytest.param({}, None, id="empty"),
        pytest.param("x", None, id="not-an-object"),
    ],
)
def test_openai_usage_is_split_into_disjoint_kinds(usage, expected) -> None:
    assert usage_from_openai(usage) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(
            {"input_tokens": 12, "output_tokens": 7},
            TokenUsage(12, 7),
            id="plain",
        ),
        pytest.param(
            {
                "input_tokens": 3,
                "output_tokens": 7,
                "cache_creation_input_tokens": 40,
                "cache_read_input_tokens": 0,
            },
            TokenUsage(3, 7, cached_input_tokens=0, cache_write_tokens=40),
            id="cache-write",
        ),
        pytest.param(
            {"input_tokens": 3, "output_tokens": 7, "cache_read_input_tokens": 40},
            TokenUsage(3, 7, cached_input_tokens=40),
            id="cache-read",
        ),
        pytest.param(None, None, id="absent"),
    ],
)
def test_anthropic_usage(usage, expected) -> None:
    assert usage_from_anthropic(usage) == expected


def _sse(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


STREAM = [
    _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "usage": {
                    "input_tokens": 25,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 100,
                    "output_tokens": 1,
                },
            },
        },
    ),
    _sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    _sse("ping", {"type": "ping"}),
    _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    ),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    _sse("message_stop", {"type": "message_stop"}),
]


def test_message_stream_usage_takes_input_from_start_and_cumulative_output_from_delta() -> None:
    scanner = MessageStreamScanner()
    for event in STREAM:
        scanner.accept(event)
    assert scanner.usage == TokenUsage(25, 15, cached_input_tokens=100, cache_write_tokens=0)
    assert scanner.model == "claude-x"
    assert "".join(scanner.texts) == "Hi!"


def test_message_delta_repeating_input_counts_overrides_start() -> None:
    scanner = MessageStreamScanner()
    scanner.accept(STREAM[0])
    scanner.accept(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {},
                "usage": {"input_tokens": 30, "output_tokens": 2},
            },
        )
    )
    assert scanner.usage == TokenUsage(30, 2, cached_input_tokens=100, cache_write_tokens=0)


@pytest.mark.parametrize("include_usage", [False, True])
def test_messages_stream_becomes_chat_chunks(include_usage) -> None:
    translator = MessagesToChatStream(include_usage=include_usage)
    out = b"".join(translator.feed(event) for event in STREAM)
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"msg_1"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hi!"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        (last,) = usage_chunks
        assert last["choices"] == []
        assert last["usage"] == {
            "prompt_tokens": 125,
            "completion_tokens": 15,
            "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 100},
        }
    else:
        assert usage_chunks == []
    assert translator.usage == TokenUsage(25, 15, cached_input_tokens=100, cache_write_tokens=0)


def test_tool_use_stream_becomes_tool_call_chunks() -> None:
    translator = MessagesToChatStream(include_usage=False)
    events = [
        STREAM[0],
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}},
            },
        ),
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
            },
        ),
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "1}"},
            },
        ),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 4},
            },
        ),
    ]
    chunks = [
        orjson.loads(e[6:])
        for e in b"".join(translator.feed(e) for e in events).split(b"\n\n")
        if e
    ]
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"messages": [{"role": "user", "content": "hi"}]},
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1024},
            id="minimal-default-max-tokens",
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "developer", "content": [{"type": "text", "text": "no lists"}]},
                    {"role": "user", "content": "hi"},
                ],
                "max_completion_tokens": 9,
                "temperature": 0.2,
                "stop": "END",
                "user": "u-1",
            },
            {
                "model": "m",
                "system": "be brief\n\nno lists",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 9,
                "temperature": 0.2,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"},
            },
            id="system-and-parameters",
        ),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is it"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,QUJD"},
                            },
                            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        ],
                    }
                ],
            },
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is it"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "QUJD",
                                },
                            },
                            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                        ],
                    }
                ],
                "max_tokens": 1024,
            },
            id="images",
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "w", "arguments": '{"q":1}'},
                            },
                            {
                                "id": "c2",
                                "type": "function",
                                "function": {"name": "w", "arguments": "{}"},
                            },
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                    {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
                ],
                "tools": [{"type": "function", "function": {"name": "w", "description": "d"}}],
                "tool_choice": {"type": "function", "function": {"name": "w"}},
            },
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "c1", "name": "w", "input": {"q": 1}},
                            {"type": "tool_use", "id": "c2", "name": "w", "input": {}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                            {"type": "tool_result", "tool_use_id": "c2", "content": "rainy"},
                        ],
                    },
                ],
                "max_tokens": 1024,
                "tools": [
                    {
                        "name": "w",
                        "description": "d",
                        "input_schema": {"type": "object", "properties": {}},
                    }
                ],
                "tool_choice": {"type": "tool", "name": "w"},
            },
            id="tools-round-trip",
        ),
    ],
)
def test_chat_request_becomes_messages_request(body, expected) -> None:
    assert chat_to_messages_request(body, model="m", default_max_tokens=1024) == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"messages": [{"role": "user", "content": "x"}], "n": 2}, id="n-above-1"),
        pytest.param({"messages": [{"role": "robot", "content": "x"}]}, id="unknown-role"),
        pytest.param({"messages": ["x"]}, id="message-not-object"),
    ],
)
def test_untranslatable_chat_requests_are_400s(body) -> None:
    with pytest.raises(InvalidRequest):
        chat_to_messages_request(body, model="m", default_max_tokens=1)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_message_becomes_chat_completion(stop_reason, finish_reason) -> None:
    message = {
        "id": "msg_9",
        "type": "message",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 3, "output_tokens": 2, "cache_creation_input_tokens": 10},
    }
    usage = usage_from_anthropic(message["usage"])
    completion = orjson.loads(message_to_chat_completion(message, usage))
    assert completion["id"] == "msg_9"
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hello there"
    assert completion["choices"][0]["finish_reason"] == finish_reason
    assert completion["usage"]["prompt_tokens"] == 13
    assert completion["usage"]["total_tokens"] == 15
    assert openai_usage(None) is None


def test_errors_in_each_format() -> None:
    assert orjson.loads(anthropic_error_body("bad", type="invalid_request_error")) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert orjson.loads(anthropic_error_to_openai(body)) == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }
    assert anthropic_error_to_openai(b"<html>") == b"<html>"


def test_read_message_usage() -> None:
    body = orjson.dumps(
        {"type": "message", "model": "c", "usage": {"input_tokens": 1, "output_tokens": 2}}
    )
    assert read_message_usage(body) == (TokenUsage(1, 2), "c")
    assert read_message_usage(b"nope") == (None, None)


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        pytest.param(
            {"usage": {"prompt_tokens": 4, "completion_tokens": 2}}, TokenUsage(4, 2), id="openai"
        ),
        pytest.param(
            {
                "type": "message",
                "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 1},
            },
            TokenUsage(4, 2, cached_input_tokens=1),
            id="anthropic",
        ),
        pytest.param(
            {
                "object": "response",
                "usage": {
                    "input_tokens": 4,
                    "output_tokens": 2,
                    "input_tokens_details": {"cached_tokens": 1},
                },
            },
            TokenUsage(3, 2, cached_input_tokens=1),
            id="responses",
        ),
        pytest.param({"data": []}, None, id="no-usage"),
    ],
)
def test_preserve_finds_usage_in_any_known_body(body, usage) -> None:
    translator = PreserveTranslator(anthropic_errors=False)
    prepared = None
    assert translator.whole(orjson.dumps(body), 200, prepared)[1] == usage  # type: ignore[arg-type]


def test_preserve_stream_reads_responses_api_completed_event() -> None:
    translator = PreserveTranslator(anthropic_errors=False)
    relay = translator.stream(None)  # type: ignore[arg-type]
    event = (
        b"event: response.completed\ndata: "
        + orjson.dumps(
            {
                "type": "response.completed",
                "response": {
                    "model": "gpt-x",
                    "usage": {
                        "input_tokens": 5,
                        "output_tokens": 6,
                        "output_tokens_details": {"reasoning_tokens": 2},
                    },
                },
            }
        )
        + b"\n\n"
    )
    assert relay.feed(event) == event
    assert relay.usage == TokenUsage(5, 4, reasoning_tokens=2)
    assert relay.model == "gpt-x"


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("abc", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)]
)
def test_fallback_estimate_is_ceil_of_chars_over_four(text, tokens) -> None:
    assert chars_estimate(text) == tokens


def test_estimate_usage_reads_openai_and_anthropic_bodies() -> None:
    openai_body = {"messages": [{"role": "user", "content": "12345678"}]}
    anthropic_body = {
        "system": "1234",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "1234"}]}],
    }
    assert estimate_usage(document=openai_body, produced="abcdefghi") == TokenUsage(
        estimate_tokens("12345678"), estimate_tokens("abcdefghi")
    )
    assert estimate_usage(document=anthropic_body, produced="") == TokenUsage(
        estimate_tokens("12341234"), 0
    )


def test_estimate_uses_a_real_tokenizer_when_one_is_available_offline() -> None:
    from dataplane.usage.estimate import tokenizer

    count = tokenizer()
    if count is None:
        pytest.skip("tiktoken with an offline encoding is not installed")
    assert count("hello world") == 2
    assert estimate_tokens("hello world") == 2


def _route_policy(snapshot_factory, **changes):
    snapshot = snapshot_factory()
    plugin = next(p for p in snapshot.plugins if p.name == "ai-proxy")
    for path, value in changes.items():
        target = plugin.ai_proxy
        *parents, leaf = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, value)
    config = compile_snapshot(snapshot, version="v1")
    route = config.routes.match("/chat/x", "POST")
    assert route is not None and route.ai_proxy is not None
    return route.ai_proxy, route


def test_azure_url_is_built_from_its_options(snapshot_factory) -> None:
    policy, route = _route_policy(
        snapshot_factory,
        **{
            "model.provider": "azure",
            "model.options.azure_instance": "acme-eu",
            "model.options.azure_deployment_id": "gpt-4o prod",
            "auth.header_name": "api-key",
            "auth.header_value": "az-secret",
        },
    )
    assert policy.target.url == (
        "https://acme-eu.openai.azure.com/openai/deployments/gpt-4o%20prod/chat/completions"
        "?api-version=2024-10-21"
    )
    assert policy.target.origin == "https://acme-eu.openai.azure.com:443"
    assert policy.target.auth_headers == ((b"api-key", b"az-secret"),)
    assert isinstance(route.translator, OpenAITranslator)
    assert b"api-key" in route.dropped_headers


@pytest.mark.parametrize(
    ("route_type", "version", "url"),
    [
        (
            "llm/v1/completions",
            "2024-06-01",
            "/openai/deployments/d/completions?api-version=2024-06-01",
        ),
        ("llm/v1/embeddings", "", "/openai/deployments/d/embeddings?api-version=2024-10-21"),
    ],
)
def test_azure_route_types(snapshot_factory, route_type, version, url) -> None:
    policy, _route = _route_policy(
        snapshot_factory,
        route_type=route_type,
        **{
            "model.provider": "azure",
            "model.options.azure_instance": "a",
            "model.options.azure_deployment_id": "d",
            "model.options.azure_api_version": version,
        },
    )
    assert policy.target.url == "https://a.openai.azure.com" + url


@pytest.mark.parametrize(
    ("llm_format", "translator", "version_header"),
    [
        ("anthropic", AnthropicNativeTranslator, b"2023-06-01"),
        ("openai", OpenAIToAnthropicTranslator, b"2023-06-01"),
    ],
)
def test_anthropic_routes(snapshot_factory, llm_format, translator, version_header) -> None:
    policy, route = _route_policy(
        snapshot_factory,
        llm_format=llm_format,
        **{
            "model.provider": "anthropic",
            "auth.header_name": "x-api-key",
            "auth.header_value": "sk-ant-x",
        },
    )
    assert policy.target.url == "https://api.anthropic.com/v1/messages"
    assert isinstance(route.translator, translator)
    assert dict(policy.target.auth_headers) == {
        b"x-api-key": b"sk-ant-x",
        b"anthropic-version": version_header,
    }
    # The client's own version header is replaced, not duplicated.
    assert b"anthropic-version" in route.dropped_headers


def test_anthropic_version_option_is_used(snapshot_factory) -> None:
    policy, _route = _route_policy(
        snapshot_factory,
        **{"model.provider": "anthropic", "model.options.anthropic_version": "2024-01-01"},
    )
    assert (b"anthropic-version", b"2024-01-01") in policy.target.auth_headers


def test_preserve_route_appends_the_client_path(snapshot_factory) -> None:
    policy, route = _route_policy(snapshot_factory, route_type="preserve")
    assert policy.target.url == "https://api.openai.com"
    prepared = route.translator.prepare(
        b"", policy, subpath="/v1/models", query=b"limit=2", method="GET"
    )
    assert prepared.url == "https://api.openai.com/v1/models?limit=2"
    assert prepared.method == "GET"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b'{"model": "c"}', "missing_required_parameter", id="no-messages"),
        pytest.param(b'{"messages": {}}', "invalid_type", id="messages-not-list"),
        pytest.param(b'{"messages": [], "stream": "yes"}', "invalid_type", id="stream-not-bool"),
    ],
)
def test_native_anthropic_bad_bodies(snapshot_factory, raw, code) -> None:
    policy, route = _route_policy(
        snapshot_factory, llm_format="anthropic", **{"model.provider": "anthropic"}
    )
    with pytest.raises(InvalidRequest) as caught:
        route.translator.prepare(raw, policy, subpath="/v1/messages", query=b"", method="POST")
    assert caught.value.code == code


def test_native_anthropic_fills_in_model_and_max_tokens_only_when_needed(snapshot_factory) -> None:
    policy, route = _route_policy(
        snapshot_factory,
        llm_format="anthropic",
        **{"model.provider": "anthropic", "model.name": "", "model.options.max_tokens": 77},
    )
    untouched = b'{"model":"c","max_tokens":5,"messages":[]}'
    prepared = route.translator.prepare(
        untouched, policy, subpath="/v1/messages", query=b"", method="POST"
    )
    assert prepared.body is untouched
    filled = route.translator.prepare(
        b'{"model":"c","messages":[]}', policy, subpath="/v1/messages", query=b"", method="POST"
    )
    assert orjson.loads(filled.body)["max_tokens"] == 77


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        pytest.param(
            "https://x.openai.azure.com/openai/deployments/d/chat/completions"
            "?api-version=2024-10-21&key=a%2Bb%2Fc%3D%7E",
            "/openai/deployments/d/chat/completions?api-version=2024-10-21&key=a%2Bb%2Fc%3D%7E",
            id="escapes-kept-byte-for-byte",
        ),
        pytest.param("http://h:1/p/ä b?q=ü", "/p/%C3%A4%20b?q=%C3%BC", id="non-ascii-quoted"),
    ],
)
def test_upstream_url_keeps_what_is_already_encoded(url: str, sent: str) -> None:
    assert split_url(url).path == sent.encode()


def test_responses_route_prepares_without_stream_options_and_with_max_output_tokens(
    snapshot_factory,
) -> None:
    policy, route = _route_policy(
        snapshot_factory,
        route_type="llm/v1/responses",
        **{"model.name": "", "model.options.max_tokens": 64},
    )
    assert policy.target.url == "https://api.openai.com/v1/responses"
    assert type(route.translator).__name__ == "OpenAIResponsesTranslator"
    prepared = route.translator.prepare(
        b'{"model": "gpt-4o", "input": "hi", "stream": true}',
        policy,
        subpath="",
        query=b"",
        method="POST",
    )
    body = orjson.loads(prepared.body)
    assert body == {"model": "gpt-4o", "input": "hi", "stream": True, "max_output_tokens": 64}
    assert prepared.stream and not prepared.hide_usage_chunk
    with pytest.raises(InvalidRequest) as caught:
        route.translator.prepare(
            b'{"model": "gpt-4o"}', policy, subpath="", query=b"", method="POST"
        )
    assert caught.value.param == "input"


def test_responses_stream_relay_reads_usage_from_response_completed(snapshot_factory) -> None:
    _policy, route = _route_policy(snapshot_factory, route_type="llm/v1/responses")
    relay = route.translator.stream(None)
    created = {"type": "response.created", "response": {"model": "o3-mini", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "hello"}
    completed = {
        "type": "response.completed",
        "response": {
            "model": "o3-mini",
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"cached_tokens": 20},
                "output_tokens": 30,
                "output_tokens_details": {"reasoning_tokens": 12},
                "total_tokens": 80,
            },
        },
    }
    events = [
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
        for e in (created, delta)
    ]
    for event in events:
        assert relay.feed(event) == event
    assert relay.usage is None and relay.produced_text() == "hello"
    last = b"event: response.completed\ndata: " + orjson.dumps(completed) + b"\n\n"
    assert relay.feed(last) == last
    assert relay.usage == TokenUsage(30, 18, cached_input_tokens=20, reasoning_tokens=12)
    assert relay.model == "o3-mini"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param("fast", "gpt-4o-mini", id="alias"),
        pytest.param("gpt-4o", "gpt-4o", id="allowed"),
    ],
)
def test_model_policy_maps_aliases_then_checks_the_allow_list(
    snapshot_factory, model, expected
) -> None:
    snapshot = snapshot_factory()
    config = next(p for p in snapshot.plugins if p.id == "ai").ai_proxy
    config.model.name = ""
    config.model_allow_list.extend(["gpt-4o", "gpt-4o-mini"])
    config.model_aliases["fast"] = "gpt-4o-mini"
    route = compile_snapshot(snapshot, version="v1").routes.match("/chat", "POST")
    policy = route.ai_proxy
    raw = orjson.dumps({"model": model, "messages": []})
    prepared = route.translator.prepare(raw, policy, subpath="", query=b"", method="POST")
    assert orjson.loads(prepared.body)["model"] == expected
    assert prepared.requested_model == expected
    with pytest.raises(InvalidRequest) as caught:
        route.translator.prepare(
            b'{"model": "o1", "messages": []}', policy, subpath="", query=b"", method="POST"
        )
    assert caught.value.code == "model_not_found"
    with pytest.raises(InvalidRequest) as caught:
        route.translator.prepare(b'{"messages": []}', policy, subpath="", query=b"", method="POST")
    assert caught.value.code == "missing_required_parameter"
