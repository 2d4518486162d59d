"""Bounded retries of Stripe calls that may succeed later (429, 409, 5xx, network)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import stripe

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base_delay * 2**n`` capped at ``max_delay``, ``attempts`` in all.

    The SDK's own ``max_network_retries`` is not used: it does not retry 429 unless Stripe sends
    ``Stripe-Should-Retry: true``, and its sleeps cannot be taken out of tests.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"impossible retry policy: {self}")


def retryable(exc: stripe.StripeError) -> bool:
    """Whether a later identical request (same idempotency key) may succeed."""
    if isinstance(exc, stripe.APIConnectionError):
        return True
    status = exc.http_status
    return status is not None and (status in (409, 429) or status >= 500)


def call_with_retry(
    call: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried while Stripe's error is transient; the last error is raised."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except stripe.StripeError as exc:
            if not retryable(exc) or attempt == policy.attempts:
                raise
            delay = min(policy.base_delay * 2 ** (attempt - 1), policy.max_delay)
            log.warning(
                "Stripe %s failed (HTTP %s), retry %d/%d in %.1fs",
                what,
                exc.http_status,
                attempt,
                policy.attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: attempts >= 1")
