"""A fake Llama 2 text-generation server in Kong's ``llama2_format: raw`` wire format.

``POST`` (any path: Kong's ``upstream_url`` is the full URL) with ``{"inputs": "<s>[INST] ...
[/INST]", "parameters": {"max_new_tokens", "top_p", "top_k", "temperature"}}``, as Kong's
llama2 driver sends it. The answer is ``{"data": [{"generated_text": inputs + " " + reply}]}``
(the prompt echoed, as Hugging Face's text generation returns it by default; Kong keeps what
follows the last ``[/INST]``), plus ``usage`` (``prompt_tokens``, ``completion_tokens``,
``total_tokens``) when ``report_usage`` is set; many raw servers report none.

Deterministic counts: prompt tokens = the words of ``inputs`` (whitespace-separated, the
template's markers included); the reply is ``"fake reply:"`` plus the words of the last
``[INST]`` block (the user's last turn), cut to ``max_new_tokens`` words; completion tokens =
its words. ``Authorization`` must be ``Bearer <api_key>`` when ``api_key`` is set (401
``{"error": ..., "error_type": "authentication"}``, TGI's error shape); header
``x-fake-status: N`` answers status N in the same shape; a body without a string ``inputs``
is 422. Every request is recorded.

Run it with ``python -m dataplane.testing.fake_llama2 --listen 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

import orjson

from dataplane.http.asgi import JSON_CONTENT_TYPE, Receive, Scope, Send, read_body, send_response
from dataplane.http.server import serve_http, split_host_port
from dataplane.testing.fake_openai import REPLY_PREFIX, RecordedRequest

# The user's turns of a Llama 2 prompt: the text between [INST] (and an optional <<SYS>>
# block, closed by <</SYS>>, or by <<SYS>> as Kong's completions wrapper writes it) and [/INST].
_TURN = re.compile(r"\[INST\](?:\s*<<SYS>>.*?<</?SYS>>)?(.*?)\[/INST\]", re.DOTALL)


def prompt_tokens(inputs: str) -> int:
    """The fake's prompt count: the words of ``inputs``."""
    return len(inputs.split())


def reply_words(inputs: str, max_new_tokens: Any = None) -> list[str]:
    """The fake's reply as words: the prefix and the last user turn, cut to max_new_tokens."""
    turns = _TURN.findall(inputs)
    last = turns[-1] if turns else inputs
    words = [REPLY_PREFIX, *last.split()]
    if isinstance(max_new_tokens, int) and 0 < max_new_tokens < len(words):
        words = words[:max_new_tokens]
    return words


async def _error(send: Send, status: int, message: str, error_type: str) -> None:
    body = orjson.dumps({"error": message, "error_type": error_type})
    await send_response(send, status, body, [JSON_CONTENT_TYPE])


class FakeLlama2Raw:
    """The fake as a raw ASGI app; ``requests`` lists what it received."""

    def __init__(self, *, api_key: str | None = None, report_usage: bool = True) -> None:
        self.api_key = api_key
        self.report_usage = report_usage
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
        if scope["method"] != "POST":
            await _error(send, 405, "Method Not Allowed", "validation")
            return
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await _error(send, 401, "Authorization header is invalid", "authentication")
            return
        forced = headers.get("x-fake-status", "")
        if forced.isdigit():
            await _error(send, int(forced), f"forced status {forced}", "overloaded")
            return
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            await _error(send, 422, "Failed to deserialize the JSON body: inputs", "validation")
            return
        inputs: str = body["inputs"]
        parameters = body.get("parameters")
        limit = parameters.get("max_new_tokens") if isinstance(parameters, dict) else None
        words = reply_words(inputs, limit)
        answer: dict[str, Any] = {"data": [{"generated_text": f"{inputs} {' '.join(words)}"}]}
        if self.report_usage:
            prompt = prompt_tokens(inputs)
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": len(words),
                "total_tokens": prompt + len(words),
            }
        await send_response(send, 200, orjson.dumps(answer), [JSON_CONTENT_TYPE])


async def _serve(host: str, port: int, report_usage: bool) -> None:
    async with serve_http(FakeLlama2Raw(report_usage=report_usage), host=host, port=port) as a:
        print(f"fake llama2 (raw) listening on {a.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane.testing.fake_llama2 --listen HOST:PORT [--no-usage]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane.testing.fake_llama2", description=__doc__
    )
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--no-usage", action="store_true", help="answer without usage")
    args = parser.parse_args(argv)
    host, port = split_host_port(args.listen)
    try:
        asyncio.run(_serve(host, port, not args.no_usage))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
