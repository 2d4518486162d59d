"""The current gateway snapshot and the signal that it may have changed.

Writers call ``notify()`` after committing a change (gateway config, grants, budgets) and the
usage servicer calls ``usage_stored()`` (the snapshot carries entitlement balances); every
config stream waits on ``wait_for_change()``.
Streams also re-check the database every ``poll_seconds`` so that a change committed by
another control-plane replica, new usage and the turn of a usage period reach this replica's
data planes too. A rebuild that gives the same content gives the same version, and streams
only push a version they have not sent, so polling does not resend anything unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from controlplane.clock import Clock, SystemClock
from controlplane.configsync import registry
from controlplane.configsync.snapshot import BuiltSnapshot, build_snapshot
from controlplane.credits.live import GatewayCredits, gateway_credits
from controlplane.entitlements.service import enforcement_state
from controlplane.entitlements.types import ConsumerAccess
from controlplane.gateway import storage as gateway
from controlplane.gateway.secrets import SecretBox
from controlplane.gateway.types import GatewayConfig
from controlplane.storage.db import Database
from controlplane.tracing import span

log = logging.getLogger(__name__)

# Builds of one current() call when usage keeps arriving during them; the last one is returned
# even if usage arrived during it: its usage_sequence (counted before it read anything) tells
# the data planes to keep counting that usage locally (ConfigResponse.usage_sequence).
BUILD_ROUNDS = 3


def live_dataplanes(conn: Connection, *, at: datetime) -> int:
    """How many data planes hold a config stream now (connected and not stale)."""
    return sum(
        1
        for record in registry.list_records(conn)
        if registry.effective(record, now=at, stale_after=registry.STALE_AFTER).sync_status
        in registry.LIVE
    )


class ConfigHub:
    """One snapshot per change, shared by every stream of this control plane.

    Builds are single-flight: however many streams ask after a change, the snapshot is built
    once (in a worker thread) and they all await that build. The database is re-read at most
    once per ``poll_seconds`` for all streams together, and a poll that finds a different
    version wakes every stream.

    ``balance_slicing``: each build counts the data planes sharing the snapshot (the registry's
    connected, not stale ones) and puts the count in ``Snapshot.balance_slices``, so that each
    data plane admits against its slice of every hard balance (snapshot.proto). A data plane
    that joins or leaves is counted at the next build: the next change or poll.
    """

    def __init__(
        self,
        db: Database,
        *,
        poll_seconds: float = 2.0,
        clock: Clock | None = None,
        balance_slicing: bool = True,
        secrets: SecretBox | None = None,
    ) -> None:
        self._db = db
        # Opens the stored provider keys: the snapshot carries them in plaintext.
        self._secrets = secrets
        self.balance_slicing = balance_slicing
        self._clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        # Bumped when the stored state may differ from the cached snapshot.
        self._generation = 0
        # Bumped when streams should look again (a change, or a poll that found one).
        self._wake = 0
        self._changed = asyncio.Condition()
        self._cached: tuple[int, BuiltSnapshot] | None = None
        self._building: tuple[int, asyncio.Future[BuiltSnapshot]] | None = None
        self._last_poll = time.monotonic()
        self._entitlements: list[ConsumerAccess] = []
        # Customer -> live credits (controlplane.credits.live), read with the entitlements:
        # all of them when the config generation moved (a change, a poll), else only those of
        # customers whose subjects' usage was stored since the last build (each is an invoice
        # preview). Guarded by _dirty_lock: stores mark subjects from the event loop while a
        # build reads them in a worker thread.
        self._credits: dict[str, GatewayCredits] = {}
        self._dirty_lock = threading.Lock()
        self._dirty_subjects: set[str] = set()
        self._credits_generation: int | None = None
        # Usage stores of this process, counted (mark_stored): a build records the count
        # before it reads anything, so the data planes know which ACKed batches a snapshot
        # reflects (ConfigResponse.usage_sequence); the epoch tells processes apart.
        self.usage_epoch = uuid.uuid4().hex
        self.usage_sequence = 0
        # Stores begun (store_begun) and ended (mark_stored / store_ended), under _dirty_lock:
        # a build during which none was in flight holds exactly the stores it counts.
        self._stores_begun = 0
        self._stores_ended = 0
        # Data planes sharing the snapshot at the last build (0: slicing off).
        self._slices = 0
        # Bumped when the gateway config itself may have changed (not by usage): a rebuild
        # for new usage reuses the config loaded last and re-reads only the balances.
        self._config_generation = 0
        self._loaded: tuple[int, GatewayConfig] | None = None
        # The inputs of the last build and its result: the same inputs give the same snapshot.
        self._last_build: (
            tuple[
                GatewayConfig, list[ConsumerAccess], dict[str, GatewayCredits], int, BuiltSnapshot
            ]
            | None
        ) = None

    def _build(self) -> BuiltSnapshot:
        # Before any read: every store counted up to here is committed and visible to them.
        with self._dirty_lock:
            sequence = self.usage_sequence
            ended = self._stores_ended
        built = self._build_reading(sequence)
        with self._dirty_lock:
            # Exact when every store begun by now had ended before the reads began.
            exact = self._stores_begun == ended
        if built.exact != exact:
            built = replace(built, exact=exact)
        return built

    def _build_reading(self, sequence: int) -> BuiltSnapshot:
        at = self._clock.now()
        config_generation = self._config_generation
        loaded = self._loaded
        if loaded is not None and loaded[0] == config_generation:
            config = loaded[1]
        else:
            with self._db.begin() as conn:
                config = gateway.load_config(conn, secrets=self._secrets)
            self._loaded = (config_generation, config)
        try:
            with self._db.begin() as conn:
                self._entitlements = enforcement_state(conn, at=at)
        except Exception:
            # Config sync must not stop over a balance: keep the last good state.
            log.exception("computing entitlement state failed; keeping the last one")
        self._read_credits(at, config_generation)
        if self.balance_slicing:
            try:
                with self._db.begin() as conn:
                    self._slices = live_dataplanes(conn, at=at)
            except Exception:
                log.exception("counting the data planes failed; keeping the last count")
        else:
            self._slices = 0
        entitlements, credits, slices = self._entitlements, self._credits, self._slices
        last = self._last_build
        if (
            last is not None
            and last[0] is config
            and last[3] == slices
            and last[1] == entitlements
            and last[2] == credits
        ):
            # New usage that moved no balance (or no consumer has any): nothing to rebuild.
            same = last[4]
            return (
                same if same.usage_sequence == sequence else replace(same, usage_sequence=sequence)
            )
        with span("config.snapshot_build") as current:
            built = build_snapshot(config, entitlements, balance_slices=slices, credits=credits)
            built = replace(built, usage_sequence=sequence)
            current.set_attribute("meterline.config.version", built.version)
        self._last_build = (config, entitlements, credits, slices, built)
        return built

    def _read_credits(self, at: datetime, config_generation: int) -> None:
        with self._dirty_lock:
            dirty, self._dirty_subjects = self._dirty_subjects, set()
            everything = self._credits_generation != config_generation
        try:
            with self._db.begin() as conn:
                if everything:
                    self._credits = gateway_credits(conn, at=at)
                    self._credits_generation = config_generation
                elif dirty:
                    customers = {a.customer for a in self._entitlements if a.subject in dirty}
                    fresh = gateway_credits(conn, at=at, customers=customers)
                    credits = {k: v for k, v in self._credits.items() if k not in customers}
                    self._credits = credits | fresh
        except Exception:
            # Config sync must not stop over a balance: keep the last good state, and read
            # everything at the next build.
            log.exception("computing live credit balances failed; keeping the last ones")
            self._credits_generation = None

    async def current(self, *, refresh: bool = False) -> BuiltSnapshot:
        """The snapshot of the stored config (rebuilt after a change, or when asked to).

        A build that usage was stored during (``mark_stored``) may lack that usage although
        its ACK is on its way: it is built again (up to BUILD_ROUNDS times), so a data plane
        that applies a snapshot after an ACK finds the ACKed usage in it, and drops it from its
        local counters only then (dataplane/admission/entitlements.py). Whatever is returned,
        its ``usage_sequence`` says which stores it reflects, so no usage is ever dropped
        from a data plane's counters before a snapshot holds it.
        """
        if refresh:
            self._generation += 1
            self._config_generation += 1
        for _ in range(BUILD_ROUNDS):
            generation = self._generation
            cached = self._cached
            if cached is not None and cached[0] == generation:
                return cached[1]
            building = self._building
            if building is None or building[0] != generation:
                future = asyncio.ensure_future(asyncio.to_thread(self._build))
                building = self._building = (generation, future)
            built = await asyncio.shield(building[1])
            if self._building is building:
                self._building = None
            cached = self._cached
            if cached is None or cached[0] < generation:
                self._cached = (generation, built)
                if cached is not None and cached[1].version != built.version:
                    # A poll (or a change seen by one stream) found new content: tell the rest.
                    async with self._changed:
                        self._wake += 1
                        self._changed.notify_all()
            if self._generation == generation:
                break
        return built

    def mark_stored(self, subjects: Iterable[str] | None = None) -> int:
        """Usage was just committed and is about to be ACKed: builds begun before are stale.

        ``subjects``: whose usage it was (their customers' credits are read again at the next
        build); None: anyone's (every customer's credits are). Unlike notify(), wakes no stream
        (the usage servicer notifies, coalesced, later). Returns the store's usage_sequence
        (for its ACK): a snapshot whose build began with at least this count reflects it.
        """
        with self._dirty_lock:
            if subjects is None:
                self._credits_generation = None
            else:
                self._dirty_subjects.update(subjects)
            self._generation += 1
            self.usage_sequence += 1
            return self.usage_sequence

    def store_begun(self) -> None:
        """A usage store is about to write; store_ended follows it (after its mark_stored, if
        it stored anything), whatever happened. A build that a store overlaps is not exact."""
        with self._dirty_lock:
            self._stores_begun += 1

    def store_ended(self) -> None:
        with self._dirty_lock:
            self._stores_ended += 1

    async def current_version(self) -> str:
        return (await self.current()).version

    async def notify(self) -> None:
        """Tell every stream the config (or a balance) may have changed."""
        self._config_generation += 1
        await self.usage_stored()

    async def usage_stored(self) -> None:
        """Tell every stream that balances may have moved (the gateway config has not)."""
        async with self._changed:
            self._generation += 1
            self._wake += 1
            self._changed.notify_all()

    async def wait_for_change(self) -> None:
        """Return after a notify() or after poll_seconds, whichever comes first."""
        async with self._changed:
            wake = self._wake
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._wake != wake),
                    timeout=self.poll_seconds,
                )
            except TimeoutError:
                # Another replica may have changed the database, usage may have arrived, a
                # period may have turned: re-read, once per interval for all streams.
                now = time.monotonic()
                if now - self._last_poll >= self.poll_seconds * 0.9:
                    self._last_poll = now
                    self._generation += 1
                    self._config_generation += 1
