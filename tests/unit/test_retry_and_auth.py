from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from goodfellaz17.api.auth import KeyRing
from goodfellaz17.domain.retry import BackoffPolicy
from goodfellaz17.domain.states import TRANSITIONS, TaskStatus, is_allowed
from goodfellaz17.settings import ApiKey, Role


@given(attempt=st.integers(min_value=1, max_value=200), seed=st.integers())
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt: int, seed: int) -> None:
    policy = BackoffPolicy(base_seconds=0.5, max_seconds=60, max_attempts=5)
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= min(60, 0.5 * 2 ** (attempt - 1))


def test_backoff_ceiling_doubles_then_caps() -> None:
    policy = BackoffPolicy(base_seconds=1, max_seconds=10, max_attempts=5)
    assert [policy.ceiling(a) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.is_exhausted(5)
    assert not policy.is_exhausted(4)


def test_state_machine_has_only_the_contracts_arrows() -> None:
    assert is_allowed(TaskStatus.PENDING, TaskStatus.EXECUTING)
    assert is_allowed(TaskStatus.EXECUTING, TaskStatus.PENDING)
    assert not is_allowed(TaskStatus.COMPLETED, TaskStatus.PENDING)
    assert not is_allowed(TaskStatus.FAILED_PERMANENT, TaskStatus.COMPLETED)
    assert not any(source == TaskStatus.COMPLETED for source, _ in TRANSITIONS)


def test_keyring_matches_exact_keys_only() -> None:
    ring = KeyRing([ApiKey("alpha-key", Role.READ), ApiKey("omega-key", Role.OPERATOR)])
    read = ring.authenticate("alpha-key")
    operator = ring.authenticate("omega-key")
    assert read is not None
    assert read.role is Role.READ
    assert operator is not None
    assert operator.may(Role.ORDERS)
    assert not read.may(Role.OPERATOR)
    for wrong in (None, "", "alpha-ke", "alpha-key ", "ALPHA-KEY", "omega-key\x00"):
        assert ring.authenticate(wrong) is None
    assert "alpha" not in operator.actor
