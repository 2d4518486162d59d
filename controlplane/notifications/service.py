"""Notification use cases: channels and rules, threshold evaluation, invoice events, delivery.

Events are written in the transaction that observes them (threshold evaluation, or the invoice
state change itself), each with its pending delivery; a unique dedupe key makes every
threshold fire at most once per customer, feature and usage period (and each invoice event
once), however many replicas evaluate at the same time. Delivery is a separate step: claim due
deliveries (row locks, a lease), POST each signed body, record the attempt and schedule the
next one with exponential backoff.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import httpx
from sqlalchemy import Connection

from controlplane.budgets.service import statuses as budget_statuses
from controlplane.catalog import storage as catalog
from controlplane.clock import Clock
from controlplane.customers import storage as customers
from controlplane.entitlements.service import customer_values
from controlplane.entitlements.types import EntitlementValue
from controlplane.errors import InvalidArgument, NotFound
from controlplane.notifications import storage
from controlplane.notifications.invoices import event_payload
from controlplane.notifications.signing import SIGNATURE_HEADER, signature
from controlplane.notifications.types import (
    BUDGET_EVENT,
    INVOICE_EVENTS,
    MIN_SECRET_LENGTH,
    THRESHOLD_EVENT,
    Channel,
    DeliveryState,
    NotificationSettings,
    Rule,
    RuleType,
)
from controlplane.storage.db import Database

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")


def _check_key(key: str, what: str) -> None:
    if not _KEY.match(key):
        raise InvalidArgument(f'{what} key "{key}" may contain only letters, digits and "._~-"')


MAX_URL_LENGTH = 2048


def check_url(url: str, *, allow_private: bool = True) -> None:
    """InvalidArgument unless ``url`` is an absolute http(s) URL; with ``allow_private`` off,
    also unless its host is a public one (``private_host_problem``)."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"url is {len(url)} characters long; at most {MAX_URL_LENGTH}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise InvalidArgument(f'url "{url}" is not a valid URL') from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidArgument(f'url "{url}" must be an absolute http(s) URL')
    if not allow_private:
        problem = private_host_problem(parsed.host)
        if problem is not None:
            raise InvalidArgument(
                f'url "{url}": {problem}; webhooks to this machine or its link are refused'
                " unless the control plane runs with --allow-private-webhook-urls"
            )


def private_host_problem(host: str) -> str | None:
    """Why a webhook must not go to ``host`` (loopback, link-local such as the cloud metadata
    address 169.254.169.254, unspecified), or None. Literal addresses in any form the resolver
    takes (``127.1``, ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``) count as theirs."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is this machine (loopback)"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        try:
            # What getaddrinfo would make of a legacy IPv4 literal (127.1, 0x7f.1, 2130706433).
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None  # a DNS name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return f"{host} is a loopback address"
    if address.is_link_local:
        return f"{host} is a link-local address"
    if address.is_unspecified:
        return f"{host} is the unspecified address"
    return None


def check_channel(channel: Channel, *, allow_private: bool = True) -> None:
    """InvalidArgument unless the key, URL and secret are acceptable."""
    _check_key(channel.key, "channel")
    check_url(channel.url, allow_private=allow_private)
    if len(channel.signing_secret) < MIN_SECRET_LENGTH:
        raise InvalidArgument(
            f"signing_secret must be at least {MIN_SECRET_LENGTH} characters "
            f"(got {len(channel.signing_secret)})"
        )


def create_channel(
    conn: Connection, channel: Channel, *, now: datetime, allow_private: bool = False
) -> Channel:
    """Store a new channel; its URL must not name this machine or its link unless
    ``allow_private`` (NotificationSettings.allow_private_urls)."""
    check_channel(channel, allow_private=allow_private)
    return storage.insert_channel(conn, channel, now=now)


def parse_thresholds(values: list[str] | tuple[str, ...]) -> tuple[Decimal, ...]:
    """Percentages as decimal strings, each > 0, without repeats, sorted."""
    result: list[Decimal] = []
    for text in values:
        try:
            value = Decimal(str(text).strip())
        except InvalidOperation:
            raise InvalidArgument(f'threshold "{text}" is not a number') from None
        if not value.is_finite() or value <= 0:
            raise InvalidArgument(f'threshold "{text}" must be a percentage above 0')
        if value in result:
            raise InvalidArgument(f'threshold "{text}" is given twice')
        result.append(value)
    return tuple(sorted(result))


def create_rule(conn: Connection, rule: Rule, *, now: datetime) -> Rule:
    _check_key(rule.key, "rule")
    storage.get_channel(conn, rule.channel)  # NotFound names the channel
    if rule.customer:
        try:
            customers.get_customer(conn, rule.customer)
        except NotFound:
            raise InvalidArgument(f'customer "{rule.customer}" does not exist') from None
    if rule.type in (RuleType.ENTITLEMENT_THRESHOLD, RuleType.BUDGET_THRESHOLD):
        if not rule.thresholds:
            raise InvalidArgument(f"a {rule.type.value} rule needs thresholds (e.g. 50, 80, 100)")
        if rule.invoice_events:
            raise InvalidArgument("invoice_events are for invoice rules")
        if rule.feature and rule.type is RuleType.BUDGET_THRESHOLD:
            raise InvalidArgument("feature is for entitlement_threshold rules")
        if rule.feature:
            try:
                catalog.get_feature(conn, rule.feature)
            except NotFound:
                raise InvalidArgument(f'feature "{rule.feature}" does not exist') from None
    else:
        if rule.thresholds:
            raise InvalidArgument("thresholds are for entitlement_threshold and budget rules")
        if rule.feature:
            raise InvalidArgument("feature is for entitlement_threshold rules")
        for event in rule.invoice_events:
            if event not in INVOICE_EVENTS:
                raise InvalidArgument(
                    f'unknown invoice event "{event}" (expected one of {", ".join(INVOICE_EVENTS)})'
                )
    return storage.insert_rule(conn, rule, now=now)


# -- thresholds -------------------------------------------------------------------------------


def _crossed(value: EntitlementValue, threshold: Decimal) -> bool:
    balance = value.balance
    if balance is None or not value.limit:
        return False
    # usage / limit >= threshold %, in exact integer/decimal arithmetic.
    return Decimal(balance.usage) * 100 >= threshold * value.limit


def _customers(conn: Connection, rules: list[Rule]) -> list[str]:
    wanted = {rule.customer for rule in rules}
    return [c.key for c in customers.list_customers(conn)] if "" in wanted else sorted(wanted)


def evaluate_thresholds(conn: Connection, *, now: datetime) -> int:
    """Fire every entitlement and budget threshold crossed now and not yet fired this period;
    how many."""
    created = evaluate_budget_thresholds(conn, now=now)
    rules = storage.list_rules(conn, type=RuleType.ENTITLEMENT_THRESHOLD)
    if not rules:
        return created
    keys = _customers(conn, rules)
    for customer in keys:
        try:
            values = customer_values(conn, customer=customer, at=now)
        except NotFound:
            continue
        for value in values:
            if value.balance is None or not value.limit:
                continue
            for rule in rules:
                if rule.customer not in ("", customer) or rule.feature not in ("", value.feature):
                    continue
                for threshold in rule.thresholds:
                    if _crossed(value, threshold):
                        created += _fire_threshold(conn, rule, value, threshold, now=now)
    return created


def _fire_threshold(
    conn: Connection, rule: Rule, value: EntitlementValue, threshold: Decimal, *, now: datetime
) -> int:
    balance = value.balance
    assert balance is not None and value.limit
    period = balance.period_start.isoformat()
    dedupe = (
        "|".join(("threshold", rule.key, value.customer, value.feature, value.subscription, period))
        + f"|{threshold}"
    )
    event_id = str(uuid.uuid4())
    payload = event_payload(
        event_id,
        THRESHOLD_EVENT,
        now,
        {
            "rule": rule.key,
            "customer": value.customer,
            "feature": value.feature,
            "subscription": value.subscription,
            "threshold_percent": str(threshold),
            "usage_percent": str(
                (Decimal(balance.usage) * 100 / value.limit).quantize(Decimal("0.01"))
            ),
            "usage": balance.usage,
            "limit": value.limit,
            "balance": balance.balance,
            "overage": balance.overage,
            "soft_limit": value.soft_limit,
            "period_start": balance.period_start.isoformat(),
            "period_end": balance.period_end.isoformat(),
        },
    )
    inserted = storage.insert_event(
        conn,
        rule=rule,
        dedupe_key=dedupe,
        type=THRESHOLD_EVENT,
        payload=payload,
        event_id=event_id,
        now=now,
    )
    return 1 if inserted else 0


def evaluate_budget_thresholds(conn: Connection, *, now: datetime) -> int:
    """Fire every budget threshold (spent / amount) crossed in the current billing period."""
    rules = storage.list_rules(conn, type=RuleType.BUDGET_THRESHOLD)
    created = 0
    for customer in _customers(conn, rules) if rules else ():
        try:
            found = budget_statuses(conn, customer=customer, at=now)
        except NotFound:
            continue
        for state in found:
            amount = state.budget.amount
            for rule in rules:
                if rule.customer not in ("", customer) or amount <= 0:
                    continue
                for threshold in rule.thresholds:
                    if state.spent * 100 < threshold * amount:
                        continue
                    event_id = str(uuid.uuid4())
                    payload = event_payload(
                        event_id,
                        BUDGET_EVENT,
                        now,
                        {
                            "rule": rule.key,
                            "customer": customer,
                            "budget": state.budget.id,
                            "mode": state.budget.mode.value,
                            "currency": state.budget.currency,
                            "amount": str(amount),
                            "spent": str(state.spent),
                            "remaining": str(state.remaining),
                            "threshold_percent": str(threshold),
                            "period_end": state.period_end.isoformat(),
                        },
                    )
                    key = "|".join(
                        (
                            "budget",
                            rule.key,
                            customer,
                            state.budget.id,
                            state.period_end.isoformat(),
                        )
                    )
                    created += storage.insert_event(
                        conn,
                        rule=rule,
                        dedupe_key=f"{key}|{threshold}",
                        type=BUDGET_EVENT,
                        payload=payload,
                        event_id=event_id,
                        now=now,
                    )
    return created


# -- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    status_code: int
    error: str
    duration_ms: int


async def _post(
    client: httpx.AsyncClient, claimed: storage.Claimed, *, timestamp: int, allow_private: bool
) -> _Outcome:
    if not allow_private:
        # A channel stored before private hosts were refused (or by a replica with the flag).
        problem = private_host_problem(httpx.URL(claimed.url).host)
        if problem is not None:
            return _Outcome(0, f"not sent: {problem} (--allow-private-webhook-urls)", 0)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Meterline-Webhooks/1",
        SIGNATURE_HEADER: signature(claimed.secret, timestamp=timestamp, body=claimed.body),
        "Meterline-Event-Id": claimed.event_id,
        "Meterline-Delivery-Attempt": str(claimed.attempt),
    }
    started = time.perf_counter()
    try:
        response = await client.post(claimed.url, content=claimed.body, headers=headers)
    except httpx.HTTPError as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        return _Outcome(0, f"{type(exc).__name__}: {exc}"[:500], elapsed)
    elapsed = int((time.perf_counter() - started) * 1000)
    if 200 <= response.status_code < 300:
        return _Outcome(response.status_code, "", elapsed)
    return _Outcome(response.status_code, f"HTTP {response.status_code}", elapsed)


async def deliver_due(
    db: Database,
    *,
    clock: Clock,
    settings: NotificationSettings,
    client: httpx.AsyncClient,
) -> int:
    """Make one attempt at every due delivery; how many attempts were made."""

    def claim() -> list[storage.Claimed]:
        with db.begin() as conn:
            claimed, orphans = storage.claim_due(
                conn, now=clock.now(), lease_seconds=settings.lease_seconds, limit=settings.batch
            )
        for orphan in orphans:
            log.warning("notification delivery %s failed: its channel was deleted", orphan)
        return claimed

    claimed = await asyncio.to_thread(claim)
    if not claimed:
        return 0
    timestamp = int(clock.now().timestamp())
    allow = settings.allow_private_urls
    outcomes = await asyncio.gather(
        *(_post(client, item, timestamp=timestamp, allow_private=allow) for item in claimed)
    )

    def record() -> None:
        now = clock.now()
        with db.begin() as conn:
            for item, outcome in zip(claimed, outcomes, strict=True):
                if not outcome.error:
                    state, next_time = DeliveryState.DELIVERED, now
                elif item.attempt >= settings.max_attempts:
                    state, next_time = DeliveryState.FAILED, now
                    log.warning(
                        "notification delivery %s failed after %d attempts: %s",
                        item.delivery_id,
                        item.attempt,
                        outcome.error,
                    )
                else:
                    state = DeliveryState.PENDING
                    next_time = now + timedelta(seconds=settings.backoff_seconds(item.attempt))
                storage.record_attempt(
                    conn,
                    claimed=item,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                    time=now,
                    state=state,
                    next_attempt_time=next_time,
                )

    await asyncio.to_thread(record)
    return len(claimed)


async def run_once(
    db: Database,
    *,
    clock: Clock,
    settings: NotificationSettings,
    client: httpx.AsyncClient,
    also: Callable[[datetime], int] | None = None,
) -> tuple[int, int]:
    """Evaluate the threshold rules (and ``also``, other alerts such as credit alerts, in the
    same thread), then deliver what is due: (events created, attempts)."""

    def evaluate() -> int:
        now = clock.now()
        with db.begin() as conn:
            created = evaluate_thresholds(conn, now=now)
        return created + (also(now) if also is not None else 0)

    created = await asyncio.to_thread(evaluate)
    attempts = await deliver_due(db, clock=clock, settings=settings, client=client)
    return created, attempts
