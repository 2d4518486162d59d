"""A fake OpenAI chat-completions provider for tests and the local demo.

It speaks OpenAI's wire format (whole responses and SSE streams) with deterministic token
counts, so tests can assert exact sums:

- ``prompt_tokens`` = sum over messages of (3 + number of whitespace-separated words in the
  message's text; for list content, the text of its ``text`` parts);
- the reply is ``"fake reply: "`` followed by the words of the last message, cut to
  ``max_completion_tokens``/``max_tokens`` words if set (then ``finish_reason`` is
  ``"length"``), and ``completion_tokens`` = number of words in the reply.

Details, as OpenAI reports them (both included in the totals above):

- ``prompt_tokens_details.cached_tokens``: like OpenAI's automatic prompt caching, the system
  messages' tokens when they have at least ``CACHE_MIN_WORDS`` words and the same system text
  was seen before;
- ``completion_tokens_details.reasoning_tokens``: for reasoning models (``o1``, ``o3-mini``...,
  names of ``o`` + digit), ``REASONING_TOKENS_PER_WORD`` per reply word.

Legacy ``/completions`` (``prompt`` -> ``choices[].text``) and ``/embeddings`` (``input`` ->
``data[].embedding``, usage ``prompt_tokens`` = words + 3 per input) are served too. Azure's
``api-key`` header is accepted as well as ``Authorization``.

The Responses API (``/responses``: ``input`` as a string or a list of messages,
``instructions`` as a system message) answers a ``response`` object with ``usage``
(``input_tokens``, ``input_tokens_details.cached_tokens``, ``output_tokens``,
``output_tokens_details.reasoning_tokens``), or with ``stream: true`` the typed SSE events
``response.created`` ... ``response.output_text.delta`` ... ``response.completed`` (which
carries the usage), as OpenAI sends them; header ``x-fake-stream-error: K:CODE`` ends that
stream after K events with ``response.failed`` (its ``response.error.code`` CODE).

Errors: a wrong or missing ``Authorization`` answers 401 (the expected key is configurable;
by default any ``Bearer sk-...`` passes); model ``"fail-500"`` or header ``x-fake-status: N``
answers status N with an OpenAI error. Knobs for failover tests: ``FakeProvider(status=N)``
answers every request with status N (429 with ``retry-after``), ``delay_s`` waits that long
before answering, ``cut_after=K`` ends a chat stream's connection after K chunks; header
``x-fake-stream-error: K:TYPE`` ends a chat stream after K chunks with OpenAI's in-stream
error event, ``data: {"error": {"message", "type": TYPE, "param": null, "code": null}}`` then
``data: [DONE]`` (``server_error`` carries OpenAI's own message). Providers'
usage quirks: ``usage_style="deepseek"`` or ``"mistral"`` (see ``FakeProvider``). Every
request is recorded; ``GET /_fake/requests`` returns them and ``DELETE /_fake/requests`` clears
them.

Run it with ``python -m dataplane.testing.fake_openai --listen 127.0.0.1:PORT``, or in-process:
``async with serve_http(FakeProvider()) as address: ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from dataplane.http.asgi import (
    JSON_CONTENT_TYPE,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
)
from dataplane.http.server import serve_http, split_host_port

MESSAGE_OVERHEAD_TOKENS = 3
CACHE_MIN_WORDS = 32
REASONING_TOKENS_PER_WORD = 2
REPLY_PREFIX = "fake reply:"
SYSTEM_FINGERPRINT = "fp_fake"

_SERVER_ERROR = {
    "message": "The server had an error while processing your request.",
    "type": "server_error",
    "param": None,
    "code": None,
}
_BAD_KEY = {
    "message": "Incorrect API key provided",
    "type": "invalid_request_error",
    "param": None,
    "code": "invalid_api_key",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


def message_text(message: Any) -> str:
    """The text of one chat message (string content, or the text parts of list content)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: list[Any]) -> int:
    """The fake's prompt token count (see the module docstring)."""
    return sum(MESSAGE_OVERHEAD_TOKENS + len(message_text(m).split()) for m in messages)


def reply_words(messages: list[Any], max_words: int | None = None) -> tuple[list[str], str]:
    """The fake's reply as words, and its finish reason."""
    last = message_text(messages[-1]) if messages else ""
    words = [*REPLY_PREFIX.split(), *last.split()]
    if max_words is not None and len(words) > max_words:
        return words[:max_words], "length"
    return words, "stop"


class FakeProvider:
    """The fake as a raw ASGI app; ``requests`` lists what it received."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        status: int | None = None,
        delay_s: float = 0.0,
        usage_style: str = "openai",
        cut_after: int | None = None,
    ) -> None:
        self.api_key = api_key
        # How usage is reported: "openai"; "deepseek" (prompt_cache_hit_tokens /
        # prompt_cache_miss_tokens, reasoning for "*reasoner*" models); "mistral" (no details,
        # and a stream's last chunk always carries the usage, whatever stream_options say).
        self.usage_style = usage_style
        # A chat stream's connection ends after this many chunks, without its end: a cut.
        self.cut_after = cut_after
        # Every request answered with this status (an OpenAI error body), when set.
        self.status = status
        # Seconds to wait before answering (a slow or hanging provider).
        self.delay_s = delay_s
        # Seconds between two SSE chunks: a slow stream, to test what happens mid-response.
        self.chunk_delay = chunk_delay
        self.requests: list[RecordedRequest] = []
        self._seen_systems: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path == "/_fake/requests":
            await self._recorded(send, method)
            return

        try:
            raw = await read_body(receive, limit=64 * 1024 * 1024)
        except ClientDisconnected:
            return  # a truncated request: a provider answers nobody
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(RecordedRequest(method=method, path=path, headers=headers, body=body))

        endpoint = next(
            (
                e
                for e in ("/chat/completions", "/completions", "/embeddings", "/responses")
                if path.endswith(e)
            ),
            None,
        )
        if method != "POST" or endpoint is None:
            await _error(send, 404, f"Invalid URL ({method} {path})", "invalid_request_error", None)
            return
        if not self._authorized(headers):
            await send_response(send, 401, orjson.dumps({"error": _BAD_KEY}), [JSON_CONTENT_TYPE])
            return
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status is not None:
            await _status(send, self.status)
            return
        await self._answer(send, endpoint, body, headers)

    async def _recorded(self, send: Send, method: str) -> None:
        """``/_fake/requests``: what the fake received (``DELETE`` forgets it first)."""
        if method == "DELETE":
            self.requests.clear()
        payload = orjson.dumps([asdict(request) for request in self.requests])
        await send_response(send, 200, payload, [JSON_CONTENT_TYPE])

    def _authorized(self, headers: dict[str, str]) -> bool:
        """The configured key (``Bearer`` or Azure's ``api-key``), or any ``sk-`` key."""
        authorization = headers.get("authorization", "")
        if "api-key" in headers:
            authorization = f"Bearer {headers['api-key']}"
        if self.api_key is not None:
            return authorization == f"Bearer {self.api_key}"
        return authorization.startswith("Bearer sk-")

    async def _answer(self, send: Send, endpoint: str, body: Any, headers: dict[str, str]) -> None:
        """An authorized POST to ``endpoint``: its answer, or the error a test forced."""
        if isinstance(body, dict) and endpoint == "/responses":
            if not isinstance(body.get("input"), (str, list)):
                message = "Missing required parameter: 'input'."
                await _error(send, 400, message, "invalid_request_error", None)
                return
            await self._respond(send, body, headers.get("x-fake-stream-error", ""))
            return
        if isinstance(body, dict) and endpoint != "/chat/completions":
            field = "prompt" if endpoint == "/completions" else "input"
            text = body.get(field)
            texts = text if isinstance(text, list) else [text]
            body = {**body, "messages": [{"role": "user", "content": t} for t in texts]}
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _error(
                send,
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
            return
        forced = headers.get("x-fake-status")
        if body.get("model") == "fail-500" or forced == "500":
            payload = orjson.dumps({"error": _SERVER_ERROR})
            await send_response(send, 500, payload, [JSON_CONTENT_TYPE])
            return
        if forced and forced.isdigit():
            await _error(
                send, int(forced), f"Forced status {forced}", "invalid_request_error", None
            )
            return
        if endpoint == "/embeddings":
            await self._embed(send, body)
            return
        await self._complete(
            send,
            body,
            legacy=endpoint == "/completions",
            stream_error=headers.get("x-fake-stream-error", ""),
        )

    async def _embed(self, send: Send, body: dict[str, Any]) -> None:
        tokens = prompt_tokens(body["messages"])
        document = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]}
                for i in range(len(body["messages"]))
            ],
            "model": str(body.get("model", "")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])

    def _cached_tokens(self, messages: list[Any]) -> int:
        system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
        text = " ".join(message_text(m) for m in system)
        if len(text.split()) < CACHE_MIN_WORDS:
            return 0
        if text in self._seen_systems:
            return prompt_tokens(system)
        self._seen_systems.add(text)
        return 0

    async def _complete(
        self, send: Send, body: dict[str, Any], *, legacy: bool = False, stream_error: str = ""
    ) -> None:
        messages: list[Any] = body["messages"]
        model = str(body.get("model", ""))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        words, finish_reason = reply_words(messages, limit if isinstance(limit, int) else None)
        reasoning_model = (
            "reasoner" in model
            if self.usage_style == "deepseek"
            else len(model) > 1 and model[0] == "o" and model[1].isdigit()
        )
        reasoning = REASONING_TOKENS_PER_WORD * len(words) if reasoning_model else 0
        usage = _usage(
            prompt_tokens(messages),
            len(words) + reasoning,
            cached=self._cached_tokens(messages),
            reasoning=reasoning,
            style=self.usage_style,
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if legacy and not body.get("stream"):
            document = {
                "id": f"cmpl-{uuid.uuid4().hex[:24]}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "text": " ".join(words),
                        "index": 0,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            }
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return
        if not body.get("stream"):
            document = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": " ".join(words),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        usage_on_last = self.usage_style == "mistral"
        if usage_on_last:
            include_usage = False
        if legacy:
            await self._stream_legacy(send, model, words, finish_reason, usage, include_usage)
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            document: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                document["usage"] = None
            return b"data: " + orjson.dumps(document) + b"\n\n"

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        pieces = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        pieces.extend(
            chunk({"content": word if i == 0 else " " + word}, None) for i, word in enumerate(words)
        )
        pieces.append(chunk({}, finish_reason))
        if usage_on_last:
            last = orjson.loads(pieces[-1][len(b"data: ") :])
            pieces[-1] = b"data: " + orjson.dumps({**last, "usage": usage}) + b"\n\n"
        if include_usage:
            final = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [],
                "usage": usage,
            }
            pieces.append(b"data: " + orjson.dumps(final) + b"\n\n")
        pieces.append(b"data: [DONE]\n\n")
        after, _, error_type = stream_error.partition(":")
        if after.isdigit() and error_type:
            pieces[int(after) :] = [_stream_error(error_type), b"data: [DONE]\n\n"]
        for i, piece in enumerate(pieces):
            if self.cut_after is not None and i >= self.cut_after:
                return  # the connection ends without the stream's end: a cut
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream_legacy(
        self,
        send: Send,
        model: str,
        words: list[str],
        finish_reason: str,
        usage: dict[str, Any],
        include_usage: bool,
    ) -> None:
        """Legacy /completions streamed: text_completion chunks, then usage if asked, [DONE]."""
        completion_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(text: str, finish: str | None) -> bytes:
            document: dict[str, Any] = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                document["usage"] = None
            return b"data: " + orjson.dumps(document) + b"\n\n"

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        pieces = [chunk(word if i == 0 else " " + word, None) for i, word in enumerate(words)]
        pieces.append(chunk("", finish_reason))
        if include_usage:
            final = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            pieces.append(b"data: " + orjson.dumps(final) + b"\n\n")
        pieces.append(b"data: [DONE]\n\n")
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _response_messages(self, body: dict[str, Any]) -> list[Any]:
        """The Responses API's input as chat messages, for the fake's token rule."""
        source = body["input"]
        items = [{"role": "user", "content": source}] if isinstance(source, str) else source
        messages: list[Any] = []
        if isinstance(body.get("instructions"), str):
            messages.append({"role": "system", "content": body["instructions"]})
        for item in items:
            if isinstance(item, dict) and "role" in item:
                role = "system" if item["role"] == "developer" else item["role"]
                messages.append({"role": role, "content": item.get("content")})
        return messages

    async def _respond(self, send: Send, body: dict[str, Any], stream_error: str = "") -> None:
        """POST /responses, whole or streamed, in the Responses API's wire format."""
        messages = self._response_messages(body)
        model = str(body.get("model", ""))
        limit = body.get("max_output_tokens")
        words, _ = reply_words(messages, limit if isinstance(limit, int) else None)
        reasoning = (
            REASONING_TOKENS_PER_WORD * len(words)
            if len(model) > 1 and model[0] == "o" and model[1].isdigit()
            else 0
        )
        prompt = prompt_tokens(messages)
        cached = self._cached_tokens(messages)
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": len(words) + reasoning,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + len(words) + reasoning,
        }
        text = " ".join(words)
        response_id = f"resp_{uuid.uuid4().hex}"
        message_id = f"msg_{uuid.uuid4().hex}"
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {
            "id": message_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        document: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": limit if isinstance(limit, int) else None,
            "model": model,
            "output": [item],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
        }
        if not body.get("stream"):
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return
        in_progress = {**document, "status": "in_progress", "output": [], "usage": None}
        empty_item = {**item, "status": "in_progress", "content": []}
        empty_part = {**part, "text": ""}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": in_progress},
            {"type": "response.in_progress", "response": in_progress},
            {"type": "response.output_item.added", "output_index": 0, "item": empty_item},
            {
                "type": "response.content_part.added",
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "part": empty_part,
            },
        ]
        events.extend(
            {
                "type": "response.output_text.delta",
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "delta": word if i == 0 else " " + word,
                "logprobs": [],
            }
            for i, word in enumerate(words)
        )
        events += [
            {
                "type": "response.output_text.done",
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": document},
        ]
        after, _, code = stream_error.partition(":")
        if after.isdigit() and code:
            # The Responses API's end of a failed response: response.failed, its error set.
            error = {"code": code, "message": _SERVER_ERROR["message"]}
            failed = {**in_progress, "status": "failed", "error": error}
            events[int(after) :] = [{"type": "response.failed", "response": failed}]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        for number, event in enumerate(events):
            event["sequence_number"] = number
            piece = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event)
            await send({"type": "http.response.body", "body": piece + b"\n\n", "more_body": True})
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _status(send: Send, status: int) -> None:
    """Answer ``status`` with OpenAI's error body for it (429 with ``retry-after``)."""
    if status == 429:
        error = {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
        headers = [JSON_CONTENT_TYPE, (b"retry-after", b"1")]
        await send_response(send, 429, orjson.dumps({"error": error}), headers)
        return
    if status >= 500:
        payload = orjson.dumps({"error": _SERVER_ERROR})
        await send_response(send, status, payload, [JSON_CONTENT_TYPE])
        return
    await _error(send, status, f"Forced status {status}", "invalid_request_error", None)


def _usage(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0, style: str = "openai"
) -> dict[str, Any]:
    if style == "mistral":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    if style == "deepseek":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_cache_hit_tokens": cached,
            "prompt_cache_miss_tokens": prompt - cached,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _stream_error(error_type: str) -> bytes:
    """OpenAI's error event inside a stream that had begun with 200."""
    error = (
        _SERVER_ERROR
        if error_type == "server_error"
        else {"message": "Forced stream error", "type": error_type, "param": None, "code": None}
    )
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


async def _error(send: Send, status: int, message: str, type: str, code: str | None) -> None:
    payload = orjson.dumps(
        {"error": {"message": message, "type": type, "param": None, "code": code}}
    )
    await send_response(send, status, payload, [JSON_CONTENT_TYPE])


async def _serve(host: str, port: int, api_key: str | None, chunk_delay: float = 0.0) -> None:
    app = FakeProvider(api_key=api_key, chunk_delay=chunk_delay)
    async with serve_http(app, host=host, port=port) as address:
        print(f"fake provider listening on {address.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane.testing.fake_openai --listen HOST:PORT [--api-key KEY]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane.testing.fake_openai", description=__doc__
    )
    parser.add_argument("--listen", default="127.0.0.1:8900", help="HOST:PORT (port 0: any)")
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: sk-*)")
    parser.add_argument(
        "--chunk-delay-ms", type=int, default=0, help="pause between SSE chunks (default: 0)"
    )
    args = parser.parse_args(argv)
    host, port = split_host_port(args.listen)
    try:
        import uvloop

        uvloop.run(_serve(host, port, args.api_key, args.chunk_delay_ms / 1000))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
