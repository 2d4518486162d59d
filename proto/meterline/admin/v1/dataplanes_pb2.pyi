import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyncStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATUS_UNSPECIFIED: _ClassVar[SyncStatus]
    SYNC_STATUS_CONNECTED: _ClassVar[SyncStatus]
    SYNC_STATUS_IN_SYNC: _ClassVar[SyncStatus]
    SYNC_STATUS_NACKED: _ClassVar[SyncStatus]
    SYNC_STATUS_DISCONNECTED: _ClassVar[SyncStatus]
    SYNC_STATUS_INCOMPATIBLE: _ClassVar[SyncStatus]
    SYNC_STATUS_STALE: _ClassVar[SyncStatus]
SYNC_STATUS_UNSPECIFIED: SyncStatus
SYNC_STATUS_CONNECTED: SyncStatus
SYNC_STATUS_IN_SYNC: SyncStatus
SYNC_STATUS_NACKED: SyncStatus
SYNC_STATUS_DISCONNECTED: SyncStatus
SYNC_STATUS_INCOMPATIBLE: SyncStatus
SYNC_STATUS_STALE: SyncStatus

class DataPlane(_message.Message):
    __slots__ = ("name", "node_id", "hostname", "version", "config_version", "last_seen_time", "sync_status", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    node_id: str
    hostname: str
    version: str
    config_version: str
    last_seen_time: _timestamp_pb2.Timestamp
    sync_status: SyncStatus
    error: str
    def __init__(self, name: _Optional[str] = ..., node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., config_version: _Optional[str] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sync_status: _Optional[_Union[SyncStatus, str]] = ..., error: _Optional[str] = ...) -> None: ...

class ListDataPlanesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDataPlanesResponse(_message.Message):
    __slots__ = ("data_planes", "next_page_token")
    DATA_PLANES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    data_planes: _containers.RepeatedCompositeFieldContainer[DataPlane]
    next_page_token: str
    def __init__(self, data_planes: _Optional[_Iterable[_Union[DataPlane, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDataPlaneRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
