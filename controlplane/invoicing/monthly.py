"""Billed per calendar month: the invoices no longer open, summed in SQL.

``billed_by_month`` answers what the console's margin page shows for past months: per month
(UTC, by period start) and currency, the totals of the invoices in ``BILLED_STATES`` (draft,
issued, paid, payment failed; never void, nor credit top-ups, whose period is empty), or, for
one model or feature (or rate card), the sum of those invoices' lines of it. An invoice with
no line of it counts nothing, not even a zero.

Issued invoices (and paid, payment failed) have a frozen total and frozen lines: they are
summed by the database, grouped by month and currency, so reading a year of ten thousand
customers costs one statement, not one invoice (and its lines) at a time. A model's or a
feature's lines are read from ``invoice_line_totals`` (one narrow, indexed row per frozen line,
written at issue), not parsed from each line's JSON; the invoice's current state still
decides (a line of an invoice voided since, or of a top-up, is left out by an anti-join).
Drafts are still computed live (``lifecycle.load_invoice``), one by one: they are the few
periods ended and not yet issued. Sums are exact: PostgreSQL adds ``numeric``; SQLite has no
exact decimal, so each group's amounts come back as one text (``group_concat``) and are added
as ``Decimal`` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Numeric,
    Subquery,
    and_,
    case,
    cast,
    exists,
    func,
    select,
)

from controlplane.customers import storage as customers
from controlplane.invoicing import lifecycle, storage
from controlplane.invoicing.types import Invoice, InvoiceState
from controlplane.storage import schema as s

BILLED_STATES = (
    InvoiceState.DRAFT,
    InvoiceState.ISSUED,
    InvoiceState.PAID,
    InvoiceState.PAYMENT_FAILED,
)
# Frozen: lines and total stored at issue.
_FROZEN = [state.value for state in BILLED_STATES if not state.open]


def month_index(value: datetime, starts: Sequence[datetime]) -> int | None:
    """The index of the last of ``starts`` (ascending) at or before ``value``; None before all."""
    for index in range(len(starts) - 1, -1, -1):
        if value >= starts[index]:
            return index
    return None


def _month_of(column: Any, starts: Sequence[datetime]) -> ColumnElement[Any]:
    """SQL ``month_index``: the latest start first."""
    return case(
        *((column >= start, index) for index, start in reversed(list(enumerate(starts)))),
        else_=None,
    )


def billed_by_month(
    conn: Connection,
    *,
    starts: Sequence[datetime],
    customer: str = "",
    model: str = "",
    feature: str = "",
) -> list[dict[str, Decimal]]:
    """Per month of ``starts`` (ascending month starts; the last month runs on), currency ->
    the billed invoices' totals, or their lines of ``model`` or ``feature`` (one of them).
    ``customer`` narrows to one customer (NotFound when there is none)."""
    if model and feature:
        raise ValueError("one of model or feature")
    if customer:
        customers.get_customer(conn, customer)
    billed: list[dict[str, Decimal]] = [{} for _ in starts]
    if not starts:
        return billed
    inner = _frozen_amounts(starts, customer=customer, model=model, feature=feature)
    if conn.dialect.name == "postgresql":
        summed: Any = func.sum(cast(inner.c.amount, Numeric))
    else:
        summed = func.group_concat(inner.c.amount, " ")
    query = select(inner.c.month, inner.c.currency, summed).group_by(
        inner.c.month, inner.c.currency
    )
    for month, currency, value in conn.execute(query):
        total = (
            Decimal(value)
            if isinstance(value, Decimal)
            else sum((Decimal(part) for part in str(value).split(" ")), Decimal(0))
        )
        billed[month][currency] = billed[month].get(currency, Decimal(0)) + total
    # Drafts: computed now, one by one.
    for invoice in _drafts(conn, customer=customer):
        if invoice.period_start == invoice.period_end:
            continue
        index = month_index(invoice.period_start, starts)
        if index is None:
            continue
        found = _amount_of(invoice, model=model, feature=feature)
        if found is not None:
            month_billed = billed[index]
            month_billed[invoice.currency] = month_billed.get(invoice.currency, Decimal(0)) + found
    return billed


def _frozen_amounts(
    starts: Sequence[datetime], *, customer: str, model: str, feature: str
) -> Subquery:
    """The frozen invoices' rows summed: (month index, currency, amount as text), each frozen
    invoice's total, or each of its lines of ``model`` or ``feature``."""
    inv = s.invoices
    counted = [
        inv.c.state.in_(_FROZEN),
        inv.c.period_start != inv.c.period_end,  # not a credit top-up
    ]
    if model or feature:
        # Each frozen line's row (written at issue), of the months shown, unless its invoice
        # is not counted now (void since, a top-up): the few such invoices are what the
        # database looks up, not every invoice of the months.
        t = s.invoice_line_totals
        not_counted = select(inv.c.id).where(inv.c.id == t.c.invoice_id, ~and_(*counted))
        where = [
            t.c.model == model if model else t.c.feature == feature,
            t.c.period_start >= starts[0],
            ~exists(not_counted),
        ]
        if customer:
            where.append(t.c.customer == customer)
        columns = (t.c.period_start, t.c.currency, t.c.amount)
    else:
        where = [*counted, inv.c.period_start >= starts[0]]
        if customer:
            where.append(inv.c.customer == customer)
        columns = (inv.c.period_start, inv.c.currency, inv.c.total)
    period_start, currency, amount = columns
    # Grouped in an outer query: the month's CASE carries bound parameters, which PostgreSQL
    # would not recognise as one expression in both SELECT and GROUP BY.
    return (
        select(
            _month_of(period_start, starts).label("month"),
            currency.label("currency"),
            amount.label("amount"),
        )
        .where(*where)
        .subquery()
    )


def _drafts(conn: Connection, *, customer: str) -> Iterable[Invoice]:
    rows = storage.list_invoice_rows(
        conn, customer=customer or None, states=[InvoiceState.DRAFT], top_ups=True
    )
    return (lifecycle.load_invoice(conn, row) for row in rows)


def _amount_of(invoice: Invoice, *, model: str, feature: str) -> Decimal | None:
    """An invoice's total, or the sum of its lines of ``model`` or ``feature`` (None when it
    has none)."""
    if not model and not feature:
        return invoice.total
    amounts = [
        line.amount
        for line in invoice.lines
        if (model and line.model == model) or (feature and storage.line_feature(line) == feature)
    ]
    return sum(amounts, Decimal(0)) if amounts else None
