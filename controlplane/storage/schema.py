"""The relational schema, as SQLAlchemy Core tables. Alembic migrations create it.

Decimal amounts are stored as text so that no database ever rounds them through a float;
timestamps are stored as naive UTC and come back timezone-aware (``UTCDateTime``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every dialect."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def _times() -> list[Column[Any]]:
    return [
        Column("create_time", UTCDateTime(), nullable=False),
        Column("update_time", UTCDateTime(), nullable=False),
    ]


services = Table(
    "services",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("url", Text, nullable=False),
    # Kong fields stored as written (tags, timeouts...); NULL for rows older than 0012.
    Column("attributes", JSON, nullable=True),
    *_times(),
)

routes = Table(
    "routes",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("service", String(200), ForeignKey("services.name"), nullable=False),
    Column("paths", JSON, nullable=False),
    Column("methods", JSON, nullable=False),
    Column("strip_path", Boolean, nullable=False),
    Column("attributes", JSON, nullable=True),
    *_times(),
)

consumers = Table(
    "consumers",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("custom_id", String(200), nullable=False, default=""),
    Column("attributes", JSON, nullable=True),
    *_times(),
)

keyauth_credentials = Table(
    "keyauth_credentials",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "consumer",
        String(200),
        ForeignKey("consumers.username", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key_hash", String(100), nullable=False, unique=True),
    Column("create_time", UTCDateTime(), nullable=False),
)

plugins = Table(
    "plugins",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    # Empty string, not NULL, for "no scope": NULLs would defeat the unique constraint.
    Column("service", String(200), nullable=False),
    Column("route", String(200), nullable=False),
    Column("consumer", String(200), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("config", JSON, nullable=False),
    Column("attributes", JSON, nullable=True),
    *_times(),
    UniqueConstraint("name", "service", "route", "consumer", name="uq_plugins_scope"),
)

features = Table(
    "features",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("meter", String(200), nullable=False),
    Column("filters", JSON, nullable=False),
    *_times(),
)

plans = Table(
    "plans",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("billing_cadence", String(50), nullable=False),
    Column("state", String(20), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("publish_time", UTCDateTime(), nullable=True),
    # Default billing anchor of the version's new subscriptions; NULL: their start.
    Column("billing_anchor", UTCDateTime(), nullable=True),
)

rate_cards = Table(
    "rate_cards",
    metadata,
    Column("plan_key", String(200), primary_key=True),
    Column("plan_version", Integer, primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("position", Integer, nullable=False),
    # NULL for a flat fee that meters nothing.
    Column("feature", String(200), ForeignKey("features.key"), nullable=True),
    # JSON text with decimal strings ({"type": "tiered", "mode": "graduated", "tiers": [...]}),
    # so no database reads an amount as a float.
    Column("price", Text, nullable=True),
    Column("entitlement_type", String(20), nullable=True),
    # JSON text of the entitlement's other fields (limit, usage_period, config, ...); NULL for
    # boolean entitlements and rate cards without one.
    Column("entitlement", Text, nullable=True),
    Column("discounts", Text, nullable=True),
    Column("commitments", Text, nullable=True),
    # credit_only; NULL is credit_then_invoice (controlplane.catalog.types.SettlementMode).
    Column("settlement_mode", String(30), nullable=True),
    ForeignKeyConstraint(
        ["plan_key", "plan_version"], ["plans.key", "plans.version"], ondelete="CASCADE"
    ),
)

# Per-model list prices over time (model_list rate cards price tokens from them).
price_lists = Table(
    "price_lists",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    *_times(),
)

model_prices = Table(
    "model_prices",
    metadata,
    Column(
        "price_list",
        String(200),
        ForeignKey("price_lists.key", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("model", String(200), primary_key=True),
    # From here until the model's next entry.
    Column("effective_from", UTCDateTime(), primary_key=True),
    # Decimal strings per token; NULL: the list has no price for that token type.
    Column("input", String(50), nullable=True),
    Column("output", String(50), nullable=True),
    Column("cached_input", String(50), nullable=True),
    Column("reasoning", String(50), nullable=True),
)

customers = Table(
    "customers",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    *_times(),
)

customer_subjects = Table(
    "customer_subjects",
    metadata,
    # A subject's usage belongs to at most one customer.
    Column("subject", String(200), primary_key=True),
    Column(
        "customer", String(200), ForeignKey("customers.key", ondelete="CASCADE"), nullable=False
    ),
)

portal_tokens = Table(
    "portal_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "customer", String(200), ForeignKey("customers.key", ondelete="CASCADE"), nullable=False
    ),
    # sha256 of the token; the token itself is shown once and never stored.
    Column("hash", String(80), nullable=False, unique=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("expire_time", UTCDateTime(), nullable=False),
    Column("revoke_time", UTCDateTime(), nullable=True),
    Index("ix_portal_tokens_customer", "customer"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    # sha256 of the session id; the id itself lives only in the browser's cookie.
    Column("id_hash", String(80), primary_key=True),
    # The form token of this session (sent to the browser in every form; not a credential alone).
    Column("csrf", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    # The operator token's name, or the portal token's id.
    Column("name", String(200), nullable=False),
    Column("scope", String(20), nullable=True),
    Column("customer", String(200), nullable=True),
    Column("principal_expire_time", UTCDateTime(), nullable=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("expire_time", UTCDateTime(), nullable=False),
    Index("ix_console_sessions_expire_time", "expire_time"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    Column("plan_key", String(200), nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("start_time", UTCDateTime(), nullable=False),
    Column("end_time", UTCDateTime(), nullable=True),
    Column("create_time", UTCDateTime(), nullable=False),
    # Billing periods count from here; NULL means start_time. A plan change keeps the anchor.
    Column("billing_anchor", UTCDateTime(), nullable=True),
    ForeignKeyConstraint(["plan_key", "plan_version"], ["plans.key", "plans.version"]),
    Index("ix_subscriptions_customer", "customer"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("source", String(200), nullable=False),
    Column("type", String(100), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("time", UTCDateTime(), nullable=False),
    Column("provider", String(100), nullable=False),
    Column("model", String(200), nullable=False),
    Column("token_type", String(20), nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("route", String(200), nullable=False),
    Column("request_id", String(100), nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("ingest_time", UTCDateTime(), nullable=False),
    # Latency of the request (data planes before 0.x do not send them: NULL).
    Column("time_to_first_token_ms", BigInteger, nullable=True),
    Column("latency_ms", BigInteger, nullable=True),
    Index("ix_usage_events_subject_time", "subject", "time"),
)

dataplanes = Table(
    "dataplanes",
    metadata,
    Column("node_id", String(200), primary_key=True),
    Column("hostname", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("config_version", String(100), nullable=False),
    Column("sync_status", String(20), nullable=False),
    Column("error", Text, nullable=False),
    Column("last_seen_time", UTCDateTime(), nullable=False),
    # The config stream that wrote CONNECTED last: a write of an older stream (a replica that
    # lost the data plane after it reconnected elsewhere) must not overwrite a newer one.
    Column("stream_id", String(32), nullable=False),
)

grants = Table(
    "grants",
    metadata,
    # Token credits on top of a customer's metered entitlement of a feature (top-ups, promotions).
    Column("id", String(36), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    Column("feature", String(200), ForeignKey("features.key"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("effective_time", UTCDateTime(), nullable=False),
    Column("expiration_time", UTCDateTime(), nullable=True),
    # ISO 8601 duration: the balance is reset to ``amount`` every interval from effective_time.
    Column("recurrence_interval", String(50), nullable=True),
    Column("void_time", UTCDateTime(), nullable=True),
    Column("create_time", UTCDateTime(), nullable=False),
    Index("ix_grants_customer_feature", "customer", "feature"),
)

budgets = Table(
    "budgets",
    metadata,
    # A spending cap of a customer per billing period, in the currency of its plan.
    Column("id", String(36), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    # Decimal string.
    Column("amount", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    # ISO 8601 duration (the plan's billing cadence).
    Column("period", String(50), nullable=False),
    # hard | soft
    Column("mode", String(10), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Index("ix_budgets_customer", "customer"),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    # Prepaid money a customer may spend (controlplane.credits); what remains of it is the sum
    # of its credit_transactions.
    Column("id", String(36), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    # The idempotency key; NULL when none was given (NULLs never collide).
    Column("key", String(200), nullable=True),
    # Decimal string.
    Column("amount", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    # invoice | promotional | external
    Column("funding", String(20), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("effective_time", UTCDateTime(), nullable=False),
    Column("expire_time", UTCDateTime(), nullable=True),
    # JSON list of feature keys; [] pays every feature and flat fees.
    Column("features", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("void_time", UTCDateTime(), nullable=True),
    Column("create_time", UTCDateTime(), nullable=False),
    UniqueConstraint("customer", "key", name="uq_credit_grants_customer_key"),
    Index("ix_credit_grants_customer", "customer"),
)

credit_transactions = Table(
    "credit_transactions",
    metadata,
    # The credit ledger: funded | consumed | expired | voided | adjusted, amounts signed.
    Column("id", String(36), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    # 1, 2, 3... per customer, written under the customer's row lock: the ledger's order.
    Column("seq", Integer, nullable=False),
    Column("grant_id", String(36), ForeignKey("credit_grants.id"), nullable=False),
    Column("type", String(20), nullable=False),
    # Signed decimal string: funded and positive adjustments add, the rest subtract.
    Column("amount", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("time", UTCDateTime(), nullable=False),
    # consumed: the issued invoice whose credit line it is.
    Column("invoice_id", String(36), ForeignKey("invoices.id"), nullable=True),
    Column("description", Text, nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    UniqueConstraint("customer", "seq", name="uq_credit_transactions_customer_seq"),
    Index("ix_credit_transactions_grant_id", "grant_id"),
)

credit_recharge_rules = Table(
    "credit_recharge_rules",
    metadata,
    # One auto-recharge rule per customer (controlplane.credits.recharge); decimal strings.
    Column("customer", String(200), ForeignKey("customers.key"), primary_key=True),
    # threshold | target
    Column("mode", String(20), nullable=False),
    # Fires when the live balance is below this.
    Column("threshold", Text, nullable=False),
    # threshold: the amount bought; target: the balance a top-up brings back ("0" otherwise).
    Column("amount", Text, nullable=False),
    Column("target", Text, nullable=False),
    # Bounds of one top-up; "0" is no bound.
    Column("minimum", Text, nullable=False),
    Column("maximum", Text, nullable=False),
    # Caps per billing period: top-ups and their amount; 0 / "0" is no cap.
    Column("max_count", Integer, nullable=False),
    Column("max_amount", Text, nullable=False),
    *_times(),
)

credit_recharges = Table(
    "credit_recharges",
    metadata,
    # The top-up invoices auto-recharge issued, with the billing period they count against.
    Column("invoice_id", String(36), ForeignKey("invoices.id"), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    Column("amount", Text, nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Index("ix_credit_recharges_customer", "customer"),
)

credit_alerts = Table(
    "credit_alerts",
    metadata,
    # Credit-balance thresholds of a customer, fired through a notification channel.
    Column("customer", String(200), ForeignKey("customers.key"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("channel", String(200), ForeignKey("notification_channels.key"), nullable=False),
    # Percentages of the last funded grant's amount, and absolute amounts (decimal strings).
    Column("percents", JSON, nullable=False),
    Column("amounts", JSON, nullable=False),
    *_times(),
)

credit_usage_samples = Table(
    "credit_usage_samples",
    metadata,
    # What a customer had spent of its credits (ledger consumption plus what open invoices
    # would take) at a time: the burn rate is the difference of two samples.
    Column("customer", String(200), ForeignKey("customers.key"), primary_key=True),
    Column("time", UTCDateTime(), primary_key=True),
    Column("spent", Text, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer", String(200), ForeignKey("customers.key"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime(), nullable=False),
    # gathering | draft | issued | paid | payment_failed | void
    Column("state", String(20), nullable=False),
    # Set when issued: ML-<currency>-<year>-<6 digits>.
    Column("number", String(40), nullable=True, unique=True),
    # Decimal string, frozen when issued; NULL before (lines are computed live).
    Column("total", Text, nullable=True),
    Column("issue_time", UTCDateTime(), nullable=True),
    # Stripe sync: the stripe_sync SyncRecord as JSON; NULL when sync is off or not started.
    Column("sync_state", String(20), nullable=True),
    Column("sync_record", Text, nullable=True),
    # NULL: a billing period's invoice; "credit_top_up": a one-off invoice buying credits
    # (controlplane.credits.topups), period [issue, issue), outside all period logic.
    Column("kind", String(30), nullable=True),
    *_times(),
    # One invoice per customer, currency and billing period, however many replicas run the job.
    UniqueConstraint(
        "customer", "currency", "period_start", "period_end", name="uq_invoices_period"
    ),
    Index("ix_invoices_state", "state"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("invoice_id", String(36), ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    # The whole line as JSON with decimal strings (frozen at issue).
    Column("line", Text, nullable=False),
    Index("ix_invoice_lines_invoice_id", "invoice_id"),
)

invoice_line_totals = Table(
    "invoice_line_totals",
    metadata,
    # One row per frozen line (written with it by controlplane.invoicing.storage.freeze): what
    # the console's margin sums per month for one model or feature, without parsing each
    # line's JSON. It copies the invoice's period and currency; the invoice's state is not
    # copied (a void invoice keeps its rows): readers join the invoice for it.
    Column(
        "line_id",
        String(36),
        ForeignKey("invoice_lines.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("invoice_id", String(36), ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    Column("customer", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    # The line's feature, or its rate card when it has none.
    Column("feature", String(200), nullable=False),
    Column("model", String(200), nullable=True),
    # Decimal string, the line's amount.
    Column("amount", Text, nullable=False),
    Index("ix_invoice_line_totals_invoice_id", "invoice_id"),
    Index("ix_invoice_line_totals_feature", "feature", "period_start"),
    Index("ix_invoice_line_totals_model", "model", "period_start"),
)

invoice_usage_events = Table(
    "invoice_usage_events",
    metadata,
    # Which usage events each issued invoice priced for each subscription: the primary key makes
    # "an event is billed at most once per subscription" a database constraint.
    Column("subscription_id", String(36), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("invoice_id", String(36), ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    Index("ix_invoice_usage_events_invoice_id", "invoice_id"),
)

invoice_numbers = Table(
    "invoice_numbers",
    metadata,
    # The last number given per currency and year; the row is locked while numbering.
    Column("currency", String(3), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("last", Integer, nullable=False),
)

stripe_customers = Table(
    "stripe_customers",
    metadata,
    Column(
        "customer", String(200), ForeignKey("customers.key", ondelete="CASCADE"), primary_key=True
    ),
    Column("stripe_customer_id", String(100), nullable=False),
    *_times(),
)

meters = Table(
    "meters",
    metadata,
    # Operator-defined meters (the built-in llm_tokens is not stored). Immutable once created.
    Column("key", String(200), primary_key=True),
    Column("description", Text, nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("aggregation", String(20), nullable=False),
    # A JSONPath into the event's data; NULL for COUNT.
    Column("value_property", String(500), nullable=True),
    # {dimension: JSONPath}
    Column("group_by", JSON, nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
)

meter_events = Table(
    "meter_events",
    metadata,
    # CloudEvents-shaped usage of operator meters, idempotent by (source, id).
    Column("source", String(200), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("type", String(200), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("time", UTCDateTime(), nullable=False),
    # The event's data as JSON text, as received.
    Column("data", Text, nullable=False),
    Column("ingest_time", UTCDateTime(), nullable=False),
    Index("ix_meter_events_type_subject_time", "type", "subject", "time"),
)

invoice_meter_events = Table(
    "invoice_meter_events",
    metadata,
    # The billing ledger of operator-meter events (meter_events, keyed by source and id): which
    # events each issued invoice billed for each subscription, at most once (the primary key).
    Column("subscription_id", String(36), primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("invoice_id", String(36), ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    Index("ix_invoice_meter_events_invoice_id", "invoice_id"),
)

usage_rollups = Table(
    "usage_rollups",
    metadata,
    # Pre-aggregated usage per meter, subject, dimensions and UTC hour, kept in the transaction
    # that inserts the events (only newly inserted events roll up). ``value`` is a decimal
    # string: the SUM (SUM, llm_tokens) or the MAX (MAX); ``count`` the number of events.
    Column("meter", String(200), primary_key=True),
    Column("subject", String(200), primary_key=True),
    # The hour's start; before dimensions in the key so a period's hours are one range scan.
    Column("bucket", UTCDateTime(), primary_key=True),
    # Canonical JSON of the event's dimensions (sorted keys, string values).
    Column("dimensions", String(2000), primary_key=True),
    # Concurrent PostgreSQL writers update different shards of a row (connection pid % 16),
    # so ingest streams do not queue on each other's row locks; reads add the shards up.
    Column("shard", SmallInteger, primary_key=True),
    Column("value", String(100), nullable=False),
    Column("count", BigInteger, nullable=False),
)

# -- notifications (alerts as signed webhooks) -----------------------------------------------

notification_channels = Table(
    "notification_channels",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("url", Text, nullable=False),
    # The HMAC key of the webhook signature; never returned by the API.
    Column("signing_secret", Text, nullable=False),
    *_times(),
)

notification_rules = Table(
    "notification_rules",
    metadata,
    Column("key", String(200), primary_key=True),
    # "entitlement_threshold" or "invoice".
    Column("type", String(40), nullable=False),
    Column("channel", String(200), ForeignKey("notification_channels.key"), nullable=False),
    # Percentages as decimal strings (entitlement_threshold).
    Column("thresholds", JSON, nullable=False),
    # "" means every feature / customer.
    Column("feature", String(200), nullable=False),
    Column("customer", String(200), nullable=False),
    # Invoice event types (invoice); empty means all.
    Column("invoice_events", JSON, nullable=False),
    *_times(),
)

notification_events = Table(
    "notification_events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("rule", String(200), nullable=False),
    # What makes the event unique: a threshold fires once per customer, feature and usage
    # period; an invoice event once per invoice. Replicas racing insert it once.
    Column("dedupe_key", String(500), nullable=False, unique=True),
    Column("type", String(60), nullable=False),
    # The webhook body (JSON), as sent.
    Column("payload", Text, nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
)

notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_id", String(36), ForeignKey("notification_events.id"), nullable=False),
    Column("channel", String(200), nullable=False),
    # "pending", "delivered" or "failed".
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    # When the next attempt is due; a claimed delivery is pushed a lease ahead.
    Column("next_attempt_time", UTCDateTime(), nullable=False),
    *_times(),
    Index("ix_notification_deliveries_state_next", "state", "next_attempt_time"),
)

notification_delivery_attempts = Table(
    "notification_delivery_attempts",
    metadata,
    Column("delivery_id", String(36), ForeignKey("notification_deliveries.id"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("time", UTCDateTime(), nullable=False),
    # 0 when no HTTP status came back (refused, timed out).
    Column("status_code", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
)

billed_usage_hours = Table(
    "billed_usage_hours",
    metadata,
    # How many llm_tokens events the billing ledger (invoice_usage_events) holds per subscription
    # and UTC hour of the events' time, written with the ledger rows. Where it equals the
    # rollups' event count of the hour, every event of that hour is billed: late usage is
    # looked for in raw events only in the other hours.
    Column("subscription_id", String(36), primary_key=True),
    Column("bucket", UTCDateTime(), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

billed_meter_hours = Table(
    "billed_meter_hours",
    metadata,
    # The same for operator-meter events (invoice_meter_events), per invoice too, against the
    # rollups' count of stored meter events per subject and hour (meter ":events"): also where
    # an invoice's quantity may read whole hours from rollups.
    Column("subscription_id", String(36), primary_key=True),
    Column("bucket", UTCDateTime(), primary_key=True),
    Column(
        "invoice_id",
        String(36),
        ForeignKey("invoices.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("count", BigInteger, nullable=False),
)
