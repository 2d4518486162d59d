"""Budget use cases: create, list, delete; each budget's status; token prices for data planes.

A budget follows the customer's billing periods: ``spent`` is the current period's invoice
total so far (the gathering invoice, flat fees included), computed with the invoice preview,
so a budget is reproducible from events + catalog like any amount.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import Connection

from controlplane.budgets import storage
from controlplane.budgets.types import Budget, BudgetMode, BudgetStatus, TokenPrice
from controlplane.catalog import storage as catalog
from controlplane.catalog.types import (
    LLM_TOKENS,
    MODEL_PRICE_TOKEN_TYPES,
    Feature,
    Plan,
    Price,
    PriceType,
    TierMode,
)
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.invoicing.preview import preview_invoice
from controlplane.rating.charge import LineType
from controlplane.rating.modellist import marked_up
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import billing_period
from controlplane.subscriptions.types import Subscription
from controlplane.usage import storage as usage


def parse_amount(text: str) -> Decimal:
    """A budget amount: a finite decimal string >= 0 (InvalidArgument otherwise)."""
    try:
        amount = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidArgument(f"budget.amount must be a decimal string, got {text!r}") from None
    if not amount.is_finite():
        raise InvalidArgument(f"budget.amount must be a finite number, got {text!r}")
    if amount < 0:
        raise InvalidArgument(f"budget.amount must not be negative, got {text}")
    return amount


def _running(conn: Connection, customer: str, at: datetime) -> list[Subscription]:
    return [
        sub
        for sub in subscriptions.list_subscriptions(conn, customer)
        if sub.start_time <= at and (sub.end_time is None or sub.end_time > at)
    ]


def _plan_of(conn: Connection, customer: str, at: datetime) -> tuple[Subscription, Plan]:
    running = _running(conn, customer, at)
    if not running:
        raise FailedPrecondition(
            f"customer {customer!r} has no running subscription: a budget needs a plan's "
            "currency and billing periods"
        )
    sub = running[0]
    return sub, catalog.get_plan(conn, sub.plan_key, sub.plan_version)


def create_budget(conn: Connection, budget: Budget, *, now: datetime) -> Budget:
    """Store a budget; InvalidArgument if it disagrees with the customer's plan."""
    if budget.amount < 0:
        raise InvalidArgument(f"budget.amount must not be negative, got {budget.amount}")
    customers.get_customer(conn, budget.customer)
    _, plan = _plan_of(conn, budget.customer, now)
    currency = budget.currency or plan.currency
    if currency != plan.currency:
        raise InvalidArgument(
            f"budget.currency {currency!r} is not the currency of customer "
            f"{budget.customer!r}'s plan {plan.key!r} ({plan.currency})"
        )
    period = budget.period or plan.billing_cadence
    if period != plan.billing_cadence:
        raise InvalidArgument(
            f"budget.period {period!r} must be the billing cadence of plan {plan.key!r} "
            f"({plan.billing_cadence}): budgets follow billing periods"
        )
    return storage.insert_budget(
        conn, Budget(**{**vars(budget), "currency": currency, "period": period}), now=now
    )


def list_budgets(conn: Connection, *, customer: str | None) -> list[Budget]:
    if customer is not None:
        customers.get_customer(conn, customer)
    return storage.list_budgets(conn, customer)


def delete_budget(conn: Connection, *, customer: str, id: str) -> Budget:
    budget = storage.get_budget(conn, id)
    if budget.customer != customer:
        raise NotFound(f"budget {id!r} of customer {customer!r} not found")
    storage.delete_budget(conn, id)
    return budget


def statuses(conn: Connection, *, customer: str, at: datetime) -> list[BudgetStatus]:
    """The customer's budgets in the billing period containing ``at``."""
    budgets = storage.list_budgets(conn, customer)
    if not budgets:
        return []
    try:
        invoice = preview_invoice(conn, customer_key=customer, at=at)
    except FailedPrecondition:
        return []
    # A budget caps consumption, whatever pays for it: credit lines (and the uncovered usage of
    # credit_only rate cards) are added back, so credits never raise the cap.
    paid_otherwise = sum(
        (
            line.amount
            for line in invoice.lines
            if line.type in (LineType.CREDIT, LineType.UNCOVERED)
        ),
        Decimal(0),
    )
    spent = invoice.total - paid_otherwise
    return [
        BudgetStatus(budget=budget, spent=spent, period_end=invoice.period_end)
        for budget in budgets
    ]


def status(conn: Connection, budget: Budget, *, at: datetime) -> BudgetStatus | None:
    for found in statuses(conn, customer=budget.customer, at=at):
        if found.budget.id == budget.id:
            return found
    return None


def _unit_price(
    conn: Connection,
    *,
    plan: Plan,
    sub: Subscription,
    feature: Feature,
    subjects: list[str],
    at: datetime,
    price: Price,
) -> Decimal | None:
    if price.type is PriceType.UNIT:
        return price.amount
    if price.type is PriceType.PACKAGE:
        if not price.quantity_per_package:
            return None
        return price.amount / price.quantity_per_package
    if price.type is PriceType.TIERED and price.tiers:
        start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
        used = usage.sum_tokens(
            conn,
            subjects=subjects,
            start=max(start, sub.start_time),
            end=end,
            filters=feature.filters,
        )
        # The tier the period's usage is in now (graduated: the next token's price; volume:
        # an approximation, as moving to the next tier reprices the whole quantity).
        for tier in price.tiers:
            if (
                tier.up_to is None
                or used < tier.up_to
                or (price.mode is TierMode.VOLUME and used <= tier.up_to)
            ):
                return tier.unit_price
        return price.tiers[-1].unit_price
    return None


def _model_list_prices(
    conn: Connection, *, feature: Feature, price: Price, at: datetime
) -> list[TokenPrice]:
    """A model_list card: each model's price in effect now, per token type, marked up."""
    assert price.price_list is not None
    found = catalog.get_price_list(conn, price.price_list)
    prices: list[TokenPrice] = []
    for model in sorted({entry.model for entry in found.prices}):
        if feature.filters.get("model", model) != model:
            continue
        effective = found.effective(model, at)
        if effective is None:
            continue
        for token_type in MODEL_PRICE_TOKEN_TYPES:
            unit = effective.price_of(token_type)
            if unit is None or feature.filters.get("type", token_type) != token_type:
                continue
            prices.append(
                TokenPrice(
                    feature=feature.key,
                    filters={**feature.filters, "model": model, "type": token_type},
                    unit_price=marked_up(unit, price.markup_percent),
                )
            )
    return prices


def token_prices(
    conn: Connection, *, customer: str, subjects: list[str], at: datetime
) -> tuple[str, tuple[TokenPrice, ...]]:
    """The currency and per-token prices of the customer's running plans (llm_tokens only)."""
    running = _running(conn, customer, at)
    if not running:
        return "", ()
    currency = ""
    prices: list[TokenPrice] = []
    for sub in running:
        plan = catalog.get_plan(conn, sub.plan_key, sub.plan_version)
        currency = currency or plan.currency
        for card in plan.rate_cards:
            if card.price is None or not card.price.usage_based or card.feature is None:
                continue
            feature = catalog.get_feature(conn, card.feature)
            if feature.meter != LLM_TOKENS.key:
                continue
            if card.price.type is PriceType.MODEL_LIST and card.price.price_list:
                prices += _model_list_prices(conn, feature=feature, price=card.price, at=at)
                continue
            unit = _unit_price(
                conn,
                plan=plan,
                sub=sub,
                feature=feature,
                subjects=subjects,
                at=at,
                price=card.price,
            )
            if unit is not None:
                prices.append(
                    TokenPrice(feature=feature.key, filters=dict(feature.filters), unit_price=unit)
                )
    return currency, tuple(prices)


def budget_from_parts(
    *, customer: str, amount: str, currency: str, period: str, mode: str
) -> Budget:
    """A budget from its text fields (API, CLI, YAML); InvalidArgument on bad values."""
    try:
        parsed_mode = BudgetMode(mode or "hard")
    except ValueError:
        raise InvalidArgument(f'budget.mode must be "hard" or "soft", got {mode!r}') from None
    return Budget(
        id="",
        customer=customer,
        amount=parse_amount(amount),
        currency=currency,
        period=period,
        mode=parsed_mode,
    )
