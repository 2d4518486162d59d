"""CreditService: credit grants, balances and the ledger over gRPC; translation only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import Connection

from controlplane.api import convert
from controlplane.api.convert_credits import (
    alert_from_proto,
    alert_to_proto,
    grant_from_proto,
    grant_to_proto,
    outlook_to_proto,
    parse_alert_name,
    parse_grant_name,
    parse_rule_name,
    rule_from_proto,
    rule_to_proto,
    transaction_to_proto,
)
from controlplane.api.operator.paging import page
from controlplane.clock import Clock
from controlplane.credits import alerts, outlook, recharge, service
from controlplane.credits import recharge_storage as recharge_store
from controlplane.errors import AlreadyExists, InvalidArgument
from controlplane.invoicing import lifecycle
from controlplane.storage.db import Database
from meterline.admin.v1 import billing_pb2, credits_pb2_grpc
from meterline.admin.v1 import credits_pb2 as pb

T = TypeVar("T")
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext


class CreditServicer(credits_pb2_grpc.CreditServiceServicer):
    """``on_issued``: told about each top-up invoice issued (the Stripe sync)."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        on_issued: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._on_issued = on_issued

    async def _tx(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._db.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    async def CreateCreditGrant(
        self, request: pb.CreateCreditGrantRequest, context: Ctx
    ) -> pb.CreditGrant:
        customer = convert.resource_id(request.parent, "customers")
        now = self._clock.now()
        key = request.credit_grant.key or request.request_id
        grant = grant_from_proto(request.credit_grant, customer=customer, key=key, now=now)

        def create(conn: Connection) -> pb.CreditGrant:
            created, _ = service.create_grant(conn, grant, now=now)
            remaining = service.remaining(conn, created)
            return grant_to_proto(created, str(remaining))

        return await self._tx(create)

    async def GetCreditGrant(
        self, request: pb.GetCreditGrantRequest, context: Ctx
    ) -> pb.CreditGrant:
        customer, id = parse_grant_name(request.name)

        def get(conn: Connection) -> pb.CreditGrant:
            grant = service.get_grant(conn, customer=customer, id=id)
            return grant_to_proto(grant, str(service.remaining(conn, grant)))

        return await self._tx(get)

    async def ListCreditGrants(
        self, request: pb.ListCreditGrantsRequest, context: Ctx
    ) -> pb.ListCreditGrantsResponse:
        customer = convert.resource_id(request.parent, "customers")

        def list_(conn: Connection) -> list[pb.CreditGrant]:
            return [
                grant_to_proto(grant, str(service.remaining(conn, grant)))
                for grant in service.list_grants(conn, customer=customer)
            ]

        items = await self._tx(list_)
        chosen, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return pb.ListCreditGrantsResponse(credit_grants=chosen, next_page_token=token)

    async def VoidCreditGrant(
        self, request: pb.VoidCreditGrantRequest, context: Ctx
    ) -> pb.CreditGrant:
        customer, id = parse_grant_name(request.name)
        now = self._clock.now()

        def void(conn: Connection) -> pb.CreditGrant:
            grant = service.void_grant(conn, customer=customer, id=id, now=now)
            return grant_to_proto(grant, str(service.remaining(conn, grant)))

        return await self._tx(void)

    async def GetCreditBalance(
        self, request: pb.GetCreditBalanceRequest, context: Ctx
    ) -> pb.CreditBalance:
        customer = convert.resource_id(request.customer, "customers")
        at = (
            convert.from_timestamp(request.time, field="time")
            if request.HasField("time")
            else self._clock.now()
        )
        days = request.burn_window_days or outlook.DEFAULT_WINDOW_DAYS
        found = await self._tx(
            lambda conn: outlook.outlook(conn, customer=customer, at=at, days=days)
        )
        return outlook_to_proto(found)

    async def ListCreditTransactions(
        self, request: pb.ListCreditTransactionsRequest, context: Ctx
    ) -> pb.ListCreditTransactionsResponse:
        customer = convert.resource_id(request.parent, "customers")
        grant_id = ""
        if request.grant:
            owner, grant_id = parse_grant_name(request.grant)
            if owner != customer:
                raise InvalidArgument(
                    f"grant {request.grant!r} is not a grant of customer {customer!r}"
                )
        items = await self._tx(
            lambda conn: service.ledger(conn, customer=customer, grant_id=grant_id)
        )
        chosen, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return pb.ListCreditTransactionsResponse(
            credit_transactions=[transaction_to_proto(e) for e in chosen], next_page_token=token
        )

    async def CreateCreditTopUp(
        self, request: pb.CreateCreditTopUpRequest, context: Ctx
    ) -> billing_pb2.Invoice:
        customer = convert.resource_id(request.parent, "customers")
        amount = service.parse_amount(request.amount)
        now = self._clock.now()
        invoice_id = await self._tx(
            lambda conn: service.create_top_up(conn, customer=customer, amount=amount, now=now)
        )
        if self._on_issued is not None:
            await self._on_issued(invoice_id)
        invoice = await self._tx(lambda conn: lifecycle.get_invoice(conn, invoice_id))
        return convert.invoice_to_proto(invoice)

    async def GetCreditRechargeRule(
        self, request: pb.GetCreditRechargeRuleRequest, context: Ctx
    ) -> pb.CreditRechargeRule:
        customer = parse_rule_name(request.name)

        def get(conn: Connection) -> pb.CreditRechargeRule:
            rule = recharge.get_rule(conn, customer=customer)
            currency = service.plan_currency(conn, customer, self._clock.now())
            return rule_to_proto(replace(rule, currency=currency))

        return await self._tx(get)

    async def UpdateCreditRechargeRule(
        self, request: pb.UpdateCreditRechargeRuleRequest, context: Ctx
    ) -> pb.CreditRechargeRule:
        rule = rule_from_proto(request.credit_recharge_rule)
        now = self._clock.now()

        def update(conn: Connection) -> pb.CreditRechargeRule:
            if not request.allow_missing:
                recharge.get_rule(conn, customer=rule.customer)  # NOT_FOUND without one
            return rule_to_proto(recharge.set_rule(conn, rule, now=now))

        return await self._tx(update)

    async def DeleteCreditRechargeRule(
        self, request: pb.DeleteCreditRechargeRuleRequest, context: Ctx
    ) -> empty_pb2.Empty:
        customer = parse_rule_name(request.name)
        await self._tx(lambda conn: recharge.delete_rule(conn, customer=customer))
        return empty_pb2.Empty()

    async def CreateCreditAlert(
        self, request: pb.CreateCreditAlertRequest, context: Ctx
    ) -> pb.CreditAlert:
        customer = convert.resource_id(request.parent, "customers")
        alert = alert_from_proto(request.credit_alert, customer=customer)
        now = self._clock.now()

        def create(conn: Connection) -> pb.CreditAlert:
            checked = alerts.check_alert(conn, alert, now=now)
            if recharge_store.get_alert(conn, customer, checked.key) is not None:
                raise AlreadyExists(
                    f"customer {customer!r} has a credit alert {checked.key!r} (delete it first)"
                )
            return alert_to_proto(alerts.set_alert(conn, checked, now=now))

        return await self._tx(create)

    async def ListCreditAlerts(
        self, request: pb.ListCreditAlertsRequest, context: Ctx
    ) -> pb.ListCreditAlertsResponse:
        customer = convert.resource_id(request.parent, "customers")
        items = await self._tx(lambda conn: alerts.list_alerts(conn, customer=customer))
        chosen, token = page(
            [alert_to_proto(a) for a in items],
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListCreditAlertsResponse(credit_alerts=chosen, next_page_token=token)

    async def DeleteCreditAlert(
        self, request: pb.DeleteCreditAlertRequest, context: Ctx
    ) -> empty_pb2.Empty:
        customer, key = parse_alert_name(request.name)
        await self._tx(lambda conn: alerts.delete_alert(conn, customer=customer, key=key))
        return empty_pb2.Empty()
