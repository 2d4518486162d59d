"""Every customer's open invoice at a moment, summed: what the console's overview shows as billed.

The answer is, exactly, the sum of ``preview_invoice(customer, at).total`` over every customer
(per currency; customers whose preview fails - no running subscription, two periods open -
count nothing), without previewing ten thousand customers one by one:

- A customer is *touched* when its invoice can depend on more than its subscriptions: a
  subject of it has any stored event (usage or operator-meter events: its lines, late usage),
  it has credit grants (credit lines), or the invoice of the period holding ``at`` is stored
  and no longer open (its frozen total). Touched customers are previewed one by one.
- Every other customer's invoice is a function of its subscriptions alone (no usage, no late
  usage, no credits). Two such customers whose subscriptions agree on plan version and billing
  period at ``at``, and on the part of that period they serve, get the same total: the preview
  reads a subscription's start and end only as clipped to its period (proration, minimums) and
  for late usage (none without events); a customer with one subscription depends on those
  times only through durations (part served, whole period: proration), so customers anchored
  on different days share a signature. Each such *signature* is previewed once, for one of
  its customers, and counted as many times as it has customers.

So the cost grows with the customers that have usage, not with the customers, and every
number is still the preview's own computation (tests compare it with per-customer previews).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, case, func, select, text

from controlplane.catalog import storage as catalog
from controlplane.catalog.types import Plan
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.invoicing import lifecycle
from controlplane.invoicing.types import Invoice, InvoiceState
from controlplane.storage import schema as s
from controlplane.storage.db import Database
from controlplane.subscriptions.periods import billing_period
from controlplane.subscriptions.types import Subscription
from controlplane.usage import rollups
from controlplane.usage.meters import LLM_TOKENS

OPEN_STATES = (InvoiceState.GATHERING.value, InvoiceState.DRAFT.value)

# Up to this many touched customers are excluded from the untouched groups in SQL (NOT IN).
EXCLUDE_IN_SQL = 500

# The distinct subjects of one meter's rollups, one index probe per subject (a loose index
# scan: the rollup key starts with meter, subject), not one row per stored hour.
_SUBJECTS = text(
    """
    WITH RECURSIVE found(subject) AS (
        SELECT min(subject) FROM usage_rollups WHERE meter = :meter
        UNION ALL
        SELECT (
            SELECT min(subject) FROM usage_rollups
            WHERE meter = :meter AND subject > found.subject
        )
        FROM found WHERE found.subject IS NOT NULL
    )
    SELECT subject FROM found WHERE subject IS NOT NULL
    """
)


@dataclass
class OpenTotals:
    """Open invoices at ``at``: per currency; per touched customer; how many were previewed."""

    by_currency: dict[str, Decimal] = field(default_factory=dict)
    # customer -> (currency, total) for the customers previewed one by one.
    by_customer: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    # (currency, feature key or rate card key) and (currency, model): their lines' amounts.
    by_feature: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    by_model: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    customers: int = 0  # customers with an invoice counted
    previews: int = 0  # previews computed

    def add(self, invoice: Invoice, times: int = 1) -> None:
        currency = invoice.currency
        self.by_currency[currency] = (
            self.by_currency.get(currency, Decimal(0)) + invoice.total * times
        )
        self.customers += times
        for line in invoice.lines:
            amount = line.amount * times
            key = (currency, line.feature or line.rate_card)
            self.by_feature[key] = self.by_feature.get(key, Decimal(0)) + amount
            if line.model:
                key = (currency, line.model)
                self.by_model[key] = self.by_model.get(key, Decimal(0)) + amount


def subjects_with_events(conn: Connection) -> set[str]:
    """Subjects with any stored usage or operator-meter event (from the rollups' keys)."""
    found: set[str] = set()
    for meter in (LLM_TOKENS, rollups.EVENTS):
        found.update(row[0] for row in conn.execute(_SUBJECTS, {"meter": meter}))
    return found


def touched_customers(conn: Connection, *, at: datetime) -> set[str]:
    """Customers whose invoice at ``at`` may depend on more than their subscriptions."""
    subjects = subjects_with_events(conn)
    touched: set[str] = set()
    if subjects:
        cs = s.customer_subjects
        for chunk in _chunks(sorted(subjects), 1000):
            touched.update(
                row[0] for row in conn.execute(select(cs.c.customer).where(cs.c.subject.in_(chunk)))
            )
    touched.update(row[0] for row in conn.execute(select(s.credit_grants.c.customer).distinct()))
    i = s.invoices
    touched.update(
        row[0]
        for row in conn.execute(
            select(i.c.customer)
            .where(i.c.period_start <= at, i.c.period_end > at, i.c.state.not_in(OPEN_STATES))
            .distinct()
        )
    )
    return touched


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _signature(
    subs: list[Subscription], plans: Mapping[tuple[str, int], Plan], at: datetime
) -> tuple[tuple[object, ...], ...]:
    """What an untouched customer's preview at ``at`` depends on: per subscription that serves
    some of its period at ``at``, the plan version, that period and the part of it served."""
    parts: list[tuple[object, ...]] = []
    for sub in subs:
        plan = plans[(sub.plan_key, sub.plan_version)]
        start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
        served_start = max(start, sub.start_time)
        served_end = end if sub.end_time is None else min(end, sub.end_time)
        if served_start >= served_end:
            # Serves nothing of its period at ``at``: the preview skips it (and, without
            # events, it has no late usage either). Kept apart only by what it is.
            parts.append(("idle", sub.plan_key, sub.plan_version, served_start >= end))
            continue
        if len(subs) == 1:
            # Alone, a subscription's invoice without usage depends on its period only through
            # durations: the part served and the whole (proration of fees and minimums), so
            # customers anchored on different days share a signature.
            parts.append((sub.plan_key, sub.plan_version, served_end - served_start, end - start))
        else:
            # Several must share one period (else the preview refuses): keep the times.
            parts.append((sub.plan_key, sub.plan_version, start, end, served_start, served_end))
    return tuple(sorted(parts, key=repr))


def _untouched_member(
    conn: Connection, shape: tuple[Any, ...], values: tuple[Any, ...], out: set[str]
) -> str:
    """The first customer (by key) with this one subscription shape, not among ``out``
    (touched ones): the customer index read in order up to the first match, each candidate
    checked for a second subscription by an index probe (not a count over every customer)."""
    t = s.subscriptions
    other = s.subscriptions.alias("other")
    found: str = conn.execute(
        select(t.c.customer)
        .where(
            *(c == v if v is not None else c.is_(None) for c, v in zip(shape, values, strict=True)),
            t.c.customer.not_in(sorted(out)),
            ~select(other.c.id)
            .where(other.c.customer == t.c.customer, other.c.id != t.c.id)
            .exists(),
        )
        .order_by(t.c.customer)
        .limit(1)
    ).scalar_one()
    return found


_SHAPE = (
    s.subscriptions.c.plan_key,
    s.subscriptions.c.plan_version,
    s.subscriptions.c.billing_anchor,
    s.subscriptions.c.start_time,
    s.subscriptions.c.end_time,
)


@dataclass(frozen=True)
class _Touched:
    customers: frozenset[str]
    # Their subscriptions' shapes, per customer (index lookups).
    shapes: Mapping[str, tuple[tuple[Any, ...], ...]]


def _touched(conn: Connection, at: datetime) -> _Touched:
    t = s.subscriptions
    touched = touched_customers(conn, at=at)
    shapes: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for chunk in _chunks(sorted(touched), 1000):
        for row in conn.execute(select(t.c.customer, *_SHAPE).where(t.c.customer.in_(chunk))):
            shapes[row[0]].append(tuple(row[1:]))
    return _Touched(frozenset(touched), {c: tuple(v) for c, v in shapes.items()})


def _preview(conn: Connection, customer: str, at: datetime, totals: OpenTotals) -> Invoice | None:
    totals.previews += 1
    try:
        return lifecycle.preview_invoice(conn, customer=customer, at=at)
    except (NotFound, FailedPrecondition):
        return None


def _touched_totals(conn: Connection, at: datetime, touched: _Touched) -> OpenTotals:
    """Touched customers with a subscription, previewed one by one."""
    totals = OpenTotals()
    for customer in sorted(touched.shapes):
        found = _preview(conn, customer, at, totals)
        if found is not None:
            totals.by_customer[customer] = (found.currency, found.total)
            totals.add(found)
    return totals


def _quiet_totals(conn: Connection, at: datetime, touched: _Touched) -> OpenTotals:
    """Every other customer: one preview per signature, counted once per customer."""
    t = s.subscriptions
    plans = {(p.key, p.version): p for p in catalog.list_plans(conn)}
    totals = OpenTotals()
    # Touched customers are not counted here. Few (the usual case) are left out in SQL; with
    # many (an IN list too long for one statement), those with a single subscription are in
    # the SQL groups and taken out again here, each group's first member found again.
    exclude_in_sql = len(touched.customers) <= EXCLUDE_IN_SQL
    touched_shapes: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    if not exclude_in_sql:
        for customer, shapes in touched.shapes.items():
            if len(shapes) == 1:
                touched_shapes[shapes[0]].add(customer)

    # signature -> [customers it counts, one of them]
    groups: dict[tuple[tuple[object, ...], ...], list[Any]] = {}

    def count(signature: tuple[tuple[object, ...], ...], n: int, member: str) -> None:
        group = groups.setdefault(signature, [0, member])
        group[0] += n
        group[1] = min(group[1], member)

    # One pass: customers with one subscription grouped by its shape (id NULL), the
    # subscriptions of customers with several one row each (with their id).
    per_customer = func.count().over(partition_by=t.c.customer).label("n")
    inner_rows = select(t.c.id, t.c.customer, *_SHAPE, per_customer)
    if exclude_in_sql and touched.customers:
        inner_rows = inner_rows.where(t.c.customer.not_in(sorted(touched.customers)))
    inner = inner_rows.subquery()
    alone = inner.c.n == 1
    one_id = case((alone, None), else_=inner.c.id)
    inner_shape = [inner.c[c.name] for c in _SHAPE]
    rows: list[Any] = conn.execute(
        select(one_id, *inner_shape, func.count(), func.min(inner.c.customer)).group_by(
            one_id, *inner_shape
        )
    ).all()  # type: ignore[assignment]
    several: dict[str, list[Subscription]] = defaultdict(list)
    for sub_id, key, plan_version, anchor, start_time, end_time, n, first in rows:
        sub = Subscription(
            id=sub_id or "",
            customer=first,
            plan_key=key,
            plan_version=plan_version,
            start_time=start_time,
            end_time=end_time,
            billing_anchor=anchor,
        )
        if sub_id is not None:
            if first not in touched.customers:
                several[first].append(sub)
            continue
        shape_key = (key, plan_version, anchor, start_time, end_time)
        out = touched_shapes.get(shape_key, set())
        n -= len(out)
        if not n:
            continue
        if first in out:
            first = _untouched_member(conn, _SHAPE, shape_key, out)
            sub = replace(sub, customer=first)
        count(_signature([sub], plans, at), n, first)
    for customer, subs in several.items():
        count(_signature(subs, plans, at), 1, customer)
    for n, member in groups.values():
        found = _preview(conn, member, at, totals)
        if found is not None:
            totals.add(found, n)
    return totals


def _merged(*parts: OpenTotals) -> OpenTotals:
    totals = OpenTotals()
    for part in parts:
        for name in ("by_currency", "by_feature", "by_model"):
            mine, theirs = getattr(totals, name), getattr(part, name)
            for key, amount in theirs.items():
                mine[key] = mine.get(key, Decimal(0)) + amount
        totals.by_customer.update(part.by_customer)
        totals.customers += part.customers
        totals.previews += part.previews
    return totals


def open_totals(conn: Connection, *, at: datetime) -> OpenTotals:
    """The sum of every customer's invoice preview at ``at`` (see the module docstring).

    Customers with one subscription (most) are grouped in SQL by that subscription's plan
    version and times, so Python sees one row per distinct subscription, not per customer;
    customers with several are read whole and grouped here.
    """
    touched = _touched(conn, at)
    return _merged(_touched_totals(conn, at, touched), _quiet_totals(conn, at, touched))


# Threads (one connection each) previewing touched customers beside the untouched half.
TOUCHED_WORKERS = 3


def open_totals_concurrently(db: Database, *, at: datetime) -> OpenTotals:
    """``open_totals`` with its halves in transactions at once, their database round trips
    overlapping: the untouched customers (grouped) in one, the touched customers split into
    up to ``TOUCHED_WORKERS`` interleaved shares (previewed one by one) in as many more. Each
    reads committed data as a single transaction on PostgreSQL's default isolation does: per
    statement."""
    with db.begin() as conn:
        touched = _touched(conn, at)
    keys = sorted(touched.shapes)
    shares = [
        _Touched(touched.customers, {c: touched.shapes[c] for c in keys[i::TOUCHED_WORKERS]})
        for i in range(min(TOUCHED_WORKERS, len(keys)))
    ]

    def run(
        job: tuple[Callable[[Connection, datetime, _Touched], OpenTotals], _Touched],
    ) -> OpenTotals:
        half, share = job
        with db.begin() as conn:
            return half(conn, at, share)

    jobs = [(_quiet_totals, touched), *((_touched_totals, share) for share in shares)]
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="open-totals") as pool:
        parts = list(pool.map(run, jobs))
    return _merged(*parts)
