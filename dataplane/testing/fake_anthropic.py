"""A fake Anthropic Messages API provider for tests and the local demo.

It speaks the Messages wire format (a whole ``message`` object, or the SSE stream
``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``) with deterministic token counts:

- prompt tokens = for the system prompt (if any) and each message, 3 + the number of
  whitespace-separated words of its text;
- prompt caching: when a system block carries ``cache_control``, the system prompt's tokens are
  cacheable. The first request with that system text writes them
  (``cache_creation_input_tokens``), later ones read them (``cache_read_input_tokens``);
  ``input_tokens`` is the rest of the prompt, as in Anthropic's API;
- the reply is ``"fake reply:"`` plus the words of the last message, cut to ``max_tokens``
  words (``stop_reason`` ``"max_tokens"``); ``output_tokens`` = number of words. With a
  ``tool_choice`` of type ``any`` or ``tool``, the reply is one ``tool_use`` block of the first
  (or the named) tool with input ``{"query": <last message text>}`` and ``output_tokens`` =
  words of that text + 5.

Auth: ``x-api-key`` must equal the configured key (default: anything starting ``sk-ant-``);
``anthropic-version`` is required. Model ``"fail-500"`` or header ``x-fake-status: N``
answers status N with an Anthropic error; ``x-fake-stream-error: N:overloaded_error`` sends that
``error`` event after N stream events and ends the stream; ``FakeAnthropic(cut_after=K)`` ends
a stream's connection after K events. ``POST /v1/messages/count_tokens`` answers
``{"input_tokens": N}``. Requests are recorded in ``requests`` and at ``GET /_fake/requests``.

Run it with ``python -m dataplane.testing.fake_anthropic --listen 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from dataclasses import asdict
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
from dataplane.testing.fake_openai import MESSAGE_OVERHEAD_TOKENS, REPLY_PREFIX, RecordedRequest

TOOL_USE_OVERHEAD_TOKENS = 5
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def block_text(content: Any) -> str:
    """The text of a message's or system prompt's content (string or blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif block.get("type") == "tool_result":
                parts.append(block_text(block.get("content")))
            elif block.get("type") == "tool_use":
                parts.append(orjson.dumps(block.get("input", {})).decode())
        return " ".join(parts)
    return ""


def _tokens(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + len(text.split())


def prompt_tokens(body: dict[str, Any]) -> int:
    """All prompt tokens of a request (input + cache read + cache write)."""
    total = sum(_tokens(block_text(m.get("content"))) for m in body.get("messages", []))
    if body.get("system"):
        total += _tokens(block_text(body["system"]))
    return total


def _cacheable_system(body: dict[str, Any]) -> str | None:
    system = body.get("system")
    if isinstance(system, list) and any(
        isinstance(block, dict) and "cache_control" in block for block in system
    ):
        return block_text(system)
    return None


def reply_words(body: dict[str, Any]) -> tuple[list[str], str]:
    """The fake's text reply as words, and its stop reason."""
    messages = body.get("messages") or []
    last = block_text(messages[-1].get("content")) if messages else ""
    words = [*REPLY_PREFIX.split(), *last.split()]
    limit = body.get("max_tokens")
    if isinstance(limit, int) and len(words) > limit:
        return words[:limit], "max_tokens"
    return words, "end_turn"


class FakeAnthropic:
    """The fake as a raw ASGI app; ``requests`` lists what it received."""

    def __init__(self, *, api_key: str | None = None, cut_after: int | None = None) -> None:
        self.api_key = api_key
        # A stream's connection ends after this many SSE events, without its end: a cut.
        self.cut_after = cut_after
        self.requests: list[RecordedRequest] = []
        self._cached_systems: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path == "/_fake/requests":
            if method == "DELETE":
                self.requests.clear()
            payload = orjson.dumps([asdict(request) for request in self.requests])
            await send_response(send, 200, payload, [JSON_CONTENT_TYPE])
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

        if method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            await _error(send, 404, "Not found")
            return
        key = headers.get("x-api-key", "")
        if not (key == self.api_key if self.api_key is not None else key.startswith("sk-ant-")):
            await _error(send, 401, "invalid x-api-key")
            return
        if "anthropic-version" not in headers:
            await _error(send, 400, "anthropic-version: header is required")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _error(send, 400, "messages: Field required")
            return
        if path.endswith("/count_tokens"):
            document = {"input_tokens": prompt_tokens(body)}
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return
        if not isinstance(body.get("max_tokens"), int):
            await _error(send, 400, "max_tokens: Field required")
            return
        forced = headers.get("x-fake-status", "")
        if body.get("model") == "fail-500":
            forced = "500"
        if forced.isdigit():
            await _error(send, int(forced), f"Forced status {forced}")
            return
        await self._message(send, body, headers.get("x-fake-stream-error", ""))

    def _usage(self, body: dict[str, Any]) -> dict[str, Any]:
        total = prompt_tokens(body)
        system = _cacheable_system(body)
        cacheable = _tokens(system) if system is not None else 0
        read = write = 0
        if system is not None and system in self._cached_systems:
            read = cacheable
        elif system is not None:
            write = cacheable
            self._cached_systems.add(system)
        return {
            "input_tokens": total - read - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }

    async def _message(self, send: Send, body: dict[str, Any], stream_error: str = "") -> None:
        usage = self._usage(body)
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        model = str(body.get("model", ""))
        tool = _chosen_tool(body)
        messages = body["messages"]
        last = block_text(messages[-1].get("content")) if messages else ""
        if tool is not None:
            tool_input = {"query": last}
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": tool,
                "input": tool_input,
            }
            output_tokens = len(last.split()) + TOOL_USE_OVERHEAD_TOKENS
            stop_reason = "tool_use"
            pieces = [orjson.dumps(tool_input).decode()]
        else:
            words, stop_reason = reply_words(body)
            block = {"type": "text", "text": " ".join(words)}
            output_tokens = len(words)
            pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
        if not body.get("stream"):
            document = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": output_tokens},
            }
            await send_response(send, 200, orjson.dumps(document), [JSON_CONTENT_TYPE])
            return

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        start = {**block, "input": {}} if tool is not None else {"type": "text", "text": ""}
        delta_type = "input_json_delta" if tool is not None else "text_delta"
        delta_key = "partial_json" if tool is not None else "text"
        events = [
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            ),
            event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": start},
            ),
            event("ping", {"type": "ping"}),
            *(
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": delta_type, delta_key: piece},
                    },
                )
                for piece in pieces
            ),
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        after, _, error_type = stream_error.partition(":")
        for i, piece in enumerate(events):
            if after.isdigit() and error_type and i == int(after):
                # Anthropic's in-stream error (e.g. overloaded_error), then the end.
                error = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
                piece = event("error", error)
                await send({"type": "http.response.body", "body": piece, "more_body": False})
                return
            if self.cut_after is not None and i >= self.cut_after:
                return  # the connection ends without the stream's end: a cut
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _chosen_tool(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or not isinstance(choice, dict):
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name", ""))
    if choice.get("type") == "any" and isinstance(tools[0], dict):
        return str(tools[0].get("name", ""))
    return None


async def _error(send: Send, status: int, message: str) -> None:
    error_type = _ERROR_TYPES.get(status, "api_error")
    payload = orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    await send_response(send, status, payload, [JSON_CONTENT_TYPE])


async def _serve(host: str, port: int, api_key: str | None) -> None:
    async with serve_http(FakeAnthropic(api_key=api_key), host=host, port=port) as address:
        print(f"fake anthropic listening on {address.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane.testing.fake_anthropic --listen HOST:PORT [--api-key KEY]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane.testing.fake_anthropic", description=__doc__
    )
    parser.add_argument("--listen", default="127.0.0.1:8901", help="HOST:PORT (port 0: any)")
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: sk-ant-*)")
    args = parser.parse_args(argv)
    host, port = split_host_port(args.listen)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, args.api_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
