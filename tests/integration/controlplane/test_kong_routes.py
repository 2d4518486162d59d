"""Kong's route matching end to end: a decK file with a regex route and header/host routes ->
control plane -> config stream -> a data plane's own config client -> the openai SDK; and a
data plane that cannot compile one route (an older one beside a newer control plane) serves
the rest, answers 503 for it, and `meterline dataplanes list` names what it refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import openai
import pytest

from controlplane.cli.main import main
from dataplane.config.sync import ConfigClient
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_isolating
from dataplane.proxy.gateway import Gateway
from dataplane.proxy.runtime import RuntimeConfig
from dataplane.testing.fake_openai import FakeProvider
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc, gateway_pb2
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, snapshot_pb2

KEY = "acme-secret-key"
MESSAGES = [{"role": "user", "content": "which route am I on"}]

DOCUMENT = r"""
_format_version: "3.0"
services:
  - name: ai
    url: http://127.0.0.1:9/
    routes:
      - name: plain
        paths: [/ai]
        plugins:
          - {name: ai-proxy, config: {route_type: llm/v1/chat, auth: AUTH, model: MODEL_PLAIN}}
      - name: versioned
        paths: ["~/ai/v(?<version>\\d+)/"]
        regex_priority: 5
        plugins:
          - {name: ai-proxy, config: {route_type: llm/v1/chat, auth: AUTH, model: MODEL_REGEX}}
      - name: gold
        paths: [/ai]
        headers: {x-tier: [gold]}
        plugins:
          - {name: ai-proxy, config: {route_type: llm/v1/chat, auth: AUTH, model: MODEL_GOLD}}
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
"""


def _document(upstream: str) -> str:
    def model(name: str) -> str:
        return f"{{provider: openai, name: {name}, options: {{upstream_url: '{upstream}'}}}}"

    return (
        DOCUMENT.replace("AUTH", "{header_name: Authorization, header_value: Bearer sk-p}")
        .replace("MODEL_PLAIN", model("gpt-plain"))
        .replace("MODEL_REGEX", model("gpt-regex"))
        .replace("MODEL_GOLD", model("gpt-gold"))
    )


@asynccontextmanager
async def _data_plane(
    harness, node_id: str, compile=compile_isolating
) -> AsyncIterator[tuple[ServerAddress, ConfigClient[RuntimeConfig]]]:
    """A data plane syncing from the harness's control plane with its own config client."""
    gateway = Gateway(node_id=node_id, usage_sink=lambda event: None)
    async with grpc.aio.insecure_channel(harness.address) as channel:
        client: ConfigClient[RuntimeConfig] = ConfigClient(
            compile=compile,
            stub=config_pb2_grpc.ConfigServiceStub(channel),
            node=config_pb2.Node(id=node_id, hostname="edge"),
            apply=gateway.apply,
        )
        sync = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(client.wait_applied(), 10)
            async with serve_http(gateway) as address:
                yield address, client
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
            await gateway.aclose()


async def test_a_regex_route_applied_from_deck_serves_the_openai_sdk(harness) -> None:
    fake = FakeProvider()
    async with serve_http(fake) as upstream:
        response = await harness.gateway.ApplyConfig(
            gateway_pb2.ApplyConfigRequest(
                document=_document(f"{upstream.url}/v1/chat/completions")
            )
        )
        assert not [note for note in response.notes if "routes" in note]
        async with _data_plane(harness, "dp-routes") as (address, _):

            async def served(base: str, headers: dict[str, str] | None = None) -> str:
                async with openai.AsyncOpenAI(
                    base_url=f"{address.url}{base}",
                    api_key=KEY,
                    default_headers=headers,
                    max_retries=0,
                ) as client:
                    completion = await client.chat.completions.create(
                        model="client-model", messages=MESSAGES
                    )
                assert completion.usage is not None and completion.usage.total_tokens > 0
                return fake.requests[-1].body["model"]

            # A regex path (Kong's ~ and PCRE named group) before the shorter prefix route.
            assert await served("/ai/v1") == "gpt-regex"
            assert await served("/ai/v12") == "gpt-regex"
            # Not matching the regex: the prefix route, or the header route for its header.
            assert await served("/ai") == "gpt-plain"
            assert await served("/ai/vx") == "gpt-plain"
            assert await served("/ai", {"X-Tier": "Gold"}) == "gpt-gold"
            async with openai.AsyncOpenAI(
                base_url=f"{address.url}/elsewhere", api_key=KEY, max_retries=0
            ) as client:
                with pytest.raises(openai.NotFoundError) as missing:
                    await client.chat.completions.create(model="m", messages=MESSAGES)
            assert "no Route matched with those values" in str(missing.value)


def _older_data_plane(snapshot: snapshot_pb2.Snapshot, *, version: str) -> RuntimeConfig:
    """A data plane of an older version: it does not know the provider of route "gold"."""
    older = snapshot_pb2.Snapshot()
    older.CopyFrom(snapshot)
    gold = next(route.id for route in older.routes if route.name == "gold")
    for plugin in older.plugins:
        if plugin.route_id == gold:
            plugin.ai_proxy.model.provider = "provider-of-the-future"
    return compile_isolating(older, version=version)


async def test_an_older_data_plane_serves_what_it_can_and_is_listed_with_what_it_refused(
    harness, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeProvider()
    async with serve_http(fake) as upstream:
        await harness.gateway.ApplyConfig(
            gateway_pb2.ApplyConfigRequest(
                document=_document(f"{upstream.url}/v1/chat/completions")
            )
        )
        async with _data_plane(harness, "dp-old", _older_data_plane) as (address, client):
            async with openai.AsyncOpenAI(
                base_url=f"{address.url}/ai", api_key=KEY, max_retries=0
            ) as sdk:
                # The routes it compiled serve...
                completion = await sdk.chat.completions.create(model="m", messages=MESSAGES)
                assert completion.usage is not None
                # ...the one it did not answers 503, naming the route and why.
                with pytest.raises(openai.InternalServerError) as refused:
                    await sdk.chat.completions.create(
                        model="m", messages=MESSAGES, extra_headers={"x-tier": "gold"}
                    )
            assert refused.value.status_code == 503
            assert 'route "gold" is not served by this data plane' in str(refused.value)
            assert client.applied_versions and not client.rejected_versions

            # And the registry (`meterline dataplanes list`) names what was refused.
            async with grpc.aio.insecure_channel(harness.address) as channel:
                stub = dataplanes_pb2_grpc.DataPlaneServiceStub(channel)
                async with asyncio.timeout(5):
                    while True:
                        plane = await stub.GetDataPlane(
                            dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/dp-old")
                        )
                        if plane.sync_status == dataplanes_pb2.SYNC_STATUS_NACKED:
                            break
                        await asyncio.sleep(0.02)
            capsys.readouterr()
            code = await asyncio.to_thread(
                main, ["dataplanes", "list", "--json", "--cp", harness.address]
            )
            (listed,) = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (listed["node_id"], listed["status"]) == ("dp-old", "nacked")
    assert 'route "gold" is not served by this data plane' in listed["error"]
    assert plane.config_version == client.version
    assert plane.error.startswith(f"serving config version {client.version} except 1 refused: ")
    assert 'route "gold" is not served by this data plane: plugin ' in plane.error
    assert 'unknown provider "provider-of-the-future"' in plane.error
