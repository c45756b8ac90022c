"""How far along an order is, and what it dead-lettered: read-only views
shared by the admin API and the CLI. Results are JSON-ready, camelCase."""

from __future__ import annotations

import uuid
from typing import Any

from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.estimates import eta_seconds, percent, recent_rate
from goodfellaz17.domain.states import TaskStatus
from goodfellaz17.errors import InvalidInput, NotFound

# The rate behind the ETA is measured over this recent window, so a backlog
# that cleared an hour ago does not make a stalled order look fast.
RATE_WINDOW_SECONDS = 300.0
MAX_FAILED_TASKS = 1000


async def order_progress(repo: Repository, order_id: uuid.UUID) -> dict[str, Any]:
    row = await repo.order_progress(order_id, window_seconds=RATE_WINDOW_SECONDS)
    if row is None:
        raise NotFound(f"order {order_id} not found", field="orderId")
    by_status = row["by_status"]
    statuses = {
        s.value: {
            "tasks": int(by_status.get(s.value, {}).get("tasks", 0)),
            "units": int(by_status.get(s.value, {}).get("units", 0)),
        }
        for s in TaskStatus
    }
    quantity, delivered = row["quantity"], row["delivered"]
    dead = row["failed_permanent_plays"]
    open_units = quantity - delivered - dead
    now = row["db_now"]
    running = (now - row["started_at"]).total_seconds() if row["started_at"] else None
    rate = recent_rate(int(row["recent_units"]), RATE_WINDOW_SECONDS, running)
    eta = eta_seconds(open_units, rate)
    return {
        "orderId": str(row["id"]),
        "status": row["status"],
        "quantity": quantity,
        "delivered": delivered,
        "failedPermanentPlays": dead,
        "remaining": open_units,
        "taskCount": row["task_count"],
        "tasks": statuses,
        "percentComplete": percent(delivered, quantity),
        "percentSettled": percent(delivered + dead, quantity),
        "unitsPerSecond": round(rate, 3),
        "unitsPerHour": round(rate * 3600),
        "rateWindowSeconds": RATE_WINDOW_SECONDS,
        "etaSeconds": eta,
        "ageSeconds": round((now - row["created_at"]).total_seconds(), 1),
        "runningSeconds": round(running, 1) if running is not None else None,
        "createdAt": row["created_at"],
        "startedAt": row["started_at"],
        "completedAt": row["completed_at"],
    }


async def failed_tasks(
    repo: Repository, order_id: uuid.UUID, *, limit: int = 100
) -> dict[str, Any]:
    if not 1 <= limit <= MAX_FAILED_TASKS:
        raise InvalidInput(f"limit must be between 1 and {MAX_FAILED_TASKS}", field="limit")
    rows = await repo.order_failed_tasks(order_id, limit=limit)
    if not rows and await repo.order_get(order_id) is None:
        raise NotFound(f"order {order_id} not found", field="orderId")
    return {
        "orderId": str(order_id),
        "count": int(rows[0]["total"]) if rows else 0,
        "units": int(rows[0]["total_units"]) if rows else 0,
        "tasks": [
            {
                "taskId": str(r["id"]),
                "seq": r["seq"],
                "quantity": r["quantity"],
                "attempts": r["attempts"],
                "orphanings": r["orphanings"],
                "lastError": r["last_error"],
                "executedAt": r["executed_at"],
                "nodeId": r["node_id"],
            }
            for r in rows
        ],
    }
