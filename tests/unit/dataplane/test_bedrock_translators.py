"""Bedrock's translators without a network: requests, answers and event-stream frames."""

from __future__ import annotations

import base64

import orjson
import pytest

from dataplane.http.eventstream import event, exception
from dataplane.translate.bedrock_format import (
    EventStreamScanner,
    bedrock_error_to_openai,
    model_url,
    split_model_path,
    usage_from_converse,
    usage_from_headers,
)
from dataplane.translate.openai_bedrock import (
    ConverseToChatStream,
    chat_to_converse_request,
    converse_to_chat_completion,
)
from dataplane.translate.openai_format import InvalidRequest
from dataplane.usage.tokens import TokenUsage

PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "developer", "content": [{"type": "text", "text": "no jokes"}]},
                    {"role": "user", "content": "hi"},
                ],
                "max_tokens": 5,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop": "END",
            },
            {
                "messages": [{"role": "user", "content": [{"text": "hi"}]}],
                "system": [{"text": "be brief"}, {"text": "no jokes"}],
                "inferenceConfig": {
                    "maxTokens": 5,
                    "temperature": 0.2,
                    "topP": 0.9,
                    "stopSequences": ["END"],
                },
            },
            id="system-and-inference",
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
                                "id": "t1",
                                "type": "function",
                                "function": {"name": "look", "arguments": '{"city":"Oslo"}'},
                            },
                            {
                                "id": "t2",
                                "type": "function",
                                "function": {"name": "look", "arguments": '{"city":"Rome"}'},
                            },
                        ],
                    },
                    {"role": "tool", "tool_call_id": "t1", "content": "rain"},
                    {"role": "tool", "tool_call_id": "t2", "content": "sun"},
                ],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "look",
                            "description": "weather",
                            "parameters": {"type": "object"},
                        },
                    }
                ],
                "tool_choice": "required",
            },
            {
                "messages": [
                    {"role": "user", "content": [{"text": "weather?"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "toolUse": {
                                    "toolUseId": "t1",
                                    "name": "look",
                                    "input": {"city": "Oslo"},
                                }
                            },
                            {
                                "toolUse": {
                                    "toolUseId": "t2",
                                    "name": "look",
                                    "input": {"city": "Rome"},
                                }
                            },
                        ],
                    },
                    # Parallel tool results go back in one user turn (roles must alternate).
                    {
                        "role": "user",
                        "content": [
                            {"toolResult": {"toolUseId": "t1", "content": [{"text": "rain"}]}},
                            {"toolResult": {"toolUseId": "t2", "content": [{"text": "sun"}]}},
                        ],
                    },
                ],
                "toolConfig": {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": "look",
                                "inputSchema": {"json": {"type": "object"}},
                                "description": "weather",
                            }
                        }
                    ],
                    "toolChoice": {"any": {}},
                },
            },
            id="tools-and-results",
        ),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is it"},
                            {"type": "image_url", "image_url": {"url": PNG}},
                        ],
                    }
                ]
            },
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"text": "what is it"},
                            {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                        ],
                    }
                ]
            },
            id="data-url-image",
        ),
    ],
)
def test_chat_to_converse_request(body, expected) -> None:
    assert chat_to_converse_request(body, default_max_tokens=0) == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n", id="n"),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages",
            id="remote-image",
        ),
        pytest.param({"messages": [{"role": "wizard", "content": "x"}]}, "messages", id="role"),
    ],
)
def test_untranslatable_requests_are_refused(body, param) -> None:
    with pytest.raises(InvalidRequest) as refused:
        chat_to_converse_request(body, default_max_tokens=0)
    assert refused.value.param == param


def test_converse_answer_with_tool_use_and_cache_becomes_a_chat_completion() -> None:
    usage = usage_from_converse(
        {
            "inputTokens": 10,
            "outputTokens": 4,
            "totalTokens": 34,
            "cacheReadInputTokens": 12,
            "cacheWriteInputTokens": 8,
        }
    )
    assert usage == TokenUsage(
        input_tokens=10, output_tokens=4, cached_input_tokens=12, cache_write_tokens=8
    )
    assert usage.total == 34
    document = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t1", "name": "look", "input": {"q": 1}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {},
    }
    completion = orjson.loads(converse_to_chat_completion(document, usage, model="m"))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "look", "arguments": '{"q":1}'}}
    ]
    # OpenAI's prompt_tokens include cache reads and writes; cached_tokens are the reads.
    assert completion["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 4,
        "total_tokens": 34,
        "prompt_tokens_details": {"cached_tokens": 12},
    }


def _json(payload: dict) -> bytes:
    return orjson.dumps(payload)


def test_converse_stream_with_a_tool_call_becomes_chat_chunks() -> None:
    frames = [
        event("messageStart", _json({"role": "assistant"})),
        event(
            "contentBlockStart",
            _json({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t9", "name": "f"}}}),
        ),
        event(
            "contentBlockDelta",
            _json({"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}),
        ),
        event(
            "contentBlockDelta",
            _json({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "2}"}}}),
        ),
        event("contentBlockStop", _json({"contentBlockIndex": 1})),
        event("messageStop", _json({"stopReason": "tool_use"})),
        event(
            "metadata",
            _json({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}}),
        ),
    ]
    stream = ConverseToChatStream(model="m", include_usage=True)
    out = b"".join(stream.feed(frame) for frame in frames)
    datas = [line[6:] for line in out.split(b"\n\n") if line.startswith(b"data: ")]
    assert datas[-1] == b"[DONE]"
    chunks = [orjson.loads(data) for data in datas[:-1]]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas[1]["tool_calls"][0] == {
        "index": 0,
        "id": "t9",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:4])
    assert arguments == '{"a":2}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 7
    assert stream.scanner.usage == TokenUsage(input_tokens=7, output_tokens=3)


def test_in_stream_exception_becomes_an_openai_error_event() -> None:
    stream = ConverseToChatStream(model="m", include_usage=False)
    out = stream.feed(exception("throttlingException", _json({"message": "slow down"})))
    error = orjson.loads(out[len(b"data: ") :])
    assert error["error"]["message"] == "slow down"
    assert error["error"]["code"] == "throttlingException"
    scanner = EventStreamScanner()
    scanner.accept(exception("modelStreamErrorException", _json({"message": "boom"})))
    assert scanner.exception == ("modelStreamErrorException", "boom")


@pytest.mark.parametrize(
    ("subpath", "expected"),
    [
        pytest.param(
            "/model/amazon.nova-micro-v1:0/converse",
            ("amazon.nova-micro-v1:0", "converse"),
            id="id",
        ),
        pytest.param(
            "/model/arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude/invoke",
            ("arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude", "invoke"),
            id="arn-with-slash",
        ),
        pytest.param(
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.claude/converse",
            ("arn:aws:bedrock:us-east-1:123:inference-profile/us.claude", "converse"),
            id="arn-as-an-sdk-sends-it",
        ),
    ],
)
def test_model_paths_split_and_rebuild(subpath, expected) -> None:
    assert split_model_path(subpath) == expected
    model, operation = expected
    url = model_url("http://h:1/", model, operation)
    assert url.startswith("http://h:1/model/") and url.endswith(f"/{operation}")
    assert "/" not in url[len("http://h:1/model/") : -len(f"/{operation}")]


@pytest.mark.parametrize("subpath", ["/model/m/explode", "/models/m/converse", "/model//converse"])
def test_unknown_operations_are_refused(subpath) -> None:
    with pytest.raises(InvalidRequest, match="Unknown operation"):
        split_model_path(subpath)


def test_bedrock_errors_in_openai_shape() -> None:
    body = bedrock_error_to_openai(b'{"message":"Too many tokens"}', 429)
    assert orjson.loads(body) == {
        "error": {
            "message": "Too many tokens",
            "type": "rate_limit_error",
            "param": None,
            "code": "ThrottlingException",
        }
    }
    assert orjson.loads(bedrock_error_to_openai(b"<html>", 503))["error"]["message"] == (
        "Amazon Bedrock answered status 503."
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [
                (b"X-Amzn-Bedrock-Input-Token-Count", b"12"),
                (b"X-Amzn-Bedrock-Output-Token-Count", b"7"),
            ],
            TokenUsage(input_tokens=12, output_tokens=7),
            id="both",
        ),
        pytest.param(
            [(b"x-amzn-bedrock-input-token-count", b"5")],
            TokenUsage(input_tokens=5, output_tokens=0),
            id="embeddings-input-only",
        ),
        pytest.param([(b"content-type", b"application/json")], None, id="none"),
        pytest.param([(b"x-amzn-bedrock-input-token-count", b"-3")], None, id="negative"),
        pytest.param(
            [
                (b"x-amzn-bedrock-input-token-count", b"4"),
                (b"x-amzn-bedrock-output-token-count", b"x"),
            ],
            None,
            id="malformed-output",
        ),
    ],
)
def test_invoke_model_token_count_headers(headers, expected) -> None:
    assert usage_from_headers(headers) == expected


def test_invocation_metrics_settle_a_stream_without_usage_events_but_not_an_anthropic_one() -> None:
    metrics = {"inputTokenCount": 9, "outputTokenCount": 4, "cacheReadInputTokenCount": 2}
    scanner = EventStreamScanner()
    scanner.accept(_chunk_frame({"outputs": [{"text": "hi", "stop_reason": None}]}))
    assert scanner.usage is None and scanner.texts == ["hi"]
    scanner.accept(
        _chunk_frame(
            {
                "outputs": [{"text": "!", "stop_reason": "stop"}],
                "amazon-bedrock-invocationMetrics": metrics,
            }
        )
    )
    assert scanner.settled
    assert scanner.usage == TokenUsage(input_tokens=9, output_tokens=4, cached_input_tokens=2)
    # Claude's message_delta settles first: the metrics of message_stop do not replace it.
    claude = EventStreamScanner()
    claude.accept(_chunk_frame({"type": "message_delta", "usage": {"output_tokens": 3}}))
    claude.accept(
        _chunk_frame({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})
    )
    assert claude.usage is not None and claude.usage.output_tokens == 3


def _chunk_frame(document: dict) -> bytes:
    payload = orjson.dumps({"bytes": base64.b64encode(orjson.dumps(document)).decode()})
    return event("chunk", payload)
