"""The console's sign-in, sessions and portal tokens, in process with a frozen clock.

The console app runs over the control plane's own servicers (httpx's ASGI transport); the
portal-token API is called over real gRPC. Expiry is tested by moving the clock, not by waiting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import httpx
import pytest

from controlplane.api.auth import Scope, TokenEntry, hash_token
from controlplane.console.app import Console, ConsoleSettings
from meterline.admin.v1 import customers_pb2, gateway_pb2

ADMIN = "mlt_admin-token-for-tests"
READ = "mlt_read-token-for-tests"
TOKENS = [
    TokenEntry(name="ops", scope=Scope.ADMIN, hash=hash_token(ADMIN)),
    TokenEntry(name="viewer", scope=Scope.READ, hash=hash_token(READ)),
]


@pytest.fixture
async def console(harness, walkthrough) -> AsyncIterator[tuple[Console, httpx.AsyncClient]]:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    app = Console(
        servicers=harness.cp.servicers,
        db=harness.cp.db,
        clock=harness.clock,
        tokens=TOKENS,
        settings=ConsoleSettings(secure_cookies=True, session_ttl=timedelta(hours=1)),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as client:
        yield app, client


async def _sign_in(
    client: httpx.AsyncClient, token: str, *, portal: bool = False
) -> httpx.Response:
    path = "/portal/signin" if portal else "/signin"
    form = await client.get(path)
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    return await client.post(path, data={"nonce": nonce.group(1), "token": token})


async def test_session_cookie_is_httponly_strict_secure_and_expires(console, harness, caplog):
    _, client = console
    caplog.set_level(logging.DEBUG)
    signed_in = await _sign_in(client, ADMIN)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/overview"
    cookie = next(
        h for h in signed_in.headers.get_list("set-cookie") if h.startswith("ml_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert ADMIN not in caplog.text  # the token is never logged
    assert (await client.get("/overview.json")).status_code == 200
    # An hour later the session has expired: pages send to sign-in, JSON is 401.
    harness.clock.set(harness.clock.now() + timedelta(hours=1, seconds=1))
    assert (await client.get("/overview.json")).status_code == 401
    page = await client.get("/overview")
    assert page.status_code == 303 and page.headers["location"] == "/signin"


async def test_sign_in_needs_the_forms_nonce_and_a_valid_token(console):
    _, client = console
    await client.get("/signin")
    forged = await client.post("/signin", data={"nonce": "guess", "token": ADMIN})
    assert forged.status_code == 403
    wrong = await _sign_in(client, "mlt_not-a-token")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    # A portal token does not open the operator sign-in (nor an operator token the portal's).
    assert (await _sign_in(client, ADMIN, portal=True)).status_code == 401


async def test_signout_needs_csrf_and_ends_the_session(console):
    _, client = console
    await _sign_in(client, READ)
    page = await client.get("/overview")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    assert (await client.post("/signout", data={})).status_code == 403
    assert (await client.get("/overview.json")).status_code == 200
    assert (await client.post("/signout", data={"csrf": csrf.group(1)})).status_code == 303
    assert (await client.get("/overview.json")).status_code == 401


async def test_expired_portal_token_is_refused(console, harness):
    _, client = console
    created = await harness.customers.CreatePortalToken(
        customers_pb2.CreatePortalTokenRequest(parent="customers/acme", ttl_seconds=3600)
    )
    assert created.token.startswith("mlp_")
    bearer = {"Authorization": f"Bearer {created.token}"}
    assert (await client.get("/portal/customers/acme.json", headers=bearer)).status_code == 200
    assert (await _sign_in(client, created.token, portal=True)).status_code == 303
    assert (await client.get("/portal/customers/acme.json")).status_code == 200
    # At its expiry the token and the session it opened are refused.
    harness.clock.set(harness.clock.now() + timedelta(seconds=3600))
    assert (await client.get("/portal/customers/acme.json", headers=bearer)).status_code == 401
    assert (await client.get("/portal/customers/acme.json")).status_code == 401
    client.cookies.clear()
    assert (await _sign_in(client, created.token, portal=True)).status_code == 401


async def test_portal_token_api_checks_its_input(harness):
    bad = [
        (customers_pb2.CreatePortalTokenRequest(parent="customers/acme"), "ttl_seconds"),
        (
            customers_pb2.CreatePortalTokenRequest(parent="customers/acme", ttl_seconds=31 * 86400),
            "at most 30 days",
        ),
    ]
    for request, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await harness.customers.CreatePortalToken(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await harness.customers.CreatePortalToken(
            customers_pb2.CreatePortalTokenRequest(parent="customers/nobody", ttl_seconds=60)
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await harness.customers.ListPortalTokens(customers_pb2.ListPortalTokensRequest())
    assert list(listed.portal_tokens) == []  # nothing was created by the refused calls


async def test_revoking_a_portal_token(console, harness):
    _, client = console
    created = await harness.customers.CreatePortalToken(
        customers_pb2.CreatePortalTokenRequest(parent="customers/acme", ttl_seconds=600)
    )
    listed = await harness.customers.ListPortalTokens(
        customers_pb2.ListPortalTokensRequest(parent="customers/acme")
    )
    (token,) = listed.portal_tokens
    assert token.token == ""  # only the create answer carries the token
    assert token.name == f"customers/acme/portalTokens/{created.id}"
    # Another customer's name for it is not found; then it is revoked, once.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await harness.customers.RevokePortalToken(
            customers_pb2.RevokePortalTokenRequest(
                name=f"customers/other/portalTokens/{created.id}"
            )
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    revoked = await harness.customers.RevokePortalToken(
        customers_pb2.RevokePortalTokenRequest(name=token.name)
    )
    assert revoked.HasField("revoke_time")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await harness.customers.RevokePortalToken(
            customers_pb2.RevokePortalTokenRequest(name=token.name)
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    bearer = {"Authorization": f"Bearer {created.token}"}
    assert (await client.get("/portal/customers/acme.json", headers=bearer)).status_code == 401


async def test_meter_rows_count_their_events_from_rollups_and_raw_edges(harness):
    # The console counts requests with event_count: it must hold for rollup hours and for
    # the raw events of a span's partial edge hours alike.
    import json

    from meterline.admin.v1 import usage_pb2

    from .conftest import T0

    await harness.usage.CreateMeter(
        usage_pb2.CreateMeterRequest(
            meter=usage_pb2.UsageMeter(
                key="calls",
                event_type="api.request",
                aggregation=usage_pb2.USAGE_METER_AGGREGATION_SUM,
                value_property="$.units",
            )
        )
    )
    minutes = [5, 20, 70, 130, 135]  # two in hour 0, one in hour 1, two in hour 2
    events = [
        json.dumps(
            {
                "specversion": "1.0",
                "id": f"e{m}",
                "source": "app",
                "type": "api.request",
                "subject": "acme",
                "time": (T0 + timedelta(minutes=m)).isoformat().replace("+00:00", "Z"),
                "data": {"units": 10},
            }
        )
        for m in minutes
    ]
    ingested = await harness.usage.IngestEvents(usage_pb2.IngestEventsRequest(events_json=events))
    assert ingested.accepted == 5
    request = usage_pb2.QueryMeterRequest(meter="calls", window_size=usage_pb2.WINDOW_SIZE_HOUR)
    # From 00:10 (a raw edge: only the 00:20 event) to 02:32 (rollup hour 1, raw edge 2:00..).
    request.start_time.FromDatetime(T0 + timedelta(minutes=10))
    request.end_time.FromDatetime(T0 + timedelta(minutes=132))
    rows = (await harness.usage.QueryMeter(request)).rows
    assert [(r.value, r.event_count) for r in rows] == [("10", 1), ("10", 1), ("10", 1)]
    whole = usage_pb2.QueryMeterRequest(meter="calls")
    assert [(r.value, r.event_count) for r in (await harness.usage.QueryMeter(whole)).rows] == [
        ("50", 5)
    ]


async def test_customers_page_and_search_in_the_database(console, harness):
    _, client = console
    for key, name, subject in (
        ("beta", "Beta Labs", "beta_app"),
        ("gamma", "Gamma 100%", "gamma-app"),
        ("delta", "Delta", "shared-BETA-tool"),
    ):
        await harness.customers.CreateCustomer(
            customers_pb2.CreateCustomerRequest(
                customer=customers_pb2.Customer(key=key, display_name=name, subjects=[subject])
            )
        )
    # Paging reads one page at a time, in key order, and ends with an empty token.
    keys, token = [], ""
    while True:
        answer = await harness.customers.ListCustomers(
            customers_pb2.ListCustomersRequest(page_size=2, page_token=token)
        )
        keys.extend(c.key for c in answer.customers)
        token = answer.next_page_token
        if not token:
            break
    assert keys == ["acme", "beta", "delta", "gamma"]
    # Search matches key, name or a subject, case-insensitively; % and _ are literal.
    cases = {"BETA": ["beta", "delta"], "100%": ["gamma"], "a_a": ["beta"], "_": ["beta"], "zz": []}
    for search, expected in cases.items():
        answer = await harness.customers.ListCustomers(
            customers_pb2.ListCustomersRequest(search=search)
        )
        assert [c.key for c in answer.customers] == expected, search
        assert answer.customers[0].subjects if expected else True
    await _sign_in(client, READ)
    page = (await client.get("/customers.json", params={"q": "beta"})).json()
    assert [c["key"] for c in page["customers"]] == ["beta", "delta"]
