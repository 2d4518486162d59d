"""Credit use cases: grant (idempotent by key), void, balances, the ledger.

Every change happens under the customer's row lock (the one invoicing takes), so a grant,
a void and an invoice being issued never interleave for one customer.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import Connection

from controlplane.catalog import storage as catalog
from controlplane.credits import settlement, storage
from controlplane.credits.apply import AvailableCredit, spending_order
from controlplane.credits.types import (
    CreditBalance,
    CreditGrant,
    CreditTransaction,
    Funding,
    GrantBalance,
    TransactionType,
)
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.invoicing import lifecycle
from controlplane.invoicing import storage as invoices
from controlplane.invoicing.types import InvoiceLine, InvoiceState
from controlplane.notifications.invoices import emit_invoice_event
from controlplane.rating.charge import LineType
from controlplane.rating.money import round_money, rounding_places
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import LATEST_TIME, add_cadence, parse_cadence

# Bounds (docs/credits.md): amounts fit the catalog's decimal bounds, priorities a small int.
MAX_AMOUNT = Decimal("1000000000000")
MAX_PRIORITY = 1000
MAX_FEATURES = 100
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:-]{0,199}$")


def parse_amount(text: str) -> Decimal:
    """A grant amount: a decimal string above zero (InvalidArgument otherwise)."""
    try:
        amount = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidArgument(
            f"credit grant amount must be a decimal string, got {text!r}"
        ) from None
    if not amount.is_finite():
        raise InvalidArgument(f"credit grant amount must be a finite number, got {text!r}")
    if amount <= 0:
        raise InvalidArgument(f"credit grant amount must be above zero, got {text}")
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"credit grant amount must be at most {MAX_AMOUNT}, got {text}")
    return amount


def parse_funding(text: str) -> Funding:
    try:
        return Funding(text or Funding.PROMOTIONAL.value)
    except ValueError:
        raise InvalidArgument(
            f'credit grant funding must be "invoice", "promotional" or "external", got {text!r}'
        ) from None


def expiry_after(effective_time: datetime, duration: str) -> datetime:
    """``effective_time`` plus an ISO 8601 duration such as P90D."""
    try:
        return add_cadence(effective_time, parse_cadence(duration))
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"credit grant expiry: {str(exc).replace('billing cadence ', '')}"
        ) from None


def _plan_currency(conn: Connection, customer: str, at: datetime) -> str:
    subs = [
        sub
        for sub in subscriptions.list_subscriptions(conn, customer)
        if sub.end_time is None or sub.end_time > at
    ]
    if not subs:
        raise FailedPrecondition(
            f"customer {customer!r} has no current or future subscription: credits are in the"
            " currency of the customer's plan"
        )
    subs.sort(key=lambda sub: sub.start_time)
    running = [sub for sub in subs if sub.start_time <= at] or subs
    sub = running[0]
    return catalog.get_plan(conn, sub.plan_key, sub.plan_version).currency


def plan_currency(conn: Connection, customer: str, at: datetime) -> str:
    """The currency of the customer's plan at ``at`` (FailedPrecondition without one)."""
    return _plan_currency(conn, customer, at)


def _check_money(amount: Decimal, currency: str, *, what: str) -> None:
    if not amount.is_finite() or amount <= 0:
        raise InvalidArgument(f"{what} must be above zero, got {amount}")
    check_grid(amount, currency, what=what)


def check_grid(amount: Decimal, currency: str, *, what: str) -> None:
    """InvalidArgument if ``amount`` is above the bound or finer than the currency's unit."""
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"{what} must be at most {MAX_AMOUNT}")
    # Invoice lines are rounded to this; a grant on the same grid pays them to the cent.
    places = rounding_places(currency)
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise InvalidArgument(
            f"{what} {amount} has more decimals than {currency} has ({places}): credits are money"
        )


def _check(conn: Connection, grant: CreditGrant, currency: str) -> None:
    if grant.currency and grant.currency != currency:
        raise InvalidArgument(
            f"credit grant currency {grant.currency!r} is not the currency of customer "
            f"{grant.customer!r}'s plan ({currency})"
        )
    _check_money(grant.amount, currency, what="credit grant amount")
    if not 0 <= grant.priority <= MAX_PRIORITY:
        raise InvalidArgument(
            f"credit grant priority must be between 0 and {MAX_PRIORITY}, got {grant.priority}"
        )
    if grant.effective_time.tzinfo is None or grant.effective_time > LATEST_TIME:
        raise InvalidArgument("credit grant effective time must be an aware time before 9000")
    if grant.expire_time is not None and grant.expire_time <= grant.effective_time:
        raise InvalidArgument(
            f"credit grant expiry {grant.expire_time.isoformat()} must be after its effective"
            f" time {grant.effective_time.isoformat()}"
        )
    if grant.key and not _KEY.match(grant.key):
        raise InvalidArgument(
            f"credit grant key {grant.key[:40]!r} must be 1-200 letters, digits or '._~:-',"
            " starting with a letter or digit"
        )
    if len(grant.features) > MAX_FEATURES:
        raise InvalidArgument(f"a credit grant names at most {MAX_FEATURES} features")
    if len(set(grant.features)) != len(grant.features):
        raise InvalidArgument("credit grant features must not repeat")
    for feature in grant.features:
        try:
            catalog.get_feature(conn, feature)
        except NotFound:
            raise InvalidArgument(f"credit grant names unknown feature {feature!r}") from None
    if len(grant.description) > 500:
        raise InvalidArgument("credit grant description is longer than 500 characters")


def create_grant(
    conn: Connection, grant: CreditGrant, *, now: datetime
) -> tuple[CreditGrant, bool]:
    """Store a grant and its ``funded`` entry; with a known key, the first grant and False.

    ``grant.currency`` may be empty (the plan's); ``grant.effective_time`` is required.
    """
    customers.get_customer(conn, grant.customer)
    invoices.lock_customer(conn, grant.customer)
    if grant.key:
        found = storage.find_by_key(conn, grant.customer, grant.key)
        if found is not None:
            return found, False
    currency = _plan_currency(conn, grant.customer, max(now, grant.effective_time))
    _check(conn, grant, currency)
    stored = storage.insert_grant(conn, replace(grant, currency=currency), now=now)
    if stored is None:  # the same key, inserted concurrently
        found = storage.find_by_key(conn, grant.customer, grant.key)
        assert found is not None
        return found, False
    return stored, True


def _owned(conn: Connection, customer: str, id: str, *, lock: bool = False) -> CreditGrant:
    grant = storage.get_grant(conn, id, lock=lock)
    if grant.customer != customer:
        raise NotFound(f"credit grant {id!r} of customer {customer!r} not found")
    return grant


def get_grant(conn: Connection, *, customer: str, id: str) -> CreditGrant:
    customers.get_customer(conn, customer)
    return _owned(conn, customer, id)


def void_grant(conn: Connection, *, customer: str, id: str, now: datetime) -> CreditGrant:
    """Void a grant: its unspent remainder leaves the balance (a ``voided`` entry)."""
    customers.get_customer(conn, customer)
    invoices.lock_customer(conn, customer)
    grant = _owned(conn, customer, id, lock=True)
    if grant.void_time is not None:
        raise FailedPrecondition(f"credit grant {id!r} was voided at {grant.void_time.isoformat()}")
    remaining = storage.remaining_by_grant(conn, [grant.id])[grant.id]
    if remaining > 0:
        storage.add_transaction(
            conn,
            grant=grant,
            type=TransactionType.VOIDED,
            amount=-remaining,
            time=now,
            now=now,
            description="unspent remainder voided",
        )
    storage.set_void_time(conn, grant.id, now)
    return storage.get_grant(conn, grant.id)


def remaining(conn: Connection, grant: CreditGrant) -> Decimal:
    """What remains of a grant: the sum of its ledger entries."""
    return storage.remaining_by_grant(conn, [grant.id])[grant.id]


def list_grants(conn: Connection, *, customer: str) -> list[CreditGrant]:
    customers.get_customer(conn, customer)
    return storage.list_grants(conn, customer)


def ledger(conn: Connection, *, customer: str, grant_id: str = "") -> list[CreditTransaction]:
    """The customer's ledger in the order it was written (optionally one grant's)."""
    customers.get_customer(conn, customer)
    if grant_id:
        _owned(conn, customer, grant_id)
    return storage.list_transactions(conn, customer, grant_id=grant_id)


def balance(conn: Connection, *, customer: str, at: datetime) -> CreditBalance:
    """``settled``: remainders of the grants active at ``at``; ``live``: less open invoices'.

    ``live`` counts what the customer's open invoices (gathering and draft) would take from
    credits if issued now: the usage the data planes reported and no invoice billed yet.
    """
    customers.get_customer(conn, customer)
    grants = storage.list_grants(conn, customer)
    # The ledger as it stood at ``at``: a balance in the past ignores what happened since.
    remaining = storage.remaining_by_grant(conn, [grant.id for grant in grants], at=at)
    active = tuple(
        sorted(
            (
                GrantBalance(grant=grant, remaining=remaining[grant.id])
                for grant in grants
                if grant.active(at)
            ),
            key=lambda entry: _spending_key(entry.grant),
        )
    )
    settled = sum((entry.remaining for entry in active), Decimal(0))
    try:
        currency = _plan_currency(conn, customer, at)
    except FailedPrecondition:
        currency = grants[0].currency if grants else ""
    open_invoices = [
        lifecycle.load_invoice(conn, row)
        for row in invoices.list_invoice_rows(
            conn, customer=customer, states=(InvoiceState.GATHERING, InvoiceState.DRAFT)
        )
    ]
    try:
        # The current period, even before the invoicing job created its invoice.
        current = lifecycle.preview_invoice(conn, customer=customer, at=at)
    except FailedPrecondition:
        current = None
    if (
        current is not None
        and current.state.open
        and all(found.period_start != current.period_start for found in open_invoices)
    ):
        open_invoices.append(current)
    pending = sum(
        (
            -line.amount
            for invoice in open_invoices
            for line in invoice.lines
            if line.type is LineType.CREDIT
        ),
        Decimal(0),
    )
    return CreditBalance(
        customer=customer,
        currency=currency,
        at=at,
        settled=settled,
        live=max(settled - pending, Decimal(0)),
        grants=active,
        pending=pending,
    )


def _spending_key(grant: CreditGrant) -> tuple[int, int, datetime, datetime, str]:
    return spending_order(
        AvailableCredit(
            grant_id=grant.id,
            remaining=Decimal(0),
            priority=grant.priority,
            effective_time=grant.effective_time,
            expire_time=grant.expire_time,
        )
    )


def expire(conn: Connection, *, customer: str, now: datetime) -> list[str]:
    """Ledger the expiry of remainders no open invoice can spend any more."""
    customers.get_customer(conn, customer)
    invoices.lock_customer(conn, customer)
    return settlement.expire_due(conn, customer=customer, now=now)


def create_top_up(conn: Connection, *, customer: str, amount: Decimal, now: datetime) -> str:
    """Issue a one-off invoice of ``amount`` buying credits; the invoice id.

    The credits are granted when the invoice is paid (``topups.grant_paid_top_up``). At most
    one top-up per customer awaits payment at a time.
    """
    customers.get_customer(conn, customer)
    invoices.lock_customer(conn, customer)
    currency = _plan_currency(conn, customer, now)
    _check_money(amount, currency, what="top-up amount")
    amount = round_money(amount, currency)  # on the grid already: only "50" -> "50.00"
    waiting = [
        row
        for row in invoices.list_invoice_rows(
            conn, customer=customer, states=(InvoiceState.ISSUED,), top_ups=True
        )
        if row.kind == invoices.TOP_UP_KIND
    ]
    if waiting:
        raise FailedPrecondition(
            f"top-up invoice {waiting[0].number} of customer {customer!r} awaits payment;"
            " one top-up at a time (void it to start another)"
        )
    if invoices.find_top_up_at(conn, customer=customer, currency=currency, at=now):
        raise FailedPrecondition(f"customer {customer!r} has a top-up at {now.isoformat()}")
    row = invoices.insert_invoice_row(
        conn,
        customer=customer,
        currency=currency,
        period_start=now,
        period_end=now,
        state=InvoiceState.DRAFT,
        now=now,
        kind=invoices.TOP_UP_KIND,
    )
    line = InvoiceLine(
        subscription="",
        rate_card="",
        feature=None,
        description=f"prepaid credits: {amount} {currency}",
        quantity=Decimal(1),
        unit_price=amount,
        amount=amount,
        period_start=now,
        period_end=now,
        type=LineType.FLAT,
    )
    number = invoices.next_number(conn, currency=currency, year=now.year)
    invoices.freeze(conn, row.id, number=number, lines=[line], total=amount, now=now)
    emit_invoice_event(conn, lifecycle.get_invoice(conn, row.id), "invoice.issued", now=now)
    return row.id
