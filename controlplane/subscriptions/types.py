"""Subscriptions: a customer on a plan version from a start time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Subscription:
    id: str
    customer: str
    plan_key: str
    plan_version: int
    start_time: datetime
    end_time: datetime | None = None
    create_time: datetime | None = None

    @property
    def active(self) -> bool:
        return self.end_time is None
