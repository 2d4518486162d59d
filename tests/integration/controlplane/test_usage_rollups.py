"""Operator meters, CloudEvents ingestion and rollups against SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from controlplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from controlplane.storage import schema as s
from controlplane.storage.db import Database
from controlplane.usage import meter_storage
from controlplane.usage import storage as tokens
from controlplane.usage.aggregate import Point, WindowSize, aggregate
from controlplane.usage.ingest import ingest_events
from controlplane.usage.meters import MeterAggregation, OperatorMeter
from controlplane.usage.query import quantity, query
from controlplane.usage.types import TokenType, UsageEvent

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SUM, COUNT, MAX = MeterAggregation.SUM, MeterAggregation.COUNT, MeterAggregation.MAX


@pytest.fixture
def db(migrated_db_url: str) -> Iterator[Database]:
    database = Database.connect(migrated_db_url)
    yield database
    database.dispose()


def event(
    id: str, *, source: str = "app", subject: str = "acme", minutes: float = 0, **data: object
) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": "api.request",
        "subject": subject,
        "time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "data": data,
    }


def create(db: Database, **fields: object) -> OperatorMeter:
    base: dict[str, object] = {
        "key": "api_calls",
        "event_type": "api.request",
        "aggregation": SUM,
        "value_property": "$.units",
        "group_by": {"region": "$.region"},
    }
    base.update(fields)
    with db.begin() as conn:
        return meter_storage.create_meter(conn, OperatorMeter(**base), now=T0)  # type: ignore[arg-type]


def stored(db: Database) -> int:
    with db.begin() as conn:
        return int(conn.execute(select(func.count()).select_from(s.meter_events)).scalar_one())


def test_ingestion_is_idempotent_by_source_and_id(db: Database) -> None:
    create(db)
    with db.begin() as conn:
        first = ingest_events(conn, [event("1", units=2), event("1", units=2)], now=T0)
    with db.begin() as conn:
        again = ingest_events(
            conn, [event("1", units=2), event("1", source="other-app", units=5)], now=T0
        )
    assert (first.accepted, first.duplicates) == (1, 1)
    assert (again.accepted, again.duplicates) == (1, 1)
    assert stored(db) == 2
    with db.begin() as conn:
        total = quantity(
            conn, meter="api_calls", subjects=["acme"], filters={}, start=T0, end=T0 + timedelta(1)
        )
    assert total == Decimal(7)


def test_events_no_meter_can_read_are_reported_and_not_stored(db: Database) -> None:
    create(db)
    create(db, key="api_max", aggregation=MAX, value_property="$.cost.usd", group_by={})
    batch = [
        event("ok", units=1, cost={"usd": "0.5"}),
        {**event("unknown-type", units=1), "type": "api.other"},
        event("no-units", cost={"usd": 1}),
        event("text-units", units="ten", cost={"usd": 1}),
        event("no-cost", units=1),
        {**event("bad-time", units=1), "time": "2026-13-01T00:00:00Z"},
        {"id": "no-subject", "source": "app", "type": "api.request", "data": {}},
    ]
    with db.begin() as conn:
        result = ingest_events(conn, batch, now=T0)
    assert result.accepted == 1
    reasons = {r.id: (r.index, r.reason) for r in result.rejected}
    assert reasons["unknown-type"] == (
        1,
        "no meter reads events of type 'api.other' (meter event types: api.request)",
    )
    assert reasons["no-units"] == (2, "meter api_calls: $.units is missing from data")
    assert reasons["text-units"][1] == "meter api_calls: $.units must be a number, got 'ten'"
    assert reasons["no-cost"][1] == "meter api_max: $.cost.usd is missing from data"
    assert "not an RFC 3339" in reasons["bad-time"][1]
    assert reasons["no-subject"][1] == "subject is required (a non-empty string)"
    assert stored(db) == 1
    # A corrected event is accepted under the same id: rejection stored nothing.
    with db.begin() as conn:
        retry = ingest_events(conn, [event("no-units", units=4, cost={"usd": 2})], now=T0)
    assert retry.accepted == 1


def test_meter_definitions_are_checked_and_immutable(db: Database) -> None:
    create(db)
    with pytest.raises(AlreadyExists, match="api_calls"):
        create(db)
    with pytest.raises(InvalidArgument, match="reserved"):
        create(db, key="llm_tokens")
    with pytest.raises(InvalidArgument, match="takes no value_property"):
        create(db, key="c", aggregation=COUNT)
    with pytest.raises(InvalidArgument, match="must select one value"):
        create(db, key="w", value_property="$.units[*]")
    with db.begin() as conn:
        assert [m.key for m in meter_storage.list_meters(conn)] == ["api_calls"]
        with pytest.raises(NotFound):
            meter_storage.delete_meter(conn, "nope")


def test_a_meter_used_by_a_feature_cannot_be_deleted(db: Database) -> None:
    create(db)
    with db.begin() as conn:
        conn.execute(
            insert(s.features).values(
                key="calls", name="", meter="api_calls", filters={}, create_time=T0, update_time=T0
            )
        )
    with db.begin() as conn, pytest.raises(FailedPrecondition, match="calls"):
        meter_storage.delete_meter(conn, "api_calls")
    create(db, key="spare")
    with db.begin() as conn:
        meter_storage.delete_meter(conn, "spare")
        assert meter_storage.find_meter(conn, "spare") is None


def test_a_new_meter_rolls_up_the_events_already_stored(db: Database) -> None:
    create(db)
    with db.begin() as conn:
        ingest_events(conn, [event(str(i), minutes=30 * i, units=i) for i in range(6)], now=T0)
    create(db, key="calls_max", aggregation=MAX, group_by={})
    create(db, key="calls_count", aggregation=COUNT, value_property=None, group_by={})
    span = {"subjects": ["acme"], "filters": {}, "start": T0, "end": T0 + timedelta(days=1)}
    with db.begin() as conn:
        assert quantity(conn, meter="calls_max", **span) == Decimal(5)  # type: ignore[arg-type]
        assert quantity(conn, meter="calls_count", **span) == Decimal(6)  # type: ignore[arg-type]
        rolled = conn.execute(
            select(func.count())
            .select_from(s.usage_rollups)
            .where(s.usage_rollups.c.meter == "calls_count")
        ).scalar_one()
    assert rolled == 3  # three hours


def test_query_windows_groups_and_bad_inputs(db: Database) -> None:
    create(db)
    create(db, key="users", aggregation=MeterAggregation.UNIQUE_COUNT, value_property="$.user")
    create(db, key="seats", aggregation=MeterAggregation.LATEST, value_property="$.units")
    batch = [
        event("1", minutes=5, units=1, region="eu", user="a"),
        event("2", minutes=50, units=2, region="us", user="b"),
        event("3", minutes=70, units=4, region="eu", user="a"),
        event("4", minutes=75, subject="globex", units=8, region="eu", user="c"),
    ]
    with db.begin() as conn:
        assert ingest_events(conn, batch, now=T0).accepted == 4
    with db.begin() as conn:
        rows = query(
            conn, meter="api_calls", group_by=["subject", "region"], window=WindowSize.HOUR
        )
        assert [(r.window_start, r.group["subject"], r.group["region"], r.value) for r in rows] == [
            (T0, "acme", "eu", Decimal(1)),
            (T0, "acme", "us", Decimal(2)),
            (T0 + timedelta(hours=1), "acme", "eu", Decimal(4)),
            (T0 + timedelta(hours=1), "globex", "eu", Decimal(8)),
        ]
        users = query(conn, meter="users", subjects=["acme"])
        assert [r.value for r in users] == [Decimal(2)]
        seats = query(conn, meter="seats", subjects=["acme"], window=WindowSize.DAY)
        assert [(r.window_start, r.value) for r in seats] == [(T0.replace(hour=0), Decimal(4))]
        for bad, message in [
            ({"meter": "nope"}, "unknown meter 'nope'; known: llm_tokens, api_calls"),
            ({"meter": "api_calls", "group_by": ["model"]}, "'model' is not a dimension"),
            ({"meter": "api_calls", "filters": {"zone": "x"}}, "'zone' is not a dimension"),
            ({"meter": "llm_tokens", "filters": {"status_code": "ok"}}, "must be an integer"),
            ({"meter": "api_calls", "start": T0, "end": T0 - timedelta(1)}, "before its start"),
        ]:
            with pytest.raises(InvalidArgument, match=message):
                query(conn, **bad)  # type: ignore[arg-type]


def test_llm_tokens_roll_up_on_insert_and_only_new_events_count(db: Database) -> None:
    def token_event(id: str, minutes: int, tokens_: int, status: int = 200) -> UsageEvent:
        return UsageEvent(
            id=id,
            source="dp",
            type="llm.tokens",
            subject="acme-corp",
            time=T0 + timedelta(minutes=minutes),
            provider="openai",
            model="gpt-4o-mini",
            token_type=TokenType.INPUT,
            tokens=tokens_,
            status_code=status,
        )

    batch = [token_event("a", 5, 10), token_event("b", 65, 20), token_event("c", 70, 7, 500)]
    with db.begin() as conn:
        assert tokens.insert_events(conn, batch, ingest_time=T0).accepted == 3
    with db.begin() as conn:  # a resent batch: stored once, rolled up once
        assert tokens.insert_events(conn, batch, ingest_time=T0).duplicates == 3
    with db.begin() as conn:
        whole = {"subjects": ["acme-corp"], "start": T0, "end": T0 + timedelta(hours=2)}
        assert tokens.sum_tokens(conn, filters={}, **whole) == 30  # type: ignore[arg-type]
        assert tokens.sum_tokens(conn, filters={"status_code": "500"}, **whole) == 7  # type: ignore[arg-type]
        rows = query(conn, meter="llm_tokens", group_by=["status_code"], window=WindowSize.HOUR)
        assert [(r.window_start, r.group, r.value) for r in rows] == [
            (T0, {"status_code": "200"}, Decimal(10)),
            (T0 + timedelta(hours=1), {"status_code": "200"}, Decimal(20)),
            (T0 + timedelta(hours=1), {"status_code": "500"}, Decimal(7)),
        ]
        rolled = conn.execute(
            select(func.sum(s.usage_rollups.c.count)).where(s.usage_rollups.c.meter == "llm_tokens")
        ).scalar_one()
    assert rolled == 3


# Rollups == raw aggregation --------------------------------------------------------------------

MINUTES = 3 * 24 * 60
raw_events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=MINUTES - 0.001, allow_nan=False),
        st.sampled_from(["eu", "us"]),
        st.sampled_from(["1", "2.5", "0.125", "40"]),
        st.sampled_from(["acme", "globex"]),
    ),
    max_size=40,
)
spans = st.tuples(
    st.floats(min_value=-60, max_value=MINUTES + 60), st.floats(min_value=0, max_value=MINUTES)
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=raw_events,
    span=spans,
    region=st.sampled_from([None, "eu"]),
    aggregation=st.sampled_from([SUM, COUNT, MAX]),
    split=st.integers(min_value=1, max_value=7),
)
def test_rollups_answer_what_raw_events_would(
    db: Database,
    events: list[tuple[float, str, str, str]],
    span: tuple[float, float],
    region: str | None,
    aggregation: MeterAggregation,
    split: int,
) -> None:
    # Given a fresh meter (its own event type) and events ingested in several batches,
    # one of them resent.
    tag = uuid.uuid4().hex[:8]
    key = f"m{tag}"
    create(
        db,
        key=key,
        event_type=f"t.{tag}",
        aggregation=aggregation,
        value_property=None if aggregation is COUNT else "$.units",
    )
    objects = [
        {**event(f"{tag}-{i}", subject=subject, minutes=m, units=v, region=r), "type": f"t.{tag}"}
        for i, (m, r, v, subject) in enumerate(events)
    ]
    batches = [objects[i : i + split] for i in range(0, len(objects), split)]
    for batch in [*batches, *batches[:1]]:
        with db.begin() as conn:
            ingest_events(conn, batch, now=T0)
    start = T0 + timedelta(minutes=span[0])
    end = start + timedelta(minutes=span[1])
    filters = {"region": region} if region else {}
    # The reference: aggregate the raw events in Python.
    points = [
        Point(subject, T0 + timedelta(minutes=m), {"region": r}, Decimal(v))
        for m, r, v, subject in events
        if start <= T0 + timedelta(minutes=m) < end
        and subject == "acme"
        and (region is None or r == region)
    ]
    expected = aggregate(points, aggregation=aggregation)
    with db.begin() as conn:
        got = quantity(conn, meter=key, subjects=["acme"], filters=filters, start=start, end=end)
        assert got == (expected[0].value if expected else Decimal(0))
        hourly = query(
            conn,
            meter=key,
            subjects=["acme"],
            filters=filters,
            group_by=["region"],
            window=WindowSize.HOUR,
            start=start,
            end=end,
        )
    reference = aggregate(
        points,
        aggregation=aggregation,
        group_by=["region"],
        window=WindowSize.HOUR,
        start=start,
        end=end,
    )
    assert hourly == reference


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=MINUTES * 60 - 1),
            st.sampled_from(list(TokenType)),
            st.integers(min_value=0, max_value=10**6),
            st.sampled_from([200, 429]),
        ),
        max_size=40,
    ),
    span=spans,
    token_type=st.sampled_from([None, TokenType.INPUT]),
)
def test_token_sums_from_rollups_equal_raw_sums(
    db: Database,
    events: list[tuple[int, TokenType, int, int]],
    span: tuple[float, float],
    token_type: TokenType | None,
) -> None:
    subject = f"s{uuid.uuid4().hex[:8]}"
    batch = [
        UsageEvent(
            id=f"{subject}-{i}",
            source="dp",
            type="llm.tokens",
            subject=subject,
            time=T0 + timedelta(seconds=second),
            provider="openai",
            model="gpt-4o",
            token_type=kind,
            tokens=n,
            status_code=status,
        )
        for i, (second, kind, n, status) in enumerate(events)
    ]
    with db.begin() as conn:
        tokens.insert_events(conn, batch, ingest_time=T0)
    start = T0 + timedelta(minutes=span[0])
    end = start + timedelta(minutes=span[1])
    filters = {"type": token_type.value} if token_type else {}
    expected = sum(
        e.tokens
        for e in batch
        if start <= e.time < end
        and e.billable
        and (token_type is None or e.token_type is token_type)
    )
    with db.begin() as conn:
        got = tokens.sum_tokens(conn, subjects=[subject], start=start, end=end, filters=filters)
        via_quantity = quantity(
            conn, meter="llm_tokens", subjects=[subject], filters=filters, start=start, end=end
        )
        by_model = tokens.tokens_by_model(
            conn, subjects=[subject], start=start, end=end, filters=filters
        )
    assert got == expected and via_quantity == Decimal(expected)
    expected_by_type: dict[tuple[str, str], int] = {}
    for e in batch:
        if start <= e.time < end and e.billable and token_type in (None, e.token_type):
            key = (e.model, e.token_type.value)
            expected_by_type[key] = expected_by_type.get(key, 0) + e.tokens
    assert by_model == {k: v for k, v in expected_by_type.items() if v}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2 * 24 * 3600 - 1),
            st.integers(min_value=0, max_value=1000),
            st.sampled_from([200, 503]),
        ),
        max_size=30,
    ),
    cuts=st.lists(st.integers(min_value=-600, max_value=2 * 24 * 3600 + 600), max_size=5),
)
def test_entitlement_segment_sums_equal_raw_sums(
    db: Database, events: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    # Segment boundaries anywhere (on and off the hour): each segment's sum is the raw sum.
    subject = f"s{uuid.uuid4().hex[:8]}"
    batch = [
        UsageEvent(
            id=f"{subject}-{i}",
            source="dp",
            type="llm.tokens",
            subject=subject,
            time=T0 + timedelta(seconds=second),
            provider="openai",
            model="gpt-4o",
            token_type=TokenType.OUTPUT,
            tokens=n,
            status_code=status,
        )
        for i, (second, n, status) in enumerate(events)
    ]
    with db.begin() as conn:
        tokens.insert_events(conn, batch, ingest_time=T0)
    bounds = sorted({T0 + timedelta(seconds=c) for c in [-3600, *cuts, 3 * 24 * 3600]})
    segments = list(pairwise(bounds))
    expected = [sum(e.tokens for e in batch if a <= e.time < b and e.billable) for a, b in segments]
    with db.begin() as conn:
        got = tokens.segment_sums(
            conn, subjects=[subject], segments=segments, filters={"type": "output"}
        )
    assert got == expected


def test_migrating_rolls_up_the_token_events_stored_before(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from controlplane.storage.db import alembic_config, make_engine

    # Given a database at the revision before rollups, holding token events,
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0008")
        for i, (minutes, status, n) in enumerate([(5, 200, 10), (50, 200, 5), (70, 500, 7)]):
            conn.execute(
                text(
                    "INSERT INTO usage_events (id, source, type, subject, time, provider, model,"
                    " token_type, tokens, status_code, route, request_id, estimated, ingest_time)"
                    " VALUES (:id, 'dp', 'llm.tokens', 'acme-corp', :time, 'openai', 'gpt-4o',"
                    " 'input', :n, :status, 'chat', '', false, :time)"
                ),
                {
                    "id": f"old-{i}",
                    "time": (T0 + timedelta(minutes=minutes)).replace(tzinfo=None),
                    "n": n,
                    "status": status,
                },
            )
    engine.dispose()
    # when it is migrated, the rollups hold them, and reads through rollups see them.
    db = Database.connect(db_url)
    try:
        with db.begin() as conn:
            assert (
                tokens.sum_tokens(
                    conn, subjects=["acme-corp"], start=T0, end=T0 + timedelta(hours=2), filters={}
                )
                == 15
            )
            rows = query(conn, meter="llm_tokens", group_by=["status_code"], window=WindowSize.HOUR)
        assert [(r.window_start, r.group["status_code"], r.value) for r in rows] == [
            (T0, "200", Decimal(15)),
            (T0 + timedelta(hours=1), "500", Decimal(7)),
        ]
    finally:
        db.dispose()


def test_rollup_dimension_text_is_canonical_for_any_model_name(db: Database) -> None:
    # PostgreSQL builds it in SQL, SQLite and reads in Python: the same text either way.
    model = 'm"od\\el/ü\t\x01😀'
    event = UsageEvent(
        id="odd",
        source="dp",
        type="llm.tokens",
        subject="acme-corp",
        time=T0,
        provider="openai",
        model=model,
        token_type=TokenType.INPUT,
        tokens=3,
        status_code=200,
    )
    with db.begin() as conn:
        tokens.insert_events(conn, [event], ingest_time=T0)
        stored = conn.execute(select(s.usage_rollups.c.dimensions)).scalar_one()
    assert stored == tokens.llm_dimensions(
        model=model, provider="openai", route="", status_code=200, token_type="input"
    )


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=st.lists(st.integers(min_value=0, max_value=6 * 3600 - 1), max_size=15),
    late=st.lists(st.integers(min_value=0, max_value=6 * 3600 - 1), max_size=3),
    cut=st.integers(min_value=1, max_value=6 * 3600 - 1),
)
def test_first_unbilled_time_finds_late_events_through_billed_hour_counts(
    db: Database, before: list[int], late: list[int], cut: int
) -> None:
    from controlplane.invoicing import storage as invoices
    from controlplane.invoicing.types import InvoiceState
    from controlplane.usage import rollups as rollups_of

    # Given events billed by an invoice up to a cut anywhere in an hour,
    tag = uuid.uuid4().hex[:8]
    subject, subscription = f"s{tag}", f"sub-{tag}"

    def events(seconds: list[int], prefix: str) -> list[UsageEvent]:
        return [
            UsageEvent(
                id=f"{tag}-{prefix}{i}",
                source="dp",
                type="llm.tokens",
                subject=subject,
                time=T0 + timedelta(seconds=second),
                provider="openai",
                model="gpt-4o",
                token_type=TokenType.INPUT,
                tokens=1,
                status_code=200,
            )
            for i, second in enumerate(seconds)
        ]

    end = T0 + timedelta(hours=6)
    with db.begin() as conn:
        tokens.insert_events(conn, events(before, "b"), ingest_time=T0)
        conn.execute(insert(s.customers).values(key=tag, name=tag, create_time=T0, update_time=T0))
        row = invoices.insert_invoice_row(
            conn,
            customer=tag,
            currency="USD",
            period_start=T0,
            period_end=T0 + timedelta(seconds=cut),
            state=InvoiceState.GATHERING,
            now=T0,
        )
        invoices.mark_billed(
            conn,
            subscription=subscription,
            invoice_id=row.id,
            subjects=[subject],
            start=T0,
            end=T0 + timedelta(seconds=cut),
        )
    with db.begin() as conn:
        counted = rollups_of.billed_counts(
            conn, subscription=subscription, start=T0 - timedelta(hours=1), end=end
        )
    assert sum(counted.values()) == len([x for x in before if x < cut])
    # when late events arrive anywhere,
    with db.begin() as conn:
        tokens.insert_events(conn, events(late, "l"), ingest_time=T0)
    # then the earliest unbilled event is exactly what a scan of every event finds.
    billed_until = T0 + timedelta(seconds=cut)
    unbilled = [T0 + timedelta(seconds=x) for x in late] + [
        T0 + timedelta(seconds=x) for x in before if T0 + timedelta(seconds=x) >= billed_until
    ]
    with db.begin() as conn:
        found = invoices.first_unbilled_time(
            conn, subscription=subscription, subjects=[subject], start=T0, end=end
        )
    assert found == (min(unbilled) if unbilled else None)


def test_remembered_token_totals_never_outlive_their_transaction_or_an_insert(
    db: Database,
) -> None:
    def one(id: str) -> list[UsageEvent]:
        return [
            UsageEvent(
                id=id,
                source="dp",
                type="llm.tokens",
                subject="acme-corp",
                time=T0 + timedelta(minutes=90),
                provider="openai",
                model="gpt-4o",
                token_type=TokenType.INPUT,
                tokens=5,
                status_code=200,
            )
        ]

    span = {"subjects": ["acme-corp"], "start": T0, "end": T0 + timedelta(hours=3), "filters": {}}
    with db.begin() as conn:
        assert tokens.sum_tokens(conn, **span) == 0  # type: ignore[arg-type]
        tokens.insert_events(conn, one("a"), ingest_time=T0)
        assert tokens.sum_tokens(conn, **span) == 5  # type: ignore[arg-type]
    for id, total in (("b", 10), ("c", 15)):
        with db.begin() as conn:
            tokens.insert_events(conn, one(id), ingest_time=T0)
        with db.begin() as conn:
            assert tokens.sum_tokens(conn, **span) == total  # type: ignore[arg-type]
        with db.engine.connect() as conn:  # no explicit transaction: nothing remembered
            assert tokens.sum_tokens(conn, **span) == total  # type: ignore[arg-type]
