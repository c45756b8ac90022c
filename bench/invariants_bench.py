"""How long the global invariant check takes over many tasks (not a test).

    .venv/bin/python bench/invariants_bench.py [--tasks 1000000] [--runs 5]

Uses DATABASE_URL when set (the database must be empty and migrated: it is
filled with orders), else a throw-away embedded PostgreSQL. Seeds orders of
40 tasks (a third COMPLETED, a tenth dead-lettered, the rest PENDING) with
triggers off and the counters computed in the same statement, VACUUM
ANALYZEs, then runs `invariants.check_all` (what GET /api/admin/invariants/all
does, log insert included) and prints the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import warnings

import psycopg

from goodfellaz17.db.migrate import apply_migrations
from goodfellaz17.db.pool import open_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.services.invariants import check_all
from goodfellaz17.settings import load_settings

TASKS_PER_ORDER = 40
UNITS_PER_TASK = 400

SEED = """
WITH o AS (
    INSERT INTO orders (quantity, target, backend, task_count, status, delivered,
                        failed_permanent_plays, started_at)
    SELECT %(per)s * %(units)s, 'bench-' || g, 'simulated', %(per)s, 'PROCESSING',
           %(completed)s * %(units)s, %(dead)s * %(units)s, now()
    FROM generate_series(1, %(orders)s) g
    RETURNING id, created_at)
INSERT INTO order_tasks (order_id, seq, quantity, queue_position, status, attempts,
                         executed_at, last_error)
SELECT o.id, s, %(units)s, extract(epoch FROM o.created_at) + s,
       CASE WHEN s < %(completed)s THEN 'COMPLETED'
            WHEN s < %(completed)s + %(dead)s THEN 'FAILED_PERMANENT'
            ELSE 'PENDING' END,
       CASE WHEN s < %(completed)s + %(dead)s THEN 1 ELSE 0 END,
       CASE WHEN s < %(completed)s + %(dead)s THEN now() END,
       CASE WHEN s >= %(completed)s AND s < %(completed)s + %(dead)s THEN 'bench' END
FROM o, generate_series(0, %(per)s - 1) s
"""


def seed(url: str, tasks: int) -> None:
    orders = tasks // TASKS_PER_ORDER
    completed, dead = TASKS_PER_ORDER // 3, TASKS_PER_ORDER // 10
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM orders").fetchone() != (0,):
            raise SystemExit("the database must have no orders: the bench fills it")
        started = time.perf_counter()
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            SEED,
            {
                "orders": orders,
                "per": TASKS_PER_ORDER,
                "units": UNITS_PER_TASK,
                "completed": completed,
                "dead": dead,
            },
        )
        conn.execute("SET session_replication_role = origin")
        conn.execute("VACUUM ANALYZE orders")
        conn.execute("VACUUM ANALYZE order_tasks")
        print(
            f"seeded {orders:,} orders / {orders * TASKS_PER_ORDER:,} tasks"
            f" in {time.perf_counter() - started:.1f} s"
        )


async def measure(url: str, runs: int) -> list[float]:
    settings = load_settings(DATABASE_URL=url, db_statement_timeout_ms=0)
    timings = []
    async with open_pool(url, settings, min_size=1, max_size=1) as pool:
        await pool.wait()
        repo = Repository(pool)
        for _ in range(runs):
            started = time.perf_counter()
            result = await check_all(repo)
            timings.append((time.perf_counter() - started) * 1000)
            assert result.passed, result.violations[:3]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(
                tempfile.mkdtemp(prefix="gf-inv-bench-"), cleanup_mode="delete"
            )
        url = server.get_uri()
    try:
        apply_migrations(url)
        seed(url, args.tasks)
        timings = asyncio.run(measure(url, args.runs))
        print(
            f"invariants/all over {args.tasks:,} tasks: median {statistics.median(timings):.0f} ms,"
            f" min {min(timings):.0f} ms, max {max(timings):.0f} ms ({args.runs} runs, 2 statements"
            " each)"
        )
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
