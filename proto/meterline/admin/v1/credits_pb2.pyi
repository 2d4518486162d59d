import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from meterline.admin.v1 import billing_pb2 as _billing_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreditFunding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDIT_FUNDING_UNSPECIFIED: _ClassVar[CreditFunding]
    CREDIT_FUNDING_INVOICE: _ClassVar[CreditFunding]
    CREDIT_FUNDING_PROMOTIONAL: _ClassVar[CreditFunding]
    CREDIT_FUNDING_EXTERNAL: _ClassVar[CreditFunding]

class CreditTransactionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDIT_TRANSACTION_TYPE_UNSPECIFIED: _ClassVar[CreditTransactionType]
    CREDIT_TRANSACTION_TYPE_FUNDED: _ClassVar[CreditTransactionType]
    CREDIT_TRANSACTION_TYPE_CONSUMED: _ClassVar[CreditTransactionType]
    CREDIT_TRANSACTION_TYPE_EXPIRED: _ClassVar[CreditTransactionType]
    CREDIT_TRANSACTION_TYPE_VOIDED: _ClassVar[CreditTransactionType]
    CREDIT_TRANSACTION_TYPE_ADJUSTED: _ClassVar[CreditTransactionType]

class CreditRechargeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDIT_RECHARGE_MODE_UNSPECIFIED: _ClassVar[CreditRechargeMode]
    CREDIT_RECHARGE_MODE_THRESHOLD: _ClassVar[CreditRechargeMode]
    CREDIT_RECHARGE_MODE_TARGET: _ClassVar[CreditRechargeMode]
CREDIT_FUNDING_UNSPECIFIED: CreditFunding
CREDIT_FUNDING_INVOICE: CreditFunding
CREDIT_FUNDING_PROMOTIONAL: CreditFunding
CREDIT_FUNDING_EXTERNAL: CreditFunding
CREDIT_TRANSACTION_TYPE_UNSPECIFIED: CreditTransactionType
CREDIT_TRANSACTION_TYPE_FUNDED: CreditTransactionType
CREDIT_TRANSACTION_TYPE_CONSUMED: CreditTransactionType
CREDIT_TRANSACTION_TYPE_EXPIRED: CreditTransactionType
CREDIT_TRANSACTION_TYPE_VOIDED: CreditTransactionType
CREDIT_TRANSACTION_TYPE_ADJUSTED: CreditTransactionType
CREDIT_RECHARGE_MODE_UNSPECIFIED: CreditRechargeMode
CREDIT_RECHARGE_MODE_THRESHOLD: CreditRechargeMode
CREDIT_RECHARGE_MODE_TARGET: CreditRechargeMode

class CreditGrant(_message.Message):
    __slots__ = ("name", "id", "customer", "amount", "currency", "funding", "priority", "effective_time", "expire_time", "features", "key", "description", "remaining", "void_time", "create_time", "expires_after")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    FUNDING_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    VOID_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    customer: str
    amount: str
    currency: str
    funding: CreditFunding
    priority: int
    effective_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    features: _containers.RepeatedScalarFieldContainer[str]
    key: str
    description: str
    remaining: str
    void_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    expires_after: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., customer: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., funding: _Optional[_Union[CreditFunding, str]] = ..., priority: _Optional[int] = ..., effective_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ..., key: _Optional[str] = ..., description: _Optional[str] = ..., remaining: _Optional[str] = ..., void_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_after: _Optional[str] = ...) -> None: ...

class CreateCreditGrantRequest(_message.Message):
    __slots__ = ("parent", "credit_grant", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_GRANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    credit_grant: CreditGrant
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., credit_grant: _Optional[_Union[CreditGrant, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetCreditGrantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCreditGrantsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCreditGrantsResponse(_message.Message):
    __slots__ = ("credit_grants", "next_page_token")
    CREDIT_GRANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    credit_grants: _containers.RepeatedCompositeFieldContainer[CreditGrant]
    next_page_token: str
    def __init__(self, credit_grants: _Optional[_Iterable[_Union[CreditGrant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VoidCreditGrantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCreditBalanceRequest(_message.Message):
    __slots__ = ("customer", "time", "burn_window_days")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    BURN_WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    customer: str
    time: _timestamp_pb2.Timestamp
    burn_window_days: int
    def __init__(self, customer: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., burn_window_days: _Optional[int] = ...) -> None: ...

class CreditGrantBalance(_message.Message):
    __slots__ = ("grant", "key", "remaining", "priority", "expire_time")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    grant: str
    key: str
    remaining: str
    priority: int
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, grant: _Optional[str] = ..., key: _Optional[str] = ..., remaining: _Optional[str] = ..., priority: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreditBalance(_message.Message):
    __slots__ = ("customer", "currency", "settled", "live", "time", "grants", "pending", "burn_per_day", "burn_window_days", "spent_in_window", "burn_window_start", "run_out_time")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    BURN_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    BURN_WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    SPENT_IN_WINDOW_FIELD_NUMBER: _ClassVar[int]
    BURN_WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    RUN_OUT_TIME_FIELD_NUMBER: _ClassVar[int]
    customer: str
    currency: str
    settled: str
    live: str
    time: _timestamp_pb2.Timestamp
    grants: _containers.RepeatedCompositeFieldContainer[CreditGrantBalance]
    pending: str
    burn_per_day: str
    burn_window_days: int
    spent_in_window: str
    burn_window_start: _timestamp_pb2.Timestamp
    run_out_time: _timestamp_pb2.Timestamp
    def __init__(self, customer: _Optional[str] = ..., currency: _Optional[str] = ..., settled: _Optional[str] = ..., live: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., grants: _Optional[_Iterable[_Union[CreditGrantBalance, _Mapping]]] = ..., pending: _Optional[str] = ..., burn_per_day: _Optional[str] = ..., burn_window_days: _Optional[int] = ..., spent_in_window: _Optional[str] = ..., burn_window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_out_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreditTransaction(_message.Message):
    __slots__ = ("id", "grant", "type", "amount", "currency", "time", "invoice", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    grant: str
    type: CreditTransactionType
    amount: str
    currency: str
    time: _timestamp_pb2.Timestamp
    invoice: str
    description: str
    def __init__(self, id: _Optional[str] = ..., grant: _Optional[str] = ..., type: _Optional[_Union[CreditTransactionType, str]] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., invoice: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListCreditTransactionsRequest(_message.Message):
    __slots__ = ("parent", "grant", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    grant: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., grant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCreditTransactionsResponse(_message.Message):
    __slots__ = ("credit_transactions", "next_page_token")
    CREDIT_TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    credit_transactions: _containers.RepeatedCompositeFieldContainer[CreditTransaction]
    next_page_token: str
    def __init__(self, credit_transactions: _Optional[_Iterable[_Union[CreditTransaction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateCreditTopUpRequest(_message.Message):
    __slots__ = ("parent", "amount")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    amount: str
    def __init__(self, parent: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class CreditRechargeRule(_message.Message):
    __slots__ = ("name", "customer", "mode", "threshold", "amount", "target", "minimum", "maximum", "max_count_per_period", "max_amount_per_period", "currency", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_PER_PERIOD_FIELD_NUMBER: _ClassVar[int]
    MAX_AMOUNT_PER_PERIOD_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    customer: str
    mode: CreditRechargeMode
    threshold: str
    amount: str
    target: str
    minimum: str
    maximum: str
    max_count_per_period: int
    max_amount_per_period: str
    currency: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., customer: _Optional[str] = ..., mode: _Optional[_Union[CreditRechargeMode, str]] = ..., threshold: _Optional[str] = ..., amount: _Optional[str] = ..., target: _Optional[str] = ..., minimum: _Optional[str] = ..., maximum: _Optional[str] = ..., max_count_per_period: _Optional[int] = ..., max_amount_per_period: _Optional[str] = ..., currency: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCreditRechargeRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateCreditRechargeRuleRequest(_message.Message):
    __slots__ = ("credit_recharge_rule", "allow_missing")
    CREDIT_RECHARGE_RULE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    credit_recharge_rule: CreditRechargeRule
    allow_missing: bool
    def __init__(self, credit_recharge_rule: _Optional[_Union[CreditRechargeRule, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class DeleteCreditRechargeRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreditAlert(_message.Message):
    __slots__ = ("name", "customer", "key", "channel", "percents", "amounts", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PERCENTS_FIELD_NUMBER: _ClassVar[int]
    AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    customer: str
    key: str
    channel: str
    percents: _containers.RepeatedScalarFieldContainer[str]
    amounts: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., customer: _Optional[str] = ..., key: _Optional[str] = ..., channel: _Optional[str] = ..., percents: _Optional[_Iterable[str]] = ..., amounts: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCreditAlertRequest(_message.Message):
    __slots__ = ("parent", "credit_alert")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ALERT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    credit_alert: CreditAlert
    def __init__(self, parent: _Optional[str] = ..., credit_alert: _Optional[_Union[CreditAlert, _Mapping]] = ...) -> None: ...

class ListCreditAlertsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCreditAlertsResponse(_message.Message):
    __slots__ = ("credit_alerts", "next_page_token")
    CREDIT_ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    credit_alerts: _containers.RepeatedCompositeFieldContainer[CreditAlert]
    next_page_token: str
    def __init__(self, credit_alerts: _Optional[_Iterable[_Union[CreditAlert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCreditAlertRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
