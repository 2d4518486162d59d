"""The ``billing.meters`` list of a declarative document: operator meters, OpenMeter-style.

meters:
  - {key: api_calls, event_type: api.request, value_property: $.units,
     aggregation: SUM, group_by: {region: $.region}}
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.declarative.entry import Entry, describe
from controlplane.errors import InvalidArgument
from controlplane.usage.meters import (
    LLM_TOKENS,
    MeterAggregation,
    OperatorMeter,
    check_meter,
    parse_aggregation,
)

# The built-in meter's dimensions, for features that filter it.
LLM_TOKENS_DIMENSIONS = ("model", "provider", "type", "status_code", "route")

# Konnect users declare a token meter of their own; Meterline meters gateway tokens already.
LLM_TOKENS_HINT = (
    "is required: an operator meter counts events you send yourself (meterline usage ingest)."
    " To bill the tokens the gateway proxies, declare no meter: use the built-in meter"
    ' "llm_tokens" in your features (meter: llm_tokens) and filter it on its dimensions '
    + ", ".join(LLM_TOKENS_DIMENSIONS)
    + ' (type: "input" or "output"), e.g. {key: tokens-in, meter: llm_tokens,'
    " filters: {type: input}}"
)


def parse_meters(billing: Entry) -> dict[str, OperatorMeter]:
    """Meters of the section by key, in file order; problems go to ``billing.problems``."""
    meters: dict[str, OperatorMeter] = {}
    seen: dict[str, str] = {}
    for entry in billing.entries("meters", label="key"):
        meter = _meter(entry, seen)
        if meter is not None:
            meters[meter.key] = meter
    return meters


def _meter(entry: Entry, seen: dict[str, str]) -> OperatorMeter | None:
    before = len(entry.problems)
    entry.check_keys(
        ("key", "description", "event_type", "value_property", "aggregation", "group_by")
    )
    key = entry.string("key", required=True)
    if key is not None:
        if key in seen:
            entry.fail(f'duplicate meter key "{key}", already defined at {seen[key]}')
            key = None
        else:
            seen[key] = entry.where
    description = entry.string("description", default="")
    event_type = entry.string("event_type")
    if "event_type" not in entry.data:
        entry.fail_field("event_type", LLM_TOKENS_HINT)
        event_type = None
    value_property = entry.string("value_property", default="") or None
    aggregation: MeterAggregation | None = None
    text = entry.string("aggregation", required=True)
    if text is not None:
        try:
            aggregation = parse_aggregation(text)
        except InvalidArgument as error:
            entry.fail_field("aggregation", str(error))
    group_by: dict[str, str] = {}
    raw = entry.data.get("group_by")
    if raw is not None and not isinstance(raw, Mapping):
        entry.fail_field(
            "group_by", f"must be a mapping of dimension: JSONPath, got {describe(raw)}"
        )
    elif raw is not None:
        for dimension, path in raw.items():
            if not isinstance(path, str):
                entry.fail_field(
                    f"group_by.{dimension}", f"must be a JSONPath, got {describe(path)}"
                )
            else:
                group_by[str(dimension)] = path
    if len(entry.problems) > before or None in (key, description, event_type, aggregation):
        return None
    assert key is not None and event_type is not None and aggregation is not None
    meter = OperatorMeter(
        key=key,
        description=description or "",
        event_type=event_type,
        aggregation=aggregation,
        value_property=value_property,
        group_by=group_by,
    )
    for problem in check_meter(meter):
        entry.fail(problem)
    return meter if len(entry.problems) == before else None


def meter_dimensions(meter_key: str, meters: Mapping[str, OperatorMeter]) -> tuple[str, ...] | None:
    """The dimensions a feature of ``meter_key`` may filter on; None if no such meter."""
    if meter_key == LLM_TOKENS:
        return LLM_TOKENS_DIMENSIONS
    meter = meters.get(meter_key)
    return tuple(sorted(meter.group_by)) if meter is not None else None
