"""Translation between OpenAI's chat-completions format and Anthropic's Messages API.

An OpenAI client (the openai SDK) talks to a route whose provider is Anthropic: its request is
rewritten into a Messages request, and the message (or the Messages SSE stream) is rewritten
back into a chat completion (or ``chat.completion.chunk`` events). Usage is metered from the
Anthropic side, where the cache counts are exact; the client sees it in OpenAI's shape
(``prompt_tokens`` = input + cache reads + cache writes, ``cached_tokens`` = cache reads).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.errors import Rejection
from dataplane.translate.anthropic_format import (
    DEFAULT_MAX_TOKENS,
    MessageStreamScanner,
    usage_from_anthropic,
)
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.openai_format import (
    InvalidRequest,
    function_calls,
    prepare_chat_request,
    rejection_body,
)
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


_STOP_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI chat parameters that mean the same in the Messages API.
_SAME_PARAMETERS: Final = ("temperature", "top_p", "top_k", "stream")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url needs a url.", code="invalid_type", param="messages")
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]] | str:
    if isinstance(content, str) or content is None:
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(
            "Invalid type for 'content': expected a string or an array.",
            code="invalid_type",
            param="messages",
        )
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
            if "cache_control" in part:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _tool_use_blocks(tool_calls: Any) -> list[dict[str, Any]]:
    return [
        {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}
        for call_id, name, tool_input in function_calls(tool_calls)
    ]


def _as_blocks(content: list[dict[str, Any]] | str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _messages(openai_messages: list[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in openai_messages:
        if not isinstance(message, dict):
            raise InvalidRequest(
                "Each message must be an object.", code="invalid_type", param="messages"
            )
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_text_of(content))
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": _text_of(content),
            }
            # Results of parallel tool calls go back in one user turn.
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
            continue
        if role == "assistant":
            blocks = _as_blocks(_content_blocks(content))
            blocks.extend(_tool_use_blocks(message.get("tool_calls")))
            out.append({"role": "assistant", "content": blocks})
            continue
        if role == "user":
            out.append({"role": "user", "content": _content_blocks(content)})
            continue
        raise InvalidRequest(
            f"Invalid value for 'role': {role!r}.", code="invalid_value", param="messages"
        )
    return ("\n\n".join(system) if system else None), out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        converted: dict[str, Any] = {
            "name": function.get("name", ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    return None


def chat_to_messages_request(
    body: dict[str, Any], *, model: str, default_max_tokens: int
) -> dict[str, Any]:
    """The Messages request for an (already validated) OpenAI chat request ``body``."""
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise InvalidRequest(
            "This route's provider (anthropic) supports only n=1.", code="invalid_value", param="n"
        )
    system, messages = _messages(body["messages"])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    request: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if system is not None:
        request["system"] = system
    for name in _SAME_PARAMETERS:
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = stop
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            request["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    return request


def openai_usage(usage: TokenUsage | None) -> dict[str, Any] | None:
    """Anthropic usage in OpenAI's shape (prompt tokens include cache reads and writes)."""
    if usage is None:
        return None
    cached = usage.cached_input_tokens or 0
    prompt = (usage.input_tokens or 0) + cached + (usage.cache_write_tokens or 0)
    completion = usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def message_to_chat_completion(message: dict[str, Any], usage: TokenUsage | None) -> bytes:
    """The chat completion for a whole Messages response."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    document = {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": _STOP_REASONS.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": openai_usage(usage),
    }
    return orjson.dumps(document)


def anthropic_error_to_openai(body: bytes) -> bytes:
    """An Anthropic error document in OpenAI's error shape (other bodies pass unchanged)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return body
    return orjson.dumps(
        {
            "error": {
                "message": error.get("message", ""),
                "type": error.get("type", "api_error"),
                "param": None,
                "code": None,
            }
        }
    )


class MessagesToChatStream:
    """Rewrites a Messages SSE stream into ``chat.completion.chunk`` events as it arrives."""

    __slots__ = ("_created", "_id", "_include_usage", "_tool_index", "_tool_indexes", "scanner")

    def __init__(self, *, include_usage: bool) -> None:
        self.scanner = MessageStreamScanner()
        self._include_usage = include_usage
        self._id = ""
        self._created = int(time.time())
        # Anthropic content-block index -> OpenAI tool_calls index.
        self._tool_indexes: dict[int, int] = {}
        self._tool_index = 0

    @property
    def usage(self) -> TokenUsage | None:
        """Usage the stream reported so far."""
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        """The model the stream named."""
        return self.scanner.model

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        document: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.scanner.model or "",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            document["usage"] = None
        return b"data: " + orjson.dumps(document) + b"\n\n"

    def feed(self, event: bytes) -> bytes:
        """Translate one whole Messages event; return the chat events for it (maybe none)."""
        document = self.scanner.accept(event)
        if document is None:
            return b""
        kind = document.get("type")
        if kind == "message_start":
            message = document.get("message")
            if isinstance(message, dict):
                self._id = str(message.get("id", ""))
            return self._chunk({"role": "assistant", "content": "", "refusal": None})
        if kind == "content_block_start":
            block = document.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                index = self._tool_index
                self._tool_index += 1
                self._tool_indexes[int(document.get("index", 0))] = index
                call = {
                    "index": index,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            return b""
        if kind == "content_block_delta":
            delta = document.get("delta")
            if not isinstance(delta, dict):
                return b""
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tool_indexes.get(int(document.get("index", 0)), 0)
                arguments = {"index": index, "function": {"arguments": delta.get("partial_json")}}
                return self._chunk({"tool_calls": [arguments]})
            return b""
        if kind == "message_delta":
            delta = document.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if reason is None:
                return b""
            return self._chunk({}, _STOP_REASONS.get(str(reason), "stop"))
        if kind == "message_stop":
            return self._usage_chunk() + b"data: [DONE]\n\n"
        if kind == "error":
            error = document.get("error")
            error = error if isinstance(error, dict) else {}
            payload = {
                "error": {
                    "message": error.get("message", ""),
                    "type": error.get("type", "api_error"),
                    "param": None,
                    "code": None,
                }
            }
            return b"data: " + orjson.dumps(payload) + b"\n\n"
        return b""  # ping, content_block_stop

    def _usage_chunk(self) -> bytes:
        if not self._include_usage:
            return b""
        document = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.scanner.model or "",
            "choices": [],
            "usage": openai_usage(self.scanner.usage),
        }
        return b"data: " + orjson.dumps(document) + b"\n\n"


class _MessagesToChatRelay:
    __slots__ = ("translator",)

    def __init__(self, *, include_usage: bool) -> None:
        self.translator = MessagesToChatStream(include_usage=include_usage)

    @property
    def usage(self) -> TokenUsage | None:
        return self.translator.usage

    @property
    def model(self) -> str | None:
        return self.translator.model

    def feed(self, event: bytes) -> bytes:
        return self.translator.feed(event)

    def produced_text(self) -> str:
        return "".join(self.translator.scanner.texts)

    @property
    def error_status(self) -> int | None:
        return self.translator.scanner.error_status

    @property
    def usage_settled(self) -> bool:
        return self.translator.scanner.settled


class OpenAIToAnthropicTranslator:
    """OpenAI chat clients to Anthropic: Messages upstream, chat completions back."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        options = body.get("stream_options")
        request = chat_to_messages_request(
            body, model=chat.model, default_max_tokens=policy.max_tokens or DEFAULT_MAX_TOKENS
        )
        return Prepared(
            body=orjson.dumps(request),
            model=chat.model,
            stream=chat.stream,
            url=policy.target.url,
            document=request,
            include_usage=chat.stream and not chat.hide_usage_chunk and isinstance(options, dict),
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return anthropic_error_to_openai(body), None, None
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        if not isinstance(message, dict):
            return body, None, None
        usage = usage_from_anthropic(message.get("usage"))
        model = message.get("model")
        return (
            message_to_chat_completion(message, usage),
            usage,
            model if isinstance(model, str) else None,
        )

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _MessagesToChatRelay(include_usage=prepared.include_usage)
