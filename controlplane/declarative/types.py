"""What a declarative document describes: the gateway plus a billing catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from controlplane.catalog.types import Feature, Plan
from controlplane.customers.types import Customer
from controlplane.gateway.types import GatewayConfig


@dataclass(frozen=True)
class SubscriptionSpec:
    """A subscription to create: a customer on a plan, by keys."""

    customer: str
    plan: str
    # None means "now", resolved by the caller's clock when the file is applied.
    start: datetime | None


@dataclass(frozen=True)
class BillingConfig:
    """The ``billing:`` section: catalog, customers and subscriptions, in file order."""

    features: tuple[Feature, ...] = ()
    plans: tuple[Plan, ...] = ()
    customers: tuple[Customer, ...] = ()
    subscriptions: tuple[SubscriptionSpec, ...] = ()


@dataclass(frozen=True)
class DeclarativeConfig:
    """A whole declarative document."""

    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
