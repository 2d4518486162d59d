"""Control-plane spans exported to a real OTLP/gRPC receiver: every gRPC call (continuing the
caller's traceparent), usage batch ingestion, snapshot builds and pushes, the invoicing job and
each Stripe call (against the Stripe emulator over HTTP)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from integration.controlplane.conftest import T0
from integration.controlplane.test_dataplane_streams import llm_event

from controlplane import tracing
from controlplane.invoicing.lifecycle import InvoicingSettings, advance
from controlplane.stripe_sync import StripeSettings, new_client
from meterline.admin.v1 import customers_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2
from support.otlp_receiver import Received, attributes, grpc_receiver
from support.stripe_emulator import running_stripe_emulator

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Received]:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    with grpc_receiver() as (url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        provider = tracing.configure_from_environment()
        assert provider is not None
        try:
            yield received
        finally:
            tracing.shutdown()


def _flush() -> None:
    provider = tracing._installed["provider"]
    assert provider is not None
    assert provider.force_flush(10_000)


def _named(received: Received, name: str) -> list:
    return [span for span in received.spans() if span.name == name]


async def test_grpc_calls_ingestion_snapshots_and_invoicing_are_spans(
    collector: Received, harness
) -> None:
    # An operator call carrying a traceparent, and one that fails.
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="acme", name="Acme", subjects=["acme-corp"])
        ),
        metadata=(("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),),
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.customers.GetCustomer(customers_pb2.GetCustomerRequest(name="customers/x"))

    # A data plane connects (a snapshot built and pushed) and sends a usage batch.
    stream = harness.config_stream.StreamConfig()
    await stream.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-t", version="0")))
    response = await stream.read()
    usage = harness.usage_stream.StreamUsage()
    await usage.write(
        dp_usage_pb2.UsageBatch(
            batch_id="b1",
            events=[llm_event("r1:input", at=T0 + timedelta(minutes=1), tokens=10, token_type=1)],
        )
    )
    ack = await usage.read()
    await usage.done_writing()
    assert await usage.read() == grpc.aio.EOF  # the stream's handler has returned
    stream.cancel()
    # The invoicing job runs once.
    advance(harness.cp.db, now=T0 + timedelta(hours=1), settings=InvoicingSettings())
    _flush()

    (created,) = _named(collector, "meterline.admin.v1.CustomerService/CreateCustomer")
    assert created.kind == created.SPAN_KIND_SERVER
    assert created.trace_id.hex() == CLIENT_TRACE
    assert created.parent_span_id.hex() == CLIENT_SPAN
    assert attributes(created.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "meterline.admin.v1.CustomerService",
        "rpc.method": "CreateCustomer",
        "rpc.grpc.status_code": 0,
    }
    (missing,) = _named(collector, "meterline.admin.v1.CustomerService/GetCustomer")
    assert (
        attributes(missing.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    )
    assert missing.status.code == missing.status.STATUS_CODE_ERROR

    (push,) = _named(collector, "config.snapshot_push")
    assert attributes(push.attributes) == {
        "meterline.config.version": response.version_info,
        "meterline.node.id": "dp-t",
    }
    builds = _named(collector, "config.snapshot_build")
    assert response.version_info in {
        attributes(b.attributes)["meterline.config.version"] for b in builds
    }
    (batch,) = _named(collector, "usage.ingest_batch")
    assert attributes(batch.attributes) == {
        "meterline.usage.events": 1,
        "meterline.usage.accepted": ack.accepted_count,
        "meterline.usage.duplicates": 0,
    }
    assert ack.accepted_count == 1
    # The batch's span is a child of its stream's span.
    (usage_rpc,) = _named(collector, "meterline.dataplane.v1.UsageService/StreamUsage")
    assert batch.parent_span_id == usage_rpc.span_id
    (job,) = _named(collector, "invoicing.advance")
    customers = _named(collector, "invoicing.customer")
    assert {attributes(c.attributes)["meterline.customer"] for c in customers} == {"acme"}
    assert all(c.parent_span_id == job.span_id for c in customers)


def test_each_stripe_call_is_a_client_span(collector: Received) -> None:
    with running_stripe_emulator(api_key="sk_test_trace") as emulator:
        client = new_client(StripeSettings(api_key="sk_test_trace", api_base=emulator.url))
        customer = client.v1.customers.create(params={"name": "Acme"})
        client.v1.customers.retrieve(customer.id)
    _flush()
    spans = {span.name: span for span in collector.spans()}
    created = spans["stripe POST /v1/customers"]
    assert created.kind == created.SPAN_KIND_CLIENT
    assert attributes(created.attributes)["http.response.status_code"] == 200
    retrieved = spans[f"stripe GET /v1/customers/{customer.id}"]
    assert attributes(retrieved.attributes)["http.request.method"] == "GET"


def test_without_otel_variables_no_provider_and_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    assert tracing.configure_from_environment() is None
    assert not tracing.enabled()
    with tracing.span("anything") as span:
        assert not span.is_recording()
    assert tracing.traced_stripe_http_client() is None
    assert not [t for t in threading.enumerate() if t.name.startswith("OtelBatchSpanProcessor")]
