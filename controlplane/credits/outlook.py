"""Burn rate and projected run-out of a customer's credits, from spending samples.

*Spent* at a time is what credits have paid so far: the ledger's ``consumed`` entries plus what
the open invoices would take from credits if issued now (``CreditBalance.pending``); issuing an
invoice moves an amount from the second to the first, so spent only grows with usage. The
credit job records a sample at most every ``SAMPLE_SECONDS`` per customer; the burn rate over the
last N days is ``(spent now - spent at the newest sample at or before now - N days) / days``
(the oldest sample in the window when none is older: a shorter window, never a guess), shown
to 6 decimals; the run-out time is ``now + live x elapsed / spent``, to the second (floor).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import Connection

from controlplane.credits import recharge_storage as store
from controlplane.credits import service, storage
from controlplane.credits.types import CreditBalance, CreditOutlook, TransactionType
from controlplane.errors import InvalidArgument

SAMPLE_SECONDS = 300
DEFAULT_WINDOW_DAYS = 7
MAX_WINDOW_DAYS = 366
_DAY = Decimal(86400)
BURN_PLACES = Decimal("0.000001")


def spent(conn: Connection, customer: str, balance: CreditBalance) -> Decimal:
    """What credits have paid by ``balance.at``: consumed entries plus open invoices' credit."""
    consumed = sum(
        (
            -entry.amount
            for entry in storage.list_transactions(conn, customer)
            if entry.type is TransactionType.CONSUMED and entry.time <= balance.at
        ),
        Decimal(0),
    )
    return consumed + balance.pending


def record_sample(
    conn: Connection, *, customer: str, now: datetime, balance: CreditBalance | None = None
) -> bool:
    """Record what the customer has spent now unless a sample is younger than SAMPLE_SECONDS."""
    last = store.last_sample(conn, customer)
    if last is not None and (now - last[0]).total_seconds() < SAMPLE_SECONDS:
        return False
    found = balance or service.balance(conn, customer=customer, at=now)
    store.add_sample(conn, customer, time=now, spent=spent(conn, customer, found))
    return True


def outlook(
    conn: Connection, *, customer: str, at: datetime, days: int = DEFAULT_WINDOW_DAYS
) -> CreditOutlook:
    """The live balance, the burn per day over the last ``days`` and the projected run-out."""
    if not 1 <= days <= MAX_WINDOW_DAYS:
        raise InvalidArgument(f"burn-rate window must be 1 to {MAX_WINDOW_DAYS} days, got {days}")
    found = service.balance(conn, customer=customer, at=at)
    now_spent = spent(conn, customer, found)
    since = at - timedelta(days=days)
    start = store.sample_at_or_before(conn, customer, since) or store.first_sample_after(
        conn, customer, since
    )
    if start is None or start[0] >= at:
        return CreditOutlook(
            balance=found,
            window_days=days,
            spent_in_window=None,
            window_start=None,
            burn_per_day=None,
            run_out_time=at if found.live <= 0 else None,
        )
    start_time, start_spent = start
    window_start = max(start_time, since)
    used = now_spent - start_spent
    seconds = Decimal(int((at - start_time).total_seconds()))
    # Shown to 6 decimals (a rate, not an amount owed); the run-out uses the exact ratio.
    burn = (used * _DAY / seconds).quantize(BURN_PLACES) if seconds > 0 else Decimal(0)
    run_out: datetime | None = None
    if found.live <= 0:
        run_out = at
    elif used > 0:
        left = (found.live * seconds / used).to_integral_value(rounding=ROUND_FLOOR)
        run_out = at + timedelta(seconds=int(left))
    return CreditOutlook(
        balance=found,
        window_days=days,
        spent_in_window=used,
        window_start=window_start,
        burn_per_day=burn,
        run_out_time=run_out,
    )
