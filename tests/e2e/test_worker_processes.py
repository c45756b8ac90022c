"""Worker processes on one database: sharing work, SIGKILL, exact accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from goodfellaz17.backends.simulated import read_ledger
from tests.e2e.ledger import ledger_report
from tests.e2e.procs import Proc, service_env
from tests.helpers import insert_order, open_tasks, order_row, violations, wait_until

pytestmark = pytest.mark.e2e


def assert_ledger_matches_accounting(sql: psycopg.Connection[Any], ledger: Path) -> None:
    """Every unit in orders.delivered corresponds to exactly one accepted delivery."""
    report = ledger_report(sql, ledger)
    assert report["lost"] == 0, report
    assert report["double_counted"] == 0, report
    assert report["units_delivered"] == report["units_in_completed_tasks"], report


def test_three_workers_share_orders_without_executing_any_task_twice(
    db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    env = service_env(db_url, sim_ledger_path=ledger, worker_concurrency=8, sim_latency_ms=50)
    workers = [Proc(["worker"], env, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        wait_until(
            lambda: (
                sql.execute("SELECT count(*) FROM workers WHERE status = 'RUNNING'").fetchone()
                == (3,)
            ),
            within=30,
            what="3 workers up",
        )
        ids = [insert_order(sql, 15_000) for _ in range(3)]
        wait_until(lambda: open_tasks(sql) == 0, within=90, what="all tasks done")
    finally:
        for w in workers:
            assert w.terminate() == 0, w.output()[-2000:]
            w.close()
    for order_id in ids:
        order = order_row(sql, order_id)
        assert (order["status"], order["delivered"]) == ("COMPLETED", 15_000)
    attempts = sql.execute(
        "SELECT max(attempts), count(DISTINCT lease_owner) FROM order_tasks"
    ).fetchone()
    assert attempts is not None
    assert attempts[0] == 1, "no task was executed twice"
    assert attempts[1] == 3, "all three workers took part"
    assert len(read_ledger(ledger)) == 3 * 38  # one accepted delivery per task
    assert_ledger_matches_accounting(sql, ledger)
    assert violations(sql) == []
    stopped = sql.execute("SELECT count(*) FROM workers WHERE status = 'STOPPED'").fetchone()
    assert stopped == (3,)


def test_a_sigkilled_worker_loses_nothing(
    db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ids = [insert_order(sql, 4_000) for _ in range(2)]  # 20 tasks
    ledger = tmp_path / "ledger.jsonl"
    slow = Proc(
        ["worker"],
        service_env(
            db_url,
            sim_ledger_path=ledger,
            sim_latency_ms=60_000,
            task_lease_seconds=2,
            worker_concurrency=8,
        ),
        tmp_path / "slow.log",
    )
    try:
        wait_until(
            lambda: (
                sql.execute(
                    "SELECT count(*) FROM order_tasks WHERE status = 'EXECUTING'"
                ).fetchone()
                == (18,)
            ),
            within=30,
            what="slow worker holding a batch",
        )
        slow.kill()  # SIGKILL mid-batch: its 18 claims are orphans now
    finally:
        slow.close()
    rescuer = Proc(
        ["worker"],
        service_env(db_url, sim_ledger_path=ledger, task_lease_seconds=2),
        tmp_path / "rescuer.log",
    )
    try:
        wait_until(lambda: open_tasks(sql) == 0, within=60, what="all tasks done")
    finally:
        assert rescuer.terminate() == 0
        rescuer.close()
    for order_id in ids:
        order = order_row(sql, order_id)
        assert (order["status"], order["delivered"]) == ("COMPLETED", 4_000)
    rescued = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE attempts = 1 AND orphanings = 1"
        " AND last_error LIKE 'orphaned: worker %% lost its lease%%'"
    ).fetchone()
    assert rescued == (18,)
    recovered = sql.execute("SELECT sum(recovered_orphans) FROM workers").fetchone()
    assert recovered == (18,)
    assert "Recovering orphaned task" in rescuer.output()
    assert_ledger_matches_accounting(sql, ledger)
    assert violations(sql) == []
