"""OpenAI chat clients to Ollama: ``/api/chat`` upstream, chat completions back, streams included.

``messages`` keep their roles (``developer`` -> ``system``); list content becomes text plus
``images`` (base64 data URLs); assistant ``tool_calls`` become Ollama's (arguments as objects);
``tools`` pass as they are (Ollama takes OpenAI's shape). ``temperature``, ``top_p``, ``seed``,
``stop``, ``presence_penalty``, ``frequency_penalty`` and ``max_tokens`` /
``max_completion_tokens`` (``num_predict``) go into ``options``; ``response_format`` into
``format``. Ollama's NDJSON stream becomes ``chat.completion.chunk`` events, a usage chunk when
the client asked for one, then ``[DONE]``.

A route whose ``upstream_url`` is Ollama's own OpenAI-compatible endpoint
(``.../v1/chat/completions``) is relayed by the OpenAI translator instead.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.ollama_format import (
    OllamaStreamScanner,
    error_message,
    parse_line,
    usage_from_ollama,
)
from dataplane.translate.openai_format import error_body, prepare_chat_request
from dataplane.translate.openai_openai import OpenAITranslator
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

_OPENAI = OpenAITranslator()
_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
_FINISH = {"stop": "stop", "length": "length"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def is_openai_endpoint(url: str) -> bool:
    """Whether ``url`` is Ollama's OpenAI-compatible chat endpoint, not its native API."""
    return urlsplit(url).path.rstrip("/").endswith("/chat/completions")


def _text_and_images(content: Any) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url.startswith("data:") and "," in url:
                images.append(url.split(",", 1)[1])
    return "".join(texts), images


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments: Any = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = orjson.loads(arguments) if arguments else {}
            except orjson.JSONDecodeError:
                arguments = {}
        out.append({"function": {"name": function.get("name"), "arguments": arguments or {}}})
    return out


def chat_to_ollama(body: dict[str, Any], *, model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat-completions body as an Ollama ``/api/chat`` body."""
    names: dict[str, str] = {}
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        text, images = _text_and_images(message.get("content"))
        out: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": text,
        }
        if images:
            out["images"] = images
        calls = message.get("tool_calls")
        if calls:
            out["tool_calls"] = _tool_calls(calls)
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    names[str(call.get("id"))] = str(call["function"].get("name"))
        if role == "tool" and str(message.get("tool_call_id")) in names:
            out["tool_name"] = names[str(message.get("tool_call_id"))]
        messages.append(out)
    request: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    options = {key: body[key] for key in _OPTIONS if body.get(key) is not None}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool):
        options["num_predict"] = limit
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    if options:
        request["options"] = options
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        output_format = _ollama_format(response_format)
        if output_format is not None:
            request["format"] = output_format
    if body.get("tools"):
        request["tools"] = body["tools"]
    return request


def _ollama_format(response_format: dict[str, Any]) -> str | dict[str, Any] | None:
    """OpenAI's ``response_format`` as Ollama's ``format``: ``"json"`` or a JSON schema."""
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema")
        inner = schema.get("schema") if isinstance(schema, dict) else None
        if isinstance(inner, dict):
            return inner
    return None


def _openai_tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    out: list[dict[str, Any]] = []
    for position, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        out.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "index": position,
                "function": {
                    "name": function.get("name"),
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else orjson.dumps(arguments or {}).decode(),
                },
            }
        )
    return out


def _openai_usage(usage: TokenUsage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(document: dict[str, Any], has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    return _FINISH.get(str(document.get("done_reason") or "stop"), "stop")


def ollama_error_to_openai(body: bytes, status: int) -> bytes:
    """An Ollama error (``{"error": "..."}``) in OpenAI's error shape (others unchanged)."""
    message = error_message(parse_line(body))
    if message is None:
        return body
    error_type = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    code = "model_not_found" if status == 404 else None
    return error_body(message, type=error_type, code=code)


def response_to_chat_completion(document: dict[str, Any], *, model: str) -> bytes:
    message = document.get("message") if isinstance(document.get("message"), dict) else {}
    assert isinstance(message, dict)
    calls = [
        {key: value for key, value in call.items() if key != "index"}
        for call in _openai_tool_calls(message)
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if calls:
        reply["tool_calls"] = calls
    return orjson.dumps(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": document.get("model") or model,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "logprobs": None,
                    "finish_reason": _finish_reason(document, bool(calls)),
                }
            ],
            "usage": _openai_usage(usage_from_ollama(document)),
        }
    )


class _OllamaToChatRelay:
    """Ollama's NDJSON lines as OpenAI ``chat.completion.chunk`` SSE events."""

    __slots__ = (
        "_created",
        "_id",
        "_include_usage",
        "_model",
        "_started",
        "_tool_calls",
        "scanner",
    )

    def __init__(self, *, include_usage: bool, model: str) -> None:
        self.scanner = OllamaStreamScanner()
        self._include_usage = include_usage
        self._model = model
        self._id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._started = False
        self._tool_calls = 0

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return self.scanner.model

    def produced_text(self) -> str:
        return "".join(self.scanner.texts)

    @property
    def error_status(self) -> int | None:
        return self.scanner.error_status

    def _event(self, choices: list[dict[str, Any]], usage: Any = ...) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.scanner.model or self._model,
            "choices": choices,
        }
        if usage is not ...:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def feed(self, event: bytes) -> bytes:
        document = self.scanner.accept(event)
        if not isinstance(document, dict):
            return b""
        message = error_message(document)
        if message is not None:
            error = {"message": message, "type": "api_error", "param": None, "code": None}
            return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        out: list[bytes] = []
        reply = document.get("message") if isinstance(document.get("message"), dict) else {}
        assert isinstance(reply, dict)
        delta: dict[str, Any] = {}
        if not self._started:
            # The first chunk names the role, as OpenAI's does.
            delta = {"role": "assistant", "content": ""}
            self._started = True
        content = reply.get("content")
        if isinstance(content, str) and content:
            delta["content"] = content
        calls = _openai_tool_calls(reply)
        if calls:
            for call in calls:
                call["index"] = self._tool_calls
                self._tool_calls += 1
            delta["tool_calls"] = calls
        if delta:
            out.append(self._event([{"index": 0, "delta": delta, "finish_reason": None}]))
        if document.get("done") is True:
            finish = _finish_reason(document, self._tool_calls > 0)
            out.append(self._event([{"index": 0, "delta": {}, "finish_reason": finish}]))
            if self._include_usage:
                out.append(self._event([], _openai_usage(self.scanner.usage)))
            out.append(b"data: [DONE]\n\n")
        return b"".join(out)


class OpenAIToOllamaTranslator:
    """OpenAI chat clients to Ollama: native ``/api/chat`` translated, or its OpenAI endpoint."""

    def reject(self, rejection: Rejection) -> bytes:
        return _OPENAI.reject(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        if is_openai_endpoint(policy.target.url):
            return _OPENAI.prepare(raw, policy, subpath=subpath, query=query, method=method)
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        return Prepared(
            body=orjson.dumps(chat_to_ollama(body, model=chat.model, stream=chat.stream)),
            model=chat.model,
            stream=chat.stream,
            url=policy.target.url,
            document=body,
            include_usage=chat.stream and not chat.hide_usage_chunk,
            requested_model=chat.requested_model,
            upstream_framing="ndjson",
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if prepared.upstream_framing != "ndjson":
            return _OPENAI.whole(body, status, prepared)
        if not 200 <= status < 300:
            return ollama_error_to_openai(body, status), None, None
        document = parse_line(body)
        if not isinstance(document, dict):
            return body, None, None
        model = document.get("model")
        return (
            response_to_chat_completion(document, model=prepared.model),
            usage_from_ollama(document),
            model if isinstance(model, str) else None,
        )

    def stream(self, prepared: Prepared) -> StreamRelay:
        if prepared.upstream_framing != "ndjson":
            return _OPENAI.stream(prepared)
        return _OllamaToChatRelay(include_usage=prepared.include_usage, model=prepared.model)
