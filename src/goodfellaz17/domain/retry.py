"""When a failed or orphaned task may run again: exponential backoff with
full jitter, the one formula for both (the worker's recorded failures and the
rescuer's orphans). Pure: no I/O, no clock; randomness is injectable."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class Orphan:
    """A task found EXECUTING past its lease, as the rescuer locked it."""

    task_id: uuid.UUID
    fencing_token: int
    attempts: int


@dataclass(frozen=True, slots=True)
class OrphanRescue:
    """The rescuer's decision for one orphan: back to the queue after
    `delay_seconds`, or to the dead-letter queue."""

    task_id: uuid.UUID
    fencing_token: int
    dead_letter: bool
    delay_seconds: float


@dataclass(frozen=True, slots=True)
class OrphanPolicy:
    """What becomes of orphans: the same backoff as a recorded failure."""

    backoff: BackoffPolicy

    def rescue(self, orphan: Orphan, rng: random.Random | None = None) -> OrphanRescue:
        if self.backoff.is_exhausted(orphan.attempts):
            return OrphanRescue(orphan.task_id, orphan.fencing_token, True, 0.0)
        delay = self.backoff.delay(orphan.attempts, rng)
        return OrphanRescue(orphan.task_id, orphan.fencing_token, False, delay)

    def rescue_all(
        self, orphans: Sequence[Orphan], rng: random.Random | None = None
    ) -> list[OrphanRescue]:
        return [self.rescue(o, rng) for o in orphans]
