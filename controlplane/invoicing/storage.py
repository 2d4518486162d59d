"""Storage of invoices, their frozen lines, the usage events they billed, and numbering.

Two ledgers of billed usage, one per event table: ``invoice_usage_events`` (llm_tokens events,
by event id) and ``invoice_meter_events`` (operator-meter events, by source and id). Each holds
one row per (subscription, event) an issued invoice priced; the primary keys make "an event is
billed at most once per subscription" a database constraint, whatever runs concurrently.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from controlplane.catalog.types import PaymentTerm, PriceType
from controlplane.errors import NotFound
from controlplane.invoicing.types import InvoiceLine, InvoiceState
from controlplane.rating.charge import LineType, TierCharge
from controlplane.storage import schema as s
from controlplane.usage import query as usage_query
from controlplane.usage import rollups
from controlplane.usage.aggregate import WindowSize, ceil_hour, floor_time
from controlplane.usage.meters import LLM_TOKENS
from controlplane.usage.storage import filter_clause, sum_tokens, tokens_by_model

inv = s.invoices
ev = s.usage_events
billed = s.invoice_usage_events
mev = s.meter_events
meter_billed = s.invoice_meter_events


@dataclass(frozen=True)
class InvoiceRow:
    """An invoice as stored; open invoices have no stored lines or total."""

    id: str
    customer: str
    currency: str
    period_start: datetime
    period_end: datetime
    state: InvoiceState
    number: str | None
    total: Decimal | None
    issue_time: datetime | None
    sync_state: str | None
    sync_record: str | None
    create_time: datetime
    update_time: datetime
    # None: a billing period's invoice; TOP_UP_KIND: a one-off invoice buying credits.
    kind: str | None = None


# Top-up invoices have a zero-length period and bill no usage; every period computation
# leaves them out (list_invoice_rows without top_ups, find_invoice_row).
TOP_UP_KIND = "credit_top_up"


def _row(r: Any) -> InvoiceRow:
    return InvoiceRow(
        id=r.id,
        customer=r.customer,
        currency=r.currency,
        period_start=r.period_start,
        period_end=r.period_end,
        state=InvoiceState(r.state),
        number=r.number,
        total=Decimal(r.total) if r.total is not None else None,
        issue_time=r.issue_time,
        sync_state=r.sync_state,
        sync_record=r.sync_record,
        create_time=r.create_time,
        update_time=r.update_time,
        kind=r.kind,
    )


def get_invoice_row(conn: Connection, id: str, *, lock: bool = False) -> InvoiceRow:
    query = select(inv).where(inv.c.id == id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"invoice {id!r} not found")
    return _row(row)


def list_invoice_rows(
    conn: Connection,
    *,
    customer: str | None = None,
    states: Iterable[InvoiceState] | None = None,
    currency: str | None = None,
    top_ups: bool = False,
    offset: int = 0,
    limit: int | None = None,
) -> list[InvoiceRow]:
    """Invoices in period order; credit top-up invoices only with ``top_ups``; ``limit`` of
    them from ``offset`` (all by default)."""
    query = select(inv).order_by(inv.c.period_start, inv.c.customer, inv.c.id)
    if not top_ups:
        query = query.where(inv.c.kind.is_(None))
    if customer is not None:
        query = query.where(inv.c.customer == customer)
    if states is not None:
        query = query.where(inv.c.state.in_([st.value for st in states]))
    if currency is not None:
        query = query.where(inv.c.currency == currency)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_row(r) for r in conn.execute(query)]


def find_invoice_row(
    conn: Connection, *, customer: str, currency: str, period_start: datetime, period_end: datetime
) -> InvoiceRow | None:
    row = conn.execute(
        select(inv).where(
            inv.c.customer == customer,
            inv.c.currency == currency,
            inv.c.period_start == period_start,
            inv.c.period_end == period_end,
            inv.c.kind.is_(None),
        )
    ).first()
    return _row(row) if row is not None else None


def find_top_up_at(conn: Connection, *, customer: str, currency: str, at: datetime) -> bool:
    """Whether a top-up invoice of that instant exists (the period key would collide)."""
    row = conn.execute(
        select(inv.c.id).where(
            inv.c.customer == customer,
            inv.c.currency == currency,
            inv.c.period_start == at,
            inv.c.period_end == at,
        )
    ).first()
    return row is not None


def insert_invoice_row(
    conn: Connection,
    *,
    customer: str,
    currency: str,
    period_start: datetime,
    period_end: datetime,
    state: InvoiceState,
    now: datetime,
    kind: str | None = None,
) -> InvoiceRow:
    id = str(uuid.uuid4())
    conn.execute(
        insert(inv).values(
            id=id,
            customer=customer,
            currency=currency,
            period_start=period_start,
            period_end=period_end,
            state=state.value,
            kind=kind,
            create_time=now,
            update_time=now,
        )
    )
    return get_invoice_row(conn, id)


def set_state(conn: Connection, id: str, state: InvoiceState, *, now: datetime) -> None:
    conn.execute(update(inv).where(inv.c.id == id).values(state=state.value, update_time=now))


def freeze(
    conn: Connection,
    id: str,
    *,
    number: str,
    lines: Sequence[InvoiceLine],
    total: Decimal,
    now: datetime,
) -> None:
    """Store the issued invoice's lines and total, and each line's ``invoice_line_totals`` row;
    nothing changes them afterwards."""
    rows = [
        {
            "id": line.id or str(uuid.uuid4()),
            "invoice_id": id,
            "position": position,
            "line": json.dumps(line_to_json(line), sort_keys=True),
        }
        for position, line in enumerate(lines)
    ]
    if rows:
        conn.execute(insert(s.invoice_lines), rows)
        invoice = conn.execute(
            select(inv.c.customer, inv.c.currency, inv.c.period_start).where(inv.c.id == id)
        ).one()
        conn.execute(
            insert(s.invoice_line_totals),
            [
                {
                    "line_id": row["id"],
                    "invoice_id": id,
                    "customer": invoice.customer,
                    "currency": invoice.currency,
                    "period_start": invoice.period_start,
                    "feature": line_feature(line),
                    "model": line.model,
                    "amount": str(line.amount),
                }
                for row, line in zip(rows, lines, strict=True)
            ],
        )
    conn.execute(
        update(inv)
        .where(inv.c.id == id)
        .values(
            state=InvoiceState.ISSUED.value,
            number=number,
            total=str(total),
            issue_time=now,
            update_time=now,
        )
    )


def line_feature(line: InvoiceLine) -> str:
    """What the margin page calls a line's feature: its feature, or its rate card without one."""
    return line.feature or line.rate_card


def stored_lines(conn: Connection, id: str) -> list[InvoiceLine]:
    t = s.invoice_lines
    rows = conn.execute(select(t).where(t.c.invoice_id == id).order_by(t.c.position))
    return [line_from_json(r.id, json.loads(r.line)) for r in rows]


def stored_lines_of(conn: Connection, ids: Sequence[str]) -> dict[str, list[InvoiceLine]]:
    """``stored_lines`` of several invoices in one statement (each id present, maybe empty)."""
    t = s.invoice_lines
    found: dict[str, list[InvoiceLine]] = {id: [] for id in ids}
    if ids:
        rows = conn.execute(
            select(t).where(t.c.invoice_id.in_(list(ids))).order_by(t.c.invoice_id, t.c.position)
        )
        for r in rows:
            found[r.invoice_id].append(line_from_json(r.id, json.loads(r.line)))
    return found


# Locks ----------------------------------------------------------------------------------------


def lock_customer(conn: Connection, key: str, *, skip_locked: bool = False) -> bool:
    """Lock a customer row for this transaction; False if absent or (skip_locked) held elsewhere.

    Every change to a customer's invoices happens under this lock, so two replicas never
    create, issue or bill usage for the same customer at once. SQLite ignores it: it has one
    writer anyway.
    """
    query = (
        select(s.customers.c.key)
        .where(s.customers.c.key == key)
        .with_for_update(skip_locked=skip_locked)
    )
    return conn.execute(query).first() is not None


def next_number(conn: Connection, *, currency: str, year: int) -> str:
    """The next invoice number of a currency and year: ML-USD-2026-000001, gap-free."""
    t = s.invoice_numbers
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(t).values(currency=currency, year=year, last=0).on_conflict_do_nothing()
    )
    last = conn.execute(
        select(t.c.last).where(t.c.currency == currency, t.c.year == year).with_for_update()
    ).scalar_one()
    conn.execute(update(t).where(t.c.currency == currency, t.c.year == year).values(last=last + 1))
    return f"ML-{currency}-{year}-{last + 1:06d}"


# Billed usage ---------------------------------------------------------------------------------


class Billed(StrEnum):
    """Which events of a window a sum counts, relative to one invoice."""

    # Not billed by any invoice yet (what an open invoice would bill now).
    UNBILLED = "unbilled"
    # Billed by this invoice.
    BY_INVOICE = "by_invoice"
    # Billed by any other invoice (what earlier invoices already charged).
    BY_OTHERS = "by_others"


def _window(
    *, subjects: Sequence[str], start: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    return [ev.c.subject.in_(list(subjects)), ev.c.time >= start, ev.c.time < end]


def _billed_clause(*, subscription: str, invoice_id: str, which: Billed) -> ColumnElement[bool]:
    match = and_(billed.c.subscription_id == subscription, billed.c.event_id == ev.c.id)
    if which is Billed.UNBILLED:
        return ~exists().where(match)
    if which is Billed.BY_INVOICE:
        return exists().where(match, billed.c.invoice_id == invoice_id)
    return exists().where(match, billed.c.invoice_id != invoice_id)


def meter_billed_clause(
    *, subscription: str, invoice_id: str, which: Billed
) -> ColumnElement[bool]:
    """``_billed_clause`` for operator-meter events (``meter_events``, keyed by source and id)."""
    match = and_(
        meter_billed.c.subscription_id == subscription,
        meter_billed.c.source == mev.c.source,
        meter_billed.c.event_id == mev.c.id,
    )
    if which is Billed.UNBILLED:
        return ~exists().where(match)
    if which is Billed.BY_INVOICE:
        return exists().where(match, meter_billed.c.invoice_id == invoice_id)
    return exists().where(match, meter_billed.c.invoice_id != invoice_id)


def nothing_billed_since(
    conn: Connection, *, subscription: str, start: datetime, ledger: Table = billed
) -> bool:
    """True when no event at or after ``start`` can be billed for the subscription yet.

    An invoice bills events of its own and earlier periods only, so an event at time t can
    only be billed by an invoice whose period ends after t: if no such invoice billed anything
    for the subscription, no event from ``start`` on is billed. One index probe in ``ledger``
    (``invoice_usage_events``, or ``invoice_meter_events`` for operator meters).
    """
    # Invoices first (few): with none, there is nothing to probe.
    later = list(conn.execute(select(inv.c.id).where(inv.c.period_end > start)).scalars())
    if not later:
        return True
    found = conn.execute(
        select(ledger.c.event_id)
        .where(ledger.c.invoice_id.in_(later), ledger.c.subscription_id == subscription)
        .limit(1)
    ).first()
    return found is None


def sum_billed(
    conn: Connection,
    *,
    subscription: str,
    invoice_id: str,
    which: Billed,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
) -> int:
    """Exact SUM of tokens in [start, end) matching the filters, among ``which`` events."""
    if not subjects or end <= start:
        return 0
    if which is Billed.UNBILLED and nothing_billed_since(
        conn, subscription=subscription, start=start
    ):
        # Every event of the window is unbilled: the hourly rollups answer (an open period).
        return sum_tokens(conn, subjects=subjects, start=start, end=end, filters=filters)
    query = select(func.coalesce(func.sum(ev.c.tokens), 0)).where(
        *_window(subjects=subjects, start=start, end=end),
        _billed_clause(subscription=subscription, invoice_id=invoice_id, which=which),
    )
    if "status_code" not in filters:
        # Failed upstream requests are recorded but not billed.
        query = query.where(ev.c.status_code >= 200, ev.c.status_code < 300)
    for dimension, value in filters.items():
        query = query.where(filter_clause(dimension, value))
    return int(conn.execute(query).scalar_one())


def meter_quantity(
    conn: Connection,
    *,
    meter: str,
    subscription: str,
    invoice_id: str,
    which: Sequence[Billed],
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
) -> Decimal:
    """An operator meter's aggregate over the events of [start, end) that are any of ``which``.

    The aggregation runs over the union of those events (MAX of both, distinct values of both,
    the latest of both), so it is not a sum of per-set quantities except for SUM and COUNT.
    """
    if not subjects or end <= start or not which:
        return Decimal(0)
    if tuple(which) == (Billed.UNBILLED,) and nothing_billed_since(
        conn, subscription=subscription, start=start, ledger=meter_billed
    ):
        # Every event of the window is unbilled: rollups answer for whole hours.
        return usage_query.quantity(
            conn, meter=meter, subjects=subjects, filters=filters, start=start, end=end
        )
    clauses = [
        meter_billed_clause(subscription=subscription, invoice_id=invoice_id, which=w)
        for w in which
    ]
    return usage_query.quantity(
        conn,
        meter=meter,
        subjects=subjects,
        filters=filters,
        start=start,
        end=end,
        where=or_(*clauses),
        whole_hours=_whole_hours(
            conn,
            subscription=subscription,
            invoice_id=invoice_id,
            which=frozenset(which),
            subjects=subjects,
            start=start,
            end=end,
        ),
    )


def _whole_hours(
    conn: Connection,
    *,
    subscription: str,
    invoice_id: str,
    which: frozenset[Billed],
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
) -> set[datetime]:
    """Whole UTC hours of [start, end) in which every stored operator-meter event is one of
    ``which``, told from hourly counts: stored events (rollups), billed ones and those billed
    by the invoice (``billed_meter_hours``). Their quantity can come from rollups.

    A billed count may fall short of the ledger (``mark_billed`` counts before it inserts), so
    an hour is taken whole only where such a shortfall cannot hide an event outside ``which``:
    with unbilled events excluded (a shortfall shows as unbilled events), or with only the
    invoice's own events excluded and the invoice open (it has billed nothing: issuing bills and
    computes in one transaction).
    """
    first_hour, last_hour = ceil_hour(start), floor_time(end, WindowSize.HOUR)
    if first_hour >= last_hour:
        return set()
    if Billed.UNBILLED in which and Billed.BY_OTHERS not in which:
        return set()
    events = rollups.event_counts_by_hour(
        conn, meter=rollups.EVENTS, subjects=subjects, start=first_hour, end=last_hour
    )
    table = s.billed_meter_hours
    total = rollups.billed_counts(
        conn, subscription=subscription, start=first_hour, end=last_hour, table=table
    )
    own = rollups.billed_counts(
        conn,
        subscription=subscription,
        start=first_hour,
        end=last_hour,
        table=table,
        invoice_id=invoice_id,
    )
    whole = set()
    hour = first_hour
    while hour < last_hour:
        stored, billed, by_invoice = events.get(hour, 0), total.get(hour, 0), own.get(hour, 0)
        missing = {
            Billed.UNBILLED: stored - billed,
            Billed.BY_INVOICE: by_invoice,
            Billed.BY_OTHERS: billed - by_invoice,
        }
        if billed <= stored and not any(n for w, n in missing.items() if w not in which):
            whole.add(hour)
        hour += timedelta(hours=1)
    return whole


def sum_billed_by_model(
    conn: Connection,
    *,
    subscription: str,
    invoice_id: str,
    which: Billed,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
) -> dict[tuple[str, str], int]:
    """Like ``sum_billed``, per (model, token type): what model_list prices rate."""
    if not subjects or end <= start:
        return {}
    if which is Billed.UNBILLED and nothing_billed_since(
        conn, subscription=subscription, start=start
    ):
        return tokens_by_model(conn, subjects=subjects, start=start, end=end, filters=filters)
    query = (
        select(ev.c.model, ev.c.token_type, func.sum(ev.c.tokens))
        .where(
            *_window(subjects=subjects, start=start, end=end),
            _billed_clause(subscription=subscription, invoice_id=invoice_id, which=which),
        )
        .group_by(ev.c.model, ev.c.token_type)
    )
    if "status_code" not in filters:
        query = query.where(ev.c.status_code >= 200, ev.c.status_code < 300)
    for dimension, value in filters.items():
        query = query.where(filter_clause(dimension, value))
    return {(model, kind): int(total) for model, kind, total in conn.execute(query) if total}


@dataclass(frozen=True)
class _Ledger:
    """One event table with its billing ledger, and how they are read and written alike."""

    events: Table
    # The events' key columns, in the order of the ledger's event columns.
    event_key: tuple[str, ...]
    ledger: Table
    ledger_key: tuple[str, ...]
    # The rollup meter whose hourly ``count`` is every stored event of a subject.
    counted: str
    billed_hours: Table
    # Whether ``billed_hours`` counts per invoice too.
    per_invoice: bool = False

    def window(
        self, *, subjects: Sequence[str], start: datetime, end: datetime
    ) -> list[ColumnElement[bool]]:
        e = self.events
        return [e.c.subject.in_(list(subjects)), e.c.time >= start, e.c.time < end]

    def billed(self, *, subscription: str, invoice_id: str, which: Billed) -> ColumnElement[bool]:
        if self.events is ev:
            return _billed_clause(subscription=subscription, invoice_id=invoice_id, which=which)
        return meter_billed_clause(subscription=subscription, invoice_id=invoice_id, which=which)


_LEDGERS = (
    _Ledger(
        events=ev,
        event_key=("id",),
        ledger=billed,
        ledger_key=("event_id",),
        counted=LLM_TOKENS,
        billed_hours=s.billed_usage_hours,
    ),
    _Ledger(
        events=mev,
        event_key=("source", "id"),
        ledger=meter_billed,
        ledger_key=("source", "event_id"),
        counted=rollups.EVENTS,
        billed_hours=s.billed_meter_hours,
        per_invoice=True,
    ),
)


def first_unbilled_time(
    conn: Connection, *, subscription: str, subjects: Sequence[str], start: datetime, end: datetime
) -> datetime | None:
    """The time of the earliest event in [start, end) no invoice billed for the subscription:
    a token event or an operator-meter event, whichever is earlier.

    Raw events are read only where they can be unbilled: the partial hours at the edges, and
    whole hours whose rollup event count exceeds the ledger's billed count (``mark_billed``).
    """
    if not subjects or end <= start:
        return None
    times = [
        found
        for ledger in _LEDGERS
        if (found := _first_unbilled(conn, ledger, subscription, subjects, start, end)) is not None
    ]
    return min(times, default=None)


def _first_unbilled(
    conn: Connection,
    ledger: _Ledger,
    subscription: str,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
) -> datetime | None:
    first_hour, last_hour = ceil_hour(start), floor_time(end, WindowSize.HOUR)
    if first_hour >= last_hour:
        return _first_unbilled_raw(conn, ledger, subscription, subjects, start, end)
    ranges = [(start, first_hour), (last_hour, end)]
    events = rollups.event_counts_by_hour(
        conn, meter=ledger.counted, subjects=subjects, start=first_hour, end=last_hour
    )
    billed_hours = rollups.billed_counts(
        conn,
        subscription=subscription,
        start=first_hour,
        end=last_hour,
        table=ledger.billed_hours,
    )
    ranges += [
        (hour, hour + timedelta(hours=1))
        for hour, count in events.items()
        if count > billed_hours.get(hour, 0)
    ]
    for range_start, range_end in sorted(ranges):
        if range_start < range_end:
            found = _first_unbilled_raw(
                conn, ledger, subscription, subjects, range_start, range_end
            )
            if found is not None:
                return found
    return None


def _first_unbilled_raw(
    conn: Connection,
    ledger: _Ledger,
    subscription: str,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
) -> datetime | None:
    query = select(func.min(ledger.events.c.time)).where(
        *ledger.window(subjects=subjects, start=start, end=end),
        ledger.billed(subscription=subscription, invoice_id="", which=Billed.UNBILLED),
    )
    value = conn.execute(query).scalar_one()
    if value is None:
        return None
    # func.min bypasses the column's type decorator.
    result = s.UTCDateTime().process_result_value(value, conn.dialect)
    assert result is not None
    return result


def mark_billed(
    conn: Connection,
    *,
    subscription: str,
    invoice_id: str,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
) -> int:
    """Record every unbilled event of the window (token and operator-meter events alike) as
    billed by the invoice; returns the count.

    One INSERT ... SELECT per ledger: events committed after its snapshot stay unbilled and are
    picked up by a later invoice as late usage.
    """
    if not subjects or end <= start:
        return 0
    marked = 0
    for ledger in _LEDGERS:
        e = ledger.events
        unbilled = (
            *ledger.window(subjects=subjects, start=start, end=end),
            ledger.billed(subscription=subscription, invoice_id=invoice_id, which=Billed.UNBILLED),
        )
        # Counted before the insert: an event committed in between is billed but not counted,
        # so a count never exceeds the ledger and an hour is never wrongly taken as fully
        # billed.
        hour = rollups.hour_of(e.c.time, conn.dialect.name)
        counts = {
            rollups.as_hour(at): int(n)
            for at, n in conn.execute(
                select(hour, func.count()).where(*unbilled).group_by(text("1"))
            )
        }
        source = select(
            literal(subscription), *(e.c[k] for k in ledger.event_key), literal(invoice_id)
        ).where(*unbilled)
        result = conn.execute(
            insert(ledger.ledger).from_select(
                ["subscription_id", *ledger.ledger_key, "invoice_id"], source
            )
        )
        rollups.add_billed_hours(
            conn,
            subscription,
            counts,
            table=ledger.billed_hours,
            invoice_id=invoice_id if ledger.per_invoice else None,
        )
        marked += int(result.rowcount or 0)
    return marked


# Line (de)serialization -----------------------------------------------------------------------


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def line_to_json(line: InvoiceLine) -> dict[str, Any]:
    return {
        "subscription": line.subscription,
        "rate_card": line.rate_card,
        "feature": line.feature,
        "description": line.description,
        "quantity": str(line.quantity),
        "unit_price": _dec(line.unit_price),
        "amount": str(line.amount),
        "period_start": line.period_start.isoformat(),
        "period_end": line.period_end.isoformat(),
        "type": line.type.value,
        "price_type": line.price_type.value if line.price_type else None,
        "payment_term": line.payment_term.value if line.payment_term else None,
        "free_quantity": str(line.free_quantity),
        "packages": _dec(line.packages),
        "late_usage": line.late_usage,
        "model": line.model,
        "token_type": line.token_type,
        "credit_grant": line.credit_grant,
        "tiers": [
            {
                "tier": t.tier,
                "up_to": _dec(t.up_to),
                "quantity": str(t.quantity),
                "unit_price": str(t.unit_price),
                "flat_price": str(t.flat_price),
                "amount": str(t.amount),
            }
            for t in line.tiers
        ],
    }


def line_from_json(id: str, data: Mapping[str, Any]) -> InvoiceLine:
    return InvoiceLine(
        id=id,
        subscription=data["subscription"],
        rate_card=data["rate_card"],
        feature=data["feature"],
        description=data["description"],
        quantity=Decimal(data["quantity"]),
        unit_price=_undec(data["unit_price"]),
        amount=Decimal(data["amount"]),
        period_start=datetime.fromisoformat(data["period_start"]),
        period_end=datetime.fromisoformat(data["period_end"]),
        type=LineType(data["type"]),
        price_type=PriceType(data["price_type"]) if data["price_type"] else None,
        payment_term=PaymentTerm(data["payment_term"]) if data["payment_term"] else None,
        free_quantity=Decimal(data["free_quantity"]),
        packages=_undec(data["packages"]),
        late_usage=bool(data["late_usage"]),
        model=data.get("model"),
        token_type=data.get("token_type"),
        credit_grant=data.get("credit_grant"),
        tiers=tuple(
            TierCharge(
                tier=t["tier"],
                up_to=_undec(t["up_to"]),
                quantity=Decimal(t["quantity"]),
                unit_price=Decimal(t["unit_price"]),
                flat_price=Decimal(t["flat_price"]),
                amount=Decimal(t["amount"]),
            )
            for t in data["tiers"]
        ),
    )


# Stripe sync summary ------------------------------------------------------------------------


def sync_summary(row: InvoiceRow) -> tuple[str | None, str | None]:
    """``(error, stripe_invoice_id)`` of the invoice's Stripe sync record, if any.

    The record is written by ``controlplane.stripe_sync.storage``; invoicing reads only these
    two fields to show them, so it does not depend on the Stripe package.
    """
    if row.sync_record is None:
        return None, None
    data = json.loads(row.sync_record)
    return data.get("error"), data.get("stripe_invoice_id")
