"""Fixtures for the data plane in front of the fake provider, in-process, on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import FakeProvider
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

ACME_KEY = "sk-meterline-acme-0001"
BETA_KEY = "sk-meterline-beta-0002"
PROVIDER_KEY = "sk-provider-secret-xyz"
ROUTE_MODEL = "gpt-4o-mini"


def build_snapshot(upstream_url: str, *, route_model: str = ROUTE_MODEL) -> snapshot_pb2.Snapshot:
    """A gateway with /chat (key-auth + ai-proxy) and /open (ai-proxy only)."""
    return snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc-ai", name="ai-service", url="http://ai.invalid")],
        routes=[
            snapshot_pb2.Route(id="r-chat", name="chat", service_id="svc-ai", paths=["/chat"]),
            snapshot_pb2.Route(id="r-open", name="open", service_id="svc-ai", paths=["/open"]),
        ],
        consumers=[
            snapshot_pb2.Consumer(
                id="c-acme", username="acme-corp", key_hashes=[hash_key(ACME_KEY)]
            ),
            snapshot_pb2.Consumer(
                id="c-beta", username="beta-inc", key_hashes=[hash_key(BETA_KEY)]
            ),
        ],
        plugins=[
            snapshot_pb2.Plugin(
                id="p-key-auth",
                name="key-auth",
                route_id="r-chat",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(key_names=["apikey"], key_in_bearer=True),
            ),
            snapshot_pb2.Plugin(
                id="p-ai-proxy",
                name="ai-proxy",
                service_id="svc-ai",
                enabled=True,
                ai_proxy=snapshot_pb2.AiProxyConfig(
                    route_type="llm/v1/chat",
                    auth=snapshot_pb2.AiProxyAuth(
                        header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
                    ),
                    model=snapshot_pb2.AiProxyModel(
                        provider="openai",
                        name=route_model,
                        options=snapshot_pb2.AiProxyModelOptions(upstream_url=upstream_url),
                    ),
                ),
            ),
        ],
    )


@dataclass
class FakeUpstream:
    """A running fake provider."""

    provider: FakeProvider
    address: ServerAddress

    @property
    def chat_url(self) -> str:
        return f"{self.address.url}/v1/chat/completions"


@dataclass
class RunningGateway:
    """A running in-process data plane and the usage events it produced."""

    gateway: Gateway
    address: ServerAddress
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)
    acme_key: str = ACME_KEY
    beta_key: str = BETA_KEY
    provider_key: str = PROVIDER_KEY
    route_model: str = ROUTE_MODEL

    @property
    def url(self) -> str:
        return self.address.url


@pytest.fixture
def snapshot_for() -> Callable[..., snapshot_pb2.Snapshot]:
    """The snapshot builder, for tests that compile their own variants."""
    return build_snapshot


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    provider = FakeProvider()
    async with serve_http(provider) as address:
        yield FakeUpstream(provider=provider, address=address)


@pytest.fixture
async def running(fake: FakeUpstream) -> AsyncIterator[RunningGateway]:
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    gateway.apply(compile_snapshot(build_snapshot(fake.chat_url), version="v1"))
    try:
        async with serve_http(gateway) as address:
            yield RunningGateway(gateway=gateway, address=address, events=events)
    finally:
        await gateway.aclose()
