"""``billing.credits`` in its mapping form: grants, recharge rules and credit alerts, applied
idempotently; bad input refused with a clear error and nothing changed (SQLite, PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane.credits import recharge_storage as store
from controlplane.credits import storage as grants
from controlplane.credits.types import RechargeMode, RechargeRule
from controlplane.declarative import DeclarativeError
from controlplane.declarative.apply import apply_document
from controlplane.errors import InvalidArgument
from controlplane.storage.db import Database

T0 = datetime(2026, 11, 1, tzinfo=UTC)
D = Decimal
HEAD = """\
_format_version: "3.0"
billing:
  features:
    - {key: tokens-out, meter: llm_tokens, filters: {type: output}}
  plans:
    - key: prepaid
      name: Prepaid
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: tokens-out, price: {type: unit, amount: "0.02"}, settlement_mode: credit_only}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: prepaid, start: "2026-11-01T00:00:00Z"}
  notifications:
    channels:
      - key: ops
        url: "https://hooks.example.com/meterline"
        signing_secret: "whsec-0123456789abcdef"
"""


def doc(recharge: str, alerts: str = "") -> str:
    return (
        HEAD
        + """  credits:
    grants:
      - {customer: acme, amount: "20", key: welcome-credit}
    recharge:
"""
        + recharge
        + ("    alerts:\n" + alerts if alerts else "")
    )


RULE = '      - {customer: acme, threshold: "5", amount: "20", minimum: "10", max_count: 3}\n'
ALERT = '      - {customer: acme, key: low, channel: ops, percents: [50, "12.5"], amounts: ["2"]}\n'


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    found = Database.connect(db_url)
    yield found
    found.dispose()


def test_rules_and_alerts_applied_idempotently(db: Database) -> None:
    first = apply_document(db, text=doc(RULE, ALERT), now=T0)
    assert "created the credit recharge rule of acme" in first.changes
    assert "created credit alert low of acme" in first.changes
    with db.begin() as conn:
        rule = store.get_rule(conn, "acme")
        assert rule is not None
        assert (rule.mode, rule.threshold, rule.amount, rule.minimum, rule.max_count) == (
            RechargeMode.THRESHOLD,
            D("5"),
            D("20"),
            D("10"),
            3,
        )
        [alert] = store.list_alerts(conn, "acme")
        assert (alert.channel, alert.percents, alert.amounts) == (
            "ops",
            (D("50"), D("12.5")),
            (D("2"),),
        )
        assert len(grants.list_grants(conn, "acme")) == 1
    # The same file again changes nothing.
    assert apply_document(db, text=doc(RULE, ALERT), now=T0).changes == ()
    # A changed rule replaces the stored one.
    target = '      - {customer: acme, mode: target, threshold: "5", target: "50", maximum: "40"}\n'
    again = apply_document(db, text=doc(target, ALERT), now=T0)
    assert again.changes == ("replaced the credit recharge rule of acme",)
    with db.begin() as conn:
        assert store.get_rule(conn, "acme") == RechargeRule(
            customer="acme",
            mode=RechargeMode.TARGET,
            threshold=D("5"),
            target=D("50"),
            maximum=D("40"),
            create_time=rule.create_time,
            update_time=rule.update_time,
        )


def test_list_form_still_reads_grants(db: Database) -> None:
    text = HEAD + '  credits:\n    - {customer: acme, amount: "20", key: welcome-credit}\n'
    changes = apply_document(db, text=text, now=T0).changes
    assert [c for c in changes if c.startswith("granted")] == [
        "granted 20 USD of promotional credits to acme (welcome-credit)"
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        pytest.param(
            '      - {customer: acme, threshold: "5", amount: "-20"}\n',
            'billing.credits.recharge[0] (acme): amount must not be negative, got "-20"',
            id="negative",
        ),
        pytest.param(
            '      - {customer: acme, mode: target, threshold: "5", target: "50",'
            ' minimum: "30", maximum: "20"}\n',
            "billing.credits.recharge[0] (acme): minimum 30 is above maximum 20",
            id="min-above-max",
        ),
        pytest.param(
            '      - {customer: ghost, threshold: "5", amount: "20"}\n',
            'billing.credits.recharge[0] (ghost): unknown customer "ghost"',
            id="unknown-customer",
        ),
        pytest.param(
            '      - {customer: acme, threshold: "5"}\n',
            "billing.credits.recharge[0] (acme): amount is required for a threshold rule",
            id="no-amount",
        ),
    ],
)
def test_bad_rules_refused_by_the_parser(db: Database, rule: str, message: str) -> None:
    with pytest.raises(DeclarativeError, match=re.escape(message)):
        apply_document(db, text=doc(rule), now=T0)
    with db.begin() as conn:
        assert store.get_rule(conn, "acme") is None


def test_wrong_currency_refused_and_nothing_changed(db: Database) -> None:
    apply_document(db, text=doc(RULE), now=T0)
    bad = '      - {customer: acme, threshold: "1", amount: "9", currency: EUR}\n'
    with pytest.raises(InvalidArgument, match=r"billing.credits.recharge \(acme\):.*'EUR'.*USD"):
        apply_document(db, text=doc(bad, ALERT), now=T0)
    with db.begin() as conn:
        rule = store.get_rule(conn, "acme")
        assert rule is not None and rule.threshold == D("5")
        assert store.list_alerts(conn, "acme") == []


def test_alert_on_unknown_channel_refused(db: Database) -> None:
    alert = '      - {customer: acme, key: low, channel: nowhere, amounts: ["2"]}\n'
    with pytest.raises(InvalidArgument, match='channel "nowhere" does not exist'):
        apply_document(db, text=doc(RULE, alert), now=T0)
    with db.begin() as conn:
        assert store.get_rule(conn, "acme") is None
        assert store.list_alerts(conn, "acme") == []
