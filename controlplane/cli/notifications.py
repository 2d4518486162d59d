"""``meterline notifications channels|rules|events|deliveries|evaluate``: alerts as webhooks."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from controlplane.cli.client import add_cp_argument, ready_channel
from controlplane.cli.output import Column, add_output_arguments, emit_list
from meterline.admin.v1 import notifications_pb2 as pb
from meterline.admin.v1 import notifications_pb2_grpc

_RULE_TYPES = {
    "entitlement_threshold": pb.NOTIFICATION_RULE_TYPE_ENTITLEMENT_THRESHOLD,
    "invoice": pb.NOTIFICATION_RULE_TYPE_INVOICE,
    "budget_threshold": pb.NOTIFICATION_RULE_TYPE_BUDGET_THRESHOLD,
}


def register(subparsers: Any) -> None:
    """Add ``notifications`` to the ``meterline`` subcommands."""

    def with_cp(p: argparse.ArgumentParser, *, json_flag: bool = False) -> None:
        add_cp_argument(p)
        if json_flag:
            add_output_arguments(p)

    top = subparsers.add_parser(
        "notifications", help="alerts: webhook channels, rules, events and deliveries"
    )
    groups = top.add_subparsers(dest="notifications_command", required=True)

    channels = groups.add_parser("channels", help="webhook endpoints with a signing secret")
    channel_commands = channels.add_subparsers(dest="channels_command", required=True)
    create = channel_commands.add_parser("create", help="add a webhook channel")
    create.add_argument("key", help="channel key")
    create.add_argument("--url", required=True, help="http(s) URL the events are POSTed to")
    create.add_argument(
        "--secret",
        default=os.environ.get("METERLINE_WEBHOOK_SECRET"),
        help="signing secret, 16+ characters (default: $METERLINE_WEBHOOK_SECRET)",
    )
    with_cp(create, json_flag=True)
    create.set_defaults(func=_channels_create)
    listing = channel_commands.add_parser("list", help="list channels")
    with_cp(listing, json_flag=True)
    listing.set_defaults(func=_channels_list)
    delete = channel_commands.add_parser("delete", help="delete a channel no rule uses")
    delete.add_argument("key", help="channel key")
    with_cp(delete)
    delete.set_defaults(func=_channels_delete)

    rules = groups.add_parser("rules", help="what to alert on")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True)
    rcreate = rule_commands.add_parser("create", help="add a rule")
    rcreate.add_argument("key", help="rule key")
    rcreate.add_argument("--channel", required=True, help="channel key")
    rcreate.add_argument(
        "--type", choices=sorted(_RULE_TYPES), default="entitlement_threshold", help="rule type"
    )
    rcreate.add_argument(
        "--thresholds",
        default="",
        help="percentages of the limit (or budget), comma-separated: 50,80,100",
    )
    rcreate.add_argument("--feature", default="", help="only this feature (default: all)")
    rcreate.add_argument("--customer", default="", help="only this customer (default: all)")
    rcreate.add_argument(
        "--events",
        default="",
        help="invoice events, comma-separated (invoice.issued, invoice.paid, "
        "invoice.payment_failed, invoice.void, invoice.sync_failed; default: all)",
    )
    with_cp(rcreate, json_flag=True)
    rcreate.set_defaults(func=_rules_create)
    rlist = rule_commands.add_parser("list", help="list rules")
    with_cp(rlist, json_flag=True)
    rlist.set_defaults(func=_rules_list)
    rdelete = rule_commands.add_parser("delete", help="delete a rule (its events stay)")
    rdelete.add_argument("key", help="rule key")
    with_cp(rdelete)
    rdelete.set_defaults(func=_rules_delete)

    events = groups.add_parser("events", help="events fired, newest first")
    events.add_argument("--rule", default="", help="only this rule")
    with_cp(events, json_flag=True)
    events.set_defaults(func=_events)

    deliveries = groups.add_parser("deliveries", help="webhook deliveries and their attempts")
    deliveries.add_argument("--event", default="", help="only this event id")
    deliveries.add_argument("--channel", default="", help="only this channel")
    with_cp(deliveries, json_flag=True)
    deliveries.set_defaults(func=_deliveries)

    evaluate = groups.add_parser("evaluate", help="evaluate rules and deliver what is due now")
    with_cp(evaluate)
    evaluate.set_defaults(func=_evaluate)


@contextmanager
def _stub(address: str) -> Iterator[notifications_pb2_grpc.NotificationServiceStub]:
    with ready_channel(address) as channel:
        yield notifications_pb2_grpc.NotificationServiceStub(channel)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def channel_json(channel: pb.NotificationChannel) -> dict[str, Any]:
    return {
        "key": channel.key,
        "url": channel.url,
        "has_signing_secret": channel.has_signing_secret,
        "create_time": channel.create_time.ToJsonString(),
    }


def rule_json(rule: pb.NotificationRule) -> dict[str, Any]:
    kind = pb.NotificationRuleType.Name(rule.type).removeprefix("NOTIFICATION_RULE_TYPE_")
    return {
        "key": rule.key,
        "type": kind.lower(),
        "channel": rule.channel,
        "thresholds": list(rule.thresholds),
        "feature": rule.feature,
        "customer": rule.customer,
        "invoice_events": list(rule.invoice_events),
    }


def delivery_json(delivery: pb.NotificationDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "channel": delivery.channel,
        "state": pb.DeliveryState.Name(delivery.state).removeprefix("DELIVERY_STATE_").lower(),
        "next_attempt_time": delivery.next_attempt_time.ToJsonString(),
        "attempts": [
            {
                "number": a.number,
                "time": a.time.ToJsonString(),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
            }
            for a in delivery.attempts
        ],
    }


def _print(items: list[dict[str, Any]], args: argparse.Namespace, columns: list[str]) -> None:
    """A table of ``columns`` (times: the ``*_time`` ones), or every field as JSON/YAML."""
    table = [Column(c, time=c.endswith("_time")) for c in columns]
    emit_list(args, items, table, noun=("item", "items"))


def _channels_create(args: argparse.Namespace) -> int:
    if not args.secret:
        raise SystemExit("error: --secret (or $METERLINE_WEBHOOK_SECRET) is required")
    with _stub(args.cp) as stub:
        channel = stub.CreateChannel(
            pb.CreateChannelRequest(
                channel=pb.NotificationChannel(
                    key=args.key, url=args.url, signing_secret=args.secret
                )
            )
        )
    _print([channel_json(channel)], args, ["key", "url"])
    return 0


def _channels_list(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        channels = stub.ListChannels(pb.ListChannelsRequest(page_size=1000)).channels
    _print([channel_json(c) for c in channels], args, ["key", "url"])
    return 0


def _channels_delete(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        stub.DeleteChannel(pb.DeleteChannelRequest(name=f"channels/{args.key}"))
    print(f"deleted channel {args.key}")
    return 0


def _rules_create(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        rule = stub.CreateRule(
            pb.CreateRuleRequest(
                rule=pb.NotificationRule(
                    key=args.key,
                    type=_RULE_TYPES[args.type],
                    channel=args.channel,
                    thresholds=_split(args.thresholds),
                    feature=args.feature,
                    customer=args.customer,
                    invoice_events=_split(args.events),
                )
            )
        )
    _print([rule_json(rule)], args, ["key", "type", "channel", "thresholds"])
    return 0


def _rules_list(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        rules = stub.ListRules(pb.ListRulesRequest(page_size=1000)).rules
    columns = ["key", "type", "channel", "thresholds", "feature", "customer", "invoice_events"]
    _print([rule_json(r) for r in rules], args, columns)
    return 0


def _rules_delete(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        stub.DeleteRule(pb.DeleteRuleRequest(name=f"rules/{args.key}"))
    print(f"deleted rule {args.key}")
    return 0


def _events(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        events = stub.ListEvents(pb.ListEventsRequest(rule=args.rule, page_size=1000)).events
    items = [
        {
            "id": e.id,
            "rule": e.rule,
            "type": e.type,
            "create_time": e.create_time.ToJsonString(),
            "payload": json.loads(e.payload),
        }
        for e in events
    ]
    _print(items, args, ["id", "rule", "type", "create_time"])
    return 0


def _deliveries(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        deliveries = stub.ListDeliveries(
            pb.ListDeliveriesRequest(event=args.event, channel=args.channel, page_size=1000)
        ).deliveries
    items = [delivery_json(d) for d in deliveries]
    if args.output != "table":
        _print(items, args, [])
        return 0
    rows = [
        {
            **item,
            "attempts": len(item["attempts"]),
            "last": (
                f"{item['attempts'][-1]['status_code']} {item['attempts'][-1]['error']}".strip()
                if item["attempts"]
                else "-"
            ),
        }
        for item in items
    ]
    _print(rows, args, ["id", "event", "channel", "state", "attempts", "last"])
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    with _stub(args.cp) as stub:
        result = stub.EvaluateNotifications(pb.EvaluateNotificationsRequest())
    print(f"{result.events_created} events, {result.attempts} delivery attempts")
    return 0
