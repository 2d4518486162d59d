"""Console sessions shared by control-plane replicas on one database (SQLite file, PostgreSQL).

Two control planes run on the same database, each with its own engine, clock and console app:
a cookie one of them issued works on the other, a sign-out on either ends it on both, and the
database holds only hashes of session ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from controlplane.api.auth import Scope, TokenEntry, hash_token
from controlplane.console import sessions
from controlplane.console.app import Console, ConsoleSettings
from controlplane.storage import schema as s
from meterline.admin.v1 import customers_pb2, gateway_pb2

from .conftest import Harness, running_harness

ADMIN = "mlt_admin-token-for-replicas"
READ = "mlt_read-token-for-replicas"
TOKENS = [
    TokenEntry(name="ops", scope=Scope.ADMIN, hash=hash_token(ADMIN)),
    TokenEntry(name="viewer", scope=Scope.READ, hash=hash_token(READ)),
]


@dataclass
class Replica:
    harness: Harness
    console: Console
    client: httpx.AsyncClient


@pytest.fixture
async def replicas(db_url: str, walkthrough: str) -> AsyncIterator[tuple[Replica, Replica]]:
    async with AsyncExitStack() as stack:
        made = []
        for _ in range(2):
            harness = await stack.enter_async_context(running_harness(db_url))
            console = Console(
                servicers=harness.cp.servicers,
                db=harness.cp.db,
                clock=harness.clock,
                tokens=list(TOKENS),
                settings=ConsoleSettings(session_ttl=timedelta(hours=2)),
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=console), base_url="http://console.test"
                )
            )
            made.append(Replica(harness, console, client))
        await made[0].harness.gateway.ApplyConfig(
            gateway_pb2.ApplyConfigRequest(document=walkthrough)
        )
        yield made[0], made[1]


async def _sign_in(client: httpx.AsyncClient, token: str, *, portal: bool = False) -> str:
    """Signs in; returns the session cookie's value."""
    path = "/portal/signin" if portal else "/signin"
    form = await client.get(path)
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    response = await client.post(path, data={"nonce": nonce.group(1), "token": token})
    assert response.status_code == 303
    cookie = client.cookies.get("ml_session")
    assert cookie
    return cookie


async def _csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/overview")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_a_cookie_from_one_replica_works_on_the_other_and_signout_ends_it_on_both(replicas):
    a, b = replicas
    cookie = await _sign_in(a.client, ADMIN)
    b.client.cookies.set("ml_session", cookie)
    assert (await a.client.get("/overview.json")).status_code == 200
    assert (await b.client.get("/overview.json")).status_code == 200
    # The CSRF token shown by one replica is the session's, accepted by the other.
    csrf = await _csrf(a.client)
    assert await _csrf(b.client) == csrf
    # Only the hash of the session id is stored.
    with a.harness.cp.db.begin() as conn:
        rows = conn.execute(select(s.console_sessions)).all()
    assert [r.id_hash for r in rows] == ["sha256:" + hashlib.sha256(cookie.encode()).hexdigest()]
    assert (rows[0].kind, rows[0].name, rows[0].scope) == ("operator", "ops", "admin")
    # A wrong CSRF token is refused on either; the right one signs out on B, and A forgets too.
    assert (await b.client.post("/signout", data={"csrf": "guess"})).status_code == 403
    assert (await b.client.post("/signout", data={"csrf": csrf})).status_code == 303
    assert (await a.client.get("/overview.json")).status_code == 401
    page = await a.client.get("/overview")
    assert page.status_code == 303 and page.headers["location"] == "/signin"
    with a.harness.cp.db.begin() as conn:
        assert conn.execute(select(s.console_sessions)).all() == []


async def test_a_read_session_stays_read_on_the_other_replica(replicas):
    a, b = replicas
    b.client.cookies.set("ml_session", await _sign_in(a.client, READ))
    csrf = await _csrf(b.client)
    refused = await b.client.post(
        "/customers", data={"csrf": csrf, "key": "newco", "name": "New Co"}
    )
    assert refused.status_code == 403


async def test_sessions_expire_on_every_replica_and_are_deleted(replicas):
    a, b = replicas
    b.client.cookies.set("ml_session", await _sign_in(a.client, ADMIN))
    # (Whole hours: the overview's usage query at a time within an hour is another matter.)
    for replica in (a, b):
        replica.harness.clock.set(replica.harness.clock.now() + timedelta(hours=1))
    assert (await b.client.get("/overview.json")).status_code == 200
    b.harness.clock.set(b.harness.clock.now() + timedelta(hours=1))
    assert (await b.client.get("/overview.json")).status_code == 401
    # B deleted the expired row: A (whose clock is an hour behind) refuses it too.
    assert (await a.client.get("/overview.json")).status_code == 401
    assert a.console.sessions.count() == 0


async def test_an_operator_token_gone_from_a_replicas_tokens_file_ends_its_sessions(replicas):
    a, b = replicas
    b.client.cookies.set("ml_session", await _sign_in(a.client, ADMIN))
    b.console.tokens = [TOKENS[1]]  # "ops" removed from B's tokens file
    assert (await b.client.get("/overview.json")).status_code == 401
    assert (await a.client.get("/overview.json")).status_code == 401
    # A scope changed under the same name does not carry an old session's rights either.
    b.client.cookies.clear()
    a.client.cookies.clear()
    b.client.cookies.set("ml_session", await _sign_in(a.client, ADMIN))
    b.console.tokens = [TokenEntry(name="ops", scope=Scope.READ, hash=hash_token(ADMIN))]
    assert (await b.client.get("/overview.json")).status_code == 401


async def test_a_revoked_portal_token_ends_its_session_on_both_replicas(replicas):
    a, b = replicas
    created = await a.harness.customers.CreatePortalToken(
        customers_pb2.CreatePortalTokenRequest(parent="customers/acme", ttl_seconds=3600)
    )
    cookie = await _sign_in(a.client, created.token, portal=True)
    b.client.cookies.set("ml_session", cookie)
    assert (await b.client.get("/portal/customers/acme.json")).status_code == 200
    assert (await b.client.get("/portal/customers/other.json")).status_code == 404
    assert (await b.client.get("/overview.json")).status_code == 403
    await b.harness.customers.RevokePortalToken(
        customers_pb2.RevokePortalTokenRequest(name=created.name)
    )
    assert (await a.client.get("/portal/customers/acme.json")).status_code == 401
    assert (await b.client.get("/portal/customers/acme.json")).status_code == 401


async def test_stored_sessions_are_bounded_oldest_first(replicas, monkeypatch):
    a, b = replicas
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    cookies = []
    for _ in range(5):
        a.client.cookies.clear()
        cookies.append(await _sign_in(a.client, READ))
        a.harness.clock.set(a.harness.clock.now() + timedelta(minutes=10))
    assert a.console.sessions.count() == 3
    b.client.cookies.clear()
    b.harness.clock.set(b.harness.clock.now() + timedelta(hours=1))
    live = []
    for cookie in cookies:
        b.client.cookies.set("ml_session", cookie)
        live.append((await b.client.get("/overview.json")).status_code == 200)
    assert live == [False, False, True, True, True]
