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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from sqlalchemy import Connection, select

from controlplane.catalog import storage as catalog
from controlplane.catalog.types import (
    LLM_TOKENS,
    Commitments,
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
from controlplane.invoicing.describe import describe_line
from controlplane.invoicing.storage import Billed, InvoiceRow
from controlplane.invoicing.types import Invoice, InvoiceLine, InvoiceState
from controlplane.notifications.invoices import emit_invoice_event, emit_invoicing_failure
from controlplane.rating import LineType, RatedLine, rate_card_lines, round_money
from controlplane.rating.modellist import ModelUsage, model_list_lines
from controlplane.rating.proration import prorate, prorate_minimum
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


@dataclass(frozen=True)
class _Segment:
    """The part of an invoice's usage one subscription contributes: [start, end)."""

    sub: Subscription
    plan: Plan
    start: datetime
    end: datetime
    late: bool = False
    # The full billing period the usage belongs to (differs from start/end when clipped).
    period_start: datetime | None = None
    period_end: datetime | None = None


def _plan(conn: Connection, sub: Subscription) -> Plan:
    return catalog.get_plan(conn, sub.plan_key, sub.plan_version)


def _own_segments(conn: Connection, row: InvoiceRow) -> list[_Segment]:
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
                _Segment(
                    sub=sub,
                    plan=plan,
                    start=start,
                    end=end,
                    period_start=row.period_start,
                    period_end=row.period_end,
                )
            )
    return segments


def _late_segments(conn: Connection, row: InvoiceRow, subjects: Sequence[str]) -> list[_Segment]:
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
                    _Segment(
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


def _when(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.isoformat(timespec="minutes").replace("+00:00", "Z")


def _plain(value: Decimal) -> Decimal:
    """A difference without the trailing zeros subtraction leaves (14.75 - 13.75 is 1, not
    1.00), never in exponent notation."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def _lines_total(lines: Sequence[InvoiceLine | RatedLine]) -> Decimal:
    # Lines are rounded already, so the sum is exact in the minor unit.
    return sum((line.amount for line in lines), Decimal(0))


def _served(segment: _Segment) -> tuple[datetime, datetime]:
    """The part of the segment's whole billing period its subscription covers."""
    assert segment.period_start is not None and segment.period_end is not None
    sub = segment.sub
    end = segment.period_end if sub.end_time is None else min(segment.period_end, sub.end_time)
    return max(segment.period_start, sub.start_time), end


def _model_usage(
    conn: Connection,
    *,
    row: InvoiceRow,
    segment: _Segment,
    subjects: Sequence[str],
    which: Billed,
    feature: Feature,
    price_list: PriceList,
) -> list[ModelUsage]:
    """The segment's tokens per model and type, in windows cut at every price change."""
    start, end = segment.start, segment.end
    cuts = sorted(
        {
            start,
            end,
            *(p.effective_from for p in price_list.prices if start < p.effective_from < end),
        }
    )
    usage = []
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
    return usage


def _segment_lines(
    conn: Connection,
    *,
    row: InvoiceRow,
    segment: _Segment,
    subjects: Sequence[str],
    which: Billed,
    features: dict[str, Feature],
) -> Iterator[InvoiceLine]:
    plan = segment.plan
    for card in plan.rate_cards:
        price = card.price
        if price is None:
            continue
        feature = features.get(card.feature) if card.feature else None
        if card.feature and feature is None:
            feature = features[card.feature] = catalog.get_feature(conn, card.feature)
        # A part period (start, plan change, cancellation) owes a part of the minimum.
        served_start, served_end = _served(segment)
        assert segment.period_start is not None and segment.period_end is not None
        commitments = prorate_minimum(
            card.commitments,
            part=served_end - served_start,
            whole=segment.period_end - segment.period_start,
            currency=plan.currency,
        )

        def quantity(
            *which: Billed, card: RateCard = card, feature: Feature | None = feature
        ) -> Decimal:
            """The feature's quantity over the segment's events that are any of ``which``."""
            if not (card.price is not None and card.price.usage_based and feature is not None):
                return Decimal(0)
            if feature.meter != LLM_TOKENS.key:
                # Operator meters aggregate over the union (MAX, UNIQUE_COUNT and LATEST are
                # not sums of per-set quantities).
                return storage.meter_quantity(
                    conn,
                    meter=feature.meter,
                    subscription=segment.sub.id,
                    invoice_id=row.id,
                    which=which,
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

        def rated(
            q: Decimal, card: RateCard = card, commitments: Commitments | None = commitments
        ) -> tuple[RatedLine, ...]:
            assert card.price is not None
            return rate_card_lines(
                price=card.price,
                quantity=q,
                currency=plan.currency,
                discounts=card.discounts,
                commitments=commitments,
            )

        if price.type is PriceType.MODEL_LIST:
            if feature is None or price.price_list is None:
                continue
            yield from _model_list_lines(
                conn,
                row=row,
                segment=segment,
                subjects=subjects,
                which=which,
                card=card,
                feature=feature,
                commitments=commitments,
            )
            continue
        if segment.late:
            if not price.usage_based or feature is None:
                continue  # flat fees were charged with the period
            # The period's quantity with the late events, less what earlier invoices billed:
            # for SUM/COUNT (and tokens) the late events' own sum; for MAX, UNIQUE_COUNT and
            # LATEST the change they make to the period's re-aggregated quantity.
            before = quantity(Billed.BY_OTHERS)
            late = _plain(quantity(Billed.BY_OTHERS, which) - before)
            if not late:
                continue
            amount = _lines_total(rated(before + late)) - _lines_total(rated(before))
            assert segment.period_start is not None and segment.period_end is not None
            name = feature.name or feature.key
            yield InvoiceLine(
                subscription=segment.sub.id,
                rate_card=card.key,
                feature=card.feature,
                description=(
                    f"{name}: late usage for {_when(segment.period_start)}.."
                    f"{_when(segment.period_end)}: {late} (billed before: {before})"
                ),
                quantity=late,
                unit_price=None,
                amount=amount,
                period_start=segment.start,
                period_end=segment.end,
                type=LineType.USAGE,
                price_type=price.type,
                late_usage=True,
            )
            continue
        assert segment.period_start is not None and segment.period_end is not None
        partial = (segment.start, segment.end) != (segment.period_start, segment.period_end)
        if price.type is PriceType.FLAT and partial:
            # Part of a period (plan change, cancellation): the fee for the time served.
            price = replace(
                price,
                amount=prorate(
                    amount=price.amount,
                    part=segment.end - segment.start,
                    whole=segment.period_end - segment.period_start,
                    currency=plan.currency,
                ),
            )
        for line in rate_card_lines(
            price=price,
            quantity=quantity(which),
            currency=plan.currency,
            discounts=card.discounts,
            commitments=commitments,
        ):
            is_price_line = line.type in (LineType.FLAT, LineType.USAGE)
            yield InvoiceLine(
                subscription=segment.sub.id,
                rate_card=card.key,
                feature=card.feature,
                description=describe_line(replace(card, commitments=commitments), feature, line)
                + (
                    f", prorated for {_when(segment.start)}..{_when(segment.end)}"
                    if line.type in (LineType.FLAT, LineType.MINIMUM_COMMITMENT) and partial
                    else ""
                ),
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                period_start=segment.start,
                period_end=segment.end,
                type=line.type,
                price_type=price.type if is_price_line else None,
                payment_term=price.payment_term if line.type is LineType.FLAT else None,
                free_quantity=line.free_quantity,
                packages=line.packages,
                tiers=line.tiers,
            )


def _model_list_lines(
    conn: Connection,
    *,
    row: InvoiceRow,
    segment: _Segment,
    subjects: Sequence[str],
    which: Billed,
    card: RateCard,
    feature: Feature,
    commitments: Commitments | None,
) -> Iterator[InvoiceLine]:
    """A model_list rate card: a line per model, token type and price period (or one late line)."""
    price = card.price
    assert price is not None and price.price_list is not None
    plan = segment.plan
    price_list = catalog.get_price_list(conn, price.price_list)

    def usage(which: Billed) -> list[ModelUsage]:
        return _model_usage(
            conn,
            row=row,
            segment=segment,
            subjects=subjects,
            which=which,
            feature=feature,
            price_list=price_list,
        )

    def rated(items: Sequence[ModelUsage]) -> tuple[RatedLine, ...]:
        return model_list_lines(
            usage=items,
            price_list=price_list,
            markup_percent=price.markup_percent,
            currency=plan.currency,
            discounts=card.discounts,
            commitments=commitments,
        )

    name = feature.name or feature.key
    if segment.late:
        late = usage(which)
        quantity = sum((u.quantity for u in late), Decimal(0))
        if not quantity:
            return
        before = usage(Billed.BY_OTHERS)
        amount = _lines_total(rated(before + late)) - _lines_total(rated(before))
        assert segment.period_start is not None and segment.period_end is not None
        yield InvoiceLine(
            subscription=segment.sub.id,
            rate_card=card.key,
            feature=card.feature,
            description=(
                f"{name}: late usage for {_when(segment.period_start)}.."
                f"{_when(segment.period_end)}: {quantity} tokens at {price_list.key} prices"
            ),
            quantity=quantity,
            unit_price=None,
            amount=amount,
            period_start=segment.start,
            period_end=segment.end,
            type=LineType.USAGE,
            price_type=price.type,
            late_usage=True,
        )
        return
    card = replace(card, commitments=commitments)
    for line in rated(usage(which)):
        is_price_line = line.type is LineType.USAGE
        yield InvoiceLine(
            subscription=segment.sub.id,
            rate_card=card.key,
            feature=card.feature,
            description=describe_line(card, feature, line),
            quantity=line.quantity,
            unit_price=line.unit_price,
            amount=line.amount,
            period_start=segment.start,
            period_end=segment.end,
            type=line.type,
            price_type=price.type if is_price_line else None,
            model=line.model,
            token_type=line.token_type,
        )


def _segments(conn: Connection, row: InvoiceRow, subjects: Sequence[str]) -> list[_Segment]:
    return [*_own_segments(conn, row), *_late_segments(conn, row, subjects)]


def _compute(
    conn: Connection,
    row: InvoiceRow,
    segments: Sequence[_Segment],
    subjects: Sequence[str],
    which: Billed,
) -> list[InvoiceLine]:
    features: dict[str, Feature] = {}
    return [
        line
        for segment in segments
        for line in _segment_lines(
            conn, row=row, segment=segment, subjects=subjects, which=which, features=features
        )
    ]


def _scope(row: InvoiceRow) -> credits.InvoiceScope:
    return credits.InvoiceScope(
        id=row.id,
        customer=row.customer,
        currency=row.currency,
        period_start=row.period_start,
        period_end=row.period_end,
    )


def _with_credits(
    conn: Connection, row: InvoiceRow, segments: Sequence[_Segment], lines: list[InvoiceLine]
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
    return _invoice(row, lines, round_money(_lines_total(lines), row.currency))


def get_invoice(conn: Connection, id: str) -> Invoice:
    return load_invoice(conn, storage.get_invoice_row(conn, id))


def list_invoices(
    conn: Connection, *, customer: str | None = None, states: Sequence[InvoiceState] | None = None
) -> list[Invoice]:
    if customer is not None:
        customers.get_customer(conn, customer)
    rows = storage.list_invoice_rows(conn, customer=customer, states=states, top_ups=True)
    return [load_invoice(conn, row) for row in rows]


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
    total = round_money(_lines_total(lines), row.currency)
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
