"""Storage of auto-recharge rules, the top-ups they issued, credit alerts and spending samples
(``credit_recharge_rules``, ``credit_recharges``, ``credit_alerts``, ``credit_usage_samples``)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from controlplane.credits.types import CreditAlert, RechargeMode, RechargeRule
from controlplane.storage import schema as s

r = s.credit_recharge_rules
h = s.credit_recharges
a = s.credit_alerts
u = s.credit_usage_samples


def _rule(row: Any) -> RechargeRule:
    return RechargeRule(
        customer=row.customer,
        mode=RechargeMode(row.mode),
        threshold=Decimal(row.threshold),
        amount=Decimal(row.amount),
        target=Decimal(row.target),
        minimum=Decimal(row.minimum),
        maximum=Decimal(row.maximum),
        max_count=row.max_count,
        max_amount=Decimal(row.max_amount),
        create_time=row.create_time,
        update_time=row.update_time,
    )


def get_rule(conn: Connection, customer: str) -> RechargeRule | None:
    row = conn.execute(select(r).where(r.c.customer == customer)).first()
    return None if row is None else _rule(row)


def list_rule_customers(conn: Connection) -> list[str]:
    return list(conn.execute(select(r.c.customer).order_by(r.c.customer)).scalars())


def put_rule(conn: Connection, rule: RechargeRule, *, now: datetime) -> RechargeRule:
    """Create or replace the customer's rule (the caller holds the customer's row lock)."""
    values = {
        "mode": rule.mode.value,
        "threshold": str(rule.threshold),
        "amount": str(rule.amount),
        "target": str(rule.target),
        "minimum": str(rule.minimum),
        "maximum": str(rule.maximum),
        "max_count": rule.max_count,
        "max_amount": str(rule.max_amount),
        "update_time": now,
    }
    if get_rule(conn, rule.customer) is None:
        conn.execute(insert(r).values(customer=rule.customer, create_time=now, **values))
    else:
        conn.execute(update(r).where(r.c.customer == rule.customer).values(**values))
    found = get_rule(conn, rule.customer)
    assert found is not None
    return found


def delete_rule(conn: Connection, customer: str) -> bool:
    return conn.execute(delete(r).where(r.c.customer == customer)).rowcount > 0


def add_recharge(
    conn: Connection,
    *,
    invoice_id: str,
    customer: str,
    amount: Decimal,
    period_start: datetime,
    now: datetime,
) -> None:
    conn.execute(
        insert(h).values(
            invoice_id=invoice_id,
            customer=customer,
            amount=str(amount),
            period_start=period_start,
            create_time=now,
        )
    )


def recharges_in_period(
    conn: Connection, customer: str, period_start: datetime
) -> tuple[int, Decimal]:
    """How many top-ups auto-recharge issued in the period, and their total."""
    rows = conn.execute(
        select(h.c.amount).where(h.c.customer == customer, h.c.period_start == period_start)
    ).scalars()
    amounts = [Decimal(amount) for amount in rows]
    return len(amounts), sum(amounts, Decimal(0))


def is_recharge(conn: Connection, invoice_id: str) -> bool:
    query = select(h.c.invoice_id).where(h.c.invoice_id == invoice_id)
    return conn.execute(query).first() is not None


def _alert(row: Any) -> CreditAlert:
    return CreditAlert(
        customer=row.customer,
        key=row.key,
        channel=row.channel,
        percents=tuple(Decimal(p) for p in row.percents),
        amounts=tuple(Decimal(p) for p in row.amounts),
        create_time=row.create_time,
    )


def list_alerts(conn: Connection, customer: str | None = None) -> list[CreditAlert]:
    query = select(a).order_by(a.c.customer, a.c.key)
    if customer is not None:
        query = query.where(a.c.customer == customer)
    return [_alert(row) for row in conn.execute(query)]


def get_alert(conn: Connection, customer: str, key: str) -> CreditAlert | None:
    row = conn.execute(select(a).where(a.c.customer == customer, a.c.key == key)).first()
    return None if row is None else _alert(row)


def list_alert_customers(conn: Connection) -> list[str]:
    return list(conn.execute(select(a.c.customer).distinct().order_by(a.c.customer)).scalars())


def put_alert(conn: Connection, alert: CreditAlert, *, now: datetime) -> CreditAlert:
    values = {
        "channel": alert.channel,
        "percents": [str(p) for p in alert.percents],
        "amounts": [str(p) for p in alert.amounts],
        "update_time": now,
    }
    if get_alert(conn, alert.customer, alert.key) is None:
        conn.execute(
            insert(a).values(customer=alert.customer, key=alert.key, create_time=now, **values)
        )
    else:
        conn.execute(
            update(a).where(a.c.customer == alert.customer, a.c.key == alert.key).values(**values)
        )
    found = get_alert(conn, alert.customer, alert.key)
    assert found is not None
    return found


def delete_alert(conn: Connection, customer: str, key: str) -> bool:
    return conn.execute(delete(a).where(a.c.customer == customer, a.c.key == key)).rowcount > 0


def last_sample(conn: Connection, customer: str) -> tuple[datetime, Decimal] | None:
    row = conn.execute(
        select(u.c.time, u.c.spent).where(u.c.customer == customer).order_by(u.c.time.desc())
    ).first()
    return None if row is None else (row.time, Decimal(row.spent))


def add_sample(conn: Connection, customer: str, *, time: datetime, spent: Decimal) -> None:
    found = conn.execute(
        select(func.count()).select_from(u).where(u.c.customer == customer, u.c.time == time)
    ).scalar()
    if not found:
        conn.execute(insert(u).values(customer=customer, time=time, spent=str(spent)))


def sample_at_or_before(
    conn: Connection, customer: str, at: datetime
) -> tuple[datetime, Decimal] | None:
    row = conn.execute(
        select(u.c.time, u.c.spent)
        .where(u.c.customer == customer, u.c.time <= at)
        .order_by(u.c.time.desc())
    ).first()
    return None if row is None else (row.time, Decimal(row.spent))


def first_sample_after(
    conn: Connection, customer: str, at: datetime
) -> tuple[datetime, Decimal] | None:
    row = conn.execute(
        select(u.c.time, u.c.spent)
        .where(u.c.customer == customer, u.c.time > at)
        .order_by(u.c.time)
    ).first()
    return None if row is None else (row.time, Decimal(row.spent))
