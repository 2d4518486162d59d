"""Gemini's wire format: usage onto disjoint kinds, URLs, and OpenAI chat <-> generateContent.

Recorded exchanges (public captures of the Gemini API's SSE answers) anchor the usage mapping:
every token once, the sum equal to ``totalTokenCount``.
"""

from __future__ import annotations

import orjson
import pytest

from dataplane.config.model import ProviderTarget
from dataplane.translate.gemini_format import (
    GeminiStreamScanner,
    google_error_body,
    operation_url,
    parse_model_operation,
    usage_from_gemini,
)
from dataplane.translate.openai_format import InvalidRequest
from dataplane.translate.openai_gemini import (
    GenerateToChatStream,
    chat_to_generate_request,
    google_error_to_openai,
    openai_usage,
    response_to_chat_completion,
)
from dataplane.usage.tokens import TokenUsage

# streamGenerateContent?alt=sse of gemini-2.5-flash (thinking): two frames, cumulative usage.
RECORDED_TEXT_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Here you go!\\n\\n1.  **English:** Hi'
    b'\\n2.  **Spanish:** Hola\\n3.  **French:** Bonjour\\n4.  **German:** Hallo\\n5.  "}],'
    b'"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 5,'
    b'"candidatesTokenCount": 39,"totalTokenCount": 230,"promptTokensDetails": [{"modality": '
    b'"TEXT","tokenCount": 5}],"thoughtsTokenCount": 186},"modelVersion": '
    b'"models/gemini-2.5-flash-preview-05-20","responseId": "AdVRaMmDCYekqtsPrb_-iAw"}\r\n\r\n',
    b'data: {"candidates": [{"content": {"parts": [{"text": "**Italian:** Ciao"}],"role": '
    b'"model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 5,'
    b'"candidatesTokenCount": 44,"totalTokenCount": 235,"promptTokensDetails": [{"modality": '
    b'"TEXT","tokenCount": 5}],"thoughtsTokenCount": 186},"modelVersion": '
    b'"models/gemini-2.5-flash-preview-05-20","responseId": "AdVRaMmDCYekqtsPrb_-iAw"}\r\n\r\n',
)
# A function call, answered in one frame (gemini-2.5-flash).
RECORDED_CALL = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {
                        "functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}},
                        "thoughtSignature": "CikBcsjafFK1",
                    }
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
            "finishMessage": "Model generated function call(s).",
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 83,
        "candidatesTokenCount": 14,
        "totalTokenCount": 201,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 83}],
        "thoughtsTokenCount": 104,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "qpc2afWVFJK4vr0Pq6WiyAU",
}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(
            {
                "promptTokenCount": 5,
                "candidatesTokenCount": 44,
                "thoughtsTokenCount": 186,
                "totalTokenCount": 235,
            },
            TokenUsage(input_tokens=5, output_tokens=44, reasoning_tokens=186),
            id="recorded-thinking",
        ),
        pytest.param(
            {
                "promptTokenCount": 1200,
                "cachedContentTokenCount": 1000,
                "candidatesTokenCount": 50,
                "toolUsePromptTokenCount": 30,
                "totalTokenCount": 1280,
            },
            TokenUsage(input_tokens=230, output_tokens=50, cached_input_tokens=1000),
            id="cache-is-inside-prompt-tool-use-is-not",
        ),
        pytest.param(
            {"promptTokenCount": 7, "totalTokenCount": 7},
            TokenUsage(input_tokens=7, output_tokens=0),
            id="zero-candidates-omitted",
        ),
        pytest.param(
            {"promptTokenCount": 10, "cachedContentTokenCount": 99, "totalTokenCount": 10},
            TokenUsage(input_tokens=0, output_tokens=0, cached_input_tokens=10),
            id="malformed-cache-capped",
        ),
    ],
)
def test_usage_metadata_maps_onto_disjoint_kinds(metadata, expected) -> None:
    usage = usage_from_gemini(metadata)
    assert usage == expected
    assert usage.total == metadata["totalTokenCount"]


def test_no_usage_metadata_is_absent_not_zero() -> None:
    assert usage_from_gemini(None) is None


def test_the_last_frame_of_a_recorded_stream_holds_the_usage() -> None:
    scanner = GeminiStreamScanner()
    for frame in RECORDED_TEXT_STREAM:
        scanner.accept(frame)
    assert scanner.usage == TokenUsage(input_tokens=5, output_tokens=44, reasoning_tokens=186)
    assert scanner.usage.total == 235
    assert scanner.model == "gemini-2.5-flash-preview-05-20"


def test_recorded_stream_translated_to_chat_chunks() -> None:
    stream = GenerateToChatStream(include_usage=True, model="gemini-2.5-flash", candidates=1)
    out = b"".join(stream.feed(frame) for frame in RECORDED_TEXT_STREAM)
    events = [line[6:] for line in out.split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.endswith("**Italian:** Ciao") and text.startswith("Here you go!")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 44 + 186,
        "total_tokens": 235,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 186},
    }
    assert {c["id"] for c in chunks} == {"AdVRaMmDCYekqtsPrb_-iAw"}


def test_recorded_function_call_becomes_tool_calls() -> None:
    usage = usage_from_gemini(RECORDED_CALL["usageMetadata"])
    completion = orjson.loads(
        response_to_chat_completion(RECORDED_CALL, usage, model="gemini-2.5-flash")
    )
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "getWeather", "arguments": '{"location":"Tokyo"}'}
    assert completion["usage"]["total_tokens"] == 201
    # The thought signature goes out with the call and comes back with it.
    assert call["extra_content"] == {"google": {"thought_signature": "CikBcsjafFK1"}}
    request = chat_to_generate_request(
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
            ]
        }
    )
    assert request["contents"][1]["parts"] == [
        {
            "functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}, "id": "call_0"},
            "thoughtSignature": "CikBcsjafFK1",
        }
    ]


def test_a_blocked_prompt_is_a_content_filter_choice() -> None:
    document = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
    }
    completion = orjson.loads(response_to_chat_completion(document, None, model="m"))
    assert completion["choices"][0]["finish_reason"] == "content_filter"


def test_chat_request_to_generate_content() -> None:
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "be kind"},
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 1}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
            {"role": "tool", "tool_call_id": "c2", "content": "plain text"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": "END",
        "n": 2,
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    }
    request = chat_to_generate_request(body)
    assert request["systemInstruction"] == {"parts": [{"text": "be kind\n\nbe brief"}]}
    assert request["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "what is this"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "f", "args": {"a": 1}, "id": "c1"}},
                {"functionCall": {"name": "g", "args": {}, "id": "c2"}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f", "response": {"ok": True}, "id": "c1"}},
                {
                    "functionResponse": {
                        "name": "g",
                        "response": {"content": "plain text"},
                        "id": "c2",
                    }
                },
            ],
        },
    ]
    assert request["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "candidateCount": 2,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    assert request["tools"] == [
        {"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}
    ]
    assert request["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        pytest.param([{"role": "system", "content": "x"}], "at least one user", id="only-system"),
        pytest.param(
            [{"role": "tool", "tool_call_id": "nope", "content": "x"}],
            "answers no earlier tool call",
            id="orphan-tool",
        ),
        pytest.param([{"role": "robot", "content": "x"}], "'role'", id="bad-role"),
        pytest.param(
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "input_audio",
            id="audio-part",
        ),
    ],
)
def test_untranslatable_chat_requests_are_refused(messages, message) -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat_to_generate_request({"messages": messages})
    assert message in caught.value.message


def test_google_errors_become_openai_errors() -> None:
    body = google_error_body(429, "Resource has been exhausted", reason="RATE_LIMIT_EXCEEDED")
    assert orjson.loads(body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert orjson.loads(google_error_to_openai(body)) == {
        "error": {
            "message": "Resource has been exhausted",
            "type": "rate_limit_error",
            "param": None,
            "code": "RESOURCE_EXHAUSTED",
        }
    }
    assert google_error_to_openai(b"<html>bad gateway</html>") == b"<html>bad gateway</html>"


def test_openai_usage_counts_every_kind_once() -> None:
    usage = TokenUsage(input_tokens=10, output_tokens=4, cached_input_tokens=6, reasoning_tokens=3)
    shaped = openai_usage(usage)
    assert shaped["total_tokens"] == usage.total == 23
    assert (shaped["prompt_tokens"], shaped["completion_tokens"]) == (16, 7)


def _target(url: str, query: tuple[tuple[str, str], ...] = ()) -> ProviderTarget:
    return ProviderTarget(
        provider="gemini",
        url=url,
        origin="",
        auth_headers=(),
        auth_body_params=(),
        auth_query=query,
    )


@pytest.mark.parametrize(
    ("url", "stream", "expected"),
    [
        pytest.param(
            "https://g.test/v1beta/models/{model}:{operation}",
            False,
            "https://g.test/v1beta/models/gemini-2.5-flash:generateContent?key=AIza1",
            id="gemini",
        ),
        pytest.param(
            "https://g.test/v1beta/models/{model}:{operation}",
            True,
            "https://g.test/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=AIza1&alt=sse",
            id="gemini-stream",
        ),
        pytest.param(
            "https://p.test/custom?x=1",
            True,
            "https://p.test/custom?x=1&key=AIza1&alt=sse",
            id="full-url-kept",
        ),
    ],
)
def test_operation_urls(url, stream, expected) -> None:
    operation = "streamGenerateContent" if stream else "generateContent"
    target = _target(url, (("key", "AIza1"),))
    assert operation_url(target, model="gemini-2.5-flash", operation=operation, stream=stream) == (
        expected
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            ("gemini-2.5-flash", "generateContent"),
        ),
        (
            "/v1beta1/projects/p/locations/l/publishers/google/models/m:streamGenerateContent",
            ("m", "streamGenerateContent"),
        ),
        ("/v1beta/models/gemini-2.5-flash", None),
        ("/v1beta/files/abc:download", None),
    ],
)
def test_client_paths(path, expected) -> None:
    assert parse_model_operation(path) == expected
