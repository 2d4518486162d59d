"""Data-plane registry records to DataPlane messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from controlplane.api.convert import to_timestamp
from controlplane.configsync.registry import DataPlaneRecord, SyncStatus
from meterline.admin.v1 import dataplanes_pb2

if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


NAME_PREFIX = "dataplanes/"


SYNC_STATUSES = {
    SyncStatus.CONNECTED: dataplanes_pb2.SYNC_STATUS_CONNECTED,
    SyncStatus.IN_SYNC: dataplanes_pb2.SYNC_STATUS_IN_SYNC,
    SyncStatus.NACKED: dataplanes_pb2.SYNC_STATUS_NACKED,
    SyncStatus.DISCONNECTED: dataplanes_pb2.SYNC_STATUS_DISCONNECTED,
    SyncStatus.INCOMPATIBLE: dataplanes_pb2.SYNC_STATUS_INCOMPATIBLE,
    SyncStatus.STALE: dataplanes_pb2.SYNC_STATUS_STALE,
}


def to_proto_dataplane(record: DataPlaneRecord) -> dataplanes_pb2.DataPlane:
    """The wire form of a registry record."""
    return dataplanes_pb2.DataPlane(
        name=NAME_PREFIX + record.node_id,
        node_id=record.node_id,
        hostname=record.hostname,
        version=record.version,
        config_version=record.config_version,
        last_seen_time=to_timestamp(record.last_seen_time),
        sync_status=(
            SYNC_STATUSES[record.sync_status]
            if record.sync_status is not None
            else dataplanes_pb2.SYNC_STATUS_UNSPECIFIED
        ),
        error=record.error,
    )
