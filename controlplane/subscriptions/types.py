"""Subscriptions: a customer on a plan version from a start time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Subscription:
    """A customer on a plan version in [start_time, end_time)."""

    id: str
    customer: str
    plan_key: str
    plan_version: int
    start_time: datetime
    end_time: datetime | None = None
    create_time: datetime | None = None
    # Periods count from here; None means start_time (see ``anchor``).
    billing_anchor: datetime | None = None

    @property
    def active(self) -> bool:
        return self.end_time is None

    @property
    def anchor(self) -> datetime:
        """Where billing periods are counted from."""
        return self.billing_anchor or self.start_time
