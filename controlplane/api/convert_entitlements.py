"""Entitlement, grant and budget messages to domain values and back."""

from __future__ import annotations

from datetime import datetime

from controlplane.api import convert
from controlplane.budgets import service as budgets
from controlplane.budgets.types import Budget, BudgetMode, BudgetStatus
from controlplane.entitlements.types import DEFAULT_GRANT_PRIORITY, EntitlementValue, Grant
from controlplane.errors import InvalidArgument
from meterline.admin.v1 import entitlements_pb2

BUDGET_MODES = {
    BudgetMode.HARD: entitlements_pb2.BUDGET_MODE_HARD,
    BudgetMode.SOFT: entitlements_pb2.BUDGET_MODE_SOFT,
}


def value_to_proto(value: EntitlementValue) -> entitlements_pb2.EntitlementValue:
    message = entitlements_pb2.EntitlementValue(
        name=f"customers/{value.customer}/entitlements/{value.feature}",
        customer=f"customers/{value.customer}",
        subscription=f"subscriptions/{value.subscription}",
        feature=value.feature,
        type=convert.ENTITLEMENT_TYPES[value.type],
        has_access=value.has_access,
        filters=dict(value.filters),
        config=value.config or "",
        limit=value.limit or 0,
        usage_period=value.usage_period or "",
        soft_limit=value.soft_limit,
        preserve_overage_at_reset=value.preserve_overage_at_reset,
    )
    balance = value.balance
    if balance is not None:
        message.period_start_time.FromDatetime(balance.period_start)
        message.period_end_time.FromDatetime(balance.period_end)
        message.usage = balance.usage
        message.balance = balance.balance
        message.overage = balance.overage
        message.granted = balance.granted
        message.expired = balance.expired
        message.carried_overage = balance.carried_overage
    return message


def grant_to_proto(grant: Grant) -> entitlements_pb2.Grant:
    return entitlements_pb2.Grant(
        name=f"customers/{grant.customer}/grants/{grant.id}",
        id=grant.id,
        feature=grant.feature,
        amount=grant.amount,
        priority=grant.priority,
        effective_time=convert.to_timestamp(grant.effective_time),
        expiration_time=convert.to_timestamp(grant.expiration_time),
        recurrence_interval=grant.recurrence_interval or "",
        void_time=convert.to_timestamp(grant.void_time),
        create_time=convert.to_timestamp(grant.create_time),
    )


def grant_from_proto(message: entitlements_pb2.Grant, *, customer: str, now: datetime) -> Grant:
    if not message.feature:
        raise InvalidArgument("grant.feature is required")
    return Grant(
        id="",
        customer=customer,
        feature=message.feature,
        amount=message.amount,
        priority=message.priority if message.HasField("priority") else DEFAULT_GRANT_PRIORITY,
        effective_time=convert.from_timestamp(message.effective_time)
        if message.HasField("effective_time")
        else now,
        expiration_time=convert.from_timestamp(message.expiration_time)
        if message.HasField("expiration_time")
        else None,
        recurrence_interval=message.recurrence_interval or None,
    )


def budget_to_proto(budget: Budget, status: BudgetStatus | None) -> entitlements_pb2.Budget:
    message = entitlements_pb2.Budget(
        name=f"customers/{budget.customer}/budgets/{budget.id}",
        id=budget.id,
        amount=str(budget.amount),
        currency=budget.currency,
        period=budget.period,
        mode=BUDGET_MODES[budget.mode],
        create_time=convert.to_timestamp(budget.create_time),
    )
    if status is not None:
        message.spent = str(status.spent)
        message.remaining = str(status.remaining)
        message.period_end_time.FromDatetime(status.period_end)
    return message


def budget_from_proto(message: entitlements_pb2.Budget, *, customer: str) -> Budget:
    if not message.amount:
        raise InvalidArgument("budget.amount is required (a decimal string)")
    modes = {v: k for k, v in BUDGET_MODES.items()}
    mode = BudgetMode.HARD
    if message.mode != entitlements_pb2.BUDGET_MODE_UNSPECIFIED:
        if message.mode not in modes:
            raise InvalidArgument(f"budget.mode {message.mode} is not a known BudgetMode")
        mode = modes[message.mode]
    return budgets.budget_from_parts(
        customer=customer,
        amount=message.amount,
        currency=message.currency,
        period=message.period,
        mode=mode.value,
    )
