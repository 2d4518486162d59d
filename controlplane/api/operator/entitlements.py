"""EntitlementService: entitlement values, grants and budgets over gRPC; translation only.

The to_proto/from_proto functions of this service live here, beside it, rather than in
``convert.py``: they concern only this service's messages.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from sqlalchemy import Connection

from controlplane.api import convert
from controlplane.api.convert_entitlements import (
    budget_from_proto,
    budget_to_proto,
    grant_from_proto,
    grant_to_proto,
    value_to_proto,
)
from controlplane.api.operator.paging import page
from controlplane.budgets import service as budgets
from controlplane.budgets.types import Budget, BudgetStatus
from controlplane.clock import Clock
from controlplane.configsync.hub import ConfigHub
from controlplane.entitlements import service
from controlplane.entitlements.types import EntitlementValue
from controlplane.errors import InvalidArgument
from controlplane.storage.db import Database
from meterline.admin.v1 import entitlements_pb2, entitlements_pb2_grpc

T = TypeVar("T")
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext

_SEGMENT = r"([^/]+)"
_ENTITLEMENT_NAME = re.compile(rf"^customers/{_SEGMENT}/entitlements/{_SEGMENT}$")
_GRANT_NAME = re.compile(rf"^customers/{_SEGMENT}/grants/{_SEGMENT}$")
_BUDGET_NAME = re.compile(rf"^customers/{_SEGMENT}/budgets/{_SEGMENT}$")


def _parse(pattern: re.Pattern[str], name: str, example: str) -> tuple[str, str]:
    match = pattern.match(name)
    if match is None:
        raise InvalidArgument(f"expected a resource name like {example}, got {name!r}")
    return match.group(1), match.group(2)


class EntitlementServicer(entitlements_pb2_grpc.EntitlementServiceServicer):
    def __init__(self, *, db: Database, clock: Clock, hub: ConfigHub) -> None:
        self._db = db
        self._clock = clock
        self._hub = hub

    async def _tx(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._db.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    def _at(self, message: Any) -> datetime:
        if message.HasField("time"):
            return convert.from_timestamp(message.time)
        return self._clock.now()

    async def ListEntitlements(
        self, request: entitlements_pb2.ListEntitlementsRequest, context: Ctx
    ) -> entitlements_pb2.ListEntitlementsResponse:
        at = self._at(request)
        if bool(request.customer) == bool(request.subject):
            raise InvalidArgument("name exactly one of customer and subject")

        def run(conn: Connection) -> list[EntitlementValue]:
            if request.customer:
                key = convert.resource_id(request.customer, "customers")
            else:
                key = service.subject_customer(conn, request.subject)
            return service.customer_values(conn, customer=key, at=at)

        values = await self._tx(run)
        return entitlements_pb2.ListEntitlementsResponse(
            entitlements=[value_to_proto(v) for v in values]
        )

    async def GetEntitlementValue(
        self, request: entitlements_pb2.GetEntitlementValueRequest, context: Ctx
    ) -> entitlements_pb2.EntitlementValue:
        customer, feature = _parse(
            _ENTITLEMENT_NAME, request.name, "customers/acme/entitlements/all-tokens"
        )
        at = self._at(request)
        value = await self._tx(
            lambda c: service.entitlement_value(c, customer=customer, feature=feature, at=at)
        )
        return value_to_proto(value)

    async def CreateGrant(
        self, request: entitlements_pb2.CreateGrantRequest, context: Ctx
    ) -> entitlements_pb2.Grant:
        customer = convert.resource_id(request.parent, "customers")
        now = self._clock.now()
        grant = grant_from_proto(request.grant, customer=customer, now=now)
        created = await self._tx(lambda c: service.create_grant(c, grant, now=now))
        await self._hub.notify()  # balances in snapshots change
        return grant_to_proto(created)

    async def ListGrants(
        self, request: entitlements_pb2.ListGrantsRequest, context: Ctx
    ) -> entitlements_pb2.ListGrantsResponse:
        customer = convert.resource_id(request.parent, "customers")
        items = await self._tx(
            lambda c: service.list_grants(
                c,
                customer=customer,
                feature=request.feature or None,
                include_voided=request.include_voided,
            )
        )
        chunk, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return entitlements_pb2.ListGrantsResponse(
            grants=[grant_to_proto(g) for g in chunk], next_page_token=token
        )

    async def VoidGrant(
        self, request: entitlements_pb2.VoidGrantRequest, context: Ctx
    ) -> entitlements_pb2.Grant:
        customer, id = _parse(_GRANT_NAME, request.name, "customers/acme/grants/ID")
        now = self._clock.now()
        voided = await self._tx(lambda c: service.void_grant(c, customer=customer, id=id, now=now))
        await self._hub.notify()
        return grant_to_proto(voided)

    # Budgets ------------------------------------------------------------------------------

    async def CreateBudget(
        self, request: entitlements_pb2.CreateBudgetRequest, context: Ctx
    ) -> entitlements_pb2.Budget:
        customer = convert.resource_id(request.parent, "customers")
        now = self._clock.now()
        budget = budget_from_proto(request.budget, customer=customer)

        def run(conn: Connection) -> tuple[Budget, BudgetStatus | None]:
            created = budgets.create_budget(conn, budget, now=now)
            return created, budgets.status(conn, created, at=now)

        created, status = await self._tx(run)
        await self._hub.notify()  # budgets travel in snapshots
        return budget_to_proto(created, status)

    async def ListBudgets(
        self, request: entitlements_pb2.ListBudgetsRequest, context: Ctx
    ) -> entitlements_pb2.ListBudgetsResponse:
        customer = convert.resource_id(request.parent, "customers") if request.parent else None
        now = self._clock.now()

        def run(conn: Connection) -> list[tuple[Budget, BudgetStatus | None]]:
            found = budgets.list_budgets(conn, customer=customer)
            return [(b, budgets.status(conn, b, at=now)) for b in found]

        items = await self._tx(run)
        chunk, token = page(items, page_size=request.page_size, page_token=request.page_token)
        return entitlements_pb2.ListBudgetsResponse(
            budgets=[budget_to_proto(b, s) for b, s in chunk], next_page_token=token
        )

    async def DeleteBudget(
        self, request: entitlements_pb2.DeleteBudgetRequest, context: Ctx
    ) -> entitlements_pb2.Budget:
        customer, id = _parse(_BUDGET_NAME, request.name, "customers/acme/budgets/ID")
        deleted = await self._tx(lambda c: budgets.delete_budget(c, customer=customer, id=id))
        await self._hub.notify()
        return budget_to_proto(deleted, None)
