"""Auto-recharge: a customer's rule buys credits (a top-up invoice) when the balance runs low.

A rule fires when the customer's **live** balance is below its ``threshold``:

- ``threshold`` mode buys ``amount``; ``target`` mode buys ``target - live`` (rounded up to the
  currency's minor unit), then either is held within ``[minimum, maximum]``;
- at most one top-up in flight per customer: an issued or payment-failed top-up invoice blocks
  another (void it to let the rule fire again);
- caps per billing period of the customer's subscription: ``max_count`` top-ups and
  ``max_amount`` in total (a top-up is cut to what the amount cap leaves, or skipped if that is
  below ``minimum``).

Evaluation runs under the customer's row lock (SQLite: the single writer), so many usage batches
ingested at once, on several replicas, issue one top-up. The credits exist when the invoice is
paid (``topups.grant_paid_top_up``), never before.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from sqlalchemy import Connection

from controlplane.catalog import storage as catalog
from controlplane.credits import recharge_storage as store
from controlplane.credits import service
from controlplane.credits.types import CreditBalance, RechargeMode, RechargeOutcome, RechargeRule
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.invoicing import storage as invoices
from controlplane.invoicing.types import InvoiceState
from controlplane.rating.money import rounding_places
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import billing_period

MAX_COUNT = 1000
# Top-ups that block another: issued (awaiting payment) or whose payment failed.
IN_FLIGHT = (InvoiceState.ISSUED, InvoiceState.PAYMENT_FAILED)


def parse_money(text: str, *, what: str) -> Decimal:
    """A decimal string at or above zero (empty: zero); InvalidArgument otherwise."""
    if not text.strip():
        return Decimal(0)
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise InvalidArgument(f"{what} must be a decimal string, got {text!r}") from None
    if not value.is_finite():
        raise InvalidArgument(f"{what} must be a finite number, got {text!r}")
    if value < 0:
        raise InvalidArgument(f"{what} must not be negative, got {text}")
    return value


def _on_grid(value: Decimal, currency: str, *, what: str) -> None:
    if value < 0:
        raise InvalidArgument(f"{what} must not be negative, got {value}")
    service.check_grid(value, currency, what=what)


def check_rule(conn: Connection, rule: RechargeRule, *, now: datetime) -> RechargeRule:
    """The rule as stored, or InvalidArgument / NotFound naming the first problem."""
    customers.get_customer(conn, rule.customer)
    currency = service.plan_currency(conn, rule.customer, now)
    if rule.currency and rule.currency != currency:
        raise InvalidArgument(
            f"recharge rule currency {rule.currency!r} is not the currency of customer "
            f"{rule.customer!r}'s plan ({currency})"
        )
    for what, value in (
        ("threshold", rule.threshold),
        ("amount", rule.amount),
        ("target", rule.target),
        ("minimum", rule.minimum),
        ("maximum", rule.maximum),
        ("max_amount", rule.max_amount),
    ):
        _on_grid(value, currency, what=f"recharge rule {what}")
    if rule.threshold <= 0:
        raise InvalidArgument("recharge rule threshold must be above zero")
    if rule.mode is RechargeMode.THRESHOLD:
        if rule.amount <= 0:
            raise InvalidArgument("a threshold recharge rule needs an amount above zero")
        if rule.target:
            raise InvalidArgument("target is for target recharge rules (use amount)")
    else:
        if rule.amount:
            raise InvalidArgument("amount is for threshold recharge rules (use target)")
        if rule.target <= rule.threshold:
            raise InvalidArgument(
                f"recharge rule target {rule.target} must be above its threshold {rule.threshold}"
            )
    if rule.minimum and rule.maximum and rule.minimum > rule.maximum:
        raise InvalidArgument(
            f"recharge rule minimum {rule.minimum} is above its maximum {rule.maximum}"
        )
    if rule.mode is RechargeMode.THRESHOLD and (
        (rule.minimum and rule.amount < rule.minimum)
        or (rule.maximum and rule.amount > rule.maximum)
    ):
        raise InvalidArgument(
            f"recharge rule amount {rule.amount} is outside its minimum and maximum"
        )
    if not 0 <= rule.max_count <= MAX_COUNT:
        raise InvalidArgument(f"recharge rule max_count must be between 0 and {MAX_COUNT}")
    if rule.max_amount and rule.minimum > rule.max_amount:
        raise InvalidArgument(
            f"recharge rule minimum {rule.minimum} is above its max_amount {rule.max_amount}"
        )
    return replace(rule, currency=currency)


def set_rule(conn: Connection, rule: RechargeRule, *, now: datetime) -> RechargeRule:
    """Create or replace the customer's rule (checked first: nothing changes on bad input)."""
    checked = check_rule(conn, rule, now=now)
    invoices.lock_customer(conn, rule.customer)
    stored = store.put_rule(conn, checked, now=now)
    return replace(stored, currency=checked.currency)


def get_rule(conn: Connection, *, customer: str) -> RechargeRule:
    customers.get_customer(conn, customer)
    found = store.get_rule(conn, customer)
    if found is None:
        raise NotFound(f"customer {customer!r} has no recharge rule")
    return found


def delete_rule(conn: Connection, *, customer: str) -> None:
    customers.get_customer(conn, customer)
    invoices.lock_customer(conn, customer)
    if not store.delete_rule(conn, customer):
        raise NotFound(f"customer {customer!r} has no recharge rule")


def same_rule(a: RechargeRule, b: RechargeRule) -> bool:
    """Whether two rules say the same (times and the unchecked currency aside)."""
    plain = {"create_time": None, "update_time": None, "currency": ""}
    return replace(a, **plain) == replace(b, **plain)  # type: ignore[arg-type]


def period_start(conn: Connection, customer: str, at: datetime) -> datetime:
    """Start of the billing period containing ``at`` of the customer's earliest running
    subscription (``at`` itself when none runs)."""
    running = sorted(
        (
            sub
            for sub in subscriptions.list_subscriptions(conn, customer)
            if sub.start_time <= at and (sub.end_time is None or sub.end_time > at)
        ),
        key=lambda sub: sub.start_time,
    )
    if not running:
        return at
    sub = running[0]
    plan = catalog.get_plan(conn, sub.plan_key, sub.plan_version)
    start, _ = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
    return start


def in_flight(conn: Connection, customer: str) -> str:
    """The number (or id) of a top-up invoice that blocks another, or ""."""
    for row in invoices.list_invoice_rows(conn, customer=customer, states=IN_FLIGHT, top_ups=True):
        if row.kind == invoices.TOP_UP_KIND:
            return row.number or row.id
    return ""


def top_up_amount(rule: RechargeRule, live: Decimal, currency: str) -> Decimal:
    """What the rule buys at ``live`` before the period caps: pure."""
    if rule.mode is RechargeMode.THRESHOLD:
        want = rule.amount
    else:
        grid = Decimal(1).scaleb(-rounding_places(currency))
        want = (rule.target - live).quantize(grid, rounding=ROUND_CEILING)
    if rule.minimum and want < rule.minimum:
        want = rule.minimum
    if rule.maximum and want > rule.maximum:
        want = rule.maximum
    return want


def evaluate(
    conn: Connection, *, customer: str, now: datetime, balance: CreditBalance | None = None
) -> RechargeOutcome:
    """Issue the top-up the customer's rule asks for now, if any (call in a write transaction:
    it takes the customer's row lock first)."""
    invoices.lock_customer(conn, customer)
    rule = store.get_rule(conn, customer)
    if rule is None:
        return RechargeOutcome(customer=customer, reason="no recharge rule")
    blocking = in_flight(conn, customer)
    if blocking:
        return RechargeOutcome(customer=customer, reason=f"top-up {blocking} is in flight")
    found = balance or service.balance(conn, customer=customer, at=now)
    if found.live >= rule.threshold:
        return RechargeOutcome(customer=customer, reason="balance at or above the threshold")
    amount = top_up_amount(rule, found.live, found.currency)
    start = period_start(conn, customer, now)
    count, total = store.recharges_in_period(conn, customer, start)
    if rule.max_count and count >= rule.max_count:
        return RechargeOutcome(
            customer=customer, reason=f"{count} top-ups this period (max_count {rule.max_count})"
        )
    if rule.max_amount:
        left = rule.max_amount - total
        amount = min(amount, left)
        if amount <= 0 or (rule.minimum and amount < rule.minimum):
            return RechargeOutcome(
                customer=customer,
                reason=f"{total} {found.currency} topped up this period (max_amount"
                f" {rule.max_amount})",
            )
    try:
        invoice_id = service.create_top_up(conn, customer=customer, amount=amount, now=now)
    except (FailedPrecondition, InvalidArgument) as exc:
        return RechargeOutcome(customer=customer, reason=str(exc))
    store.add_recharge(
        conn, invoice_id=invoice_id, customer=customer, amount=amount, period_start=start, now=now
    )
    return RechargeOutcome(customer=customer, invoice_id=invoice_id, amount=amount)
