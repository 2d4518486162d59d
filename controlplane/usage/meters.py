"""Operator meters (OpenMeter's model) and CloudEvents-shaped usage events.

A meter reads events of one ``type``: the value at ``value_property`` (a JSONPath into the
event's ``data``; none for COUNT) aggregated by SUM, COUNT, MAX, UNIQUE_COUNT or LATEST, per
group of ``group_by`` dimensions (each a JSONPath). Paths are parsed by jsonpath-ng and must
select at most one value: fields and indices only (``$.units``, ``$.a.b``, ``$.items[0]``).

Pure code: no database, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import orjson
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.jsonpath import Child, Fields, Index, Root
from jsonpath_ng.parser import parse

from controlplane.errors import InvalidArgument
from controlplane.usage.quantities import meter_value_problem

LLM_TOKENS = "llm_tokens"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,199}$")
_DIMENSION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class MeterAggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    MAX = "MAX"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    LATEST = "LATEST"

    @property
    def rolls_up(self) -> bool:
        """Whether hourly rollups answer it (LATEST and UNIQUE_COUNT read raw events)."""
        return self in (MeterAggregation.SUM, MeterAggregation.COUNT, MeterAggregation.MAX)


@dataclass(frozen=True)
class OperatorMeter:
    """A meter defined by an operator; immutable once created."""

    key: str
    event_type: str
    aggregation: MeterAggregation
    value_property: str | None = None
    group_by: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    create_time: datetime | None = None


Path = tuple[str | int, ...]


def parse_path(text: str) -> Path:
    """The steps of a single-value JSONPath (``$.a.b[0]`` -> ``("a", "b", 0)``)."""
    if not text.startswith("$"):
        raise InvalidArgument(f'JSONPath {text!r} must start with "$" (like "$.units")')
    try:
        expr = parse(text)
    except (JsonPathLexerError, JsonPathParserError, Exception) as error:
        raise InvalidArgument(f"JSONPath {text!r} does not parse: {error}") from None
    steps: list[str | int] = []
    node: Any = expr
    while isinstance(node, Child):
        right = node.right
        if isinstance(right, Fields) and len(right.fields) == 1 and right.fields[0] != "*":
            steps.append(right.fields[0])
        elif isinstance(right, Index) and len(right.indices) == 1:
            steps.append(int(right.indices[0]))
        else:
            raise InvalidArgument(
                f"JSONPath {text!r} must select one value: fields and indices only "
                f'(like "$.units" or "$.items[0].n"), not {right}'
            )
        node = node.left
    if not isinstance(node, Root):
        raise InvalidArgument(
            f"JSONPath {text!r} must select one value: fields and indices only "
            f'(like "$.units" or "$.items[0].n"), not {node}'
        )
    if not steps:
        raise InvalidArgument(f'JSONPath {text!r} must name a property (like "$.units")')
    return tuple(reversed(steps))


_MISSING = object()


def _walk(data: Any, path: Path) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or not -len(data) <= step < len(data):
                return _MISSING
            data = data[step]
        else:
            if not isinstance(data, dict) or step not in data:
                return _MISSING
            data = data[step]
    return data


def check_meter(meter: OperatorMeter) -> list[str]:
    """Problems with a meter definition, each a sentence; empty if it is valid."""
    problems = []
    if meter.key == LLM_TOKENS:
        problems.append(f'key "{LLM_TOKENS}" is reserved for the built-in token meter')
    elif not _KEY.match(meter.key):
        problems.append(
            f'key "{meter.key}" must start with a letter or digit and contain only '
            'letters, digits and "._~-"'
        )
    if not meter.event_type.strip():
        problems.append("event_type is required")
    if meter.aggregation is MeterAggregation.COUNT:
        if meter.value_property:
            problems.append("a COUNT meter counts events and takes no value_property")
    elif not meter.value_property:
        problems.append(f"a {meter.aggregation.value} meter needs a value_property (like $.units)")
    else:
        try:
            parse_path(meter.value_property)
        except InvalidArgument as error:
            problems.append(f"value_property: {error}")
    for dimension, path in meter.group_by.items():
        if not _DIMENSION.match(dimension):
            problems.append(
                f'group_by: dimension name "{dimension}" must be letters, digits and "_"'
            )
        try:
            parse_path(path)
        except InvalidArgument as error:
            problems.append(f"group_by.{dimension}: {error}")
    return problems


def parse_aggregation(text: str) -> MeterAggregation:
    try:
        return MeterAggregation(text.upper())
    except ValueError:
        known = ", ".join(a.value for a in MeterAggregation)
        raise InvalidArgument(f"unknown aggregation {text!r}; expected one of {known}") from None


class Unreadable(Exception):
    """An event a meter cannot read; the message says why."""


@dataclass(frozen=True)
class Reading:
    """What a meter reads from one event: its value and its dimensions."""

    value: Decimal | str | None
    dimensions: Mapping[str, str]


def dimension_text(value: Any) -> str:
    """A group-by value as text: strings as they are, anything else as JSON; missing is ""."""
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def canonical_dimensions(dimensions: Mapping[str, str]) -> str:
    """The rollup key of a dimension set: JSON with sorted keys."""
    return orjson.dumps(dict(dimensions), option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class CompiledMeter:
    """A meter with its paths parsed once, ready to read events."""

    meter: OperatorMeter
    value_path: Path | None
    group_paths: tuple[tuple[str, Path], ...]

    @staticmethod
    def of(meter: OperatorMeter) -> CompiledMeter:
        problems = check_meter(meter)
        if problems:
            raise InvalidArgument(f"meter {meter.key!r}: " + "; ".join(problems))
        return CompiledMeter(
            meter=meter,
            value_path=parse_path(meter.value_property) if meter.value_property else None,
            group_paths=tuple((d, parse_path(p)) for d, p in sorted(meter.group_by.items())),
        )

    def read(self, data: Any) -> Reading:
        """Value and dimensions of an event's data; ``Unreadable`` with the reason if none."""
        dimensions = {d: dimension_text(_walk(data, p)) for d, p in self.group_paths}
        aggregation = self.meter.aggregation
        if aggregation is MeterAggregation.COUNT:
            return Reading(None, dimensions)
        assert self.value_path is not None
        raw = _walk(data, self.value_path)
        where = f"meter {self.meter.key}: {self.meter.value_property}"
        if raw is _MISSING or raw is None:
            raise Unreadable(f"{where} is missing from data")
        if aggregation is MeterAggregation.UNIQUE_COUNT:
            if isinstance(raw, (dict, list)):
                raise Unreadable(f"{where} must be a string or a number, got {type(raw).__name__}")
            return Reading(dimension_text(raw), dimensions)
        return Reading(_number(raw, where), dimensions)


def _number(raw: Any, where: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str, Decimal)):
        raise Unreadable(f"{where} must be a number, got {orjson.dumps(raw).decode()}")
    if isinstance(raw, str) and len(raw) > 100:
        raise Unreadable(f"{where} must be a number of at most 100 characters")
    try:
        # Floats go through their shortest repr, so 0.1 reads as 0.1, not 0.1000000000000000055.
        # (JSON numbers a float cannot hold exactly arrive as Decimal: api/operator/usage.py.)
        value = Decimal(raw) if not isinstance(raw, float) else Decimal(repr(raw))
    except InvalidOperation:
        raise Unreadable(f"{where} must be a number, got {raw!r}") from None
    if not value.is_finite():
        raise Unreadable(f"{where} must be a finite number, got {raw!r}")
    problem = meter_value_problem(value)
    if problem is not None:
        raise Unreadable(f"{where} {problem}")
    return value


# A run of 16 or more digits (dots between them allowed): a number orjson may have read as a
# float that cannot hold it exactly (integers past 2^64, decimals past 15 digits).
_LONG_NUMBER = re.compile(r"\d(?:\.?\d){15}")


def loads_exact(text: str | bytes) -> Any:
    """JSON with every number exact: orjson, or where a number is too long for what orjson
    reads (a float), the standard library with Decimal for non-integers. ValueError if it is
    not JSON."""
    if _LONG_NUMBER.search(text if isinstance(text, str) else text.decode()) is None:
        return orjson.loads(text)
    return json.loads(text, parse_float=Decimal)


def _exact_number(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps_exact(data: Any) -> str:
    """JSON text of what ``loads_exact`` read: Decimal numbers written as they are."""
    return orjson.dumps(data, default=_exact_number).decode()


# CloudEvents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudEvent:
    """A usage event in the CloudEvents shape: idempotent by (source, id)."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: Any


def parse_cloudevent(obj: Any, *, now: datetime) -> CloudEvent:
    """A CloudEvents JSON object (structured mode) -> CloudEvent; InvalidArgument if malformed.

    ``specversion`` must be "1.0" when given; ``time`` (RFC 3339) defaults to ``now``;
    ``data`` must be a JSON object (or absent for COUNT meters).
    """
    if not isinstance(obj, dict):
        raise InvalidArgument("an event must be a JSON object")
    version = obj.get("specversion", "1.0")
    if version != "1.0":
        raise InvalidArgument(f'specversion must be "1.0", got {version!r}')
    fields = {}
    for name in ("id", "source", "type", "subject"):
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidArgument(f"{name} is required (a non-empty string)")
        if len(value) > 200:
            raise InvalidArgument(f"{name} is longer than 200 characters")
        fields[name] = value
    time = obj.get("time")
    if time is None:
        when = now
    elif isinstance(time, str):
        when = parse_time(time)
    else:
        raise InvalidArgument(f"time must be an RFC 3339 string, got {time!r}")
    data = obj.get("data", {})
    content_type = obj.get("datacontenttype", "application/json")
    if content_type != "application/json":
        raise InvalidArgument(f'datacontenttype must be "application/json", got {content_type!r}')
    if not isinstance(data, dict):
        raise InvalidArgument("data must be a JSON object")
    return CloudEvent(time=when, data=data, **fields)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with an offset (``2026-11-01T10:00:00Z``) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"time {text!r} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise InvalidArgument(f"time {text!r} has no UTC offset (add Z or +00:00)")
    return value.astimezone(UTC)
