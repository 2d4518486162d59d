"""Kong's ``logging.log_payloads`` on ai-proxy and ai-proxy-advanced routes: request and response
bodies in the data plane's JSON log, credentials redacted, size-capped; nothing when off.

The gateway runs in-process in front of the fake providers (over real sockets); the log lines
are the JSON lines the data plane writes (``observability.logs.JsonLineFormatter``).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.observability.logs import JsonLineFormatter
from dataplane.observability.payloads import MAX_PAYLOAD_BYTES, REDACTED
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import FakeProvider
from meterline.dataplane.v1 import snapshot_pb2

KEY = "sk-consumer-key"
MESSAGES = [{"role": "user", "content": "log me please"}]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The payload logger's lines, as the data plane's JSON formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    payloads = logging.getLogger("meterline.payloads")
    payloads.addHandler(handler)
    old_level = payloads.level
    payloads.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        payloads.removeHandler(handler)
        payloads.setLevel(old_level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _target(url: str, name: str, *, log_payloads: bool) -> snapshot_pb2.AiProxyTarget:
    return snapshot_pb2.AiProxyTarget(
        route_type="llm/v1/chat",
        auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer sk-up"),
        model=snapshot_pb2.AiProxyModel(
            provider="openai",
            name=name,
            options=snapshot_pb2.AiProxyModelOptions(upstream_url=url),
        ),
        priority=1 if name == "first" else 2,
        weight=1,
        log_payloads=log_payloads,
    )


def _snapshot(config: snapshot_pb2.AiProxyConfig, *, advanced: bool) -> snapshot_pb2.Snapshot:
    return snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc", name="ai", url="http://ai.invalid")],
        routes=[snapshot_pb2.Route(id="r", name="chat", service_id="svc", paths=["/chat"])],
        consumers=[snapshot_pb2.Consumer(id="c", username="acme", key_hashes=[hash_key(KEY)])],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                route_id="r",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(
                    key_names=["apikey"], key_in_bearer=True, key_in_query=True
                ),
            ),
            snapshot_pb2.Plugin(
                id="ai",
                name="ai-proxy-advanced" if advanced else "ai-proxy",
                route_id="r",
                enabled=True,
                ai_proxy=config,
            ),
        ],
    )


async def _gateway(stack: AsyncExitStack, snapshot: snapshot_pb2.Snapshot) -> str:
    gateway = Gateway(node_id="dp-test", usage_sink=lambda event: None)
    stack.push_async_callback(gateway.aclose)
    gateway.apply(compile_snapshot(snapshot, version="v1"))
    address = await stack.enter_async_context(serve_http(gateway))
    return f"{address.url}/chat/chat/completions"


async def _route(stack: AsyncExitStack, *, log_payloads: bool) -> str:
    provider = await stack.enter_async_context(serve_http(FakeProvider()))
    only = _target(f"{provider.url}/v1/chat/completions", "gpt-4o", log_payloads=False)
    config = snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/chat", auth=only.auth, model=only.model, log_payloads=log_payloads
    )
    return await _gateway(stack, _snapshot(config, advanced=False))


async def test_bodies_are_logged_with_keys_and_auth_headers_redacted(
    json_log: io.StringIO,
) -> None:
    body = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "api_key": "sk-in-the-body",
        "metadata": {"nested": {"password": "hunter2", "kept": "visible"}},
    }
    async with AsyncExitStack() as stack:
        url = await _route(stack, log_payloads=True)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                url,
                params={"key": "sk-query-key", "apikey": KEY, "debug": "1"},
                headers={
                    "Authorization": f"Bearer {KEY}",
                    "x-api-key": "sk-x-api-key",
                    "api-key": "sk-azure-style",
                },
                json=body,
            )
    assert answer.status_code == 200
    (line,) = _lines(json_log)
    text = json.dumps(line)
    for secret in ("sk-in-the-body", "hunter2", "sk-query-key", KEY, "sk-x-api-key", "sk-azure"):
        assert secret not in text, secret
    assert line["logger"] == "meterline.payloads"
    assert line["request_id"] == answer.headers["x-request-id"]
    assert line["route"] == "chat" and line["status"] == 200
    logged = json.loads(line["payload.request"])
    assert logged["messages"] == MESSAGES
    assert logged["api_key"] == REDACTED
    assert logged["metadata"]["nested"] == {"password": REDACTED, "kept": "visible"}
    headers = line["payload.request_headers"]
    assert headers["authorization"] == REDACTED
    assert headers["x-api-key"] == REDACTED
    assert headers["api-key"] == REDACTED
    assert "debug=1" in line["payload.query"] and "sk-query-key" not in line["payload.query"]
    assert json.loads(line["payload.response"])["id"] == answer.json()["id"]
    assert line["payload.response_kind"] == "body"
    assert line["payload.request_truncated"] is False


async def test_a_stream_is_logged_as_its_events_and_assembled_text(
    json_log: io.StringIO,
) -> None:
    async with AsyncExitStack() as stack:
        url = await _route(stack, log_payloads=True)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                url,
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
            )
    assert answer.status_code == 200
    text = "".join(
        choice["delta"].get("content") or ""
        for line in answer.text.splitlines()
        if line.startswith("data: {")
        for choice in json.loads(line[6:])["choices"]
    )
    (line,) = _lines(json_log)
    assert line["payload.response_kind"] == "stream"
    assert line["payload.response_text"] == text and text
    assert line["payload.response"] == answer.text


async def test_nothing_is_logged_when_log_payloads_is_off(json_log: io.StringIO) -> None:
    async with AsyncExitStack() as stack:
        url = await _route(stack, log_payloads=False)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                url,
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "gpt-4o", "messages": MESSAGES},
            )
    assert answer.status_code == 200
    assert _lines(json_log) == []


async def test_bodies_over_the_cap_are_cut_and_marked(json_log: io.StringIO) -> None:
    big = "x" * (MAX_PAYLOAD_BYTES + 5000)
    async with AsyncExitStack() as stack:
        url = await _route(stack, log_payloads=True)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                url,
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": big}]},
            )
    assert answer.status_code == 200
    (line,) = _lines(json_log)
    logged = line["payload.request"]
    assert line["payload.request_truncated"] is True
    assert len(logged.encode()) < MAX_PAYLOAD_BYTES + 100
    assert logged.endswith(" bytes]") and "...[truncated " in logged
    # The response (echoing the prompt) is capped the same way.
    assert line["payload.response_truncated"] is True
    assert len(line["payload.response"].encode()) < MAX_PAYLOAD_BYTES + 100


async def test_ai_proxy_advanced_logs_per_target(json_log: io.StringIO) -> None:
    async with AsyncExitStack() as stack:
        failing = await stack.enter_async_context(serve_http(FakeProvider(status=500)))
        working = await stack.enter_async_context(serve_http(FakeProvider()))

        async def route(first_logs: bool, second_logs: bool) -> str:
            config = snapshot_pb2.AiProxyConfig(route_type="llm/v1/chat")
            config.targets.extend(
                [
                    _target(f"{failing.url}/v1/chat/completions", "first", log_payloads=first_logs),
                    _target(
                        f"{working.url}/v1/chat/completions", "second", log_payloads=second_logs
                    ),
                ]
            )
            config.balancer.algorithm = "priority"
            config.balancer.failover_criteria.append("http_5xx")
            return await _gateway(stack, _snapshot(config, advanced=True))

        async with httpx.AsyncClient() as client:
            for first_logs, second_logs, logged in ((True, False, 0), (False, True, 1)):
                url = await route(first_logs, second_logs)
                answer = await client.post(
                    url,
                    headers={"Authorization": f"Bearer {KEY}"},
                    json={"model": "gpt-4o", "messages": MESSAGES},
                )
                assert answer.status_code == 200
                # The answering target's setting decides (the failed one's body is not logged).
                assert len(_lines(json_log)) == logged
