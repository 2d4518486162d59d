"""What a declarative document describes: the gateway plus a billing catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from controlplane.catalog.types import Feature, Plan, PriceList
from controlplane.customers.types import Customer
from controlplane.gateway.types import GatewayConfig
from controlplane.usage.meters import OperatorMeter

if TYPE_CHECKING:
    from controlplane.budgets.types import BudgetSpec
    from controlplane.credits.types import CreditAlert, CreditGrantSpec, RechargeRule
    from controlplane.notifications.types import NotificationsSpec


@dataclass(frozen=True)
class SubscriptionSpec:
    """A subscription to create: a customer on a plan, by keys."""

    customer: str
    plan: str
    # None means "now", resolved by the caller's clock when the file is applied.
    start: datetime | None
    # Periods count from here (not after start); None: the start.
    billing_anchor: datetime | None = None
    # Plan changes, oldest first: (time, plan key).
    changes: tuple[tuple[datetime, str], ...] = ()
    # When the subscription (its last plan) ends: a time, "period_end" (of the period
    # running when the file is applied) or None (runs on).
    end: datetime | str | None = None


@dataclass(frozen=True)
class BillingConfig:
    """The ``billing:`` section: catalog, customers and subscriptions, in file order."""

    features: tuple[Feature, ...] = ()
    price_lists: tuple[PriceList, ...] = ()
    plans: tuple[Plan, ...] = ()
    customers: tuple[Customer, ...] = ()
    subscriptions: tuple[SubscriptionSpec, ...] = ()
    # billing.budgets (controlplane.budgets.declarative).
    budgets: tuple[BudgetSpec, ...] = ()
    # billing.credits (controlplane.credits.declarative).
    credits: tuple[CreditGrantSpec, ...] = ()
    # billing.credits.recharge and billing.credits.alerts (the mapping form of billing.credits).
    credit_recharge: tuple[RechargeRule, ...] = ()
    credit_alerts: tuple[CreditAlert, ...] = ()
    # billing.notifications (controlplane.notifications.declarative); None: no section.
    notifications: NotificationsSpec | None = None
    # billing.meters (controlplane.declarative.meters).
    meters: tuple[OperatorMeter, ...] = ()


@dataclass(frozen=True)
class DeclarativeConfig:
    """A whole declarative document."""

    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    # Fields accepted and not enforced, one line per path ("plugins[3].config.vectordb:
    # accepted, not enforced: <reason>").
    notes: tuple[str, ...] = ()
    # decK's _info.select_tags: every entity of the file carries them, and sync only touches
    # stored entities that carry them all.
    select_tags: tuple[str, ...] = ()
