"""Notification tables: channels, rules, events (unique by dedupe key), deliveries, attempts."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from controlplane.errors import AlreadyExists, FailedPrecondition, NotFound
from controlplane.notifications.types import (
    Attempt,
    Channel,
    Delivery,
    DeliveryState,
    Event,
    Rule,
    RuleType,
)
from controlplane.storage import schema as s

# -- channels ---------------------------------------------------------------------------------


def _channel(row: Any) -> Channel:
    return Channel(
        key=row.key, url=row.url, signing_secret=row.signing_secret, create_time=row.create_time
    )


def insert_channel(conn: Connection, channel: Channel, *, now: datetime) -> Channel:
    # No savepoint: a duplicate fails the whole unit of work, which is what callers want (and
    # pysqlite's savepoints would commit early).
    try:
        conn.execute(
            insert(s.notification_channels).values(
                key=channel.key,
                url=channel.url,
                signing_secret=channel.signing_secret,
                create_time=now,
                update_time=now,
            )
        )
    except IntegrityError:
        raise AlreadyExists(f'channel "{channel.key}" already exists') from None
    return get_channel(conn, channel.key)


def get_channel(conn: Connection, key: str) -> Channel:
    row = conn.execute(
        select(s.notification_channels).where(s.notification_channels.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f'channel "{key}" not found')
    return _channel(row)


def list_channels(conn: Connection) -> list[Channel]:
    rows = conn.execute(select(s.notification_channels).order_by(s.notification_channels.c.key))
    return [_channel(row) for row in rows]


def delete_channel(conn: Connection, key: str) -> None:
    get_channel(conn, key)
    users = conn.execute(
        select(s.notification_rules.c.key).where(s.notification_rules.c.channel == key)
    ).scalars()
    names = sorted(users)
    alerts = conn.execute(
        select(s.credit_alerts.c.customer, s.credit_alerts.c.key).where(
            s.credit_alerts.c.channel == key
        )
    )
    names += sorted(f"credit alert {row.key} of {row.customer}" for row in alerts)
    if names:
        raise FailedPrecondition(
            f'channel "{key}" is used by rule(s) {", ".join(names)}: delete them first'
        )
    conn.execute(delete(s.notification_channels).where(s.notification_channels.c.key == key))


# -- rules ------------------------------------------------------------------------------------


def _rule(row: Any) -> Rule:
    return Rule(
        key=row.key,
        type=RuleType(row.type),
        channel=row.channel,
        thresholds=tuple(Decimal(t) for t in row.thresholds),
        feature=row.feature,
        customer=row.customer,
        invoice_events=tuple(row.invoice_events),
        create_time=row.create_time,
    )


def insert_rule(conn: Connection, rule: Rule, *, now: datetime) -> Rule:
    try:
        conn.execute(
            insert(s.notification_rules).values(
                key=rule.key,
                type=rule.type.value,
                channel=rule.channel,
                thresholds=[str(t) for t in rule.thresholds],
                feature=rule.feature,
                customer=rule.customer,
                invoice_events=list(rule.invoice_events),
                create_time=now,
                update_time=now,
            )
        )
    except IntegrityError:
        raise AlreadyExists(f'rule "{rule.key}" already exists') from None
    return get_rule(conn, rule.key)


def get_rule(conn: Connection, key: str) -> Rule:
    row = conn.execute(
        select(s.notification_rules).where(s.notification_rules.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f'rule "{key}" not found')
    return _rule(row)


def list_rules(conn: Connection, *, type: RuleType | None = None) -> list[Rule]:
    query = select(s.notification_rules).order_by(s.notification_rules.c.key)
    if type is not None:
        query = query.where(s.notification_rules.c.type == type.value)
    return [_rule(row) for row in conn.execute(query)]


def delete_rule(conn: Connection, key: str) -> None:
    get_rule(conn, key)
    conn.execute(delete(s.notification_rules).where(s.notification_rules.c.key == key))


# -- events and deliveries --------------------------------------------------------------------


def insert_event(
    conn: Connection,
    *,
    rule: Rule,
    dedupe_key: str,
    type: str,
    payload: str,
    event_id: str,
    now: datetime,
) -> bool:
    """Store the event and its pending delivery; False if ``dedupe_key`` was stored before.

    ON CONFLICT DO NOTHING: replicas evaluating at once store it once, and neither fails.
    """
    return insert_channel_event(
        conn,
        rule_key=rule.key,
        channel=rule.channel,
        dedupe_key=dedupe_key,
        type=type,
        payload=payload,
        event_id=event_id,
        now=now,
    )


def insert_channel_event(
    conn: Connection,
    *,
    rule_key: str,
    channel: str,
    dedupe_key: str,
    type: str,
    payload: str,
    event_id: str,
    now: datetime,
) -> bool:
    """``insert_event`` for alerts that are not notification rules (credit alerts): the
    event names ``rule_key`` and is delivered on ``channel``."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    result = conn.execute(
        dialect.insert(s.notification_events)
        .values(
            id=event_id,
            rule=rule_key,
            dedupe_key=dedupe_key,
            type=type,
            payload=payload,
            create_time=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(s.notification_events.c.id)
    )
    if result.first() is None:
        return False
    conn.execute(
        insert(s.notification_deliveries).values(
            id=str(uuid.uuid4()),
            event_id=event_id,
            channel=channel,
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_time=now,
            create_time=now,
            update_time=now,
        )
    )
    return True


def _event(row: Any) -> Event:
    return Event(
        id=row.id,
        rule=row.rule,
        dedupe_key=row.dedupe_key,
        type=row.type,
        payload=row.payload,
        create_time=row.create_time,
    )


def get_event(conn: Connection, id: str) -> Event:
    row = conn.execute(
        select(s.notification_events).where(s.notification_events.c.id == id)
    ).first()
    if row is None:
        raise NotFound(f'event "{id}" not found')
    return _event(row)


def list_events(conn: Connection, *, rule: str = "") -> list[Event]:
    t = s.notification_events
    query = select(t).order_by(t.c.create_time.desc(), t.c.id)
    if rule:
        query = query.where(t.c.rule == rule)
    return [_event(row) for row in conn.execute(query)]


def list_deliveries(conn: Connection, *, event: str = "", channel: str = "") -> list[Delivery]:
    d, a = s.notification_deliveries, s.notification_delivery_attempts
    query = select(d).order_by(d.c.create_time.desc(), d.c.id)
    if event:
        query = query.where(d.c.event_id == event)
    if channel:
        query = query.where(d.c.channel == channel)
    rows = list(conn.execute(query))
    attempts: dict[str, list[Attempt]] = {}
    if rows:
        for row in conn.execute(
            select(a).where(a.c.delivery_id.in_([r.id for r in rows])).order_by(a.c.number)
        ):
            attempts.setdefault(row.delivery_id, []).append(
                Attempt(
                    number=row.number,
                    time=row.time,
                    status_code=row.status_code,
                    error=row.error,
                    duration_ms=row.duration_ms,
                )
            )
    return [
        Delivery(
            id=row.id,
            event_id=row.event_id,
            channel=row.channel,
            state=DeliveryState(row.state),
            attempts=tuple(attempts.get(row.id, ())),
            next_attempt_time=row.next_attempt_time,
            create_time=row.create_time,
        )
        for row in rows
    ]


class Claimed:
    """A delivery taken for one attempt: what to send where."""

    __slots__ = ("attempt", "body", "delivery_id", "event_id", "secret", "url")

    def __init__(
        self, *, delivery_id: str, event_id: str, attempt: int, url: str, secret: str, body: bytes
    ) -> None:
        self.delivery_id = delivery_id
        self.event_id = event_id
        self.attempt = attempt
        self.url = url
        self.secret = secret
        self.body = body


def claim_due(
    conn: Connection, *, now: datetime, lease_seconds: float, limit: int
) -> tuple[list[Claimed], list[str]]:
    """Take up to ``limit`` due deliveries for one attempt each.

    ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has one writer) lets replicas claim
    different rows; the claim pushes ``next_attempt_time`` a lease ahead, so a replica that dies
    mid-attempt leaves the delivery to be retried after the lease. Returns the claimed ones and
    the ids of deliveries whose channel is gone (marked failed).
    """
    d, e, c = s.notification_deliveries, s.notification_events, s.notification_channels
    rows = list(
        conn.execute(
            select(d.c.id, d.c.event_id, d.c.channel, d.c.attempts)
            .where(d.c.state == DeliveryState.PENDING.value, d.c.next_attempt_time <= now)
            .order_by(d.c.next_attempt_time, d.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    claimed: list[Claimed] = []
    orphans: list[str] = []
    for row in rows:
        channel = conn.execute(select(c).where(c.c.key == row.channel)).first()
        if channel is None:
            conn.execute(
                update(d)
                .where(d.c.id == row.id)
                .values(state=DeliveryState.FAILED.value, update_time=now)
            )
            orphans.append(row.id)
            continue
        attempt = row.attempts + 1
        # Conditional on what was read: where row locks are not available (SQLite), a replica
        # that claimed it first makes this update match nothing, and it is skipped.
        claim = conn.execute(
            update(d)
            .where(
                d.c.id == row.id,
                d.c.attempts == row.attempts,
                d.c.state == DeliveryState.PENDING.value,
                d.c.next_attempt_time <= now,
            )
            .values(
                attempts=attempt,
                next_attempt_time=now + timedelta(seconds=lease_seconds),
                update_time=now,
            )
        )
        if claim.rowcount != 1:
            continue
        payload = conn.execute(select(e.c.payload).where(e.c.id == row.event_id)).scalar_one()
        claimed.append(
            Claimed(
                delivery_id=row.id,
                event_id=row.event_id,
                attempt=attempt,
                url=channel.url,
                secret=channel.signing_secret,
                body=payload.encode(),
            )
        )
    return claimed, orphans


def record_attempt(
    conn: Connection,
    *,
    claimed: Claimed,
    status_code: int,
    error: str,
    duration_ms: int,
    time: datetime,
    state: DeliveryState,
    next_attempt_time: datetime,
) -> None:
    conn.execute(
        insert(s.notification_delivery_attempts).values(
            delivery_id=claimed.delivery_id,
            number=claimed.attempt,
            time=time,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
    )
    conn.execute(
        update(s.notification_deliveries)
        .where(s.notification_deliveries.c.id == claimed.delivery_id)
        .values(state=state.value, next_attempt_time=next_attempt_time, update_time=time)
    )
