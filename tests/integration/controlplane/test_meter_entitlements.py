"""Metered entitlements on features of operator meters count their own meter and filters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from meterline.admin.v1 import (
    entitlements_pb2,
    entitlements_pb2_grpc,
    gateway_pb2,
    usage_pb2,
)

from .conftest import T0, Harness

PLAN = f"""\
_format_version: "3.0"
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: acme-secret-key}}]
billing:
  meters:
    - {{key: api_calls, event_type: api.request, value_property: $.units, aggregation: SUM,
       group_by: {{region: $.region}}}}
    - {{key: seats, event_type: seats, value_property: $.seats, aggregation: MAX}}
  features:
    - {{key: eu-calls, meter: api_calls, filters: {{region: eu}}}}
    - {{key: peak-seats, meter: seats}}
    - {{key: tokens, meter: llm_tokens}}
  plans:
    - key: team
      name: Team
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: eu-calls
          entitlement: {{type: metered, limit: 10, usage_period: P1M, soft_limit: false}}
        - feature: peak-seats
          entitlement: {{type: metered, limit: 5, usage_period: P1M, soft_limit: true}}
        - feature: tokens
          entitlement: {{type: metered, limit: 1000, usage_period: P1M}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: team, start: "{T0.isoformat()}"}}
"""


@pytest.fixture
async def ent(harness: Harness) -> AsyncIterator[entitlements_pb2_grpc.EntitlementServiceStub]:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        yield entitlements_pb2_grpc.EntitlementServiceStub(channel)


def event(id: str, *, at: datetime, type: str = "api.request", **data: object) -> str:
    return json.dumps(
        {
            "id": id,
            "source": "app",
            "type": type,
            "subject": "acme-corp",
            "time": at.isoformat().replace("+00:00", "Z"),
            "data": data,
        }
    )


async def balances(
    ent: entitlements_pb2_grpc.EntitlementServiceStub,
) -> dict[str, tuple[int, int, int, int, bool]]:
    response = await ent.ListEntitlements(
        entitlements_pb2.ListEntitlementsRequest(customer="customers/acme")
    )
    return {
        v.feature: (v.usage, v.balance, v.overage, v.granted, v.has_access)
        for v in response.entitlements
    }


async def test_entitlements_on_operator_meters_count_their_meter_in_whole_units(
    harness: Harness, ent: entitlements_pb2_grpc.EntitlementServiceStub
) -> None:
    # Given a plan with metered entitlements on a SUM meter (eu only), a MAX meter and tokens
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=PLAN))
    day = T0 + timedelta(days=1)
    harness.clock.set(day + timedelta(hours=1))

    # When 3.5 + 4 eu units (and 100 us units the feature filters out) arrive, and seats
    # readings of 3, 6 and 4
    await harness.usage.IngestEvents(
        usage_pb2.IngestEventsRequest(
            events_json=[
                event("c1", at=day, units="3.5", region="eu"),
                event("c2", at=day + timedelta(minutes=1), units=4, region="eu"),
                event("c3", at=day, units=100, region="us"),
                event("s1", at=day, type="seats", seats=3),
                event("s2", at=day + timedelta(minutes=1), type="seats", seats=6),
                event("s3", at=day + timedelta(minutes=2), type="seats", seats=4),
            ]
        )
    )

    # Then each counts its own meter: 7.5 eu units are 8 started units of 10; the seats' peak
    # is 6 of 5 (soft: still allowed); tokens are untouched
    assert await balances(ent) == {
        "eu-calls": (8, 2, 0, 10, True),
        "peak-seats": (6, 0, 1, 5, True),
        "tokens": (0, 1000, 0, 1000, True),
    }

    # When a grant of 5 units starts, and 2.6 more eu units arrive after it
    await ent.CreateGrant(
        entitlements_pb2.CreateGrantRequest(
            parent="customers/acme",
            grant=entitlements_pb2.Grant(
                feature="eu-calls", amount=5, effective_time=to_timestamp(day + timedelta(hours=2))
            ),
        )
    )
    harness.clock.set(day + timedelta(hours=4))
    await harness.usage.IngestEvents(
        usage_pb2.IngestEventsRequest(
            events_json=[event("c4", at=day + timedelta(hours=3), units="2.6", region="eu")]
        )
    )

    # Then the period's 10.1 units are 11 started units: 8 before the grant, 3 after it
    # (burning the limit's last 2, then 1 of the grant): 4 left
    assert (await balances(ent))["eu-calls"] == (11, 4, 0, 15, True)

    # When 4 more eu units arrive: 14.1 -> 15, the limit and the grant are spent; hard limit
    await harness.usage.IngestEvents(
        usage_pb2.IngestEventsRequest(
            events_json=[event("c5", at=day + timedelta(hours=3), units=4, region="eu")]
        )
    )
    assert (await balances(ent))["eu-calls"] == (15, 0, 0, 15, False)

    # And the next usage period starts afresh (the grant never expires: 0 of it is left)
    harness.clock.set(T0 + timedelta(days=31))
    assert (await balances(ent))["eu-calls"] == (0, 10, 0, 10, True)

    # And the data planes enforce only what they meter themselves: the token entitlement
    snapshot = (await harness.cp.hub.current(refresh=True)).snapshot
    (corp,) = snapshot.consumer_entitlements
    assert [m.feature for m in corp.metered] == ["tokens"]
