"""Operator meters to UsageMeter messages and back."""

from __future__ import annotations

from controlplane.api import convert
from controlplane.errors import InvalidArgument
from controlplane.usage.meters import MeterAggregation, OperatorMeter
from meterline.admin.v1 import usage_pb2

AGGREGATIONS = {
    MeterAggregation.SUM: usage_pb2.USAGE_METER_AGGREGATION_SUM,
    MeterAggregation.COUNT: usage_pb2.USAGE_METER_AGGREGATION_COUNT,
    MeterAggregation.MAX: usage_pb2.USAGE_METER_AGGREGATION_MAX,
    MeterAggregation.UNIQUE_COUNT: usage_pb2.USAGE_METER_AGGREGATION_UNIQUE_COUNT,
    MeterAggregation.LATEST: usage_pb2.USAGE_METER_AGGREGATION_LATEST,
}


FROM_AGGREGATION = {v: k for k, v in AGGREGATIONS.items()}


def meter_to_proto(meter: OperatorMeter) -> usage_pb2.UsageMeter:
    return usage_pb2.UsageMeter(
        name=f"meters/{meter.key}",
        key=meter.key,
        description=meter.description,
        event_type=meter.event_type,
        aggregation=AGGREGATIONS[meter.aggregation],
        value_property=meter.value_property or "",
        group_by=dict(meter.group_by),
        create_time=convert.to_timestamp(meter.create_time),
    )


def meter_from_proto(message: usage_pb2.UsageMeter) -> OperatorMeter:
    aggregation = FROM_AGGREGATION.get(message.aggregation)
    if aggregation is None:
        known = ", ".join(a.value for a in MeterAggregation)
        raise InvalidArgument(f"meter.aggregation is required: one of {known}")
    if not message.key:
        raise InvalidArgument("meter.key is required")
    return OperatorMeter(
        key=message.key,
        description=message.description,
        event_type=message.event_type,
        aggregation=aggregation,
        value_property=message.value_property or None,
        group_by=dict(message.group_by),
    )
