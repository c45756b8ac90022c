"""The invariants every order must satisfy, by name.

The checks themselves are one SQL view (`v_order_invariants`, in the
migrations) so the API, the CLI, the metrics and the tests share a single
definition; this module names them and says what each means.
"""

from __future__ import annotations

CHECKS: dict[str, str] = {
    "task_quantities_sum_to_order_quantity": "the order's task quantities sum to its quantity",
    "delivered_equals_completed_tasks": "delivered = sum of COMPLETED task quantities",
    "failed_permanent_plays_equals_dead_letter_tasks": (
        "failed_permanent_plays = sum of FAILED_PERMANENT task quantities"
    ),
    "delivered_within_quantity": "0 <= delivered <= quantity",
    "completed_order_has_no_open_tasks": (
        "a COMPLETED order has no task PENDING, EXECUTING or FAILED_RETRYING"
    ),
    "completed_order_delivered_is_quantity_minus_dead_letters": (
        "a COMPLETED order has delivered = quantity - failed_permanent_plays"
    ),
    "all_tasks_completed_means_order_completed": (
        "an order whose tasks are all COMPLETED is itself COMPLETED"
    ),
    "no_task_executing_past_its_lease": "no task is EXECUTING past its lease",
}
