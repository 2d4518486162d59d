"""The data-plane registry: who is connected, which config version each one holds."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, insert, select, update

from controlplane.storage import schema as s


class SyncStatus(StrEnum):
    CONNECTED = "connected"
    IN_SYNC = "in_sync"
    NACKED = "nacked"
    DISCONNECTED = "disconnected"


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
) -> None:
    t = s.dataplanes
    values: dict[str, object] = {"sync_status": status.value, "error": error, "last_seen_time": now}
    if hostname is not None:
        values["hostname"] = hostname
    if version is not None:
        values["version"] = version
    if config_version is not None:
        values["config_version"] = config_version
    exists = conn.execute(select(t.c.node_id).where(t.c.node_id == node_id)).first()
    if exists:
        conn.execute(update(t).where(t.c.node_id == node_id).values(**values))
    else:
        values.setdefault("hostname", "")
        values.setdefault("version", "")
        values.setdefault("config_version", "")
        conn.execute(insert(t).values(node_id=node_id, **values))


def list_dataplanes(conn: Connection) -> list[dict[str, object]]:
    t = s.dataplanes
    return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.node_id))]
