"""Compare the simulated backend's ledger of accepted deliveries with the database."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from goodfellaz17.backends.simulated import read_ledger


def ledger_report(sql: psycopg.Connection[Any], ledger: Path) -> dict[str, int]:
    """lost: units counted in orders.delivered without an accepted delivery for
    the completing claim; double_counted: completing claims accepted more than
    once; completed_before_accepted: tasks recorded COMPLETED before the claim
    that holds them had its delivery accepted (a stale claim completed them);
    redelivered: accepted deliveries of claims that were later rescued."""
    entries = read_ledger(ledger)
    accepted = Counter((str(e["task_id"]), int(str(e["fencing_token"]))) for e in entries)
    first_accepted: dict[tuple[str, int], float] = {}
    for e in entries:
        claim = (str(e["task_id"]), int(str(e["fencing_token"])))
        at = float(str(e.get("at", "-inf")))
        first_accepted[claim] = min(at, first_accepted.get(claim, at))
    completed = sql.execute(
        "SELECT id::text, fencing_token, quantity, extract(epoch FROM executed_at)::float8"
        " FROM order_tasks WHERE status = 'COMPLETED'"
    ).fetchall()
    lost = sum(q for task_id, token, q, _ in completed if accepted[(task_id, token)] == 0)
    double = sum(1 for task_id, token, _, _ in completed if accepted[(task_id, token)] > 1)
    early = sum(
        1
        for task_id, token, _, executed_at in completed
        if first_accepted.get((task_id, token), float("inf")) > executed_at
        and accepted[(task_id, token)] > 0
    )
    completing = {(task_id, token) for task_id, token, _, _ in completed}
    redelivered = sum(n for claim, n in accepted.items() if claim not in completing)
    row = sql.execute("SELECT COALESCE(sum(delivered), 0) FROM orders").fetchone()
    assert row is not None
    return {
        "units_delivered": int(row[0]),
        "units_in_completed_tasks": sum(q for _, _, q, _ in completed),
        "lost": lost,
        "double_counted": double,
        "completed_before_accepted": early,
        "redelivered_after_rescue": redelivered,
    }
