"""Storage of customers and the subjects whose usage they pay for."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from controlplane.customers.types import Customer
from controlplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from controlplane.identifiers import check_key, check_name
from controlplane.storage import schema as s


def list_customers(conn: Connection) -> list[Customer]:
    subjects: dict[str, list[str]] = defaultdict(list)
    cs = s.customer_subjects
    for row in conn.execute(select(cs).order_by(cs.c.subject)):
        subjects[row.customer].append(row.subject)
    rows = conn.execute(select(s.customers).order_by(s.customers.c.key))
    return [
        Customer(
            key=r.key,
            name=r.name,
            subjects=tuple(subjects[r.key]),
            create_time=r.create_time,
            update_time=r.update_time,
        )
        for r in rows
    ]


def page_customers(
    conn: Connection,
    *,
    search: str = "",
    limit: int,
    offset: int = 0,
    newest_first: bool | None = None,
) -> list[Customer]:
    """One page of customers, read with LIMIT/OFFSET (10,000 customers stay fast): by key, or
    by creation time (``newest_first`` True or False); ``search`` keeps those whose key, name
    or a subject contains it, case-insensitively."""
    c, cs = s.customers, s.customer_subjects
    query = select(c)
    if newest_first is not None:
        query = query.order_by(c.c.create_time.desc() if newest_first else c.c.create_time)
    query = query.order_by(c.c.key).limit(limit).offset(offset)
    if search:
        pattern = (
            "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        by_subject = select(cs.c.customer).where(
            func.lower(cs.c.subject).like(pattern, escape="\\")
        )
        query = query.where(
            or_(
                func.lower(c.c.key).like(pattern, escape="\\"),
                func.lower(c.c.name).like(pattern, escape="\\"),
                c.c.key.in_(by_subject),
            )
        )
    rows = list(conn.execute(query))
    subjects: dict[str, list[str]] = defaultdict(list)
    if rows:
        keys = [r.key for r in rows]
        found = select(cs).where(cs.c.customer.in_(keys)).order_by(cs.c.subject)
        for row in conn.execute(found):
            subjects[row.customer].append(row.subject)
    return [
        Customer(
            key=r.key,
            name=r.name,
            subjects=tuple(subjects[r.key]),
            create_time=r.create_time,
            update_time=r.update_time,
        )
        for r in rows
    ]


def customers_of_subjects(conn: Connection, subjects: list[str]) -> dict[str, str]:
    """subject -> the key of the customer it belongs to (subjects of nobody are left out)."""
    t = s.customer_subjects
    found: dict[str, str] = {}
    for i in range(0, len(subjects), 1000):
        chunk = subjects[i : i + 1000]
        query = select(t.c.subject, t.c.customer).where(t.c.subject.in_(chunk))
        found.update({row.subject: row.customer for row in conn.execute(query)})
    return found


def get_customer(conn: Connection, key: str) -> Customer:
    """One customer, read by key (not by listing every customer: invoicing calls this per
    customer)."""
    row = conn.execute(select(s.customers).where(s.customers.c.key == key)).first()
    if row is None:
        raise NotFound(f"customer {key!r} not found")
    cs = s.customer_subjects
    subjects = conn.execute(
        select(cs.c.subject).where(cs.c.customer == key).order_by(cs.c.subject)
    ).scalars()
    return Customer(
        key=row.key,
        name=row.name,
        subjects=tuple(subjects),
        create_time=row.create_time,
        update_time=row.update_time,
    )


def create_customer(conn: Connection, customer: Customer, *, now: datetime) -> Customer:
    check_key(customer.key, field="customer.key")  # before any query names it
    if conn.execute(select(s.customers.c.key).where(s.customers.c.key == customer.key)).first():
        raise AlreadyExists(f"customer {customer.key!r} already exists")
    upsert_customer(conn, customer, now=now)
    return get_customer(conn, customer.key)


def upsert_customer(conn: Connection, customer: Customer, *, now: datetime) -> str | None:
    """Create or update a customer and set its subjects."""
    check_key(customer.key, field="customer.key")
    check_name(customer.name, field="customer.display_name")
    for subject in customer.subjects:
        check_name(subject, field="customer.subjects")
    t, cs = s.customers, s.customer_subjects
    owners = {
        r.subject: r.customer
        for r in conn.execute(select(cs).where(cs.c.subject.in_(customer.subjects)))
    }
    for subject, owner in owners.items():
        if owner != customer.key:
            raise InvalidArgument(
                f"subject {subject!r} already belongs to customer {owner!r}; "
                "a subject's usage is billed to one customer"
            )
    row = conn.execute(select(t).where(t.c.key == customer.key)).first()
    if row is None:
        conn.execute(
            insert(t).values(key=customer.key, name=customer.name, create_time=now, update_time=now)
        )
        change: str | None = f"created customer {customer.key}"
    else:
        current = get_customer(conn, customer.key)
        if (current.name, set(current.subjects)) == (customer.name, set(customer.subjects)):
            return None
        conn.execute(
            update(t).where(t.c.key == customer.key).values(name=customer.name, update_time=now)
        )
        conn.execute(delete(cs).where(cs.c.customer == customer.key))
        change = f"updated customer {customer.key}"
    for subject in sorted(set(customer.subjects)):
        conn.execute(insert(cs).values(subject=subject, customer=customer.key))
    return change


def delete_customer(conn: Connection, key: str) -> None:
    """Delete a customer nothing refers to yet (a mistyped one, say); refused otherwise."""
    get_customer(conn, key)
    held = [
        what
        for what, table in (
            ("subscriptions", s.subscriptions),
            ("invoices", s.invoices),
            ("grants", s.grants),
            ("budgets", s.budgets),
        )
        if conn.execute(select(table.c.id).where(table.c.customer == key).limit(1)).first()
    ]
    if held:
        raise FailedPrecondition(
            f"customer {key!r} has {' and '.join(held)} and is kept for the books;"
            " cancel its subscriptions instead"
        )
    conn.execute(delete(s.customer_subjects).where(s.customer_subjects.c.customer == key))
    conn.execute(delete(s.stripe_customers).where(s.stripe_customers.c.customer == key))
    conn.execute(delete(s.customers).where(s.customers.c.key == key))
