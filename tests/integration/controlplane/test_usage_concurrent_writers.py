"""Token usage stored by concurrent writers: each event once, its rollup once, no lock errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import BigInteger, cast, func, select

from controlplane.storage import schema as s
from controlplane.storage.db import Database
from controlplane.usage import storage as usage
from controlplane.usage.types import TokenType, UsageEvent

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(migrated_db_url: str) -> Iterator[Database]:
    database = Database.connect(migrated_db_url)
    yield database
    database.dispose()


def _event(n: int) -> UsageEvent:
    return UsageEvent(
        id=f"req-{n}:input",
        source="dp-1",
        type="llm.tokens",
        subject=f"consumer-{n % 7}",
        time=T0 + timedelta(minutes=n % 180),  # three hours
        provider="openai",
        model="gpt-4o-mini",
        token_type=TokenType.INPUT,
        tokens=1 + n % 50,
        status_code=200,
    )


def test_overlapping_batches_from_four_writers_are_stored_and_rolled_up_once(db) -> None:
    # Given four writers (a control plane's usage streams) whose batches overlap: every
    # event is sent by two of them, as after a lost ACK resent on another stream
    writers, batches, size = 4, 15, 100
    distinct = writers * batches * size // 2
    accepted: list[int] = []
    errors: list[BaseException] = []

    def write(k: int) -> None:
        for b in range(batches):
            first = ((k // 2) * batches + b) * size
            events = [_event(n) for n in range(first, first + size)]
            try:
                with db.begin_write() as conn:
                    result = usage.insert_events(conn, events, ingest_time=T0)
            except BaseException as exc:  # a lock error would land here
                errors.append(exc)
                return
            accepted.append(result.accepted)

    # When they all write at once
    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then no writer failed, each event was accepted once and stored once...
    assert errors == []
    assert sum(accepted) == distinct
    expected_tokens = sum(1 + n % 50 for n in range(distinct))
    with db.begin() as conn:
        count, tokens = conn.execute(select(func.count(), func.sum(s.usage_events.c.tokens))).one()
        r = s.usage_rollups
        rolled_tokens, rolled_count = conn.execute(
            select(func.sum(cast(r.c.value, BigInteger)), func.sum(r.c.count))
        ).one()
    assert (count, tokens) == (distinct, expected_tokens)
    # ...and the hourly rollups hold exactly the stored events, no duplicate counted twice
    assert (rolled_count, rolled_tokens) == (distinct, expected_tokens)


def test_a_batch_of_only_stored_events_changes_nothing(db) -> None:
    events = [_event(n) for n in range(10)]
    with db.begin_write() as conn:
        assert usage.insert_events(conn, events, ingest_time=T0).accepted == 10
    with db.begin_write() as conn:
        result = usage.insert_events(conn, events + events[:3], ingest_time=T0)
    assert (result.accepted, result.duplicates) == (0, 13)
    with db.begin() as conn:
        r = s.usage_rollups
        assert conn.execute(select(func.sum(r.c.count))).scalar() == 10
