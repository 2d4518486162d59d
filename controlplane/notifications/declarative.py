"""``billing.notifications`` of a declarative document: channels and rules, applied by key.

```yaml
billing:
  notifications:
    channels:
      - {key: ops, url: "https://hooks.example.com/meterline", signing_secret: "whsec-..."}
    rules:
      - {key: tokens, type: entitlement_threshold, channel: ops, thresholds: [50, 80, 100]}
      - {key: money, type: budget_threshold, channel: ops, thresholds: [80], customer: acme}
      - {key: invoices, type: invoice, channel: ops, events: [invoice.issued, invoice.paid]}
```

Applying the same file again changes nothing; a changed channel or rule replaces the stored one
(its events and deliveries stay). Channels and rules only in the database are left alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Connection, update

from controlplane.errors import InvalidArgument, NotFound
from controlplane.notifications import service, storage
from controlplane.notifications.types import (
    INVOICE_EVENTS,
    Channel,
    NotificationsSpec,
    Rule,
    RuleType,
)
from controlplane.storage import schema as s

if TYPE_CHECKING:
    # Only a type here: the declarative package imports this module.
    from controlplane.declarative.entry import Entry

_CHANNEL_FIELDS = ("key", "url", "signing_secret")
_RULE_FIELDS = ("key", "type", "channel", "thresholds", "feature", "customer", "events")


def parse_notifications(billing: Entry) -> NotificationsSpec | None:
    """Read ``billing.notifications`` (None when absent); problems go to ``billing.problems``."""
    section = billing.sub("notifications")
    if section is None:
        return None
    section.check_keys(("channels", "rules"))
    channels: list[Channel] = []
    channel_keys: set[str] = set()
    for entry in section.entries("channels", label="key"):
        entry.check_keys(_CHANNEL_FIELDS)
        key = entry.string("key", required=True)
        url = entry.string("url", required=True)
        secret = entry.string("signing_secret", required=True)
        if key is None or url is None or secret is None:
            continue
        if key in channel_keys:
            entry.fail(f'duplicate channel key "{key}"')
            continue
        try:
            service.check_url(url)
            channel = Channel(key=key, url=url, signing_secret=secret)
            service.check_channel(channel)
        except InvalidArgument as exc:
            entry.fail(str(exc))
            continue
        channel_keys.add(key)
        channels.append(channel)
    rules: list[Rule] = []
    rule_keys: set[str] = set()
    for entry in section.entries("rules", label="key"):
        entry.check_keys(_RULE_FIELDS)
        key = entry.string("key", required=True)
        kind = entry.choice("type", tuple(t.value for t in RuleType))
        channel_key = entry.string("channel", required=True)
        thresholds = _thresholds(entry)
        events = entry.string_list("events")
        for index, event in enumerate(events or ()):
            if event not in INVOICE_EVENTS:
                entry.fail_field(
                    f"events[{index}]",
                    f'"{event}" is not an invoice event ({", ".join(INVOICE_EVENTS)})',
                )
                events = None
        # A channel not in the file may exist in the database: checked when applied.
        if key is None or kind is None or channel_key is None or thresholds is None:
            continue
        if events is None:
            continue
        if key in rule_keys:
            entry.fail(f'duplicate rule key "{key}"')
            continue
        rule_keys.add(key)
        rules.append(
            Rule(
                key=key,
                type=RuleType(kind),
                channel=channel_key,
                thresholds=thresholds,
                feature=entry.string("feature", default="") or "",
                customer=entry.string("customer", default="") or "",
                invoice_events=tuple(events),
            )
        )
    return NotificationsSpec(channels=tuple(channels), rules=tuple(rules))


def _thresholds(entry: Entry) -> tuple[Decimal, ...] | None:
    value = entry.data.get("thresholds")
    if value is None:
        return ()
    if not isinstance(value, list):
        entry.fail_field("thresholds", "must be a list of percentages, like [50, 80, 100]")
        return None
    texts: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | str):
            entry.fail_field(
                f"thresholds[{index}]", 'must be an integer or a quoted decimal like "12.5"'
            )
            return None
        texts.append(str(item))
    try:
        return service.parse_thresholds(texts)
    except InvalidArgument as exc:
        entry.fail_field("thresholds", str(exc))
        return None


def apply_notifications(
    conn: Connection, spec: NotificationsSpec, *, now: datetime, allow_private: bool = False
) -> list[str]:
    """Create or replace the file's channels, then its rules; what changed. Channel URLs must
    not name this machine or its link unless ``allow_private``."""
    changes: list[str] = []
    for channel in spec.channels:
        try:
            service.check_url(channel.url, allow_private=allow_private)
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"billing.notifications.channels ({channel.key}): {exc}"
            ) from None
        try:
            current = storage.get_channel(conn, channel.key)
        except NotFound:
            service.create_channel(conn, channel, now=now, allow_private=allow_private)
            changes.append(f"created notification channel {channel.key}")
            continue
        if (current.url, current.signing_secret) != (channel.url, channel.signing_secret):
            conn.execute(
                update(s.notification_channels)
                .where(s.notification_channels.c.key == channel.key)
                .values(url=channel.url, signing_secret=channel.signing_secret, update_time=now)
            )
            changes.append(f"updated notification channel {channel.key}")
    for rule in spec.rules:
        try:
            current_rule = storage.get_rule(conn, rule.key)
        except NotFound:
            current_rule = None
        if current_rule is not None and replace(current_rule, create_time=None) == rule:
            continue
        if current_rule is not None:
            storage.delete_rule(conn, rule.key)
        try:
            service.create_rule(conn, rule, now=now)
        except NotFound as exc:
            raise InvalidArgument(f"billing.notifications.rules ({rule.key}): {exc}") from None
        except InvalidArgument as exc:
            raise InvalidArgument(f"billing.notifications.rules ({rule.key}): {exc}") from None
        verb = "replaced" if current_rule is not None else "created"
        changes.append(f"{verb} notification rule {rule.key}")
    return changes
