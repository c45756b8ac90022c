"""Invariant checks for one order or all orders, logged to invariant_check_log.

The checks are defined once, in the `v_order_invariants` view; this module
runs them, shapes the result and records that the check happened, and who
asked (`CheckSource`). The InvariantViolation and InvariantCheckStale alerts
read only full global checks by the periodic monitor or an operator's CLI:
nothing asked for over the API, by any key, changes what they see. Checks
asked for over the API write a bounded number of rows: a recent global check
is reused, a repeated single-order or orphan check with the same outcome is
not logged again, and a failing global check logs at most
MAX_ORDER_ROWS_PER_GLOBAL_CHECK orders.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from psycopg.types.json import Jsonb

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.invariants import CHECKS
from goodfellaz17.errors import InvalidInput, NotFound

MAX_ORDER_ROWS_PER_GLOBAL_CHECK = 100
# pg_advisory_xact_lock key of a global check asked for over the API.
GLOBAL_CHECK_LOCK_ID = 0x6766_696E_7663  # "gfinvc": arbitrary, fixed


class CheckSource(StrEnum):
    """Who ran a check (invariant_check_log.source)."""

    MONITOR = "MONITOR"  # the API processes' periodic check: what the alerts read
    CLI = "CLI"  # an operator at a shell: read by the alerts too
    API = "API"  # asked for over HTTP, by any key: never read by the alerts


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


async def check_order(
    repo: Repository,
    order_id: uuid.UUID,
    *,
    source: CheckSource = CheckSource.API,
    dedupe_seconds: float = 0,
) -> dict[str, Any]:
    """Check one order, live. Logged unless the order's latest logged check
    within `dedupe_seconds` had the same outcome."""
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
            source=source.value,
            passed=passed,
            failed_checks=[c["name"] for c in checks if not c["passed"]],
            checks=Jsonb(checks),
            duration_ms=duration_ms,
            dedupe_seconds=dedupe_seconds,
        )
    return {
        "orderId": str(order_id),
        "passed": passed,
        "checks": checks,
        "checkedAt": checked_at.isoformat(),
        "durationMs": round(duration_ms, 3),
    }


async def check_all(repo: Repository, *, source: CheckSource = CheckSource.API) -> dict[str, Any]:
    """Every order, every check, in one aggregate statement; always run."""
    async with repo.transaction() as conn:
        return await _run_global_check(repo, conn, source)


async def recent_global_check(repo: Repository, *, max_age_seconds: float) -> dict[str, Any]:
    """The latest global check if at most `max_age_seconds` old, else a new
    one (logged as API). Concurrent callers wait for the one running and
    reuse its result, so however often it is asked for, the API runs at most
    one global check per `max_age_seconds`."""
    async with repo.transaction() as conn:
        await repo.invariant_global_lock(conn, lock_id=GLOBAL_CHECK_LOCK_ID)
        latest = await repo.invariant_global_latest(conn, max_age_seconds=max_age_seconds)
        if latest is not None:
            return _logged_global_result(latest)
        return await _run_global_check(repo, conn, CheckSource.API)


async def _run_global_check(
    repo: Repository, conn: AsyncConn, source: CheckSource
) -> dict[str, Any]:
    started = time.perf_counter()
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
        source=source.value,
        passed=passed,
        violations=Jsonb(violations),
        orders_checked=summary["orders_checked"],
        violation_count=violation_count,
        duration_ms=duration_ms,
        max_order_rows=MAX_ORDER_ROWS_PER_GLOBAL_CHECK,
    )
    return {
        "passed": passed,
        "ordersChecked": summary["orders_checked"],
        "violationCount": violation_count,
        "violations": violations,
        "checkedAt": checked_at.isoformat(),
        "durationMs": round(duration_ms, 3),
    }


def _logged_global_result(row: Mapping[str, Any]) -> dict[str, Any]:
    """A logged global check, answered as if it had just run."""
    violations = [] if row["passed"] else list(row["checks"])
    count = row["violation_count"]
    return {
        "passed": bool(row["passed"]),
        "ordersChecked": row["orders_checked"],
        "violationCount": len(violations) if count is None else int(count),
        "violations": violations,
        "checkedAt": row["check_timestamp"].isoformat(),
        "durationMs": round(float(row["duration_ms"] or 0.0), 3),
    }


ORPHAN_CHECK = "no_task_executing_past_its_lease"


async def check_orphans(
    repo: Repository,
    *,
    limit: int = 1000,
    source: CheckSource = CheckSource.API,
    dedupe_seconds: float = 0,
) -> dict[str, Any]:
    """Tasks EXECUTING past their lease, oldest first (at most `limit` listed).
    Logged under scope ORPHANS, unless the latest orphan check within
    `dedupe_seconds` had the same outcome."""
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
        checked_at = await repo.invariant_log_orphans(
            conn,
            source=source.value,
            dedupe_seconds=dedupe_seconds,
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
