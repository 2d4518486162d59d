"""Translation between OpenAI's chat-completions format and Bedrock's Converse API.

An OpenAI client (the openai SDK) talks to a route whose provider is Bedrock: its request is
rewritten into a Converse (or ConverseStream) request, and the answer, or the binary event
stream, is rewritten back into a chat completion, or ``chat.completion.chunk`` SSE events.
Usage is metered from Bedrock's counts; the client sees it in OpenAI's shape (``prompt_tokens``
= input + cache reads + cache writes, ``cached_tokens`` = cache reads).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.config.providers import BEDROCK_CONVERSE, BEDROCK_CONVERSE_STREAM
from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.bedrock_bedrock import upstream_url
from dataplane.translate.bedrock_format import (
    EventStreamScanner,
    bedrock_error_to_openai,
    exception_status,
    openai_error_type,
    read_whole_usage,
)
from dataplane.translate.openai_anthropic import openai_usage
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
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
_IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


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
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise InvalidRequest(
            "This route's provider (bedrock) takes images as base64 data URLs only.",
            code="invalid_value",
            param="messages",
        )
    media_type, data = url[5:].split(";base64,", 1)
    image_format = _IMAGE_FORMATS.get(media_type)
    if image_format is None:
        raise InvalidRequest(
            f"Unsupported image type {media_type!r} (png, jpeg, gif, webp).",
            code="invalid_value",
            param="messages",
        )
    # Converse's JSON wire form carries image bytes base64-encoded.
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
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
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _tool_use_blocks(tool_calls: Any) -> list[dict[str, Any]]:
    return [
        {"toolUse": {"toolUseId": call_id, "name": name, "input": tool_input}}
        for call_id, name, tool_input in function_calls(tool_calls)
    ]


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Converse wants user and assistant turns to alternate: consecutive ones are merged.
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _messages(openai_messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for message in openai_messages:
        if not isinstance(message, dict):
            raise InvalidRequest(
                "Each message must be an object.", code="invalid_type", param="messages"
            )
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system.append({"text": text})
        elif role == "tool":
            result = {
                "toolResult": {
                    "toolUseId": message.get("tool_call_id", ""),
                    "content": [{"text": _text_of(content)}],
                }
            }
            _append(out, "user", [result])
        elif role == "assistant":
            blocks = _content_blocks(content) + _tool_use_blocks(message.get("tool_calls"))
            _append(out, "assistant", blocks)
        elif role == "user":
            _append(out, "user", _content_blocks(content))
        else:
            raise InvalidRequest(
                f"Invalid value for 'role': {role!r}.", code="invalid_value", param="messages"
            )
    return system, out


def _tool_config(body: dict[str, Any]) -> dict[str, Any] | None:
    tools: list[dict[str, Any]] = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        spec: dict[str, Any] = {
            "name": function.get("name", ""),
            "inputSchema": {
                "json": function.get("parameters") or {"type": "object", "properties": {}}
            },
        }
        if function.get("description"):
            spec["description"] = function["description"]
        tools.append({"toolSpec": spec})
    if not tools:
        return None
    config: dict[str, Any] = {"tools": tools}
    choice = body.get("tool_choice")
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name", "")}}
    return config


def chat_to_converse_request(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """The Converse request for an (already validated) OpenAI chat request ``body``."""
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise InvalidRequest(
            "This route's provider (bedrock) supports only n=1.", code="invalid_value", param="n"
        )
    system, messages = _messages(body["messages"])
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    inference: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    if max_tokens:
        inference["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        inference["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        inference["topP"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        inference["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        inference["stopSequences"] = stop
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(body)
    if tool_config is not None:
        request["toolConfig"] = tool_config
    return request


def converse_to_chat_completion(
    document: dict[str, Any], usage: TokenUsage | None, *, model: str
) -> bytes:
    """The chat completion for a whole Converse answer."""
    output = document.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in (message or {}).get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            tool = block["toolUse"]
            tool_calls.append(
                {
                    "id": tool.get("toolUseId", ""),
                    "type": "function",
                    "function": {
                        "name": tool.get("name", ""),
                        "arguments": orjson.dumps(tool.get("input", {})).decode(),
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
    return orjson.dumps(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "logprobs": None,
                    "finish_reason": _STOP_REASONS.get(str(document.get("stopReason")), "stop"),
                }
            ],
            "usage": openai_usage(usage),
        }
    )


class ConverseToChatStream:
    """Rewrites ConverseStream frames into ``chat.completion.chunk`` SSE events."""

    __slots__ = ("_created", "_id", "_include_usage", "_model", "_tool_indexes", "scanner")

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.scanner = EventStreamScanner()
        self._include_usage = include_usage
        self._model = model
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        # Converse content-block index -> OpenAI tool_calls index.
        self._tool_indexes: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        document: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            document["usage"] = None
        return b"data: " + orjson.dumps(document) + b"\n\n"

    def feed(self, frame: bytes) -> bytes:
        """Translate one whole frame; return the chat events for it (maybe none)."""
        accepted = self.scanner.accept(frame)
        if accepted is None:
            return b""
        kind, document = accepted
        if self.scanner.exception is not None and self.scanner.exception[0] == kind:
            error = {
                "error": {
                    "message": self.scanner.exception[1],
                    "type": openai_error_type(exception_status(kind)),
                    "param": None,
                    "code": kind,
                }
            }
            return b"data: " + orjson.dumps(error) + b"\n\n"
        if kind == "messageStart":
            return self._chunk({"role": "assistant", "content": "", "refusal": None})
        if kind == "contentBlockStart":
            start = document.get("start")
            tool = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(tool, dict):
                index = len(self._tool_indexes)
                self._tool_indexes[int(document.get("contentBlockIndex", 0))] = index
                call = {
                    "index": index,
                    "id": tool.get("toolUseId", ""),
                    "type": "function",
                    "function": {"name": tool.get("name", ""), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            return b""
        if kind == "contentBlockDelta":
            delta = document.get("delta")
            if not isinstance(delta, dict):
                return b""
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            tool = delta.get("toolUse")
            if isinstance(tool, dict):
                index = self._tool_indexes.get(int(document.get("contentBlockIndex", 0)), 0)
                arguments = {"index": index, "function": {"arguments": tool.get("input", "")}}
                return self._chunk({"tool_calls": [arguments]})
            return b""
        if kind == "messageStop":
            reason = _STOP_REASONS.get(str(document.get("stopReason")), "stop")
            return self._chunk({}, reason)
        if kind == "metadata":
            return self._usage_chunk() + b"data: [DONE]\n\n"
        return b""  # contentBlockStop

    def _usage_chunk(self) -> bytes:
        if not self._include_usage:
            return b""
        document = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": openai_usage(self.scanner.usage),
        }
        return b"data: " + orjson.dumps(document) + b"\n\n"


class _ConverseToChatRelay:
    __slots__ = ("translator",)

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.translator = ConverseToChatStream(model=model, include_usage=include_usage)

    @property
    def usage(self) -> TokenUsage | None:
        return self.translator.scanner.usage

    @property
    def model(self) -> str | None:
        return None

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


# No maxTokens unless the client or the route sets one: Converse applies the model's default.
_DEFAULT_MAX_TOKENS: Final = 0


class OpenAIToBedrockTranslator:
    """OpenAI chat clients to Bedrock: Converse upstream, chat completions back."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        options = body.get("stream_options")
        request = chat_to_converse_request(
            body, default_max_tokens=policy.max_tokens or _DEFAULT_MAX_TOKENS
        )
        operation = BEDROCK_CONVERSE_STREAM if chat.stream else BEDROCK_CONVERSE
        return Prepared(
            body=orjson.dumps(request),
            model=chat.model,
            stream=chat.stream,
            url=upstream_url(policy, chat.model, operation),
            document=request,
            include_usage=chat.stream and not chat.hide_usage_chunk and isinstance(options, dict),
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return bedrock_error_to_openai(body, status), None, None
        usage, document = read_whole_usage(body)
        if document is None:
            return body, None, None
        return converse_to_chat_completion(document, usage, model=prepared.model), usage, None

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _ConverseToChatRelay(model=prepared.model, include_usage=prepared.include_usage)
