"""The data-plane registry: who is connected, which config version each one holds.

Version compatibility: a data plane is compatible when its Meterline major version equals the
control plane's (``1.4.2`` and ``1.0.0`` are; ``2.0.0`` is not). An incompatible data plane is
recorded as INCOMPATIBLE and gets no config; it keeps serving what it has (its cache). A data
plane that reports no version is accepted: there is nothing to compare.

Liveness: each config stream has an id; its connect records it, and every later write of that
stream (ACK, NACK, heartbeat, disconnect) applies only while the row still names it, so a data
plane that reconnected to another replica is not marked disconnected by the replica it left.
While a stream is open its control plane writes a heartbeat (``last_seen_time``) every
``HEARTBEAT_SECONDS``; a data plane recorded as connected whose heartbeat is older than
``STALE_AFTER`` is shown STALE (its control plane died without recording the disconnect).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import metadata
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from controlplane.storage import schema as s


class SyncStatus(StrEnum):
    CONNECTED = "connected"
    IN_SYNC = "in_sync"
    NACKED = "nacked"
    DISCONNECTED = "disconnected"
    INCOMPATIBLE = "incompatible"
    # Never stored: computed when read (see the module docstring).
    STALE = "stale"


HEARTBEAT_SECONDS = 15.0
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)
# Statuses that claim an open stream, and so can go stale.
LIVE = frozenset({SyncStatus.CONNECTED, SyncStatus.IN_SYNC, SyncStatus.NACKED})


@dataclass(frozen=True)
class DataPlaneRecord:
    """A data plane as last seen by a control plane."""

    node_id: str
    hostname: str
    version: str
    config_version: str
    sync_status: SyncStatus | None
    error: str
    last_seen_time: datetime


def running_version() -> str:
    """The Meterline version of this process."""
    try:
        return metadata.version("meterline")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0.1.0"


def major_version(version: str) -> str:
    """The major part of a version string ("" for none)."""
    return version.strip().split(".", 1)[0]


def compatible(*, control_plane: str, data_plane: str) -> bool:
    """Whether a data plane of version ``data_plane`` may sync from this control plane."""
    if not data_plane.strip():
        return True
    return major_version(data_plane) == major_version(control_plane)


def record(
    conn: Connection,
    *,
    node_id: str,
    now: datetime,
    hostname: str | None = None,
    version: str | None = None,
    config_version: str | None = None,
    status: SyncStatus,
    error: str = "",
    stream_id: str = "",
    connect: bool = False,
) -> bool:
    """Record what a config stream saw; return False if a newer stream owns the row.

    ``connect``: this write opens ``stream_id`` (it becomes the row's owner). Otherwise the
    write applies only while the row still names ``stream_id``.
    """
    t = s.dataplanes
    values: dict[str, object] = {"sync_status": status.value, "error": error, "last_seen_time": now}
    if connect:
        values["stream_id"] = stream_id
    if hostname is not None:
        values["hostname"] = hostname
    if version is not None:
        values["version"] = version
    if config_version is not None:
        values["config_version"] = config_version
    exists = conn.execute(select(t.c.node_id).where(t.c.node_id == node_id)).first()
    if exists:
        where = t.c.node_id == node_id
        if not connect:
            where = where & (t.c.stream_id == stream_id)
        return conn.execute(update(t).where(where).values(**values)).rowcount > 0
    if not connect:
        return False  # the row of a stream that never recorded its connect
    values.setdefault("hostname", "")
    values.setdefault("version", "")
    values.setdefault("config_version", "")
    conn.execute(insert(t).values(node_id=node_id, **values))
    return True


def heartbeat(conn: Connection, *, node_id: str, stream_id: str, now: datetime) -> bool:
    """Refresh ``last_seen_time`` while ``stream_id`` is open; False if a newer one owns it."""
    t = s.dataplanes
    where = (t.c.node_id == node_id) & (t.c.stream_id == stream_id)
    return conn.execute(update(t).where(where).values(last_seen_time=now)).rowcount > 0


def effective(record: DataPlaneRecord, *, now: datetime, stale_after: timedelta) -> DataPlaneRecord:
    """``record`` as shown to operators: STALE when its heartbeat stopped."""
    if record.sync_status in LIVE and now - record.last_seen_time > stale_after:
        return replace(record, sync_status=SyncStatus.STALE)
    return record


def list_dataplanes(conn: Connection) -> list[dict[str, object]]:
    t = s.dataplanes
    return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.node_id))]


def _to_record(row: Row[Any]) -> DataPlaneRecord:
    m = row._mapping
    try:
        status: SyncStatus | None = SyncStatus(m["sync_status"])
    except ValueError:  # written by a newer replica: shown as unspecified, not an error
        status = None
    return DataPlaneRecord(
        node_id=m["node_id"],
        hostname=m["hostname"],
        version=m["version"],
        config_version=m["config_version"],
        sync_status=status,
        error=m["error"],
        last_seen_time=m["last_seen_time"],
    )


def list_records(conn: Connection) -> list[DataPlaneRecord]:
    """Every data plane ever seen, by node id."""
    t = s.dataplanes
    return [_to_record(r) for r in conn.execute(select(t).order_by(t.c.node_id))]


def get_record(conn: Connection, node_id: str) -> DataPlaneRecord | None:
    """One data plane, or None."""
    t = s.dataplanes
    row = conn.execute(select(t).where(t.c.node_id == node_id)).first()
    return _to_record(row) if row is not None else None
