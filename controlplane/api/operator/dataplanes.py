"""The data-plane registry API (admin ``DataPlaneService``): list and get data planes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from controlplane.api.convert_dataplanes import NAME_PREFIX, to_proto_dataplane
from controlplane.api.operator.paging import page
from controlplane.clock import Clock, SystemClock
from controlplane.configsync import registry
from controlplane.configsync.registry import DataPlaneRecord
from controlplane.errors import InvalidArgument, NotFound
from controlplane.storage.db import Database
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc

if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext


class DataPlaneServicer(dataplanes_pb2_grpc.DataPlaneServiceServicer):
    """Reads the registry the config streams keep up to date."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock | None = None,
        stale_after: timedelta = registry.STALE_AFTER,
    ) -> None:
        self._db = db
        self._clock = clock or SystemClock()
        self._stale_after = stale_after

    def _shown(self, record: DataPlaneRecord) -> DataPlaneRecord:
        return registry.effective(record, now=self._clock.now(), stale_after=self._stale_after)

    def _list(self) -> list[DataPlaneRecord]:
        with self._db.begin() as conn:
            return [self._shown(r) for r in registry.list_records(conn)]

    def _get(self, node_id: str) -> DataPlaneRecord | None:
        with self._db.begin() as conn:
            record = registry.get_record(conn, node_id)
        return self._shown(record) if record is not None else None

    async def ListDataPlanes(
        self, request: dataplanes_pb2.ListDataPlanesRequest, context: Ctx
    ) -> dataplanes_pb2.ListDataPlanesResponse:
        # A registry holds one row per data plane: small enough to page in memory.
        records = await asyncio.to_thread(self._list)
        items, token = page(records, page_size=request.page_size, page_token=request.page_token)
        return dataplanes_pb2.ListDataPlanesResponse(
            data_planes=[to_proto_dataplane(r) for r in items], next_page_token=token
        )

    async def GetDataPlane(
        self, request: dataplanes_pb2.GetDataPlaneRequest, context: Ctx
    ) -> dataplanes_pb2.DataPlane:
        node_id = request.name.removeprefix(NAME_PREFIX)
        if not request.name.startswith(NAME_PREFIX) or not node_id:
            raise InvalidArgument('name must be "dataplanes/{node_id}"')
        record = await asyncio.to_thread(self._get, node_id)
        if record is None:
            raise NotFound(f"data plane {request.name} not found")
        return to_proto_dataplane(record)
