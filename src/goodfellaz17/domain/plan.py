"""TaskGenerationService's arithmetic: how an order of q units becomes tasks."""

from __future__ import annotations

import math


def plan_task_sizes(quantity: int, task_size: int) -> list[int]:
    """Split `quantity` into ceil(quantity / task_size) near-equal tasks.

    Sizes differ by at most one, never exceed `task_size`, and sum exactly to
    `quantity`: 15,000 at 400 gives 38 tasks (28 x 395 and 10 x 394).
    """
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if task_size <= 0:
        raise ValueError("task_size must be positive")
    count = math.ceil(quantity / task_size)
    base, remainder = divmod(quantity, count)
    return [base + 1] * remainder + [base] * (count - remainder)


def task_count(quantity: int, task_size: int) -> int:
    return math.ceil(quantity / task_size)
