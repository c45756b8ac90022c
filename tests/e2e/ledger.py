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
    once; redelivered: accepted deliveries of claims that were later rescued."""
    accepted = Counter(
        (str(e["task_id"]), int(str(e["fencing_token"]))) for e in read_ledger(ledger)
    )
    completed = sql.execute(
        "SELECT id::text, fencing_token, quantity FROM order_tasks WHERE status = 'COMPLETED'"
    ).fetchall()
    lost = sum(q for task_id, token, q in completed if accepted[(task_id, token)] == 0)
    double = sum(1 for task_id, token, _ in completed if accepted[(task_id, token)] > 1)
    completing = {(task_id, token) for task_id, token, _ in completed}
    redelivered = sum(n for claim, n in accepted.items() if claim not in completing)
    row = sql.execute("SELECT COALESCE(sum(delivered), 0) FROM orders").fetchone()
    assert row is not None
    return {
        "units_delivered": int(row[0]),
        "units_in_completed_tasks": sum(q for _, _, q in completed),
        "lost": lost,
        "double_counted": double,
        "redelivered_after_rescue": redelivered,
    }
