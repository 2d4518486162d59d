"""Entitlement values and grants: what a customer may use of a feature, and token credits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.budgets.types import BudgetStatus, TokenPrice
from controlplane.catalog.types import EntitlementType

DEFAULT_GRANT_PRIORITY = 1


@dataclass(frozen=True)
class Grant:
    """Token credits of a customer for a feature, on top of the plan's metered limit.

    Effective from ``effective_time`` until ``expiration_time`` (None: never expires) or its
    void time, whichever comes first. A one-off grant (no ``recurrence_interval``) keeps what
    is left of it across usage periods until then; a recurring one is reset to ``amount``
    every ``recurrence_interval`` counted from ``effective_time`` (what was left is lost).
    Grants burn down by ``priority`` (lower first), then by expiration (sooner first).
    """

    id: str
    customer: str
    feature: str
    amount: int
    effective_time: datetime
    priority: int = DEFAULT_GRANT_PRIORITY
    expiration_time: datetime | None = None
    recurrence_interval: str | None = None
    void_time: datetime | None = None
    create_time: datetime | None = None

    @property
    def end_time(self) -> datetime | None:
        """When the grant stops counting: its expiration or its void time, the sooner."""
        ends = [t for t in (self.expiration_time, self.void_time) if t is not None]
        return min(ends) if ends else None

    def active_at(self, at: datetime) -> bool:
        end = self.end_time
        return self.effective_time <= at and (end is None or at < end)


@dataclass(frozen=True)
class Balance:
    """A metered entitlement in its current usage period ``[period_start, period_end)``.

    ``usage`` is the period's usage; ``granted`` what was available to it: the limit, the
    grants' balances brought into the period and grants (or recurrences) credited during
    it; ``expired`` what of that was lost to grant expiry or voiding; ``carried_overage`` the
    previous period's overage deducted at reset (``preserve_overage_at_reset``);
    ``balance`` what is left and ``overage`` the usage nothing covered. Always
    ``balance - overage == granted - expired - usage - carried_overage`` and at most one of
    ``balance`` and ``overage`` is positive: a new grant pays off overage first.
    """

    period_start: datetime
    period_end: datetime
    usage: int
    balance: int
    overage: int
    granted: int
    expired: int
    carried_overage: int


@dataclass(frozen=True)
class EntitlementValue:
    """A customer's entitlement to a feature through one subscription, at one instant."""

    customer: str
    subscription: str
    feature: str
    type: EntitlementType
    has_access: bool
    meter: str = ""
    filters: Mapping[str, str] = field(default_factory=dict)
    config: str | None = None
    limit: int | None = None
    usage_period: str | None = None
    soft_limit: bool = False
    preserve_overage_at_reset: bool = False
    balance: Balance | None = None


@dataclass(frozen=True)
class ConsumerAccess:
    """What a data plane enforces for one subject: access, and its metered entitlements."""

    subject: str
    customer: str
    has_access: bool
    metered: tuple[EntitlementValue, ...] = ()
    # The plan's currency, what tokens cost, and the customer's budgets (data-plane pricing).
    currency: str = ""
    prices: tuple[TokenPrice, ...] = ()
    budgets: tuple[BudgetStatus, ...] = ()
