"""Notification channels, rules, events and deliveries to messages and back."""

from __future__ import annotations

from controlplane.api import convert
from controlplane.errors import InvalidArgument
from controlplane.notifications import service
from controlplane.notifications.types import (
    Channel,
    Delivery,
    DeliveryState,
    Event,
    Rule,
    RuleType,
)
from meterline.admin.v1 import notifications_pb2 as pb

RULE_TYPES = {
    RuleType.ENTITLEMENT_THRESHOLD: pb.NOTIFICATION_RULE_TYPE_ENTITLEMENT_THRESHOLD,
    RuleType.INVOICE: pb.NOTIFICATION_RULE_TYPE_INVOICE,
    RuleType.BUDGET_THRESHOLD: pb.NOTIFICATION_RULE_TYPE_BUDGET_THRESHOLD,
}


RULE_TYPES_BACK = {value: key for key, value in RULE_TYPES.items()}


DELIVERY_STATES = {
    DeliveryState.PENDING: pb.DELIVERY_STATE_PENDING,
    DeliveryState.DELIVERED: pb.DELIVERY_STATE_DELIVERED,
    DeliveryState.FAILED: pb.DELIVERY_STATE_FAILED,
}


def channel_to_proto(channel: Channel) -> pb.NotificationChannel:
    message = pb.NotificationChannel(
        name=f"channels/{channel.key}",
        key=channel.key,
        url=channel.url,
        has_signing_secret=bool(channel.signing_secret),
    )
    if channel.create_time is not None:
        message.create_time.FromDatetime(channel.create_time)
    return message


def rule_to_proto(rule: Rule) -> pb.NotificationRule:
    message = pb.NotificationRule(
        name=f"rules/{rule.key}",
        key=rule.key,
        type=RULE_TYPES[rule.type],
        channel=rule.channel,
        thresholds=[str(t) for t in rule.thresholds],
        feature=rule.feature,
        customer=rule.customer,
        invoice_events=list(rule.invoice_events),
    )
    if rule.create_time is not None:
        message.create_time.FromDatetime(rule.create_time)
    return message


def rule_from_proto(message: pb.NotificationRule) -> Rule:
    rule_type = RULE_TYPES_BACK.get(message.type)
    if rule_type is None:
        raise InvalidArgument(
            "rule.type is required (ENTITLEMENT_THRESHOLD, BUDGET_THRESHOLD or INVOICE)"
        )
    return Rule(
        key=message.key,
        type=rule_type,
        channel=convert.resource_id(message.channel, "channels") if message.channel else "",
        thresholds=service.parse_thresholds(list(message.thresholds)),
        feature=message.feature,
        customer=convert.resource_id(message.customer, "customers") if message.customer else "",
        invoice_events=tuple(message.invoice_events),
    )


def event_to_proto(event: Event) -> pb.NotificationEvent:
    message = pb.NotificationEvent(
        name=f"events/{event.id}",
        id=event.id,
        rule=event.rule,
        type=event.type,
        payload=event.payload,
    )
    message.create_time.FromDatetime(event.create_time)
    return message


def delivery_to_proto(delivery: Delivery) -> pb.NotificationDelivery:
    message = pb.NotificationDelivery(
        id=delivery.id,
        event=delivery.event_id,
        channel=delivery.channel,
        state=DELIVERY_STATES[delivery.state],
    )
    for attempt in delivery.attempts:
        item = message.attempts.add(
            number=attempt.number,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
        )
        item.time.FromDatetime(attempt.time)
    message.next_attempt_time.FromDatetime(delivery.next_attempt_time)
    message.create_time.FromDatetime(delivery.create_time)
    return message
