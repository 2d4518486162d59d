"""Declarative apply: a whole decK-style document, in one transaction, all or nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from controlplane.budgets.declarative import apply_budgets
from controlplane.catalog import storage as catalog
from controlplane.credits.declarative import apply_credit_rules, apply_credits
from controlplane.customers import storage as customers
from controlplane.declarative import DeclarativeConfig, parse_document
from controlplane.errors import InvalidArgument, NotFound
from controlplane.gateway import storage as gateway
from controlplane.gateway.secrets import SecretBox
from controlplane.notifications.declarative import apply_notifications
from controlplane.storage.db import Database
from controlplane.subscriptions import service as subscription_service
from controlplane.usage import meter_storage


@dataclass(frozen=True)
class ApplyResult:
    """What the apply changed (empty when the stored state already matched the file), and the
    fields it accepted without enforcing them (one line per path)."""

    changes: tuple[str, ...]
    notes: tuple[str, ...] = ()


def apply_document(
    db: Database,
    *,
    text: str,
    now: datetime,
    validate_only: bool = False,
    sync: bool = False,
    allow_private_webhooks: bool = False,
    secrets: SecretBox | None = None,
) -> ApplyResult:
    """Parse, validate and store a declarative document; nothing is stored if any entry fails.

    ``sync``: also delete the gateway entities the document does not list (decK's sync; with
    its select_tags, only stored entities carrying them). Billing entities are never deleted.
    ``allow_private_webhooks``: notification channels may name loopback or link-local hosts.
    ``secrets``: the key provider keys are stored under (None: plaintext, development only).
    """
    config = parse_document(text)
    with db.engine.connect() as conn:
        transaction = conn.begin()
        try:
            changes = _apply(
                conn, config, now=now, allow_private=allow_private_webhooks, secrets=secrets
            )
            if sync:
                changes.extend(
                    gateway.delete_missing(
                        conn, config.gateway, secrets=secrets, select_tags=config.select_tags
                    )
                )
        except IntegrityError as exc:
            transaction.rollback()
            raise InvalidArgument(f"the file conflicts with stored data: {exc.orig}") from exc
        except BaseException:
            transaction.rollback()
            raise
        if validate_only:
            transaction.rollback()
        else:
            transaction.commit()
    return ApplyResult(changes=tuple(changes), notes=config.notes)


def _apply(
    conn: Connection,
    config: DeclarativeConfig,
    *,
    now: datetime,
    allow_private: bool,
    secrets: SecretBox | None,
) -> list[str]:
    changes: list[str | None] = []
    for service in config.gateway.services:
        changes.append(gateway.upsert_service(conn, service, now=now))
    for route in config.gateway.routes:
        changes.append(gateway.upsert_route(conn, route, now=now))
    changes.extend(gateway.upsert_consumers(conn, config.gateway.consumers, now=now))
    for plugin in config.gateway.plugins:
        changes.append(gateway.upsert_plugin(conn, plugin, now=now, secrets=secrets))

    billing = config.billing
    for meter in billing.meters:
        changes.append(meter_storage.upsert_meter(conn, meter, now=now))
    for feature in billing.features:
        changes.append(catalog.upsert_feature(conn, feature, now=now))
    for price_list in billing.price_lists:
        changes.append(catalog.upsert_price_list(conn, price_list, now=now))
    for plan in billing.plans:
        try:
            current = catalog.get_plan(conn, plan.key)
        except NotFound:
            current = None
        if current is not None and catalog.same_content(current, plan):
            if current.state.value == "draft":
                catalog.publish_plan(conn, plan.key, current.version, now=now)
                changes.append(f"published plan {plan.key} version {current.version}")
            continue
        stored = catalog.insert_plan_version(conn, plan, now=now)
        catalog.publish_plan(conn, stored.key, stored.version, now=now)
        changes.append(f"created and published plan {plan.key} version {stored.version}")
    for customer in billing.customers:
        changes.append(customers.upsert_customer(conn, customer, now=now))
    for spec in billing.subscriptions:
        changes.extend(subscription_service.apply_subscription(conn, spec, now=now))
    changes.extend(apply_budgets(conn, billing.budgets, now=now))
    changes.extend(apply_credits(conn, billing.credits, now=now))
    if billing.notifications is not None:
        changes.extend(
            apply_notifications(conn, billing.notifications, now=now, allow_private=allow_private)
        )
    # After the notifications: a credit alert may name a channel the same file creates.
    changes.extend(
        apply_credit_rules(conn, billing.credit_recharge, billing.credit_alerts, now=now)
    )
    return [c for c in changes if c]
