"""The config client against a scripted control plane (a real in-process grpc.aio server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from cryptography.fernet import Fernet

from dataplane.config.cache import ConfigCache
from dataplane.config.sync import ConfigClient
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_isolating, compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.usage.backoff import Backoff
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, snapshot_pb2

_END = None


class ScriptedConfigService(config_pb2_grpc.ConfigServiceServicer):
    """Sends what the test puts in ``outbox`` (None ends the stream); queues what it gets."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[config_pb2.ConfigRequest] = asyncio.Queue()
        self.outbox: asyncio.Queue[config_pb2.ConfigResponse | None] = asyncio.Queue()

    async def StreamConfig(self, request_iterator, context):
        async def read() -> None:
            async for request in request_iterator:
                self.inbox.put_nowait(request)

        reader = asyncio.create_task(read())
        try:
            while (response := await self.outbox.get()) is not _END:
                yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@pytest.fixture
async def control_plane() -> AsyncIterator[tuple[ScriptedConfigService, str]]:
    service = ScriptedConfigService()
    server = grpc.aio.server()
    config_pb2_grpc.add_ConfigServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_ack_then_nack_keeps_serving_the_old_config(control_plane, fake, snapshot_for):
    service, target = control_plane
    gateway = Gateway(node_id="dp-1", usage_sink=lambda event: None)
    good = snapshot_for(fake.chat_url)
    bad = snapshot_pb2.Snapshot()
    bad.CopyFrom(good)
    bad.routes[0].service_id = "svc-missing"

    async with (
        grpc.aio.insecure_channel(target) as channel,
        serve_http(gateway) as address,
        httpx.AsyncClient(base_url=address.url) as http,
    ):
        client = ConfigClient(
            compile=compile_snapshot,
            stub=config_pb2_grpc.ConfigServiceStub(channel),
            node=config_pb2.Node(id="dp-1", hostname="host-a", version="0.1.0"),
            apply=gateway.apply,
            backoff=Backoff(initial=0.01, maximum=0.05),
        )
        sync = asyncio.create_task(client.run())
        try:
            # Given a data plane that announced itself and has no config yet
            hello = await service.inbox.get()
            assert hello.node == config_pb2.Node(id="dp-1", hostname="host-a", version="0.1.0")
            assert (hello.version_info, hello.response_nonce) == ("", "")
            assert (await http.post("/open/chat/completions", json={})).status_code == 503

            # When a good snapshot arrives, then it is ACKed and served
            await service.outbox.put(
                config_pb2.ConfigResponse(version_info="v1", nonce="n1", snapshot=good)
            )
            ack = await service.inbox.get()
            assert (ack.version_info, ack.response_nonce) == ("v1", "n1")
            assert not ack.HasField("error_detail")
            assert gateway.config is not None and gateway.config.version == "v1"
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            assert (await http.post("/open/chat/completions", json=body)).status_code == 200

            # When a bad snapshot arrives, then it is NACKed and the old config stays
            await service.outbox.put(
                config_pb2.ConfigResponse(version_info="v2", nonce="n2", snapshot=bad)
            )
            nack = await service.inbox.get()
            assert (nack.version_info, nack.response_nonce) == ("v1", "n2")
            assert nack.error_detail.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert 'unknown service_id "svc-missing"' in nack.error_detail.message
            assert gateway.config.version == "v1"
            assert (await http.post("/open/chat/completions", json=body)).status_code == 200
            assert client.applied_versions == ["v1"]
            assert client.rejected_versions == ["v2"]

            # When the stream ends, then the client reconnects and says what it holds
            await service.outbox.put(_END)
            again = await service.inbox.get()
            assert again.node.id == "dp-1"
            assert (again.version_info, again.response_nonce) == ("v1", "")
            assert (await http.post("/open/chat/completions", json=body)).status_code == 200
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
            await gateway.aclose()


async def test_first_snapshot_rejected_nacks_with_empty_version(control_plane):
    service, target = control_plane
    applied = []
    bad = snapshot_pb2.Snapshot(
        plugins=[snapshot_pb2.Plugin(id="p", name="rate-limiting", enabled=True)]
    )
    async with grpc.aio.insecure_channel(target) as channel:
        client = ConfigClient(
            compile=compile_snapshot,
            stub=config_pb2_grpc.ConfigServiceStub(channel),
            node=config_pb2.Node(id="dp-2"),
            apply=applied.append,
        )
        sync = asyncio.create_task(client.run())
        try:
            await service.inbox.get()
            await service.outbox.put(
                config_pb2.ConfigResponse(version_info="v9", nonce="n9", snapshot=bad)
            )
            nack = await service.inbox.get()
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
    assert (nack.version_info, nack.response_nonce) == ("", "n9")
    assert nack.error_detail.code == 3
    assert "rate-limiting" in nack.error_detail.message
    assert applied == []


async def test_a_restart_serves_the_cached_snapshot_and_reports_its_version(
    control_plane, fake, snapshot_for, tmp_path
):
    service, target = control_plane
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    cache = ConfigCache(tmp_path / "config")

    # Given a data plane that applied (and so cached) v1, then stopped
    async with grpc.aio.insecure_channel(target) as channel:
        first = ConfigClient(
            compile=compile_snapshot,
            stub=config_pb2_grpc.ConfigServiceStub(channel),
            node=config_pb2.Node(id="dp-3"),
            apply=lambda config: None,
            cache=cache,
        )
        assert not first.load_cached()
        sync = asyncio.create_task(first.run())
        try:
            await service.inbox.get()
            await service.outbox.put(
                config_pb2.ConfigResponse(
                    version_info="v1", nonce="n1", snapshot=snapshot_for(fake.chat_url)
                )
            )
            assert (await service.inbox.get()).version_info == "v1"
            # A NACKed snapshot never replaces the cache.
            await service.outbox.put(
                config_pb2.ConfigResponse(
                    version_info="v2",
                    nonce="n2",
                    snapshot=snapshot_pb2.Snapshot(
                        plugins=[snapshot_pb2.Plugin(id="p", name="nope", enabled=True)]
                    ),
                )
            )
            assert (await service.inbox.get()).error_detail.message
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
    assert cache.load().version_info == "v1"

    # When it starts again with no control plane reachable
    gateway = Gateway(node_id="dp-3", usage_sink=lambda event: None)
    async with (
        grpc.aio.insecure_channel("127.0.0.1:1") as dead,
        serve_http(gateway) as address,
        httpx.AsyncClient(base_url=address.url) as http,
    ):
        client = ConfigClient(
            compile=compile_snapshot,
            stub=config_pb2_grpc.ConfigServiceStub(dead),
            node=config_pb2.Node(id="dp-3"),
            apply=gateway.apply,
            cache=cache,
        )
        # Then it serves the cached config at once
        assert client.load_cached() and client.loaded_from_cache
        assert (await http.post("/open/chat/completions", json=body)).status_code == 200
        await gateway.aclose()

    # And its first request to a control plane names the cached version
    async with grpc.aio.insecure_channel(target) as channel:
        client = ConfigClient(
            compile=compile_snapshot,
            stub=config_pb2_grpc.ConfigServiceStub(channel),
            node=config_pb2.Node(id="dp-3"),
            apply=lambda config: None,
            cache=cache,
        )
        client.load_cached()
        sync = asyncio.create_task(client.run())
        try:
            hello = await service.inbox.get()
            assert (hello.node.id, hello.version_info) == ("dp-3", "v1")
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync


def test_a_cache_that_does_not_compile_is_ignored(tmp_path) -> None:
    cache = ConfigCache(tmp_path)
    bad = snapshot_pb2.Snapshot(plugins=[snapshot_pb2.Plugin(id="p", name="nope", enabled=True)])
    cache.save(config_pb2.ConfigResponse(version_info="v1", snapshot=bad))
    applied = []
    client = ConfigClient(
        compile=compile_snapshot,
        stub=None,
        node=config_pb2.Node(id="dp"),
        apply=applied.append,
        cache=cache,
    )
    assert not client.load_cached()
    assert (applied, client.version) == ([], "")
    # A cache encrypted with another key is ignored the same way.
    ConfigCache(tmp_path, key=Fernet.generate_key()).save(
        config_pb2.ConfigResponse(version_info="v2", snapshot=snapshot_pb2.Snapshot())
    )
    assert not client.load_cached()


async def test_a_route_it_cannot_compile_is_refused_alone_and_named_in_the_nack(
    control_plane, fake, snapshot_for, tmp_path
):
    service, target = control_plane
    gateway = Gateway(node_id="dp-4", usage_sink=lambda event: None)
    snapshot = snapshot_for(fake.chat_url)
    # The /open route gets its own ai-proxy with a provider this data plane lacks.
    own = snapshot.plugins.add()
    own.CopyFrom(snapshot.plugins[1])
    own.id, own.route_id, own.service_id = "p-future", "r-open", ""
    own.ai_proxy.model.provider = "provider-of-the-future"
    cache = ConfigCache(tmp_path / "config")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        grpc.aio.insecure_channel(target) as channel,
        serve_http(gateway) as address,
        httpx.AsyncClient(base_url=address.url) as http,
    ):
        client = ConfigClient(
            compile=compile_isolating,
            stub=config_pb2_grpc.ConfigServiceStub(channel),
            node=config_pb2.Node(id="dp-4"),
            apply=gateway.apply,
            cache=cache,
        )
        sync = asyncio.create_task(client.run())
        try:
            await service.inbox.get()
            await service.outbox.put(
                config_pb2.ConfigResponse(version_info="v1", nonce="n1", snapshot=snapshot)
            )
            answer = await service.inbox.get()
            # Then the snapshot is served in part: the answer holds the new version and says
            # what was refused (the control plane records it, `meterline dataplanes list`).
            assert (answer.version_info, answer.response_nonce) == ("v1", "n1")
            assert answer.error_detail.code == 3
            assert answer.error_detail.message.startswith(
                "serving config version v1 except 1 refused: "
                'route "open" is not served by this data plane: plugin "p-future": unknown '
                'provider "provider-of-the-future"'
            )
            chat = await http.post(
                "/chat/chat/completions", json=body, headers={"apikey": "sk-meterline-acme-0001"}
            )
            assert chat.status_code == 200
            refused = await http.post("/open/chat/completions", json=body)
            assert refused.status_code == 503
            assert refused.json()["error"]["message"].startswith('route "open" is not served')
            assert client.applied_versions == ["v1"] and client.rejected_versions == []
        finally:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
            await gateway.aclose()
    # What it serves is cached, for a restart without the control plane.
    assert cache.load().version_info == "v1"
