"""``invoicing.monthly.billed_by_month`` (the margin page's past months, summed by the database)
equals the per-invoice sum it replaced: every billed invoice read whole (``list_invoices``,
what ``ListInvoices`` returns) and added up in Python, month by month, for everything, one
customer, one model and one feature (SQLite and PostgreSQL).

The table holds what the SQL must tell apart: months before the window, a period starting mid-
month, two currencies, void invoices and a credit top-up (never counted), a draft (computed
live), an invoice without lines, lines without a feature (their rate card counts), amounts of
every scale, and values a float would round.

On the same table: ``lifecycle.page_invoices`` (``ListInvoices``' pages, read one at a time)
cuts exactly ``list_invoices`` (every invoice read) in pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from controlplane.console.margin import month_starts
from controlplane.declarative.apply import apply_document
from controlplane.invoicing import lifecycle, storage
from controlplane.invoicing.monthly import BILLED_STATES, billed_by_month
from controlplane.invoicing.types import Invoice, InvoiceLine, InvoiceState
from controlplane.rating.charge import LineType
from controlplane.storage.db import Database

NOW = datetime(2026, 12, 15, 9, tzinfo=UTC)
SEP = datetime(2026, 9, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)

CATALOG = """\
_format_version: "3.0"
billing:
  features:
    - {key: input, meter: llm_tokens, filters: {type: input}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "49"}}
        - {feature: input, price: {type: unit, amount: "0.000001"}}
  customers:
    - {key: acme, name: Acme, subjects: [acme-app]}
    - {key: globex, name: Globex, subjects: [globex-app]}
    - {key: initech, name: Initech, subjects: [initech-app]}
    - {key: nothing-billed, name: Nothing billed, subjects: [nothing-app]}
  subscriptions:
    - {customer: acme, plan: pro, start: 2026-08-01T00:00:00Z}
"""


def _line(
    rate_card: str, amount: str, *, feature: str | None = None, model: str = ""
) -> InvoiceLine:
    return InvoiceLine(
        subscription="sub",
        rate_card=rate_card,
        feature=feature,
        description=rate_card,
        quantity=Decimal(1),
        unit_price=Decimal(amount),
        amount=Decimal(amount),
        period_start=SEP,
        period_end=OCT,
        type=LineType.USAGE,
        model=model or None,
        token_type="input" if model else None,
    )


# (customer, currency, period start, period end, state, lines)
INVOICES: list[tuple[str, str, datetime, datetime, InvoiceState, list[InvoiceLine]]] = [
    # Before the window (October to December): never counted.
    ("acme", "USD", SEP, OCT, InvoiceState.PAID, [_line("platform", "49")]),
    (
        "acme",
        "USD",
        OCT,
        NOV,
        InvoiceState.PAID,
        [
            _line("platform", "49"),
            _line("input", "0.10", feature="input"),
            _line("models", "12.345", model="gpt-4o"),
            _line("models", "0.0000001", model="o3-mini"),
        ],
    ),
    (
        "globex",
        "USD",
        OCT,
        NOV,
        InvoiceState.ISSUED,
        [
            _line("platform", "49.00"),
            _line("models", "123456789012.34", model="gpt-4o"),
            # An empty feature: its rate card is what it bills.
            _line("support", "0.3", feature=""),
        ],
    ),
    # Starts mid-October: October's.
    (
        "initech",
        "EUR",
        OCT + timedelta(days=16, hours=5),
        NOV + timedelta(days=16, hours=5),
        InvoiceState.PAYMENT_FAILED,
        [_line("input", "0.1", feature="input"), _line("models", "7", model="gpt-4o")],
    ),
    ("initech", "USD", OCT, NOV, InvoiceState.VOID, [_line("platform", "1000")]),
    ("globex", "USD", NOV, DEC, InvoiceState.PAID, []),  # nothing billed: a zero total
    ("initech", "EUR", NOV, DEC, InvoiceState.ISSUED, [_line("input", "2.50", feature="input")]),
    ("initech", "USD", NOV, DEC, InvoiceState.PAID, [_line("models", "0.01", model="o3-mini")]),
    # A period after the window's last month starts: the last month's.
    ("globex", "USD", JAN, JAN + timedelta(days=31), InvoiceState.ISSUED, [_line("x", "5")]),
]


@pytest.fixture
def db(migrated_db_url: str) -> Iterator[Database]:
    database = Database.connect(migrated_db_url)
    apply_document(database, text=CATALOG, now=SEP - timedelta(days=60))
    with database.begin() as conn:
        for number, (customer, currency, start, end, state, lines) in enumerate(INVOICES):
            row = storage.insert_invoice_row(
                conn,
                customer=customer,
                currency=currency,
                period_start=start,
                period_end=end,
                state=InvoiceState.DRAFT,
                now=NOW,
            )
            total = sum((line.amount for line in lines), Decimal(0))
            storage.freeze(conn, row.id, number=f"ML-{number}", lines=lines, total=total, now=NOW)
            storage.set_state(conn, row.id, state, now=NOW)
        # A credit top-up (empty period), issued: not usage billed.
        top_up = storage.insert_invoice_row(
            conn,
            customer="acme",
            currency="USD",
            period_start=NOV + timedelta(days=3),
            period_end=NOV + timedelta(days=3),
            state=InvoiceState.DRAFT,
            now=NOW,
            kind=storage.TOP_UP_KIND,
        )
        storage.freeze(
            conn,
            top_up.id,
            number="ML-top-up",
            lines=[_line("credits", "500")],
            total=Decimal(500),
            now=NOW,
        )
        # November's period of acme's subscription, ended, not issued: computed live.
        storage.insert_invoice_row(
            conn,
            customer="acme",
            currency="USD",
            period_start=NOV,
            period_end=DEC,
            state=InvoiceState.DRAFT,
            now=NOW,
        )
    yield database
    database.dispose()


def _month_of(value: datetime, starts: list[datetime]) -> int | None:
    for index in range(len(starts) - 1, -1, -1):
        if value >= starts[index]:
            return index
    return None


def _amount_of(invoice: Invoice, *, model: str, feature: str) -> Decimal | None:
    if not model and not feature:
        return invoice.total
    amounts = [
        line.amount
        for line in invoice.lines
        if (model and line.model == model)
        or (feature and (line.feature or line.rate_card) == feature)
    ]
    return sum(amounts, Decimal(0)) if amounts else None


def per_invoice(
    db: Database, starts: list[datetime], *, customer: str, model: str, feature: str
) -> list[dict[str, Decimal]]:
    """What the margin page computed before: every billed invoice read, added up here."""
    billed: list[dict[str, Decimal]] = [{} for _ in starts]
    with db.begin() as conn:
        invoices = lifecycle.list_invoices(
            conn, customer=customer or None, states=list(BILLED_STATES)
        )
    for invoice in invoices:
        if invoice.period_start == invoice.period_end:
            continue
        index = _month_of(invoice.period_start, starts)
        if index is None:
            continue
        amount = _amount_of(invoice, model=model, feature=feature)
        if amount is not None:
            month = billed[index]
            month[invoice.currency] = month.get(invoice.currency, Decimal(0)) + amount
    return billed


def as_text(billed: list[dict[str, Decimal]]) -> list[dict[str, str]]:
    # What the page shows: the decimal strings, scale included.
    return [{c: str(v) for c, v in sorted(month.items())} for month in billed]


@pytest.mark.parametrize(
    ("customer", "model", "feature"),
    [
        pytest.param("", "", "", id="everything"),
        pytest.param("acme", "", "", id="customer-with-a-draft"),
        pytest.param("initech", "", "", id="customer-two-currencies"),
        pytest.param("nothing-billed", "", "", id="customer-without-invoices"),
        pytest.param("", "gpt-4o", "", id="model"),
        pytest.param("", "o3-mini", "", id="model-tiny-amounts"),
        pytest.param("", "claude", "", id="model-never-billed"),
        pytest.param("", "", "input", id="feature"),
        pytest.param("", "", "platform", id="feature-as-rate-card"),
        pytest.param("", "", "support", id="empty-feature-as-rate-card"),
    ],
)
def test_sql_sums_equal_the_per_invoice_sums(
    db: Database, customer: str, model: str, feature: str
) -> None:
    starts = month_starts(NOW, 3)
    with db.begin() as conn:
        found = billed_by_month(
            conn, starts=starts, customer=customer, model=model, feature=feature
        )
    assert as_text(found) == as_text(
        per_invoice(db, starts, customer=customer, model=model, feature=feature)
    )


def test_figures_by_hand(db: Database) -> None:
    # Given the table above, the window October to December.
    starts = month_starts(NOW, 3)
    with db.begin() as conn:
        # The draft is computed live: acme's November platform fee.
        draft = lifecycle.list_invoices(conn, customer="acme", states=[InvoiceState.DRAFT])
        everything = billed_by_month(conn, starts=starts)
        gpt = billed_by_month(conn, starts=starts, model="gpt-4o")
    assert [d.total for d in draft] == [Decimal("49.00")]
    # Then October: acme 61.4450001 + globex 123456789061.64 (USD); initech 7.1 (EUR).
    assert as_text(everything) == [
        {"EUR": "7.1", "USD": "123456789123.0850001"},
        # November: globex 0, initech 0.01 and acme's draft 49.00 (USD); initech 2.50 (EUR).
        {"EUR": "2.50", "USD": "49.01"},
        # January's period counts in the last month.
        {"USD": "5"},
    ]
    assert as_text(gpt) == [{"EUR": "7", "USD": "123456789024.685"}, {}, {}]


@pytest.mark.parametrize("size", [1, 4, 12, 100])
@pytest.mark.parametrize(
    ("customer", "states"),
    [
        pytest.param(None, None, id="all"),
        pytest.param("globex", None, id="customer"),
        pytest.param(None, [InvoiceState.PAID, InvoiceState.DRAFT], id="states"),
    ],
)
def test_pages_cut_the_whole_list(
    db: Database, size: int, customer: str | None, states: list[InvoiceState] | None
) -> None:
    with db.begin() as conn:
        whole = lifecycle.list_invoices(conn, customer=customer, states=states)
        pages = []
        offset = 0
        while True:
            found, more = lifecycle.page_invoices(
                conn, customer=customer, states=states, offset=offset, size=size
            )
            pages.append(found)
            offset += size
            if not more:
                break
    assert len(whole) > 1
    assert [p for page in pages for p in page] == whole
    assert all(len(page) == size for page in pages[:-1])
    assert 0 < len(pages[-1]) <= size
