"""Preparing a client's chat request for the provider."""

from __future__ import annotations

import orjson
import pytest

from dataplane.config.model import AiProxyPolicy, ProviderTarget
from dataplane.translate.openai_format import InvalidRequest, prepare_chat_request

TARGET = ProviderTarget(
    provider="openai",
    url="http://up/v1/chat/completions",
    origin="http://up:80",
    auth_headers=(),
    auth_body_params=(),
)


def policy(model: str = "", max_tokens: int = 0) -> AiProxyPolicy:
    return AiProxyPolicy(
        route_type="llm/v1/chat", target=TARGET, model=model, max_tokens=max_tokens
    )


MESSAGES = [{"role": "user", "content": "hi"}]


def test_untouched_body_is_forwarded_byte_for_byte() -> None:
    raw = b'{"model":  "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    request = prepare_chat_request(raw, policy())
    assert request.body is raw
    assert (request.model, request.stream, request.hide_usage_chunk) == ("gpt-4o", False, False)


def test_route_model_replaces_the_clients() -> None:
    raw = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES})
    request = prepare_chat_request(raw, policy(model="gpt-4o-mini"))
    assert orjson.loads(request.body)["model"] == "gpt-4o-mini"
    assert request.model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("options", "sent", "hidden"),
    [
        pytest.param(None, {"include_usage": True}, True, id="absent"),
        pytest.param({"include_usage": False}, {"include_usage": True}, True, id="false"),
        pytest.param({"include_usage": True}, {"include_usage": True}, False, id="asked"),
    ],
)
def test_stream_usage_is_requested(options, sent, hidden) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    if options is not None:
        body["stream_options"] = options
    request = prepare_chat_request(orjson.dumps(body), policy())
    assert orjson.loads(request.body)["stream_options"] == sent
    assert request.hide_usage_chunk is hidden


def test_default_max_tokens_only_when_client_sets_none() -> None:
    raw = orjson.dumps({"model": "m", "messages": MESSAGES})
    assert orjson.loads(prepare_chat_request(raw, policy(max_tokens=64)).body)["max_tokens"] == 64
    raw = orjson.dumps({"model": "m", "messages": MESSAGES, "max_completion_tokens": 5})
    assert "max_tokens" not in orjson.loads(prepare_chat_request(raw, policy(max_tokens=64)).body)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"", "invalid_json", id="empty"),
        pytest.param(b"{", "invalid_json", id="truncated"),
        pytest.param(b'"text"', "invalid_json", id="not-object"),
        pytest.param(b'{"model": "m"}', "missing_required_parameter", id="no-messages"),
        pytest.param(b'{"model": "m", "messages": {}}', "invalid_type", id="messages-object"),
        pytest.param(b'{"messages": []}', "missing_required_parameter", id="no-model"),
        pytest.param(
            b'{"model": "m", "messages": [], "stream": "yes"}', "invalid_type", id="stream"
        ),
    ],
)
def test_invalid_requests(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        prepare_chat_request(raw, policy())
    assert caught.value.code == code
