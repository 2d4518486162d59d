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
    """Price types, named as in OpenMeter's product catalog."""

    FLAT = "flat"
    UNIT = "unit"
    TIERED = "tiered"
    PACKAGE = "package"
    # Each token type of each model at a price list's price (plus a markup).
    MODEL_LIST = "model_list"


class PaymentTerm(StrEnum):
    """When a flat price is charged: at the start of its period or at its end."""

    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


class TierMode(StrEnum):
    """Graduated: each tier prices its own slice. Volume: one tier prices the whole quantity."""

    GRADUATED = "graduated"
    VOLUME = "volume"


@dataclass(frozen=True)
class Tier:
    """One tier of a tiered price; ``up_to`` is inclusive, None on the last (open) tier."""

    up_to: Decimal | None
    unit_price: Decimal = Decimal(0)
    flat_price: Decimal = Decimal(0)


@dataclass(frozen=True)
class Price:
    """A price of a rate card. ``amount`` is per period (flat), per unit or per package.

    Only the fields of the price's type are set; :func:`controlplane.catalog.validation.
    price_problems` checks that.
    """

    type: PriceType
    amount: Decimal = Decimal(0)
    payment_term: PaymentTerm | None = None
    mode: TierMode | None = None
    tiers: tuple[Tier, ...] = ()
    quantity_per_package: Decimal | None = None
    # model_list prices only: the price list's key and the percent added to its prices.
    price_list: str | None = None
    markup_percent: Decimal | None = None

    @property
    def usage_based(self) -> bool:
        return self.type is not PriceType.FLAT


@dataclass(frozen=True)
class Discounts:
    """Percent off the rate card's amount; ``usage`` units free from the start of the period."""

    percentage: Decimal | None = None
    usage: Decimal | None = None


@dataclass(frozen=True)
class Commitments:
    """A floor (topped up on its own line) and a cap of the rate card's amount per period."""

    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None


# The token types a model price list prices (the ``type`` dimension of ``llm_tokens``).
MODEL_PRICE_TOKEN_TYPES = ("input", "output", "cached_input", "reasoning")


@dataclass(frozen=True)
class ModelPrice:
    """Per-token prices of one model from ``effective_from`` until the model's next entry.

    A token type without a price (None) is billed as an unpriced, zero-amount line.
    """

    model: str
    effective_from: datetime
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    reasoning: Decimal | None = None

    def price_of(self, token_type: str) -> Decimal | None:
        if token_type not in MODEL_PRICE_TOKEN_TYPES:
            return None
        value: Decimal | None = getattr(self, token_type)
        return value


@dataclass(frozen=True)
class PriceList:
    """A provider's per-model, per-token list prices in one currency, over time."""

    key: str
    currency: str
    prices: tuple[ModelPrice, ...]
    name: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None

    def entries(self, model: str) -> list[ModelPrice]:
        """The model's entries, oldest first."""
        return sorted((p for p in self.prices if p.model == model), key=lambda p: p.effective_from)

    def effective(self, model: str, at: datetime) -> ModelPrice | None:
        """The model's entry in effect at ``at`` (None before its first one)."""
        current = None
        for entry in self.entries(model):
            if entry.effective_from <= at:
                current = entry
        return current


class EntitlementType(StrEnum):
    """OpenMeter's entitlement types."""

    BOOLEAN = "boolean"
    STATIC = "static"
    METERED = "metered"


@dataclass(frozen=True)
class Entitlement:
    """What a rate card grants for its feature.

    ``boolean``: access, nothing more. ``static``: access plus ``config``, a JSON object (kept
    as canonical JSON text) handed to the application. ``metered``: ``limit`` units of the
    feature per ``usage_period`` (an ISO 8601 duration counted from the subscription start);
    ``soft_limit`` true allows usage beyond the balance (billed as overage), false blocks it;
    ``preserve_overage_at_reset`` carries a period's overage into the next period's balance.
    Only the fields of the type are set; :func:`controlplane.catalog.validation.
    entitlement_problems` checks that.
    """

    type: EntitlementType
    config: str | None = None
    limit: int | None = None
    usage_period: str | None = None
    soft_limit: bool = False
    preserve_overage_at_reset: bool = False


class SettlementMode(StrEnum):
    """OpenMeter's name: what happens to a rate card's charge that credits do not pay."""

    # Credits pay first, the rest is invoiced.
    CREDIT_THEN_INVOICE = "credit_then_invoice"
    # Never invoiced beyond credits; what credits leave is uncovered usage (docs/credits.md).
    CREDIT_ONLY = "credit_only"


@dataclass(frozen=True)
class RateCard:
    """What a plan sells: a feature (optional for flat prices), its price and entitlement."""

    key: str
    feature: str | None
    price: Price | None
    entitlement: Entitlement | None = None
    discounts: Discounts | None = None
    commitments: Commitments | None = None
    settlement_mode: SettlementMode = SettlementMode.CREDIT_THEN_INVOICE


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
    # Default billing anchor of new subscriptions (e.g. the 1st of a month: every customer
    # billed on the 1st); a subscription starting before it is anchored at its start.
    billing_anchor: datetime | None = None
