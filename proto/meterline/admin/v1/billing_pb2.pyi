import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from meterline.admin.v1 import catalog_pb2 as _catalog_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InvoiceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVOICE_STATE_UNSPECIFIED: _ClassVar[InvoiceState]
    INVOICE_STATE_GATHERING: _ClassVar[InvoiceState]
    INVOICE_STATE_DRAFT: _ClassVar[InvoiceState]
    INVOICE_STATE_ISSUED: _ClassVar[InvoiceState]
    INVOICE_STATE_PAID: _ClassVar[InvoiceState]
    INVOICE_STATE_PAYMENT_FAILED: _ClassVar[InvoiceState]
    INVOICE_STATE_VOID: _ClassVar[InvoiceState]

class InvoiceSyncState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVOICE_SYNC_STATE_UNSPECIFIED: _ClassVar[InvoiceSyncState]
    INVOICE_SYNC_STATE_NONE: _ClassVar[InvoiceSyncState]
    INVOICE_SYNC_STATE_PENDING: _ClassVar[InvoiceSyncState]
    INVOICE_SYNC_STATE_IN_PROGRESS: _ClassVar[InvoiceSyncState]
    INVOICE_SYNC_STATE_SYNCED: _ClassVar[InvoiceSyncState]
    INVOICE_SYNC_STATE_FAILED: _ClassVar[InvoiceSyncState]

class InvoiceLineType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVOICE_LINE_TYPE_UNSPECIFIED: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_FLAT: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_USAGE: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_DISCOUNT: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_MAXIMUM_COMMITMENT: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_MINIMUM_COMMITMENT: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_CREDIT: _ClassVar[InvoiceLineType]
    INVOICE_LINE_TYPE_UNCOVERED: _ClassVar[InvoiceLineType]
INVOICE_STATE_UNSPECIFIED: InvoiceState
INVOICE_STATE_GATHERING: InvoiceState
INVOICE_STATE_DRAFT: InvoiceState
INVOICE_STATE_ISSUED: InvoiceState
INVOICE_STATE_PAID: InvoiceState
INVOICE_STATE_PAYMENT_FAILED: InvoiceState
INVOICE_STATE_VOID: InvoiceState
INVOICE_SYNC_STATE_UNSPECIFIED: InvoiceSyncState
INVOICE_SYNC_STATE_NONE: InvoiceSyncState
INVOICE_SYNC_STATE_PENDING: InvoiceSyncState
INVOICE_SYNC_STATE_IN_PROGRESS: InvoiceSyncState
INVOICE_SYNC_STATE_SYNCED: InvoiceSyncState
INVOICE_SYNC_STATE_FAILED: InvoiceSyncState
INVOICE_LINE_TYPE_UNSPECIFIED: InvoiceLineType
INVOICE_LINE_TYPE_FLAT: InvoiceLineType
INVOICE_LINE_TYPE_USAGE: InvoiceLineType
INVOICE_LINE_TYPE_DISCOUNT: InvoiceLineType
INVOICE_LINE_TYPE_MAXIMUM_COMMITMENT: InvoiceLineType
INVOICE_LINE_TYPE_MINIMUM_COMMITMENT: InvoiceLineType
INVOICE_LINE_TYPE_CREDIT: InvoiceLineType
INVOICE_LINE_TYPE_UNCOVERED: InvoiceLineType

class Invoice(_message.Message):
    __slots__ = ("name", "customer", "currency", "period_start_time", "period_end_time", "lines", "total", "state", "id", "number", "issue_time", "create_time", "update_time", "sync_state", "sync_error", "stripe_invoice_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATE_FIELD_NUMBER: _ClassVar[int]
    SYNC_ERROR_FIELD_NUMBER: _ClassVar[int]
    STRIPE_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    customer: str
    currency: str
    period_start_time: _timestamp_pb2.Timestamp
    period_end_time: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    total: str
    state: InvoiceState
    id: str
    number: str
    issue_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    sync_state: InvoiceSyncState
    sync_error: str
    stripe_invoice_id: str
    def __init__(self, name: _Optional[str] = ..., customer: _Optional[str] = ..., currency: _Optional[str] = ..., period_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., total: _Optional[str] = ..., state: _Optional[_Union[InvoiceState, str]] = ..., id: _Optional[str] = ..., number: _Optional[str] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sync_state: _Optional[_Union[InvoiceSyncState, str]] = ..., sync_error: _Optional[str] = ..., stripe_invoice_id: _Optional[str] = ...) -> None: ...

class InvoiceLineTier(_message.Message):
    __slots__ = ("tier", "up_to", "quantity", "unit_price", "flat_price", "amount")
    TIER_FIELD_NUMBER: _ClassVar[int]
    UP_TO_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    FLAT_PRICE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    tier: int
    up_to: str
    quantity: str
    unit_price: str
    flat_price: str
    amount: str
    def __init__(self, tier: _Optional[int] = ..., up_to: _Optional[str] = ..., quantity: _Optional[str] = ..., unit_price: _Optional[str] = ..., flat_price: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("subscription", "rate_card", "feature", "description", "quantity", "unit_price", "amount", "period_start_time", "period_end_time", "type", "price_type", "payment_term", "free_quantity", "packages", "tiers", "id", "late_usage", "model", "token_type", "credit_grant")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RATE_CARD_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TERM_FIELD_NUMBER: _ClassVar[int]
    FREE_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LATE_USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_GRANT_FIELD_NUMBER: _ClassVar[int]
    subscription: str
    rate_card: str
    feature: str
    description: str
    quantity: str
    unit_price: str
    amount: str
    period_start_time: _timestamp_pb2.Timestamp
    period_end_time: _timestamp_pb2.Timestamp
    type: InvoiceLineType
    price_type: _catalog_pb2.PriceType
    payment_term: _catalog_pb2.PaymentTerm
    free_quantity: str
    packages: str
    tiers: _containers.RepeatedCompositeFieldContainer[InvoiceLineTier]
    id: str
    late_usage: bool
    model: str
    token_type: str
    credit_grant: str
    def __init__(self, subscription: _Optional[str] = ..., rate_card: _Optional[str] = ..., feature: _Optional[str] = ..., description: _Optional[str] = ..., quantity: _Optional[str] = ..., unit_price: _Optional[str] = ..., amount: _Optional[str] = ..., period_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[InvoiceLineType, str]] = ..., price_type: _Optional[_Union[_catalog_pb2.PriceType, str]] = ..., payment_term: _Optional[_Union[_catalog_pb2.PaymentTerm, str]] = ..., free_quantity: _Optional[str] = ..., packages: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[InvoiceLineTier, _Mapping]]] = ..., id: _Optional[str] = ..., late_usage: _Optional[bool] = ..., model: _Optional[str] = ..., token_type: _Optional[str] = ..., credit_grant: _Optional[str] = ...) -> None: ...

class PreviewInvoiceRequest(_message.Message):
    __slots__ = ("customer", "as_of_time")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    AS_OF_TIME_FIELD_NUMBER: _ClassVar[int]
    customer: str
    as_of_time: _timestamp_pb2.Timestamp
    def __init__(self, customer: _Optional[str] = ..., as_of_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListInvoicesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "states")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[InvoiceState]
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[InvoiceState, str]]] = ...) -> None: ...

class ListInvoicesResponse(_message.Message):
    __slots__ = ("invoices", "next_page_token")
    INVOICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    invoices: _containers.RepeatedCompositeFieldContainer[Invoice]
    next_page_token: str
    def __init__(self, invoices: _Optional[_Iterable[_Union[Invoice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetInvoiceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class IssueInvoiceRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class VoidInvoiceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class MarkInvoicePaidRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CloseInvoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloseInvoicesResponse(_message.Message):
    __slots__ = ("created_invoices", "drafted_invoices", "issued_invoices")
    CREATED_INVOICES_FIELD_NUMBER: _ClassVar[int]
    DRAFTED_INVOICES_FIELD_NUMBER: _ClassVar[int]
    ISSUED_INVOICES_FIELD_NUMBER: _ClassVar[int]
    created_invoices: _containers.RepeatedScalarFieldContainer[str]
    drafted_invoices: _containers.RepeatedScalarFieldContainer[str]
    issued_invoices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, created_invoices: _Optional[_Iterable[str]] = ..., drafted_invoices: _Optional[_Iterable[str]] = ..., issued_invoices: _Optional[_Iterable[str]] = ...) -> None: ...

class RetryInvoiceSyncRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
