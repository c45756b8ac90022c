from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goodfellaz17.domain.plan import plan_task_sizes


def test_fifteen_thousand_units_become_38_tasks_summing_exactly() -> None:
    sizes = plan_task_sizes(15_000, 400)
    assert len(sizes) == 38
    assert sum(sizes) == 15_000
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) <= 400


@given(
    quantity=st.integers(min_value=1, max_value=1_000_000),
    task_size=st.integers(min_value=1, max_value=5_000),
)
def test_split_is_exact_balanced_and_minimal(quantity: int, task_size: int) -> None:
    sizes = plan_task_sizes(quantity, task_size)
    assert sum(sizes) == quantity
    assert len(sizes) == -(-quantity // task_size)
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) <= task_size
    assert min(sizes) >= 1


@pytest.mark.parametrize(("quantity", "task_size"), [(0, 400), (-1, 400), (10, 0)])
def test_split_rejects_non_positive_input(quantity: int, task_size: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        plan_task_sizes(quantity, task_size)
