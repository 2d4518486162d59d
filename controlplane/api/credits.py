"""CreditService: credit grants, balances and the ledger over gRPC; translation only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from sqlalchemy import Connection

from controlplane.api import convert
from controlplane.api.paging import page
from controlplane.clock import Clock
from controlplane.credits import service
from controlplane.credits.types import (
    CreditBalance,
    CreditGrant,
    CreditTransaction,
    Funding,
    TransactionType,
)
from controlplane.errors import InvalidArgument
from controlplane.storage.db import Database
from meterline.admin.v1 import credits_pb2 as pb
from meterline.admin.v1 import credits_pb2_grpc

T = TypeVar("T")
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext

FUNDINGS = {
    Funding.INVOICE: pb.CREDIT_FUNDING_INVOICE,
    Funding.PROMOTIONAL: pb.CREDIT_FUNDING_PROMOTIONAL,
    Funding.EXTERNAL: pb.CREDIT_FUNDING_EXTERNAL,
}
_FUNDINGS_BACK = {value: key for key, value in FUNDINGS.items()}
TRANSACTION_TYPES = {
    TransactionType.FUNDED: pb.CREDIT_TRANSACTION_TYPE_FUNDED,
    TransactionType.CONSUMED: pb.CREDIT_TRANSACTION_TYPE_CONSUMED,
    TransactionType.EXPIRED: pb.CREDIT_TRANSACTION_TYPE_EXPIRED,
    TransactionType.VOIDED: pb.CREDIT_TRANSACTION_TYPE_VOIDED,
    TransactionType.ADJUSTED: pb.CREDIT_TRANSACTION_TYPE_ADJUSTED,
}
_SEGMENT = r"[^/]{1,200}"
_GRANT_NAME = re.compile(rf"^customers/({_SEGMENT})/creditGrants/({_SEGMENT})$")


def grant_name(customer: str, id: str) -> str:
    return f"customers/{customer}/creditGrants/{id}"


def parse_grant_name(name: str) -> tuple[str, str]:
    match = _GRANT_NAME.match(name)
    if match is None:
        raise InvalidArgument(
            f"expected a credit grant name like customers/acme/creditGrants/ID, got {name[:80]!r}"
        )
    return match.group(1), match.group(2)


def grant_to_proto(grant: CreditGrant, remaining: str = "") -> pb.CreditGrant:
    return pb.CreditGrant(
        name=grant_name(grant.customer, grant.id),
        id=grant.id,
        customer=grant.customer,
        amount=str(grant.amount),
        currency=grant.currency,
        funding=FUNDINGS[grant.funding],
        priority=grant.priority,
        effective_time=convert.to_timestamp(grant.effective_time),
        expire_time=convert.to_timestamp(grant.expire_time),
        features=list(grant.features),
        key=grant.key,
        description=grant.description,
        remaining=remaining,
        void_time=convert.to_timestamp(grant.void_time),
        create_time=convert.to_timestamp(grant.create_time),
    )


def grant_from_proto(
    message: pb.CreditGrant, *, customer: str, key: str, now: datetime
) -> CreditGrant:
    if message.funding == pb.CREDIT_FUNDING_UNSPECIFIED:
        funding = Funding.PROMOTIONAL
    elif message.funding in _FUNDINGS_BACK:
        funding = _FUNDINGS_BACK[message.funding]
    else:
        raise InvalidArgument(
            f"credit_grant.funding {message.funding} is not INVOICE, PROMOTIONAL or EXTERNAL"
        )
    effective = (
        convert.from_timestamp(message.effective_time, field="credit_grant.effective_time")
        if message.HasField("effective_time")
        else now
    )
    expire = (
        convert.from_timestamp(message.expire_time, field="credit_grant.expire_time")
        if message.HasField("expire_time")
        else None
    )
    if message.expires_after:
        if expire is not None:
            raise InvalidArgument("give credit_grant.expire_time or expires_after, not both")
        expire = service.expiry_after(effective, message.expires_after)
    return CreditGrant(
        id="",
        customer=customer,
        amount=service.parse_amount(message.amount),
        currency=message.currency,
        funding=funding,
        priority=message.priority,
        effective_time=effective,
        expire_time=expire,
        features=tuple(message.features),
        key=key,
        description=message.description,
    )


def transaction_to_proto(entry: CreditTransaction) -> pb.CreditTransaction:
    return pb.CreditTransaction(
        id=entry.id,
        grant=grant_name(entry.customer, entry.grant_id),
        type=TRANSACTION_TYPES[entry.type],
        amount=str(entry.amount),
        currency=entry.currency,
        time=convert.to_timestamp(entry.time),
        invoice=f"invoices/{entry.invoice_id}" if entry.invoice_id else "",
        description=entry.description,
    )


def balance_to_proto(found: CreditBalance) -> pb.CreditBalance:
    message = pb.CreditBalance(
        customer=found.customer,
        currency=found.currency,
        settled=str(found.settled),
        live=str(found.live),
        time=convert.to_timestamp(found.at),
    )
    for entry in found.grants:
        message.grants.add(
            grant=grant_name(entry.grant.customer, entry.grant.id),
            key=entry.grant.key,
            remaining=str(entry.remaining),
            priority=entry.grant.priority,
            expire_time=convert.to_timestamp(entry.grant.expire_time),
        )
    return message


class CreditServicer(credits_pb2_grpc.CreditServiceServicer):
    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

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
        found = await self._tx(lambda conn: service.balance(conn, customer=customer, at=at))
        return balance_to_proto(found)

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
