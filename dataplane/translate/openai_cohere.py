"""OpenAI chat clients to Cohere's v2 chat: ``/v2/chat`` upstream, chat completions back.

``messages`` keep their roles (``developer`` -> ``system``; list content -> text parts;
assistant ``tool_calls`` and ``tool`` messages keep OpenAI's shape, which Cohere v2 shares);
``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p`` (``p``), ``seed``,
``stop`` (``stop_sequences``), ``frequency_penalty``, ``presence_penalty``, ``tools`` and
``response_format`` (``json_object``, with the schema of ``json_schema``) map to Cohere's
fields. Answers become ``chat.completion`` (or ``chat.completion.chunk`` events from the typed
stream, a usage chunk when asked for, then ``[DONE]``); ``COMPLETE`` / ``STOP_SEQUENCE`` ->
``stop``, ``MAX_TOKENS`` -> ``length``, ``TOOL_CALL`` -> ``tool_calls``. Usage: the billed
units (``prompt_tokens`` = billed input, ``completion_tokens`` = billed output).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.cohere_format import (
    CohereStreamScanner,
    error_message,
    usage_from_cohere,
)
from dataplane.translate.openai_format import error_body, prepare_chat_request, rejection_body
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_RENAMED = {"top_p": "p", "stop": "stop_sequences"}
_KEPT = ("temperature", "seed", "frequency_penalty", "presence_penalty", "tools")


def _text(content: Any) -> Any:
    if isinstance(content, list):
        return [
            {"type": "text", "text": part["text"]}
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
    return content if content is not None else ""


def chat_to_cohere(body: dict[str, Any], *, model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat-completions body as a Cohere v2 chat body."""
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        out: dict[str, Any] = {"role": "system" if role == "developer" else role}
        if message.get("tool_calls"):
            out["tool_calls"] = message["tool_calls"]
        content = message.get("content")
        if content is not None or role != "assistant":
            out["content"] = _text(content)
        if role == "tool":
            out["tool_call_id"] = message.get("tool_call_id")
        messages.append(out)
    request: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool):
        request["max_tokens"] = limit
    for key in _KEPT:
        if body.get(key) is not None:
            request[key] = body[key]
    for key, renamed in _RENAMED.items():
        value = body.get(key)
        if value is not None:
            request[renamed] = [value] if key == "stop" and isinstance(value, str) else value
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") != "text":
        cohere_format: dict[str, Any] = {"type": "json_object"}
        schema = response_format.get("json_schema")
        if isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
            cohere_format["json_schema"] = schema["schema"]
        request["response_format"] = cohere_format
    return request


def _openai_usage(usage: TokenUsage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def cohere_error_to_openai(body: bytes, status: int) -> bytes:
    """A Cohere error (``{"message": ...}``) in OpenAI's error shape (others unchanged)."""
    message = error_message(body)
    if message is None:
        return body
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return error_body(message, type=kind, code="model_not_found" if status == 404 else None)


def response_to_chat_completion(document: dict[str, Any], *, model: str) -> bytes:
    message = document.get("message") if isinstance(document.get("message"), dict) else {}
    assert isinstance(message, dict)
    content = message.get("content")
    text = "".join(
        part.get("text", "")
        for part in (content if isinstance(content, list) else [])
        if isinstance(part, dict) and part.get("type") == "text"
    )
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if message.get("tool_calls"):
        reply["tool_calls"] = message["tool_calls"]
    elif not text:
        reply["content"] = ""
    return orjson.dumps(
        {
            "id": f"chatcmpl-{document.get('id') or uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "logprobs": None,
                    "finish_reason": _FINISH.get(str(document.get("finish_reason")), "stop"),
                }
            ],
            "usage": _openai_usage(usage_from_cohere(document.get("usage"))),
        }
    )


class _CohereToChatRelay:
    """Cohere's typed stream events as OpenAI ``chat.completion.chunk`` events."""

    __slots__ = ("_created", "_id", "_include_usage", "_model", "scanner")

    def __init__(self, *, include_usage: bool, model: str) -> None:
        self.scanner = CohereStreamScanner()
        self._include_usage = include_usage
        self._model = model
        self._id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return None

    def produced_text(self) -> str:
        return "".join(self.scanner.texts)

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if delta is None:
            chunk["usage"] = _openai_usage(self.scanner.usage)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def feed(self, event: bytes) -> bytes:
        document = self.scanner.accept(event)
        if document is None:
            return b""
        kind = document.get("type")
        delta = document.get("delta") if isinstance(document.get("delta"), dict) else {}
        assert isinstance(delta, dict)
        message = delta.get("message") if isinstance(delta.get("message"), dict) else {}
        assert isinstance(message, dict)
        index = document.get("index", 0)
        if kind == "message-start":
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content-delta":
            content = message.get("content")
            text = content.get("text") if isinstance(content, dict) else None
            return self._chunk({"content": text}) if isinstance(text, str) and text else b""
        if kind == "tool-call-start":
            call = message.get("tool_calls")
            if isinstance(call, dict):
                return self._chunk({"tool_calls": [{**call, "index": index}]})
        if kind == "tool-call-delta":
            call = message.get("tool_calls")
            if isinstance(call, dict):
                return self._chunk({"tool_calls": [{**call, "index": index}]})
        if kind == "message-end":
            finish = _FINISH.get(str(delta.get("finish_reason")), "stop")
            out = [self._chunk({}, finish)]
            if self._include_usage:
                out.append(self._chunk(None))
            out.append(b"data: [DONE]\n\n")
            return b"".join(out)
        return b""


class OpenAIToCohereTranslator:
    """OpenAI chat clients to Cohere's v2 chat, translated both ways."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        return Prepared(
            body=orjson.dumps(chat_to_cohere(body, model=chat.model, stream=chat.stream)),
            model=chat.model,
            stream=chat.stream,
            url=policy.target.url,
            document=body,
            include_usage=chat.stream and not chat.hide_usage_chunk,
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return cohere_error_to_openai(body, status), None, None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        if not isinstance(document, dict):
            return body, None, None
        return (
            response_to_chat_completion(document, model=prepared.model),
            usage_from_cohere(document.get("usage")),
            None,
        )

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _CohereToChatRelay(include_usage=prepared.include_usage, model=prepared.model)
