"""OpenTelemetry GenAI spans and metrics of the data plane, exported to a real OTLP receiver
(the collector's gRPC TraceService/MetricsService, or OTLP/HTTP) on 127.0.0.1.

Each test runs the gateway in-process in front of the fake provider, with the OTEL_* variables
an operator would set, and compares what arrives with what the provider reported and what the
usage events record.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.observability.tracing import Tracing, parse_traceparent
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import FakeProvider
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2
from support.otlp_receiver import Received, attributes, grpc_receiver, http_receiver

MESSAGES = [{"role": "user", "content": "tell me about tracing please"}]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
OTEL_THREADS = ("meterline-otel", "OtelBatchSpanProcessor", "OtelPeriodicExportingMetricReader")


def _exporter_children(parent: int | None = None) -> list[int]:
    """The OpenTelemetry exporter processes whose parent is ``parent`` (this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and b"otel_process" in command:
            found.append(int(entry.name))
    return found


def _gone(pid: int, timeout: float = 15.0) -> bool:
    """Whether process ``pid`` exited (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _clear_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Received, Tracing]]:
    """A gRPC OTLP receiver, and the data plane's Tracing configured for it by OTEL_* only."""
    _clear_otel(monkeypatch)
    with grpc_receiver() as (url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "dp-under-test")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
        tracing = Tracing.from_environment()
        assert tracing is not None
        try:
            yield received, tracing
        finally:
            tracing.shutdown()


def _snapshot(
    targets: list[str], *, advanced: bool = False, log_payloads: bool = False
) -> snapshot_pb2.Snapshot:
    """Route /chat with key-auth and ai-proxy (one target) or ai-proxy-advanced (priority)."""

    def target(url: str, priority: int) -> snapshot_pb2.AiProxyTarget:
        return snapshot_pb2.AiProxyTarget(
            route_type="llm/v1/chat",
            auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer sk-p"),
            model=snapshot_pb2.AiProxyModel(
                provider="openai",
                name=f"gpt-4o-{priority}",
                options=snapshot_pb2.AiProxyModelOptions(
                    upstream_url=url, input_cost="2", output_cost="8"
                ),
            ),
            priority=priority,
            weight=1,
        )

    config = snapshot_pb2.AiProxyConfig(route_type="llm/v1/chat", log_payloads=log_payloads)
    if advanced:
        config.targets.extend(target(url, n + 1) for n, url in enumerate(targets))
        config.balancer.algorithm = "priority"
        config.balancer.failover_criteria.append("http_5xx")
        config.balancer.retries = 5
    else:
        only = target(targets[0], 1)
        config.auth.CopyFrom(only.auth)
        config.model.CopyFrom(only.model)
    return snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc", name="ai", url="http://ai.invalid")],
        routes=[snapshot_pb2.Route(id="r-chat", name="chat", service_id="svc", paths=["/chat"])],
        consumers=[
            snapshot_pb2.Consumer(id="c1", username="acme-corp", key_hashes=[hash_key("sk-k")])
        ],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                route_id="r-chat",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(key_names=["apikey"], key_in_bearer=True),
            ),
            snapshot_pb2.Plugin(
                id="ai",
                name="ai-proxy-advanced" if advanced else "ai-proxy",
                route_id="r-chat",
                enabled=True,
                ai_proxy=config,
            ),
        ],
    )


async def _gateway(
    stack: AsyncExitStack,
    tracing: Tracing | None,
    providers: list[FakeProvider | None],
    *,
    advanced: bool = False,
    log_payloads: bool = False,
) -> tuple[str, list[usage_pb2.UsageEvent]]:
    urls = []
    for provider in providers:
        address = await stack.enter_async_context(serve_http(provider))
        urls.append(f"{address.url}/v1/chat/completions")
    events: list[usage_pb2.UsageEvent] = []
    if tracing is not None:
        tracing.start()  # the drains on this loop, as the data plane's CLI does
    gateway = Gateway(node_id="dp-test", usage_sink=events.append, tracing=tracing)
    stack.push_async_callback(gateway.aclose)
    snapshot = _snapshot(urls, advanced=advanced, log_payloads=log_payloads)
    gateway.apply(compile_snapshot(snapshot, version="v1"))
    address = await stack.enter_async_context(serve_http(gateway))
    return f"{address.url}/chat", events


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="sk-k", max_retries=0)


def _by_name(received: Received) -> dict[str, list[dict]]:
    spans: dict[str, list[dict]] = {}
    for span in received.spans():
        spans.setdefault(span.name, []).append(
            {"span": span, "attributes": attributes(span.attributes)}
        )
    return spans


def _tokens(events: list[usage_pb2.UsageEvent]) -> dict[int, int]:
    return {e.llm_tokens.token_type: e.llm_tokens.tokens for e in events}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_request_arrives_as_genai_spans_with_the_reported_tokens(
    collector: tuple[Received, Tracing], stream: bool
) -> None:
    received, tracing = collector
    provider = FakeProvider()
    async with AsyncExitStack() as stack:
        url, events = await _gateway(stack, tracing, [provider])
        async with _client(url) as client:
            if stream:
                chunks = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                    temperature=0.5,
                    max_tokens=50,
                )
                received_chunks = [chunk async for chunk in chunks]
                usage = [chunk.usage for chunk in received_chunks if chunk.usage][-1]
                response_id = received_chunks[0].id
                finish = [c.finish_reason for k in received_chunks for c in k.choices]
                finish_reason = [f for f in finish if f][-1]
            else:
                completion = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, temperature=0.5, max_tokens=50
                )
                usage = completion.usage
                response_id = completion.id
                finish_reason = completion.choices[0].finish_reason
    tracing.force_flush()

    spans = _by_name(received)
    # The request span, named {operation} {request model}, and one attempt span (the target).
    (request,) = spans["chat gpt-4o-mini"]
    (attempt,) = spans["chat gpt-4o-1"]
    attrs = request["attributes"]
    assert request["span"].kind == request["span"].SPAN_KIND_CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.stream"] is stream
    assert attrs["gen_ai.response.model"] == "gpt-4o-1"
    # The response's id and finish reasons, as the client got them.
    assert attrs["gen_ai.response.id"] == response_id
    assert attrs["gen_ai.response.finish_reasons"] == [finish_reason]
    # Prompts and completions are never attributes unless the route logs payloads.
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    # Token attributes equal what the provider reported, and what the usage events record.
    assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
    recorded = _tokens(events)
    assert recorded[usage_pb2.TOKEN_TYPE_INPUT] == usage.prompt_tokens
    assert recorded[usage_pb2.TOKEN_TYPE_OUTPUT] == usage.completion_tokens
    assert attrs["meterline.route"] == "chat"
    assert attrs["meterline.consumer"] == "acme-corp"
    assert attrs["meterline.request_id"] == events[0].llm_tokens.request_id
    assert attrs["meterline.usage.estimated"] is False
    # Priced by the route's costs (per million tokens): a decimal string, never a float.
    expected = Decimal(2 * usage.prompt_tokens + 8 * usage.completion_tokens) / 1_000_000
    assert attrs["meterline.cost"] == f"{expected:f}"
    # Time to first token is an event inside the span; the attempt is its child.
    (first_token,) = [e for e in request["span"].events if e.name == "gen_ai.first_token"]
    span = request["span"]
    assert span.start_time_unix_nano < first_token.time_unix_nano <= span.end_time_unix_nano
    assert attempt["span"].parent_span_id == span.span_id
    assert attempt["span"].trace_id == span.trace_id
    assert attempt["attributes"]["http.response.status_code"] == 200
    # The upstream request carried a traceparent naming the attempt span.
    parent = parse_traceparent(provider.requests[-1].headers["traceparent"])
    assert parent == (
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(attempt["span"].span_id, "big"),
        1,
    )
    # Exported with the resource and headers of the OTEL_* variables.
    assert {"service.name": "dp-under-test", "deployment.environment": "test"}.items() <= (
        received.resources()[0].items()
    )
    assert received.headers[0]["x-tenant"] == "acme"

    # The GenAI metrics arrive too, with the same token counts.
    points = received.metric_points("gen_ai.client.token.usage")
    by_type = {attributes(p.attributes)["gen_ai.token.type"]: p.sum for p in points}
    assert by_type == {"input": usage.prompt_tokens, "output": usage.completion_tokens}
    (duration,) = received.metric_points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert duration.sum == pytest.approx(
        (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9, rel=1e-3
    )
    (ttft,) = received.metric_points("gen_ai.server.time_to_first_token")
    assert ttft.count == 1
    tpot = received.metric_points("gen_ai.server.time_per_output_token")
    assert len(tpot) == (1 if stream else 0)


@pytest.mark.parametrize(
    ("log_payloads", "opt_in", "captured"),
    [(True, "METERLINE_OTEL_CAPTURE_CONTENT", True),
     (True, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", True),
     (True, "", False),
     (False, "METERLINE_OTEL_CAPTURE_CONTENT", False)],
    ids=["log-payloads-and-opt-in", "log-payloads-and-otel-opt-in", "no-opt-in", "no-log-payloads"],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_prompts_and_completions_on_spans_need_log_payloads_and_the_opt_in(
    monkeypatch: pytest.MonkeyPatch, log_payloads: bool, opt_in: str, captured: bool, stream: bool
) -> None:
    _clear_otel(monkeypatch)
    monkeypatch.delenv("METERLINE_OTEL_CAPTURE_CONTENT", raising=False)
    with grpc_receiver() as (url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if opt_in:
            monkeypatch.setenv(opt_in, "true")
        tracing = Tracing.from_environment()
        assert tracing is not None
        try:
            async with AsyncExitStack() as stack:
                gateway_url, _ = await _gateway(
                    stack, tracing, [FakeProvider()], log_payloads=log_payloads
                )
                async with _client(gateway_url) as client:
                    if stream:
                        chunks = await client.chat.completions.create(
                            model="gpt-4o-mini", messages=MESSAGES, stream=True
                        )
                        text = "".join(
                            [c.choices[0].delta.content or "" async for c in chunks if c.choices]
                        )
                    else:
                        completion = await client.chat.completions.create(
                            model="gpt-4o-mini", messages=MESSAGES
                        )
                        text = completion.choices[0].message.content or ""
            tracing.force_flush()
        finally:
            tracing.shutdown()
    (request,) = _by_name(received)["chat gpt-4o-mini"]
    attrs = request["attributes"]
    if captured:
        assert json.loads(attrs["gen_ai.input.messages"]) == MESSAGES
        assert attrs["gen_ai.output.messages"] == text
        assert text
    else:
        assert "gen_ai.input.messages" not in attrs
        assert "gen_ai.output.messages" not in attrs


async def test_a_refused_request_is_one_error_span_without_attempts(
    collector: tuple[Received, Tracing],
) -> None:
    received, tracing = collector
    provider = FakeProvider()
    async with AsyncExitStack() as stack:
        url, events = await _gateway(stack, tracing, [provider])
        async with openai.AsyncOpenAI(base_url=url, api_key="sk-wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,
                    extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                )
    tracing.force_flush()

    assert provider.requests == [] and events == []
    (span,) = received.spans()
    attrs = attributes(span.attributes)
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert attrs["http.response.status_code"] == 401
    assert attrs["error.type"] == "invalid_api_key"
    assert attrs["meterline.route"] == "chat"
    assert attrs["meterline.attempts"] == 0
    # The client's trace goes on through the refusal.
    assert span.trace_id.hex() == CLIENT_TRACE
    assert span.parent_span_id.hex() == CLIENT_SPAN
    assert span.start_time_unix_nano <= span.end_time_unix_nano
    (duration,) = received.metric_points("gen_ai.client.operation.duration")
    assert attributes(duration.attributes)["error.type"] == "invalid_api_key"


async def test_a_failover_shows_two_attempt_spans(
    collector: tuple[Received, Tracing],
) -> None:
    received, tracing = collector
    primary, secondary = FakeProvider(status=500), FakeProvider()
    async with AsyncExitStack() as stack:
        url, events = await _gateway(stack, tracing, [primary, secondary], advanced=True)
        async with _client(url) as client:
            completion = await client.chat.completions.create(model="any", messages=MESSAGES)
    tracing.force_flush()

    spans = _by_name(received)
    (request,) = spans["chat any"]
    (failed,) = spans["chat gpt-4o-1"]
    (answered,) = spans["chat gpt-4o-2"]
    span_id = request["span"].span_id
    assert failed["span"].parent_span_id == span_id == answered["span"].parent_span_id
    assert failed["attributes"]["http.response.status_code"] == 500
    assert failed["attributes"]["error.type"] == "500"
    assert failed["attributes"]["meterline.attempt"] == 1
    assert failed["span"].status.code == failed["span"].status.STATUS_CODE_ERROR
    assert answered["attributes"]["meterline.attempt"] == 2
    assert answered["attributes"]["http.response.status_code"] == 200
    # The attempts follow each other inside the request span.
    assert failed["span"].end_time_unix_nano <= answered["span"].start_time_unix_nano
    assert request["attributes"]["meterline.attempts"] == 2
    assert request["attributes"]["gen_ai.usage.output_tokens"] == (
        completion.usage.completion_tokens
    )
    # Each provider saw its own attempt span as parent.
    for provider, attempt in ((primary, failed), (secondary, answered)):
        parent = parse_traceparent(provider.requests[-1].headers["traceparent"])
        assert parent is not None
        assert parent[1] == int.from_bytes(attempt["span"].span_id, "big")
    assert {e.llm_tokens.attempt for e in events} == {1, 2}


async def test_the_clients_traceparent_is_continued_up_to_the_provider(
    collector: tuple[Received, Tracing],
) -> None:
    received, tracing = collector
    provider = FakeProvider()
    async with AsyncExitStack() as stack:
        url, _ = await _gateway(stack, tracing, [provider])
        async with _client(url) as client:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                extra_headers={
                    "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                    "tracestate": "vendor=abc",
                },
            )
    tracing.force_flush()

    (request,) = _by_name(received)["chat gpt-4o-mini"]
    span = request["span"]
    assert span.trace_id.hex() == CLIENT_TRACE
    assert span.parent_span_id.hex() == CLIENT_SPAN
    assert span.trace_state == "vendor=abc"
    headers = provider.requests[-1].headers
    trace_id, parent_id, flags = parse_traceparent(headers["traceparent"])
    assert f"{trace_id:032x}" == CLIENT_TRACE
    assert f"{parent_id:016x}" != CLIENT_SPAN  # the gateway's attempt span, not the client's
    assert flags == 1
    assert headers["tracestate"] == "vendor=abc"


async def test_an_unsampled_client_trace_exports_no_spans_but_metrics(
    collector: tuple[Received, Tracing],
) -> None:
    received, tracing = collector
    provider = FakeProvider()
    async with AsyncExitStack() as stack:
        url, _ = await _gateway(stack, tracing, [provider])
        async with _client(url) as client:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"},
            )
    tracing.force_flush()

    # parentbased_always_on follows the client's decision; the provider is told it too.
    assert received.spans() == []
    assert provider.requests[-1].headers["traceparent"].endswith("-00")
    assert len(received.metric_points("gen_ai.client.operation.duration")) == 1


async def test_traceidratio_sampling_and_otlp_http(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_otel(monkeypatch)
    with ExitStack() as sync_stack:
        url, received = sync_stack.enter_context(http_receiver())
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
        tracing = Tracing.from_environment()
        assert tracing is not None
        sync_stack.callback(tracing.shutdown)
        provider = FakeProvider()
        async with AsyncExitStack() as stack:
            gateway_url, _ = await _gateway(stack, tracing, [provider])
            async with _client(gateway_url) as client:
                for _ in range(40):
                    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        tracing.force_flush()
        # The ratio sampler keeps the traces whose id falls under the ratio: exactly those
        # arrive (two spans each), over OTLP/HTTP.
        sent = [parse_traceparent(r.headers["traceparent"]) for r in provider.requests]
        sampled = {trace_id for trace_id, _, flags in sent if flags == 1}
        assert 0 < len(sampled) < 40
        assert {int.from_bytes(s.trace_id, "big") for s in received.spans()} == sampled
        assert len(received.spans()) == 2 * len(sampled)
        assert received.metrics == []


async def test_without_otel_variables_nothing_is_exported_and_no_thread_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear_otel(monkeypatch)
    with grpc_receiver() as (_url, received):
        tracing = Tracing.from_environment()
        assert tracing is None
        provider = FakeProvider()
        async with AsyncExitStack() as stack:
            url, events = await _gateway(stack, tracing, [provider])
            async with _client(url) as client:
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,
                    extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                )
            names = [thread.name for thread in threading.enumerate()]
        assert not [n for n in names if n.startswith(OTEL_THREADS)]
        assert _exporter_children() == []  # and no exporter process
        assert received.spans() == [] and received.metrics == []
        assert len(events) == 2
        # Untraced, the client's own header goes to the provider unchanged.
        assert provider.requests[-1].headers["traceparent"] == f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def test_the_data_plane_imports_no_sdk_without_otel_variables() -> None:
    # A fresh interpreter: the data plane's CLI and gateway, tracing looked up from a clean
    # environment: no OpenTelemetry SDK module loaded, one thread.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys, threading\n"
        "import dataplane.cli, dataplane.proxy.gateway\n"
        "from dataplane.observability.tracing import Tracing\n"
        "assert Tracing.from_environment() is None\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert loaded == [], loaded\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# -- the exporter process -------------------------------------------------------------------


async def test_one_exporter_process_runs_and_shutdown_stops_it(
    collector: tuple[Received, Tracing],
) -> None:
    received, tracing = collector
    pid = tracing.exporter_pid
    assert pid is not None and _exporter_children() == [pid]
    async with AsyncExitStack() as stack:
        url, _ = await _gateway(stack, tracing, [FakeProvider()])
        async with _client(url) as client:
            for _ in range(3):
                await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    tracing.shutdown()  # what is queued is exported, then the process exits
    assert _gone(pid)
    assert _exporter_children() == []
    # A request that ends after the shutdown is dropped: no exporter process again.
    tracing._measured.append(("chat", "openai", "m", "m", "chat", "", 200, 1, None, None, False))
    tracing.force_flush()
    assert _exporter_children() == [] and tracing.dropped == 1
    assert len(_by_name(received)["chat gpt-4o-mini"]) == 3
    (duration,) = received.metric_points("gen_ai.client.operation.duration")
    assert duration.count == 3


async def test_a_crashed_exporter_process_is_restarted_and_requests_go_on(
    collector: tuple[Received, Tracing], caplog: pytest.LogCaptureFixture
) -> None:
    received, tracing = collector
    first = tracing.exporter_pid
    assert first is not None
    async with AsyncExitStack() as stack:
        url, events = await _gateway(stack, tracing, [FakeProvider()])
        async with _client(url) as client:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert tracing.force_flush()
            os.kill(first, signal.SIGKILL)
            assert _gone(first)
            # The requests do not notice; the next flush finds the process gone and starts
            # another, which exports what comes after.
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            tracing.force_flush()
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert tracing.force_flush()
    second = tracing.exporter_pid
    assert second is not None and second != first
    assert _exporter_children() == [second]
    assert len(events) == 6  # every request answered and metered
    assert "exporter process exited" in caplog.text
    spans = _by_name(received)["chat gpt-4o-mini"]
    assert 2 <= len(spans) <= 3  # the first, the last, and the one in flight if it got there


def test_the_exporter_process_exits_with_the_data_plane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A data plane that dies without shutting tracing down (os._exit: no cleanup at all):
    # its exporter process reads the end of its pipe and exits too.
    _clear_otel(monkeypatch)
    with grpc_receiver() as (url, _received):
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_PROTOCOL":
               "grpc"}  # fmt: skip
        code = (
            "import os, sys\n"
            "from dataplane.observability.tracing import Tracing\n"
            "tracing = Tracing.from_environment()\n"
            "assert tracing.force_flush()\n"
            "print(tracing.exporter_pid, flush=True)\n"
            "sys.stdin.readline()\n"
            "os._exit(3)\n"
        )
        with subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as data_plane:
            assert data_plane.stdout is not None and data_plane.stdin is not None
            child = int(data_plane.stdout.readline())
            assert _exporter_children(data_plane.pid) == [child]
            data_plane.stdin.write("\n")
            data_plane.stdin.flush()
            assert data_plane.wait(timeout=30) == 3
        assert _gone(child)


def test_a_stalled_exporter_process_costs_bounded_memory_and_never_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataplane.observability.otel_process import BATCH, ExporterProcess, frame

    _clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    process = ExporterProcess(max_buffered=1 << 20)
    pid = process.pid
    assert pid is not None
    try:
        os.kill(pid, signal.SIGSTOP)  # reads nothing more: the pipe fills
        measure = ("chat", "openai", "gpt-4o", "gpt-4o", "chat", "", 200, 1, None, None, False)
        batch = frame((BATCH, [(*measure[:7], n, *measure[8:]) for n in range(1000)], []))
        start = time.monotonic()
        for _ in range(200):  # ~7 MB: far more than the pipe and the bound hold
            process.send(batch, 1000)
        assert time.monotonic() - start < 5  # never waited for the process
        assert process.dropped > 0
        assert process._buffered <= 1 << 20
    finally:
        os.kill(pid, signal.SIGCONT)
        process.close()
    assert _gone(pid)


def _spans_only_to(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """OTEL_* for spans alone, to the OTLP/gRPC receiver at ``url``, exported within 100 ms."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")


async def test_records_outgrowing_the_pipe_reach_the_exporter_before_the_next_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A busy drain interval's records (here ~6 MB: 3,000 sampled requests with 2 KB bodies)
    # are more than a pipe holds. The loop goes on writing them as the exporter reads, instead
    # of one pipeful per drain (which held the exporter to ~320 KB/s under load: spans minutes
    # late, then dropped).
    import dataplane.observability.tracing as tracing_module
    from dataplane.observability.otel_export import TracedRequest

    _clear_otel(monkeypatch)
    # One drain (the first) within the test's deadline, not a second one.
    monkeypatch.setattr(tracing_module, "_DRAIN_INTERVAL_S", 2.0)
    with grpc_receiver() as (url, received):
        _spans_only_to(monkeypatch, url)
        tracing = Tracing.from_environment()
        assert tracing is not None
        try:
            now = time.time_ns()
            padding = "x" * 2000
            items = []
            for n in range(3000):
                body = f'{{"id":"chatcmpl-{n}","text":"{padding}"}}'.encode()
                record = TracedRequest(
                    trace_id=n + 1, span_id=0, parent_span_id=None, tracestate="",
                    sampled=True, request_id=f"req-{n}", route="chat", consumer="acme",
                    operation="chat", request_model="gpt-4o", response_model="gpt-4o",
                    provider="openai", start_ns=now, start_perf_ns=0, end_perf_ns=1_000_000,
                    status=200, usage=(3, 4, None, None, None), estimated=False, stream=False,
                    first_byte_perf_ns=None, attempts=(), params=(), response_id="",
                    finish_reasons=(), error_type="", content=None, cost=None,
                )  # fmt: skip
                items.append((tuple(record), body, None))
            tracing._sampled.extend(items)  # before the first drain
            tracing.start()
            # The drain at 2 s, then the writes: one pipeful per drain (1 MiB at 2, 4, 6 and 8 s)
            # would still be short of the ~6 MB at the deadline.
            deadline = time.monotonic() + 8
            while len(received.spans()) < 3000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            spans = received.spans()
            assert len(spans) == 3000
            ids = {attributes(span.attributes)["gen_ai.response.id"] for span in spans}
            assert ids == {f"chatcmpl-{n}" for n in range(3000)}
            assert tracing.dropped == 0
        finally:
            await tracing.aclose()


async def test_the_drains_run_on_the_event_loop_between_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No thread of tracing's own in the data plane (one completing and marshalling a drain's
    # records held the GIL for milliseconds against the request path), and a busy interval's
    # records are shipped in chunks, the loop running other callbacks in between.
    import dataplane.observability.tracing as tracing_module

    _clear_otel(monkeypatch)
    monkeypatch.setattr(tracing_module, "_DRAIN_INTERVAL_S", 0.05)
    with grpc_receiver() as (url, _received):
        _spans_only_to(monkeypatch, url)
        before = {thread.name for thread in threading.enumerate()}
        tracing = Tracing.from_environment()
        assert tracing is not None
        try:
            tracing.start()
            tracing.start()  # idempotent
            assert {thread.name for thread in threading.enumerate()} == before
            count = 5 * tracing_module._DRAIN_CHUNK + 7
            for n in range(count):
                tracing._measured.append(
                    ("chat", "openai", "m", "m", "chat", "", 200, n + 1, None, None, False)
                )
            shipped: list[int] = []
            send = tracing._process.send  # type: ignore[union-attr]

            def counting(message: bytes, requests: int) -> None:
                shipped.append(requests)
                send(message, requests)

            monkeypatch.setattr(tracing._process, "send", counting)
            # Other callbacks run while the drain goes on: it never holds the loop for all.
            seen = set()
            deadline = time.monotonic() + 10
            while sum(shipped) < count and time.monotonic() < deadline:
                seen.add(sum(shipped))
                await asyncio.sleep(0)
            assert sum(shipped) == count
            assert max(shipped) <= tracing_module._DRAIN_CHUNK and len(shipped) >= 6
            # This coroutine ran between the chunks: it saw the drain part done.
            assert {n * tracing_module._DRAIN_CHUNK for n in range(1, 5)} <= seen
            assert tracing.force_flush()
        finally:
            await tracing.aclose()
    assert tracing.dropped == 0


def test_dropped_requests_are_a_prometheus_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The exporter process stalls (SIGSTOP) and the data plane's buffer for it is small: the
    # requests beyond it are dropped, and /metrics counts them as the Tracing does.
    from prometheus_client.parser import text_string_to_metric_families

    from dataplane.observability.metrics import DataPlaneMetrics
    from dataplane.observability.otel_process import ExporterProcess

    def dropped_sample(metrics: DataPlaneMetrics) -> list[float]:
        return [
            s.value
            for family in text_string_to_metric_families(metrics.exposition().decode())
            for s in family.samples
            if s.name == "meterline_dataplane_otel_dropped_total"
        ]

    _clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    metrics = DataPlaneMetrics()
    assert dropped_sample(metrics) == []  # not configured: no such series
    process = ExporterProcess(max_buffered=64 * 1024)
    tracing = Tracing(sampler=None, metrics=True, process=process)
    metrics.otel_dropped = lambda: tracing.dropped
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        assert dropped_sample(metrics) == [0.0]
        measure = ("chat", "openai", "gpt-4o", "gpt-4o", "chat", "", 200, 1, None, None, False)
        for _ in range(40):  # far more than the pipe and the 64 KiB bound hold
            tracing._measured.extend((*measure[:7], n, *measure[8:]) for n in range(1000))
            while tracing._drain():
                pass
        assert tracing.dropped > 0
        assert dropped_sample(metrics) == [float(tracing.dropped)]
    finally:
        os.kill(pid, signal.SIGCONT)
        tracing.shutdown()


def test_workers_dropped_requests_add_up_on_any_workers_metrics(tmp_path: Path) -> None:
    # --workers N: each worker writes its count to prometheus_client's multiprocess files, and
    # any worker's /metrics shows their sum (a forked worker here, as the CLI forks them).
    code = (
        "import os, sys\n"
        "from dataplane.observability.metrics import SharedDataPlaneMetrics\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    worker = SharedDataPlaneMetrics()\n"
        "    worker.otel_dropped = lambda: 3\n"
        "    worker.flush()\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "metrics = SharedDataPlaneMetrics()\n"
        "metrics.otel_dropped = lambda: 4\n"
        "sys.stdout.write(metrics.exposition().decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "meterline_dataplane_otel_dropped_total 7.0" in out.stdout
    # Without tracing in any worker, no such series.
    empty = tmp_path / "none"
    empty.mkdir()
    code = (
        "import sys\n"
        "from dataplane.observability.metrics import SharedDataPlaneMetrics\n"
        "sys.stdout.write(SharedDataPlaneMetrics().exposition().decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PROMETHEUS_MULTIPROC_DIR": str(empty)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "otel_dropped" not in out.stdout
