"""Admin UsageService: operator meters, CloudEvents ingestion, stored events, meter queries."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from sqlalchemy import Connection

from controlplane.api import convert
from controlplane.api.convert_usage import (
    meter_from_proto,
    meter_to_proto,
)
from controlplane.api.operator.admin import Ctx, _Base
from controlplane.api.operator.paging import checked_page_size, decode_offset, encode_offset, page
from controlplane.errors import InvalidArgument
from controlplane.tracing import span
from controlplane.usage import meter_storage, query
from controlplane.usage import storage as usage
from controlplane.usage.aggregate import WindowSize
from controlplane.usage.ingest import MAX_BATCH, NotJson, ingest_events
from controlplane.usage.meters import LLM_TOKENS, loads_exact
from meterline.admin.v1 import usage_pb2, usage_pb2_grpc

_WINDOWS = {
    usage_pb2.WINDOW_SIZE_UNSPECIFIED: None,
    usage_pb2.WINDOW_SIZE_MINUTE: WindowSize.MINUTE,
    usage_pb2.WINDOW_SIZE_HOUR: WindowSize.HOUR,
    usage_pb2.WINDOW_SIZE_DAY: WindowSize.DAY,
}

# The built-in meter as the API shows it.
LLM_TOKENS_METER = usage_pb2.UsageMeter(
    name=f"meters/{LLM_TOKENS}",
    key=LLM_TOKENS,
    description="Tokens of every gateway request (built in)",
    event_type="llm.tokens",
    aggregation=usage_pb2.USAGE_METER_AGGREGATION_SUM,
    value_property="$.tokens",
    group_by={d: f"$.{d}" for d in query.LLM_DIMENSIONS},
)


class UsageQueryServicer(_Base, usage_pb2_grpc.UsageServiceServicer):
    async def ListUsageEvents(
        self, request: usage_pb2.ListUsageEventsRequest, context: Ctx
    ) -> usage_pb2.ListUsageEventsResponse:
        # Events are fetched one page (+1 row) at a time, never all at once.
        size = checked_page_size(request.page_size)
        offset = decode_offset(request.page_token)
        order = " ".join(request.order_by.split()).lower()
        if order not in ("", "time", "time desc"):
            raise InvalidArgument(f"order_by must be time or time desc, got {request.order_by!r}")
        rows = await self._tx(
            lambda c: usage.list_events(
                c,
                subject=request.subject or None,
                limit=size + 1,
                offset=offset,
                newest_first=order == "time desc",
            )
        )
        token = encode_offset(offset + size) if len(rows) > size else ""
        return usage_pb2.ListUsageEventsResponse(
            usage_events=[convert.usage_event_to_admin_proto(e) for e in rows[:size]],
            next_page_token=token,
        )

    async def QueryMeter(
        self, request: usage_pb2.QueryMeterRequest, context: Ctx
    ) -> usage_pb2.QueryMeterResponse:
        if not request.meter:
            raise InvalidArgument("meter is required")
        if request.window_size not in _WINDOWS:
            raise InvalidArgument(f"unknown window_size {request.window_size}")
        start = (
            convert.from_timestamp(request.start_time) if request.HasField("start_time") else None
        )
        end = convert.from_timestamp(request.end_time) if request.HasField("end_time") else None
        rows = await self._tx(
            lambda c: query.query(
                c,
                meter=request.meter,
                subjects=list(request.subjects),
                filters=dict(request.filters),
                group_by=list(request.group_by),
                window=_WINDOWS[request.window_size],
                start=start,
                end=end,
            )
        )
        return usage_pb2.QueryMeterResponse(
            rows=[
                usage_pb2.MeterRow(
                    group=dict(row.group),
                    value=str(row.value),
                    window_start=convert.to_timestamp(row.window_start),
                    window_end=convert.to_timestamp(row.window_end),
                    event_count=row.event_count,
                )
                for row in rows
            ]
        )

    async def CreateMeter(
        self, request: usage_pb2.CreateMeterRequest, context: Ctx
    ) -> usage_pb2.UsageMeter:
        meter = meter_from_proto(request.meter)
        now = self._clock.now()
        created = await self._tx(lambda c: meter_storage.create_meter(c, meter, now=now))
        return meter_to_proto(created)

    async def GetMeter(
        self, request: usage_pb2.GetMeterRequest, context: Ctx
    ) -> usage_pb2.UsageMeter:
        key = convert.resource_id(request.name, "meters")
        if key == LLM_TOKENS:
            return LLM_TOKENS_METER
        return meter_to_proto(await self._tx(lambda c: meter_storage.get_meter(c, key)))

    async def ListMeters(
        self, request: usage_pb2.ListUsageMetersRequest, context: Ctx
    ) -> usage_pb2.ListUsageMetersResponse:
        meters = [LLM_TOKENS_METER, *map(meter_to_proto, await self._tx(meter_storage.list_meters))]
        chunk, token = page(meters, page_size=request.page_size, page_token=request.page_token)
        return usage_pb2.ListUsageMetersResponse(meters=chunk, next_page_token=token)

    async def DeleteMeter(
        self, request: usage_pb2.DeleteMeterRequest, context: Ctx
    ) -> empty_pb2.Empty:
        key = convert.resource_id(request.name, "meters")
        await self._tx(lambda c: meter_storage.delete_meter(c, key))
        return empty_pb2.Empty()

    async def IngestEvents(
        self, request: usage_pb2.IngestEventsRequest, context: Ctx
    ) -> usage_pb2.IngestEventsResponse:
        if len(request.events_json) > MAX_BATCH:
            raise InvalidArgument(
                f"at most {MAX_BATCH} events per request, got {len(request.events_json)}"
            )
        objects: list[Any] = []
        for text in request.events_json:
            try:
                objects.append(loads_exact(text))
            except ValueError as error:  # orjson.JSONDecodeError and json's are ValueErrors
                # Kept in place so positions stay aligned; parse_cloudevent rejects it.
                objects.append(NotJson(str(error)))
        now = self._clock.now()

        def ingest(conn: Connection) -> usage_pb2.IngestEventsResponse:
            with span("usage.ingest_batch") as current:
                result = ingest_events(conn, objects, now=now)
                current.set_attribute("meterline.usage.events", len(objects))
                current.set_attribute("meterline.usage.accepted", result.accepted)
                current.set_attribute("meterline.usage.duplicates", result.duplicates)
                current.set_attribute("meterline.usage.rejected", len(result.rejected))
            return usage_pb2.IngestEventsResponse(
                accepted=result.accepted,
                duplicates=result.duplicates,
                rejected=[
                    usage_pb2.RejectedEvent(
                        index=r.index, id=r.id, source=r.source, reason=r.reason
                    )
                    for r in result.rejected
                ],
            )

        return await self._tx(ingest)
