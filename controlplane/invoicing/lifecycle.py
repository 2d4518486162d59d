"""The invoice lifecycle: gathering -> draft -> issued -> paid | payment_failed | void.

One invoice per customer, currency and billing period. While an invoice is open (gathering or
draft) its lines are computed live from usage and the catalog; issuing computes them one last
time, records which usage events they priced (``invoice_usage_events``,
``invoice_meter_events``), numbers the invoice and freezes lines and total. Nothing changes an
issued invoice afterwards.

Late usage, exactly once: an event is *billed* for a subscription when a row
``(subscription, event id)`` exists in ``invoice_usage_events`` (llm_tokens events) or
``(subscription, source, id)`` in ``invoice_meter_events`` (operator-meter events); their
primary keys forbid a second one. Issuing an invoice bills, in the same transaction and under
the customer's row lock, every unbilled event of (a) its own period and (b) the periods of the
customer's already issued invoices. (b) are late events: they arrived after their period's
invoice was issued (or after the snapshot its issue read), and become their own ``late_usage``
line per rate card and late period, priced as the difference the late quantity makes to that
period: ``lines(billed before + late) - lines(billed before)``, so tiers, free units and
commitments of the original period still apply. For an operator meter, ``billed before +
late`` is the meter's aggregate over both sets of events: the late events' own SUM or COUNT
added, the period's MAX or UNIQUE_COUNT raised by what they add, the period's LATEST replaced
by theirs if they are later (which may lower it: a negative late line, a credit). The lines of
an issued invoice are a function of the events it billed and the catalog, so they can be
recomputed at any time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from sqlalchemy import Connection, select

from controlplane.catalog import storage as catalog
from controlplane.catalog.types import (
    LLM_TOKENS,
    Feature,
    Plan,
    PriceList,
    PriceType,
    RateCard,
    SettlementMode,
)
from controlplane.credits import settlement as credits
from controlplane.credits import topups
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition, InvalidArgument, MeterlineError
from controlplane.invoicing import storage
from controlplane.invoicing.lines import CardUsage, Segment, lines_total, segment_lines
from controlplane.invoicing.storage import Billed, InvoiceRow
from controlplane.invoicing.types import Invoice, InvoiceLine, InvoiceState
from controlplane.notifications.invoices import emit_invoice_event, emit_invoicing_failure
from controlplane.rating import round_money
from controlplane.rating.modellist import ModelUsage
from controlplane.storage import schema as s
from controlplane.storage.db import Database
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import billing_period
from controlplane.subscriptions.types import Subscription
from controlplane.tracing import span

log = logging.getLogger(__name__)

ISSUED_STATES = (
    InvoiceState.ISSUED,
    InvoiceState.PAID,
    InvoiceState.PAYMENT_FAILED,
    InvoiceState.VOID,
)


@dataclass(frozen=True)
class InvoicingSettings:
    """``grace``: how long after a period ends late events still land on its own invoice."""

    grace: timedelta = timedelta(hours=1)
    # Issue drafts in the job instead of waiting for IssueInvoice.
    auto_issue: bool = False


def _plan(conn: Connection, sub: Subscription) -> Plan:
    return catalog.get_plan(conn, sub.plan_key, sub.plan_version)


def _own_segments(conn: Connection, row: InvoiceRow) -> list[Segment]:
    segments = []
    for sub in subscriptions.list_subscriptions(conn, row.customer):
        plan = _plan(conn, sub)
        if plan.currency != row.currency:
            continue
        period = billing_period(
            anchor=sub.anchor, cadence=plan.billing_cadence, at=row.period_start
        )
        if period != (row.period_start, row.period_end):
            continue
        start = max(row.period_start, sub.start_time)
        end = row.period_end if sub.end_time is None else min(row.period_end, sub.end_time)
        if end > start:
            segments.append(
                Segment(
                    sub=sub,
                    plan=plan,
                    start=start,
                    end=end,
                    period_start=row.period_start,
                    period_end=row.period_end,
                )
            )
    return segments


def _late_segments(conn: Connection, row: InvoiceRow, subjects: Sequence[str]) -> list[Segment]:
    """Windows of issued periods (before this invoice's) holding unbilled events."""
    open_periods = {
        (r.period_start, r.period_end)
        for r in storage.list_invoice_rows(
            conn,
            customer=row.customer,
            currency=row.currency,
            states=(InvoiceState.GATHERING, InvoiceState.DRAFT),
        )
        if r.id != row.id
    }
    segments = []
    for sub in subscriptions.list_subscriptions(conn, row.customer):
        plan = _plan(conn, sub)
        if plan.currency != row.currency:
            continue
        until = row.period_start if sub.end_time is None else min(row.period_start, sub.end_time)
        first = storage.first_unbilled_time(
            conn, subscription=sub.id, subjects=subjects, start=sub.start_time, end=until
        )
        if first is None:
            continue
        at = first
        while at < until:
            start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
            if (start, end) not in open_periods:
                segments.append(
                    Segment(
                        sub=sub,
                        plan=plan,
                        start=max(start, sub.start_time),
                        end=min(end, until),
                        late=True,
                        period_start=start,
                        period_end=end,
                    )
                )
            at = end
    return segments


def _feature_quantity(
    conn: Connection,
    *,
    row: InvoiceRow,
    segment: Segment,
    subjects: Sequence[str],
    feature: Feature,
    which: Sequence[Billed],
) -> Decimal:
    """The feature's quantity over the segment's events that are any of ``which``."""
    if feature.meter != LLM_TOKENS.key:
        # Operator meters aggregate over the union (MAX, UNIQUE_COUNT and LATEST are not
        # sums of per-set quantities).
        return storage.meter_quantity(
            conn,
            meter=feature.meter,
            subscription=segment.sub.id,
            invoice_id=row.id,
            which=tuple(which),
            subjects=subjects,
            start=segment.start,
            end=segment.end,
            filters=feature.filters,
        )
    return sum(
        (
            Decimal(
                storage.sum_billed(
                    conn,
                    subscription=segment.sub.id,
                    invoice_id=row.id,
                    which=w,
                    subjects=subjects,
                    start=segment.start,
                    end=segment.end,
                    filters=feature.filters,
                )
            )
            for w in which
        ),
        Decimal(0),
    )


def _model_usage(
    conn: Connection,
    *,
    row: InvoiceRow,
    segment: Segment,
    subjects: Sequence[str],
    which: Billed,
    feature: Feature,
    price_list: PriceList,
) -> tuple[ModelUsage, ...]:
    """The segment's tokens per model and type, in windows cut at every price change."""
    start, end = segment.start, segment.end
    cuts = sorted(
        {
            start,
            end,
            *(p.effective_from for p in price_list.prices if start < p.effective_from < end),
        }
    )
    usage: list[ModelUsage] = []
    for a, b in pairwise(cuts):
        sums = storage.sum_billed_by_model(
            conn,
            subscription=segment.sub.id,
            invoice_id=row.id,
            which=which,
            subjects=subjects,
            start=a,
            end=b,
            filters=feature.filters,
        )
        usage += [ModelUsage(model, kind, a, Decimal(n)) for (model, kind), n in sums.items()]
    return tuple(usage)


@dataclass
class _Catalog:
    """Features and price lists read once per computation."""

    features: dict[str, Feature] = field(default_factory=dict)
    price_lists: dict[str, PriceList] = field(default_factory=dict)

    def feature(self, conn: Connection, key: str) -> Feature:
        if key not in self.features:
            self.features[key] = catalog.get_feature(conn, key)
        return self.features[key]

    def price_list(self, conn: Connection, key: str) -> PriceList:
        if key not in self.price_lists:
            self.price_lists[key] = catalog.get_price_list(conn, key)
        return self.price_lists[key]


def _card_usage(
    conn: Connection,
    *,
    row: InvoiceRow,
    segment: Segment,
    subjects: Sequence[str],
    which: Billed,
    card: RateCard,
    read: _Catalog,
) -> CardUsage:
    """What ``card`` is rated on in ``segment`` (the snapshot step: every query is here)."""
    price = card.price
    assert price is not None
    feature = read.feature(conn, card.feature) if card.feature else None
    if feature is None:
        return CardUsage(card)
    if price.type is PriceType.MODEL_LIST:
        if price.price_list is None:
            return CardUsage(card, feature)
        price_list = read.price_list(conn, price.price_list)

        def models(which: Billed) -> tuple[ModelUsage, ...]:
            return _model_usage(
                conn,
                row=row,
                segment=segment,
                subjects=subjects,
                which=which,
                feature=feature,
                price_list=price_list,
            )

        billed = models(which)
        before: tuple[ModelUsage, ...] = ()
        if segment.late and sum((u.quantity for u in billed), Decimal(0)):
            before = models(Billed.BY_OTHERS)
        return CardUsage(card, feature, price_list=price_list, models=billed, models_before=before)
    if not price.usage_based:
        return CardUsage(card, feature)

    def quantity(*sets: Billed) -> Decimal:
        return _feature_quantity(
            conn, row=row, segment=segment, subjects=subjects, feature=feature, which=sets
        )

    if segment.late:
        return CardUsage(
            card,
            feature,
            quantity=quantity(Billed.BY_OTHERS, which),
            billed_before=quantity(Billed.BY_OTHERS),
        )
    return CardUsage(card, feature, quantity=quantity(which))


def _segments(conn: Connection, row: InvoiceRow, subjects: Sequence[str]) -> list[Segment]:
    return [*_own_segments(conn, row), *_late_segments(conn, row, subjects)]


def _compute(
    conn: Connection,
    row: InvoiceRow,
    segments: Sequence[Segment],
    subjects: Sequence[str],
    which: Billed,
) -> list[InvoiceLine]:
    """The lines of ``segments``: every quantity read first, then rated (pure: lines.py)."""
    read = _Catalog()
    snapshot = [
        (
            segment,
            [
                _card_usage(
                    conn,
                    row=row,
                    segment=segment,
                    subjects=subjects,
                    which=which,
                    card=card,
                    read=read,
                )
                for card in segment.plan.rate_cards
                if card.price is not None
            ],
        )
        for segment in segments
    ]
    return [line for segment, cards in snapshot for line in segment_lines(segment, cards)]


def _scope(row: InvoiceRow) -> credits.InvoiceScope:
    return credits.InvoiceScope(
        id=row.id,
        customer=row.customer,
        currency=row.currency,
        period_start=row.period_start,
        period_end=row.period_end,
    )


def _with_credits(
    conn: Connection, row: InvoiceRow, segments: Sequence[Segment], lines: list[InvoiceLine]
) -> list[InvoiceLine]:
    """``lines`` plus the credit (and credit_only uncovered) lines credits add now."""
    modes: dict[tuple[str, str], SettlementMode] = {
        (segment.sub.id, card.key): card.settlement_mode
        for segment in segments
        for card in segment.plan.rate_cards
    }
    return lines + credits.apply_to_invoice(conn, scope=_scope(row), lines=lines, modes=modes)


def _invoice(row: InvoiceRow, lines: Sequence[InvoiceLine], total: Decimal) -> Invoice:
    sync_error, stripe_invoice_id = storage.sync_summary(row)
    return Invoice(
        id=row.id,
        customer=row.customer,
        currency=row.currency,
        period_start=row.period_start,
        period_end=row.period_end,
        lines=tuple(lines),
        total=total,
        state=row.state,
        number=row.number,
        issue_time=row.issue_time,
        create_time=row.create_time,
        update_time=row.update_time,
        sync_state=row.sync_state,
        sync_error=sync_error,
        stripe_invoice_id=stripe_invoice_id,
    )


def load_invoice(conn: Connection, row: InvoiceRow) -> Invoice:
    """An invoice with its lines: frozen ones once issued, else computed from usage now."""
    if not row.state.open:
        assert row.total is not None
        return _invoice(row, storage.stored_lines(conn, row.id), row.total)
    subjects = customers.get_customer(conn, row.customer).subjects
    segments = _segments(conn, row, subjects)
    lines = _with_credits(
        conn, row, segments, _compute(conn, row, segments, subjects, Billed.UNBILLED)
    )
    return _invoice(row, lines, round_money(lines_total(lines), row.currency))


def get_invoice(conn: Connection, id: str) -> Invoice:
    return load_invoice(conn, storage.get_invoice_row(conn, id))


def list_invoices(
    conn: Connection, *, customer: str | None = None, states: Sequence[InvoiceState] | None = None
) -> list[Invoice]:
    if customer is not None:
        customers.get_customer(conn, customer)
    rows = storage.list_invoice_rows(conn, customer=customer, states=states, top_ups=True)
    return [load_invoice(conn, row) for row in rows]


def page_invoices(
    conn: Connection,
    *,
    customer: str | None = None,
    states: Sequence[InvoiceState] | None = None,
    offset: int,
    size: int,
) -> tuple[list[Invoice], bool]:
    """``list_invoices[offset:offset + size]`` and whether more follow: only these rows are
    read and loaded (the frozen ones' lines in one statement, open ones computed)."""
    if customer is not None:
        customers.get_customer(conn, customer)
    rows = storage.list_invoice_rows(
        conn, customer=customer, states=states, top_ups=True, offset=offset, limit=size + 1
    )
    shown = rows[:size]
    frozen = storage.stored_lines_of(conn, [row.id for row in shown if not row.state.open])
    invoices = []
    for row in shown:
        if row.state.open:
            invoices.append(load_invoice(conn, row))
        else:
            assert row.total is not None
            invoices.append(_invoice(row, frozen[row.id], row.total))
    return invoices, len(rows) > size


def preview_invoice(conn: Connection, *, customer: str, at: datetime) -> Invoice:
    """The invoice of the customer's billing period containing ``at``, as it stands.

    One code path with stored invoices: the stored open invoice of that period if the job
    created it already, else the same computation on an unsaved row. Either way the lines are
    exactly those issuing it now would freeze (per subscription, prorated, with late usage of
    earlier periods), with commitments applied as if the period ended with the usage so far.
    An issued period shows its frozen invoice.
    """
    customers.get_customer(conn, customer)  # NotFound first
    periods: dict[tuple[str, datetime, datetime], None] = {}
    for sub in subscriptions.list_subscriptions(conn, customer):
        plan = _plan(conn, sub)
        start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
        served_end = end if sub.end_time is None else min(end, sub.end_time)
        if start <= at < end and max(start, sub.start_time) < served_end:
            periods[(plan.currency, start, end)] = None
    if not periods:
        raise FailedPrecondition(
            f"customer {customer!r} has no running subscription at {at.isoformat()}"
        )
    if len(periods) > 1:
        listed = ", ".join(f"{c} {a.isoformat()}..{b.isoformat()}" for c, a, b in periods)
        raise FailedPrecondition(
            f"customer {customer!r} has {len(periods)} invoices open at {at.isoformat()}"
            f" ({listed}); list them with ListInvoices"
        )
    ((currency, start, end),) = periods
    row = storage.find_invoice_row(
        conn, customer=customer, currency=currency, period_start=start, period_end=end
    )
    if row is None:
        row = InvoiceRow(
            id="",
            customer=customer,
            currency=currency,
            period_start=start,
            period_end=end,
            state=InvoiceState.GATHERING,
            number=None,
            total=None,
            issue_time=None,
            sync_state=None,
            sync_record=None,
            create_time=at,
            update_time=at,
        )
        invoice = load_invoice(conn, row)
        return replace(invoice, create_time=None, update_time=None)
    return load_invoice(conn, row)


# Transitions ----------------------------------------------------------------------------------


def _locked(conn: Connection, id: str) -> InvoiceRow:
    """The invoice, with its customer's and its own row locked (in that order, always)."""
    row = storage.get_invoice_row(conn, id)
    storage.lock_customer(conn, row.customer)
    return storage.get_invoice_row(conn, id, lock=True)


def _issue(conn: Connection, row: InvoiceRow, *, now: datetime) -> None:
    subjects = customers.get_customer(conn, row.customer).subjects
    segments = _segments(conn, row, subjects)
    for segment in segments:
        storage.mark_billed(
            conn,
            subscription=segment.sub.id,
            invoice_id=row.id,
            subjects=subjects,
            start=segment.start,
            end=segment.end,
        )
    lines = _with_credits(
        conn, row, segments, _compute(conn, row, segments, subjects, Billed.BY_INVOICE)
    )
    total = round_money(lines_total(lines), row.currency)
    number = storage.next_number(conn, currency=row.currency, year=now.year)
    storage.freeze(conn, row.id, number=number, lines=lines, total=total, now=now)
    # The ledger's consumed entries are the credit lines just frozen, in the same transaction.
    credits.ledger_consumption(conn, scope=_scope(row), lines=lines, now=now)
    credits.expire_due(conn, customer=row.customer, now=now)
    emit_invoice_event(conn, get_invoice(conn, row.id), "invoice.issued", now=now)


def issue_invoice(conn: Connection, *, id: str, now: datetime, force: bool = False) -> Invoice:
    """Draft -> issued. A gathering invoice is issued only after its period ended, or forced.

    Forcing bills the usage so far; the rest of the period's usage becomes late usage on the
    next invoice.
    """
    row = _locked(conn, id)
    if not row.state.open:
        raise FailedPrecondition(
            f"invoice {id!r} is already {row.state.value} ({row.number}); an issued invoice"
            " never changes"
        )
    if row.state is InvoiceState.GATHERING and now < row.period_end and not force:
        raise FailedPrecondition(
            f"invoice {id!r} is gathering: its period ends {row.period_end.isoformat()};"
            " issue it after that, or force it"
        )
    _issue(conn, row, now=now)
    return get_invoice(conn, id)


def void_invoice(conn: Connection, *, id: str, now: datetime) -> Invoice:
    """Issued or payment_failed -> void. The usage it billed stays billed (written off)."""
    row = _locked(conn, id)
    if row.state is InvoiceState.PAID:
        raise FailedPrecondition(
            f"invoice {id!r} ({row.number}) is paid; a paid invoice cannot be voided"
        )
    if row.state is InvoiceState.VOID:
        raise FailedPrecondition(f"invoice {id!r} ({row.number}) is already void")
    if row.state.open:
        raise FailedPrecondition(
            f"invoice {id!r} is {row.state.value}: only issued invoices can be voided"
        )
    storage.set_state(conn, id, InvoiceState.VOID, now=now)
    emit_invoice_event(conn, get_invoice(conn, id), "invoice.void", now=now)
    return get_invoice(conn, id)


def set_payment_state(
    conn: Connection, *, id: str, state: InvoiceState, now: datetime
) -> tuple[Invoice, bool]:
    """Apply a payment outcome (paid, payment_failed, void); False if already in that state.

    Open invoices are not payable; a void or paid invoice is final except that Stripe may void
    an invoice whose payment failed.
    """
    if state not in (InvoiceState.PAID, InvoiceState.PAYMENT_FAILED, InvoiceState.VOID):
        raise InvalidArgument(f"{state.value} is not a payment state")
    row = _locked(conn, id)
    if row.state is state:
        return get_invoice(conn, id), False
    if row.state.open:
        raise FailedPrecondition(f"invoice {id!r} is {row.state.value}, not issued")
    if row.state in (InvoiceState.PAID, InvoiceState.VOID):
        raise FailedPrecondition(
            f"invoice {id!r} ({row.number}) is {row.state.value}; it cannot become {state.value}"
        )
    storage.set_state(conn, id, state, now=now)
    if row.kind == storage.TOP_UP_KIND and state is InvoiceState.PAID:
        # The credits a top-up buys exist once it is paid, not before (and only once).
        topups.grant_paid_top_up(conn, row, now=now)
    if row.kind == storage.TOP_UP_KIND and state is InvoiceState.PAYMENT_FAILED:
        # Nothing is granted; the customer's credit alerts hear about it.
        topups.top_up_failed(conn, row, now=now)
    emit_invoice_event(conn, get_invoice(conn, id), f"invoice.{state.value}", now=now)
    return get_invoice(conn, id), True


def check_change_time(conn: Connection, *, customer: str, at: datetime) -> None:
    """A plan change may not reach back into an issued period: its usage is billed already."""
    for row in storage.list_invoice_rows(conn, customer=customer, states=ISSUED_STATES):
        if row.period_end > at:
            raise FailedPrecondition(
                f"invoice {row.number} for {row.period_start.isoformat()}.."
                f"{row.period_end.isoformat()} is issued; change the plan after"
                f" {row.period_end.isoformat()}"
            )


# The periodic job -----------------------------------------------------------------------------


@dataclass
class AdvanceResult:
    """Invoice ids the job created, moved to draft, and issued; customers it could not do."""

    created: list[str] = field(default_factory=list)
    drafted: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    failed: list[CustomerFailure] = field(default_factory=list)

    def extend(self, other: AdvanceResult) -> None:
        self.created += other.created
        self.drafted += other.drafted
        self.issued += other.issued
        self.failed += other.failed


@dataclass(frozen=True)
class CustomerFailure:
    """A customer the invoicing job could not advance (its transaction rolled back), and why."""

    customer: str
    reason: str


def advance_customer(
    conn: Connection, *, customer: str, now: datetime, settings: InvoicingSettings
) -> AdvanceResult:
    """Create the customer's invoices up to ``now``, draft ended ones, issue if configured.

    Skips a customer another replica holds (``FOR UPDATE SKIP LOCKED``): that one does it.
    """
    result = AdvanceResult()
    if not storage.lock_customer(conn, customer, skip_locked=True):
        return result
    for sub in subscriptions.list_subscriptions(conn, customer):
        if sub.start_time > now:
            continue  # future-dated: its first period opens at its start
        plan = _plan(conn, sub)
        known = storage.list_invoice_rows(conn, customer=customer, currency=plan.currency)
        # Resume from the newest invoice of this currency: earlier periods were done before.
        at = max([sub.start_time, *(r.period_start for r in known)])
        existing = {(r.period_start, r.period_end) for r in known}
        while True:
            start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
            if start > now or (sub.end_time is not None and start >= sub.end_time):
                break
            if (start, end) not in existing:
                row = storage.insert_invoice_row(
                    conn,
                    customer=customer,
                    currency=plan.currency,
                    period_start=start,
                    period_end=end,
                    state=InvoiceState.GATHERING,
                    now=now,
                )
                existing.add((start, end))
                result.created.append(row.id)
            at = end
    _carry_leftover_late_usage(conn, customer=customer, now=now, result=result)
    for row in storage.list_invoice_rows(conn, customer=customer, states=(InvoiceState.GATHERING,)):
        ends = [segment.end for segment in _own_segments(conn, row)]
        # A subscription cancelled mid-period closes its invoice at its end, not the period's.
        service_end = max(ends) if ends else row.period_end
        if service_end + settings.grace <= now:
            storage.set_state(conn, row.id, InvoiceState.DRAFT, now=now)
            result.drafted.append(row.id)
    if settings.auto_issue:
        for row in storage.list_invoice_rows(conn, customer=customer, states=(InvoiceState.DRAFT,)):
            _issue(conn, storage.get_invoice_row(conn, row.id, lock=True), now=now)
            result.issued.append(row.id)
    credits.expire_due(conn, customer=customer, now=now)
    return result


def _carry_leftover_late_usage(
    conn: Connection, *, customer: str, now: datetime, result: AdvanceResult
) -> None:
    """Late usage of an ended subscription with no open invoice to carry it gets a draft.

    Its period is the first one after the subscription and every invoice of the currency, so
    all of the subscription's usage lies before it and lands on it as late usage lines.
    """
    subjects = customers.get_customer(conn, customer).subjects
    for sub in subscriptions.list_subscriptions(conn, customer):
        if sub.end_time is None or sub.end_time > now:
            continue
        plan = _plan(conn, sub)
        rows = storage.list_invoice_rows(conn, customer=customer, currency=plan.currency)
        if any(r.state.open for r in rows):
            continue  # the open invoice picks the late usage up
        first = storage.first_unbilled_time(
            conn, subscription=sub.id, subjects=subjects, start=sub.start_time, end=sub.end_time
        )
        if first is None:
            continue
        known = {(r.period_start, r.period_end) for r in rows}
        at = max([sub.end_time, *(end for _, end in known)])
        start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=at)
        while (start, end) in known:
            start, end = billing_period(anchor=sub.anchor, cadence=plan.billing_cadence, at=end)
        candidate = InvoiceRow(
            id="",
            customer=customer,
            currency=plan.currency,
            period_start=start,
            period_end=end,
            state=InvoiceState.DRAFT,
            number=None,
            total=None,
            issue_time=None,
            sync_state=None,
            sync_record=None,
            create_time=now,
            update_time=now,
        )
        segments = _late_segments(conn, candidate, subjects)
        if not _compute(conn, candidate, segments, subjects, Billed.UNBILLED):
            continue  # only usage no rate card prices (e.g. failed requests)
        row = storage.insert_invoice_row(
            conn,
            customer=customer,
            currency=plan.currency,
            period_start=start,
            period_end=end,
            state=InvoiceState.DRAFT,
            now=now,
        )
        result.created.append(row.id)
        result.drafted.append(row.id)


def advance(db: Database, *, now: datetime, settings: InvoicingSettings) -> AdvanceResult:
    """One run of the invoicing job over every customer, one transaction per customer.

    A customer that fails (a subscription the invoicer cannot handle, stored before that was
    validated) is rolled back, recorded in ``failed``, logged and alerted on (an
    ``invoice.job_failed`` event); the job goes on with the next customer, so one bad
    subscription never holds up everybody else's invoices.
    """
    with span("invoicing.advance") as current:
        result = _advance(db, now=now, settings=settings)
        current.set_attribute("meterline.invoicing.failed_customers", len(result.failed))
        return result


def _advance(db: Database, *, now: datetime, settings: InvoicingSettings) -> AdvanceResult:
    with db.begin() as conn:
        keys = list(conn.execute(select(s.customers.c.key).order_by(s.customers.c.key)).scalars())
    result = AdvanceResult()
    for key in keys:
        try:
            with (
                span("invoicing.customer", attributes={"meterline.customer": key}),
                db.begin() as conn,
            ):
                result.extend(advance_customer(conn, customer=key, now=now, settings=settings))
        except Exception as exc:
            reason = str(exc) if isinstance(exc, MeterlineError) else f"{type(exc).__name__}: {exc}"
            log.exception("invoicing job: customer %r failed, continuing: %s", key, reason)
            result.failed.append(CustomerFailure(key, reason))
            try:
                with db.begin() as conn:
                    emit_invoicing_failure(conn, customer=key, reason=reason, now=now)
            except Exception:
                log.exception("invoicing job: could not record the alert for customer %r", key)
    return result
