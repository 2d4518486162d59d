"""The config hub: what a rebuild re-reads after usage, after a config change, after a poll."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.clock import FrozenClock
from controlplane.configsync.hub import ConfigHub
from controlplane.declarative.apply import apply_document
from controlplane.gateway import storage as gateway
from controlplane.storage.db import Database
from controlplane.usage import storage as usage
from controlplane.usage.types import TokenType, UsageEvent
from support.documents import gateway_document

from .conftest import T0

CONSUMERS = {"acme-corp": "acme-secret-key", "free-rider": "free-secret-key"}
GATEWAY = gateway_document("http://127.0.0.1:9", CONSUMERS)

BILLING = """\
billing:
  features:
    - {key: ai-token, meter: llm_tokens, filters: {provider: openai, type: input}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: ai-token
          price: {type: unit, amount: "0.000001"}
          entitlement: {type: metered, limit: 1000, usage_period: P1M, soft_limit: false}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def db(migrated_db_url: str) -> Iterator[Database]:
    database = Database.connect(migrated_db_url)
    yield database
    database.dispose()


def _store(db: Database, clock: FrozenClock, *, subject: str, tokens: int, id: str) -> None:
    event = UsageEvent(
        id=id,
        source="dp-test",
        type="llm.tokens",
        subject=subject,
        time=clock.now(),
        provider="openai",
        model="gpt-4o-mini",
        token_type=TokenType.INPUT,
        tokens=tokens,
        status_code=200,
    )
    with db.begin() as conn:
        assert usage.insert_events(conn, [event], ingest_time=clock.now()).accepted == 1


def _balance(snapshot: object) -> int:
    (entry,) = snapshot.snapshot.consumer_entitlements  # type: ignore[attr-defined]
    (metered,) = entry.metered
    return int(metered.balance)


def _consumers(snapshot: object) -> list[str]:
    return sorted(c.username for c in snapshot.snapshot.consumers)  # type: ignore[attr-defined]


async def test_usage_without_balances_reuses_the_snapshot(db, clock, monkeypatch) -> None:
    # Given a gateway whose consumers have no subscription (nothing in the snapshot moves
    # with usage) and a snapshot built once
    apply_document(db, text=GATEWAY, now=clock.now())
    hub = ConfigHub(db, poll_seconds=60, clock=clock, balance_slicing=False)
    first = await hub.current()
    loads: list[int] = []
    load_config = gateway.load_config
    monkeypatch.setattr(
        gateway, "load_config", lambda conn, **kw: loads.append(1) or load_config(conn, **kw)
    )
    # When usage is stored, again and again
    for n in range(3):
        _store(db, clock, subject="acme-corp", tokens=10, id=f"e{n}")
        await hub.usage_stored()
        again = await hub.current()
        # Then the gateway config is not read again and the very same snapshot is served
        assert again is first
    assert loads == []


async def test_usage_moves_balances_without_reloading_the_config(db, clock, monkeypatch) -> None:
    # Given a consumer with a metered entitlement of 1,000 tokens
    apply_document(db, text=GATEWAY + BILLING, now=clock.now())
    hub = ConfigHub(db, poll_seconds=60, clock=clock, balance_slicing=False)
    first = await hub.current()
    assert _balance(first) == 1000
    loads: list[int] = []
    load_config = gateway.load_config
    monkeypatch.setattr(
        gateway, "load_config", lambda conn, **kw: loads.append(1) or load_config(conn, **kw)
    )
    # When 300 tokens are stored, the next snapshot carries the new balance...
    _store(db, clock, subject="acme-corp", tokens=300, id="e1")
    await hub.usage_stored()
    second = await hub.current()
    assert _balance(second) == 700 and second.version != first.version
    # ...from the config loaded before (usage does not change routes or consumers)
    assert loads == []
    # and a mark_stored (usage committed, ACK on its way) alone rebuilds balances the same way
    _store(db, clock, subject="acme-corp", tokens=200, id="e2")
    hub.mark_stored()
    assert _balance(await hub.current()) == 500 and loads == []


async def test_a_config_change_is_read_after_notify_and_after_a_poll(db, clock) -> None:
    # Given a built snapshot
    apply_document(db, text=GATEWAY, now=clock.now())
    hub = ConfigHub(db, poll_seconds=0.05, clock=clock, balance_slicing=False)
    assert _consumers(await hub.current()) == ["acme-corp", "free-rider"]

    def with_consumer(name: str) -> str:
        return gateway_document("http://127.0.0.1:9", {**CONSUMERS, name: f"{name}-key"})

    # When another replica adds a consumer (written to the database, no notify here),
    # usage arriving does not make this replica re-read the gateway config...
    apply_document(db, text=with_consumer("late-comer"), now=clock.now())
    await hub.usage_stored()
    assert "late-comer" not in _consumers(await hub.current())
    # ...the next poll does.
    await hub.wait_for_change()
    assert "late-comer" in _consumers(await hub.current())
    # And a change made through this replica (notify) is read at once.
    apply_document(db, text=with_consumer("next-one"), now=clock.now())
    await hub.notify()
    assert "next-one" in _consumers(await hub.current())


async def test_a_store_during_a_build_makes_it_inexact_until_a_build_after_it(
    db, clock, monkeypatch
) -> None:
    # Given a consumer with a 1,000-token balance, and a usage store that commits while a
    # build reads the balances (begun before the read, ACKed after the build took its count)
    apply_document(db, text=GATEWAY + BILLING, now=clock.now())
    hub = ConfigHub(db, poll_seconds=60, clock=clock, balance_slicing=False)
    first = await hub.current()
    assert first.exact and _balance(first) == 1000
    import controlplane.configsync.hub as hub_module

    read = hub_module.enforcement_state
    overlapped: list[int] = []

    def store_while_reading(conn, **kw):
        if not overlapped:
            hub.store_begun()
            _store(db, clock, subject="acme-corp", tokens=300, id="e1")
            overlapped.append(1)
        return read(conn, **kw)

    monkeypatch.setattr(hub_module, "enforcement_state", store_while_reading)
    await hub.usage_stored()
    loose = await hub.current()
    # Then the snapshot holds the 300 tokens although its sequence does not count that store:
    # it says it is not exact (a config stream sends the next build even if it is the same)
    assert _balance(loose) == 700 and loose.usage_sequence == 0 and not loose.exact
    sequence = hub.mark_stored({"acme-corp"})
    hub.store_ended()
    after = await hub.current()
    # and the next build, with no store in flight, is exact and counts the store
    assert after.version == loose.version and after.usage_sequence == sequence == 1
    assert after.exact
    # A store in flight (begun, not ended) at the start of a build also makes it inexact.
    hub.store_begun()
    await hub.usage_stored()
    assert not (await hub.current()).exact
    hub.store_ended()
    await hub.usage_stored()
    assert (await hub.current()).exact
