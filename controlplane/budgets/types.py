"""Money budgets: a spending cap of a customer per billing period, and token prices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class BudgetMode(StrEnum):
    """``hard``: data planes refuse requests once it is spent; ``soft``: never refuse."""

    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True)
class Budget:
    """A cap of ``amount`` (in ``currency``, the plan's) per ``period`` (the plan's cadence)."""

    id: str
    customer: str
    amount: Decimal
    currency: str
    period: str
    mode: BudgetMode
    create_time: datetime | None = None


@dataclass(frozen=True)
class BudgetStatus:
    """A budget in its current period: ``spent`` is the period's invoice total so far."""

    budget: Budget
    spent: Decimal
    period_end: datetime

    @property
    def remaining(self) -> Decimal:
        return self.budget.amount - self.spent


@dataclass(frozen=True)
class TokenPrice:
    """What one token matching ``filters`` (dimensions of llm_tokens) costs now."""

    feature: str
    filters: Mapping[str, str] = field(default_factory=dict)
    unit_price: Decimal = Decimal(0)


@dataclass(frozen=True)
class BudgetSpec:
    """A budget as a declarative document states it (``billing.budgets``)."""

    customer: str
    amount: Decimal
    currency: str
    period: str
    mode: BudgetMode
