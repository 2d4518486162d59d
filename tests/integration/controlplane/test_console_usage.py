"""The console's usage reader equals ``QueryMeter`` over whole hours (SQLite and PostgreSQL).

The overview, the portal and ``/margin`` read ``llm_tokens`` rollups combined in SQL
(``usage.UsageReader``) and group them themselves; ``QueryMeter`` is the API's answer for the
same span. Both must agree for every window and grouping, subjects narrowed or not; and the
span the pages ask for ends at the end of the current hour, which holds every event so far.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from controlplane.api.auth import Scope, TokenEntry, hash_token
from controlplane.console import usage
from controlplane.console.api import ConsoleApi, Forbidden
from controlplane.console.app import Console
from controlplane.console.auth import Kind, Principal
from controlplane.usage.storage import insert_events
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import usage_pb2

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=3)
ADMIN = Principal(kind=Kind.OPERATOR, name="ops", scope=Scope.ADMIN)


def _events() -> list[UsageEvent]:
    events = []
    for i in range(90):
        events.append(
            UsageEvent(
                id=f"u-{i}",
                source="test",
                type="llm.tokens",
                subject=("alpha", "beta", "gamma")[i % 3],
                # Spread over three days, minutes apart, some in the same hour.
                time=START + timedelta(minutes=47 * i + 3),
                provider=("openai", "anthropic")[i % 2],
                model=("gpt-4o", "gpt-4o-mini", "claude-x")[i % 3 if i % 5 else 0],
                token_type=TokenType(("input", "output", "cached_input")[i % 3]),
                tokens=1000 + 37 * i,
                status_code=500 if i % 7 == 0 else 200,
                route=("chat", "batch")[i % 4 == 0],
            )
        )
    return events


@pytest.fixture
async def reader(harness) -> usage.UsageReader:
    with harness.cp.db.begin() as conn:
        insert_events(conn, _events(), ingest_time=END)
    return usage.UsageReader(harness.cp.db, ConsoleApi(harness.cp.servicers, ADMIN))


def _window(name: str | None) -> int:
    return {
        None: usage_pb2.WINDOW_SIZE_UNSPECIFIED,
        "hour": usage_pb2.WINDOW_SIZE_HOUR,
        "day": usage_pb2.WINDOW_SIZE_DAY,
    }[name]


@pytest.mark.parametrize("window", [None, "hour", "day"])
@pytest.mark.parametrize("by_subject", [False, True])
@pytest.mark.parametrize("subjects", [(), ("beta", "gamma")])
async def test_reader_rows_equal_query_meter(harness, reader, window, by_subject, subjects):
    group_by = [*usage.GROUPS, *(["subject"] if by_subject else [])]
    request = usage_pb2.QueryMeterRequest(
        meter="llm_tokens", group_by=group_by, window_size=_window(window), subjects=subjects
    )
    request.start_time.FromDatetime(START)
    request.end_time.FromDatetime(END)
    answer = await harness.usage.QueryMeter(request)
    expected = {
        (
            row.group.get("subject", ""),
            row.window_start.ToDatetime(UTC) if window else None,
            tuple(row.group[g] for g in usage.GROUPS),
        ): (Decimal(row.value), row.event_count)
        for row in answer.rows
    }
    found: dict[tuple[object, ...], list[object]] = defaultdict(lambda: [Decimal(0), 0])
    for row in await reader.rows(
        start=START, end=END, window=window, by_subject=by_subject, subjects=subjects
    ):
        key = (row.subject, row.window_start, tuple(row.group[g] for g in usage.GROUPS))
        found[key][0] += row.value
        found[key][1] += row.event_count
    assert {k: tuple(v) for k, v in found.items()} == expected
    assert len(expected) > 3


async def test_span_usage_reads_the_current_hour_whole(harness, reader):
    # 10:20 in the third day: the span ends at 11:00 and reads that hour's rollup whole. Here
    # the table holds the hour's later events too (stamped after "now"; in a running system
    # only a data plane with its clock ahead sends such): they count.
    now = START + timedelta(days=2, hours=10, minutes=20)
    hour_end = START + timedelta(days=2, hours=11)
    assert usage.rollup_end(now) == hour_end
    assert usage.rollup_end(START) == START
    shown = await usage.span_usage(reader, start=START, end=now, window="hour")
    stored = [e for e in _events() if e.time < hour_end]
    assert any(e.time >= now for e in stored)
    assert shown.tokens == sum(e.tokens for e in stored)
    inputs = [e for e in stored if e.token_type is TokenType.INPUT]
    assert shown.requests == len(inputs)
    assert shown.errors == sum(e.status_code >= 400 for e in inputs)
    # The chart's last hour (10:00) holds the events of 10:00-11:00.
    last = [e.tokens for e in stored if e.time >= START + timedelta(days=2, hours=10)]
    assert last and sum(v[-1] for v in shown.chart["series"].values()) == sum(last)


async def test_reader_refuses_partial_hours_and_other_scopes(harness, reader):
    with pytest.raises(ValueError, match="whole UTC hour"):
        await reader.rows(start=START, end=END - timedelta(minutes=1), window=None)
    portal = Principal(kind=Kind.PORTAL, name="t", customer="acme")
    checked = usage.UsageReader(harness.cp.db, ConsoleApi(harness.cp.servicers, portal))
    with pytest.raises(Forbidden):
        await checked.rows(start=START, end=END, window=None)


async def test_overview_by_hour_charts_the_last_48_hours_and_keeps_the_months_figures(
    harness, reader
):
    token = "mlt_usage-test-reader"
    app = Console(
        servicers=harness.cp.servicers,
        db=harness.cp.db,
        clock=harness.clock,
        tokens=[TokenEntry(name="viewer", scope=Scope.READ, hash=hash_token(token))],
    )
    now = START + timedelta(days=2, hours=10, minutes=20)
    harness.clock.set(now)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://console.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        by_day = (await client.get("/overview.json")).json()
        by_hour = (await client.get("/overview.json?window=hour")).json()
    hour_end = START + timedelta(days=2, hours=11)
    stored = [e for e in _events() if e.time < hour_end]
    for twin in (by_day, by_hour):
        assert twin["tokens"] == sum(e.tokens for e in stored)
    assert by_day["requests"] == by_hour["requests"]
    # 48 hourly points, the last the current hour; the chart holds those hours' tokens.
    first = hour_end - timedelta(hours=48)
    times = by_hour["chart"]["times"]
    assert times == [int((first + timedelta(hours=h)).timestamp()) for h in range(48)]
    charted = sum(e.tokens for e in stored if e.time >= first)
    assert sum(sum(v) for v in by_hour["chart"]["series"].values()) == charted < by_hour["tokens"]
    assert sum(sum(v) for v in by_hour["chart_by_type"]["series"].values()) == charted
    assert sum(sum(v) for v in by_hour["chart_by_customer"]["series"].values()) == charted
    # By day: every day of the month so far, all the tokens.
    assert len(by_day["chart"]["times"]) == 3
    assert sum(sum(v) for v in by_day["chart"]["series"].values()) == by_day["tokens"]
