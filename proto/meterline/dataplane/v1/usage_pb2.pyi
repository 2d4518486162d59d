import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_TYPE_UNSPECIFIED: _ClassVar[TokenType]
    TOKEN_TYPE_INPUT: _ClassVar[TokenType]
    TOKEN_TYPE_OUTPUT: _ClassVar[TokenType]
    TOKEN_TYPE_CACHED_INPUT: _ClassVar[TokenType]
    TOKEN_TYPE_REASONING: _ClassVar[TokenType]
    TOKEN_TYPE_CACHE_WRITE: _ClassVar[TokenType]
TOKEN_TYPE_UNSPECIFIED: TokenType
TOKEN_TYPE_INPUT: TokenType
TOKEN_TYPE_OUTPUT: TokenType
TOKEN_TYPE_CACHED_INPUT: TokenType
TOKEN_TYPE_REASONING: TokenType
TOKEN_TYPE_CACHE_WRITE: TokenType

class UsageEvent(_message.Message):
    __slots__ = ("id", "source", "type", "subject", "time", "llm_tokens")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LLM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    type: str
    subject: str
    time: _timestamp_pb2.Timestamp
    llm_tokens: LlmTokens
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., type: _Optional[str] = ..., subject: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., llm_tokens: _Optional[_Union[LlmTokens, _Mapping]] = ...) -> None: ...

class LlmTokens(_message.Message):
    __slots__ = ("provider", "model", "token_type", "tokens", "status_code", "route", "request_id", "estimated", "time_to_first_token_ms", "latency_ms", "attempt")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    token_type: TokenType
    tokens: int
    status_code: int
    route: str
    request_id: str
    estimated: bool
    time_to_first_token_ms: int
    latency_ms: int
    attempt: int
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., token_type: _Optional[_Union[TokenType, str]] = ..., tokens: _Optional[int] = ..., status_code: _Optional[int] = ..., route: _Optional[str] = ..., request_id: _Optional[str] = ..., estimated: _Optional[bool] = ..., time_to_first_token_ms: _Optional[int] = ..., latency_ms: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class UsageBatch(_message.Message):
    __slots__ = ("batch_id", "events")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    events: _containers.RepeatedCompositeFieldContainer[UsageEvent]
    def __init__(self, batch_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[UsageEvent, _Mapping]]] = ...) -> None: ...

class UsageAck(_message.Message):
    __slots__ = ("batch_id", "accepted_count", "duplicate_count", "usage_epoch", "usage_sequence")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    USAGE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    USAGE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    accepted_count: int
    duplicate_count: int
    usage_epoch: str
    usage_sequence: int
    def __init__(self, batch_id: _Optional[str] = ..., accepted_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., usage_epoch: _Optional[str] = ..., usage_sequence: _Optional[int] = ...) -> None: ...
