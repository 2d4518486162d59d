"""Snapshot builders for the data plane's unit tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dataplane.config.keys import hash_key
from meterline.dataplane.v1 import snapshot_pb2


def _valid_snapshot() -> snapshot_pb2.Snapshot:
    return snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s1", name="ai-service", url="http://ai.invalid")],
        routes=[
            snapshot_pb2.Route(id="r1", name="chat", service_id="s1", paths=["/chat"]),
            snapshot_pb2.Route(
                id="r2", name="admin", service_id="s1", paths=["/chat/admin"], methods=["GET"]
            ),
        ],
        consumers=[
            snapshot_pb2.Consumer(id="c1", username="acme-corp", key_hashes=[hash_key("k-acme")]),
            snapshot_pb2.Consumer(id="c2", username="beta-inc", key_hashes=[hash_key("k-beta")]),
        ],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(),
            ),
            snapshot_pb2.Plugin(
                id="ai",
                name="ai-proxy",
                service_id="s1",
                enabled=True,
                ai_proxy=snapshot_pb2.AiProxyConfig(
                    route_type="llm/v1/chat",
                    auth=snapshot_pb2.AiProxyAuth(
                        header_name="Authorization", header_value="Bearer sk-secret"
                    ),
                    model=snapshot_pb2.AiProxyModel(provider="openai", name="gpt-4o-mini"),
                ),
            ),
        ],
    )


@pytest.fixture
def valid_snapshot() -> snapshot_pb2.Snapshot:
    """A small snapshot that compiles: two routes, two consumers, global key-auth, ai-proxy."""
    return _valid_snapshot()


@pytest.fixture
def snapshot_factory() -> Callable[[], snapshot_pb2.Snapshot]:
    return _valid_snapshot
