"""Invariant checks for one order or all orders, logged to invariant_check_log.

The checks are defined once, in the `v_order_invariants` view; this module
runs them, shapes the result and records that the check happened.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.invariants import CHECKS
from goodfellaz17.errors import InvalidInput, NotFound


def describe_checks(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An order's rows of v_order_invariants as the API and the console show them."""
    return [
        {
            "name": r["check_name"],
            "description": CHECKS.get(r["check_name"], ""),
            "expected": r["expected"],
            "actual": r["actual"],
            "passed": bool(r["passed"]),
        }
        for r in rows
    ]


async def check_order(repo: Repository, order_id: uuid.UUID) -> dict[str, Any]:
    started = time.perf_counter()
    async with repo.transaction() as conn:
        rows = await repo.invariant_order_checks(conn, order_id)
        if not rows:
            raise NotFound(f"order {order_id} not found", field="orderId")
        checks = describe_checks(rows)
        passed = all(c["passed"] for c in checks)
        duration_ms = (time.perf_counter() - started) * 1000
        checked_at = await repo.invariant_log_order(
            conn,
            order_id=order_id,
            scope="ORDER",
            passed=passed,
            failed_checks=[c["name"] for c in checks if not c["passed"]],
            checks=Jsonb(checks),
            orders_checked=1,
            duration_ms=duration_ms,
        )
    return {
        "orderId": str(order_id),
        "passed": passed,
        "checks": checks,
        "checkedAt": checked_at.isoformat(),
        "durationMs": round(duration_ms, 3),
    }


async def check_all(repo: Repository) -> dict[str, Any]:
    """Every order, every check, in one aggregate statement."""
    started = time.perf_counter()
    async with repo.transaction() as conn:
        summary = await repo.invariant_global_summary(conn)
        violations = [
            {
                "orderId": str(v["order_id"]),
                "check": v["check_name"],
                "expected": v["expected"],
                "actual": v["actual"],
            }
            for v in summary["violations"]
        ]
        violation_count = int(summary["violation_count"])
        duration_ms = (time.perf_counter() - started) * 1000
        passed = not violations
        checked_at = await repo.invariant_log_global(
            conn,
            passed=passed,
            violations=Jsonb(violations),
            orders_checked=summary["orders_checked"],
            duration_ms=duration_ms,
        )
    return {
        "passed": passed,
        "ordersChecked": summary["orders_checked"],
        "violationCount": violation_count,
        "violations": violations,
        "checkedAt": checked_at.isoformat(),
        "durationMs": round(duration_ms, 3),
    }


ORPHAN_CHECK = "no_task_executing_past_its_lease"


async def check_orphans(repo: Repository, *, limit: int = 1000) -> dict[str, Any]:
    """Tasks EXECUTING past their lease, oldest first (at most `limit` listed)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit must be between 1 and 10000", field="limit")
    started = time.perf_counter()
    async with repo.transaction() as conn:
        rows = await repo.invariant_orphans(conn, limit=limit)
        orphans = [
            {
                "taskId": str(r["id"]),
                "orderId": str(r["order_id"]),
                "seq": r["seq"],
                "quantity": r["quantity"],
                "attempts": r["attempts"],
                "leaseOwner": r["lease_owner"],
                "leaseExpiresAt": r["lease_expires_at"],
                "overdueSeconds": round(float(r["overdue_seconds"]), 3),
                "startedAt": r["started_at"],
                "nodeId": r["node_id"],
            }
            for r in rows
        ]
        count = int(rows[0]["total"]) if rows else 0
        passed = count == 0
        duration_ms = (time.perf_counter() - started) * 1000
        checked_at = await repo.invariant_log_order(
            conn,
            order_id=None,
            scope="GLOBAL",
            passed=passed,
            failed_checks=[] if passed else [ORPHAN_CHECK],
            checks=Jsonb(
                [{"name": ORPHAN_CHECK, "expected": 0, "actual": count, "passed": passed}]
            ),
            orders_checked=len({o["orderId"] for o in orphans}),
            duration_ms=duration_ms,
        )
    return {
        "passed": passed,
        "check": ORPHAN_CHECK,
        "count": count,
        "orphans": orphans,
        "checkedAt": checked_at.isoformat(),
        "durationMs": round(duration_ms, 3),
    }
