"""A fake Cohere v2 chat server (``POST /v2/chat``) for tests, in Cohere's exact wire format.

- billed ``input_tokens`` = whitespace-separated words of every message's text; the reply is
  ``"fake reply:"`` plus the words of the last message, cut to ``max_tokens`` words if set
  (``finish_reason`` ``MAX_TOKENS``, else ``COMPLETE``); billed ``output_tokens`` = reply words.
  ``usage.tokens.input_tokens`` adds the prompt template (``TEMPLATE_TOKENS`` + 4 per
  message), which Cohere does not bill.
- ``stream: true``: SSE events ``message-start``, ``content-start``, one ``content-delta`` per
  word, ``content-end``, ``message-end`` (with ``finish_reason`` and ``usage``), each as
  ``event: <type>`` + ``data: {"type": ...}``. With ``tools`` declared and a last message
  ``"call <name>"``, the answer is a tool call (``TOOL_CALL``; stream: ``tool-plan-delta``,
  ``tool-call-start``, ``tool-call-delta``, ``tool-call-end``).

Errors as Cohere sends them (``{"id", "message"}``): a wrong key 401, model ``"missing"`` 404,
header ``x-fake-status: N`` status N, a bad body 400. ``cut_after=K`` ends a stream's
connection after K events. Every request is recorded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from dataplane.http.asgi import JSON_CONTENT_TYPE, Receive, Scope, Send, read_body, send_response

REPLY_PREFIX = "fake reply:"
TEMPLATE_TOKENS = 7
MISSING_MODEL = "missing"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return str(content or "")


def billed_input(messages: list[Any]) -> int:
    return sum(len(message_text(m).split()) for m in messages)


def reply_words(messages: list[Any], limit: int | None = None) -> tuple[list[str], str]:
    words = [*REPLY_PREFIX.split(), *message_text(messages[-1] if messages else {}).split()]
    if limit is not None and 0 <= limit < len(words):
        return words[:limit], "MAX_TOKENS"
    return words, "COMPLETE"


async def _error(send: Send, status: int, message: str) -> None:
    payload = orjson.dumps({"id": str(uuid.uuid4()), "message": message})
    await send_response(send, status, payload, [JSON_CONTENT_TYPE])


class FakeCohere:
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
        if scope["method"] != "POST" or scope["path"] != "/v2/chat":
            await _error(send, 404, f"{scope['path']} not found")
            return
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await _error(send, 401, "invalid api token")
            return
        forced = headers.get("x-fake-status", "")
        if forced.isdigit():
            await _error(send, int(forced), f"forced status {forced}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _error(send, 400, "invalid request: messages must be a list")
            return
        model = body.get("model")
        if model == MISSING_MODEL:
            await _error(
                send,
                404,
                f"model '{model}' not found, make sure the correct model ID was used and that "
                "you have access to the model.",
            )
            return
        await self._chat(send, body)

    async def _chat(self, send: Send, body: dict[str, Any]) -> None:
        messages: list[Any] = body["messages"]
        limit = body.get("max_tokens")
        words, finish = reply_words(messages, limit if isinstance(limit, int) else None)
        text = message_text(messages[-1]) if messages else ""
        call: dict[str, Any] | None = None
        if body.get("tools") and text.startswith("call "):
            call = {
                "id": f"{text.split()[1]}_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": text.split()[1], "arguments": '{"city":"Paris"}'},
            }
            words, finish = ["I", "will", "call", "it."], "TOOL_CALL"
        billed = {"input_tokens": billed_input(messages), "output_tokens": len(words)}
        usage = {
            "billed_units": billed,
            "tokens": {
                "input_tokens": billed["input_tokens"] + TEMPLATE_TOKENS + 4 * len(messages),
                "output_tokens": len(words),
            },
        }
        response_id = str(uuid.uuid4())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant"}
            if call:
                message["tool_plan"] = " ".join(words)
                message["tool_calls"] = [call]
            else:
                message["content"] = [{"type": "text", "text": " ".join(words)}]
            document = {
                "id": response_id,
                "message": message,
                "finish_reason": finish,
                "usage": usage,
            }
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return
        events: list[dict[str, Any]] = [
            {
                "type": "message-start",
                "id": response_id,
                "delta": {
                    "message": {
                        "role": "assistant",
                        "content": [],
                        "tool_plan": "",
                        "tool_calls": [],
                        "citations": [],
                    }
                },
            }
        ]
        if call:
            events.append(
                {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": " ".join(words)}}}
            )
            start = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append(
                {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": start}}}
            )
            events.append(
                {
                    "type": "tool-call-delta",
                    "index": 0,
                    "delta": {
                        "message": {
                            "tool_calls": {"function": {"arguments": call["function"]["arguments"]}}
                        }
                    },
                }
            )
            events.append({"type": "tool-call-end", "index": 0})
        else:
            events.append(
                {
                    "type": "content-start",
                    "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}},
                }
            )
            events.extend(
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": word if i == 0 else " " + word}}},
                }
                for i, word in enumerate(words)
            )
            events.append({"type": "content-end", "index": 0})
        events.append({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i, event in enumerate(events):
            if self.cut_after is not None and i >= self.cut_after:
                return  # the connection ends without message-end: a cut
            piece = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event)
            await send({"type": "http.response.body", "body": piece + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
