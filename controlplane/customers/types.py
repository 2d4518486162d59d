"""Customers: billing identities that pay for the usage of one or more subjects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Customer:
    key: str
    name: str
    # Usage subjects (consumer usernames); a subject belongs to at most one customer.
    subjects: tuple[str, ...]
    create_time: datetime | None = None
    update_time: datetime | None = None
