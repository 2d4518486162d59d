"""The balance of a metered entitlement: pure burn-down of usage against limit and grants.

No clock, no I/O. Evaluating a balance takes two steps so that storage stays outside:
:func:`timeline` says at which instants usage must be split (period starts, grant effective,
expiry, void and recurrence times), the caller sums the usage of each segment, and
:func:`evaluate` replays the segments in order:

- at a usage period start the limit is credited afresh (what was left of the previous
  period's limit is lost) and, with ``preserve_overage_at_reset``, the previous period's
  overage is burnt first, as if it were usage at the start of the new period;
- usage burns the limit first, then grants by priority (lower first), expiration (sooner
  first, never-expiring last), effective time and id; usage nothing covers is overage;
- a credit (a grant becoming effective, a recurrence) pays off overage before it adds to the
  balance; at a recurrence a grant's remaining balance is lost and it gets ``amount`` again;
- at its expiration or void time a grant's remaining balance is lost.

Usage within a segment is a sum: no credit or expiry happens inside a segment, so its order
does not matter. The last segment runs to the end of the current period, so usage stamped
slightly ahead of ``at`` (a data plane's clock) is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.catalog.types import Entitlement, EntitlementType
from controlplane.entitlements.types import Balance, Grant
from controlplane.errors import InvalidArgument
from controlplane.subscriptions.periods import add_cadence, billing_period, parse_cadence

_LIMIT = "\x00limit"  # the bucket of the period's limit; sorts apart from grant ids


@dataclass(frozen=True)
class Timeline:
    """Segments ``[boundaries[i], boundaries[i+1])``; the last ends at ``period_end``."""

    boundaries: tuple[datetime, ...]
    period_starts: frozenset[datetime]
    period_start: datetime
    period_end: datetime

    def segments(self) -> list[tuple[datetime, datetime]]:
        ends = (*self.boundaries[1:], self.period_end)
        return list(zip(self.boundaries, ends, strict=True))


def _metered(entitlement: Entitlement) -> tuple[int, str]:
    if (
        entitlement.type is not EntitlementType.METERED
        or entitlement.limit is None
        or entitlement.usage_period is None
    ):
        raise InvalidArgument("a balance needs a metered entitlement with a limit and a period")
    return entitlement.limit, entitlement.usage_period


def _relevant(grants: Sequence[Grant], at: datetime) -> list[Grant]:
    """Grants that exist at ``at`` and were ever active (a grant voided before it starts never
    counts)."""
    return [
        g
        for g in grants
        if g.effective_time <= at and (g.end_time is None or g.end_time > g.effective_time)
    ]


def _period_starts(anchor: datetime, cadence: str, lo: datetime, hi: datetime) -> list[datetime]:
    """Usage period starts (``anchor + k * cadence``) in ``[lo, hi]``."""
    start, end = billing_period(anchor=anchor, cadence=cadence, at=max(lo, anchor))
    starts: list[datetime] = []
    while start <= hi:
        if start >= lo:
            starts.append(start)
        start, end = billing_period(anchor=anchor, cadence=cadence, at=end)
    return starts


def _recurrences(grant: Grant, lo: datetime, hi: datetime) -> list[datetime]:
    """Recurrence instants of ``grant`` (after its first credit) in ``(lo, hi]``."""
    if grant.recurrence_interval is None:
        return []
    step = parse_cadence(grant.recurrence_interval)
    end = grant.end_time
    found: list[datetime] = []
    k = 1
    while True:
        moment = add_cadence(grant.effective_time, step.times(k))
        if moment > hi or (end is not None and moment >= end):
            return found
        if moment > lo:
            found.append(moment)
        k += 1


def timeline(
    *, entitlement: Entitlement, anchor: datetime, grants: Sequence[Grant], at: datetime
) -> Timeline:
    """Where usage must be split to evaluate the balance at ``at`` (``anchor`` <= ``at``).

    The replay starts at the current period's start, or at the subscription start
    (``anchor``) with ``preserve_overage_at_reset``; earlier if a grant that still matters
    became effective before, because its remaining balance depends on the usage since.
    """
    _, cadence = _metered(entitlement)
    period_start, period_end = billing_period(anchor=anchor, cadence=cadence, at=at)
    start = anchor if entitlement.preserve_overage_at_reset else period_start
    relevant = _relevant(grants, at)
    moved = True
    while moved:
        moved = False
        for grant in relevant:
            end = grant.end_time
            if grant.effective_time < start and start > anchor and (end is None or end > start):
                start, _ = billing_period(anchor=anchor, cadence=cadence, at=grant.effective_time)
                moved = True
    starts = _period_starts(anchor, cadence, start, at)
    instants = set(starts) | {start}
    for grant in relevant:
        end = grant.end_time
        if grant.effective_time > start:
            instants.add(grant.effective_time)
        if end is not None and start < end <= at:
            instants.add(end)
        instants.update(_recurrences(grant, start, at))
    return Timeline(
        boundaries=tuple(sorted(instants)),
        period_starts=frozenset(starts) | {start},
        period_start=period_start,
        period_end=period_end,
    )


def _order(grant: Grant) -> tuple[int, int, datetime, datetime, str]:
    end = grant.expiration_time
    # Never-expiring grants burn after every expiring one of the same priority.
    never = 0 if end is not None else 1
    return (grant.priority, never, end or grant.effective_time, grant.effective_time, grant.id)


def evaluate(
    *,
    entitlement: Entitlement,
    anchor: datetime,
    grants: Sequence[Grant],
    at: datetime,
    line: Timeline,
    usage: Sequence[int],
) -> Balance:
    """Replay ``usage`` (one sum per segment of ``line``) and return the balance at ``at``."""
    limit, _ = _metered(entitlement)
    segments = line.segments()
    if len(usage) != len(segments):
        raise InvalidArgument(f"{len(segments)} usage sums needed, got {len(usage)}")
    if any(u < 0 for u in usage):
        raise InvalidArgument("usage must not be negative")
    relevant = sorted(_relevant(grants, at), key=_order)
    first = line.boundaries[0]
    state = _Buckets(burn_order=[_LIMIT, *(g.id for g in relevant)])
    for (seg_start, _seg_end), used in zip(segments, usage, strict=True):
        for grant in relevant:
            if grant.end_time == seg_start:
                state.lose(grant.id)
        if seg_start in line.period_starts:
            preserve = entitlement.preserve_overage_at_reset and seg_start != first
            state.reset(limit, owed=state.debt if preserve else 0)
        for grant in relevant:
            if grant.effective_time == seg_start or (
                seg_start == first and grant.effective_time < first and grant.active_at(first)
            ):
                state.credit(grant.id, grant.amount)
            elif grant.recurrence_interval is not None and seg_start in _recurrences(
                grant, grant.effective_time, seg_start
            ):
                state.lose(grant.id)
                state.credit(grant.id, grant.amount)
        state.usage += used
        state.burn(used)
    return Balance(
        period_start=line.period_start,
        period_end=line.period_end,
        usage=state.usage,
        balance=sum(state.buckets.values()),
        overage=state.debt,
        granted=state.granted,
        expired=state.expired,
        carried_overage=state.carried,
    )


@dataclass
class _Buckets:
    """What one replay moves: a balance per grant (and the period's limit), the debt usage
    beyond every balance runs up, and the period's counters."""

    # The limit first, then grants in burn order (_order).
    burn_order: list[str]
    buckets: dict[str, int] = field(default_factory=dict)
    debt: int = 0
    usage: int = 0
    granted: int = 0
    expired: int = 0
    carried: int = 0

    def credit(self, key: str, amount: int) -> None:
        """``amount`` into ``key``'s bucket, paying the debt first."""
        self.granted += amount
        paid = min(self.debt, amount)
        self.debt -= paid
        self.buckets[key] = self.buckets.get(key, 0) + amount - paid

    def burn(self, amount: int) -> None:
        """``amount`` out of the buckets in burn order; what none holds becomes debt."""
        for key in self.burn_order:
            if amount == 0:
                return
            have = self.buckets.get(key, 0)
            take = min(have, amount)
            if take:
                self.buckets[key] = have - take
                amount -= take
        self.debt += amount

    def lose(self, key: str) -> None:
        """``key``'s bucket expires."""
        self.expired += self.buckets.pop(key, 0)

    def reset(self, limit: int, *, owed: int) -> None:
        """A new usage period: counters from zero, the limit afresh, ``owed`` carried over."""
        self.buckets.pop(_LIMIT, None)
        self.debt = 0
        self.usage = self.expired = self.carried = 0
        self.granted = sum(self.buckets.values())  # grants' balances brought into the period
        self.credit(_LIMIT, limit)
        self.carried = owed
        self.burn(owed)


def metered_access(entitlement: Entitlement, balance: Balance) -> bool:
    """Soft limits always allow; hard ones while some balance is left."""
    return entitlement.soft_limit or balance.balance > 0
