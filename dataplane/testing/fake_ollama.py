"""A fake Ollama server (native ``POST /api/chat``) for tests, in Ollama's exact wire format.

- ``prompt_eval_count`` = sum over messages of (3 + whitespace-separated words of the
  message's ``content``); the reply is ``"fake reply:"`` plus the words of the last message,
  cut to ``options.num_predict`` words if set (then ``done_reason`` is ``"length"``);
  ``eval_count`` = reply words.
- ``stream`` absent or true (Ollama's default): ``application/x-ndjson``, one object per line
  (``{"model", "created_at", "message": {"role": "assistant", "content": word}, "done":
  false}``), the last with ``"done": true``, ``done_reason``, the durations and the counts.
  ``stream: false``: that final object with the whole reply, as ``application/json``.
- A message with ``tools`` declared and the last text ``"call <name>"`` answers a tool call
  (``message.tool_calls[].function`` with ``arguments`` as an object).

Errors, as Ollama sends them (``{"error": "..."}``): an unknown model (``"missing"``) answers
404 ``model "missing" not found, try pulling it first``; a wrong ``Authorization`` (when
``api_key`` is set) 401 ``unauthorized``; header ``x-fake-status: N`` status N; a bad body 400.
``cut_after=K`` ends a stream's connection after K lines; header ``x-fake-stream-error: K``
ends a stream after K lines with Ollama's error line, ``{"error": "an error was encountered
while running the model"}`` (the status stays 200, as Ollama's docs/api/errors describe).
Every request is recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from dataplane.http.asgi import JSON_CONTENT_TYPE, Receive, Scope, Send, read_body, send_response

MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PREFIX = "fake reply:"
MISSING_MODEL = "missing"
# Ollama's message when the model runner fails mid-generation (docs/api/errors).
STREAM_ERROR = "an error was encountered while running the model"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def prompt_eval_count(messages: list[Any]) -> int:
    return sum(
        MESSAGE_OVERHEAD_TOKENS + len(str(m.get("content") or "").split())
        for m in messages
        if isinstance(m, dict)
    )


def reply_words(messages: list[Any], limit: int | None = None) -> tuple[list[str], str]:
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    words = [*REPLY_PREFIX.split(), *str(last.get("content") or "").split()]
    if limit is not None and 0 <= limit < len(words):
        return words[:limit], "length"
    return words, "stop"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _error(send: Send, status: int, message: str) -> None:
    await send_response(send, status, orjson.dumps({"error": message}), [JSON_CONTENT_TYPE])


class FakeOllama:
    """The fake as a raw ASGI app; ``requests`` lists what it received."""

    def __init__(self, *, api_key: str | None = None, cut_after: int | None = None) -> None:
        self.api_key = api_key
        self.cut_after = cut_after
        self.requests: list[RecordedRequest] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive, limit=64 * 1024 * 1024)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(RecordedRequest(scope["method"], scope["path"], headers, body))
        if scope["method"] != "POST" or scope["path"] != "/api/chat":
            await send_response(
                send, 404, b"404 page not found", [(b"content-type", b"text/plain")]
            )
            return
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await _error(send, 401, "unauthorized")
            return
        forced = headers.get("x-fake-status", "")
        if forced.isdigit():
            await _error(send, int(forced), f"forced status {forced}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _error(send, 400, "invalid request: messages must be an array")
            return
        model = str(body.get("model") or "")
        if not model:
            await _error(send, 400, "model is required")
            return
        if model == MISSING_MODEL:
            await _error(send, 404, f'model "{model}" not found, try pulling it first')
            return
        await self._chat(send, body, model, headers.get("x-fake-stream-error", ""))

    async def _chat(
        self, send: Send, body: dict[str, Any], model: str, stream_error: str = ""
    ) -> None:
        messages: list[Any] = body["messages"]
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        assert isinstance(options, dict)
        limit = options.get("num_predict")
        words, done_reason = reply_words(messages, limit if isinstance(limit, int) else None)
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        text = str(last.get("content") or "")
        tool_calls = None
        if body.get("tools") and text.startswith("call "):
            tool_calls = [{"function": {"name": text.split()[1], "arguments": {"city": "Paris"}}}]
        final: dict[str, Any] = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": done_reason,
            "done": True,
            "total_duration": 4_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_eval_count(messages),
            "prompt_eval_duration": 1_000_000,
            "eval_count": len(words),
            "eval_duration": 2_000_000,
        }
        if body.get("stream", True) is False:
            final["message"] = {"role": "assistant", "content": " ".join(words)}
            if tool_calls:
                final["message"] = {"role": "assistant", "content": "", "tool_calls": tool_calls}
            await send_response(send, 200, orjson.dumps(final), [JSON_CONTENT_TYPE])
            return
        lines = [
            {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": word if i == 0 else " " + word},
                "done": False,
            }
            for i, word in enumerate(words)
        ]
        if tool_calls:
            lines = [
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                    "done": False,
                }
            ]
        lines.append(final)
        if stream_error.isdigit():
            lines[int(stream_error) :] = [{"error": STREAM_ERROR}]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-ndjson")],
            }
        )
        for i, line in enumerate(lines):
            if self.cut_after is not None and i >= self.cut_after:
                return  # the connection ends without the final object: a cut
            piece = orjson.dumps(line) + b"\n"
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
