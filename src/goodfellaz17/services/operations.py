"""Operator actions on one order: retry now, drain dead letters,
force-complete, cancel. Shared by the admin API and the CLI.

Each action is one transaction that locks the order's open tasks, changes
them, and records who did what in `operator_actions`; then it is logged.
Deadlocks and serialization failures are retried here (the transaction is
rolled back and run again), so callers never see them. Every action keeps all
invariants true: the accounting triggers keep the counters, and each action
moves tasks only along transitions the state machine grants operators.

An action must never leave an order COMPLETED with open tasks, nor change a
task a worker is executing unless the operator said `force`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.db.transient import retrying_transient
from goodfellaz17.domain.states import OrderStatus
from goodfellaz17.errors import Conflict, NotFound
from goodfellaz17.logs import get_logger

log = get_logger(__name__)

RETRY_NOW = "retry_now"
DRAIN_DEAD_LETTERS = "drain_dead_letters"
FORCE_COMPLETE = "force_complete"
CANCEL = "cancel"


@dataclass(slots=True)
class Change:
    """What an action did to the order's tasks."""

    tasks: int = 0
    units: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: list[Any], **details: Any) -> Change:
        return cls(len(rows), sum(int(r["quantity"]) for r in rows), details)


ChangeFn = Callable[[AsyncConn, Row], Awaitable[Change]]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an operator action did, and the order as it stands after it."""

    action: str
    order_id: uuid.UUID
    actor: str
    tasks_affected: int
    units_affected: int
    order_status: str
    quantity: int
    delivered: int
    failed_permanent_plays: int
    action_id: int  # operator_actions.id
    recorded_at: datetime
    details: dict[str, Any]  # as recorded in operator_actions.details


async def _perform(
    repo: Repository, action: str, order_id: uuid.UUID, actor: str, change: ChangeFn
) -> ActionResult:
    """Lock, change, record: one transaction, retried when the database says so."""

    async def once() -> ActionResult:
        async with repo.transaction() as conn:
            before = await repo.order_lock_for_action(conn, order_id)
            if before is None:
                raise NotFound(f"order {order_id} not found", field="orderId")
            done = await change(conn, before)
            after = await repo.order_get(order_id, conn)
            assert after is not None, "the order's tasks are locked by this transaction"
            details = {
                "tasks": done.tasks,
                "units": done.units,
                "statusBefore": before["status"],
                "statusAfter": after["status"],
                **done.details,
            }
            recorded = await repo.operator_action_record(
                conn, action=action, order_id=order_id, actor=actor, details=Jsonb(details)
            )
        log.info(
            "operator action",
            action=action,
            order_id=str(order_id),
            actor=actor,
            tasks=done.tasks,
            units=done.units,
            status_before=before["status"],
            status_after=after["status"],
            force=done.details.get("force"),
        )
        return ActionResult(
            action=action,
            order_id=order_id,
            actor=actor,
            tasks_affected=done.tasks,
            units_affected=done.units,
            order_status=after["status"],
            quantity=after["quantity"],
            delivered=after["delivered"],
            failed_permanent_plays=after["failed_permanent_plays"],
            action_id=recorded["id"],
            recorded_at=recorded["created_at"],
            details=details,
        )

    result: ActionResult = await retrying_transient()(once)
    return result


async def retry_now(repo: Repository, order_id: uuid.UUID, *, actor: str) -> ActionResult:
    """Make the order's FAILED_RETRYING tasks due now (the runbook's force retry)."""

    async def change(conn: AsyncConn, order: Row) -> Change:
        return Change.of(await repo.order_tasks_retry_now(conn, order_id))

    return await _perform(repo, RETRY_NOW, order_id, actor, change)


async def drain_dead_letters(repo: Repository, order_id: uuid.UUID, *, actor: str) -> ActionResult:
    """FAILED_PERMANENT → FAILED_RETRYING, attempts from 0, due now."""

    async def change(conn: AsyncConn, order: Row) -> Change:
        return Change.of(await repo.order_tasks_drain_dead_letters(conn, order_id))

    return await _perform(repo, DRAIN_DEAD_LETTERS, order_id, actor, change)


async def force_complete(
    repo: Repository, order_id: uuid.UUID, *, actor: str, force: bool = False
) -> ActionResult:
    """Mark the order COMPLETED (the customer agreed to partial delivery); its
    open tasks go to the dead-letter queue. Refused while tasks are executing
    unless `force`: their units may be delivered but would not be counted."""

    async def change(conn: AsyncConn, order: Row) -> Change:
        if order["status"] == OrderStatus.COMPLETED:
            raise Conflict(f"order {order_id} is already COMPLETED", field="orderId")
        if order["executing"] and not force:
            raise Conflict(
                f"order {order_id} has {order['executing']} task(s) EXECUTING; "
                "wait for them or use force",
                field="force",
            )
        open_tasks = int(order["pending"] + order["executing"] + order["retrying"])
        open_units = order["quantity"] - order["delivered"] - order["failed_permanent_plays"]
        await repo.order_force_complete(conn, order_id)
        return Change(open_tasks, open_units, {"force": force, "executing": order["executing"]})

    return await _perform(repo, FORCE_COMPLETE, order_id, actor, change)


async def cancel(
    repo: Repository, order_id: uuid.UUID, *, actor: str, force: bool = False
) -> ActionResult:
    """Dead-letter the order's remaining tasks, saying an operator cancelled
    them. Refused while tasks are executing unless `force`, which cancels
    those too (their late completion then changes nothing)."""

    async def change(conn: AsyncConn, order: Row) -> Change:
        if order["executing"] and not force:
            raise Conflict(
                f"order {order_id} has {order['executing']} task(s) EXECUTING; "
                "wait for them or use force",
                field="force",
            )
        rows = await repo.order_tasks_cancel_open(
            conn,
            order_id,
            reason=f"cancelled by operator {actor}",
            include_executing=force,
        )
        return Change.of(rows, force=force, executing=order["executing"])

    return await _perform(repo, CANCEL, order_id, actor, change)
