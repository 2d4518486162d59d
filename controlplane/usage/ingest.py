"""Ingestion of CloudEvents-shaped usage events for operator meters.

An event is stored once per (source, id). It is *rejected* — reported back with its position
and the reason, and not stored — when it is malformed, when no meter reads its type, or when
a meter of its type cannot read it (value property missing or not a number). Rejected events
are not stored so that a corrected event can be sent again under the same id; nothing is
silently dropped. Newly stored events roll up in the same transaction (``rollups.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, text
from sqlalchemy.dialects import sqlite

from controlplane.errors import InvalidArgument
from controlplane.storage import schema as s
from controlplane.usage import rollups
from controlplane.usage.meter_storage import meters_by_type
from controlplane.usage.meters import (
    CloudEvent,
    MeterAggregation,
    Reading,
    Unreadable,
    canonical_dimensions,
    dumps_exact,
    parse_cloudevent,
)

ev = s.meter_events

MAX_BATCH = 10_000


@dataclass(frozen=True)
class NotJson:
    """Stands in a batch for an event that did not parse as JSON (reported with the message)."""

    message: str


@dataclass(frozen=True)
class Rejection:
    """An event not stored: its position in the batch (0-based), its id if any, and why."""

    index: int
    id: str
    source: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: tuple[Rejection, ...]


def ingest_events(conn: Connection, objects: Sequence[Any], *, now: datetime) -> IngestResult:
    """Validate, store (idempotent by source + id) and roll up a batch of event objects."""
    if len(objects) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} events per batch, got {len(objects)}")
    meters = meters_by_type(conn)
    rejected: list[Rejection] = []
    readable: dict[tuple[str, str], tuple[CloudEvent, list[Reading]]] = {}
    duplicates = 0
    for index, obj in enumerate(objects):
        if isinstance(obj, NotJson):
            rejected.append(Rejection(index, "", "", f"not JSON: {obj.message}"))
            continue
        ident = str(obj.get("id", "")) if isinstance(obj, dict) else ""
        origin = str(obj.get("source", "")) if isinstance(obj, dict) else ""
        try:
            event = parse_cloudevent(obj, now=now)
        except InvalidArgument as error:
            rejected.append(Rejection(index, ident, origin, str(error)))
            continue
        compiled = meters.get(event.type)
        if not compiled:
            known = ", ".join(sorted(meters)) or "none"
            rejected.append(
                Rejection(
                    index,
                    event.id,
                    event.source,
                    f"no meter reads events of type {event.type!r} (meter event types: {known})",
                )
            )
            continue
        try:
            readings = [meter.read(event.data) for meter in compiled]
        except Unreadable as error:
            rejected.append(Rejection(index, event.id, event.source, str(error)))
            continue
        key = (event.source, event.id)
        if key in readable:
            duplicates += 1
            continue
        readable[key] = (event, readings)
    if not readable:
        return IngestResult(0, duplicates, tuple(rejected))
    inserted = _insert(conn, [e for e, _ in readable.values()], now=now)
    deltas = rollups.Deltas()
    for key in inserted:
        event, readings = readable[key]
        # Every stored event counts once per hour, for the billing ledger's late-usage check.
        deltas.add(
            aggregation=MeterAggregation.COUNT,
            meter=rollups.EVENTS,
            subject=event.subject,
            time=event.time,
            dimensions="{}",
            value=None,
        )
        for meter, reading in zip(meters[event.type], readings, strict=True):
            value = reading.value
            if isinstance(value, str):
                continue  # UNIQUE_COUNT: no rollup
            deltas.add(
                aggregation=meter.meter.aggregation,
                meter=meter.meter.key,
                subject=event.subject,
                time=event.time,
                dimensions=canonical_dimensions(reading.dimensions),
                value=value,
            )
    rollups.apply(conn, deltas)
    duplicates += len(readable) - len(inserted)
    return IngestResult(len(inserted), duplicates, tuple(rejected))


_PG_INSERT = text(
    """
    INSERT INTO meter_events (source, id, type, subject, time, data, ingest_time)
    SELECT u.source, u.id, u.type, u.subject, u.time, u.data, CAST(:ingest_time AS timestamp)
    FROM json_to_recordset(CAST(:rows AS json)) AS u(
        source text, id text, type text, subject text, time timestamp, data text
    )
    ON CONFLICT (source, id) DO NOTHING
    RETURNING source, id
    """
)


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _insert(
    conn: Connection, events: Sequence[CloudEvent], *, now: datetime
) -> list[tuple[str, str]]:
    rows = [
        {
            "source": e.source,
            "id": e.id,
            "type": e.type,
            "subject": e.subject,
            "time": e.time,
            "data": dumps_exact(e.data),
        }
        for e in events
    ]
    if conn.dialect.name == "postgresql":
        for row, e in zip(rows, events, strict=True):
            row["time"] = _naive(e.time)
        params = {"ingest_time": _naive(now), "rows": orjson.dumps(rows).decode()}
        return [(r.source, r.id) for r in conn.execute(_PG_INSERT, params)]
    for row in rows:
        row["ingest_time"] = now
    statement = (
        sqlite.insert(ev)
        .on_conflict_do_nothing(index_elements=["source", "id"])
        .returning(ev.c.source, ev.c.id)
    )
    return [(r.source, r.id) for r in conn.execute(statement, rows)]
