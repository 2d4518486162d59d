"""The control plane's /metrics (--metrics-listen): counters move as a data plane syncs and
streams usage, and every RPC is counted by method and code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import httpx
import pytest
from integration.controlplane.conftest import T0, WALKTHROUGH
from integration.controlplane.test_dataplane_streams import llm_event
from prometheus_client.parser import text_string_to_metric_families

from controlplane.clock import FrozenClock
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from meterline.admin.v1 import customers_pb2, customers_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2
from meterline.dataplane.v1 import usage_pb2_grpc as dp_usage_pb2_grpc


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


class Scraper:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    async def text(self) -> str:
        response = await asyncio.to_thread(httpx.get, self.url)
        assert response.status_code == 200
        return response.text

    async def wait_for(self, name: str, value: float, **labels: str) -> str:
        """Scrape until the sample has ``value`` (bounded: 5 s)."""
        for _ in range(100):
            text = await self.text()
            if sample(text, name, **labels) == value:
                return text
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name}{labels} never became {value}: {sample(text, name, **labels)}")


@pytest.fixture
async def cp(migrated_db_url: str) -> AsyncIterator[ControlPlane]:
    db = Database.connect(migrated_db_url)
    control_plane = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=FrozenClock(T0),
        poll_seconds=0.5,
        metrics_listen="127.0.0.1:0",
    )
    await control_plane.start()
    try:
        yield control_plane
    finally:
        await control_plane.stop(0)
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()


async def test_metrics_follow_config_sync_usage_and_rpcs(cp: ControlPlane) -> None:
    scraper = Scraper(cp.metrics_port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.port}") as channel:
        # Given a gateway config, applied through the admin API (one OK call) ...
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        await gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=WALKTHROUGH))
        # ... and a call that fails (NOT_FOUND is counted with its code).
        customers = customers_pb2_grpc.CustomerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await customers.GetCustomer(customers_pb2.GetCustomerRequest(name="customers/nope"))
        text = await scraper.text()
        admin = "meterline.admin.v1"
        assert (
            sample(
                text,
                "meterline_controlplane_grpc_requests_total",
                service=f"{admin}.GatewayService",
                method="ApplyConfig",
                code="OK",
            )
            == 1
        )
        failed = {
            k: v
            for k, v in (
                (s.labels["code"], s.value)
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "meterline_controlplane_grpc_requests_total"
                and s.labels.get("method") == "GetCustomer"
            )
        }
        assert failed == {"NOT_FOUND": 1.0}, failed
        assert (
            sample(
                text,
                "meterline_controlplane_grpc_request_duration_seconds_count",
                method="ApplyConfig",
            )
            == 1
        )

        # When a data plane connects: one stream, one snapshot pushed; it ACKs, then NACKs.
        stream = config_pb2_grpc.ConfigServiceStub(channel).StreamConfig()
        await stream.write(
            config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-m", version="0.1.0"))
        )
        response = await stream.read()
        await scraper.wait_for("meterline_controlplane_dataplane_streams", 1)
        text = await scraper.text()
        assert sample(text, "meterline_controlplane_snapshot_pushes_total") == 1
        await stream.write(
            config_pb2.ConfigRequest(
                version_info=response.version_info, response_nonce=response.nonce
            )
        )
        await scraper.wait_for("meterline_controlplane_snapshot_answers_total", 1, result="ack")
        await stream.write(
            config_pb2.ConfigRequest(
                version_info=response.version_info,
                response_nonce=response.nonce,
                error_detail=config_pb2.ErrorDetail(code=3, message="cannot compile"),
            )
        )
        await scraper.wait_for("meterline_controlplane_snapshot_answers_total", 1, result="nack")

        # And usage arrives: 2 new events, then the same batch again (2 duplicates).
        usage = dp_usage_pb2_grpc.UsageServiceStub(channel).StreamUsage()
        batch = dp_usage_pb2.UsageBatch(
            batch_id="b1",
            events=[
                llm_event("r1:input", at=T0 + timedelta(minutes=1), tokens=10, token_type=1),
                llm_event("r1:output", at=T0 + timedelta(minutes=1), tokens=5, token_type=2),
            ],
        )
        for _ in range(2):
            await usage.write(batch)
            await usage.read()
        await usage.done_writing()
        text = await scraper.text()
        assert sample(text, "meterline_controlplane_usage_events_ingested_total") == 2
        assert sample(text, "meterline_controlplane_usage_events_duplicate_total") == 2
        assert sample(text, "meterline_controlplane_usage_ingest_batch_seconds_count") == 2

        # Then the data plane goes away: no stream left.
        stream.cancel()
        await scraper.wait_for("meterline_controlplane_dataplane_streams", 0)


async def test_metrics_listen_that_cannot_bind_is_a_clear_error(migrated_db_url: str) -> None:
    db = Database.connect(migrated_db_url)
    try:
        cp = ControlPlane(db=db, listen="127.0.0.1:0", metrics_listen="127.0.0.1:http")
        with pytest.raises(OSError, match="expected HOST:PORT"):
            await cp.start()
        await cp.stop(0)
    finally:
        db.dispose()
