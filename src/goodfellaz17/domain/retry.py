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
    """A task found EXECUTING past its lease, as the rescuer locked it:
    `attempts` still counts the lost claim, `orphanings` the earlier losses."""

    task_id: uuid.UUID
    fencing_token: int
    attempts: int
    orphanings: int


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
    """What becomes of orphans. A worker crash is not a delivery failure: the
    lost claim's attempt is refunded (by the rescue statement) and the
    orphaning counts against its own budget, `max_orphanings`; a task that
    keeps killing its workers (a poison pill) is dead-lettered once it is
    spent. The wait before the next try is the one backoff formula, counted
    over every try so far that delivered nothing."""

    backoff: BackoffPolicy
    max_orphanings: int

    def rescue(self, orphan: Orphan, rng: random.Random | None = None) -> OrphanRescue:
        if orphan.orphanings + 1 >= self.max_orphanings:
            return OrphanRescue(orphan.task_id, orphan.fencing_token, True, 0.0)
        delay = self.backoff.delay(orphan.attempts + orphan.orphanings, rng)
        return OrphanRescue(orphan.task_id, orphan.fencing_token, False, delay)

    def rescue_all(
        self, orphans: Sequence[Orphan], rng: random.Random | None = None
    ) -> list[OrphanRescue]:
        return [self.rescue(o, rng) for o in orphans]
