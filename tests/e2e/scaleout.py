"""Throughput of N `goodfellaz17 worker` processes sharing one database.

Used by tests/e2e/test_scale_out.py (small, asserts) and bench/scale_out.py
(bigger, prints). Time is measured by the database: from the moment the
orders exist to the last task's completion, so process start-up and the
test's polling are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.e2e.procs import Proc, service_env
from tests.helpers import wait_until

TASK_SIZE = 400
TASKS_PER_ORDER = 40


@dataclass(frozen=True)
class Run:
    workers: int
    tasks: int
    seconds: float

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds


def worker_env(db_url: str, ledger: Path, **overrides: Any) -> dict[str, str]:
    """Latency-bound work: each task waits on the simulated backend, so one
    worker with small concurrency is far from using the CPU or the database."""
    settings: dict[str, Any] = {
        "sim_ledger_path": ledger,
        "sim_latency_ms": 50,
        "worker_concurrency": 2,
        "worker_batch_size": 2,
        "worker_poll_interval_seconds": 1,
    }
    settings.update(overrides)
    return service_env(db_url, **settings)


def listening_workers(sql: psycopg.Connection[Any]) -> int:
    """Workers whose LISTEN connection is up: only they wake at once on NOTIFY
    (the others would wait for their next poll and blur the measurement)."""
    row = sql.execute(
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database()
             AND application_name LIKE 'goodfellaz17-listen:%%'
             AND query LIKE 'LISTEN %%'"""
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_orders(sql: psycopg.Connection[Any], orders: int, tag: str) -> None:
    """`orders` orders of TASKS_PER_ORDER tasks each, in one transaction (one
    NOTIFY wakes every worker), through the same SQL shape as the service."""
    sql.execute(
        """WITH o AS (
               INSERT INTO orders (quantity, target, backend, task_count)
               SELECT %(tasks)s * %(size)s, %(tag)s, 'simulated', %(tasks)s
               FROM generate_series(1, %(orders)s)
               RETURNING id, created_at)
           INSERT INTO order_tasks (order_id, seq, quantity, queue_position)
           SELECT o.id, s, %(size)s, extract(epoch FROM o.created_at) + s
           FROM o, generate_series(0, %(tasks)s - 1) s""",
        {"orders": orders, "tasks": TASKS_PER_ORDER, "size": TASK_SIZE, "tag": tag},
    )


def open_tasks(sql: psycopg.Connection[Any], tag: str) -> int:
    row = sql.execute(
        """SELECT count(*) FROM order_tasks t JOIN orders o ON o.id = t.order_id
           WHERE o.target = %s AND t.status <> 'COMPLETED'""",
        (tag,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def measure(
    sql: psycopg.Connection[Any],
    env: dict[str, str],
    workers: int,
    orders: int,
    logs: Path,
    timeout: float = 60.0,
) -> Run:
    """Start `workers` processes, wait until all run, give them the orders,
    wait for every task to complete, stop them gracefully."""
    tag = f"scale-{workers}-{logs.name}"
    procs = [Proc(["worker"], env, logs / f"{tag}-{i}.log") for i in range(workers)]
    try:
        wait_until(
            lambda: listening_workers(sql) == workers,
            within=30,
            what=f"{workers} workers listening",
        )
        insert_orders(sql, orders, tag)
        wait_until(lambda: open_tasks(sql, tag) == 0, within=timeout, what=f"{tag} done")
    finally:
        codes = [p.terminate() for p in procs]
        for p in procs:
            p.close()
    assert codes == [0] * workers, [p.output()[-2000:] for p in procs]
    row = sql.execute(
        """SELECT count(*), extract(epoch FROM max(t.executed_at) - min(o.created_at))
           FROM order_tasks t JOIN orders o ON o.id = t.order_id WHERE o.target = %s""",
        (tag,),
    ).fetchone()
    assert row is not None
    return Run(workers=workers, tasks=int(row[0]), seconds=float(row[1]))
