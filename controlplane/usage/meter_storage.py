"""Storage of operator meters (the built-in llm_tokens meter is not stored)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select
from sqlalchemy.exc import IntegrityError

from controlplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from controlplane.storage import schema as s
from controlplane.usage import rollups
from controlplane.usage.meters import (
    LLM_TOKENS,
    CompiledMeter,
    MeterAggregation,
    OperatorMeter,
    Unreadable,
    canonical_dimensions,
    check_meter,
    loads_exact,
)

m = s.meters
ev = s.meter_events


def _meter(row: Row[Any]) -> OperatorMeter:
    return OperatorMeter(
        key=row.key,
        description=row.description,
        event_type=row.event_type,
        aggregation=MeterAggregation(row.aggregation),
        value_property=row.value_property,
        group_by=dict(row.group_by),
        create_time=row.create_time,
    )


def create_meter(conn: Connection, meter: OperatorMeter, *, now: datetime) -> OperatorMeter:
    """Store a new meter and roll up the events of its type already stored.

    Stored events this meter cannot read (accepted earlier for other meters of the type, before
    this one existed) are left out of it, in rollups and raw reads alike.
    """
    problems = check_meter(meter)
    if problems:
        raise InvalidArgument(f"meter {meter.key!r}: " + "; ".join(problems))
    if conn.execute(select(m.c.key).where(m.c.key == meter.key)).first() is not None:
        raise AlreadyExists(f"meter {meter.key!r} already exists")
    try:
        with conn.begin_nested():
            conn.execute(
                insert(m).values(
                    key=meter.key,
                    description=meter.description,
                    event_type=meter.event_type,
                    aggregation=meter.aggregation.value,
                    value_property=meter.value_property,
                    group_by=dict(meter.group_by),
                    create_time=now,
                )
            )
    except IntegrityError:
        raise AlreadyExists(f"meter {meter.key!r} already exists") from None
    _backfill(conn, CompiledMeter.of(meter))
    return get_meter(conn, meter.key)


def _backfill(conn: Connection, compiled: CompiledMeter) -> None:
    meter = compiled.meter
    if not meter.aggregation.rolls_up:
        return
    deltas = rollups.Deltas()
    query = select(ev.c.subject, ev.c.time, ev.c.data).where(ev.c.type == meter.event_type)
    for subject, time, data in conn.execute(query):
        try:
            reading = compiled.read(loads_exact(data))
        except Unreadable:
            continue
        assert not isinstance(reading.value, str)
        deltas.add(
            aggregation=meter.aggregation,
            meter=meter.key,
            subject=subject,
            time=time,
            dimensions=canonical_dimensions(reading.dimensions),
            value=reading.value,
        )
    rollups.apply(conn, deltas)


def get_meter(conn: Connection, key: str) -> OperatorMeter:
    row = conn.execute(select(m).where(m.c.key == key)).first()
    if row is None:
        raise NotFound(f"meter {key!r} not found")
    return _meter(row)


def find_meter(conn: Connection, key: str) -> OperatorMeter | None:
    row = conn.execute(select(m).where(m.c.key == key)).first()
    return _meter(row) if row is not None else None


def list_meters(conn: Connection) -> list[OperatorMeter]:
    return [_meter(r) for r in conn.execute(select(m).order_by(m.c.key))]


def meters_by_type(conn: Connection) -> Mapping[str, list[CompiledMeter]]:
    """Event type -> the meters that read it."""
    result: dict[str, list[CompiledMeter]] = {}
    for meter in list_meters(conn):
        result.setdefault(meter.event_type, []).append(CompiledMeter.of(meter))
    return result


def delete_meter(conn: Connection, key: str) -> None:
    """Delete a meter no feature uses; its events stay stored, its rollups go."""
    if key == LLM_TOKENS:
        raise FailedPrecondition(f"meter {LLM_TOKENS!r} is built in and cannot be deleted")
    get_meter(conn, key)
    users = conn.execute(select(s.features.c.key).where(s.features.c.meter == key)).scalars()
    features = sorted(users)
    if features:
        raise FailedPrecondition(f"meter {key!r} is used by features {features}")
    rollups.delete_meter(conn, key)
    conn.execute(delete(m).where(m.c.key == key))


def upsert_meter(conn: Connection, meter: OperatorMeter, *, now: datetime) -> str | None:
    """Declarative apply: create a meter, leave an identical one alone; a different definition
    under the same key is refused (meters are immutable). Returns a change line or None."""
    existing = find_meter(conn, meter.key)
    if existing is None:
        create_meter(conn, meter, now=now)
        return f"created meter {meter.key}"
    same = (
        existing.event_type == meter.event_type
        and existing.aggregation is meter.aggregation
        and (existing.value_property or None) == (meter.value_property or None)
        and dict(existing.group_by) == dict(meter.group_by)
        and existing.description == meter.description
    )
    if not same:
        raise FailedPrecondition(
            f"meter {meter.key!r} exists with a different definition; meters are immutable "
            "(create a new key, move features to it, then delete the old one)"
        )
    return None
