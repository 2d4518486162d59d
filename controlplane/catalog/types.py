"""The product catalog: meters, features, plans and rate cards."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Aggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    MAX = "MAX"
    UNIQUE_COUNT = "UNIQUE_COUNT"


@dataclass(frozen=True)
class Meter:
    """An aggregation over usage events of one type."""

    key: str
    event_type: str
    aggregation: Aggregation
    value_property: str
    group_by: tuple[str, ...]


LLM_TOKENS_EVENT_TYPE = "llm.tokens"

# The built-in meter every data plane feeds: SUM of tokens of each request and token type.
LLM_TOKENS = Meter(
    key="llm_tokens",
    event_type=LLM_TOKENS_EVENT_TYPE,
    aggregation=Aggregation.SUM,
    value_property="tokens",
    group_by=("model", "provider", "type", "status_code"),
)

BUILTIN_METERS: Mapping[str, Meter] = {LLM_TOKENS.key: LLM_TOKENS}

# Token type aliases accepted in filters (Kong and OpenMeter examples use both spellings).
TOKEN_TYPE_ALIASES: Mapping[str, str] = {"request": "input", "response": "output"}


@dataclass(frozen=True)
class Feature:
    """A billable slice of a meter: every filter dimension must equal its value."""

    key: str
    meter: str
    name: str = ""
    filters: Mapping[str, str] = field(default_factory=dict)


class PriceType(StrEnum):
    UNIT = "unit"


@dataclass(frozen=True)
class Price:
    type: PriceType
    amount: Decimal


class EntitlementType(StrEnum):
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class Entitlement:
    type: EntitlementType


@dataclass(frozen=True)
class RateCard:
    key: str
    feature: str
    price: Price | None
    entitlement: Entitlement | None = None


class PlanState(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


@dataclass(frozen=True)
class Plan:
    """One version of a plan. Only active versions can be subscribed to."""

    key: str
    name: str
    currency: str
    billing_cadence: str
    rate_cards: tuple[RateCard, ...]
    version: int = 1
    state: PlanState = PlanState.DRAFT
    create_time: datetime | None = None
    publish_time: datetime | None = None
