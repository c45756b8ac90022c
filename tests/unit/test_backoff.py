"""The one backoff formula (domain/retry.py): full jitter under a capped
exponential, for recorded failures and rescued orphans alike.

`0 <= delay <= ceiling` alone would pass with the ceiling itself as the
delay; these tests look at the spread of many delays."""

from __future__ import annotations

import random
import uuid

import pytest

from goodfellaz17.domain.retry import BackoffPolicy, Orphan, OrphanPolicy

SAMPLES = 5_000


def deciles(values: list[float], ceiling: float) -> list[int]:
    counts = [0] * 10
    for v in values:
        counts[min(int(v / ceiling * 10), 9)] += 1
    return counts


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (4, 4.0), (9, 60.0), (200, 60.0)])
def test_delays_are_spread_uniformly_from_zero_to_the_ceiling(attempt: int, ceiling: float) -> None:
    policy = BackoffPolicy(base_seconds=0.5, max_seconds=60, max_attempts=5)
    rng = random.Random(attempt)
    delays = [policy.delay(attempt, rng) for _ in range(SAMPLES)]
    assert policy.ceiling(attempt) == ceiling
    assert all(0 <= d <= ceiling for d in delays)
    # Uniform: each tenth of [0, ceiling] gets about a tenth of the delays
    # (expected 500, standard deviation about 21).
    assert all(400 <= n <= 600 for n in deciles(delays, ceiling)), deciles(delays, ceiling)


def orphan(attempts: int, orphanings: int = 0) -> Orphan:
    return Orphan(task_id=uuid.uuid4(), fencing_token=7, attempts=attempts, orphanings=orphanings)


def test_an_orphan_backs_off_like_a_failure_spread_under_the_cap() -> None:
    backoff = BackoffPolicy(base_seconds=10, max_seconds=30, max_attempts=50)
    policy = OrphanPolicy(backoff, max_orphanings=50)
    rng = random.Random(3)
    # Three tries so far, the fourth lost: uncapped the ceiling would be 80 s.
    rescues = policy.rescue_all([orphan(attempts=2, orphanings=2) for _ in range(SAMPLES)], rng)
    delays = [r.delay_seconds for r in rescues]
    assert not any(r.dead_letter for r in rescues)
    assert all(0 <= d <= 30 for d in delays)
    assert all(400 <= n <= 600 for n in deciles(delays, 30)), deciles(delays, 30)


def test_an_orphan_is_dead_lettered_by_its_orphan_budget_never_by_attempts() -> None:
    policy = OrphanPolicy(BackoffPolicy(1, 10, max_attempts=5), max_orphanings=3)
    # A crash is not a delivery failure: out of delivery attempts or not, a
    # rescue sends the task back to the queue while orphanings remain.
    assert not policy.rescue(orphan(attempts=9, orphanings=1), random.Random(0)).dead_letter
    lost = orphan(attempts=1, orphanings=2)
    rescue = policy.rescue(lost, random.Random(0))
    assert (rescue.task_id, rescue.fencing_token, rescue.dead_letter) == (lost.task_id, 7, True)
