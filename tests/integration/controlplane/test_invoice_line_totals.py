"""``invoice_line_totals`` (revision 0018): the row issuing writes beside each frozen line is
the row the migration backfills from lines frozen before it (SQLite and PostgreSQL), and
voiding an issued invoice takes its lines out of the margin's model and feature sums."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, delete, select

from controlplane.console.margin import month_starts
from controlplane.declarative.apply import apply_document
from controlplane.invoicing import lifecycle, storage
from controlplane.invoicing.monthly import billed_by_month
from controlplane.invoicing.types import InvoiceLine, InvoiceState
from controlplane.rating.charge import LineType
from controlplane.storage import schema as s
from controlplane.storage.db import Database, alembic_config, make_engine

NOW = datetime(2026, 12, 15, 9, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
MIGRATION = (
    Path(__file__).parents[3]
    / "controlplane/storage/migrations/versions/0018_invoice_line_totals.py"
)

CATALOG = """\
_format_version: "3.0"
billing:
  customers:
    - {key: acme, name: Acme, subjects: [acme-app]}
    - {key: initech, name: Initech, subjects: [initech-app]}
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
        period_start=OCT,
        period_end=NOV,
        type=LineType.USAGE,
        model=model or None,
        token_type="input" if model else None,
    )


def _issue(
    conn: Connection,
    *,
    customer: str,
    currency: str,
    start: datetime,
    end: datetime,
    lines: list[InvoiceLine],
    number: str,
    kind: str | None = None,
) -> str:
    row = storage.insert_invoice_row(
        conn,
        customer=customer,
        currency=currency,
        period_start=start,
        period_end=end,
        state=InvoiceState.DRAFT,
        now=NOW,
        kind=kind,
    )
    total = sum((line.amount for line in lines), Decimal(0))
    storage.freeze(conn, row.id, number=number, lines=lines, total=total, now=NOW)
    return row.id


def _issue_some(conn: Connection) -> None:
    """Invoices of every kind the backfill meets: paid, void, payment failed, without lines,
    a credit top-up, lines with and without feature, model, and an empty feature."""
    paid = _issue(
        conn,
        customer="acme",
        currency="USD",
        start=OCT,
        end=NOV,
        number="ML-1",
        lines=[
            _line("platform", "49"),
            # A feature other than its rate card's key: the feature counts.
            _line("input-tokens", "0.10", feature="input"),
            _line("models", "12.345", model="gpt-4o"),
            _line("models", "0.0000001", model="o3-mini"),
            _line("support", "0.3", feature=""),
        ],
    )
    storage.set_state(conn, paid, InvoiceState.PAID, now=NOW)
    void = _issue(
        conn,
        customer="initech",
        currency="EUR",
        start=OCT + timedelta(days=16, hours=5),
        end=NOV + timedelta(days=16, hours=5),
        number="ML-2",
        lines=[_line("models", "123456789012.34", model="gpt-4o")],
    )
    storage.set_state(conn, void, InvoiceState.VOID, now=NOW)
    _issue(conn, customer="acme", currency="USD", start=NOV, end=DEC, number="ML-3", lines=[])
    _issue(
        conn,
        customer="initech",
        currency="USD",
        start=NOV,
        end=DEC,
        number="ML-4",
        lines=[_line("input", "2.50", feature="input"), _line("x", "5")],
    )
    _issue(
        conn,
        customer="acme",
        currency="USD",
        start=NOV + timedelta(days=3),
        end=NOV + timedelta(days=3),
        number="ML-top-up",
        lines=[_line("credits", "500")],
        kind=storage.TOP_UP_KIND,
    )


def _totals(conn: Connection) -> list[tuple[Any, ...]]:
    t = s.invoice_line_totals
    return [tuple(r) for r in conn.execute(select(t).order_by(t.c.line_id))]


def _backfill_module() -> Any:
    spec = importlib.util.spec_from_file_location("migration_0018", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_backfill_writes_what_issuing_writes(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        database = Database.connect(db_url)
        try:
            apply_document(database, text=CATALOG, now=OCT - timedelta(days=60))
        finally:
            database.dispose()
        # Given invoices issued at head: what issuing writes
        with engine.begin() as conn:
            _issue_some(conn)
            issued = _totals(conn)
            line_count = len(conn.execute(select(s.invoice_lines.c.id)).all())
        assert len(issued) == line_count == 9
        # When the table is dropped and made again from the lines frozen before it
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0017_console")
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
            # Then it holds the same rows
            assert _totals(conn) == issued
            # And so it does in batches smaller than the lines (three, the last one short)
            conn.execute(delete(s.invoice_line_totals))
            module = _backfill_module()
            module.BATCH = 4
            module.backfill(conn)
            assert _totals(conn) == issued
    finally:
        engine.dispose()


@pytest.fixture
def db(migrated_db_url: str) -> Iterator[Database]:
    database = Database.connect(migrated_db_url)
    apply_document(database, text=CATALOG, now=OCT - timedelta(days=60))
    yield database
    database.dispose()


def test_voiding_an_issued_invoice_takes_it_out_of_model_and_feature_sums(db: Database) -> None:
    starts = month_starts(NOW, 3)  # October to December
    # Given two issued October invoices with gpt-4o and input lines
    with db.begin() as conn:
        kept = _issue(
            conn,
            customer="acme",
            currency="USD",
            start=OCT,
            end=NOV,
            number="ML-1",
            lines=[_line("input", "0.10", feature="input"), _line("m", "1.5", model="gpt-4o")],
        )
        voided = _issue(
            conn,
            customer="initech",
            currency="USD",
            start=OCT,
            end=NOV,
            number="ML-2",
            lines=[_line("input", "2.00", feature="input"), _line("m", "3", model="gpt-4o")],
        )
        assert billed_by_month(conn, starts=starts, model="gpt-4o")[0] == {"USD": Decimal("4.5")}
        assert billed_by_month(conn, starts=starts, feature="input")[0] == {"USD": Decimal("2.10")}
    # When one of them is voided
    with db.begin() as conn:
        lifecycle.void_invoice(conn, id=voided, now=NOW)
    # Then only the other counts, for the model, the feature and everything
    with db.begin() as conn:
        assert billed_by_month(conn, starts=starts, model="gpt-4o") == [
            {"USD": Decimal("1.5")},
            {},
            {},
        ]
        assert billed_by_month(conn, starts=starts, feature="input") == [
            {"USD": Decimal("0.10")},
            {},
            {},
        ]
        assert billed_by_month(conn, starts=starts)[0] == {"USD": Decimal("1.60")}
        # And voiding the other leaves nothing, not even a zero
        lifecycle.void_invoice(conn, id=kept, now=NOW)
        assert billed_by_month(conn, starts=starts, model="gpt-4o") == [{}, {}, {}]
        assert billed_by_month(conn, starts=starts, feature="input") == [{}, {}, {}]
