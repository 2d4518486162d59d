"""The current gateway snapshot and the signal that it may have changed.

Writers call ``notify()`` after committing a change (gateway config, grants, and usage: the
snapshot carries entitlement balances); every config stream waits on ``wait_for_change()``.
Streams also re-check the database every ``poll_seconds`` so that a change committed by
another control-plane replica, new usage and the turn of a usage period reach this replica's
data planes too. A rebuild that gives the same content gives the same version, and streams
only push a version they have not sent, so polling does not resend anything unchanged.
"""

from __future__ import annotations

import asyncio
import logging

from controlplane.clock import Clock, SystemClock
from controlplane.configsync.snapshot import BuiltSnapshot, build_snapshot
from controlplane.entitlements.service import enforcement_state
from controlplane.entitlements.types import ConsumerAccess
from controlplane.gateway import storage as gateway
from controlplane.storage.db import Database

log = logging.getLogger(__name__)


class ConfigHub:
    def __init__(
        self, db: Database, *, poll_seconds: float = 2.0, clock: Clock | None = None
    ) -> None:
        self._db = db
        self._clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        self._generation = 0
        self._changed = asyncio.Condition()
        self._cached: tuple[int, BuiltSnapshot] | None = None
        self._entitlements: list[ConsumerAccess] = []

    def _build(self) -> BuiltSnapshot:
        at = self._clock.now()
        with self._db.begin() as conn:
            config = gateway.load_config(conn)
        try:
            with self._db.begin() as conn:
                self._entitlements = enforcement_state(conn, at=at)
        except Exception:
            # Config sync must not stop over a balance: keep the last good state.
            log.exception("computing entitlement state failed; keeping the last one")
        return build_snapshot(config, self._entitlements)

    async def current(self, *, refresh: bool = False) -> BuiltSnapshot:
        """The snapshot of the stored config (rebuilt after a change, or when asked to)."""
        generation = self._generation
        if refresh or self._cached is None or self._cached[0] != generation:
            built = await asyncio.to_thread(self._build)
            self._cached = (generation, built)
        return self._cached[1]

    async def current_version(self) -> str:
        return (await self.current()).version

    async def notify(self) -> None:
        """Tell every stream the config (or a balance) may have changed."""
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()

    async def wait_for_change(self) -> None:
        """Return after a notify() or after poll_seconds, whichever comes first."""
        async with self._changed:
            generation = self._generation
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._generation != generation),
                    timeout=self.poll_seconds,
                )
            except TimeoutError:
                # Another replica may have changed the database, usage may have arrived:
                # rebuild next time.
                self._generation += 1
