"""Config sync and usage ingestion, seen from a data plane's side of the wire."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from controlplane.configsync import registry
from meterline.admin.v1 import gateway_pb2, usage_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def llm_event(
    id: str,
    *,
    at: datetime,
    tokens: int,
    token_type: int,
    subject: str = "acme-corp",
    status: int = 200,
) -> dp_usage_pb2.UsageEvent:
    return dp_usage_pb2.UsageEvent(
        id=id,
        source="dp-test",
        type="llm.tokens",
        subject=subject,
        time=_ts(at),
        llm_tokens=dp_usage_pb2.LlmTokens(
            provider="openai",
            model="gpt-4o-mini",
            token_type=token_type,
            tokens=tokens,
            status_code=status,
            route="chat",
            request_id=id.split(":")[0],
        ),
    )


async def send_batches(
    harness, batches: list[dp_usage_pb2.UsageBatch]
) -> list[dp_usage_pb2.UsageAck]:
    call = harness.usage_stream.StreamUsage()
    acks = []
    for batch in batches:
        await call.write(batch)
        acks.append(await call.read())
    await call.done_writing()
    return acks


async def test_a_batch_sent_twice_is_stored_once(harness) -> None:
    at = harness.clock.now()
    batch = dp_usage_pb2.UsageBatch(
        batch_id="b1",
        events=[
            llm_event("r1:input", at=at, tokens=11, token_type=dp_usage_pb2.TOKEN_TYPE_INPUT),
            llm_event("r1:output", at=at, tokens=7, token_type=dp_usage_pb2.TOKEN_TYPE_OUTPUT),
        ],
    )
    first, second = await send_batches(harness, [batch, batch])
    assert (first.batch_id, first.accepted_count, first.duplicate_count) == ("b1", 2, 0)
    assert (second.batch_id, second.accepted_count, second.duplicate_count) == ("b1", 0, 2)
    # A new stream (as after a reconnect) resending the batch changes nothing either.
    (third,) = await send_batches(harness, [batch])
    assert (third.accepted_count, third.duplicate_count) == (0, 2)
    stored = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    assert sorted((e.id, e.value) for e in stored.usage_events) == [
        ("r1:input", 11),
        ("r1:output", 7),
    ]


async def test_a_bad_event_rejects_the_batch_and_stores_nothing(harness) -> None:
    at = harness.clock.now()
    good = llm_event("r2:input", at=at, tokens=5, token_type=dp_usage_pb2.TOKEN_TYPE_INPUT)
    bad = llm_event("r2:output", at=at, tokens=-1, token_type=dp_usage_pb2.TOKEN_TYPE_OUTPUT)
    call = harness.usage_stream.StreamUsage()
    await call.write(dp_usage_pb2.UsageBatch(batch_id="b2", events=[good, bad]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "r2:output" in err.value.details()
    stored = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    assert list(stored.usage_events) == []


async def test_config_stream_pushes_on_connect_and_on_change_and_records_acks(
    harness, walkthrough
) -> None:
    call = harness.config_stream.StreamConfig()
    await call.write(
        config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-1", hostname="h", version="0.1.0"))
    )
    empty = await asyncio.wait_for(call.read(), 5)
    assert empty.version_info and empty.nonce
    assert list(empty.snapshot.consumers) == []
    await call.write(
        config_pb2.ConfigRequest(version_info=empty.version_info, response_nonce=empty.nonce)
    )

    applied = await harness.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=walkthrough)
    )
    pushed = await asyncio.wait_for(call.read(), 5)
    assert pushed.version_info == applied.config_version != empty.version_info
    assert pushed.nonce != empty.nonce
    assert [c.username for c in pushed.snapshot.consumers] == ["acme-corp"]
    # Keys travel hashed only.
    assert "acme-secret-key" not in str(pushed.snapshot)
    assert pushed.snapshot.consumers[0].key_hashes[0].startswith("sha256:")

    # NACK: the control plane keeps serving, records the error.
    await call.write(
        config_pb2.ConfigRequest(
            version_info=empty.version_info,
            response_nonce=pushed.nonce,
            error_detail=config_pb2.ErrorDetail(code=3, message="cannot apply"),
        )
    )
    with pytest.raises(asyncio.TimeoutError):
        # No new push without a change.
        await asyncio.wait_for(call.read(), 1)
    with harness.cp.db.begin() as conn:
        (node,) = registry.list_dataplanes(conn)
    assert (node["node_id"], node["sync_status"], node["error"]) == (
        "dp-1",
        "nacked",
        "cannot apply",
    )
    assert node["config_version"] == empty.version_info
    call.cancel()


async def test_a_node_that_holds_the_current_version_gets_no_push(harness, walkthrough) -> None:
    applied = await harness.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=walkthrough)
    )
    call = harness.config_stream.StreamConfig()
    await call.write(
        config_pb2.ConfigRequest(
            node=config_pb2.Node(id="dp-2"), version_info=applied.config_version
        )
    )
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(call.read(), 1.5)
    call.cancel()


async def test_a_snapshot_built_during_a_store_is_sent_again_once_a_build_counts_it(
    harness, walkthrough
) -> None:
    hub = harness.cp.hub
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-1")))
    empty = await asyncio.wait_for(call.read(), 5)
    # Given a usage store in flight (begun, not ACKed) while a new config is built and pushed
    hub.store_begun()
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    loose = await asyncio.wait_for(call.read(), 5)
    assert loose.version_info != empty.version_info
    # When the store is ACKed and the balances are rebuilt (the same content: it moved none)
    sequence = hub.mark_stored()
    hub.store_ended()
    await hub.usage_stored()
    # Then the same version is sent again, saying it holds that store (the data plane stops
    # counting its usage locally, which the first one may already have held)
    again = await asyncio.wait_for(call.read(), 5)
    assert again.version_info == loose.version_info
    assert (loose.usage_sequence, again.usage_sequence) == (sequence - 1, sequence)
    # and not again once the last one sent was exact.
    hub.store_begun()
    hub.mark_stored()
    hub.store_ended()
    await hub.usage_stored()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(call.read(), 1)
    call.cancel()


async def test_first_request_without_node_is_rejected(harness) -> None:
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(version_info=""))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in err.value.details()


async def test_invoice_preview_counts_only_billable_usage_inside_the_subscription(
    harness, walkthrough
) -> None:
    from meterline.admin.v1 import billing_pb2

    # Given usage before the subscription starts...
    before = harness.clock.now() - timedelta(hours=1)
    await send_batches(
        harness,
        [
            dp_usage_pb2.UsageBatch(
                batch_id="early",
                events=[
                    llm_event(
                        "e0:input", at=before, tokens=1000, token_type=dp_usage_pb2.TOKEN_TYPE_INPUT
                    )
                ],
            )
        ],
    )
    # ...a subscription starting now (the frozen clock)...
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    # ...then billable input, output, and a failed request.
    t = harness.clock.now() + timedelta(minutes=5)
    input_ = dp_usage_pb2.TOKEN_TYPE_INPUT
    output = dp_usage_pb2.TOKEN_TYPE_OUTPUT
    events = [
        llm_event("a:input", at=t, tokens=13, token_type=input_),
        llm_event("a:output", at=t, tokens=40, token_type=output),
        llm_event("b:input", at=t, tokens=29, token_type=input_),
        llm_event("b:output", at=t, tokens=3, token_type=output),
        llm_event("c:input", at=t, tokens=500, token_type=input_, status=500),
        llm_event("d:input", at=t, tokens=77, token_type=input_, subject="someone-else"),
    ]
    await send_batches(harness, [dp_usage_pb2.UsageBatch(batch_id="late", events=events)])
    harness.clock.set(t + timedelta(minutes=1))

    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    assert [(ln.feature, ln.quantity, ln.unit_price, ln.amount) for ln in invoice.lines] == [
        ("ai-token", "42", "1", "42.00")
    ]
    assert invoice.total == "42.00"
    assert invoice.currency == "USD"
