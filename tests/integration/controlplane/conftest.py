"""An in-process control plane (real grpc.aio server, real database) and its stubs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest

from controlplane.clock import FrozenClock
from controlplane.configsync.validate import SnapshotValidator
from controlplane.gateway.secrets import SecretBox
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from meterline.admin.v1 import (
    billing_pb2_grpc,
    catalog_pb2_grpc,
    customers_pb2_grpc,
    gateway_pb2_grpc,
    usage_pb2_grpc,
)
from meterline.dataplane.v1 import config_pb2_grpc
from meterline.dataplane.v1 import usage_pb2_grpc as dp_usage_pb2_grpc

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

WALKTHROUGH = """\
_format_version: "3.0"
services:
  - name: ai-service
    url: http://127.0.0.1:9/
    routes:
      - name: chat
        paths: [/chat]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: Authorization, header_value: Bearer sk-test}
          model:
            provider: openai
            name: gpt-4o-mini
            options: {upstream_url: "http://127.0.0.1:9/v1/chat/completions"}
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
billing:
  features:
    - {key: ai-token, meter: llm_tokens, filters: {provider: openai, type: input}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: ai-token, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""


@pytest.fixture
def walkthrough() -> str:
    """The walkthrough document (gateway + billing)."""
    return WALKTHROUGH


@dataclass
class Harness:
    cp: ControlPlane
    clock: FrozenClock
    address: str
    gateway: gateway_pb2_grpc.GatewayServiceStub
    catalog: catalog_pb2_grpc.CatalogServiceStub
    customers: customers_pb2_grpc.CustomerServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    usage: usage_pb2_grpc.UsageServiceStub
    config_stream: config_pb2_grpc.ConfigServiceStub
    usage_stream: dp_usage_pb2_grpc.UsageServiceStub


@pytest.fixture
async def harness(migrated_db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(migrated_db_url) as running:
        yield running


@contextlib.asynccontextmanager
async def running_harness(
    db_url: str,
    *,
    secrets: SecretBox | None = None,
    validate_snapshot: SnapshotValidator | None = None,
) -> AsyncIterator[Harness]:
    """A started control plane on ``db_url`` (``secrets``: its provider-key box;
    ``validate_snapshot``: the compiler apply checks with, as ``meterline controlplane``
    injects it) and its stubs."""
    clock = FrozenClock(T0)
    db = Database.connect(db_url)
    cp = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=clock,
        poll_seconds=0.5,
        secrets=secrets,
        validate_snapshot=validate_snapshot,
    )
    port = await cp.start()
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        yield Harness(
            cp=cp,
            clock=clock,
            address=address,
            gateway=gateway_pb2_grpc.GatewayServiceStub(channel),
            catalog=catalog_pb2_grpc.CatalogServiceStub(channel),
            customers=customers_pb2_grpc.CustomerServiceStub(channel),
            billing=billing_pb2_grpc.BillingServiceStub(channel),
            usage=usage_pb2_grpc.UsageServiceStub(channel),
            config_stream=config_pb2_grpc.ConfigServiceStub(channel),
            usage_stream=dp_usage_pb2_grpc.UsageServiceStub(channel),
        )
    await cp.stop(0)
    # Database work still running in threads (a handler cancelled mid-query) must end before
    # the pool goes away, or its connection is garbage-collected open.
    await asyncio.get_running_loop().shutdown_default_executor()
    db.dispose()
