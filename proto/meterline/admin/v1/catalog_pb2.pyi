import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MeterAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METER_AGGREGATION_UNSPECIFIED: _ClassVar[MeterAggregation]
    METER_AGGREGATION_SUM: _ClassVar[MeterAggregation]
    METER_AGGREGATION_COUNT: _ClassVar[MeterAggregation]
    METER_AGGREGATION_MAX: _ClassVar[MeterAggregation]
    METER_AGGREGATION_UNIQUE_COUNT: _ClassVar[MeterAggregation]

class PlanState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_STATE_UNSPECIFIED: _ClassVar[PlanState]
    PLAN_STATE_DRAFT: _ClassVar[PlanState]
    PLAN_STATE_ACTIVE: _ClassVar[PlanState]
    PLAN_STATE_ARCHIVED: _ClassVar[PlanState]

class SettlementMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SETTLEMENT_MODE_UNSPECIFIED: _ClassVar[SettlementMode]
    SETTLEMENT_MODE_CREDIT_THEN_INVOICE: _ClassVar[SettlementMode]
    SETTLEMENT_MODE_CREDIT_ONLY: _ClassVar[SettlementMode]

class PriceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRICE_TYPE_UNSPECIFIED: _ClassVar[PriceType]
    PRICE_TYPE_UNIT: _ClassVar[PriceType]
    PRICE_TYPE_FLAT: _ClassVar[PriceType]
    PRICE_TYPE_TIERED: _ClassVar[PriceType]
    PRICE_TYPE_PACKAGE: _ClassVar[PriceType]
    PRICE_TYPE_MODEL_LIST: _ClassVar[PriceType]

class PaymentTerm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_TERM_UNSPECIFIED: _ClassVar[PaymentTerm]
    PAYMENT_TERM_IN_ADVANCE: _ClassVar[PaymentTerm]
    PAYMENT_TERM_IN_ARREARS: _ClassVar[PaymentTerm]

class TierMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_MODE_UNSPECIFIED: _ClassVar[TierMode]
    TIER_MODE_GRADUATED: _ClassVar[TierMode]
    TIER_MODE_VOLUME: _ClassVar[TierMode]

class EntitlementType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTITLEMENT_TYPE_UNSPECIFIED: _ClassVar[EntitlementType]
    ENTITLEMENT_TYPE_BOOLEAN: _ClassVar[EntitlementType]
    ENTITLEMENT_TYPE_STATIC: _ClassVar[EntitlementType]
    ENTITLEMENT_TYPE_METERED: _ClassVar[EntitlementType]
METER_AGGREGATION_UNSPECIFIED: MeterAggregation
METER_AGGREGATION_SUM: MeterAggregation
METER_AGGREGATION_COUNT: MeterAggregation
METER_AGGREGATION_MAX: MeterAggregation
METER_AGGREGATION_UNIQUE_COUNT: MeterAggregation
PLAN_STATE_UNSPECIFIED: PlanState
PLAN_STATE_DRAFT: PlanState
PLAN_STATE_ACTIVE: PlanState
PLAN_STATE_ARCHIVED: PlanState
SETTLEMENT_MODE_UNSPECIFIED: SettlementMode
SETTLEMENT_MODE_CREDIT_THEN_INVOICE: SettlementMode
SETTLEMENT_MODE_CREDIT_ONLY: SettlementMode
PRICE_TYPE_UNSPECIFIED: PriceType
PRICE_TYPE_UNIT: PriceType
PRICE_TYPE_FLAT: PriceType
PRICE_TYPE_TIERED: PriceType
PRICE_TYPE_PACKAGE: PriceType
PRICE_TYPE_MODEL_LIST: PriceType
PAYMENT_TERM_UNSPECIFIED: PaymentTerm
PAYMENT_TERM_IN_ADVANCE: PaymentTerm
PAYMENT_TERM_IN_ARREARS: PaymentTerm
TIER_MODE_UNSPECIFIED: TierMode
TIER_MODE_GRADUATED: TierMode
TIER_MODE_VOLUME: TierMode
ENTITLEMENT_TYPE_UNSPECIFIED: EntitlementType
ENTITLEMENT_TYPE_BOOLEAN: EntitlementType
ENTITLEMENT_TYPE_STATIC: EntitlementType
ENTITLEMENT_TYPE_METERED: EntitlementType

class Meter(_message.Message):
    __slots__ = ("name", "key", "event_type", "aggregation", "value_property", "group_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    VALUE_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    event_type: str
    aggregation: MeterAggregation
    value_property: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., event_type: _Optional[str] = ..., aggregation: _Optional[_Union[MeterAggregation, str]] = ..., value_property: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "key", "display_name", "meter", "filters", "create_time")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METER_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    display_name: str
    meter: str
    filters: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., meter: _Optional[str] = ..., filters: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("name", "key", "version", "display_name", "currency", "billing_cadence", "rate_cards", "state", "create_time", "publish_time", "billing_anchor_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BILLING_CADENCE_FIELD_NUMBER: _ClassVar[int]
    RATE_CARDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    BILLING_ANCHOR_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    version: int
    display_name: str
    currency: str
    billing_cadence: str
    rate_cards: _containers.RepeatedCompositeFieldContainer[RateCard]
    state: PlanState
    create_time: _timestamp_pb2.Timestamp
    publish_time: _timestamp_pb2.Timestamp
    billing_anchor_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., version: _Optional[int] = ..., display_name: _Optional[str] = ..., currency: _Optional[str] = ..., billing_cadence: _Optional[str] = ..., rate_cards: _Optional[_Iterable[_Union[RateCard, _Mapping]]] = ..., state: _Optional[_Union[PlanState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., billing_anchor_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RateCard(_message.Message):
    __slots__ = ("key", "feature", "price", "entitlement", "discounts", "commitments", "settlement_mode")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENT_FIELD_NUMBER: _ClassVar[int]
    DISCOUNTS_FIELD_NUMBER: _ClassVar[int]
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_MODE_FIELD_NUMBER: _ClassVar[int]
    key: str
    feature: str
    price: Price
    entitlement: Entitlement
    discounts: Discounts
    commitments: Commitments
    settlement_mode: SettlementMode
    def __init__(self, key: _Optional[str] = ..., feature: _Optional[str] = ..., price: _Optional[_Union[Price, _Mapping]] = ..., entitlement: _Optional[_Union[Entitlement, _Mapping]] = ..., discounts: _Optional[_Union[Discounts, _Mapping]] = ..., commitments: _Optional[_Union[Commitments, _Mapping]] = ..., settlement_mode: _Optional[_Union[SettlementMode, str]] = ...) -> None: ...

class PriceTier(_message.Message):
    __slots__ = ("up_to", "unit_price", "flat_price")
    UP_TO_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    FLAT_PRICE_FIELD_NUMBER: _ClassVar[int]
    up_to: str
    unit_price: str
    flat_price: str
    def __init__(self, up_to: _Optional[str] = ..., unit_price: _Optional[str] = ..., flat_price: _Optional[str] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("type", "amount", "payment_term", "tier_mode", "tiers", "quantity_per_package", "price_list", "markup_percent")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TERM_FIELD_NUMBER: _ClassVar[int]
    TIER_MODE_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_PER_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    PRICE_LIST_FIELD_NUMBER: _ClassVar[int]
    MARKUP_PERCENT_FIELD_NUMBER: _ClassVar[int]
    type: PriceType
    amount: str
    payment_term: PaymentTerm
    tier_mode: TierMode
    tiers: _containers.RepeatedCompositeFieldContainer[PriceTier]
    quantity_per_package: str
    price_list: str
    markup_percent: str
    def __init__(self, type: _Optional[_Union[PriceType, str]] = ..., amount: _Optional[str] = ..., payment_term: _Optional[_Union[PaymentTerm, str]] = ..., tier_mode: _Optional[_Union[TierMode, str]] = ..., tiers: _Optional[_Iterable[_Union[PriceTier, _Mapping]]] = ..., quantity_per_package: _Optional[str] = ..., price_list: _Optional[str] = ..., markup_percent: _Optional[str] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model", "effective_from_time", "input", "output", "cached_input", "reasoning")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    model: str
    effective_from_time: _timestamp_pb2.Timestamp
    input: str
    output: str
    cached_input: str
    reasoning: str
    def __init__(self, model: _Optional[str] = ..., effective_from_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input: _Optional[str] = ..., output: _Optional[str] = ..., cached_input: _Optional[str] = ..., reasoning: _Optional[str] = ...) -> None: ...

class PriceList(_message.Message):
    __slots__ = ("name", "key", "display_name", "currency", "prices", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    display_name: str
    currency: str
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., currency: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Discounts(_message.Message):
    __slots__ = ("percentage", "usage")
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    percentage: str
    usage: str
    def __init__(self, percentage: _Optional[str] = ..., usage: _Optional[str] = ...) -> None: ...

class Commitments(_message.Message):
    __slots__ = ("minimum_amount", "maximum_amount")
    MINIMUM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    minimum_amount: str
    maximum_amount: str
    def __init__(self, minimum_amount: _Optional[str] = ..., maximum_amount: _Optional[str] = ...) -> None: ...

class Entitlement(_message.Message):
    __slots__ = ("type", "config", "limit", "usage_period", "soft_limit", "preserve_overage_at_reset")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USAGE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_OVERAGE_AT_RESET_FIELD_NUMBER: _ClassVar[int]
    type: EntitlementType
    config: str
    limit: int
    usage_period: str
    soft_limit: bool
    preserve_overage_at_reset: bool
    def __init__(self, type: _Optional[_Union[EntitlementType, str]] = ..., config: _Optional[str] = ..., limit: _Optional[int] = ..., usage_period: _Optional[str] = ..., soft_limit: _Optional[bool] = ..., preserve_overage_at_reset: _Optional[bool] = ...) -> None: ...

class ListMetersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMetersResponse(_message.Message):
    __slots__ = ("meters", "next_page_token")
    METERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    meters: _containers.RepeatedCompositeFieldContainer[Meter]
    next_page_token: str
    def __init__(self, meters: _Optional[_Iterable[_Union[Meter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateFeatureRequest(_message.Message):
    __slots__ = ("feature",)
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    feature: Feature
    def __init__(self, feature: _Optional[_Union[Feature, _Mapping]] = ...) -> None: ...

class GetFeatureRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListFeaturesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "order_by")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    order_by: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListFeaturesResponse(_message.Message):
    __slots__ = ("features", "next_page_token")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    next_page_token: str
    def __init__(self, features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteFeatureRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreatePlanRequest(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "order_by")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    order_by: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans", "next_page_token")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    next_page_token: str
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PublishPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdatePlanRequest(_message.Message):
    __slots__ = ("plan", "update_mask")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class CreatePlanVersionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ArchivePlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreatePriceListRequest(_message.Message):
    __slots__ = ("price_list",)
    PRICE_LIST_FIELD_NUMBER: _ClassVar[int]
    price_list: PriceList
    def __init__(self, price_list: _Optional[_Union[PriceList, _Mapping]] = ...) -> None: ...

class GetPriceListRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPriceListsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPriceListsResponse(_message.Message):
    __slots__ = ("price_lists", "next_page_token")
    PRICE_LISTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    price_lists: _containers.RepeatedCompositeFieldContainer[PriceList]
    next_page_token: str
    def __init__(self, price_lists: _Optional[_Iterable[_Union[PriceList, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddModelPricesRequest(_message.Message):
    __slots__ = ("name", "prices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, name: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...
