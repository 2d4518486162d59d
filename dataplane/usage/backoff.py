"""Exponential backoff with jitter for reconnecting gRPC streams."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each drawn in [delay/2, delay].

    Equal jitter keeps a floor under the delay (so a flapping control plane is not hammered)
    while spreading many data planes that lost the same control plane at once.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    _current: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        """Return the next delay in seconds and grow the base for the one after."""
        base = self.initial if self._current == 0.0 else self._current
        self._current = min(base * self.multiplier, self.maximum)
        return random.uniform(base / 2, base)

    def reset(self) -> None:
        """Start over from ``initial`` (after a stream worked)."""
        self._current = 0.0
