"""Task and order states, and which actor may move a task from one to another.

    PENDING ──claim──► EXECUTING ──success──► COMPLETED
                          │
                       failure / lease expired (orphan)
                          ▼
                  FAILED_RETRYING ──retry_after reached──► EXECUTING
                          │
                  attempts exhausted / permanent error
                          ▼
                  FAILED_PERMANENT   (the dead-letter queue)

Plus: EXECUTING → PENDING (a stopping worker hands back an unstarted claim),
FAILED_PERMANENT → FAILED_RETRYING (an operator drains dead letters), and an
operator's cancel, which dead-letters every open task.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED_RETRYING = "FAILED_RETRYING"
    FAILED_PERMANENT = "FAILED_PERMANENT"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"


OPEN_TASK_STATUSES = frozenset(
    {TaskStatus.PENDING, TaskStatus.EXECUTING, TaskStatus.FAILED_RETRYING}
)

# (from, to) -> the actor that performs the move.
TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], str] = {
    (TaskStatus.PENDING, TaskStatus.EXECUTING): "worker: claim",
    (TaskStatus.FAILED_RETRYING, TaskStatus.EXECUTING): "worker: claim once retry_after is reached",
    (TaskStatus.EXECUTING, TaskStatus.COMPLETED): "worker: delivery succeeded (fenced)",
    (
        TaskStatus.EXECUTING,
        TaskStatus.FAILED_RETRYING,
    ): "worker: retryable failure, or rescuer: lease expired",
    (
        TaskStatus.EXECUTING,
        TaskStatus.FAILED_PERMANENT,
    ): "worker or rescuer: attempts exhausted / permanent error",
    (TaskStatus.EXECUTING, TaskStatus.PENDING): "stopping worker: hands back an unstarted claim",
    (TaskStatus.FAILED_PERMANENT, TaskStatus.FAILED_RETRYING): "operator: drain dead letters",
    (TaskStatus.PENDING, TaskStatus.FAILED_PERMANENT): "operator: cancel / force-complete",
    (TaskStatus.FAILED_RETRYING, TaskStatus.FAILED_PERMANENT): "operator: cancel / force-complete",
}


def is_allowed(source: TaskStatus, target: TaskStatus) -> bool:
    return (source, target) in TRANSITIONS
