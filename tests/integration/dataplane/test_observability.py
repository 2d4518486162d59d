"""/healthz, /readyz, /metrics and JSON log lines of an in-process data plane, driven by the
openai SDK in front of the fake provider."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from integration.dataplane.conftest import ACME_KEY, FakeUpstream, build_snapshot
from prometheus_client.parser import text_string_to_metric_families

from dataplane.http.server import ServerAddress, serve_http
from dataplane.observability.logs import JsonLineFormatter
from dataplane.observability.metrics import DataPlaneMetrics, Observability
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import prompt_tokens, reply_words
from meterline.dataplane.v1 import usage_pb2

MESSAGES = [{"role": "user", "content": "how many tokens are these words"}]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a scrape (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


@dataclass
class Observed:
    gateway: Gateway
    metrics: DataPlaneMetrics
    address: ServerAddress
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    async def scrape(self) -> str:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.address.url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text


@pytest.fixture
async def observed(fake: FakeUpstream) -> AsyncIterator[Observed]:
    events: list[usage_pb2.UsageEvent] = []
    metrics = DataPlaneMetrics()
    gateway = Gateway(node_id="dp-obs", usage_sink=events.append, metrics=metrics)
    app = Observability(gateway, metrics=metrics, ready=lambda: gateway.config is not None)
    try:
        async with serve_http(app) as address:
            yield Observed(gateway=gateway, metrics=metrics, address=address, events=events)
    finally:
        await gateway.aclose()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The data plane's log lines at DEBUG, as the JSON formatter writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("dataplane")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_health_and_readiness_flip_when_a_config_arrives(observed, fake) -> None:
    async with httpx.AsyncClient(base_url=observed.address.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        # Requests are refused (no config) but counted.
        assert (await client.post("/chat/chat/completions", json={})).status_code == 503

        observed.gateway.apply(compile_snapshot(build_snapshot(fake.chat_url), version="v1"))

        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        # Reserved paths take no other method, and are not routed (nor counted).
        assert (await client.post("/metrics")).status_code == 405
    text = await observed.scrape()
    assert sample(text, "meterline_dataplane_requests_total", route="(none)", status="503") == 1
    assert sample(text, "meterline_dataplane_errors_total", status="503") == 1
    assert sample(text, "meterline_dataplane_requests_total", status="405") == 0


async def test_a_request_moves_the_counters(observed, fake) -> None:
    observed.gateway.apply(compile_snapshot(build_snapshot(fake.chat_url), version="v1"))
    before = await observed.scrape()
    assert sample(before, "meterline_dataplane_requests_total", route="chat", status="200") == 0

    async with openai.AsyncOpenAI(
        base_url=f"{observed.address.url}/chat", api_key=ACME_KEY, max_retries=0
    ) as client:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        async for _ in stream:
            pass
    async with openai.AsyncOpenAI(
        base_url=f"{observed.address.url}/chat", api_key="wrong-key", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    text = await observed.scrape()
    assert sample(text, "meterline_dataplane_requests_total", route="chat", status="200") == 2
    assert sample(text, "meterline_dataplane_requests_total", route="chat", status="401") == 1
    assert sample(text, "meterline_dataplane_errors_total", status="401") == 1
    assert sample(text, "meterline_dataplane_request_duration_seconds_count", route="chat") == 3
    labels = {"route": "chat", "provider": "openai"}
    assert sample(text, "meterline_dataplane_upstream_duration_seconds_count", **labels) == 2
    assert sample(text, "meterline_dataplane_time_to_first_token_seconds_count", **labels) == 2
    # Tokens: exactly what the provider reported, twice (whole and streamed).
    tokens = {"provider": "openai", "model": "gpt-4o-mini"}
    assert sample(text, "meterline_dataplane_tokens_total", type="input", **tokens) == (
        2 * prompt_tokens(MESSAGES)
    )
    assert sample(text, "meterline_dataplane_tokens_total", type="output", **tokens) == (
        2 * len(reply_words(MESSAGES)[0])
    )
    billed = sum(e.llm_tokens.tokens for e in observed.events)
    assert billed == sum(
        sample(text, "meterline_dataplane_tokens_total", type=kind, **tokens)
        for kind in ("input", "output", "cached_input", "reasoning", "cache_write")
    )


async def test_config_and_usage_gauges(observed, fake) -> None:
    pending = [7]
    observed.metrics.usage_state = lambda: (pending[0], 4096)
    config = compile_snapshot(build_snapshot(fake.chat_url), version="v1")
    observed.gateway.apply(config)
    observed.metrics.config_applied(config.version)
    observed.metrics.snapshot_answered(True)
    observed.metrics.snapshot_answered(False)
    text = await observed.scrape()
    assert sample(text, "meterline_dataplane_config_info", version="v1") == 1
    assert 0 <= sample(text, "meterline_dataplane_config_age_seconds") < 60
    assert sample(text, "meterline_dataplane_config_snapshots_total", result="ack") == 1
    assert sample(text, "meterline_dataplane_config_snapshots_total", result="nack") == 1
    assert sample(text, "meterline_dataplane_usage_pending_events") == 7
    assert sample(text, "meterline_dataplane_usage_spool_bytes") == 4096

    # A new version replaces the old one's info series.
    newer = compile_snapshot(build_snapshot(fake.chat_url), version="v2")
    observed.metrics.config_applied(newer.version)
    text = await observed.scrape()
    assert sample(text, "meterline_dataplane_config_info", version="v2") == 1
    assert "v1" not in {
        s.labels.get("version")
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "meterline_dataplane_config_info"
    }


async def test_json_log_lines_carry_the_request_id_of_header_and_usage(
    observed, fake, json_log
) -> None:
    observed.gateway.apply(compile_snapshot(build_snapshot(fake.chat_url), version="v1"))
    async with openai.AsyncOpenAI(
        base_url=f"{observed.address.url}/chat", api_key=ACME_KEY, max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
    header_id = raw.headers["x-request-id"]

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    concerning = [line for line in lines if line.get("request_id") == header_id]
    assert concerning, lines
    for line in concerning:
        assert {"time", "level", "logger", "message"} <= set(line)
    assert {e.llm_tokens.request_id for e in observed.events} == {header_id}
    # Neither the prompt, nor the consumer's key, nor the provider's key is logged.
    text = json_log.getvalue()
    for secret in (ACME_KEY, "sk-provider-secret-xyz", MESSAGES[0]["content"]):
        assert secret not in text


async def test_an_app_that_fails_is_counted_as_500() -> None:
    metrics = DataPlaneMetrics()

    async def broken(scope, receive, send) -> None:
        scope["meterline.route"] = "chat"
        raise RuntimeError("a bug")

    app = Observability(broken, metrics=metrics, ready=lambda: True)
    with pytest.raises(RuntimeError):
        await app({"type": "http", "path": "/chat", "method": "POST"}, None, None)
    text = metrics.exposition().decode()
    assert sample(text, "meterline_dataplane_requests_total", route="chat", status="500") == 1
    assert sample(text, "meterline_dataplane_errors_total", status="500") == 1
