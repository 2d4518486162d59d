"""Operator meters: JSONPaths, definitions, readings, CloudEvents and aggregation semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from controlplane.errors import InvalidArgument
from controlplane.usage.aggregate import Point, WindowSize, aggregate, floor_time
from controlplane.usage.meters import (
    CompiledMeter,
    MeterAggregation,
    OperatorMeter,
    Unreadable,
    check_meter,
    parse_aggregation,
    parse_cloudevent,
    parse_path,
)

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SUM, COUNT, MAX = MeterAggregation.SUM, MeterAggregation.COUNT, MeterAggregation.MAX
UNIQUE, LATEST = MeterAggregation.UNIQUE_COUNT, MeterAggregation.LATEST


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        pytest.param("$.units", ("units",), id="field"),
        pytest.param("$.a.b", ("a", "b"), id="nested"),
        pytest.param("$.items[0].n", ("items", 0, "n"), id="index"),
        pytest.param('$["weird key"]', ("weird key",), id="quoted"),
    ],
)
def test_single_value_paths_parse(text: str, steps: tuple[object, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("units", 'must start with "\\$"', id="no-root"),
        pytest.param("$", "must name a property", id="root-only"),
        pytest.param("$.", "does not parse", id="dangling-dot"),
        pytest.param("$.a[*]", "must select one value", id="wildcard"),
        pytest.param("$..a", "must select one value", id="descendants"),
        pytest.param("$.a[0:2]", "must select one value", id="slice"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_path(text)


def meter(**fields: object) -> OperatorMeter:
    base: dict[str, object] = {
        "key": "api_calls",
        "event_type": "api.request",
        "aggregation": SUM,
        "value_property": "$.units",
    }
    base.update(fields)
    return OperatorMeter(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        pytest.param(meter(key="llm_tokens"), "reserved", id="reserved-key"),
        pytest.param(meter(key="bad key"), "must start with a letter", id="bad-key"),
        pytest.param(meter(event_type=" "), "event_type is required", id="no-event-type"),
        pytest.param(meter(aggregation=COUNT), "takes no value_property", id="count-with-value"),
        pytest.param(meter(value_property=None), "needs a value_property", id="sum-without"),
        pytest.param(meter(value_property="$.a[*]"), "value_property", id="bad-value-path"),
        pytest.param(meter(group_by={"region": "region"}), "group_by.region", id="bad-dim-path"),
        pytest.param(meter(group_by={"a-b": "$.x"}), "dimension name", id="bad-dim-name"),
    ],
)
def test_bad_meter_definitions_name_the_problem(definition: OperatorMeter, problem: str) -> None:
    problems = check_meter(definition)
    assert any(problem in p for p in problems), problems
    with pytest.raises(InvalidArgument):
        CompiledMeter.of(definition)


def test_aggregation_names_and_unknown_ones() -> None:
    assert parse_aggregation("unique_count") is UNIQUE
    with pytest.raises(InvalidArgument, match=r"unknown aggregation .AVG.*LATEST"):
        parse_aggregation("AVG")


@pytest.mark.parametrize(
    ("data", "value"),
    [
        pytest.param({"units": 3}, Decimal(3), id="int"),
        pytest.param({"units": 0.1}, Decimal("0.1"), id="float-shortest-repr"),
        pytest.param({"units": "2.50"}, Decimal("2.50"), id="decimal-string"),
        pytest.param({"units": -1}, Decimal(-1), id="negative"),
    ],
)
def test_values_read_as_exact_decimals(data: dict[str, object], value: Decimal) -> None:
    assert CompiledMeter.of(meter()).read(data).value == value


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param({}, "missing", id="missing"),
        pytest.param({"units": None}, "missing", id="null"),
        pytest.param({"units": "many"}, "must be a number", id="word"),
        pytest.param({"units": True}, "must be a number", id="bool"),
        pytest.param({"units": [1]}, "must be a number", id="list"),
        pytest.param({"units": "NaN"}, "finite", id="nan"),
    ],
)
def test_unreadable_values_say_why(data: dict[str, object], reason: str) -> None:
    with pytest.raises(Unreadable, match=reason):
        CompiledMeter.of(meter()).read(data)


def test_dimensions_read_as_text_and_missing_is_empty() -> None:
    compiled = CompiledMeter.of(
        meter(aggregation=COUNT, value_property=None, group_by={"region": "$.r", "n": "$.a.n"})
    )
    assert compiled.read({"r": "eu", "a": {"n": 7}}).dimensions == {"region": "eu", "n": "7"}
    assert compiled.read({}).dimensions == {"region": "", "n": ""}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param([], "must be a JSON object", id="not-object"),
        pytest.param({"source": "s", "type": "t", "subject": "x"}, "id is required", id="no-id"),
        pytest.param({"id": "1", "type": "t", "subject": "x"}, "source is required", id="no-src"),
        pytest.param({"id": "1", "source": "s", "type": "t"}, "subject is required", id="no-sub"),
        pytest.param(
            {"id": "1", "source": "s", "type": "t", "subject": "x", "specversion": "0.3"},
            "specversion",
            id="old-spec",
        ),
        pytest.param(
            {"id": "1", "source": "s", "type": "t", "subject": "x", "time": "yesterday"},
            "not an RFC 3339",
            id="bad-time",
        ),
        pytest.param(
            {"id": "1", "source": "s", "type": "t", "subject": "x", "time": "2026-11-01T10:00"},
            "no UTC offset",
            id="naive-time",
        ),
        pytest.param(
            {"id": "1", "source": "s", "type": "t", "subject": "x", "data": [1]},
            "data must be a JSON object",
            id="data-list",
        ),
    ],
)
def test_malformed_cloudevents_are_refused(event: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_cloudevent(event, now=T0)


def test_a_cloudevent_parses_with_its_time_in_utc() -> None:
    event = parse_cloudevent(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "s",
            "type": "t",
            "subject": "x",
            "time": "2026-11-01T12:00:00+02:00",
            "data": {"units": 1},
        },
        now=T0,
    )
    assert event.time == T0 and event.data == {"units": 1}
    assert (
        parse_cloudevent({"id": "1", "source": "s", "type": "t", "subject": "x"}, now=T0).time == T0
    )


# Aggregation semantics -------------------------------------------------------------------------

# (minutes after T0, region, value): two regions over three hours.
EVENTS = [
    (5, "eu", "3"),
    (20, "us", "1"),
    (50, "eu", "2"),
    (65, "eu", "7"),
    (70, "us", "1"),
    (125, "eu", "3"),
]


def points(*, values_as_text: bool = False) -> list[Point]:
    return [
        Point(
            "acme",
            T0 + timedelta(minutes=m),
            {"region": r},
            v if values_as_text else Decimal(v),
        )
        for m, r, v in EVENTS
    ]


def table(rows: list) -> list[tuple[int | None, str, str]]:  # type: ignore[type-arg]
    return [
        (
            None if r.window_start is None else int((r.window_start - T0).total_seconds() // 60),
            r.group.get("region", "*"),
            str(r.value),
        )
        for r in rows
    ]


@pytest.mark.parametrize(
    ("aggregation", "window", "group_by", "expected"),
    [
        pytest.param(SUM, None, [], [(None, "*", "17")], id="sum-total"),
        pytest.param(
            SUM, None, ["region"], [(None, "eu", "15"), (None, "us", "2")], id="sum-by-region"
        ),
        pytest.param(
            SUM,
            WindowSize.HOUR,
            ["region"],
            [(0, "eu", "5"), (0, "us", "1"), (60, "eu", "7"), (60, "us", "1"), (120, "eu", "3")],
            id="sum-hourly",
        ),
        pytest.param(COUNT, WindowSize.DAY, [], [(-600, "*", "6")], id="count-daily"),
        pytest.param(
            MAX, WindowSize.HOUR, [], [(0, "*", "3"), (60, "*", "7"), (120, "*", "3")], id="max"
        ),
        pytest.param(
            LATEST,
            None,
            ["region"],
            [(None, "eu", "3"), (None, "us", "1")],
            id="latest-by-region",
        ),
        pytest.param(
            LATEST,
            WindowSize.HOUR,
            [],
            [(0, "*", "2"), (60, "*", "1"), (120, "*", "3")],
            id="latest-hourly",
        ),
        pytest.param(
            UNIQUE,
            None,
            [],
            [(None, "*", "4")],
            id="unique-over-span-counts-a-value-once",
        ),
        pytest.param(
            UNIQUE,
            WindowSize.HOUR,
            [],
            [(0, "*", "3"), (60, "*", "2"), (120, "*", "1")],
            id="unique-hourly",
        ),
    ],
)
def test_aggregations_by_window_and_group(
    aggregation: MeterAggregation,
    window: WindowSize | None,
    group_by: list[str],
    expected: list[tuple[int | None, str, str]],
) -> None:
    rows = aggregate(
        points(values_as_text=aggregation is UNIQUE),
        aggregation=aggregation,
        group_by=group_by,
        window=window,
    )
    assert table(rows) == expected


def test_windows_are_utc_aligned_and_clipped_to_the_span() -> None:
    start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=100)
    inside = [p for p in points() if start <= p.time < end]
    rows = aggregate(inside, aggregation=SUM, window=WindowSize.HOUR, start=start, end=end)
    assert [(r.window_start, r.window_end, r.value) for r in rows] == [
        (start, T0 + timedelta(hours=1), Decimal(3)),
        (T0 + timedelta(hours=1), end, Decimal(8)),
    ]
    assert floor_time(T0 + timedelta(minutes=61, seconds=5), WindowSize.MINUTE) == T0 + timedelta(
        minutes=61
    )


def test_latest_ties_pick_the_larger_value_whatever_the_order() -> None:
    same_time = [Point("a", T0, {}, Decimal(v)) for v in ("1", "5", "2")]
    for ordering in (same_time, list(reversed(same_time))):
        assert aggregate(ordering, aggregation=LATEST)[0].value == Decimal(5)
