from meterline.dataplane.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("id", "hostname", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    version: str
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ConfigRequest(_message.Message):
    __slots__ = ("node", "version_info", "response_nonce", "error_detail")
    NODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_NONCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    node: Node
    version_info: str
    response_nonce: str
    error_detail: ErrorDetail
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., version_info: _Optional[str] = ..., response_nonce: _Optional[str] = ..., error_detail: _Optional[_Union[ErrorDetail, _Mapping]] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ConfigResponse(_message.Message):
    __slots__ = ("version_info", "nonce", "snapshot", "usage_epoch", "usage_sequence")
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    USAGE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    USAGE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    version_info: str
    nonce: str
    snapshot: _snapshot_pb2.Snapshot
    usage_epoch: str
    usage_sequence: int
    def __init__(self, version_info: _Optional[str] = ..., nonce: _Optional[str] = ..., snapshot: _Optional[_Union[_snapshot_pb2.Snapshot, _Mapping]] = ..., usage_epoch: _Optional[str] = ..., usage_sequence: _Optional[int] = ...) -> None: ...
