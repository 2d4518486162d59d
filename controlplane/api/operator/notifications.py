"""NotificationService: channels, rules, events and deliveries over gRPC; translation only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import Connection

from controlplane.api import convert
from controlplane.api.convert_notifications import (
    channel_to_proto,
    delivery_to_proto,
    event_to_proto,
    rule_from_proto,
    rule_to_proto,
)
from controlplane.api.operator.paging import page
from controlplane.clock import Clock
from controlplane.notifications import service, storage
from controlplane.notifications.types import (
    Channel,
)
from controlplane.storage.db import Database
from meterline.admin.v1 import notifications_pb2 as pb
from meterline.admin.v1 import notifications_pb2_grpc

T = TypeVar("T")
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext


class NotificationServicer(notifications_pb2_grpc.NotificationServiceServicer):
    """``run_once`` evaluates and delivers now (the control plane's notification job)."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        run_once: Callable[[], Awaitable[tuple[int, int]]],
        allow_private_urls: bool = False,
    ) -> None:
        self._db = db
        self._clock = clock
        self._run_once = run_once
        self._allow_private_urls = allow_private_urls

    async def _tx(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._db.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: Ctx
    ) -> pb.NotificationChannel:
        wire = request.channel
        channel = Channel(key=wire.key, url=wire.url, signing_secret=wire.signing_secret)
        now = self._clock.now()
        allow = self._allow_private_urls
        created = await self._tx(
            lambda conn: service.create_channel(conn, channel, now=now, allow_private=allow)
        )
        return channel_to_proto(created)

    async def GetChannel(
        self, request: pb.GetChannelRequest, context: Ctx
    ) -> pb.NotificationChannel:
        key = convert.resource_id(request.name, "channels")
        return channel_to_proto(await self._tx(lambda conn: storage.get_channel(conn, key)))

    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: Ctx
    ) -> pb.ListChannelsResponse:
        items = await self._tx(storage.list_channels)
        chosen, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return pb.ListChannelsResponse(
            channels=[channel_to_proto(c) for c in chosen], next_page_token=token
        )

    async def DeleteChannel(
        self, request: pb.DeleteChannelRequest, context: Ctx
    ) -> empty_pb2.Empty:
        key = convert.resource_id(request.name, "channels")
        await self._tx(lambda conn: storage.delete_channel(conn, key))
        return empty_pb2.Empty()

    async def CreateRule(self, request: pb.CreateRuleRequest, context: Ctx) -> pb.NotificationRule:
        rule = rule_from_proto(request.rule)
        now = self._clock.now()
        return rule_to_proto(await self._tx(lambda conn: service.create_rule(conn, rule, now=now)))

    async def GetRule(self, request: pb.GetRuleRequest, context: Ctx) -> pb.NotificationRule:
        key = convert.resource_id(request.name, "rules")
        return rule_to_proto(await self._tx(lambda conn: storage.get_rule(conn, key)))

    async def ListRules(self, request: pb.ListRulesRequest, context: Ctx) -> pb.ListRulesResponse:
        items = await self._tx(lambda conn: storage.list_rules(conn))
        chosen, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return pb.ListRulesResponse(rules=[rule_to_proto(r) for r in chosen], next_page_token=token)

    async def DeleteRule(self, request: pb.DeleteRuleRequest, context: Ctx) -> empty_pb2.Empty:
        key = convert.resource_id(request.name, "rules")
        await self._tx(lambda conn: storage.delete_rule(conn, key))
        return empty_pb2.Empty()

    async def GetEvent(self, request: pb.GetEventRequest, context: Ctx) -> pb.NotificationEvent:
        event_id = convert.resource_id(request.name, "events")
        return event_to_proto(await self._tx(lambda conn: storage.get_event(conn, event_id)))

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Ctx
    ) -> pb.ListEventsResponse:
        rule = convert.resource_id(request.rule, "rules") if request.rule else ""
        items = await self._tx(lambda conn: storage.list_events(conn, rule=rule))
        chosen, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return pb.ListEventsResponse(
            events=[event_to_proto(e) for e in chosen], next_page_token=token
        )

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Ctx
    ) -> pb.ListDeliveriesResponse:
        event = convert.resource_id(request.event, "events") if request.event else ""
        channel = convert.resource_id(request.channel, "channels") if request.channel else ""
        items = await self._tx(
            lambda conn: storage.list_deliveries(conn, event=event, channel=channel)
        )
        chosen, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in chosen], next_page_token=token
        )

    async def EvaluateNotifications(
        self, request: pb.EvaluateNotificationsRequest, context: Ctx
    ) -> pb.EvaluateNotificationsResponse:
        created, attempts = await self._run_once()
        return pb.EvaluateNotificationsResponse(events_created=created, attempts=attempts)
