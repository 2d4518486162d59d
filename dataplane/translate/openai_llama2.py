"""OpenAI clients to a Llama 2 server in Kong's ``llama2_format: raw``: the prompt as one
``inputs`` text, the answer's ``generated_text`` back as a chat (or text) completion.

Kong's wire format (``kong/llm/drivers/llama2.lua``, the Hugging Face text-generation shape):

- request ``{"inputs": "<s>[INST] <<SYS>> {system} <</SYS>> {user} [/INST]", "parameters":
  {"max_new_tokens", "top_p", "top_k", "temperature"}}``: chat messages in Llama 2's prompt
  template (a turn ``<s>[INST] {user} [/INST] {answer} </s>``; the system prompt inside the
  first turn's ``<<SYS>>`` block); a legacy completions ``prompt`` as Kong wraps it
  (``<s> [INST] <<SYS>> You are a helpful assistant. <<SYS>> {prompt} [/INST]``);
- answer ``{"data": [{"generated_text": "..."}]}`` (Hugging Face's ``[{"generated_text"}]`` and
  TGI's ``{"generated_text"}`` are read too); the reply is the text after the last
  ``[/INST]``, trimmed (the servers echo the prompt); a ``usage`` object (OpenAI's
  ``prompt_tokens`` / ``completion_tokens``), when the server sends one, is billed exactly and
  passed to the client, as Kong does. Without it the gateway estimates (marked ``estimated``).

Kong's raw format does not stream: a streamed request is refused with 400.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.openai_format import (
    InvalidRequest,
    error_body,
    prepare_chat_request,
    rejection_body,
    usage_from_openai,
)
from dataplane.translate.openai_openai import OpenAITranslator
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

_OPENAI = OpenAITranslator()
_END_OF_PROMPT: Final = "[/INST]"
# Kong's defaults for the sampling parameters it always sends.
_DEFAULT_TOP_P: Final = 1.0
_DEFAULT_TOP_K: Final = 40
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def llama2_prompt(messages: list[Any]) -> str:
    """Chat messages in Llama 2's prompt template (Kong's spacing)."""
    system = " ".join(
        _text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )
    parts: list[str] = []
    pending_system = system
    for message in messages:
        if not isinstance(message, dict):
            continue
        role, text = message.get("role"), _text(message.get("content"))
        if role == "user":
            if pending_system:
                parts.append(f"<s>[INST] <<SYS>> {pending_system} <</SYS>> {text} [/INST]")
                pending_system = ""
            else:
                parts.append(f"<s>[INST] {text} [/INST]")
        elif role == "assistant":
            parts.append(f" {text} </s>")
    if pending_system:
        # Only a system prompt: it is the whole instruction.
        parts.append(f"<s>[INST] <<SYS>> {pending_system} <</SYS>> [/INST]")
    return "".join(parts)


def completion_prompt(prompt: str) -> str:
    """A legacy completions prompt as Kong wraps it."""
    return f"<s> [INST] <<SYS>> You are a helpful assistant. <<SYS>> {prompt} [/INST]"


def generated_text(document: Any) -> str | None:
    """The ``generated_text`` of Kong's ``{"data": [...]}``, Hugging Face's list or TGI's
    object; None if the answer has none."""
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if isinstance(document, list):
        if len(document) != 1:
            return None
        document = document[0]
    text = document.get("generated_text") if isinstance(document, dict) else None
    return text if isinstance(text, str) else None


def reply_of(text: str) -> str:
    """The model's reply: after the last ``[/INST]`` (servers echo the prompt), trimmed."""
    return text.rsplit(_END_OF_PROMPT, 1)[-1].strip()


def _openai_usage(usage: TokenUsage) -> dict[str, int]:
    prompt = (usage.input_tokens or 0) + (usage.cached_input_tokens or 0)
    completion = (usage.output_tokens or 0) + (usage.reasoning_tokens or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def raw_error_to_openai(body: bytes, status: int) -> bytes:
    """A server's error (TGI's ``{"error", "error_type"}``, Hugging Face's ``{"error"}``, or
    any body) as OpenAI's error document."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    message = document.get("error") if isinstance(document, dict) else None
    if isinstance(message, dict):  # already OpenAI-shaped
        return body
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    kind = document.get("error_type") if isinstance(document, dict) else None
    return error_body(
        message,
        type=_ERROR_TYPES.get(status, "api_error"),
        code=kind if isinstance(kind, str) else None,
    )


class OpenAIToLlama2RawTranslator:
    """OpenAI chat (or, with ``completions``, legacy completions) clients to a Llama 2 server
    in Kong's raw format."""

    __slots__ = ("_completions",)

    def __init__(self, *, completions: bool = False) -> None:
        self._completions = completions

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        if chat.stream:
            raise InvalidRequest(
                'This route\'s model speaks llama2_format "raw", which does not stream; '
                "send the request without stream.",
                code="unsupported_value",
                param="stream",
            )
        if self._completions:
            prompt = body.get("prompt")
            inputs = completion_prompt(prompt if isinstance(prompt, str) else _text(prompt))
        else:
            inputs = llama2_prompt(body.get("messages") or [])
        limit = body.get("max_tokens", body.get("max_completion_tokens")) or policy.max_tokens
        parameters: dict[str, Any] = {
            "max_new_tokens": limit or None,
            "top_p": body.get("top_p", _DEFAULT_TOP_P),
            "top_k": _DEFAULT_TOP_K,
            "temperature": body.get("temperature"),
        }
        request = {
            "inputs": inputs,
            "parameters": {k: v for k, v in parameters.items() if v is not None},
        }
        return Prepared(
            body=orjson.dumps(request),
            model=chat.model,
            stream=False,
            url=policy.target.url,
            document={"inputs": inputs},
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return raw_error_to_openai(body, status), None, None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        text = generated_text(document)
        if text is None:
            return body, None, None
        usage = usage_from_openai(document.get("usage")) if isinstance(document, dict) else None
        reply = reply_of(text)
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": prepared.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
        }
        if self._completions:
            answer["object"] = "text_completion"
            answer["id"] = f"cmpl-{uuid.uuid4().hex}"
            answer["choices"] = [
                {"index": 0, "text": reply, "logprobs": None, "finish_reason": "stop"}
            ]
        if usage is not None:
            answer["usage"] = _openai_usage(usage)
        return orjson.dumps(answer), usage, None

    def stream(self, prepared: Prepared) -> StreamRelay:
        # Never asked for (raw requests do not stream); a server that streams anyway is read
        # as OpenAI's SSE.
        return _OPENAI.stream(prepared)
