"""When a failed task may run again: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base_seconds: float
    max_seconds: float
    max_attempts: int

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        return min(self.max_seconds, self.base_seconds * (2.0**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, ceiling], so a burst of failures spreads out."""
        return (rng or _RNG).uniform(0.0, self.ceiling(attempt))

    def is_exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
