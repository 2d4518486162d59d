"""Quantities are exact integers or Decimals end to end, and one event's size is bounded:
ingestion (data-plane stream and IngestEvents), rollups on SQLite and PostgreSQL, rating,
invoice lines and usage queries."""

from __future__ import annotations

import json
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select

from controlplane.storage import schema as s
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, gateway_pb2, usage_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

from .conftest import T0, Harness
from .test_dataplane_streams import llm_event, send_batches

BIG = 2**63 - 1


async def test_the_stream_refuses_an_event_above_10_to_the_12_tokens(harness: Harness) -> None:
    at = harness.clock.now()
    at_bound = llm_event("r1:input", at=at, tokens=10**12, token_type=dp_usage_pb2.TOKEN_TYPE_INPUT)
    (ack,) = await send_batches(
        harness, [dp_usage_pb2.UsageBatch(batch_id="b1", events=[at_bound])]
    )
    assert ack.accepted_count == 1

    over = llm_event("r2:input", at=at, tokens=BIG, token_type=dp_usage_pb2.TOKEN_TYPE_INPUT)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await send_batches(harness, [dp_usage_pb2.UsageBatch(batch_id="b2", events=[over])])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tokens must be at most 10^12 per event" in (error.value.details() or "")
    stored = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    assert [(e.id, e.value) for e in stored.usage_events] == [("r1:input", 10**12)]


def store(harness: Harness, *events: UsageEvent) -> None:
    with harness.cp.db.begin_write() as conn:
        usage_storage.insert_events(conn, list(events), ingest_time=events[0].time)


def event(id: str, tokens: int, *, minutes: int) -> UsageEvent:
    return UsageEvent(
        id=id,
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=T0 + timedelta(hours=1, minutes=minutes),
        provider="openai",
        model="gpt-4o-mini",
        token_type=TokenType.INPUT,
        tokens=tokens,
        status_code=200,
        route="chat",
    )


@pytest.mark.parametrize("batches", ["one-batch", "two-batches"])
async def test_token_sums_past_2_to_the_63_stay_exact_in_rollups_lines_and_queries(
    harness: Harness, walkthrough: str, batches: str
) -> None:
    # Given: the walkthrough plan (1 USD per input token); usage stored below the API's bound
    # (as an older data plane or a migration could), of two events of 2^63-1 in one hour
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    first, second = event("e1", BIG, minutes=5), event("e2", BIG, minutes=10)
    if batches == "one-batch":
        store(harness, first, second)
    else:
        store(harness, first)
        store(harness, second)
    # (and a third, small one, in the same hour: added on top of the big row)
    store(harness, event("e3", 3, minutes=20))
    exact = 2 * BIG + 3
    harness.clock.set(T0 + timedelta(hours=5))

    # Then: the hour's rollup holds the exact integer, not 1.84467440737096e+19
    with harness.cp.db.begin() as conn:
        values = conn.execute(
            select(s.usage_rollups.c.value).where(s.usage_rollups.c.meter == "llm_tokens")
        ).scalars()
        assert sum(int(v) for v in values) == exact
    # And the invoice line prices exactly that many tokens
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    (line,) = [line for line in invoice.lines if line.quantity != "1"]
    assert line.quantity == str(exact)
    assert line.amount == f"{exact}.00"
    # And the usage query answers it too, over whole hours and over a cut one
    for start in (T0, T0 + timedelta(hours=1, minutes=7)):
        request = usage_pb2.QueryMeterRequest(meter="llm_tokens")
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(T0 + timedelta(hours=5))
        (row,) = (await harness.usage.QueryMeter(request)).rows
        assert row.value == str(exact if start == T0 else BIG + 3)


def cloudevent(id: str, units: str) -> str:
    # The value written into the JSON text as given (a number, not a string).
    body = json.dumps(
        {
            "specversion": "1.0",
            "id": id,
            "source": "app",
            "type": "api.request",
            "subject": "acme",
            "time": (T0 + timedelta(minutes=5)).isoformat(),
            "data": {"units": 0},
        }
    )
    return body.replace('"units": 0', f'"units": {units}')


async def test_ingest_events_reads_long_numbers_exactly_and_refuses_oversized_ones(
    harness: Harness,
) -> None:
    await harness.usage.CreateMeter(
        usage_pb2.CreateMeterRequest(
            meter=usage_pb2.UsageMeter(
                key="api_calls",
                event_type="api.request",
                aggregation=usage_pb2.USAGE_METER_AGGREGATION_SUM,
                value_property="$.units",
            )
        )
    )
    result = await harness.usage.IngestEvents(
        usage_pb2.IngestEventsRequest(
            events_json=[
                # 24 significant digits: a float would keep 17
                cloudevent("a", "999999999999999.123456789"),
                cloudevent("b", "0.1"),
                cloudevent("c", "18446744073709551616"),
                cloudevent("d", "1e16"),
                cloudevent("g", "1e400"),
                cloudevent("e", "0.0000000001"),
                cloudevent("f", "3"),
            ]
        )
    )
    assert result.accepted == 3
    reasons = {r.id: r.reason for r in result.rejected}
    # (1e400 is not even JSON to orjson: refused at its position)
    assert sorted(r.index for r in result.rejected) == [2, 3, 4, 5]
    assert set(reasons) == {"c", "d", "e", ""}
    assert "at most 10^15" in reasons["c"] and "at most 10^15" in reasons["d"]
    assert "at most 9 decimal places" in reasons["e"]

    # The sum is exact on the raw events (the event's own hour) and on rollups alike.
    harness.clock.set(T0 + timedelta(hours=3))
    for start in (T0 + timedelta(minutes=1), T0 - timedelta(hours=1)):
        request = usage_pb2.QueryMeterRequest(meter="api_calls")
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(T0 + timedelta(hours=3))
        (row,) = (await harness.usage.QueryMeter(request)).rows
        assert row.value == "1000000000000002.223456789"
