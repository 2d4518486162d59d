"""Translation between OpenAI's chat-completions format and Gemini's generateContent.

An OpenAI client (the openai SDK) talks to a route whose provider is Gemini (Gemini API or
Vertex AI): its chat request becomes a ``GenerateContentRequest`` (``:generateContent``, or
``:streamGenerateContent?alt=sse`` for a stream), and the response (or each SSE frame) becomes
a ``chat.completion`` (or ``chat.completion.chunk`` events, then the usage chunk when the client
asked for ``stream_options.include_usage``, then ``[DONE]``). Usage is metered from the Gemini
side (``gemini_format``); the client sees it in OpenAI's shape: ``prompt_tokens`` = prompt +
tool-use prompt (cached included, also in ``cached_tokens``), ``completion_tokens`` =
candidates + thoughts (also in ``reasoning_tokens``).
"""

from __future__ import annotations

import mimetypes
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.gemini_format import (
    GENERATE,
    STREAM_GENERATE,
    GeminiStreamScanner,
    operation_url,
    read_response,
)
from dataplane.translate.openai_format import (
    InvalidRequest,
    prepare_chat_request,
    rejection_body,
)
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

_FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
}
# google.rpc.Code name -> OpenAI error type.
_ERROR_TYPES: Final = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "NOT_FOUND": "not_found_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}
# OpenAI reasoning_effort -> Gemini thinking budget (Google's own OpenAI-compatible mapping).
_THINKING_BUDGETS: Final = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}


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


def _image_part(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest("image_url needs a url.", code="invalid_type", param="messages")
    if url.startswith("data:") and ";base64," in url:
        mime_type, data = url[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": mime_type, "data": data}}
    mime_type = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime_type, "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
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
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part))
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} cannot be sent to this route's provider "
                "(gemini): text and image_url are.",
                code="invalid_value",
                param="messages",
            )
    return parts


def _arguments(value: Any) -> Any:
    if not isinstance(value, str):
        return value if isinstance(value, dict) else {}
    try:
        parsed = orjson.loads(value or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "Tool call arguments must be a JSON object.", code="invalid_type", param="messages"
        ) from None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _function_calls(tool_calls: Any, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name = str(function.get("name", ""))
        call_id = str(call.get("id", ""))
        names[call_id] = name
        arguments = _arguments(function.get("arguments"))
        function_call: dict[str, Any] = {"name": name, "args": arguments}
        if call_id:
            function_call["id"] = call_id
        part: dict[str, Any] = {"functionCall": function_call}
        signature = _thought_signature(call)
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _thought_signature(call: dict[str, Any]) -> str | None:
    """The signature a tool call carried back (Google's OpenAI-compatible convention:
    ``extra_content.google.thought_signature``); Gemini 3 needs it with the call."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = str(message.get("tool_call_id", ""))
    name = names.get(call_id) or message.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(
            f"The tool message for tool_call_id {call_id!r} answers no earlier tool call "
            "(Gemini needs the function's name).",
            code="invalid_value",
            param="messages",
        )
    text = _text_of(message.get("content"))
    try:
        result = orjson.loads(text)
    except orjson.JSONDecodeError:
        result = None
    response: dict[str, Any] = {"name": name, "response": result}
    if not isinstance(result, dict):
        response["response"] = {"content": text}
    if call_id:
        response["id"] = call_id
    return {"functionResponse": response}


def _contents(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    # Tool call id -> function name: Gemini answers a call by its name.
    names: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest(
                "Each message must be an object.", code="invalid_type", param="messages"
            )
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        if role == "tool":
            part = _function_response(message, names)
            # Answers to parallel calls go back in one turn.
            if contents and contents[-1]["role"] == "user" and contents[-1].get("_tool"):
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part], "_tool": True})
            continue
        if role == "assistant":
            parts = _parts(message.get("content"))
            parts.extend(_function_calls(message.get("tool_calls"), names))
            contents.append({"role": "model", "parts": parts or [{"text": ""}]})
            continue
        if role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"))})
            continue
        raise InvalidRequest(
            f"Invalid value for 'role': {role!r}.", code="invalid_value", param="messages"
        )
    for content in contents:
        content.pop("_tool", None)
    return system, contents


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        declaration: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name", "")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        schema = response_format.get("json_schema")
        if kind == "json_schema" and isinstance(schema, dict) and "schema" in schema:
            config["responseJsonSchema"] = schema["schema"]
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _THINKING_BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGETS[effort]}
    return config


def chat_to_generate_request(body: dict[str, Any]) -> dict[str, Any]:
    """The ``GenerateContentRequest`` of an (already validated) OpenAI chat request."""
    system, contents = _contents(body["messages"])
    if not contents:
        raise InvalidRequest(
            "messages needs at least one user or assistant message for this route's provider "
            "(gemini).",
            code="invalid_value",
            param="messages",
        )
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config is not None:
            request["toolConfig"] = tool_config
    return request


def openai_usage(usage: TokenUsage | None) -> dict[str, Any] | None:
    """Gemini usage in OpenAI's shape (prompt includes cache reads, completion reasoning)."""
    if usage is None:
        return None
    cached = usage.cached_input_tokens or 0
    reasoning = usage.reasoning_tokens or 0
    prompt = (usage.input_tokens or 0) + cached
    completion = (usage.output_tokens or 0) + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _finish_reason(candidate: dict[str, Any], has_calls: bool) -> str | None:
    reason = candidate.get("finishReason")
    if not isinstance(reason, str) or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if has_calls and reason == "STOP":
        return "tool_calls"
    return _FINISH_REASONS.get(reason, "stop")


def _candidate_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []


def _tool_call(part: dict[str, Any], position: int) -> dict[str, Any]:
    call = part["functionCall"]
    tool_call: dict[str, Any] = {
        "id": str(call.get("id") or f"call_{position}"),
        "type": "function",
        "function": {
            "name": str(call.get("name", "")),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        # Returned with the call by clients that send the assistant message back as it came.
        tool_call["extra_content"] = {"google": {"thought_signature": signature}}
    return tool_call


def _split(parts: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The answer text (thought summaries left out) and the function-call parts."""
    texts = [
        str(part["text"])
        for part in parts
        if isinstance(part.get("text"), str) and not part.get("thought")
    ]
    calls = [part for part in parts if isinstance(part.get("functionCall"), dict)]
    return "".join(texts), calls


def response_to_chat_completion(
    document: dict[str, Any], usage: TokenUsage | None, *, model: str
) -> bytes:
    """The chat completion for a whole ``GenerateContentResponse``."""
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(document.get("candidates") or ()):
        if not isinstance(candidate, dict):
            continue
        text, calls = _split(_candidate_parts(candidate))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = [_tool_call(part, i) for i, part in enumerate(calls)]
        choices.append(
            {
                "index": candidate.get("index", position),
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(candidate, bool(calls)) or "stop",
            }
        )
    if not choices:
        # A prompt refused by a safety filter: 200 with promptFeedback.blockReason only.
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    return orjson.dumps(
        {
            "id": str(document.get("responseId") or ""),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": openai_usage(usage),
        }
    )


def openai_error(document: Any) -> dict[str, Any] | None:
    """A Google error object in OpenAI's error shape (None if ``document`` is not one)."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    status = str(error.get("status") or "")
    return {
        "error": {
            "message": str(error.get("message", "")),
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": status or None,
        }
    }


def google_error_to_openai(body: bytes) -> bytes:
    """A Google error document in OpenAI's error shape (other bodies pass unchanged)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(document, list) and document:
        document = document[0]  # some Google front ends wrap errors in an array
    translated = openai_error(document)
    return body if translated is None else orjson.dumps(translated)


class GenerateToChatStream:
    """Rewrites Gemini SSE frames into ``chat.completion.chunk`` events as they arrive."""

    __slots__ = (
        "_candidates",
        "_created",
        "_finished",
        "_id",
        "_include_usage",
        "_model",
        "_started",
        "_tool_counts",
        "scanner",
    )

    def __init__(self, *, include_usage: bool, model: str, candidates: int) -> None:
        self.scanner = GeminiStreamScanner()
        self._include_usage = include_usage
        self._model = model
        self._candidates = max(candidates, 1)
        self._id = ""
        self._created = int(time.time())
        self._started: set[int] = set()
        self._finished: set[int] = set()
        # Per candidate: tool calls emitted so far (OpenAI numbers them per choice).
        self._tool_counts: dict[int, int] = {}

    def _chunk(self, choices: list[dict[str, Any]]) -> bytes:
        document: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            document["usage"] = None
        return b"data: " + orjson.dumps(document) + b"\n\n"

    def feed(self, event: bytes) -> bytes:
        """Translate one whole Gemini frame; return the chat events for it (maybe none)."""
        if len(self._finished) >= self._candidates:
            self.scanner.accept(event)  # a late usage frame is still metered
            return b""
        document = self.scanner.accept(event)
        if document is None:
            return b""
        if "error" in document:
            translated = openai_error(document)
            return b"data: " + orjson.dumps(translated) + b"\n\n" if translated else b""
        if not self._id:
            self._id = str(document.get("responseId") or "")
        out: list[bytes] = []
        for position, candidate in enumerate(document.get("candidates") or ()):
            if isinstance(candidate, dict):
                out.append(self._candidate(candidate, candidate.get("index", position)))
        if not document.get("candidates") and document.get("promptFeedback"):
            # The prompt was blocked: one choice that ends at once.
            self._finished.update(range(self._candidates))
            out.append(self._chunk([self._choice(0, {"role": "assistant"}, "content_filter")]))
        if len(self._finished) >= self._candidates:
            out.append(self._usage_chunk() + b"data: [DONE]\n\n")
        return b"".join(out)

    def _choice(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    def _candidate(self, candidate: dict[str, Any], index: Any) -> bytes:
        index = index if isinstance(index, int) else 0
        text, calls = _split(_candidate_parts(candidate))
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        if calls:
            first = self._tool_counts.get(index, 0)
            self._tool_counts[index] = first + len(calls)
            delta["tool_calls"] = [
                {"index": first + i, **_tool_call(part, first + i)} for i, part in enumerate(calls)
            ]
        finish = _finish_reason(candidate, bool(self._tool_counts.get(index)))
        out = b""
        if delta:
            out += self._chunk([self._choice(index, delta, None)])
        if finish is not None:
            self._finished.add(index)
            out += self._chunk([self._choice(index, {}, finish)])
        return out

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


class _GenerateToChatRelay:
    __slots__ = ("translator",)

    def __init__(self, *, include_usage: bool, model: str, candidates: int) -> None:
        self.translator = GenerateToChatStream(
            include_usage=include_usage, model=model, candidates=candidates
        )

    @property
    def usage(self) -> TokenUsage | None:
        return self.translator.scanner.usage

    @property
    def model(self) -> str | None:
        return self.translator.scanner.model

    def feed(self, event: bytes) -> bytes:
        return self.translator.feed(event)

    def produced_text(self) -> str:
        return "".join(self.translator.scanner.texts)

    @property
    def error_status(self) -> int | None:
        return self.translator.scanner.error_status


class OpenAIToGeminiTranslator:
    """OpenAI chat clients to Gemini or Vertex AI: generateContent upstream, chat back."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        request = chat_to_generate_request(body)
        options = body.get("stream_options")
        return Prepared(
            body=orjson.dumps(request),
            model=chat.model,
            stream=chat.stream,
            url=operation_url(
                policy.target,
                model=chat.model,
                operation=STREAM_GENERATE if chat.stream else GENERATE,
                stream=chat.stream,
            ),
            # The OpenAI body: its messages are what an estimate counts.
            document=body,
            include_usage=chat.stream and not chat.hide_usage_chunk and isinstance(options, dict),
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return google_error_to_openai(body), None, None
        document, usage, model = read_response(body)
        if document is None:
            return body, None, None
        return (
            response_to_chat_completion(document, usage, model=model or prepared.model),
            usage,
            model,
        )

    def stream(self, prepared: Prepared) -> StreamRelay:
        document = prepared.document if isinstance(prepared.document, dict) else {}
        n = document.get("n")
        return _GenerateToChatRelay(
            include_usage=prepared.include_usage,
            model=prepared.model,
            candidates=n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1,
        )
