import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageMeterAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_METER_AGGREGATION_UNSPECIFIED: _ClassVar[UsageMeterAggregation]
    USAGE_METER_AGGREGATION_SUM: _ClassVar[UsageMeterAggregation]
    USAGE_METER_AGGREGATION_COUNT: _ClassVar[UsageMeterAggregation]
    USAGE_METER_AGGREGATION_MAX: _ClassVar[UsageMeterAggregation]
    USAGE_METER_AGGREGATION_UNIQUE_COUNT: _ClassVar[UsageMeterAggregation]
    USAGE_METER_AGGREGATION_LATEST: _ClassVar[UsageMeterAggregation]

class WindowSize(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_SIZE_UNSPECIFIED: _ClassVar[WindowSize]
    WINDOW_SIZE_MINUTE: _ClassVar[WindowSize]
    WINDOW_SIZE_HOUR: _ClassVar[WindowSize]
    WINDOW_SIZE_DAY: _ClassVar[WindowSize]
USAGE_METER_AGGREGATION_UNSPECIFIED: UsageMeterAggregation
USAGE_METER_AGGREGATION_SUM: UsageMeterAggregation
USAGE_METER_AGGREGATION_COUNT: UsageMeterAggregation
USAGE_METER_AGGREGATION_MAX: UsageMeterAggregation
USAGE_METER_AGGREGATION_UNIQUE_COUNT: UsageMeterAggregation
USAGE_METER_AGGREGATION_LATEST: UsageMeterAggregation
WINDOW_SIZE_UNSPECIFIED: WindowSize
WINDOW_SIZE_MINUTE: WindowSize
WINDOW_SIZE_HOUR: WindowSize
WINDOW_SIZE_DAY: WindowSize

class UsageMeter(_message.Message):
    __slots__ = ("name", "key", "description", "event_type", "aggregation", "value_property", "group_by", "create_time")
    class GroupByEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    VALUE_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    description: str
    event_type: str
    aggregation: UsageMeterAggregation
    value_property: str
    group_by: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., description: _Optional[str] = ..., event_type: _Optional[str] = ..., aggregation: _Optional[_Union[UsageMeterAggregation, str]] = ..., value_property: _Optional[str] = ..., group_by: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateMeterRequest(_message.Message):
    __slots__ = ("meter",)
    METER_FIELD_NUMBER: _ClassVar[int]
    meter: UsageMeter
    def __init__(self, meter: _Optional[_Union[UsageMeter, _Mapping]] = ...) -> None: ...

class GetMeterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListUsageMetersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsageMetersResponse(_message.Message):
    __slots__ = ("meters", "next_page_token")
    METERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    meters: _containers.RepeatedCompositeFieldContainer[UsageMeter]
    next_page_token: str
    def __init__(self, meters: _Optional[_Iterable[_Union[UsageMeter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteMeterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class IngestEventsRequest(_message.Message):
    __slots__ = ("events_json",)
    EVENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    events_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, events_json: _Optional[_Iterable[str]] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("index", "id", "source", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    source: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., source: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedEvent]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedEvent, _Mapping]]] = ...) -> None: ...

class UsageEvent(_message.Message):
    __slots__ = ("id", "source", "type", "subject", "time", "data", "value", "ingest_time")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    INGEST_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    type: str
    subject: str
    time: _timestamp_pb2.Timestamp
    data: _containers.ScalarMap[str, str]
    value: int
    ingest_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., type: _Optional[str] = ..., subject: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Mapping[str, str]] = ..., value: _Optional[int] = ..., ingest_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListUsageEventsRequest(_message.Message):
    __slots__ = ("subject", "page_size", "page_token", "order_by")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    subject: str
    page_size: int
    page_token: str
    order_by: str
    def __init__(self, subject: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListUsageEventsResponse(_message.Message):
    __slots__ = ("usage_events", "next_page_token")
    USAGE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    usage_events: _containers.RepeatedCompositeFieldContainer[UsageEvent]
    next_page_token: str
    def __init__(self, usage_events: _Optional[_Iterable[_Union[UsageEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class QueryMeterRequest(_message.Message):
    __slots__ = ("meter", "subjects", "filters", "group_by", "start_time", "end_time", "window_size")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METER_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    meter: str
    subjects: _containers.RepeatedScalarFieldContainer[str]
    filters: _containers.ScalarMap[str, str]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    window_size: WindowSize
    def __init__(self, meter: _Optional[str] = ..., subjects: _Optional[_Iterable[str]] = ..., filters: _Optional[_Mapping[str, str]] = ..., group_by: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_size: _Optional[_Union[WindowSize, str]] = ...) -> None: ...

class MeterRow(_message.Message):
    __slots__ = ("group", "value", "window_start", "window_end", "event_count")
    class GroupEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    group: _containers.ScalarMap[str, str]
    value: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    event_count: int
    def __init__(self, group: _Optional[_Mapping[str, str]] = ..., value: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_count: _Optional[int] = ...) -> None: ...

class QueryMeterResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[MeterRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[MeterRow, _Mapping]]] = ...) -> None: ...
